#include "bpf_object.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <utility>

#include "errors.h"
#include "kernel.h"

namespace gotrail {

namespace {

// How much of the libbpf log a load error quotes: the verifier's reason is
// at the end, and the whole log can run to megabytes.
constexpr size_t kLogTailLines = 40;

// Everything in this file runs on the JS thread that owns the object; the
// helpers below throw JS errors and so need its Env.

bool IsUprobeMultiSection(const char* sec) {
  if (sec == nullptr) return false;
  const char kPrefix[] = "uprobe.multi";
  const size_t n = sizeof kPrefix - 1;
  return std::strncmp(sec, kPrefix, n) == 0 && (sec[n] == '\0' || sec[n] == '/');
}

bool IsPerCpuMap(enum bpf_map_type t) {
  return t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_ARRAY ||
         t == BPF_MAP_TYPE_LRU_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const std::string& op,
                      const char* what) {
  if (i >= info.Length() || !info[i].IsString()) {
    Throw(info.Env(), op, EINVAL, std::string(what) + " must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

struct Bytes {
  const uint8_t* data;
  size_t size;
};

Bytes BytesArg(const Napi::CallbackInfo& info, size_t i, const std::string& op,
               const char* what) {
  if (i < info.Length() && info[i].IsTypedArray()) {
    Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_uint8_array) {
      Napi::Uint8Array u = info[i].As<Napi::Uint8Array>();
      return {u.Data(), u.ByteLength()};
    }
  }
  Throw(info.Env(), op, EINVAL, std::string(what) + " must be a Buffer or Uint8Array");
}

void RequireSize(Napi::Env env, const std::string& op, const char* what, size_t got,
                 size_t want) {
  if (got != want) {
    Throw(env, op, EINVAL,
          std::string(what) + " is " + std::to_string(got) + " bytes, the map wants " +
              std::to_string(want));
  }
}

Napi::Object OptionalObject(const Napi::CallbackInfo& info, size_t i, const std::string& op,
                            const char* what) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) {
    return Napi::Object::New(info.Env());
  }
  if (!info[i].IsObject()) Throw(info.Env(), op, EINVAL, std::string(what) + " must be an object");
  return info[i].As<Napi::Object>();
}

// Reads an optional non-negative integer option; `fallback` when absent.
int64_t IntOption(Napi::Env env, Napi::Object o, const char* key, int64_t fallback,
                  int64_t min, int64_t max, const std::string& op) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) Throw(env, op, EINVAL, std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(min) ||
      d > static_cast<double>(max)) {
    Throw(env, op, EINVAL,
          std::string(key) + " must be an integer in [" + std::to_string(min) + ", " +
              std::to_string(max) + "]");
  }
  return static_cast<int64_t>(d);
}

const char* KindName(int kind) {
  switch (kind) {
    case 0: return "uprobe_multi";
    case 1: return "uprobe";
    default: return "tracepoint";
  }
}

}  // namespace

// JS thread, once per environment (main thread or worker) at module load.
Napi::Function BpfObject::Define(Napi::Env env) {
  return DefineClass(
      env, "BpfObject",
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
          InstanceMethod<&BpfObject::Detach>("detach"),
          InstanceMethod<&BpfObject::DetachAsync>("detachAsync"),
          InstanceMethod<&BpfObject::LinkSets>("linkSets"),
          InstanceMethod<&BpfObject::ProgramStats>("programStats"),
          InstanceMethod<&BpfObject::StartRingBuffer>("startRingBuffer"),
          InstanceMethod<&BpfObject::RingBufferStats>("ringBufferStats"),
          InstanceMethod<&BpfObject::StopRingBuffer>("stopRingBuffer"),
          InstanceMethod<&BpfObject::PauseRingBuffer>("pauseRingBuffer"),
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

// Per-CPU maps exchange one value slot per possible CPU, each rounded up to
// 8 bytes, in both directions.
size_t BpfObject::ValueSize(bpf_map* map) const {
  size_t v = bpf_map__value_size(map);
  if (!IsPerCpuMap(bpf_map__type(map))) return v;
  int cpus = libbpf_num_possible_cpus();
  return ((v + 7) & ~static_cast<size_t>(7)) * static_cast<size_t>(cpus > 0 ? cpus : 1);
}

// JS thread. Blocks for verification; the caller decides when that is
// acceptable (once per agent start).
Napi::Value BpfObject::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "load BPF object " + path_;
  RequireOpen(env, op);
  if (loaded_) Throw(env, op, EALREADY, "already loaded");
  LibbpfLogCapture log;
  int err = bpf_object__load(obj_);
  if (err) ThrowWithLog(env, op, -err, log.Tail(kLogTailLines));
  loaded_ = true;
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

// JS thread.
Napi::Value BpfObject::MapNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireOpen(env, "list maps");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_map* map;
  bpf_object__for_each_map(map, obj_) out.Set(i++, bpf_map__name(map));
  return out;
}

// JS thread. Works before load, so that sizes can be checked against what
// the policy layer expects before committing to a load.
Napi::Value BpfObject::MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "map info", "map name");
  bpf_map* map = FindMap(env, "map info " + name, name);
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", Napi::Number::New(env, bpf_map__type(map)));
  o.Set("keySize", Napi::Number::New(env, bpf_map__key_size(map)));
  o.Set("valueSize", Napi::Number::New(env, bpf_map__value_size(map)));
  o.Set("maxEntries", Napi::Number::New(env, bpf_map__max_entries(map)));
  return o;
}

// JS thread.
Napi::Value BpfObject::MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "update map", "map name");
  const std::string op = "update map " + name;
  bpf_map* map = FindMap(env, op, name);
  int fd = LoadedMapFd(env, op, map);
  Bytes key = BytesArg(info, 1, op, "key");
  Bytes value = BytesArg(info, 2, op, "value");
  RequireSize(env, op, "key", key.size, bpf_map__key_size(map));
  RequireSize(env, op, "value", value.size, ValueSize(map));
  uint64_t flags = BPF_ANY;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsNumber()) Throw(env, op, EINVAL, "flags must be a number");
    flags = static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value());
  }
  if (bpf_map_update_elem(fd, key.data, value.data, flags) != 0) Throw(env, op, errno);
  return env.Undefined();
}

// JS thread.
Napi::Value BpfObject::MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "lookup in map", "map name");
  const std::string op = "lookup in map " + name;
  bpf_map* map = FindMap(env, op, name);
  int fd = LoadedMapFd(env, op, map);
  Bytes key = BytesArg(info, 1, op, "key");
  RequireSize(env, op, "key", key.size, bpf_map__key_size(map));
  Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, ValueSize(map));
  if (bpf_map_lookup_elem(fd, key.data, value.Data()) != 0) {
    if (errno == ENOENT) return env.Null();
    Throw(env, op, errno);
  }
  return value;
}

// JS thread.
Napi::Value BpfObject::MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "delete from map", "map name");
  const std::string op = "delete from map " + name;
  bpf_map* map = FindMap(env, op, name);
  int fd = LoadedMapFd(env, op, map);
  Bytes key = BytesArg(info, 1, op, "key");
  RequireSize(env, op, "key", key.size, bpf_map__key_size(map));
  if (bpf_map_delete_elem(fd, key.data) != 0) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    Throw(env, op, errno);
  }
  return Napi::Boolean::New(env, true);
}

// JS thread. The walk is bounded by max_entries because a hash map that
// changes underneath get_next_key restarts from its first key.
Napi::Value BpfObject::MapKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "list keys of map", "map name");
  const std::string op = "list keys of map " + name;
  bpf_map* map = FindMap(env, op, name);
  int fd = LoadedMapFd(env, op, map);
  uint64_t limit = bpf_map__max_entries(map);
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsNumber()) Throw(env, op, EINVAL, "limit must be a number");
    int64_t l = info[1].As<Napi::Number>().Int64Value();
    if (l < 0) Throw(env, op, EINVAL, "limit must not be negative");
    if (static_cast<uint64_t>(l) < limit) limit = static_cast<uint64_t>(l);
  }
  const size_t ks = bpf_map__key_size(map);
  std::vector<uint8_t> prev(ks), next(ks);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (bool first = true; n < limit; first = false) {
    if (bpf_map_get_next_key(fd, first ? nullptr : prev.data(), next.data()) != 0) {
      if (errno == ENOENT) break;
      Throw(env, op, errno);
    }
    out.Set(n++, Napi::Buffer<uint8_t>::Copy(env, next.data(), ks));
    prev.swap(next);
  }
  return out;
}

// JS thread.
Napi::Value BpfObject::MapCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "count entries of map", "map name");
  const std::string op = "count entries of map " + name;
  bpf_map* map = FindMap(env, op, name);
  int fd = LoadedMapFd(env, op, map);
  const uint64_t limit = bpf_map__max_entries(map);
  const size_t ks = bpf_map__key_size(map);
  std::vector<uint8_t> prev(ks), next(ks);
  uint64_t n = 0;
  for (bool first = true; n < limit; first = false) {
    if (bpf_map_get_next_key(fd, first ? nullptr : prev.data(), next.data()) != 0) {
      if (errno == ENOENT) break;
      Throw(env, op, errno);
    }
    n++;
    prev.swap(next);
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

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

  if (info.Length() < 3 || !info[2].IsArray()) Throw(env, op, EINVAL, "fileOffsets must be an array");
  Napi::Array offs = info[2].As<Napi::Array>();
  std::vector<uint64_t> offsets(offs.Length());
  for (uint32_t i = 0; i < offs.Length(); i++) {
    Napi::Value v = offs.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
      Throw(env, op, EINVAL, "fileOffsets[" + std::to_string(i) + "] must be a non-negative integer");
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

  const std::string sites = std::to_string(offsets.size()) + (offsets.size() == 1 ? " site" : " sites");
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
  const bool btf = type == BPF_PROG_TYPE_TRACING &&
                   bpf_program__expected_attach_type(prog) == BPF_TRACE_RAW_TP;
  const std::string target = raw || btf ? name : category + ":" + name;
  const std::string op = std::string("attach ") + (raw ? "raw tracepoint" : btf ? "BTF tracepoint" : "tracepoint") +
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
      Throw(env, op, EINVAL, "a tp_btf program attaches to the tracepoint named in its section (" +
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
      detail = "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing), or use a "
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

// JS thread.
Napi::Value BpfObject::Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) Throw(env, "detach", EINVAL, "handle must be a number");
  const int handle = info[0].As<Napi::Number>().Int32Value();
  const std::string op = "detach link set " + std::to_string(handle);
  auto it = link_sets_.find(handle);
  if (it == link_sets_.end()) Throw(env, op, ENOENT, "no such link set");
  DestroyLinkSet(it->second);
  link_sets_.erase(it);
  return env.Undefined();
}

// Destroys link sets on a libuv pool thread: closing a link waits for the
// kernel to retire it (tens of milliseconds for a uprobe_multi link, ~110 ms
// per perf-event uprobe), which must not stall the agent's event loop while
// processes come and go. The sets were already taken out of the object on
// the JS thread, so nothing else can reach them.
class DetachWorker : public Napi::AsyncWorker {
 public:
  DetachWorker(Napi::Env env, std::vector<BpfObject::LinkSet> sets)
      : Napi::AsyncWorker(env), sets_(std::move(sets)), deferred_(Napi::Promise::Deferred::New(env)) {}
  // Pool thread.
  void Execute() override {
    for (auto& set : sets_) BpfObject::DestroyLinkSet(set);
  }
  // JS thread.
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  Napi::Promise Promise() const { return deferred_.Promise(); }

 private:
  std::vector<BpfObject::LinkSet> sets_;
  Napi::Promise::Deferred deferred_;
};

// JS thread. detachAsync(handles): the link sets disappear from linkSets()
// at once; the promise resolves when the kernel has let go of them.
Napi::Value BpfObject::DetachAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) Throw(env, "detach", EINVAL, "handles must be an array of numbers");
  Napi::Array arr = info[0].As<Napi::Array>();
  // all handles are checked before any set is taken, so an error leaves
  // every link where it was
  std::vector<int> handles;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsNumber()) Throw(env, "detach", EINVAL, "handles must be an array of numbers");
    const int handle = v.As<Napi::Number>().Int32Value();
    if (link_sets_.find(handle) == link_sets_.end()) Throw(env, "detach link set " + std::to_string(handle), ENOENT, "no such link set");
    handles.push_back(handle);
  }
  std::vector<LinkSet> sets;
  for (int handle : handles) {
    auto it = link_sets_.find(handle);
    if (it == link_sets_.end()) continue;  // listed twice
    sets.push_back(std::move(it->second));
    link_sets_.erase(it);
  }
  auto* worker = new DetachWorker(env, std::move(sets));
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

// JS thread. run_time_ns only advances while BPF_STATS_RUN_TIME is enabled
// (enableStats()); run_cnt likewise.
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
  if (info.Length() < 2 || !info[1].IsFunction()) Throw(env, op, EINVAL, "onBatch must be a function");
  if (rings_.count(name) > 0) Throw(env, op, EBUSY, "a ring buffer is already running on map " + name);
  Napi::Object o = OptionalObject(info, 2, op, "options");
  RingBufferOptions ro;
  ro.interval_ms = static_cast<uint32_t>(IntOption(env, o, "intervalMs", ro.interval_ms, 1, 60000, op));
  ro.max_queued_batches = static_cast<uint32_t>(
      IntOption(env, o, "maxQueuedBatches", ro.max_queued_batches, 1, 1 << 20, op));
  ro.max_batch_bytes = static_cast<uint32_t>(
      IntOption(env, o, "maxBatchBytes", ro.max_batch_bytes, 64, 1 << 30, op));
  Napi::Value wakeup = o.Get("wakeup");
  if (!wakeup.IsUndefined()) {
    if (!wakeup.IsBoolean()) Throw(env, op, EINVAL, "wakeup must be a boolean");
    ro.wakeup = wakeup.As<Napi::Boolean>().Value();
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
