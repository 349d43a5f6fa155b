/**
 * What the agent's JavaScript thread spends per HTTP server span on its way
 * from a ring-buffer record to OTLP bytes waiting for export, without the
 * kernel, the ring buffer or the HTTP client: hand-built net/http server
 * events (the generated layout) go through the probe's handleEvent, as the
 * agent dispatches them, and each span through the OTLP encoder's
 * prepareOnto, as the export queue takes it.
 *
 *   deploy/node bench/span-path.ts [--events 200] [--peers 32] [--paths 4] [--rounds 10] [--decode-only]
 *
 * Prints, per span, the CPU time (process.cpuUsage, best of the rounds) and
 * the bytes allocated on V8's heap (the heap's growth over a loop run inside
 * a young generation emptied before and large enough that no collection
 * runs meanwhile; the script restarts itself with such a young generation). The allocation is
 * what the agent's collections are made of: at 10,000 spans/s every 100
 * bytes per span is 1 MB/s of garbage. `--peers` clients and `--paths`
 * paths take turns, as a server's kept-alive connections do. The running
 * agent: bench/agent-ab.ts.
 */
import { spawnSync } from 'node:child_process';
import { getHeapStatistics } from 'node:v8';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { benchArgs } from './lib/args.ts';
import { httpServerProbe } from '../daemon/probes/go/net/http/server/descriptor.ts';
import { encodeHttpServerEvent, EventType, HTTP_SERVER_EVENT_SIZE, HttpLimits, HttpRouteLimits, HttpRouteSource, SpanFlags } from '../daemon/generated/layouts.ts';
import { HttpRouteBound } from '../daemon/spans/http-route.ts';
import { MonotonicClock } from '../daemon/spans/clock.ts';
import type { EventContext } from '../daemon/probes/types.ts';
import { OtlpTraceEncoder, type QueuedSpan } from '../daemon/export/otlp-proto.ts';

const YOUNG_MB = '64';
if (!process.execArgv.includes(`--max-semi-space-size=${YOUNG_MB}`)) {
  const r = spawnSync(process.execPath, [`--max-semi-space-size=${YOUNG_MB}`, `--min-semi-space-size=${YOUNG_MB}`, '--expose-gc', ...process.execArgv, import.meta.filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const { values } = benchArgs(import.meta.filename, {
  options: {
    events: { type: 'string', default: '200' },
    peers: { type: 'string', default: '32' },
    paths: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '10' },
    'decode-only': { type: 'boolean', default: false },
  },
});
const events = Number(values.events);
const peers = Number(values.peers);
const paths = Number(values.paths);
const rounds = Number(values.rounds);
const decodeOnly = values['decode-only'];

function field(s: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(s, 'utf8');
  return b;
}

// records as a ring-buffer batch holds them: u32 length, record, 8-byte aligned
const stride = (4 + HTTP_SERVER_EVENT_SIZE + 7) & ~7;
const batch = Buffer.alloc(stride * events);
for (let i = 0; i < events; i++) {
  const remote = `10.0.0.7:${40000 + (i % peers)}`;
  const path = `/api/items/${i % paths}`;
  batch.writeUInt32LE(HTTP_SERVER_EVENT_SIZE, i * stride);
  encodeHttpServerEvent({
    hdr: { type: EventType.GT_EVENT_HTTP_SERVER, size: HTTP_SERVER_EVENT_SIZE, tgid: 42, binary_id: 1, cpu: 0, goid: BigInt(i) },
    start_ns: 1_000_000_000n + BigInt(i) * 1000n, end_ns: 1_000_250_000n + BigInt(i) * 1000n,
    method_len: 3, path_len: path.length, host_len: 14, remote_len: remote.length, status: 200, flags: 0,
    span: { trace_id: Buffer.alloc(16, i + 1), span_id: Buffer.alloc(8, i + 2), parent_span_id: Buffer.alloc(8), flags: SpanFlags.GT_SPAN_SAMPLED, reserved: 0 },
    method: field('GET', HttpLimits.GT_HTTP_METHOD_MAX), path: field(path, HttpLimits.GT_HTTP_PATH_MAX),
    host: field('10.0.0.1:8080', HttpLimits.GT_HTTP_HOST_MAX), remote: field(remote, HttpLimits.GT_HTTP_REMOTE_MAX),
    tracestate_len: 0, proto_major: 1, proto_minor: 1, tracestate: field('', HttpLimits.GT_HTTP_TRACESTATE_MAX),
    route: { len: 0, source: HttpRouteSource.GT_HTTP_ROUTE_NONE, route: field('', HttpRouteLimits.GT_HTTP_ROUTE_MAX) },
  }, batch, i * stride + 4);
}

const encoder = new OtlpTraceEncoder();
const resource = resourceFromAttributes({ 'service.name': 'bench' });
let tail: QueuedSpan | undefined;
let spans = 0;
const ctx: EventContext = {
  clock: new MonotonicClock(),
  resourceOf: () => resource,
  emit: (s) => {
    spans++;
    if (!decodeOnly) tail = encoder.prepareOnto(tail, s);
  },
  problem: (reason) => {
    throw new Error(`event problem: ${reason}`);
  },
  routes: new HttpRouteBound(),
};
const walk = (): void => {
  for (let i = 0; i < events; i++) httpServerProbe.handleEvent(batch, i * stride + 4, ctx);
};

// warm-up: V8 optimizes the path
for (let r = 0; r < 2000; r++) walk();
if (spans !== 2000 * events) throw new Error(`${spans} spans from ${2000 * events} events`);

let bytes = Infinity;
const gc = (globalThis as { gc?: () => void }).gc!;
for (let r = 0; r < rounds; r++) {
  // an empty young generation: the loop below then runs without a collection
  gc();
  const before = getHeapStatistics().used_heap_size;
  for (let k = 0; k < 50; k++) walk();
  bytes = Math.min(bytes, (getHeapStatistics().used_heap_size - before) / (50 * events));
}
let ns = Infinity;
for (let r = 0; r < rounds; r++) {
  const c0 = process.cpuUsage();
  for (let k = 0; k < 200; k++) walk();
  const c = process.cpuUsage(c0);
  ns = Math.min(ns, ((c.user + c.system) * 1000) / (200 * events));
}
console.log(`${decodeOnly ? 'decode' : 'decode + prepare'}: ${ns.toFixed(0)} ns CPU and ${bytes.toFixed(0)} bytes of V8 heap per span (best of ${rounds} rounds; ${events} events, ${peers} peers, ${paths} paths)`);
