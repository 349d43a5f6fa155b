// Ring buffer delivery: one named poll thread per ring buffer drains records
// into batches and hands JS one Buffer per batch.
//
// Backpressure, not drops: the kernel ring buffer is the bounded buffer.
// The poll thread takes records out of it only while fewer than
// max_queued_batches batches wait for (or are being handled by) the JS
// thread; when JS is behind it stops consuming, records stay in the kernel,
// and the BPF side counts what no longer fits (a failed bpf_ringbuf_reserve).
// A record the poll thread took is always delivered; only environment
// teardown (process or worker exit) can discard one, and that is counted.
// Memory is bounded by (max_queued_batches + 2) * max_batch_bytes: the
// batches queued to JS, one full batch waiting for a credit and the batch
// being filled.
//
// Timer mode (default): probes submit with BPF_RB_NO_WAKEUP (a wakeup per
// event costs ~50% more per probe hit), so nothing ever makes the ring
// buffer readable and the poll thread drains it on a timer. Wakeup mode
// additionally sleeps in epoll/poll on the ring buffer's fd, which the
// kernel makes readable when a record is submitted with a wakeup; records
// submitted either way are seen (the timer still runs). The consumer is our
// own (Consume: the kernel's ring protocol, as libbpf's ring_buffer reads
// it) rather than libbpf's ring_buffer: that one maps the data area twice
// (double RSS for the same pages), sleeps in its own epoll set, which
// cannot be woken for stop, resume or a freed credit, and exposes neither
// position (libbpf 1.1).
//
// Idle sleep (wake control): a timer that drains an empty ring buffer
// every few milliseconds costs an idle agent ~1-2% of a core for nothing.
// With a wake-control map, a poll thread whose drain found the ring empty
// raises consumer_sleeping in that map, looks once more one tick later
// (closing the window in which a producer that read the flag just before
// it was raised submits without a wakeup) and then sleeps with no timeout,
// in epoll on the ring fd (edge-triggered: only real kernel wakeups wake
// it, never records merely waiting). The producers (gt_wake_flag) submit
// with BPF_RB_FORCE_WAKEUP while the flag is up, so the first record of a
// busy period wakes it; it lowers the flag and drains one interval later
// (the interval is a data-age deadline: the first record waits at most
// that long, and a busy period costs one JS hand-off per interval rather
// than one per record), then on its timer until the ring is empty again. Producers also force a
// wakeup when wake_bytes are waiting, which wakes a running poll thread before its next tick. A
// reserved record not yet committed keeps the timer running.
//
// One wakeup per crossing: a producer that forces a wakeup raises woken in
// the map and no producer forces another while it is up (otherwise every
// record past wake_bytes forced one until the next drain, also while the
// poll thread waited for JS). The poll thread lowers it when it leaves
// its idle sleep and after every drain that emptied the ring, before it
// decides to sleep: it never sleeps on records left without a wakeup, and
// a running poll thread takes those at its next tick.
//
// Control (stop, pause, credits) reaches the poll thread through an
// eventfd that it polls alongside, so it reacts at once whatever its
// interval.
//
// Lifetime: the state is shared by the owning BpfObject, the
// ThreadSafeFunction's finalizer and every batch queued to JS. The poll
// thread is joined from the TSFN finalizer, which runs on the JS thread
// only after the poll thread released the TSFN (or the environment is
// being torn down, when it first tells the poll thread to give up waiting
// for credits): joining from stop() instead could wait on a poll thread
// that is itself waiting for the JS thread.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace gotrail {

// An allocator whose value-less construct leaves the element uninitialised:
// a vector of it grows by resize() without zero-filling what the caller
// writes at once (each record's bytes are copied in right after).
template <typename T, typename A = std::allocator<T>>
class DefaultInitAllocator : public A {
  using Traits = std::allocator_traits<A>;

 public:
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U, typename Traits::template rebind_alloc<U>>;
  };
  using A::A;
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible<U>::value) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    Traits::construct(static_cast<A&>(*this), p, std::forward<Args>(args)...);
  }
};

// The bytes of one batch handed to JS.
using BatchBytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

// Batch reuse (reuse_batches): a batch's bytes live in a slot of
// max_batch_bytes that JS first receives as an external Buffer of that
// size (owning the slot: its finalizer frees it) and afterwards as a view
// of its first bytes. The state keeps a strong reference to each slot's
// Buffer, and a slot goes back to the free list only once onBatch returned:
// a slot is never written while onBatch runs on it. Why: every new external
// buffer is external memory to V8, and at 10k events/s (~10 MB/s of
// batches) that churn alone started a full mark-compact every few seconds
// in an agent whose heap was 13 MB. The price is the contract that onBatch
// keeps no part of the batch past its return (it copies what it keeps), and
// up to max_queued_batches + 2 slots stay allocated while the ring runs
// (with a wake-control map, their pages are handed back while it sleeps).
struct BatchSlot {
  BatchBytes bytes;        // capacity max_batch_bytes, never reallocated
  napi_ref ref = nullptr;  // JS thread: the slot's Buffer, once made
};

struct RingBufferOptions {
  uint32_t interval_ms = 5;  // 0: no timer (wakeup mode only)
  uint32_t max_queued_batches = 64;
  uint32_t max_batch_bytes = 1 << 20;
  bool wakeup = false;
  // Batch reuse (see BatchSlot): JS gets views of a few long-lived buffers
  // instead of a new external buffer per batch.
  bool reuse_batches = false;
  // Idle sleep: an mmapable BPF array map whose first value is
  // {u32 consumer_sleeping, wake_bytes, woken, reserved; u64 forced_wakeups}
  // (struct gt_rb_control), -1 for
  // none. Not owned.
  int wake_control_fd = -1;
  uint32_t wake_bytes = 0;
};

struct RingBufferCounters {
  uint64_t batches = 0;
  uint64_t records = 0;
  uint64_t bytes = 0;
  uint64_t dropped_batches = 0;
  uint64_t dropped_records = 0;
  uint64_t stalls = 0;
  uint64_t wakeups = 0;         // returns of the poll thread from its sleep
  uint64_t forced_wakeups = 0;  // wake control: wakeups the producers forced
  uint32_t queued_batches = 0;  // a gauge: summing adds the live ones

  RingBufferCounters& operator+=(const RingBufferCounters& o);
};

Napi::Object CountersToJs(Napi::Env env, const RingBufferCounters& c);

// Several stopRingBuffer() calls may wait on one ring buffer, and one
// stopRingBuffer() (all maps) on several: the promise settles when the last
// of its ring buffers has stopped. JS thread only.
struct StopWaiter {
  napi_deferred deferred;
  size_t remaining;
};

class RingBufferOwner;

class RingBufferState : public std::enable_shared_from_this<RingBufferState> {
 public:
  // JS thread. Creates the ring buffer, the TSFN and the poll thread; throws
  // a JS error on failure (nothing is left running then). ring_bytes is the
  // map's max_entries, which bounds the drain on stop.
  static std::shared_ptr<RingBufferState> Start(Napi::Env env, int map_fd, uint32_t ring_bytes,
                                                const std::string& map_name,
                                                Napi::Function on_batch,
                                                const RingBufferOptions& opts,
                                                RingBufferOwner* owner);

  // JS thread. Asks the poll thread to drain what the ring buffer holds
  // (paused or not), hand it over and exit; returns at once. Idempotent.
  void RequestStop();

  // JS thread. While paused the poll thread takes nothing out of the ring
  // buffer (effective from the next record); batches already taken are
  // still delivered.
  void SetPaused(bool paused);
  // JS thread. Wakes the poll thread to take what the ring holds and hand
  // it over now, whatever its interval (a flush).
  void ConsumeNow();
  bool Paused() const { return paused_.load(); }

  // JS thread. Settled by the finalizer once the poll thread has exited.
  void AddStopWaiter(std::shared_ptr<StopWaiter> waiter);

  // Any thread.
  RingBufferCounters Counters() const;
  const std::string& MapName() const { return map_name_; }

  // JS thread: the owner is going away (GC or teardown) before the finalizer.
  void DetachOwner() { owner_ = nullptr; }

  ~RingBufferState();

 private:
  struct Batch {
    BatchBytes own;
    // Reuse mode: the slot holding the bytes. A new slot is the batch's
    // until JS makes its Buffer; a slot whose Buffer exists (js_owned) is
    // that Buffer's, and the batch never frees it.
    BatchSlot* slot = nullptr;
    bool js_owned = false;
    BatchBytes& data() { return slot != nullptr ? slot->bytes : own; }
    ~Batch() {
      if (slot != nullptr && !js_owned) delete slot;
    }
    uint64_t records = 0;
    uint64_t payload_bytes = 0;
    // Set when queued to JS: keeps the counters alive for CallJs, which
    // Node may run (with a null env) after the finalizer at teardown.
    std::shared_ptr<RingBufferState> state;
  };
  // Why Consume stopped before the ring was empty.
  enum class Cut { kNone, kCredit, kPaused, kBudget, kAbandon };

  static void CallJs(Napi::Env env, Napi::Function callback, RingBufferState* context,
                     Batch* batch);
  static void Finalize(Napi::Env env, std::shared_ptr<RingBufferState>* holder,
                       RingBufferState* state);
  using Tsfn = Napi::TypedThreadSafeFunction<RingBufferState, Batch, CallJs>;

  RingBufferState() = default;
  void PollLoop();
  void Consume();
  int Append(const void* data, size_t size);
  void TrySendFull();
  bool Wait(bool want_ring, int timeout_ms);
  bool RingPending() const;
  bool WakeBytesPending() const;
  void SetSleeping(bool sleeping);
  void LowerWoken();
  uint64_t ForcedWakeups() const;
  void Signal();
  void DropHeld();
  void TakeSlot(Batch* batch);
  void LeaveSlot(Batch* batch);
  void TrimFreeSlots();
  napi_value SlotView(napi_env env, Batch* batch);

  RingBufferOptions opts_;
  bool batch_stats_ = true;  // onBatch declares its stats parameter
  std::string map_name_;
  uint32_t ring_bytes_ = 0;
  int ring_fd_ = -1;   // our own dup of the map fd: close() closes the object's
  int event_fd_ = -1;  // wakes the poll thread: stop, pause, credits
  int epoll_fd_ = -1;  // event_fd_ and ring_fd_ (edge-triggered)
  // wake control (see above): the map's value
  volatile uint32_t* control_ = nullptr;
  size_t control_len_ = 0;
  uint64_t forced_base_ = 0;  // forced_wakeups when we started (the map outlives us)
  // The ring: its consumer page (read-write), and its producer page with
  // the data area behind it, mapped once (read-only, ring_map_len_ bytes)
  // rather than twice back to back as libbpf maps it: the kernel inserts
  // every page at mmap, so each mapping of the data counts in full in RSS.
  volatile uint64_t* consumer_pos_ = nullptr;
  const volatile uint64_t* producer_pos_ = nullptr;
  const uint8_t* data_ = nullptr;
  size_t ring_map_len_ = 0;
  size_t page_size_ = 0;
  std::vector<uint8_t> wrapped_;  // a sample that wraps, made contiguous
  Tsfn tsfn_;
  std::thread thread_;
  RingBufferOwner* owner_ = nullptr;                  // JS thread only
  std::vector<std::shared_ptr<StopWaiter>> waiters_;  // JS thread only
  // Reuse mode: slots whose Buffer JS holds (JS thread only), and those
  // free for the poll thread (under slots_mu_).
  std::vector<BatchSlot*> made_slots_;
  std::mutex slots_mu_;
  std::vector<BatchSlot*> free_slots_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  std::atomic<bool> abandon_{false};  // teardown: stop waiting for JS
  // Batches queued to JS and not yet returned from the callback. The poll
  // thread raises it, the JS thread lowers it.
  std::atomic<uint32_t> in_flight_{0};
  // The poll thread holds a full batch and sleeps until a credit frees up.
  std::atomic<bool> waiting_credit_{false};

  // Poll thread only.
  std::unique_ptr<Batch> cur_;   // being filled
  std::unique_ptr<Batch> full_;  // sealed, waiting for a credit
  bool draining_ = false;
  int64_t drain_budget_ = 0;
  Cut cut_ = Cut::kNone;
  uint64_t taken_ = 0;       // records taken out of the ring
  uint32_t idle_ticks_ = 0;  // consecutive drains that found the ring empty
  bool sleeping_ = false;    // consumer_sleeping as last written

  std::atomic<uint64_t> batches_{0}, records_{0}, bytes_{0}, dropped_batches_{0},
      dropped_records_{0}, stalls_{0}, wakeups_{0};
};

// Implemented by BpfObject: told on the JS thread when one of its ring
// buffers has fully stopped, so that it can start another one on that map
// and keep the final counters.
class RingBufferOwner {
 public:
  virtual void RingBufferStopped(RingBufferState* state, const RingBufferCounters& final) = 0;

 protected:
  ~RingBufferOwner() = default;
};

}  // namespace gotrail
