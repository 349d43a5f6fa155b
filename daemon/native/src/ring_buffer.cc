#include "ring_buffer.h"

#include <errno.h>
#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <system_error>

#include "errors.h"

namespace gotrail {

namespace {

// Small enough that an idle agent does not hold megabytes per ring buffer,
// large enough that a busy one grows the vector only a few times per batch.
constexpr size_t kInitialBatchReserve = 64 * 1024;

inline size_t Align8(size_t n) { return (n + 7) & ~static_cast<size_t>(7); }

}  // namespace

// JS thread.
Napi::Object CountersToJs(Napi::Env env, const RingBufferCounters& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("batches", Napi::BigInt::New(env, c.batches));
  o.Set("records", Napi::BigInt::New(env, c.records));
  o.Set("bytes", Napi::BigInt::New(env, c.bytes));
  o.Set("droppedBatches", Napi::BigInt::New(env, c.dropped_batches));
  o.Set("droppedRecords", Napi::BigInt::New(env, c.dropped_records));
  return o;
}

// JS thread.
std::shared_ptr<RingBufferState> RingBufferState::Start(Napi::Env env, int map_fd,
                                                        const std::string& map_name,
                                                        Napi::Function on_batch,
                                                        const RingBufferOptions& opts,
                                                        RingBufferOwner* owner) {
  const std::string op = "start ring buffer " + map_name;
  std::shared_ptr<RingBufferState> state(new RingBufferState());
  state->opts_ = opts;
  {
    LibbpfLogCapture log;
    state->rb_ = ring_buffer__new(map_fd, &RingBufferState::OnSample, state.get(), nullptr);
    if (state->rb_ == nullptr) {
      const int err = errno;
      ThrowWithLog(env, op, err, log.Tail(40));
    }
  }
  state->batch_.reserve(kInitialBatchReserve);

  // The finalizer owns one reference so that the state outlives the
  // BpfObject when JS drops the object while batches are still queued.
  auto* holder = new std::shared_ptr<RingBufferState>(state);
  try {
    state->tsfn_ = Tsfn::New(env, on_batch, "gotrail-ringbuf", opts.max_queued_batches, 1,
                             state.get(), &RingBufferState::Finalize, holder);
  } catch (...) {
    delete holder;  // the state's destructor frees the ring buffer
    throw;
  }
  try {
    state->thread_ = std::thread(&RingBufferState::PollLoop, state.get());
  } catch (const std::system_error& e) {
    // The finalizer will still run (and free everything) once released.
    state->tsfn_.Release();
    Throw(env, op + ": create poll thread", e.code().value());
  }
  state->owner_ = owner;
  return state;
}

RingBufferState::~RingBufferState() {
  // Only reached after the poll thread was joined (or never started).
  if (rb_ != nullptr) ring_buffer__free(rb_);
}

// JS thread.
void RingBufferState::RequestStop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = true;
  cv_.notify_all();
}

// JS thread.
void RingBufferState::AddStopWaiter(napi_deferred deferred) { waiters_.push_back(deferred); }

// Any thread: the counters are independent atomics, so a snapshot may mix
// two batches' worth; good enough for metrics.
RingBufferCounters RingBufferState::Counters() const {
  RingBufferCounters c;
  c.batches = batches_.load(std::memory_order_relaxed);
  c.records = records_.load(std::memory_order_relaxed);
  c.bytes = bytes_.load(std::memory_order_relaxed);
  c.dropped_batches = dropped_batches_.load(std::memory_order_relaxed);
  c.dropped_records = dropped_records_.load(std::memory_order_relaxed);
  return c;
}

// Poll thread.
void RingBufferState::PollLoop() {
  pthread_setname_np(pthread_self(), "gotrail-rb");
  const auto interval = std::chrono::milliseconds(opts_.interval_ms);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait_for(lock, interval, [this] { return stop_; });
    const bool stopping = stop_;
    lock.unlock();
    // A stop request still drains what the probes already submitted, so
    // that stopping after the traced work finished loses nothing.
    ring_buffer__consume(rb_);
    Flush();
    lock.lock();
    if (stopping || closing_) break;
  }
  lock.unlock();
  // Last touch of the TSFN: after this the finalizer may run and join us.
  tsfn_.Release();
}

// Poll thread, from inside ring_buffer__consume.
int RingBufferState::OnSample(void* ctx, void* data, size_t size) {
  static_cast<RingBufferState*>(ctx)->Append(data, size);
  return 0;
}

// Poll thread.
void RingBufferState::Append(const void* data, size_t size) {
  const size_t need = Align8(4 + size);
  if (!batch_.empty() && batch_.size() + need > opts_.max_batch_bytes) Flush();
  const size_t at = batch_.size();
  batch_.resize(at + need, 0);
  uint8_t* p = batch_.data() + at;
  const uint32_t len = static_cast<uint32_t>(size);
  // Little-endian by contract, independent of the host.
  p[0] = len & 0xff;
  p[1] = (len >> 8) & 0xff;
  p[2] = (len >> 16) & 0xff;
  p[3] = (len >> 24) & 0xff;
  std::memcpy(p + 4, data, size);
  batch_records_++;
  batch_payload_ += size;
}

// Poll thread. Never blocks: a full queue means JS is behind, and waiting
// would only move the loss into the kernel ring buffer while also delaying
// stop and shutdown.
void RingBufferState::Flush() {
  if (batch_.empty()) return;
  auto* batch = new Batch{std::move(batch_), batch_records_, batch_payload_};
  batch_ = std::vector<uint8_t>();
  batch_.reserve(kInitialBatchReserve);
  const uint64_t records = batch_records_, payload = batch_payload_;
  batch_records_ = 0;
  batch_payload_ = 0;

  napi_status status = closing_ ? napi_closing : tsfn_.NonBlockingCall(batch);
  if (status == napi_ok) {
    batches_.fetch_add(1, std::memory_order_relaxed);
    records_.fetch_add(records, std::memory_order_relaxed);
    bytes_.fetch_add(payload, std::memory_order_relaxed);
    return;
  }
  delete batch;
  dropped_batches_.fetch_add(1, std::memory_order_relaxed);
  dropped_records_.fetch_add(records, std::memory_order_relaxed);
  // The environment is going away; the finalizer is about to join us.
  if (status == napi_closing) closing_ = true;
}

// JS thread. env is null when Node drains the queue of a TSFN that is being
// destroyed; the batch must still be freed.
void RingBufferState::CallJs(Napi::Env env, Napi::Function callback, RingBufferState* state,
                             Batch* batch) {
  std::unique_ptr<Batch> owned(batch);
  if (static_cast<napi_env>(env) == nullptr || callback.IsEmpty() || batch == nullptr) return;
  Batch* raw = owned.release();
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::NewOrCopy(
      env, raw->data.data(), raw->data.size(),
      [](Napi::Env, uint8_t*, Batch* b) { delete b; }, raw);
  try {
    callback.Call({buf, CountersToJs(env, state->Counters())});
  } catch (const Napi::Error& e) {
    // Left pending, Node would only print a DEP0168 warning for a module of
    // a stable Node-API version and carry on: a failing decoder would go
    // unnoticed. Report it like any other uncaught exception instead.
    napi_fatal_exception(env, e.Value());
  }
}

// JS thread, once the poll thread released the TSFN and the queue is empty,
// or when the environment is torn down (process exit, worker exit).
void RingBufferState::Finalize(Napi::Env env, std::shared_ptr<RingBufferState>* holder,
                               RingBufferState* state) {
  std::unique_ptr<std::shared_ptr<RingBufferState>> keep(holder);
  state->RequestStop();
  if (state->thread_.joinable()) state->thread_.join();
  if (state->owner_ != nullptr) {
    state->owner_->RingBufferStopped(state, state->Counters());
    state->owner_ = nullptr;
  }
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  for (napi_deferred d : state->waiters_) {
    // Fails harmlessly when the environment can no longer run JS.
    napi_resolve_deferred(env, d, undefined);
  }
  state->waiters_.clear();
}

}  // namespace gotrail
