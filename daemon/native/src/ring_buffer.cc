#include "ring_buffer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

#include "errors.h"

namespace gotrail {

namespace {

// The first reservation of a batch of a ring that wakes per record (which
// mostly carries one): small, grown as records come.
constexpr size_t kInitialBatchReserve = 64 * 1024;

// The kernel's per-record header (length and flags) in front of each
// record, as counted against the ring's size.
constexpr size_t kRingbufHeader = 8;

inline size_t Align8(size_t n) { return (n + 7) & ~static_cast<size_t>(7); }

// Poll threads are numbered per process so that `top -H` tells them apart;
// the name must fit the kernel's 15 characters.
std::atomic<unsigned> next_thread_no{0};

}  // namespace

RingBufferCounters& RingBufferCounters::operator+=(const RingBufferCounters& o) {
  batches += o.batches;
  records += o.records;
  bytes += o.bytes;
  dropped_batches += o.dropped_batches;
  dropped_records += o.dropped_records;
  stalls += o.stalls;
  wakeups += o.wakeups;
  forced_wakeups += o.forced_wakeups;
  queued_batches += o.queued_batches;
  return *this;
}

// JS thread. Plain Node-API with status checks rather than node-addon-api,
// whose error path aborts the process when the environment can no longer
// run JS (a worker thread calling process.exit() inside onBatch): nullptr
// then.
static napi_value CountersToJsOrNull(napi_env env, const RingBufferCounters& c) {
  napi_value o;
  if (napi_create_object(env, &o) != napi_ok) return nullptr;
  const std::pair<const char*, uint64_t> big[] = {
      {"batches", c.batches},
      {"records", c.records},
      {"bytes", c.bytes},
      {"droppedBatches", c.dropped_batches},
      {"droppedRecords", c.dropped_records},
      {"stalls", c.stalls},
      {"wakeups", c.wakeups},
      {"forcedWakeups", c.forced_wakeups},
  };
  napi_value v;
  for (const auto& [key, value] : big) {
    if (napi_create_bigint_uint64(env, value, &v) != napi_ok ||
        napi_set_named_property(env, o, key, v) != napi_ok) {
      return nullptr;
    }
  }
  if (napi_create_uint32(env, c.queued_batches, &v) != napi_ok ||
      napi_set_named_property(env, o, "queuedBatches", v) != napi_ok) {
    return nullptr;
  }
  return o;
}

// JS thread.
Napi::Object CountersToJs(Napi::Env env, const RingBufferCounters& c) {
  napi_value o = CountersToJsOrNull(env, c);
  if (o == nullptr) NAPI_THROW(Napi::Error::New(env), Napi::Object());
  return Napi::Object(env, o);
}

// JS thread.
std::shared_ptr<RingBufferState> RingBufferState::Start(
    Napi::Env env, int map_fd, uint32_t ring_bytes, const std::string& map_name,
    Napi::Function on_batch, const RingBufferOptions& opts, RingBufferOwner* owner) {
  const std::string op = "start ring buffer " + map_name;
  std::shared_ptr<RingBufferState> state(new RingBufferState());
  state->opts_ = opts;
  state->map_name_ = map_name;
  state->ring_bytes_ = ring_bytes;
  // On failure below, the state's destructor closes what was opened.
  state->event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (state->event_fd_ < 0) Throw(env, op + ": create eventfd", errno);
  // close() closes the object's map fd while the poll thread may still be
  // draining; the mmap keeps the ring alive, this dup keeps it pollable.
  state->ring_fd_ = fcntl(map_fd, F_DUPFD_CLOEXEC, 0);
  if (state->ring_fd_ < 0) Throw(env, op + ": dup map fd", errno);
  if (opts.wakeup || opts.wake_control_fd >= 0) {
    state->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (state->epoll_fd_ < 0) Throw(env, op + ": create epoll", errno);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = state->event_fd_;
    if (epoll_ctl(state->epoll_fd_, EPOLL_CTL_ADD, state->event_fd_, &ev) < 0)
      Throw(env, op + ": epoll add eventfd", errno);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = state->ring_fd_;
    if (epoll_ctl(state->epoll_fd_, EPOLL_CTL_ADD, state->ring_fd_, &ev) < 0)
      Throw(env, op + ": epoll add ring", errno);
  }
  // The ring, its data mapped once (see consumer_pos_ in ring_buffer.h).
  state->page_size_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (ring_bytes == 0 || (ring_bytes & (ring_bytes - 1)) != 0 ||
      ring_bytes % state->page_size_ != 0)
    Throw(env,
          op + ": ring size " + std::to_string(ring_bytes) +
              " is not a power-of-2 multiple of the page size",
          EINVAL);
  void* cons =
      mmap(nullptr, state->page_size_, PROT_READ | PROT_WRITE, MAP_SHARED, state->ring_fd_, 0);
  if (cons == MAP_FAILED) Throw(env, op + ": mmap consumer position", errno);
  state->consumer_pos_ = static_cast<volatile uint64_t*>(cons);
  state->ring_map_len_ = state->page_size_ + ring_bytes;
  void* prod = mmap(nullptr, state->ring_map_len_, PROT_READ, MAP_SHARED, state->ring_fd_,
                    static_cast<off_t>(state->page_size_));
  if (prod == MAP_FAILED) Throw(env, op + ": mmap producer position and data", errno);
  state->producer_pos_ = static_cast<const volatile uint64_t*>(prod);
  state->data_ = static_cast<const uint8_t*>(prod) + state->page_size_;
  if (opts.wake_control_fd >= 0) {
    state->control_len_ = state->page_size_;
    void* c = mmap(nullptr, state->control_len_, PROT_READ | PROT_WRITE, MAP_SHARED,
                   opts.wake_control_fd, 0);
    if (c == MAP_FAILED) Throw(env, op + ": mmap wake control map", errno);
    state->control_ = static_cast<volatile uint32_t*>(c);
    __atomic_store_n(&state->control_[0], 0u, __ATOMIC_SEQ_CST);
    __atomic_store_n(&state->control_[1], opts.wake_bytes, __ATOMIC_SEQ_CST);
    __atomic_store_n(&state->control_[2], 0u, __ATOMIC_SEQ_CST);
    state->forced_base_ = state->ForcedWakeups();
  }

  // Building the counters object costs the JS thread several BigInts per
  // batch: only for a callback that declares the parameter.
  {
    napi_value len;
    uint32_t n = 2;
    if (napi_get_named_property(env, on_batch, "length", &len) == napi_ok &&
        napi_get_value_uint32(env, len, &n) == napi_ok) {
      state->batch_stats_ = n >= 2;
    }
  }
  // The finalizer owns one reference so that the state outlives the
  // BpfObject when JS drops the object while batches are still queued.
  auto* holder = new std::shared_ptr<RingBufferState>(state);
  try {
    state->tsfn_ = Tsfn::New(env, on_batch, "gotrail-ringbuf", opts.max_queued_batches, 1,
                             state.get(), &RingBufferState::Finalize, holder);
  } catch (...) {
    delete holder;
    throw;
  }
  try {
    state->thread_ = std::thread(&RingBufferState::PollLoop, state.get());
  } catch (const std::system_error& e) {
    // The finalizer will still run (and free everything) once released.
    state->tsfn_.Release();
    Throw(env, op + ": create poll thread", e.code().value());
  }
  // Named from here rather than by the thread itself, so that it carries
  // its name by the time startRingBuffer() returns.
  char name[16];
  std::snprintf(name, sizeof name, "gotrail-rb-%u", next_thread_no.fetch_add(1) % 10000);
  pthread_setname_np(state->thread_.native_handle(), name);
  state->owner_ = owner;
  return state;
}

RingBufferState::~RingBufferState() {
  // Only reached after the poll thread was joined (or never started).
  if (control_ != nullptr) {
    // no consumer left to wake
    __atomic_store_n(&control_[0], 0u, __ATOMIC_SEQ_CST);
    munmap(const_cast<uint32_t*>(control_), control_len_);
  }
  if (consumer_pos_ != nullptr) munmap(const_cast<uint64_t*>(consumer_pos_), page_size_);
  if (producer_pos_ != nullptr) munmap(const_cast<uint64_t*>(producer_pos_), ring_map_len_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (ring_fd_ >= 0) close(ring_fd_);
  if (event_fd_ >= 0) close(event_fd_);
}

// Poll thread. Records reserved or committed and not yet consumed.
bool RingBufferState::RingPending() const {
  return __atomic_load_n(producer_pos_, __ATOMIC_ACQUIRE) !=
         __atomic_load_n(consumer_pos_, __ATOMIC_ACQUIRE);
}

// Poll thread. Raising the flag is a full barrier, so that the drain that
// follows sees every record reserved before a producer could read it down.
void RingBufferState::SetSleeping(bool sleeping) {
  if (control_ == nullptr || sleeping_ == sleeping) return;
  sleeping_ = sleeping;
  __atomic_store_n(&control_[0], sleeping ? 1u : 0u, __ATOMIC_SEQ_CST);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

// Any thread. The producers' count of forced wakeups (it outlives us).
uint64_t RingBufferState::ForcedWakeups() const {
  return __atomic_load_n(reinterpret_cast<const volatile uint64_t*>(control_ + 4),
                         __ATOMIC_RELAXED);
}

// Poll thread. Lets producers force a wakeup again (see ring_buffer.h);
// ordered before the flag and the looks at the ring that follow.
void RingBufferState::LowerWoken() {
  if (control_ == nullptr) return;
  if (__atomic_load_n(&control_[2], __ATOMIC_RELAXED) != 0)
    __atomic_store_n(&control_[2], 0u, __ATOMIC_SEQ_CST);
}

// Any thread. An eventfd counts, so a signal sent before the poll thread
// sleeps is not lost.
void RingBufferState::Signal() {
  const uint64_t one = 1;
  ssize_t n = write(event_fd_, &one, sizeof one);
  (void)n;  // EAGAIN only when the counter is saturated: already signalled
}

// JS thread.
void RingBufferState::RequestStop() {
  stop_.store(true);
  Signal();
}

// JS thread.
void RingBufferState::SetPaused(bool paused) {
  if (paused_.exchange(paused) != paused) Signal();
}

// JS thread. Any wait of the poll thread ends at a signal and the loop
// consumes next (unless paused, or waiting for a credit).
void RingBufferState::ConsumeNow() { Signal(); }

// JS thread.
void RingBufferState::AddStopWaiter(std::shared_ptr<StopWaiter> waiter) {
  waiters_.push_back(std::move(waiter));
}

// Any thread: the counters are independent atomics, so a snapshot may mix
// two batches' worth; good enough for metrics.
RingBufferCounters RingBufferState::Counters() const {
  RingBufferCounters c;
  c.batches = batches_.load(std::memory_order_relaxed);
  c.records = records_.load(std::memory_order_relaxed);
  c.bytes = bytes_.load(std::memory_order_relaxed);
  c.dropped_batches = dropped_batches_.load(std::memory_order_relaxed);
  c.dropped_records = dropped_records_.load(std::memory_order_relaxed);
  c.stalls = stalls_.load(std::memory_order_relaxed);
  c.wakeups = wakeups_.load(std::memory_order_relaxed);
  if (control_ != nullptr) c.forced_wakeups = ForcedWakeups() - forced_base_;
  c.queued_batches = in_flight_.load(std::memory_order_relaxed);
  return c;
}

// Poll thread.
void RingBufferState::PollLoop() {
  using Clock = std::chrono::steady_clock;
  const auto interval = std::chrono::milliseconds(opts_.interval_ms);
  auto next_tick = Clock::now() + interval;
  bool drained = false;  // the stop drain emptied the ring or used its budget
  bool stalled = false;  // counted once per wait for a credit
  Wait(opts_.wakeup, static_cast<int>(opts_.interval_ms));
  for (;;) {
    if (abandon_.load()) break;
    if (!draining_ && stop_.load()) {
      // Stopping drains what the probes already submitted, so that stopping
      // after the traced work finished loses nothing; bounded by the ring's
      // size so that producers still running cannot keep stop waiting.
      draining_ = true;
      drain_budget_ = ring_bytes_;
    }
    TrySendFull();
    bool found_empty = false;
    if (!full_ && (draining_ ? !drained : !paused_.load())) {
      cut_ = Cut::kNone;
      const uint64_t before = taken_;
      Consume();
      if (draining_ && (cut_ == Cut::kNone || cut_ == Cut::kBudget)) drained = true;
      found_empty = taken_ == before && cut_ == Cut::kNone && !draining_;
      // the ring was emptied: the next crossing of wake_bytes may wake us
      if (cut_ == Cut::kNone) LowerWoken();
    }
    if (control_ != nullptr) {
      // Sleep only after two empty drains a tick apart, the first with the
      // flag already up (see ring_buffer.h); anything else runs the timer.
      if (found_empty && !RingPending()) {
        if (++idle_ticks_ == 1) {
          SetSleeping(true);
          // records reserved before the flag went up are visible now
          const uint64_t before = taken_;
          cut_ = Cut::kNone;
          Consume();
          if (taken_ != before || cut_ != Cut::kNone || RingPending()) idle_ticks_ = 0;
        }
      } else {
        idle_ticks_ = 0;
      }
      if (idle_ticks_ == 0) SetSleeping(false);
    }
    // Hand over what was taken without waiting for the batch to fill.
    if (!full_ && cur_ != nullptr && !cur_->data().empty()) {
      full_ = std::move(cur_);
      TrySendFull();
    }
    if (abandon_.load()) break;
    if (draining_ && drained && full_ == nullptr && cur_ == nullptr) break;

    if (full_ != nullptr) {
      // JS has max_queued_batches batches: sleep until it returns one. The
      // flag is raised before the last look at the credits, and CallJs
      // lowers the credits before it looks at the flag, so one of the two
      // sees the other.
      waiting_credit_.store(true);
      TrySendFull();
      if (full_ == nullptr) {
        waiting_credit_.store(false);
        continue;
      }
      if (!stalled) stalls_.fetch_add(1, std::memory_order_relaxed);
      stalled = true;
    } else {
      stalled = false;
    }
    const auto now = Clock::now();
    if (now >= next_tick) next_tick = now + interval;
    const bool want_ring = epoll_fd_ >= 0 && full_ == nullptr && !draining_ && !paused_.load();
    // Stop, pause and credits signal the eventfd: only draining needs a timer.
    const bool no_timer = opts_.interval_ms == 0 || (want_ring && idle_ticks_ >= 2);
    if (no_timer && want_ring && control_ != nullptr) TrimFreeSlots();
    const auto left =
        no_timer
            ? -1
            : std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now).count() + 1;
    const bool signalled = Wait(want_ring, static_cast<int>(left));
    if (no_timer && control_ != nullptr && !signalled) {
      // Woken from the idle sleep by the first record of a busy period:
      // its age, not its arrival, decides the drain. Lowering the flag
      // stops the forced wakeups; the batch then fills for one interval
      // (the data-age deadline) unless wake_bytes are waiting first or a
      // control signal arrives, so a busy period costs one hand-off per
      // interval rather than one per record.
      SetSleeping(false);
      LowerWoken();
      idle_ticks_ = 0;
      const auto deadline = Clock::now() + interval;
      while (!stop_.load() && !paused_.load() && !abandon_.load() && !WakeBytesPending()) {
        const auto t = Clock::now();
        if (t >= deadline) break;
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - t).count() + 1;
        if (Wait(true, static_cast<int>(ms))) break;
      }
    }
    if (no_timer) next_tick = Clock::now() + interval;
    waiting_credit_.store(false);
  }
  if (abandon_.load()) {
    // Environment teardown: JS will never take these.
    for (Batch* b : {cur_.get(), full_.get()}) {
      if (b == nullptr || b->records == 0) continue;
      dropped_batches_.fetch_add(1, std::memory_order_relaxed);
      dropped_records_.fetch_add(b->records, std::memory_order_relaxed);
    }
    cur_.reset();
    full_.reset();
  }
  // Last touch of the TSFN: after this the finalizer may run and join us.
  // (After a napi_closing answer Node already dropped our reference and
  // this returns napi_invalid_arg; the TSFN itself lives until the
  // finalizer, which first joins this thread.)
  tsfn_.Release();
}

// Poll thread. At least wake_bytes wait in the ring (never with 0).
bool RingBufferState::WakeBytesPending() const {
  if (opts_.wake_bytes == 0 || producer_pos_ == nullptr) return false;
  return __atomic_load_n(producer_pos_, __ATOMIC_ACQUIRE) -
             __atomic_load_n(consumer_pos_, __ATOMIC_ACQUIRE) >=
         opts_.wake_bytes;
}

// Poll thread. Sleeps until the timeout, a control signal, or (want_ring)
// a record submitted with a wakeup. Returns whether a control signal
// (stop, pause, credit) woke it.
bool RingBufferState::Wait(bool want_ring, int timeout_ms) {
  bool signalled = false;
  if (want_ring) {
    epoll_event evs[2];
    const int n = epoll_wait(epoll_fd_, evs, 2, timeout_ms);
    for (int i = 0; i < n; i++) signalled |= evs[i].data.fd == event_fd_;
  } else {
    pollfd fds[1] = {{event_fd_, POLLIN, 0}};
    const int n = poll(fds, 1, timeout_ms);
    signalled = n > 0 && (fds[0].revents & POLLIN) != 0;
  }
  wakeups_.fetch_add(1, std::memory_order_relaxed);
  if (signalled) {
    uint64_t v;
    ssize_t r = read(event_fd_, &v, sizeof v);
    (void)r;
  }
  return signalled;
}

// Poll thread: queues the sealed batch to JS if a credit is free.
void RingBufferState::TrySendFull() {
  if (full_ == nullptr) return;
  // Only this thread raises in_flight_, so the check cannot go stale upwards.
  if (in_flight_.load() >= opts_.max_queued_batches) return;
  in_flight_.fetch_add(1);
  full_->state = shared_from_this();
  const napi_status status = tsfn_.NonBlockingCall(full_.get());
  if (status == napi_ok) {
    full_.release();
    return;
  }
  full_->state.reset();
  in_flight_.fetch_sub(1);
  // napi_queue_full cannot happen while credits match the queue's size;
  // were it to, the batch is kept and retried like any other stall.
  if (status == napi_closing) abandon_.store(true);
}

// Poll thread. Takes committed records in order until the ring is empty,
// a record not yet committed (busy) comes next, or Append answers negative,
// as libbpf's ring_buffer__consume does. Each record's header is 8-byte
// aligned and never wraps; its sample may wrap past the end of the data
// area, which libbpf reads through the kernel's second mapping of the data
// (mmap of 2x the ring's size). We map the data once (half the RSS) and
// copy a wrapped sample out in two pieces instead.
void RingBufferState::Consume() {
  const uint64_t mask = ring_bytes_ - 1;
  uint64_t cons = __atomic_load_n(consumer_pos_, __ATOMIC_ACQUIRE);
  bool got_new_data;
  do {
    got_new_data = false;
    const uint64_t prod = __atomic_load_n(producer_pos_, __ATOMIC_ACQUIRE);
    while (cons < prod) {
      const auto* hdr = reinterpret_cast<const uint32_t*>(data_ + (cons & mask));
      const uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
      if (len & BPF_RINGBUF_BUSY_BIT) return;
      got_new_data = true;
      const uint32_t size = len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
      const size_t at = static_cast<size_t>((cons + kRingbufHeader) & mask);
      cons += Align8(kRingbufHeader + size);
      int r = 0;
      if ((len & BPF_RINGBUF_DISCARD_BIT) == 0) {
        if (at + size <= ring_bytes_) {
          r = Append(data_ + at, size);
        } else {
          const size_t first = ring_bytes_ - at;
          wrapped_.resize(size);
          std::memcpy(wrapped_.data(), data_ + at, first);
          std::memcpy(wrapped_.data() + first, data_, size - first);
          r = Append(wrapped_.data(), size);
        }
      }
      // The record is consumed whatever Append answered (it kept it).
      __atomic_store_n(consumer_pos_, cons, __ATOMIC_RELEASE);
      if (r < 0) return;
    }
  } while (got_new_data);
}

// Poll thread. The record is consumed whatever this answers (Consume
// advances the consumer position past it), so it is always kept; a
// negative answer only stops Consume before the next.
int RingBufferState::Append(const void* data, size_t size) {
  const size_t need = Align8(4 + size);
  if (cur_ != nullptr && !cur_->data().empty() &&
      cur_->data().size() + need > opts_.max_batch_bytes && full_ == nullptr) {
    // Consumption stops as soon as a sealed batch waits for a credit, so
    // there is never a second one to seal; were there, the batch would
    // rather grow past max_batch_bytes than lose the record.
    full_ = std::move(cur_);
    TrySendFull();
  }
  if (cur_ == nullptr) {
    cur_.reset(new Batch());
    if (opts_.reuse_batches) {
      TakeSlot(cur_.get());
    } else {
      // A timer-driven ring's batches fill up to max_batch_bytes under load:
      // reserved at once, the vector is never reallocated (growing from 64
      // KiB copied another 192 KiB per 256 KiB batch). Pages not written
      // are not touched. A ring that wakes per record mostly carries one.
      cur_->own.reserve(opts_.wakeup ? std::min<size_t>(kInitialBatchReserve, opts_.max_batch_bytes)
                                     : opts_.max_batch_bytes);
    }
  }
  // A slot's bytes never move (JS has a Buffer over them): a batch that
  // outgrows its slot (a record larger than max_batch_bytes) takes bytes of
  // its own, as without reuse.
  if (cur_->slot != nullptr && cur_->slot->bytes.size() + need > cur_->slot->bytes.capacity()) {
    cur_->own.reserve(cur_->slot->bytes.size() + need);
    cur_->own.assign(cur_->slot->bytes.begin(), cur_->slot->bytes.end());
    LeaveSlot(cur_.get());
  }
  BatchBytes& buf = cur_->data();
  const size_t at = buf.size();
  // not zero-filled: every byte is written below
  buf.resize(at + need);
  uint8_t* p = buf.data() + at;
  const uint32_t len = static_cast<uint32_t>(size);
  // Little-endian by contract, independent of the host.
  p[0] = len & 0xff;
  p[1] = (len >> 8) & 0xff;
  p[2] = (len >> 16) & 0xff;
  p[3] = (len >> 24) & 0xff;
  std::memcpy(p + 4, data, size);
  std::memset(p + 4 + size, 0, need - 4 - size);
  cur_->records++;
  cur_->payload_bytes += size;
  taken_++;

  if (abandon_.load(std::memory_order_relaxed)) {
    cut_ = Cut::kAbandon;
    return -EAGAIN;
  }
  if (full_ != nullptr) {
    cut_ = Cut::kCredit;
    return -EAGAIN;
  }
  if (draining_) {
    drain_budget_ -= static_cast<int64_t>(Align8(kRingbufHeader + size));
    if (drain_budget_ <= 0) {
      cut_ = Cut::kBudget;
      return -EAGAIN;
    }
  } else if (paused_.load(std::memory_order_relaxed)) {
    cut_ = Cut::kPaused;
    return -EAGAIN;
  }
  return 0;
}

// Poll thread. Gives the new batch a free slot, or a new one.
void RingBufferState::TakeSlot(Batch* batch) {
  {
    std::lock_guard<std::mutex> lock(slots_mu_);
    if (!free_slots_.empty()) {
      batch->slot = free_slots_.back();
      batch->js_owned = true;
      free_slots_.pop_back();
      batch->slot->bytes.clear();
      return;
    }
  }
  batch->slot = new BatchSlot();
  batch->slot->bytes.reserve(opts_.max_batch_bytes);
}

// Poll thread, going to its idle sleep: the free slots' pages go back to
// the kernel (the mappings stay; a page written again is a new zero page),
// so that an idle agent does not keep its last burst's batches resident.
void RingBufferState::TrimFreeSlots() {
  std::lock_guard<std::mutex> lock(slots_mu_);
  for (BatchSlot* slot : free_slots_) {
    const auto begin = reinterpret_cast<uintptr_t>(slot->bytes.data());
    const uintptr_t first = (begin + page_size_ - 1) & ~(page_size_ - 1);
    const uintptr_t last = (begin + slot->bytes.capacity()) & ~(page_size_ - 1);
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }
}

// Poll thread or JS thread: the batch no longer needs its slot, which is
// free again if JS holds its Buffer and freed otherwise.
void RingBufferState::LeaveSlot(Batch* batch) {
  BatchSlot* slot = batch->slot;
  if (slot == nullptr) return;
  batch->slot = nullptr;
  if (!batch->js_owned) {
    delete slot;
    return;
  }
  batch->js_owned = false;
  std::lock_guard<std::mutex> lock(slots_mu_);
  free_slots_.push_back(slot);
}

// JS thread. The first `size` bytes of Buffer `whole`, as a Buffer
// (whole.subarray: Node-API makes no Buffer over part of an ArrayBuffer).
// A view is a small object of V8's heap, not new external memory.
static napi_value BufferView(napi_env env, napi_value whole, size_t size) {
  napi_value fn;
  napi_value args[2];
  napi_value view;
  if (napi_get_named_property(env, whole, "subarray", &fn) != napi_ok ||
      napi_create_uint32(env, 0, &args[0]) != napi_ok ||
      napi_create_double(env, static_cast<double>(size), &args[1]) != napi_ok ||
      napi_call_function(env, whole, fn, 2, args, &view) != napi_ok)
    return nullptr;
  return view;
}

// JS thread. The batch's bytes as a Buffer: a view of its slot's Buffer,
// made (and kept) the first time the slot travels. nullptr on failure
// (nothing pending).
napi_value RingBufferState::SlotView(napi_env env, Batch* batch) {
  BatchSlot* slot = batch->slot;
  napi_value whole;
  if (slot->ref == nullptr) {
    if (napi_create_external_buffer(
            env, slot->bytes.capacity(), slot->bytes.data(),
            [](napi_env, void*, void* hint) { delete static_cast<BatchSlot*>(hint); }, slot,
            &whole) != napi_ok) {
      // Runtimes that forbid external buffers (V8 sandbox) get a copy; the
      // slot stays the batch's.
      void* copy_at;
      if (napi_create_buffer_copy(env, slot->bytes.size(), slot->bytes.data(), &copy_at, &whole) !=
          napi_ok)
        return nullptr;
      return whole;
    }
    // the Buffer owns the slot from here, whatever follows
    batch->js_owned = true;
    if (napi_create_reference(env, whole, 1, &slot->ref) != napi_ok) {
      // the slot dies with this Buffer: not to be reused
      batch->slot = nullptr;
      batch->js_owned = false;
      return BufferView(env, whole, slot->bytes.size());
    }
    made_slots_.push_back(slot);
  } else if (napi_get_reference_value(env, slot->ref, &whole) != napi_ok || whole == nullptr) {
    return nullptr;
  }
  return BufferView(env, whole, slot->bytes.size());
}

// JS thread. env is null when Node empties the queue of a TSFN that is
// being destroyed at environment teardown; the batch is then counted as
// dropped, as it is when the environment can no longer run JS. Plain
// Node-API throughout, for the reason given at CountersToJsOrNull.
void RingBufferState::CallJs(Napi::Env napi_env_wrapper, Napi::Function callback, RingBufferState*,
                             Batch* batch) {
  if (batch == nullptr) return;
  napi_env env = napi_env_wrapper;
  std::unique_ptr<Batch> owned(batch);
  std::shared_ptr<RingBufferState> state = std::move(owned->state);
  // Returns the credit however this ends, waking a poll thread that waits
  // for one.
  struct Credit {
    RingBufferState* s;
    ~Credit() {
      s->in_flight_.fetch_sub(1);
      if (s->waiting_credit_.load()) s->Signal();
    }
  } credit{state.get()};
  const auto drop = [&] {
    state->dropped_batches_.fetch_add(1, std::memory_order_relaxed);
    state->dropped_records_.fetch_add(owned->records, std::memory_order_relaxed);
  };
  if (env == nullptr || callback.IsEmpty()) return drop();
  // Reuse mode: the slot is free again once onBatch returned (before the
  // credit, so that the poll thread finds it), however this ends. (Above,
  // at teardown, the batch forgets a slot that JS owns: the Buffer may be
  // gone already.)
  struct SlotBack {
    RingBufferState* s;
    Batch* b;
    ~SlotBack() { s->LeaveSlot(b); }
  } slot_back{state.get(), owned.get()};

  // The stats handed over include this batch.
  napi_value stats = nullptr;
  if (state->batch_stats_) {
    RingBufferCounters snap = state->Counters();
    snap.batches += 1;
    snap.records += owned->records;
    snap.bytes += owned->payload_bytes;
    stats = CountersToJsOrNull(env, snap);
    if (stats == nullptr) return drop();
  }

  napi_value buf;
  if (owned->slot != nullptr) {
    buf = state->SlotView(env, owned.get());
    if (buf == nullptr) return drop();
  } else {
    BatchBytes& bytes = owned->own;
    auto* data = new BatchBytes(std::move(bytes));
    napi_status st = napi_create_external_buffer(
        env, data->size(), data->data(),
        [](napi_env, void*, void* hint) { delete static_cast<BatchBytes*>(hint); }, data, &buf);
    if (st != napi_ok) {
      // Runtimes that forbid external buffers (V8 sandbox) get a copy.
      void* copy_at;
      st = napi_create_buffer_copy(env, data->size(), data->data(), &copy_at, &buf);
      delete data;
      if (st != napi_ok) return drop();
    }
  }
  state->batches_.fetch_add(1, std::memory_order_relaxed);
  state->records_.fetch_add(owned->records, std::memory_order_relaxed);
  state->bytes_.fetch_add(owned->payload_bytes, std::memory_order_relaxed);

  napi_value recv, result;
  napi_get_undefined(env, &recv);
  napi_value argv[2] = {buf, stats};
  if (napi_call_function(env, recv, callback, stats != nullptr ? 2 : 1, argv, &result) != napi_ok) {
    // Left pending, Node would only print a DEP0168 warning for a module of
    // a stable Node-API version and carry on: a failing decoder would go
    // unnoticed. Report it like any other uncaught exception instead. When
    // the environment is stopping there is no exception to report, and
    // napi_fatal_exception declines.
    bool pending = false;
    napi_value err;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
        napi_get_and_clear_last_exception(env, &err) == napi_ok) {
      napi_fatal_exception(env, err);
    }
  }
}

// JS thread, once the poll thread released the TSFN and the queue is empty,
// or when the environment is torn down (process exit, worker exit).
void RingBufferState::Finalize(Napi::Env env, std::shared_ptr<RingBufferState>* holder,
                               RingBufferState* state) {
  std::unique_ptr<std::shared_ptr<RingBufferState>> keep(holder);
  // At teardown the poll thread may be waiting for a credit that this
  // thread will never return: tell it to give up before joining.
  state->abandon_.store(true);
  state->stop_.store(true);
  state->Signal();
  if (state->thread_.joinable()) state->thread_.join();
  // Reuse mode: the slots' Buffers may go (and free their slots). A batch
  // still queued at teardown never touches its slot again (see CallJs).
  for (BatchSlot* slot : state->made_slots_) napi_delete_reference(env, slot->ref);
  state->made_slots_.clear();
  if (state->owner_ != nullptr) {
    state->owner_->RingBufferStopped(state, state->Counters());
    state->owner_ = nullptr;
  }
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  for (const auto& w : state->waiters_) {
    // Fails harmlessly when the environment can no longer run JS.
    if (--w->remaining == 0) napi_resolve_deferred(env, w->deferred, undefined);
  }
  state->waiters_.clear();
}

}  // namespace gotrail
