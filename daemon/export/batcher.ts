/**
 * A bounded queue in front of an exporter: spans are exported in batches on a
 * timer, one export in flight at a time. When the queue is full new spans are
 * dropped and counted (never blocking the event path); a failing exporter
 * (dead collector) loses the batch, counts it and logs once.
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
}

export interface BatcherStats {
  queued: number;
  exported: number;
  dropped: number;
  failed: number;
}

export class SpanBatcher {
  private queue: ReadableSpan[] = [];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private readonly opts: Required<BatcherOptions>;
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

  private flushSome(): Promise<void> {
    if (this.inFlight || this.queue.length === 0) return this.inFlight ?? Promise.resolve();
    const batch = this.queue.splice(0, this.opts.maxBatchSize);
    this.stats.queued = this.queue.length;
    this.inFlight = new Promise<void>((resolve) => {
      let done = false;
      const finish = (ok: boolean, error?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timeout);
        if (ok) this.stats.exported += batch.length;
        else {
          this.stats.failed += batch.length;
          this.log.once('export.failed', 'span export failed: spans lost (is the collector reachable?)', { error: error?.message ?? 'timeout' });
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

  /** Exports everything queued now. */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.inFlight) {
      await (this.inFlight ?? this.flushSome());
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
