/**
 * A bounded queue in front of an exporter: spans are exported in batches on a
 * timer, one export in flight at a time. When the queue is full new spans are
 * dropped and counted (never blocking the event path). A failing export (a
 * dead collector) puts its batch back at the head of the queue and the next
 * attempt waits, doubling up to `maxBackoffMs`: nothing is lost while the
 * queue has room, and what overflows is counted.
 */
import { ExportResultCode } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { Logger } from '../util/log.ts';

export interface BatcherOptions {
  /** Spans held at most before new ones are dropped. Default 20480. */
  maxQueueSize?: number;
  /** Spans per export call. Default 512. */
  maxBatchSize?: number;
  /** Delay between exports. Default 1000 ms. */
  intervalMs?: number;
  /** Time an export may take before it is counted as failed. Default 30000 ms. */
  exportTimeoutMs?: number;
  /** Longest wait between retries while exports fail. Default 30000 ms. */
  maxBackoffMs?: number;
}

export interface BatcherStats {
  queued: number;
  exported: number;
  /** dropped because the queue was full */
  dropped: number;
  /** export attempts that failed (their spans were re-queued) */
  failed: number;
}

export class SpanBatcher {
  private queue: ReadableSpan[] = [];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private readonly opts: Required<BatcherOptions>;
  private backoffMs = 0;
  private retryAt = 0;
  readonly stats: BatcherStats = { queued: 0, exported: 0, dropped: 0, failed: 0 };

  private readonly exporter: SpanExporter;
  private readonly log: Logger;

  constructor(exporter: SpanExporter, log: Logger, opts: BatcherOptions = {}) {
    this.exporter = exporter;
    this.log = log;
    this.opts = {
      maxQueueSize: opts.maxQueueSize ?? 20480,
      maxBatchSize: opts.maxBatchSize ?? 512,
      intervalMs: opts.intervalMs ?? 1000,
      exportTimeoutMs: opts.exportTimeoutMs ?? 30000,
      maxBackoffMs: opts.maxBackoffMs ?? 30000,
    };
    this.timer = setInterval(() => void this.flushSome(), this.opts.intervalMs);
    this.timer.unref();
  }

  push(span: ReadableSpan): void {
    if (this.queue.length >= this.opts.maxQueueSize) {
      this.stats.dropped++;
      this.log.once('batcher.full', 'span queue full: dropping spans (the exporter cannot keep up)', { maxQueueSize: this.opts.maxQueueSize });
      return;
    }
    this.queue.push(span);
    this.stats.queued = this.queue.length;
  }

  private flushSome(force = false): Promise<void> {
    if (this.inFlight || this.queue.length === 0) return this.inFlight ?? Promise.resolve();
    if (!force && Date.now() < this.retryAt) return Promise.resolve();
    const batch = this.queue.splice(0, this.opts.maxBatchSize);
    this.stats.queued = this.queue.length;
    this.inFlight = new Promise<void>((resolve) => {
      let done = false;
      const finish = (ok: boolean, error?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timeout);
        if (ok) {
          this.stats.exported += batch.length;
          if (this.backoffMs) this.log.info('span export recovered', { queued: this.queue.length });
          this.backoffMs = 0;
          this.retryAt = 0;
        } else {
          this.stats.failed++;
          this.backoffMs = Math.min(this.opts.maxBackoffMs, this.backoffMs ? this.backoffMs * 2 : this.opts.intervalMs);
          this.retryAt = Date.now() + this.backoffMs;
          const room = this.opts.maxQueueSize - this.queue.length;
          const keep = batch.slice(0, Math.max(0, room));
          this.stats.dropped += batch.length - keep.length;
          this.queue.unshift(...keep);
          this.stats.queued = this.queue.length;
          this.log.once('export.failed', 'span export failed: spans kept and retried with backoff (is the collector reachable?)', { error: error?.message ?? 'timeout' });
        }
        resolve();
      };
      const timeout = setTimeout(() => finish(false, new Error(`export timed out after ${this.opts.exportTimeoutMs} ms`)), this.opts.exportTimeoutMs);
      timeout.unref();
      try {
        this.exporter.export(batch, (r) => finish(r.code === ExportResultCode.SUCCESS, r.error));
      } catch (e) {
        finish(false, e as Error);
      }
    }).finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** Exports everything queued now: one attempt per batch, so a dead collector cannot hold it forever. */
  async flush(): Promise<void> {
    if (this.inFlight) await this.inFlight;
    let attempts = Math.ceil(this.queue.length / this.opts.maxBatchSize) + 1;
    while (this.queue.length > 0 && attempts-- > 0) {
      const failedBefore = this.stats.failed;
      await this.flushSome(true);
      if (this.stats.failed !== failedBefore) break;
    }
    await this.exporter.forceFlush?.();
  }

  async shutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
    await this.exporter.shutdown();
  }
}
