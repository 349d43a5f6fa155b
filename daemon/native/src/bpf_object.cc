// BpfObject: opening, loading, program statistics, the ring buffers and
// closing. Maps are in bpf_object_maps.cc, links in bpf_object_links.cc,
// argument checks in bpf_object_args.cc.
#include "bpf_object.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <cstring>
#include <utility>

#include "bpf_object_args.h"
#include "errors.h"
#include "kernel.h"

namespace gotrail {

namespace {

// How much of the libbpf log a load error quotes: the verifier's reason is
// at the end, and the whole log can run to megabytes.
constexpr size_t kLogTailLines = 40;

bool IsUprobeMultiSection(const char* sec) {
  if (sec == nullptr) return false;
  const char kPrefix[] = "uprobe.multi";
  const size_t n = sizeof kPrefix - 1;
  return std::strncmp(sec, kPrefix, n) == 0 && (sec[n] == '\0' || sec[n] == '/');
}

// Marks BpfObject instances (napi_type_tag_object).
const napi_type_tag kBpfObjectTag = {0x6f747261696c4250ULL, 0x466f626a65637431ULL};

}  // namespace

// JS thread, once per environment (main thread or worker) at module load.
Napi::Function BpfObject::Define(Napi::Env env) {
  return DefineClass(env, "BpfObject",
                     {
                         InstanceMethod<&BpfObject::Load>("load"),
                         InstanceMethod<&BpfObject::ProgramNames>("programNames"),
                         InstanceMethod<&BpfObject::MapNames>("mapNames"),
                         InstanceMethod<&BpfObject::MapInfo>("mapInfo"),
                         InstanceMethod<&BpfObject::MapUpdate>("mapUpdate"),
                         InstanceMethod<&BpfObject::MapLookup>("mapLookup"),
                         InstanceMethod<&BpfObject::MapDelete>("mapDelete"),
                         InstanceMethod<&BpfObject::MapKeys>("mapKeys"),
                         InstanceMethod<&BpfObject::MapCount>("mapCount"),
                         InstanceMethod<&BpfObject::AttachUprobes>("attachUprobes"),
                         InstanceMethod<&BpfObject::AttachTracepoint>("attachTracepoint"),
                         InstanceMethod<&BpfObject::AttachSocket>("attachSocket"),
                         InstanceMethod<&BpfObject::Detach>("detach"),
                         InstanceMethod<&BpfObject::DetachAsync>("detachAsync"),
                         InstanceMethod<&BpfObject::LinkSets>("linkSets"),
                         InstanceMethod<&BpfObject::ProgramStats>("programStats"),
                         InstanceMethod<&BpfObject::ProgramFd>("programFd"),
                         InstanceMethod<&BpfObject::StartRingBuffer>("startRingBuffer"),
                         InstanceMethod<&BpfObject::RingBufferStats>("ringBufferStats"),
                         InstanceMethod<&BpfObject::StopRingBuffer>("stopRingBuffer"),
                         InstanceMethod<&BpfObject::PauseRingBuffer>("pauseRingBuffer"),
                         InstanceMethod<&BpfObject::ConsumeRingBufferNow>("consumeRingBufferNow"),
                         InstanceMethod<&BpfObject::Close>("close"),
                         InstanceAccessor<&BpfObject::GetUprobeMulti>("uprobeMulti"),
                         InstanceAccessor<&BpfObject::GetLoaded>("loaded"),
                         InstanceAccessor<&BpfObject::GetClosed>("closed"),
                     });
}

// JS thread. Opens the ELF object and fixes up everything that must be
// decided before load: program types for sections libbpf 1.1 does not
// know, autoload, map sizes.
BpfObject::BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
  // A constructor that throws gets no destructor call.
  try {
    Open(info);
  } catch (...) {
    CloseAll();
    throw;
  }
}

void BpfObject::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // tells a BpfObject given as an option from any other object
  napi_type_tag_object(env, info.This(), &kBpfObjectTag);
  path_ = StringArg(info, 0, "open BPF object", "path");
  const std::string op = "open BPF object " + path_;
  Napi::Object opts = OptionalObject(info, 1, op, "options");

  // Decided for the whole object at open time, because the attach type is
  // baked into each program when it is loaded.
  Napi::Value multi = opts.Get("uprobeMulti");
  if (multi.IsUndefined()) {
    uprobe_multi_ = UprobeMultiSupported();
  } else if (multi.IsBoolean()) {
    uprobe_multi_ = multi.As<Napi::Boolean>().Value();
    if (uprobe_multi_ && !UprobeMultiSupported()) {
      Throw(env, op, EOPNOTSUPP, "uprobeMulti requested but this kernel has no uprobe_multi links");
    }
  } else {
    Throw(env, op, EINVAL, "uprobeMulti must be a boolean");
  }

  std::set<std::string> autoload;
  Napi::Value al = opts.Get("autoload");
  const bool has_autoload = !al.IsUndefined();
  if (has_autoload) {
    if (!al.IsArray()) Throw(env, op, EINVAL, "autoload must be an array of program names");
    Napi::Array arr = al.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsString()) Throw(env, op, EINVAL, "autoload must be an array of program names");
      autoload.insert(v.As<Napi::String>().Utf8Value());
    }
  }

  LibbpfLogCapture log;
  bpf_object* obj = bpf_object__open_file(path_.c_str(), nullptr);
  if (obj == nullptr) {
    const int err = errno;
    ThrowWithLog(env, op, err, log.Tail(kLogTailLines));
  }
  obj_ = obj;

  bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
    const char* name = bpf_program__name(prog);
    if (IsUprobeMultiSection(bpf_program__section_name(prog))) {
      multi_programs_.insert(name);
      bpf_program__set_type(prog, BPF_PROG_TYPE_KPROBE);
      bpf_program__set_expected_attach_type(
          prog, static_cast<enum bpf_attach_type>(uprobe_multi_ ? kAttachTraceUprobeMulti : 0));
    }
    if (has_autoload) bpf_program__set_autoload(prog, autoload.count(name) > 0);
  }
  for (const std::string& name : autoload) {
    if (bpf_object__find_program_by_name(obj_, name.c_str()) == nullptr) {
      Throw(env, op, ENOENT, "autoload names unknown program " + name);
    }
  }

  // Maps of the same name in an already loaded object are used instead of
  // new ones (bpf_map__reuse_fd): an object loaded separately — so that a
  // kernel refusing it refuses nothing else — still sees the probes' state.
  Napi::Value share = opts.Get("shareMapsFrom");
  if (!share.IsUndefined()) {
    const std::string sop = op + ": share maps";
    bool tagged = false;
    if (share.IsObject()) napi_check_object_type_tag(env, share, &kBpfObjectTag, &tagged);
    if (!tagged) Throw(env, sop, EINVAL, "shareMapsFrom must be a BpfObject");
    BpfObject* from = Napi::ObjectWrap<BpfObject>::Unwrap(share.As<Napi::Object>());
    if (from->obj_ == nullptr || !from->loaded_) {
      Throw(env, sop, EBADF, "shareMapsFrom must be a loaded, open BpfObject");
    }
    bpf_map* map;
    bpf_object__for_each_map(map, obj_) {
      if (bpf_map__is_internal(map)) continue;  // .rodata, .bss: the object's own
      const bpf_map* theirs = bpf_object__find_map_by_name(from->obj_, bpf_map__name(map));
      if (theirs == nullptr) continue;
      int err = bpf_map__reuse_fd(map, bpf_map__fd(theirs));
      if (err) ThrowWithLog(env, sop + " " + bpf_map__name(map), -err, log.Tail(kLogTailLines));
    }
  }

  Napi::Value sizes = opts.Get("mapMaxEntries");
  if (!sizes.IsUndefined()) {
    if (!sizes.IsObject()) Throw(env, op, EINVAL, "mapMaxEntries must be an object");
    Napi::Object so = sizes.As<Napi::Object>();
    Napi::Array keys = so.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string map_name = keys.Get(i).ToString().Utf8Value();
      const std::string mop = op + ": resize map " + map_name;
      bpf_map* map = bpf_object__find_map_by_name(obj_, map_name.c_str());
      if (map == nullptr) Throw(env, mop, ENOENT, "no map named " + map_name);
      int64_t n = IntOption(env, so, map_name.c_str(), 0, 1, UINT32_MAX, mop);
      int err = bpf_map__set_max_entries(map, static_cast<uint32_t>(n));
      if (err) ThrowWithLog(env, mop, -err, log.Tail(kLogTailLines));
    }
  }
}

// JS thread: garbage collection or environment teardown.
BpfObject::~BpfObject() {
  for (auto& entry : rings_) entry.second->DetachOwner();
  CloseAll();
}

// JS thread.
void BpfObject::CloseAll() {
  // A ring buffer reads the map through its own mmap, which keeps the map
  // alive after the object is closed; each poll thread winds down on its own
  // and stays in rings_ until then, so that stopRingBuffer() after close()
  // still waits for it.
  for (auto& entry : rings_) entry.second->RequestStop();
  for (auto& entry : link_sets_) DestroyLinkSet(entry.second);
  link_sets_.clear();
  if (obj_ != nullptr) {
    bpf_object__close(obj_);
    obj_ = nullptr;
  }
}

// JS thread, from the ring buffer's TSFN finalizer.
void BpfObject::RingBufferStopped(RingBufferState* state, const RingBufferCounters& final) {
  auto it = rings_.find(state->MapName());
  if (it == rings_.end() || it->second.get() != state) return;
  stopped_rings_[state->MapName()] = final;
  rings_.erase(it);
}

void BpfObject::RequireOpen(Napi::Env env, const std::string& op) const {
  if (obj_ == nullptr) Throw(env, op, EBADF, "the BPF object is closed");
}

bpf_program* BpfObject::FindProgram(Napi::Env env, const std::string& op,
                                    const std::string& name) const {
  RequireOpen(env, op);
  bpf_program* prog = bpf_object__find_program_by_name(obj_, name.c_str());
  if (prog == nullptr) Throw(env, op, ENOENT, "no program named " + name + " in " + path_);
  return prog;
}

bpf_map* BpfObject::FindMap(Napi::Env env, const std::string& op, const std::string& name) const {
  RequireOpen(env, op);
  bpf_map* map = bpf_object__find_map_by_name(obj_, name.c_str());
  if (map == nullptr) Throw(env, op, ENOENT, "no map named " + name + " in " + path_);
  return map;
}

int BpfObject::LoadedMapFd(Napi::Env env, const std::string& op, bpf_map* map) const {
  int fd = bpf_map__fd(map);
  if (!loaded_ || fd < 0) Throw(env, op, EBADF, "the BPF object is not loaded");
  return fd;
}

namespace {

// A signal that arrives while the kernel verifies a program makes
// BPF_PROG_LOAD fail with EAGAIN (the verifier gives up on a pending signal),
// and libbpf retries only a few times: a profiler that samples the thread
// every millisecond (node --cpu-prof sends SIGPROF) made every attempt fail,
// and every probe was left out. The calling thread's asynchronous signals
// wait until the load is done instead (a process-directed one goes to
// another thread meanwhile); faults stay deliverable.
class AsyncSignalsHeld {
 public:
  AsyncSignalsHeld() {
    sigset_t set;
    sigfillset(&set);
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&set, s);
    held_ = pthread_sigmask(SIG_BLOCK, &set, &old_) == 0;
  }
  ~AsyncSignalsHeld() {
    if (held_) pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  AsyncSignalsHeld(const AsyncSignalsHeld&) = delete;
  AsyncSignalsHeld& operator=(const AsyncSignalsHeld&) = delete;

 private:
  sigset_t old_;
  bool held_ = false;
};

}  // namespace

// JS thread. Blocks for verification; the caller decides when that is
// acceptable (once per agent start).
Napi::Value BpfObject::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "load BPF object " + path_;
  RequireOpen(env, op);
  if (loaded_) Throw(env, op, EALREADY, "already loaded");
  LibbpfLogCapture log;
  int err;
  {
    AsyncSignalsHeld held;
    err = bpf_object__load(obj_);
  }
  if (err) ThrowWithLog(env, op, -err, log.Tail(kLogTailLines));
  loaded_ = true;
  // Loading parsed the kernel's BTF for CO-RE (tens of MiB of short-lived
  // allocations, freed by now): hand the freed heap back to the system
  // rather than keep it resident for the agent's lifetime.
  malloc_trim(0);
  return env.Undefined();
}

// JS thread.
Napi::Value BpfObject::ProgramNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireOpen(env, "list programs");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) out.Set(i++, bpf_program__name(prog));
  return out;
}

// JS thread. run_time_ns only advances while BPF_STATS_RUN_TIME is enabled
// (enableStats()); run_cnt likewise.
// JS thread. The fd of a loaded program, owned by this object (valid until
// close()): what a BPF_MAP_TYPE_PROG_ARRAY takes as a value, in any object's
// map.
Napi::Value BpfObject::ProgramFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "program fd", "program name");
  const std::string op = "program fd of " + name;
  bpf_program* prog = FindProgram(env, op, name);
  const int fd = bpf_program__fd(prog);
  if (fd < 0) Throw(env, op, EBADF, "program " + name + " is not loaded");
  return Napi::Number::New(env, fd);
}

Napi::Value BpfObject::ProgramStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireOpen(env, "read program stats");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) continue;
    bpf_prog_info pinfo;
    std::memset(&pinfo, 0, sizeof pinfo);
    uint32_t len = sizeof pinfo;
    if (bpf_obj_get_info_by_fd(fd, &pinfo, &len) != 0) {
      Throw(env, std::string("read stats of prog ") + bpf_program__name(prog), errno);
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_program__name(prog));
    o.Set("runCount", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.run_cnt)));
    o.Set("runTimeNs", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.run_time_ns)));
    out.Set(i++, o);
  }
  return out;
}

// JS thread. Starts the poll thread of one ring-buffer map; see
// ring_buffer.h.
Napi::Value BpfObject::StartRingBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "start ring buffer", "map name");
  const std::string op = "start ring buffer " + name;
  bpf_map* map = FindMap(env, op, name);
  int fd = LoadedMapFd(env, op, map);
  if (bpf_map__type(map) != BPF_MAP_TYPE_RINGBUF) {
    Throw(env, op, EINVAL, "map " + name + " is not a ring buffer");
  }
  if (info.Length() < 2 || !info[1].IsFunction())
    Throw(env, op, EINVAL, "onBatch must be a function");
  if (rings_.count(name) > 0)
    Throw(env, op, EBUSY, "a ring buffer is already running on map " + name);
  Napi::Object o = OptionalObject(info, 2, op, "options");
  RingBufferOptions ro;
  ro.interval_ms =
      static_cast<uint32_t>(IntOption(env, o, "intervalMs", ro.interval_ms, 0, 60000, op));
  ro.max_queued_batches = static_cast<uint32_t>(
      IntOption(env, o, "maxQueuedBatches", ro.max_queued_batches, 1, 1 << 20, op));
  ro.max_batch_bytes = static_cast<uint32_t>(
      IntOption(env, o, "maxBatchBytes", ro.max_batch_bytes, 64, 1 << 30, op));
  Napi::Value wakeup = o.Get("wakeup");
  if (!wakeup.IsUndefined()) {
    if (!wakeup.IsBoolean()) Throw(env, op, EINVAL, "wakeup must be a boolean");
    ro.wakeup = wakeup.As<Napi::Boolean>().Value();
  }
  Napi::Value reuse = o.Get("reuseBatches");
  if (!reuse.IsUndefined()) {
    if (!reuse.IsBoolean()) Throw(env, op, EINVAL, "reuseBatches must be a boolean");
    ro.reuse_batches = reuse.As<Napi::Boolean>().Value();
  }
  if (ro.interval_ms == 0 && !ro.wakeup)
    Throw(env, op, EINVAL, "intervalMs 0 (no timer) needs wakeup: true");
  Napi::Value control = o.Get("wakeControl");
  if (!control.IsUndefined()) {
    if (!control.IsString()) Throw(env, op, EINVAL, "wakeControl must be a map name");
    const std::string cname = control.As<Napi::String>().Utf8Value();
    bpf_map* cmap = FindMap(env, op, cname);
    if (bpf_map__type(cmap) != BPF_MAP_TYPE_ARRAY ||
        (bpf_map__map_flags(cmap) & BPF_F_MMAPABLE) == 0 || bpf_map__value_size(cmap) < 24) {
      Throw(env, op, EINVAL,
            "wakeControl map " + cname +
                " must be an mmapable array whose value starts with four u32 and a u64 (struct "
                "gt_rb_control)");
    }
    ro.wake_control_fd = LoadedMapFd(env, op, cmap);
    ro.wake_bytes = static_cast<uint32_t>(
        IntOption(env, o, "wakeBytes", bpf_map__max_entries(map) / 4, 0, UINT32_MAX, op));
  }
  rings_[name] = RingBufferState::Start(env, fd, bpf_map__max_entries(map), name,
                                        info[1].As<Napi::Function>(), ro, this);
  stopped_rings_.erase(name);
  return env.Undefined();
}

// JS thread. ringBufferStats(mapName?): one map's counters (live, or final
// once stopped), or the sum over every ring buffer of the object.
Napi::Value BpfObject::RingBufferStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    std::string name = StringArg(info, 0, "read ring buffer stats", "map name");
    auto live = rings_.find(name);
    if (live != rings_.end()) return CountersToJs(env, live->second->Counters());
    auto done = stopped_rings_.find(name);
    if (done != stopped_rings_.end()) return CountersToJs(env, done->second);
    // Never started: zeros, but only for a map that exists.
    FindMap(env, "read ring buffer stats " + name, name);
    return CountersToJs(env, RingBufferCounters());
  }
  RingBufferCounters sum;
  for (const auto& entry : rings_) sum += entry.second->Counters();
  for (const auto& entry : stopped_rings_) sum += entry.second;
  return CountersToJs(env, sum);
}

// JS thread. stopRingBuffer(mapName?): only signals; the promise settles
// from the TSFN finalizers once the poll threads have drained, released and
// been joined. Resolves at once when nothing (of that name) runs.
Napi::Value BpfObject::StopRingBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<RingBufferState*> targets;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    std::string name = StringArg(info, 0, "stop ring buffer", "map name");
    auto it = rings_.find(name);
    if (it != rings_.end()) targets.push_back(it->second.get());
  } else {
    for (auto& entry : rings_) targets.push_back(entry.second.get());
  }
  napi_deferred deferred;
  napi_value promise;
  napi_status st = napi_create_promise(env, &deferred, &promise);
  NAPI_THROW_IF_FAILED(env, st, Napi::Value());
  if (targets.empty()) {
    napi_resolve_deferred(env, deferred, env.Undefined());
  } else {
    auto waiter = std::make_shared<StopWaiter>(StopWaiter{deferred, targets.size()});
    for (RingBufferState* r : targets) {
      r->AddStopWaiter(waiter);
      r->RequestStop();
    }
  }
  return Napi::Value(env, promise);
}

// JS thread. pauseRingBuffer(mapName, paused) -> whether a ring buffer runs
// on that map (nothing to pause otherwise).
Napi::Value BpfObject::PauseRingBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "pause ring buffer", "map name");
  const std::string op = "pause ring buffer " + name;
  if (info.Length() < 2 || !info[1].IsBoolean()) Throw(env, op, EINVAL, "paused must be a boolean");
  auto it = rings_.find(name);
  if (it == rings_.end()) return Napi::Boolean::New(env, false);
  it->second->SetPaused(info[1].As<Napi::Boolean>().Value());
  return Napi::Boolean::New(env, true);
}

// JS thread. consumeRingBufferNow(mapName) -> whether a ring buffer runs
// on that map.
Napi::Value BpfObject::ConsumeRingBufferNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "consume ring buffer", "map name");
  auto it = rings_.find(name);
  if (it == rings_.end()) return Napi::Boolean::New(env, false);
  it->second->ConsumeNow();
  return Napi::Boolean::New(env, true);
}

// JS thread. Detaching perf-event uprobes is slow (see DestroyLinkSet), so
// close() may block for a while in single-uprobe mode.
Napi::Value BpfObject::Close(const Napi::CallbackInfo& info) {
  CloseAll();
  return info.Env().Undefined();
}

// JS thread, as are the other accessors.
Napi::Value BpfObject::GetUprobeMulti(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), uprobe_multi_);
}

Napi::Value BpfObject::GetLoaded(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), loaded_ && obj_ != nullptr);
}

Napi::Value BpfObject::GetClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), obj_ == nullptr);
}

}  // namespace gotrail
