/**
 * Export throughput, end to end: a real traced Go HTTP server under a fixed
 * request rate for 60 s (the load generator counts exactly which requests
 * were answered), the real agent, and a real OpenTelemetry Collector. Every
 * answered request must arrive as exactly one span, and the agent must count
 * nothing lost or dropped.
 *
 * The highest rate this 2-core machine sustained for 60 s, with the server,
 * the load generator, the agent and the collector sharing it, was 7000
 * requests/s (at 8000/s the server fell behind); every span arrived at 5000,
 * 6000, 7000 and (server behind) 10000 requests/s. The default rate
 * (GOTRAIL_THROUGHPUT_RATE) is 4000/s: when other work starves the agent's
 * JavaScript thread of CPU, it falls behind the events, and until the
 * ring-buffer consumer applies backpressure the addon's queue of ring-buffer
 * batches then overflows (counted in
 * gotrail_events_lost_total{reason="ringbuf_consumer_queue_full"}; seen once
 * at 6000/s with the machine busy with other test suites, and at 8000/s).
 * That loss is not what this test measures, so the rate leaves the agent
 * headroom. Before the export queue sent full batches at once, one batch of
 * 512 spans per second left the agent and the rest overflowed its queue.
 *
 * The ring buffer is raised to 64 MiB (--ring-buffer-bytes): this test
 * measures the export path, and until the consumer applies backpressure a
 * pause of the agent's event loop longer than the default 4 MiB covers shows
 * up as events lost in the kernel (gotrail_events_lost_total{reason="ringbuf_full"}).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { startCollector } from '../support/collector.ts';
import { startAgent, repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const RATE = Number(process.env['GOTRAIL_THROUGHPUT_RATE'] ?? 4000);
const SECONDS = Number(process.env['GOTRAIL_THROUGHPUT_SECONDS'] ?? 60);
const SERVICE = 'throughput-e2e';

interface LoadResult {
  sent: number;
  responses: number;
  transportErrors: number;
  ok: number;
  seconds: number;
  sendSeconds: number;
  achievedRate: number;
  p50us: number;
  p99us: number;
}

/**
 * Counts the spans of one service in the collector's output, reading only the
 * bytes added since the last call and keeping no span (hundreds of thousands
 * of parsed spans would not fit the test's heap comfortably).
 */
class SpanCounter {
  private offset = 0;
  private rest = '';
  count = 0;
  private readonly path: string;
  private readonly service: string;
  constructor(path: string, service: string) {
    this.path = path;
    this.service = service;
  }
  async update(): Promise<number> {
    let f;
    try {
      f = await open(this.path, 'r');
    } catch {
      return this.count;
    }
    try {
      const { size } = await f.stat();
      while (this.offset < size) {
        const chunk = Buffer.alloc(Math.min(size - this.offset, 16 << 20));
        const { bytesRead } = await f.read(chunk, 0, chunk.length, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        const text = this.rest + chunk.subarray(0, bytesRead).toString('utf8');
        const lines = text.split('\n');
        this.rest = lines.pop()!;
        for (const line of lines) if (line.trim()) this.countLine(line);
      }
    } finally {
      await f.close();
    }
    return this.count;
  }
  private countLine(line: string): void {
    type Req = { resourceSpans?: Array<{ resource?: { attributes?: Array<{ key: string; value?: { stringValue?: string } }> }; scopeSpans?: Array<{ spans?: unknown[] }> }> };
    for (const rs of (JSON.parse(line) as Req).resourceSpans ?? []) {
      const name = rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value?.stringValue;
      if (name !== this.service) continue;
      for (const ss of rs.scopeSpans ?? []) this.count += ss.spans?.length ?? 0;
    }
  }
}

function metricSum(text: string, re: RegExp): number {
  let sum = 0;
  for (const m of text.matchAll(re)) sum += Number(m[1]);
  return sum;
}

test(`every span reaches the collector at ${RATE} requests/s for ${SECONDS} s`, { skip: skipUnlessBpf(), timeout: (SECONDS + 240) * 1000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-throughput');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  // a new inode: never rewrite a binary in place that may still run or carry uprobes
  rmSync(bin, { force: true });
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const loadgen = join(repoRoot, 'build', 'bench', 'loadgen');
  execFileSync('go', ['build', '-o', loadgen, '.'], { cwd: join(repoRoot, 'bench', 'loadgen'), stdio: 'inherit' });

  const collector = await startCollector({ logLevel: 'warn' });
  const agent = await startAgent([
    '--include-exe', bin,
    '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`,
    '--ring-buffer-bytes', String(64 << 20),
  ]);
  const server = await startGoServer(bin, [], { OTEL_SERVICE_NAME: SERVICE });
  try {
    await agent.waitTraced(server.pid);
    const metricsUrl = await agent.metricsUrl();
    // the agent's own view, once a second: spans exported so far and the queue's length
    const samples: Array<{ at: number; exported: number; queued: number }> = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const m = (await httpRequest(metricsUrl)).body;
        samples.push({ at: Date.now(), exported: metricSum(m, /^gotrail_spans_exported_total (\d+)/gm), queued: metricSum(m, /^gotrail_span_queue_length (\d+)/gm) });
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
    const t0 = Date.now();
    const out = await new Promise<string>((resolve, reject) => {
      execFile(loadgen, ['-url', `${server.url}/hello`, '-rate', String(RATE), '-duration', `${SECONDS}s`, '-conns', '64'], { encoding: 'utf8', timeout: (SECONDS + 120) * 1000, maxBuffer: 1 << 20 }, (err, stdout) => (err instanceof Error ? reject(err) : resolve(stdout)));
    });
    const load = JSON.parse(out) as LoadResult;
    while (samples.at(-1)!.exported < load.responses && Date.now() - t0 < (load.seconds + 60) * 1000) await new Promise((r) => setTimeout(r, 200));
    sampling = false;
    await sampler;
    const allExportedAt = samples.find((x) => x.exported >= load.responses)?.at ?? Date.now();
    const exportSeconds = (allExportedAt - t0) / 1000;
    const maxQueued = Math.max(...samples.map((x) => x.queued));
    const counter = new SpanCounter(collector.outputPath, SERVICE);
    // the last spans leave within the schedule delay (1 s) plus an export round trip
    const deadline = Date.now() + 60_000;
    while ((await counter.update()) < load.responses && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
    await new Promise((r) => setTimeout(r, 2000));
    const received = await counter.update();
    const metrics = (await httpRequest(metricsUrl)).body;
    const exported = metricSum(metrics, /^gotrail_spans_exported_total (\d+)/gm);
    const dropped = metricSum(metrics, /^gotrail_spans_dropped_total\{[^}]*\} (\d+)/gm);
    const lost = metricSum(metrics, /^gotrail_events_lost_total\{[^}]*\} (\d+)/gm);
    const failures = metricSum(metrics, /^gotrail_export_failures_total (\d+)/gm);
    const counters = metrics.split('\n').filter((l) => /^gotrail_(events_lost_total|spans_dropped_total|export_failures_total|spans_exported_total)/.test(l)).join('; ');
    process.stderr.write(
      `throughput: ${load.sent} requests at ${RATE}/s asked, ${load.achievedRate.toFixed(0)}/s reached ` +
        `(sent in ${load.sendSeconds.toFixed(1)} s, answered in ${load.seconds.toFixed(1)} s, p50 ${load.p50us} µs, p99 ${load.p99us} µs); ` +
        `${received} spans received; the agent had exported them all ${exportSeconds.toFixed(1)} s after the start ` +
        `(${(load.responses / exportSeconds).toFixed(0)} spans/s; at most ${maxQueued} spans queued); ${counters}\n`,
    );
    assert.equal(load.transportErrors, 0, 'every request was answered');
    assert.equal(load.responses, load.sent);
    assert.equal(received, load.responses, `one span per answered request (${counters})`);
    assert.equal(exported, received, 'the agent counts what the collector received');
    assert.equal(dropped, 0, counters);
    assert.equal(lost, 0, counters);
    assert.equal(failures, 0, counters);
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0);
    await collector.stop();
  }
});
