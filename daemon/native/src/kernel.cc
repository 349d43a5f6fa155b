#include "kernel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

namespace gotrail {

namespace {

// The link_create part of union bpf_attr as Linux >= 6.6 lays it out; the
// installed UAPI header may be older. The kernel accepts a shorter attr than
// its own, so this prefix is all that must be passed.
struct LinkCreateUprobeMultiAttr {
  uint32_t prog_fd;
  uint32_t target_fd;
  uint32_t attach_type;
  uint32_t flags;
  uint64_t path;
  uint64_t offsets;
  uint64_t ref_ctr_offsets;
  uint64_t cookies;
  uint32_t cnt;
  uint32_t multi_flags;
  uint32_t pid;
  uint32_t pad;
};
static_assert(sizeof(LinkCreateUprobeMultiAttr) == 64, "bpf_attr.link_create layout");

// Hand-assembled so that probing needs no object file. Encoding per the BPF
// ISA: opcode byte, dst/src nibbles, 16-bit offset, 32-bit immediate.
constexpr bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}
constexpr uint8_t kMov64Imm = BPF_ALU64 | BPF_MOV | BPF_K;
constexpr uint8_t kMov64Reg = BPF_ALU64 | BPF_MOV | BPF_X;
constexpr uint8_t kAdd64Imm = BPF_ALU64 | BPF_ADD | BPF_K;
constexpr uint8_t kStoreDwImm = BPF_ST | BPF_MEM | BPF_DW;
constexpr uint8_t kCall = BPF_JMP | BPF_CALL;
constexpr uint8_t kExit = BPF_JMP | BPF_EXIT;
constexpr int kHelperProbeWriteUser = 36;

bool ProbeUprobeMulti() {
  const bpf_insn insns[] = {Insn(kMov64Imm, 0, 0, 0, 0), Insn(kExit, 0, 0, 0, 0)};
  LIBBPF_OPTS(bpf_prog_load_opts, opts,
              .expected_attach_type = static_cast<enum bpf_attach_type>(kAttachTraceUprobeMulti));
  int prog = bpf_prog_load(BPF_PROG_TYPE_KPROBE, nullptr, "GPL", insns, 2, &opts);
  if (prog < 0) return false;
  // "/" is a directory: a kernel that knows uprobe_multi gets as far as
  // resolving the path and refuses it with EBADF; one that does not rejects
  // the attach type with EINVAL first. Nothing gets attached either way.
  const uint64_t offset = 0;
  int fd = CreateUprobeMultiLink(prog, "/", &offset, nullptr, 1, 0);
  close(prog);
  if (fd >= 0) {
    close(fd);
    return true;
  }
  return fd == -EBADF;
}

bool ProbeWriteUser() {
  // bpf_probe_write_user(NULL, &zero_on_stack, 8): the verifier only checks
  // types, and lockdown removes the helper from the program's helper set.
  // Where it is allowed the kernel logs a one-line warning when this loads;
  // the program is never attached.
  const bpf_insn insns[] = {
      Insn(kMov64Imm, 1, 0, 0, 0),  Insn(kStoreDwImm, 10, 0, -8, 0),
      Insn(kMov64Reg, 2, 10, 0, 0), Insn(kAdd64Imm, 2, 0, 0, -8),
      Insn(kMov64Imm, 3, 0, 0, 8),  Insn(kCall, 0, 0, 0, kHelperProbeWriteUser),
      Insn(kMov64Imm, 0, 0, 0, 0),  Insn(kExit, 0, 0, 0, 0),
  };
  int prog = bpf_prog_load(BPF_PROG_TYPE_KPROBE, nullptr, "GPL", insns,
                           sizeof insns / sizeof insns[0], nullptr);
  if (prog < 0) return false;
  close(prog);
  return true;
}

constexpr int kHelperProbeReadKernel = 113;

bool ProbeTrivial() {
  const bpf_insn insns[] = {Insn(kMov64Imm, 0, 0, 0, 0), Insn(kExit, 0, 0, 0, 0)};
  int prog = bpf_prog_load(BPF_PROG_TYPE_KPROBE, nullptr, "GPL", insns, 2, nullptr);
  if (prog < 0) return false;
  close(prog);
  return true;
}

bool ProbeReadKernel() {
  // bpf_probe_read_kernel(fp-8, 8, NULL): refused under lockdown=confidentiality only
  const bpf_insn insns[] = {
      Insn(kMov64Reg, 1, 10, 0, 0),
      Insn(kAdd64Imm, 1, 0, 0, -8),
      Insn(kMov64Imm, 2, 0, 0, 8),
      Insn(kMov64Imm, 3, 0, 0, 0),
      Insn(kCall, 0, 0, 0, kHelperProbeReadKernel),
      Insn(kMov64Imm, 0, 0, 0, 0),
      Insn(kExit, 0, 0, 0, 0),
  };
  int prog = bpf_prog_load(BPF_PROG_TYPE_KPROBE, nullptr, "GPL", insns,
                           sizeof insns / sizeof insns[0], nullptr);
  if (prog < 0) return false;
  close(prog);
  return true;
}

std::mutex g_stats_mu;
int g_stats_fd = -1;

}  // namespace

int CreateUprobeMultiLink(int prog_fd, const char* path, const uint64_t* offsets,
                          const uint64_t* cookies, uint32_t count, uint32_t pid) {
  LinkCreateUprobeMultiAttr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.prog_fd = static_cast<uint32_t>(prog_fd);
  attr.attach_type = kAttachTraceUprobeMulti;
  attr.path = reinterpret_cast<uintptr_t>(path);
  attr.offsets = reinterpret_cast<uintptr_t>(offsets);
  attr.cookies = reinterpret_cast<uintptr_t>(cookies);
  attr.cnt = count;
  attr.pid = pid;
  long fd = syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof attr);
  if (fd < 0) return -errno;
  return static_cast<int>(fd);
}

bool UprobeMultiSupported() {
  static std::once_flag once;
  static bool supported = false;
  std::call_once(once, [] { supported = ProbeUprobeMulti(); });
  return supported;
}

bool ProbeWriteUserAllowed() {
  static std::once_flag once;
  static bool allowed = false;
  std::call_once(once, [] { allowed = ProbeWriteUser(); });
  return allowed;
}

std::string LockdownMode() {
  // Format: "none [integrity] confidentiality", the active one bracketed.
  std::ifstream f("/sys/kernel/security/lockdown");
  std::string line;
  if (!f || !std::getline(f, line)) {
    // securityfs not mounted: lockdown takes bpf_probe_write_user out of
    // tracing programs' helpers at integrity, bpf_probe_read_kernel too at
    // confidentiality, and nothing else does (Linux >= 5.5)
    if (ProbeWriteUserAllowed()) return "none";
    if (!ProbeTrivial()) return "unknown";  // no right to load programs at all
    return ProbeReadKernel() ? "integrity" : "confidentiality";
  }
  size_t open = line.find('['), close_ = line.find(']');
  if (open == std::string::npos || close_ == std::string::npos || close_ < open) return "unknown";
  std::string mode = line.substr(open + 1, close_ - open - 1);
  if (mode == "none" || mode == "integrity" || mode == "confidentiality") return mode;
  return "unknown";
}

bool BpfStatsEnabled() {
  {
    std::lock_guard<std::mutex> lock(g_stats_mu);
    if (g_stats_fd >= 0) return true;
  }
  std::ifstream f("/proc/sys/kernel/bpf_stats_enabled");
  int v = 0;
  return static_cast<bool>(f >> v) && v != 0;
}

bool EnableRunTimeStats() {
  std::lock_guard<std::mutex> lock(g_stats_mu);
  if (g_stats_fd >= 0) return true;
  // The kernel counts run time only while some fd from BPF_ENABLE_STATS is
  // open, so this one is deliberately never closed.
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) return false;
  g_stats_fd = fd;
  return true;
}

}  // namespace gotrail
