/**
 * The agent's user-space span path at a steady rate, as it runs in the
 * agent: every consume interval (DEFAULT_CONSUME_INTERVAL_MS) one batch of HTTP server events,
 * framed as the ring buffer delivers them, is decoded by the probe's
 * handler, and each span goes through the export queue (SpanBatcher, the
 * agent's defaults) and the OTLP/HTTP exporter into a real OpenTelemetry
 * Collector. Prints this process's CPU time (all threads: JavaScript, V8's
 * garbage collection and compiler threads, the HTTP client) per span
 * exported. No BPF and no other process is involved, so two builds can be
 * compared on a busy host without the node-wide noise of a running agent
 * (other processes' exec events, /proc scans); run them in alternation.
 *
 *   deploy/node bench/agent-paced.ts [--rate 10000] [--seconds 10]
 */
import { benchArgs } from './lib/args.ts';
import { OtlpProtoTraceExporter } from '../daemon/export/otlp-exporter.ts';
import { SpanBatcher } from '../daemon/export/batcher.ts';
import { createLogger } from '../daemon/util/log.ts';
import { startCollector } from '../test/support/collector.ts';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { encodeHttpServerEvent, EventType, HTTP_SERVER_EVENT_SIZE, HttpLimits, HttpRouteLimits, SpanFlags } from '../daemon/generated/layouts.ts';
import { httpServerProbe } from '../daemon/probes/go/net/http/server/descriptor.ts';
import { MonotonicClock } from '../daemon/spans/clock.ts';
import type { EventContext } from '../daemon/probes/types.ts';
import { HttpRouteBound } from '../daemon/spans/http-route.ts';
import { DEFAULT_CONSUME_INTERVAL_MS } from '../daemon/agent/bpf-runtime.ts';

const { values } = benchArgs(import.meta.filename, { options: { rate: { type: 'string', default: '10000' }, seconds: { type: 'string', default: '10' } } });
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const TICK_MS = DEFAULT_CONSUME_INTERVAL_MS;
const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000));

function field(s: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(s, 'utf8');
  return b;
}

const frame = (4 + HTTP_SERVER_EVENT_SIZE + 7) & ~7;
let seq = 0;
/** A fresh batch of `n` events stamped now, as the addon hands one over (a new Buffer each time). */
function batchOf(n: number): Buffer {
  const batch = Buffer.alloc(frame * n);
  const now = process.hrtime.bigint();
  for (let i = 0; i < n; i++, seq++) {
    const off = i * frame;
    batch.writeUInt32LE(HTTP_SERVER_EVENT_SIZE, off);
    const path = '/hello';
    // a few dozen client connections, as a load generator keeps
    const remote = `127.0.0.1:${40000 + (seq % 64)}`;
    encodeHttpServerEvent({
      hdr: { type: EventType.GT_EVENT_HTTP_SERVER, size: HTTP_SERVER_EVENT_SIZE, tgid: 1000, binary_id: 1, cpu: 0, goid: BigInt(seq) },
      start_ns: now - 100_000n, end_ns: now - 50_000n,
      method_len: 3, path_len: path.length, host_len: 14, remote_len: remote.length, status: 200, flags: 0,
      span: { trace_id: Buffer.from(Array.from({ length: 16 }, (_, k) => (seq * 31 + k) & 0xff)), span_id: Buffer.alloc(8, seq & 0xff), parent_span_id: Buffer.alloc(8), flags: SpanFlags.GT_SPAN_SAMPLED, reserved: 0 },
      method: field('GET', HttpLimits.GT_HTTP_METHOD_MAX), path: field(path, HttpLimits.GT_HTTP_PATH_MAX),
      host: field('127.0.0.1:8080', HttpLimits.GT_HTTP_HOST_MAX), remote: field(remote, HttpLimits.GT_HTTP_REMOTE_MAX),
      tracestate_len: 0, proto_major: 1, proto_minor: 1, tracestate: Buffer.alloc(HttpLimits.GT_HTTP_TRACESTATE_MAX),
      route: { len: 0, source: 0, route: Buffer.alloc(HttpRouteLimits.GT_HTTP_ROUTE_MAX) },
    }, batch, off + 4);
  }
  return batch;
}

// made before the clock starts: building events is not the agent's work
const ticks = Math.round((seconds * 1000) / TICK_MS);
const batches = Array.from({ length: 8 }, () => batchOf(perTick));

const collector = await startCollector({ logLevel: 'warn' });
try {
  const exporter = new OtlpProtoTraceExporter({ url: `${collector.otlpHttpEndpoint}/v1/traces` });
  const batcher = new SpanBatcher(exporter, createLogger('warn'));
  const resource = resourceFromAttributes({ 'service.name': 'httpserver', 'process.pid': 1000 });
  const ctx: EventContext = {
    clock: new MonotonicClock(),
    resourceOf: () => resource,
    emit: (s) => batcher.push(s),
    problem: (r) => {
      throw new Error(r);
    },
    routes: new HttpRouteBound(),
  };
  const handle = (batch: Buffer): void => {
    for (let off = 0; off + 4 <= batch.length;) {
      const len = batch.readUInt32LE(off);
      if (!len) break;
      httpServerProbe.handleEvent(batch, off + 4, ctx);
      off = (off + 4 + len + 7) & ~7;
    }
  };
  const run = async (n: number): Promise<{ spans: number; cpuUs: number }> => {
    const before = batcher.stats.exported;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      // a copy per tick: the addon hands over a new Buffer each time
      handle(Buffer.from(batches[i % batches.length]!));
      const wait = t0 + (i + 1) * TICK_MS - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    // the last partial batch leaves after the queue's delay (1 s); its CPU counts too
    await new Promise((r) => setTimeout(r, 1500));
    await batcher.forceFlush();
    const c = process.cpuUsage(c0);
    return { spans: batcher.stats.exported - before, cpuUs: c.user + c.system };
  };
  // warm-up: the JIT compiles the path once
  await run(Math.round(3000 / TICK_MS));
  const r = await run(ticks);
  console.log(JSON.stringify({ rate, seconds, spans: r.spans, cpuUsPerSpan: r.cpuUs / r.spans, failed: batcher.stats.failed, dropped: batcher.stats.dropped }));
  await batcher.shutdown();
} finally {
  await collector.stop();
}
