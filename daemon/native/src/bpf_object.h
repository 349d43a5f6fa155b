// BpfObject: one libbpf bpf_object plus the links attached from its
// programs and one consumer per ring-buffer map. Every method runs on the JS
// thread that created the object; only each ring buffer has a thread of its
// own (see ring_buffer.h).
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ring_buffer.h"

namespace gotrail {

class BpfObject : public Napi::ObjectWrap<BpfObject>, public RingBufferOwner {
 public:
  static Napi::Function Define(Napi::Env env);

  explicit BpfObject(const Napi::CallbackInfo& info);
  ~BpfObject() override;

  void RingBufferStopped(RingBufferState* state, const RingBufferCounters& final) override;

 private:
  enum class LinkKind { kUprobeMulti, kUprobe, kTracepoint, kSocket };
  struct LinkSet {
    std::string program;
    std::string target;
    LinkKind kind;
    size_t sites = 0;
    int multi_fd = -1;             // kUprobeMulti, kSocket (a BPF link fd)
    std::vector<bpf_link*> links;  // kUprobe, kTracepoint
  };

  void Open(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value ProgramNames(const Napi::CallbackInfo& info);
  Napi::Value MapNames(const Napi::CallbackInfo& info);
  Napi::Value MapInfo(const Napi::CallbackInfo& info);
  Napi::Value MapUpdate(const Napi::CallbackInfo& info);
  Napi::Value MapLookup(const Napi::CallbackInfo& info);
  Napi::Value MapDelete(const Napi::CallbackInfo& info);
  Napi::Value MapKeys(const Napi::CallbackInfo& info);
  Napi::Value MapCount(const Napi::CallbackInfo& info);
  Napi::Value AttachUprobes(const Napi::CallbackInfo& info);
  Napi::Value AttachTracepoint(const Napi::CallbackInfo& info);
  Napi::Value AttachSocket(const Napi::CallbackInfo& info);
  Napi::Value Detach(const Napi::CallbackInfo& info);
  Napi::Value DetachAsync(const Napi::CallbackInfo& info);
  Napi::Value LinkSets(const Napi::CallbackInfo& info);
  Napi::Value ProgramStats(const Napi::CallbackInfo& info);
  Napi::Value ProgramFd(const Napi::CallbackInfo& info);
  Napi::Value StartRingBuffer(const Napi::CallbackInfo& info);
  Napi::Value RingBufferStats(const Napi::CallbackInfo& info);
  Napi::Value StopRingBuffer(const Napi::CallbackInfo& info);
  Napi::Value PauseRingBuffer(const Napi::CallbackInfo& info);
  Napi::Value ConsumeRingBufferNow(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetUprobeMulti(const Napi::CallbackInfo& info);
  Napi::Value GetLoaded(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  void RequireOpen(Napi::Env env, const std::string& op) const;
  bpf_program* FindProgram(Napi::Env env, const std::string& op, const std::string& name) const;
  bpf_map* FindMap(Napi::Env env, const std::string& op, const std::string& name) const;
  int LoadedMapFd(Napi::Env env, const std::string& op, bpf_map* map) const;
  size_t ValueSize(bpf_map* map) const;
  int AddLinkSet(LinkSet set);
  static void DestroyLinkSet(LinkSet& set);
  friend class DetachWorker;
  void CloseAll();

  bpf_object* obj_ = nullptr;
  std::string path_;
  bool loaded_ = false;
  bool uprobe_multi_ = false;
  std::set<std::string> multi_programs_;  // from SEC("uprobe.multi")
  std::map<int, LinkSet> link_sets_;
  int next_handle_ = 1;
  // Running (or stopping) ring buffers by map name; final counters of the
  // stopped ones, which ringBufferStats() keeps reporting.
  std::map<std::string, std::shared_ptr<RingBufferState>> rings_;
  std::map<std::string, RingBufferCounters> stopped_rings_;
};

}  // namespace gotrail
