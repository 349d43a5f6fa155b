/**
 * How many events per second the agent's user-space path can turn into
 * spans and serialize for OTLP, on one core: decoding (generated layouts),
 * span assembly and the OTLP protobuf serializer, fed with event batches laid
 * out as the ring buffer delivers them. No BPF is involved, so this runs
 * anywhere and bounds the agent's throughput independently of the kernel.
 *
 * With --export it also drives the spans through the export queue
 * (SpanBatcher) and the OTLP/HTTP exporter into a real OpenTelemetry
 * Collector (built by set-up), as fast as the queue accepts them (a producer
 * that waits on `full`/`onSpace`, as the ring-buffer consumer does), for each
 * number of concurrent exports and batch size asked, and prints spans/s
 * delivered.
 *
 *   deploy/node bench/agent-throughput.ts [--events 200000] [--export]
 *        [--concurrency 1,2,4] [--batch 512,2048]
 */
import { benchArgs } from './lib/args.ts';
import { OtlpProtoTraceExporter } from '../daemon/export/otlp-exporter.ts';
import { OtlpTraceEncoder } from '../daemon/export/otlp-proto.ts';
import { SpanBatcher } from '../daemon/export/batcher.ts';
import { createLogger } from '../daemon/util/log.ts';
import { startCollector } from '../test/support/collector.ts';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { encodeHttpServerEvent, EventType, HTTP_SERVER_EVENT_SIZE, HttpLimits, HttpRouteLimits, SpanFlags } from '../daemon/generated/layouts.ts';
import { httpServerProbe } from '../daemon/probes/go/net/http/server/descriptor.ts';
import { MonotonicClock } from '../daemon/spans/clock.ts';
import type { EventContext } from '../daemon/probes/types.ts';
import { HttpRouteBound } from '../daemon/spans/http-route.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    events: { type: 'string', default: '200000' },
    export: { type: 'boolean', default: false },
    concurrency: { type: 'string', default: '1,2,4' },
    batch: { type: 'string', default: '512,2048' },
  },
});
const total = Number(values.events);

function field(s: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(s, 'utf8');
  return b;
}

// one batch of 256 records, framed as the addon frames them (u32 length + record, 8-byte aligned)
const perBatch = 256;
const frame = (4 + HTTP_SERVER_EVENT_SIZE + 7) & ~7;
const batch = Buffer.alloc(frame * perBatch + 8);
for (let i = 0; i < perBatch; i++) {
  const off = i * frame;
  batch.writeUInt32LE(HTTP_SERVER_EVENT_SIZE, off);
  const path = `/api/items/${i}`;
  encodeHttpServerEvent({
    hdr: { type: EventType.GT_EVENT_HTTP_SERVER, size: HTTP_SERVER_EVENT_SIZE, tgid: 1000 + (i % 8), binary_id: 1, cpu: 0, goid: BigInt(i) },
    start_ns: 1_000_000_000n + BigInt(i) * 1000n, end_ns: 1_000_500_000n + BigInt(i) * 1000n,
    method_len: 3, path_len: path.length, host_len: 14, remote_len: 15, status: i % 10 ? 200 : 503, flags: 0,
    span: { trace_id: Buffer.alloc(16, i + 1), span_id: Buffer.alloc(8, i + 2), parent_span_id: Buffer.alloc(8), flags: SpanFlags.GT_SPAN_SAMPLED, reserved: 0 },
    method: field('GET', HttpLimits.GT_HTTP_METHOD_MAX), path: field(path, HttpLimits.GT_HTTP_PATH_MAX),
    host: field('127.0.0.1:8080', HttpLimits.GT_HTTP_HOST_MAX), remote: field('127.0.0.1:51234', HttpLimits.GT_HTTP_REMOTE_MAX),
    tracestate_len: 0, proto_major: 1, proto_minor: 1, tracestate: Buffer.alloc(HttpLimits.GT_HTTP_TRACESTATE_MAX),
    route: { len: 0, source: 0, route: Buffer.alloc(HttpRouteLimits.GT_HTTP_ROUTE_MAX) },
  }, batch, off + 4);
}

const resources = new Map(Array.from({ length: 8 }, (_, i) => [1000 + i, resourceFromAttributes({ 'service.name': `svc-${i}`, 'process.pid': 1000 + i })]));
const out: ReadableSpan[] = [];
const ctx: EventContext = {
  clock: new MonotonicClock(),
  resourceOf: (tgid) => resources.get(tgid),
  emit: (s) => out.push(s),
  problem: (r) => {
    throw new Error(r);
  },
  routes: new HttpRouteBound(),
};

function decodeBatch(): void {
  if (!httpServerProbe.handleEvent) throw new Error('the server probe decodes no events');
  for (let off = 0; off + 4 <= batch.length;) {
    const len = batch.readUInt32LE(off);
    if (!len) break;
    httpServerProbe.handleEvent(batch, off + 4, ctx);
    off = (off + 4 + len + 7) & ~7;
  }
}

// warm up the JIT
for (let i = 0; i < 50; i++) decodeBatch();
out.length = 0;

const encoder = new OtlpTraceEncoder();
// CPU time of this thread, in ns: on a shared host the wall clock counts the
// time other processes held the core; the CPU time is what the path costs.
const cpuNs = (): number => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) * 1000;
};
const t = process.hrtime.bigint();
const c0 = cpuNs();
const batches = Math.ceil(total / perBatch);
let serializeNs = 0;
let bytes = 0;
for (let b = 0; b < batches; b++) {
  decodeBatch();
  if (out.length >= 512) {
    const s0 = cpuNs();
    bytes += encoder.encode(out.splice(0)).length;
    serializeNs += cpuNs() - s0;
  }
}
const cpuTotalNs = cpuNs() - c0;
const elapsedNs = Number(process.hrtime.bigint() - t);
const n = batches * perBatch;
const decodeNs = cpuTotalNs - serializeNs;
const row = (stage: string, ns: number): string => `| ${stage.padEnd(29)} | ${Math.round(n / (ns / 1e9)).toString().padStart(10)} | ${(ns / n / 1000).toFixed(2).padStart(8)} |`;
const lines = [
  `agent user-space path, one core, ${n} net/http server events in batches of ${perBatch} (CPU time of the thread)`,
  '',
  `| stage                         | events/s   | µs/event |`,
  `|-------------------------------|------------|----------|`,
  row('decode + span assembly', decodeNs),
  row('OTLP protobuf encoding', serializeNs),
  row('both', cpuTotalNs),
  '',
  `serialized ${(bytes / n).toFixed(0)} bytes per span; wall clock ${Math.round(n / (elapsedNs / 1e9))} events/s (${Math.round((100 * cpuTotalNs) / elapsedNs)} % of the wall time on the CPU)`,
];
process.stdout.write(lines.join('\n') + '\n');

if (values.export) {
  // spans of the decoded batch, reused: the exporter serializes them afresh each time
  out.length = 0;
  decodeBatch();
  const template = out.splice(0);
  const collector = await startCollector({ logLevel: 'warn' });
  const rows: string[] = [];
  try {
    for (const batchSize of values.batch.split(',').map(Number)) {
      for (const concurrency of values.concurrency.split(',').map(Number)) {
        const exporter = new OtlpProtoTraceExporter({ url: `${collector.otlpHttpEndpoint}/v1/traces` });
        const batcher = new SpanBatcher(exporter, createLogger('warn'), { maxExportBatchSize: batchSize, maxConcurrentExports: concurrency });
        const t0 = process.hrtime.bigint();
        const cpu0 = process.cpuUsage();
        let pushed = 0;
        // a producer that stops while the queue is full, as the ring-buffer consumer does
        while (pushed < total) {
          while (!batcher.full && pushed < total) batcher.push(template[pushed++ % template.length]!);
          if (batcher.full) await new Promise<void>((r) => { const off = batcher.onSpace(() => { off(); r(); }); });
        }
        await batcher.forceFlush();
        const secs = Number(process.hrtime.bigint() - t0) / 1e9;
        const cpu = process.cpuUsage(cpu0);
        const st = batcher.stats;
        await batcher.shutdown();
        const dropped = st.dropped.queue_full + st.dropped.shutdown;
        rows.push(`| ${String(batchSize).padStart(10)} | ${String(concurrency).padStart(11)} | ${Math.round(st.exported / secs).toString().padStart(11)} | ${((cpu.user + cpu.system) / st.exported).toFixed(2).padStart(14)} | ${String(st.failed).padStart(8)} | ${String(dropped).padStart(7)} |`);
      }
    }
  } finally {
    await collector.stop();
  }
  process.stdout.write([
    '',
    `export: ${total} spans per row through SpanBatcher + OTLP/HTTP protobuf into a real collector (file exporter), same host; CPU µs/span: this process's CPU (all threads; the collector's not counted) per span exported`,
    '',
    '| batch size | concurrency | spans/s     | CPU µs/span    | failures | dropped |',
    '|------------|-------------|-------------|----------------|----------|---------|',
    ...rows,
  ].join('\n') + '\n');
}
