// BpfObject's links: attaching uprobes (one uprobe_multi link, or one
// perf-event link per site) and tracepoints as link sets, and detaching them.
#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>

#include "bpf_object.h"
#include "bpf_object_args.h"
#include "errors.h"
#include "kernel.h"

namespace gotrail {

namespace {

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

const char* KindName(int kind) {
  switch (kind) {
    case 0: return "uprobe_multi";
    case 1: return "uprobe";
    case 3: return "socket";
    default: return "tracepoint";
  }
}

}  // namespace

int BpfObject::AddLinkSet(LinkSet set) {
  int handle = next_handle_++;
  link_sets_.emplace(handle, std::move(set));
  return handle;
}

// Perf-event uprobe links are slow to destroy (~110 ms each measured on the
// target machines); uprobe_multi links are one close().
void BpfObject::DestroyLinkSet(LinkSet& set) {
  if (set.multi_fd >= 0) {
    close(set.multi_fd);
    set.multi_fd = -1;
  }
  for (bpf_link* l : set.links) bpf_link__destroy(l);
  set.links.clear();
}

// JS thread. One call = one link set, whatever the mechanism, so that the
// policy layer attaches and detaches a probe on a binary as a unit.
Napi::Value BpfObject::AttachUprobes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string program = StringArg(info, 0, "attach uprobes", "program name");
  std::string binary = StringArg(info, 1, "attach uprobes prog " + program, "binary path");
  std::string op = "attach uprobes prog " + program + " to " + binary;
  bpf_program* prog = FindProgram(env, op, program);

  if (info.Length() < 3 || !info[2].IsArray())
    Throw(env, op, EINVAL, "fileOffsets must be an array");
  Napi::Array offs = info[2].As<Napi::Array>();
  std::vector<uint64_t> offsets(offs.Length());
  for (uint32_t i = 0; i < offs.Length(); i++) {
    Napi::Value v = offs.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
      Throw(env, op, EINVAL,
            "fileOffsets[" + std::to_string(i) + "] must be a non-negative integer");
    }
    offsets[i] = static_cast<uint64_t>(d);
  }
  std::vector<uint64_t> cookies(offsets.size(), 0);
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsArray()) Throw(env, op, EINVAL, "cookies must be an array of bigint");
    Napi::Array cs = info[3].As<Napi::Array>();
    if (cs.Length() != 0 && cs.Length() != offsets.size()) {
      Throw(env, op, EINVAL,
            "got " + std::to_string(cs.Length()) + " cookies for " +
                std::to_string(offsets.size()) + " offsets");
    }
    for (uint32_t i = 0; i < cs.Length(); i++) {
      Napi::Value v = cs.Get(i);
      if (v.IsBigInt()) {
        bool lossless = true;
        cookies[i] = v.As<Napi::BigInt>().Uint64Value(&lossless);
        if (!lossless) Throw(env, op, EINVAL, "cookies[" + std::to_string(i) + "] is not a u64");
      } else if (v.IsNumber()) {
        cookies[i] = static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
      } else {
        Throw(env, op, EINVAL, "cookies[" + std::to_string(i) + "] must be a bigint");
      }
    }
  }
  Napi::Object opts = OptionalObject(info, 4, op, "options");
  const int64_t pid = IntOption(env, opts, "pid", -1, -1, INT32_MAX, op);
  if (pid == 0) Throw(env, op, EINVAL, "pid must be -1 (all processes) or a process id");
  Napi::Value fs = opts.Get("forceSingle");
  const bool force_single = fs.IsBoolean() && fs.As<Napi::Boolean>().Value();

  if (offsets.empty()) Throw(env, op, EINVAL, "no sites given");
  if (bpf_program__type(prog) != BPF_PROG_TYPE_KPROBE) {
    Throw(env, op, EINVAL, "program " + program + " is not a uprobe program");
  }
  const int prog_fd = bpf_program__fd(prog);
  if (prog_fd < 0) Throw(env, op, EBADF, "program " + program + " is not loaded");
  const bool is_multi_prog = multi_programs_.count(program) > 0;
  const bool use_multi = is_multi_prog && uprobe_multi_;
  if (use_multi && force_single) {
    Throw(env, op, EINVAL,
          "forceSingle needs the object opened with { uprobeMulti: false }: this program was "
          "loaded for uprobe_multi links");
  }

  const std::string sites =
      std::to_string(offsets.size()) + (offsets.size() == 1 ? " site" : " sites");
  LinkSet set;
  set.program = program;
  set.target = binary;
  set.sites = offsets.size();

  if (use_multi) {
    op = "attach uprobe_multi prog " + program + " to " + binary + " (" + sites + ")";
    int fd = CreateUprobeMultiLink(prog_fd, binary.c_str(), offsets.data(), cookies.data(),
                                   static_cast<uint32_t>(offsets.size()),
                                   pid < 0 ? 0 : static_cast<uint32_t>(pid));
    if (fd < 0) Throw(env, op, -fd);
    set.kind = LinkKind::kUprobeMulti;
    set.multi_fd = fd;
    return Napi::Number::New(env, AddLinkSet(std::move(set)));
  }

  set.kind = LinkKind::kUprobe;
  LibbpfLogCapture log;
  for (size_t i = 0; i < offsets.size(); i++) {
    LIBBPF_OPTS(bpf_uprobe_opts, uopts, .bpf_cookie = cookies[i], .retprobe = false);
    bpf_link* link = bpf_program__attach_uprobe_opts(prog, static_cast<pid_t>(pid), binary.c_str(),
                                                     offsets[i], &uopts);
    if (link == nullptr) {
      const int err = errno;
      DestroyLinkSet(set);  // all or nothing, like the multi link
      ThrowWithLog(env,
                   "attach uprobe prog " + program + " to " + binary + " at offset " +
                       Hex(offsets[i]) + " (site " + std::to_string(i + 1) + " of " +
                       std::to_string(offsets.size()) + ")",
                   err, log.Tail(4));
    }
    set.links.push_back(link);
  }
  return Napi::Number::New(env, AddLinkSet(std::move(set)));
}

// JS thread. Classic tracepoints need the perf event id from tracefs;
// raw_tp and tp_btf programs attach through the bpf syscall alone, which is
// why probes that must work where tracefs is not mounted use those.
Napi::Value BpfObject::AttachTracepoint(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string program = StringArg(info, 0, "attach tracepoint", "program name");
  std::string category = StringArg(info, 1, "attach tracepoint prog " + program, "category");
  std::string name = StringArg(info, 2, "attach tracepoint prog " + program, "name");
  bpf_program* prog = FindProgram(env, "attach tracepoint prog " + program, program);
  const enum bpf_prog_type type = bpf_program__type(prog);
  const bool raw = type == BPF_PROG_TYPE_RAW_TRACEPOINT;
  const bool btf =
      type == BPF_PROG_TYPE_TRACING && bpf_program__expected_attach_type(prog) == BPF_TRACE_RAW_TP;
  const std::string target = raw || btf ? name : category + ":" + name;
  const std::string op = std::string("attach ") +
                         (raw   ? "raw tracepoint"
                          : btf ? "BTF tracepoint"
                                : "tracepoint") +
                         " prog " + program + " to " + target;
  if (type != BPF_PROG_TYPE_TRACEPOINT && !raw && !btf) {
    Throw(env, op, EINVAL, "program " + program + " is not a tracepoint program");
  }
  if (bpf_program__fd(prog) < 0) Throw(env, op, EBADF, "program " + program + " is not loaded");
  LibbpfLogCapture log;
  bpf_link* link;
  if (raw) {
    link = bpf_program__attach_raw_tracepoint(prog, name.c_str());
  } else if (btf) {
    // The target was fixed at load time from SEC("tp_btf/<name>").
    const char* sec = bpf_program__section_name(prog);
    const char* slash = sec != nullptr ? std::strchr(sec, '/') : nullptr;
    if (slash == nullptr || name != slash + 1) {
      Throw(env, op, EINVAL,
            "a tp_btf program attaches to the tracepoint named in its section (" +
                std::string(sec != nullptr ? sec : "?") + ")");
    }
    link = bpf_program__attach_trace(prog);
  } else {
    link = bpf_program__attach_tracepoint(prog, category.c_str(), name.c_str());
  }
  if (link == nullptr) {
    const int err = errno;
    std::string detail;
    if (!raw && !btf && err == ENOENT && access("/sys/kernel/tracing/events", F_OK) != 0 &&
        access("/sys/kernel/debug/tracing/events", F_OK) != 0) {
      detail =
          "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing), or use a "
          "SEC(\"raw_tp/...\") or SEC(\"tp_btf/...\") program, which needs none";
    }
    ThrowWithLog(env, op, err, log.Tail(4), detail);
  }
  LinkSet set;
  set.program = program;
  set.target = target;
  set.kind = LinkKind::kTracepoint;
  set.sites = 1;
  set.links.push_back(link);
  return Napi::Number::New(env, AddLinkSet(std::move(set)));
}

// JS thread. attachSocket(program, target): a SEC("sockops") program to the
// cgroup v2 directory `target` (every socket its processes open, and its
// descendants'), or a SEC("sk_msg") program to the sockmap/sockhash named
// `target`. Both as BPF links (BPF_LINK_CREATE; sockmap links need kernel
// 6.10), so that they go away with the agent, whatever way it ends.
Napi::Value BpfObject::AttachSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string program = StringArg(info, 0, "attach socket program", "program name");
  std::string target = StringArg(info, 1, "attach socket program " + program, "target");
  bpf_program* prog = FindProgram(env, "attach socket program " + program, program);
  const enum bpf_prog_type type = bpf_program__type(prog);
  const bool sockops = type == BPF_PROG_TYPE_SOCK_OPS;
  const std::string op = std::string("attach ") + (sockops ? "sock_ops prog " : "sk_msg prog ") +
                         program + " to " + (sockops ? "cgroup " : "map ") + target;
  if (!sockops && type != BPF_PROG_TYPE_SK_MSG)
    Throw(env, op, EINVAL, "program " + program + " is neither sock_ops nor sk_msg");
  const int prog_fd = bpf_program__fd(prog);
  if (prog_fd < 0) Throw(env, op, EBADF, "program " + program + " is not loaded");
  int target_fd;
  bool own_target = false;
  if (sockops) {
    target_fd = open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (target_fd < 0) Throw(env, op, errno);
    own_target = true;
  } else {
    target_fd = LoadedMapFd(env, op, FindMap(env, op, target));
  }
  LibbpfLogCapture log;
  const int link_fd = bpf_link_create(prog_fd, target_fd,
                                      sockops ? BPF_CGROUP_SOCK_OPS : BPF_SK_MSG_VERDICT, nullptr);
  const int err = errno;
  if (own_target) close(target_fd);
  if (link_fd < 0) ThrowWithLog(env, op, err, log.Tail(4), "");
  LinkSet set;
  set.program = program;
  set.target = target;
  set.kind = LinkKind::kSocket;
  set.sites = 1;
  set.multi_fd = link_fd;
  return Napi::Number::New(env, AddLinkSet(std::move(set)));
}

// JS thread.
Napi::Value BpfObject::Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber())
    Throw(env, "detach", EINVAL, "handle must be a number");
  const int handle = info[0].As<Napi::Number>().Int32Value();
  const std::string op = "detach link set " + std::to_string(handle);
  auto it = link_sets_.find(handle);
  if (it == link_sets_.end()) Throw(env, op, ENOENT, "no such link set");
  DestroyLinkSet(it->second);
  link_sets_.erase(it);
  return env.Undefined();
}

// Destroys link sets on a libuv pool thread: closing a link waits for the
// kernel to retire it, which must not stall the agent's event loop while
// processes come and go. The sets were already taken out of the object on the
// JS thread, so nothing else can reach them.
//
// What one close() costs (kernel >= 6.12, kernel/trace/bpf_trace.c): releasing
// a uprobe_multi link calls uprobe_unregister_nosync() for each of its sites
// and then uprobe_unregister_sync() once for the link, which waits for an RCU
// Tasks Trace grace period and then an SRCU one (uretprobes_srcu), because a
// handler may still be running on another CPU. A perf-event uprobe waits
// likewise, per site. So the wait is per link, not per site, and does no work
// of its own: one link after another took 46-53 ms each here (73 ms and more
// beside a busy load). Waiters queued when a grace period starts share it, so
// every link is closed by a thread of its own (up to kMaxDetachThreads) and a
// batch costs a few grace periods. Starting all threads first and releasing
// them at once was no faster (starting 378 threads takes 7-16 ms, and one more
// grace period is often already running, from any process on the node).
//
// The breakpoints go in uprobe_unregister_nosync(): per site, under the global
// dup_mmap_sem taken for writing, it rewrites the page of every process that
// maps the file. That lock is handed from one waiting closer to the next, so
// with hundreds of closers every hand-over waits until the next one gets a CPU;
// beside a busy load that can be a scheduler time slice, and removing 1,008
// breakpoints from 42 running processes took 147-460 ms (medians of six runs)
// instead of 18-25 ms on a quiet machine. `nice` (the agent asks for -20) lets
// a woken closer run at once: 38-122 ms beside the same load, and the links
// were released in 125-272 ms instead of 230-522 ms. When quiet it costs a few
// ms instead (bench/detach-cost.ts). The closers only take the lock, rewrite
// the pages and sleep in the grace-period wait, so the priority costs the
// traced programs nothing but the (same) work done sooner. It needs
// CAP_SYS_NICE (or RLIMIT_NICE); without it the closers run at the caller's
// priority.
class DetachWorker : public Napi::AsyncWorker {
 public:
  // Each waiting thread costs a few touched stack pages and no CPU.
  static constexpr size_t kMaxDetachThreads = 1024;

  // no `nice` option: the closers keep the pool thread's
  static constexpr int kKeepNice = 100;

  DetachWorker(Napi::Env env, std::vector<BpfObject::LinkSet> sets, size_t max_threads, int nice)
      : Napi::AsyncWorker(env),
        sets_(std::move(sets)),
        max_threads_(max_threads),
        nice_(nice),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  // Pool thread.
  void Execute() override {
    // One item per kernel link: a perf-event link set has one per site.
    struct Item {
      int fd;
      bpf_link* link;
    };
    std::vector<Item> items;
    for (auto& set : sets_) {
      if (set.multi_fd >= 0) items.push_back({set.multi_fd, nullptr});
      for (bpf_link* l : set.links) items.push_back({-1, l});
      set.multi_fd = -1;
      set.links.clear();
    }
    // closing threads inherit the nice value of the thread that starts them
    const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
    errno = 0;
    const int old_nice = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
    // (the nice value is per thread on Linux: setpriority() with a thread id)
    const bool reniced = nice_ != kKeepNice && errno == 0 &&
                         setpriority(PRIO_PROCESS, static_cast<id_t>(tid), nice_) == 0;
    reniced_ = reniced;
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < items.size();) {
        if (items[i].fd >= 0) close(items[i].fd);
        if (items[i].link != nullptr) bpf_link__destroy(items[i].link);
      }
    };
    std::vector<std::thread> threads;
    const size_t n = std::min(items.empty() ? 0 : items.size() - 1, max_threads_ - 1);
    threads.reserve(n);
    for (size_t t = 0; t < n; t++) {
      try {
        threads.emplace_back(work);
      } catch (const std::system_error&) {
        break;  // out of threads: this one and those started do the rest
      }
    }
    work();
    for (auto& t : threads) t.join();
    if (reniced) setpriority(PRIO_PROCESS, static_cast<id_t>(tid), old_nice);
  }
  // JS thread.
  void OnOK() override {
    Napi::Object r = Napi::Object::New(Env());
    r.Set("reniced", Napi::Boolean::New(Env(), reniced_));
    deferred_.Resolve(r);
  }
  Napi::Promise Promise() const { return deferred_.Promise(); }

 private:
  std::vector<BpfObject::LinkSet> sets_;
  size_t max_threads_;
  int nice_;
  bool reniced_ = false;
  Napi::Promise::Deferred deferred_;
};

// JS thread. detachAsync(handles, { threads?, nice? }): the link sets disappear
// from linkSets() at once; the promise resolves when the kernel has let go of
// them, with whether the closers ran at `nice`. threads: 1 closes one link
// after another, to measure what one costs.
Napi::Value BpfObject::DetachAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray())
    Throw(env, "detach", EINVAL, "handles must be an array of numbers");
  Napi::Array arr = info[0].As<Napi::Array>();
  Napi::Object opts = OptionalObject(info, 1, "detach", "options");
  const int64_t max_threads = IntOption(env, opts, "threads", DetachWorker::kMaxDetachThreads, 1,
                                        DetachWorker::kMaxDetachThreads, "detach");
  const int64_t nice = IntOption(env, opts, "nice", DetachWorker::kKeepNice, -20, 19, "detach");
  // all handles are checked before any set is taken, so an error leaves
  // every link where it was
  std::vector<int> handles;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsNumber()) Throw(env, "detach", EINVAL, "handles must be an array of numbers");
    const int handle = v.As<Napi::Number>().Int32Value();
    if (link_sets_.find(handle) == link_sets_.end())
      Throw(env, "detach link set " + std::to_string(handle), ENOENT, "no such link set");
    handles.push_back(handle);
  }
  std::vector<LinkSet> sets;
  for (int handle : handles) {
    auto it = link_sets_.find(handle);
    if (it == link_sets_.end()) continue;  // listed twice
    sets.push_back(std::move(it->second));
    link_sets_.erase(it);
  }
  auto* worker = new DetachWorker(env, std::move(sets), static_cast<size_t>(max_threads),
                                  static_cast<int>(nice));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// JS thread.
Napi::Value BpfObject::LinkSets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& [handle, set] : link_sets_) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("handle", Napi::Number::New(env, handle));
    o.Set("program", set.program);
    o.Set("target", set.target);
    o.Set("kind", KindName(static_cast<int>(set.kind)));
    o.Set("sites", Napi::Number::New(env, static_cast<double>(set.sites)));
    out.Set(i++, o);
  }
  return out;
}

}  // namespace gotrail
