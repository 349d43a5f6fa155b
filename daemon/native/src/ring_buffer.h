// Ring buffer delivery: one poll thread per ring buffer drains records on a
// timer into batches and hands JS one Buffer per batch.
//
// Why a timer and ring_buffer__consume rather than epoll: probes submit with
// BPF_RB_NO_WAKEUP (a wakeup per event costs ~50% more per probe hit), so
// nothing ever makes the ring buffer fd readable.
//
// Lifetime: the state is shared by the owning BpfObject and the
// ThreadSafeFunction. The poll thread is joined from the TSFN finalizer,
// which runs on the JS thread only after the poll thread released the TSFN
// (or the environment is being torn down): joining from stop() instead
// could wait on a poll thread that is itself waiting for the JS thread.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace gotrail {

struct RingBufferOptions {
  uint32_t interval_ms = 5;
  uint32_t max_queued_batches = 64;
  uint32_t max_batch_bytes = 1 << 20;
};

struct RingBufferCounters {
  uint64_t batches = 0;
  uint64_t records = 0;
  uint64_t bytes = 0;
  uint64_t dropped_batches = 0;
  uint64_t dropped_records = 0;
};

Napi::Object CountersToJs(Napi::Env env, const RingBufferCounters& c);

class RingBufferOwner;

class RingBufferState {
 public:
  // JS thread. Creates the ring buffer, the TSFN and the poll thread; throws
  // a JS error on failure (nothing is left running then).
  static std::shared_ptr<RingBufferState> Start(Napi::Env env, int map_fd,
                                                const std::string& map_name,
                                                Napi::Function on_batch,
                                                const RingBufferOptions& opts,
                                                RingBufferOwner* owner);

  // JS thread. Asks the poll thread to drain once more and exit; returns at
  // once. Idempotent.
  void RequestStop();

  // JS thread. The deferred is resolved by the finalizer once the poll
  // thread has exited.
  void AddStopWaiter(napi_deferred deferred);

  // Any thread.
  RingBufferCounters Counters() const;

  // JS thread: the owner is going away (close() or GC) before the finalizer.
  void DetachOwner() { owner_ = nullptr; }

  ~RingBufferState();

 private:
  struct Batch {
    std::vector<uint8_t> data;
    uint64_t records;
    uint64_t payload_bytes;
  };
  static void CallJs(Napi::Env env, Napi::Function callback, RingBufferState* state, Batch* batch);
  static void Finalize(Napi::Env env, std::shared_ptr<RingBufferState>* holder,
                       RingBufferState* state);
  using Tsfn = Napi::TypedThreadSafeFunction<RingBufferState, Batch, CallJs>;

  static int OnSample(void* ctx, void* data, size_t size);
  void PollLoop();
  void Append(const void* data, size_t size);
  void Flush();

  RingBufferOptions opts_;
  ring_buffer* rb_ = nullptr;
  Tsfn tsfn_;
  std::thread thread_;
  RingBufferOwner* owner_ = nullptr;  // JS thread only
  std::vector<napi_deferred> waiters_;  // JS thread only

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_

  // Poll thread only.
  std::vector<uint8_t> batch_;
  uint64_t batch_records_ = 0;
  uint64_t batch_payload_ = 0;
  bool closing_ = false;

  std::atomic<uint64_t> batches_{0}, records_{0}, bytes_{0}, dropped_batches_{0},
      dropped_records_{0};
};

// Implemented by BpfObject: told on the JS thread when its ring buffer has
// fully stopped, so that it can start another one and keep final counters.
class RingBufferOwner {
 public:
  virtual void RingBufferStopped(RingBufferState* state, const RingBufferCounters& final) = 0;

 protected:
  ~RingBufferOwner() = default;
};

}  // namespace gotrail
