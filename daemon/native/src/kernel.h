// Kernel facts the attachment policy depends on, probed rather than inferred
// from the kernel version (distributions backport and lock features down).
#pragma once

#include <cstdint>
#include <string>

namespace gotrail {

// BPF_TRACE_UPROBE_MULTI in the kernel UAPI (Linux >= 6.6). The system
// libbpf 1.1 predates it, so its enum does not name it.
constexpr int kAttachTraceUprobeMulti = 48;

// True when the kernel accepts a BPF_TRACE_UPROBE_MULTI link. Probed once
// per process (any thread) and cached.
bool UprobeMultiSupported();

// True when the verifier lets a program call bpf_probe_write_user (refused
// under lockdown=integrity). Probed once and cached.
bool ProbeWriteUserAllowed();

// "none", "integrity", "confidentiality", or "unknown" when securityfs is
// not mounted or the LSM is absent.
std::string LockdownMode();

// Whether run_cnt/run_time_ns are being accumulated: either this process
// holds the BPF_ENABLE_STATS fd or the kernel.bpf_stats_enabled sysctl is on.
bool BpfStatsEnabled();

// Turns on BPF_STATS_RUN_TIME for as long as this process lives. Returns
// false when the kernel refuses (errno is left set).
bool EnableRunTimeStats();

// BPF_LINK_CREATE for a uprobe_multi link. Returns the link fd, or -errno.
// pid 0 means every process.
int CreateUprobeMultiLink(int prog_fd, const char* path, const uint64_t* offsets,
                          const uint64_t* cookies, uint32_t count, uint32_t pid);

}  // namespace gotrail
