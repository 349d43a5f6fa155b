/**
 * The export queue: a batch span processor with the semantics of the
 * OpenTelemetry SDK specification's "Batching processor" (trace SDK), plus
 * what a node agent needs on top of it:
 *
 * - a full batch (`maxExportBatchSize` spans) is exported as soon as it is
 *   queued, without waiting for the timer; a partial batch is exported at the
 *   latest `scheduledDelayMillis` after its first span was queued, and the
 *   timer is re-armed after each export while spans wait;
 * - at most `maxConcurrentExports` exports run at once (the specification
 *   exports one at a time; a second one overlaps serialization with the
 *   collector's round trip);
 * - an export that does not finish within `exportTimeoutMillis` counts as
 *   failed;
 * - unlike the specification's processor, which forgets a failed batch, a
 *   failed batch goes back to the head of the queue and is retried with
 *   exponential backoff, so a collector that is down loses nothing while the
 *   queue has room (delivery is therefore at least once: a timed-out export
 *   that did reach the collector is sent again);
 * - the queue is bounded by `maxQueueSize` spans, counting the spans being
 *   exported, so a failed batch always fits back; `full` and `onSpace` let
 *   the producer stop taking events from the kernel's ring buffer instead of
 *   handing over spans that would be dropped. A span pushed into a full queue
 *   is dropped and counted (reason `queue_full`); `push` never blocks or
 *   throws.
 *
 * - with an exporter that prepares spans (the OTLP one: it encodes a span
 *   as it is queued, see OtlpTraceEncoder.prepareOnto), the queue holds what
 *   it prepared, so that spans do not stay in V8's heap until exported:
 *   consecutive spans share one queued run (their bytes side by side), so
 *   nothing per span survives V8's young-generation collections while it
 *   waits for its batch; a reconfiguration to an exporter that does not
 *   prepare decodes them back.
 *
 * Own code rather than the SDK's BatchSpanProcessor: that one drops failed
 * batches, exports one batch at a time, and offers no backpressure signal.
 */
import { ExportResultCode } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { Logger } from '../util/log.ts';
import type { PreparingExporter } from './otlp-exporter.ts';
import { decodeEncodedSpans, EncodedSpan, spanCount, type QueuedSpan } from './otlp-proto.ts';

/** Why a span was dropped: the label `reason` of `gotrail_spans_dropped_total`. */
export type DropReason =
  /** pushed while `maxQueueSize` spans were held */
  | 'queue_full'
  /** pushed after shutdown, or still unexported when shutdown's last flush failed */
  | 'shutdown';
export const DROP_REASONS: readonly DropReason[] = ['queue_full', 'shutdown'];

export interface BatcherOptions {
  /**
   * Spans held at most (waiting or being exported); a span pushed beyond is
   * dropped (reason `queue_full`). Default 65536 (the SDK's 2048 is sized for
   * one process; one agent carries a whole node's spans and must ride out a
   * slow collector for a few seconds at tens of thousands of spans per
   * second; with the OTLP exporter a queued span is kept as its encoded
   * bytes, about 0.3 KiB for an HTTP server span: ~20 MiB when full; with
   * the console exporter about 1 KiB of heap: 64 MiB). Env `OTEL_BSP_MAX_QUEUE_SIZE`.
   */
  maxQueueSize?: number;
  /**
   * Spans per export; a full batch is exported at once. Must not exceed
   * `maxQueueSize` (clamped with a warning). Default 2048 (the SDK's 512 is
   * sized for one process: each export costs the agent a fixed ~0.5 ms of
   * CPU in the HTTP client, so at 10k spans/s 512 spent ~1.5 µs per span on
   * requests alone; 2048 spans are ~550 KB of OTLP protobuf). Env
   * `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
   */
  maxExportBatchSize?: number;
  /**
   * Longest wait, in milliseconds, between a span being queued and the export
   * of its (partial) batch. Default 1000 (the SDK's default is 5000; spans of
   * a node agent should show up sooner). Env `OTEL_BSP_SCHEDULE_DELAY`.
   */
  scheduledDelayMillis?: number;
  /**
   * Time in milliseconds an export may take before it counts as failed (its
   * batch is then retried); 0: no limit. Default 30000. Env
   * `OTEL_BSP_EXPORT_TIMEOUT`.
   */
  exportTimeoutMillis?: number;
  /** Exports running at once. Default 2. */
  maxConcurrentExports?: number;
  /**
   * Longest wait in milliseconds between retries while exports fail; the
   * first retry waits `scheduledDelayMillis` (at least 100 ms), each further
   * one twice as long. Default 30000.
   */
  maxBackoffMillis?: number;
}

export const BATCHER_DEFAULTS: Readonly<Required<BatcherOptions>> = Object.freeze({
  maxQueueSize: 65536,
  maxExportBatchSize: 2048,
  scheduledDelayMillis: 1000,
  exportTimeoutMillis: 30000,
  maxConcurrentExports: 2,
  maxBackoffMillis: 30000,
});

export interface BatcherStats {
  /** spans held: waiting for export or being exported */
  queued: number;
  /** spans the exporter reported as delivered */
  exported: number;
  /** spans dropped, by reason */
  dropped: Record<DropReason, number>;
  /** export attempts that failed or timed out (their spans were queued again) */
  failed: number;
}

const MIN_RETRY_MS = 100;

/** The exporter's `prepareOnto`, bound, when it has one (see PreparingExporter). */
function preparer(exporter: SpanExporter): Preparer | undefined {
  const p = (exporter as Partial<PreparingExporter>).prepareOnto;
  return typeof p === 'function' ? p.bind(exporter) : undefined;
}

type Preparer = (tail: QueuedSpan | undefined, span: ReadableSpan) => QueuedSpan;

export class SpanBatcher {
  /** What waits for export, oldest first: spans, or runs of prepared spans (see spanCount). */
  private waiting: QueuedSpan[] = [];
  /** Spans in {@link waiting}. */
  private waitingSpans = 0;
  /** The exporter's `prepareOnto` (see PreparingExporter), applied to each span as it is queued. */
  private prepare: Preparer | undefined;
  private inFlightSpans = 0;
  private readonly exports = new Set<Promise<boolean>>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = 0;
  /** the timer fired: export a partial batch as soon as a slot is free */
  private due = false;
  private pumpQueued = false;
  private wasFull = false;
  private readonly spaceListeners = new Set<() => void>();
  private backoffMs = 0;
  private retryAt = 0;
  private closed = false;
  private shuttingDown: Promise<void> | undefined;
  /** Date.now() past which shutdown stops waiting for the exporter (set when shutdown begins) */
  private shutdownDeadline: number | undefined;
  /** the shutdown deadline passed: no export starts any more */
  private abandoned = false;
  /** why shutdown stopped waiting before its deadline ({@link giveUp}) */
  private givenUp: string | undefined;
  /** ends the current wait for the shutdown deadline at once */
  private readonly expireNow = new Set<() => void>();
  private lastError: string | undefined;
  /** a flush after shutdown began left spans unexported: shutdown does not try again */
  private shutdownFlushFailed = false;
  private exported = 0;
  private failed = 0;
  private readonly dropped: Record<DropReason, number> = { queue_full: 0, shutdown: 0 };
  /** The options in force (defaults applied, batch size clamped). */
  options: Readonly<Required<BatcherOptions>>;

  private exporter: SpanExporter;
  private readonly log: Logger;

  /** @throws Error when an option is not a positive integer (a non-negative one for the delays). */
  constructor(exporter: SpanExporter, log: Logger, opts: BatcherOptions = {}) {
    this.exporter = exporter;
    this.prepare = preparer(exporter);
    this.log = log;
    this.options = SpanBatcher.checkOptions(opts, log);
  }

  private static checkOptions(opts: BatcherOptions, log: Logger): Readonly<Required<BatcherOptions>> {
    const o: Required<BatcherOptions> = { ...BATCHER_DEFAULTS };
    for (const [k, v] of Object.entries(opts) as Array<[keyof BatcherOptions, number | undefined]>) if (v !== undefined) o[k] = v;
    for (const k of ['maxQueueSize', 'maxExportBatchSize', 'maxConcurrentExports'] as const) {
      if (!Number.isSafeInteger(o[k]) || o[k] < 1) throw new Error(`batcher option ${k}: expected an integer >= 1, got ${o[k]}`);
    }
    for (const k of ['scheduledDelayMillis', 'exportTimeoutMillis', 'maxBackoffMillis'] as const) {
      if (!Number.isSafeInteger(o[k]) || o[k] < 0) throw new Error(`batcher option ${k}: expected an integer >= 0, got ${o[k]}`);
    }
    if (o.maxExportBatchSize > o.maxQueueSize) {
      log.warn('maxExportBatchSize exceeds maxQueueSize: using maxQueueSize', { maxExportBatchSize: o.maxExportBatchSize, maxQueueSize: o.maxQueueSize });
      o.maxExportBatchSize = o.maxQueueSize;
    }
    return Object.freeze(o);
  }

  /**
   * Sends from now on through `exporter` with `opts` (a configuration
   * reload): queued spans stay and go to the new exporter; exports under way
   * finish on the old one, which is then shut down. A queue made smaller than
   * what it holds keeps every span and takes new ones once below the limit.
   * @throws Error when an option is invalid (nothing changed then).
   */
  reconfigure(exporter: SpanExporter, opts: BatcherOptions): void {
    const options = SpanBatcher.checkOptions(opts, this.log);
    if (this.closed) return;
    const old = this.exporter;
    const running = [...this.exports];
    this.exporter = exporter;
    this.prepare = preparer(exporter);
    // spans prepared for the previous exporter go to one that takes spans as they were
    if (!this.prepare) this.waiting = this.unprepared(this.waiting);
    this.options = options;
    // the new exporter starts afresh, not in the old one's backoff
    this.backoffMs = 0;
    this.retryAt = 0;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.due = this.waiting.length > 0;
    if (old !== exporter) {
      void Promise.all(running).then(() => old.shutdown()).catch((e: unknown) => {
        this.log.warn('shutting down the previous exporter failed', { error: (e as Error).message });
      });
    }
    // a larger queue may have room for a producer waiting on onSpace
    this.afterExport();
  }

  /** The exporter's state for readiness: false while exports fail (the last attempt failed and is waiting for its retry). */
  get exportHealthy(): boolean {
    return this.backoffMs === 0;
  }

  get stats(): BatcherStats {
    return { queued: this.size, exported: this.exported, dropped: { ...this.dropped }, failed: this.failed };
  }

  private get size(): number {
    return this.waitingSpans + this.inFlightSpans;
  }

  /** True while `maxQueueSize` spans are held: a span pushed now would be dropped. */
  get full(): boolean {
    return this.size >= this.options.maxQueueSize;
  }

  /**
   * Calls `cb` each time the queue has room again after having been full
   * (once per full → not full transition, after an export freed space). A
   * callback added twice is called once. Returns a function that removes it.
   */
  onSpace(cb: () => void): () => void {
    this.spaceListeners.add(cb);
    return () => void this.spaceListeners.delete(cb);
  }

  /** Queues a span for export; drops and counts it when the queue is full or shut down. Never throws. */
  push(span: ReadableSpan): void {
    if (this.closed) {
      this.drop('shutdown', 1);
      return;
    }
    if (this.size >= this.options.maxQueueSize) {
      this.wasFull = true;
      this.drop('queue_full', 1);
      return;
    }
    if (this.prepare) {
      const w = this.waiting;
      const tail = w.length > 0 ? w[w.length - 1] : undefined;
      const q = this.prepare(tail, span);
      if (q !== tail) w.push(q);
    } else this.waiting.push(span);
    this.waitingSpans++;
    if (this.size >= this.options.maxQueueSize) this.wasFull = true;
    if (this.waitingSpans >= this.options.maxExportBatchSize) this.schedulePump();
    else if (!this.timer) this.arm(this.options.scheduledDelayMillis);
  }

  private drop(reason: DropReason, n: number): void {
    this.dropped[reason] += n;
    if (reason === 'queue_full') {
      this.log.once('batcher.full', 'span queue full: dropping spans (the exporter cannot keep up; counted in gotrail_spans_dropped_total{reason="queue_full"})', { maxQueueSize: this.options.maxQueueSize });
    }
  }

  /** Starts exports once the current synchronous run (e.g. one ring-buffer batch) has pushed its spans. */
  private schedulePump(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(() => {
      this.pumpQueued = false;
      this.pump();
    });
  }

  private arm(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = Date.now() + ms;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.due = true;
      this.pump();
    }, ms);
    this.timer.unref();
  }

  /** Starts what may start now: full batches, a partial one when its delay is over, nothing during backoff. */
  private pump(): void {
    if (this.closed) return;
    const now = Date.now();
    if (now < this.retryAt) {
      if (!this.timer || this.timerAt < this.retryAt) this.arm(this.retryAt - now);
      return;
    }
    const max = this.options.maxExportBatchSize;
    // an exporter may fail synchronously: stop at once, the backoff applies
    const failed = this.failed;
    while (this.failed === failed && this.exports.size < this.options.maxConcurrentExports && (this.waitingSpans >= max || (this.due && this.waitingSpans > 0))) {
      if (this.waitingSpans <= max) this.due = false;
      void this.startExport();
    }
    if (this.failed !== failed) {
      this.arm(this.retryAt - Date.now());
      return;
    }
    if (this.waitingSpans === 0) this.due = false;
    if (this.waitingSpans > 0 && !this.timer) this.arm(this.options.scheduledDelayMillis);
  }

  /** Exports the batch at the head of the queue; resolves true when the exporter reported success. */
  private startExport(): Promise<boolean> {
    const { batch, spans } = this.takeBatch(this.options.maxExportBatchSize);
    this.inFlightSpans += spans;
    const p = new Promise<boolean>((resolve) => {
      let done = false;
      let timeout: NodeJS.Timeout | undefined;
      const finish = (ok: boolean, error?: Error): void => {
        if (done) return;
        done = true;
        if (timeout) clearTimeout(timeout);
        // an answer after shutdown gave up: its spans were counted as dropped then
        if (this.abandoned) return resolve(ok);
        this.inFlightSpans -= spans;
        if (ok) {
          this.exported += spans;
          if (this.backoffMs) this.log.info('span export recovered', { queued: this.size });
          this.backoffMs = 0;
          this.retryAt = 0;
        } else {
          this.failed++;
          // back at the head: the oldest spans go first once the collector answers
          this.waiting = (this.prepare ? batch : this.unprepared(batch)).concat(this.waiting);
          this.waitingSpans += spans;
          const base = Math.max(MIN_RETRY_MS, this.options.scheduledDelayMillis);
          this.backoffMs = Math.min(Math.max(base, this.options.maxBackoffMillis), this.backoffMs ? this.backoffMs * 2 : base);
          this.retryAt = Date.now() + this.backoffMs;
          this.lastError = error?.message ?? 'unknown';
          this.log.once('export.failed', 'span export failed: spans kept and retried with backoff (is the collector reachable?)', { error: this.lastError });
        }
        resolve(ok);
      };
      if (this.options.exportTimeoutMillis > 0) {
        timeout = setTimeout(() => finish(false, new Error(`export timed out after ${this.options.exportTimeoutMillis} ms`)), this.options.exportTimeoutMillis);
        timeout.unref();
      }
      try {
        this.exporter.export(batch as ReadableSpan[], (r) => finish(r.code === ExportResultCode.SUCCESS, r.error));
      } catch (e) {
        finish(false, e as Error);
      }
    });
    this.exports.add(p);
    void p.then(() => {
      this.exports.delete(p);
      this.afterExport();
    });
    return p;
  }

  /**
   * Takes the first `max` spans (or all when fewer) off the queue: whole
   * items, and the head of a run that reaches past `max`.
   */
  private takeBatch(max: number): { batch: QueuedSpan[]; spans: number } {
    const w = this.waiting;
    let i = 0;
    let spans = 0;
    while (i < w.length) {
      const n = spanCount(w[i]!);
      if (spans + n > max) break;
      spans += n;
      i++;
    }
    const batch = w.splice(0, i);
    if (spans < max && w.length > 0) {
      // only a run counts more than one span
      const head = (w[0] as EncodedSpan).splitOff(max - spans);
      batch.push(head);
      spans += head.count;
    }
    this.waitingSpans -= spans;
    return { batch, spans };
  }

  /** `spans` with each prepared run decoded back into its spans, for an exporter that does not prepare. */
  private unprepared(spans: QueuedSpan[]): QueuedSpan[] {
    return spans.some((s) => s instanceof EncodedSpan) ? spans.flatMap((s) => (s instanceof EncodedSpan ? decodeEncodedSpans(s) : [s])) : spans;
  }

  private afterExport(): void {
    if (this.wasFull && this.size < this.options.maxQueueSize) {
      this.wasFull = false;
      for (const cb of [...this.spaceListeners]) {
        try {
          cb();
        } catch (e) {
          this.log.once('batcher.onSpace', 'a queue space listener threw', { error: (e as Error).message });
        }
      }
    }
    this.pump();
  }

  /**
   * Exports every span held now, ignoring the schedule and any backoff: one
   * attempt per batch, stopping at the first failure (so a dead collector
   * cannot hold it longer than one export timeout); failed spans stay queued.
   * Resolves when those exports have finished, then flushes the exporter.
   */
  async forceFlush(): Promise<void> {
    let budget = Math.ceil(this.size / this.options.maxExportBatchSize) + this.options.maxConcurrentExports;
    // an export already running that fails ends the flush, as one of its own would
    if (!(await this.settle([...this.exports]))) budget = 0;
    while (this.waiting.length > 0 && budget > 0 && !this.abandoned) {
      const round: Array<Promise<boolean>> = [];
      const failed = this.failed;
      while (this.failed === failed && this.exports.size < this.options.maxConcurrentExports && this.waiting.length > 0 && budget > 0 && !this.abandoned) {
        budget--;
        round.push(this.startExport());
      }
      if (round.length === 0) {
        await Promise.race(this.exports);
        continue;
      }
      if (!(await this.settle(round))) break;
    }
    // once shutdown began, one failed attempt is the last: stopping must not retry a dead collector
    if (this.shutdownDeadline !== undefined && this.waiting.length > 0) this.shutdownFlushFailed = true;
    await this.exporter.forceFlush?.();
  }

  private async settle(ps: Array<Promise<boolean>>): Promise<boolean> {
    return (await Promise.all(ps)).every(Boolean);
  }

  /**
   * How long shutdown waits for the exporter at most, in ms: the export
   * timeout (`OTEL_BSP_EXPORT_TIMEOUT`, the time one export may take), or
   * 30 s when that is 0 (no limit), so that a stop is always bounded.
   */
  get shutdownTimeoutMillis(): number {
    return this.options.exportTimeoutMillis > 0 ? this.options.exportTimeoutMillis : 30_000;
  }

  /**
   * Starts the shutdown clock (once) and says what is left to send:
   * `pending` spans held elsewhere that will still be pushed. Called by
   * {@link shutdown} when not called before.
   */
  beginShutdown(pending = 0): void {
    if (this.shutdownDeadline !== undefined) return;
    this.shutdownDeadline = Date.now() + this.shutdownTimeoutMillis;
    const n = this.size + pending;
    if (n > 0) {
      this.log.info(`flushing ${n} span${n === 1 ? '' : 's'} to ${this.destination()} before stopping (giving up after ${this.shutdownTimeoutMillis / 1000} s, the export timeout)`);
    }
  }

  /** Waits for `work`, at most until the shutdown deadline (started now when not yet), or until {@link giveUp}. */
  async untilShutdownDeadline(work: Promise<unknown>): Promise<boolean> {
    this.beginShutdown();
    const left = this.givenUp !== undefined ? 0 : this.shutdownDeadline! - Date.now();
    let timer: NodeJS.Timeout | undefined;
    let expire: (() => void) | undefined;
    const expired = new Promise<boolean>((r) => {
      expire = () => r(false);
      timer = setTimeout(expire, Math.max(0, left));
    });
    this.expireNow.add(expire!);
    try {
      const done = await Promise.race([work.then(() => true), expired]);
      if (!done) this.abandoned = true;
      return done;
    } finally {
      clearTimeout(timer);
      this.expireNow.delete(expire!);
    }
  }

  /**
   * Stops waiting for the exporter now rather than at the shutdown deadline
   * (a second stop signal: the user will not wait): what is unexported is
   * dropped, logged and counted as at the deadline (reason `shutdown`), with
   * `why` as the log line's reason. Also applies to a shutdown not begun yet.
   */
  giveUp(why: string): void {
    this.givenUp ??= why;
    for (const expire of this.expireNow) expire();
  }

  private destination(): string {
    return (this.exporter as { destination?: string }).destination ?? 'the exporter';
  }

  /**
   * Flushes once (as forceFlush) until the shutdown deadline
   * ({@link shutdownTimeoutMillis} after {@link beginShutdown}), counts what
   * is still unexported (waiting, or sent without an answer by then) as
   * dropped (reason `shutdown`) with one log line, then shuts the exporter
   * down (waiting for it at most 1 s more). Spans pushed afterwards are
   * dropped and counted. Idempotent: later calls return the same promise.
   */
  shutdown(): Promise<void> {
    this.shuttingDown ??= (async () => {
      this.beginShutdown();
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      const flushed = await this.untilShutdownDeadline((async () => {
        if (!this.shutdownFlushFailed) await this.forceFlush();
        while (this.exports.size > 0) await Promise.all([...this.exports]);
      })());
      // spans of an export still unanswered at the deadline are not known to have arrived
      const left = this.waitingSpans + (flushed ? 0 : this.inFlightSpans);
      if (left > 0) {
        this.waiting = [];
        this.waitingSpans = 0;
        if (!flushed) this.inFlightSpans = 0;
        this.drop('shutdown', left);
        const why = this.givenUp !== undefined ? `given up: ${this.givenUp}` : flushed ? `the last export failed: ${this.lastError ?? 'unknown error'}` : `no answer within ${this.shutdownTimeoutMillis / 1000} s${this.lastError ? `; last error: ${this.lastError}` : ''}`;
        this.log.warn(`stopping without exporting ${left} span${left === 1 ? '' : 's'} to ${this.destination()}: dropped, counted in gotrail_spans_dropped_total{reason="shutdown"}`, { spans: left, reason: why });
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.exporter.shutdown(), new Promise<void>((r) => (timer = setTimeout(r, 1000)))]);
      clearTimeout(timer);
    })();
    return this.shuttingDown;
  }
}
