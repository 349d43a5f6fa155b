// BpfObject's maps: names, sizes, and element access from the JS thread.
#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>

#include <cstring>
#include <utility>

#include "bpf_object.h"
#include "bpf_object_args.h"
#include "errors.h"

namespace gotrail {

namespace {

bool IsPerCpuMap(enum bpf_map_type t) {
  return t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_ARRAY ||
         t == BPF_MAP_TYPE_LRU_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

}  // namespace

// Per-CPU maps exchange one value slot per possible CPU, each rounded up to
// 8 bytes, in both directions.
size_t BpfObject::ValueSize(bpf_map* map) const {
  size_t v = bpf_map__value_size(map);
  if (!IsPerCpuMap(bpf_map__type(map))) return v;
  int cpus = libbpf_num_possible_cpus();
  return ((v + 7) & ~static_cast<size_t>(7)) * static_cast<size_t>(cpus > 0 ? cpus : 1);
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
  // the kernel's id, once loaded: another process of gotrail's (the
  // calibration helper) opens the map by it (BPF_MAP_GET_FD_BY_ID)
  const int fd = bpf_map__fd(map);
  if (fd >= 0) {
    bpf_map_info mi = {};
    __u32 len = sizeof(mi);
    if (bpf_obj_get_info_by_fd(fd, &mi, &len) == 0) o.Set("id", Napi::Number::New(env, mi.id));
  }
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

}  // namespace gotrail
