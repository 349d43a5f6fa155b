/**
 * Backpressure from the export queue to the kernel: while the queue is full
 * the agent stops taking probe events from the ring buffer (they wait there)
 * and keeps every span it already took; nothing is dropped in user space.
 * A real traced Go server; the exporter is held back on purpose.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep, until } from '../support/wait.ts';

const skip = skipUnlessBpf();
const REQUESTS = 1500;
const QUEUE = 100;

/** An exporter that accepts nothing until released. */
class HeldExporter implements SpanExporter {
  held = true;
  readonly received: ReadableSpan[] = [];
  private waiting: Array<() => void> = [];
  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    const finish = (): void => {
      this.received.push(...spans);
      done({ code: ExportResultCode.SUCCESS });
    };
    if (this.held) this.waiting.push(finish);
    else finish();
  }
  release(): void {
    this.held = false;
    for (const f of this.waiting.splice(0)) f();
  }
  async shutdown(): Promise<void> {}
  async forceFlush(): Promise<void> {}
}

describe('export queue full', { skip }, () => {
  let agent: Agent;
  let server: GoServer;
  const exporter = new HeldExporter();

  before(async () => {
    agent = new Agent(createLogger('warn'), {
      exporter,
      selection: { includeExe: [join(repoRoot, 'build', 'go', '**')] },
      skipOwnRequests: false,
      batcher: { maxQueueSize: QUEUE, maxExportBatchSize: 50, scheduledDelayMillis: 50, exportTimeoutMillis: 60_000 },
    });
    await agent.start();
    server = await startGoServer(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'));
    await until('server traced', () => agent.tracedPids().includes(server.pid), 10_000);
  });

  after(async () => {
    exporter.release();
    await server?.stop();
    await agent?.stop();
  });

  test(`${REQUESTS} requests against a queue of ${QUEUE} that does not drain: consumption pauses, nothing is dropped, all arrive once it drains`, async () => {
    const ring = (): { wakeups: bigint; forced: bigint } => {
      const r = agent.collect().ringBuffer;
      return { wakeups: r.wakeups?.['gt_events'] ?? 0n, forced: r.forcedWakeups?.['gt_events'] ?? 0n };
    };
    const ring0 = ring();
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next++ < REQUESTS) assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    }));
    await sleep(300);
    const m = agent.collect();
    assert.ok(agent.totals.backpressurePauses >= 1, 'probe events stopped being taken');
    assert.ok(m.spans.queued <= QUEUE, `the export queue stays bounded (${m.spans.queued})`);
    assert.equal(m.spans.dropped.queue_full, 0, 'no span dropped in user space');
    // Events waiting past the wake threshold while consumption is paused:
    // the probes force one wakeup per crossing, not one per event; each
    // drain that empties the ring (at most one per poll-thread wakeup)
    // re-arms it, and the CPUs may race to it once each.
    const ring1 = ring();
    assert.ok(ring1.forced - ring0.forced <= BigInt(availableParallelism()) * (ring1.wakeups - ring0.wakeups + 1n), `forced wakeups ${ring1.forced - ring0.forced} for ${ring1.wakeups - ring0.wakeups} poll-thread wakeups`);

    exporter.release();
    await until('every request exported', () => exporter.received.filter((s) => Number(s.resource.attributes['process.pid']) === server.pid).length >= REQUESTS, 20_000).catch(() => undefined);
    await agent.flush();
    const got = exporter.received.filter((s) => Number(s.resource.attributes['process.pid']) === server.pid);
    const lost = agent.runtime()!.counters()['ringbuf_full'] ?? 0n;
    assert.equal(lost, 0n, 'the default ring buffer (2 MiB) held what waited');
    assert.equal(got.length, REQUESTS, 'one exported span per request');
    assert.equal(new Set(got.map((s) => s.spanContext().spanId)).size, REQUESTS, 'no span exported twice');
    assert.equal(agent.collect().spans.dropped.queue_full, 0);
  });
});
