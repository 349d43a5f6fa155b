/**
 * `gotrail demo` end to end: the three sample services (shop over HTTP →
 * orders over gRPC → inventory over HTTP) really traced, then the system
 * with a database, a cache and a queue (web over HTTP → checkout over gRPC →
 * PostgreSQL, Redis, Kafka → fulfilment → Redis, on real servers), and every
 * span a user should see printed in the trace trees, with the right kinds,
 * names, statuses and parents.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { runDemo } from '../../daemon/cli/demo.ts';
import { repoRoot } from '../support/agent-process.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const svc = (s: ReadableSpan): string => String(s.resource.attributes['service.name']);
const pid = (s: ReadableSpan): number => Number(s.resource.attributes['process.pid']);
const describe = (s: ReadableSpan): string => `${svc(s)} ${SpanKind[s.kind]} ${s.name} ${JSON.stringify(s.attributes)}`;

test('the demo prints whole traces of shop → orders (gRPC) → inventory, and of web → checkout → PostgreSQL, Redis, Kafka → fulfilment', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  let printed = '';
  const spans: ReadableSpan[] = [];
  const code = await runDemo([], (s) => (printed += s), { onSpan: (s) => spans.push(s) });
  assert.equal(code, 0, printed);
  assert.doesNotMatch(printed, /part two skipped|not every span/, printed);
  const all = spans.map(describe).join('\n');
  const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
  const parentOf = (s: ReadableSpan): ReadableSpan | undefined => byId.get(s.parentSpanContext?.spanId ?? '');
  const pick = (service: string, kind: SpanKind, name: string): ReadableSpan[] => spans.filter((s) => svc(s) === service && s.kind === kind && s.name === name);

  // shop: one SERVER span per request, each /checkout with one gRPC CLIENT child
  const checkouts = pick('shop', SpanKind.SERVER, 'GET /checkout').filter((s) => s.attributes['url.path'] === '/checkout');
  assert.equal(checkouts.length, 3, `three /checkout SERVER spans on the shop:\n${all}`);
  assert.deepEqual(checkouts.map((s) => s.attributes['http.response.status_code']).sort(), [200, 200, 404]);
  const calls = pick('shop', SpanKind.CLIENT, 'demo.Orders/Place');
  assert.equal(calls.length, 3, `three gRPC CLIENT spans on the shop:\n${all}`);
  for (const c of calls) {
    assert.equal(c.attributes['rpc.system'], 'grpc');
    assert.equal(c.attributes['rpc.service'], 'demo.Orders');
    assert.equal(c.attributes['rpc.method'], 'Place');
    const parent = parentOf(c);
    assert.ok(parent && checkouts.includes(parent), `the gRPC call is the child of its /checkout span: ${describe(c)}`);
  }
  assert.deepEqual(calls.map((c) => c.attributes['rpc.grpc.status_code']).sort(), [0, 0, 5]);
  assert.equal(calls.filter((c) => c.status.code === SpanStatusCode.ERROR).length, 1, 'NotFound is an error for the client');

  // orders: one gRPC SERVER span per call, each with one HTTP CLIENT child
  const rpcs = pick('orders', SpanKind.SERVER, 'demo.Orders/Place');
  assert.equal(rpcs.length, 3, `three gRPC SERVER spans on orders:\n${all}`);
  for (const r of rpcs) {
    assert.equal(r.attributes['rpc.system'], 'grpc');
    assert.equal(r.attributes['rpc.service'], 'demo.Orders');
    assert.equal(r.attributes['rpc.method'], 'Place');
    // linked on the node by the HTTP/2 connection and stream id: the shop's call is the parent
    const parent = parentOf(r);
    assert.ok(parent !== undefined && calls.includes(parent), `the RPC is the child of a shop gRPC call: ${describe(r)}`);
  }
  assert.deepEqual(rpcs.map((r) => r.attributes['rpc.grpc.status_code']).sort(), [0, 0, 5]);
  assert.equal(rpcs.filter((r) => r.status.code === SpanStatusCode.ERROR).length, 0, 'NotFound is not a server error');
  const stockCalls = spans.filter((s) => svc(s) === 'orders' && s.kind === SpanKind.CLIENT);
  assert.equal(stockCalls.length, 3, `three HTTP CLIENT spans on orders:\n${all}`);
  for (const c of stockCalls) assert.ok(rpcs.includes(parentOf(c)!), `the HTTP call is the child of its RPC: ${describe(c)}`);

  // inventory: linked to orders' calls by their TCP connection
  const stock = spans.filter((s) => svc(s) === 'inventory');
  assert.equal(stock.length, 3, `three SERVER spans on inventory:\n${all}`);
  for (const s of stock) {
    assert.equal(s.kind, SpanKind.SERVER);
    assert.ok(stockCalls.includes(parentOf(s)!), `inventory's request is the child of orders' call: ${describe(s)}`);
  }
  assert.deepEqual(stock.map((s) => s.attributes['url.path']).sort(), ['/stock/kettle', '/stock/teapot', '/stock/unicorn']);

  // what the user reads: every span in a printed tree, the RPCs with their status
  for (const s of spans) assert.ok(printed.includes(`trace ${s.spanContext().traceId}`), `trace of ${describe(s)} printed`);
  const line = (kind: string, status: string, service: string, suffix = ''): RegExp =>
    new RegExp(`[├└]─ demo\\.Orders/Place  ${kind}  ${status}  [\\d.]+ ms${suffix}   \\[${service} pid \\d+\\]`);
  assert.match(printed, line('CLIENT', 'OK', 'shop'));
  assert.match(printed, line('CLIENT', 'NotFound', 'shop', '  ERROR'));
  assert.match(printed, line('SERVER', 'OK', 'orders'));
  assert.match(printed, line('SERVER', 'NotFound', 'orders'));
  assert.match(printed, /[├└]─ GET \/stock\/ {2}\/stock\/unicorn {2}SERVER {2}404 /);
  assert.equal(new Set(spans.filter((s) => ['shop', 'orders', 'inventory'].includes(svc(s))).map(pid)).size, 3, 'the first part: spans from three processes');
  assert.match(printed, /orders' HTTP calls \(CLIENT\) and inventory's requests \(SERVER\): 3 of 3 linked/);
  assert.match(printed, /shop's gRPC calls and orders' RPCs: all 3 linked by their HTTP\/2 connection and stream id/);

  // part two: three orders, each one trace from web's request to fulfilment's Redis call
  const childrenOf = (p: ReadableSpan, pred: (s: ReadableSpan) => boolean): ReadableSpan[] => spans.filter((s) => parentOf(s) === p && pred(s));
  const one = (p: ReadableSpan, what: string, pred: (s: ReadableSpan) => boolean): ReadableSpan => {
    const c = childrenOf(p, pred);
    assert.equal(c.length, 1, `one ${what} under ${describe(p)}:\n${all}`);
    return c[0]!;
  };
  const orders = spans.filter((s) => svc(s) === 'web' && s.kind === SpanKind.SERVER && s.attributes['url.path'] === '/order');
  assert.equal(orders.length, 3, `three /order SERVER spans on web:\n${all}`);
  for (const o of orders) {
    assert.equal(o.attributes['http.response.status_code'], 200);
    const call = one(o, 'gRPC CLIENT span', (s) => s.kind === SpanKind.CLIENT && s.name === 'shop.Orders/Place');
    const rpc = one(call, 'gRPC SERVER span on checkout', (s) => svc(s) === 'checkout' && s.kind === SpanKind.SERVER && s.name === 'shop.Orders/Place');
    const query = one(rpc, 'SQL query', (s) => s.attributes['db.system.name'] === 'postgresql');
    assert.equal(query.name, 'SELECT items');
    assert.equal(query.kind, SpanKind.CLIENT);
    one(rpc, 'Redis incr', (s) => s.attributes['db.system.name'] === 'redis' && s.attributes['db.operation.name'] === 'incr');
    const produced = one(rpc, 'Kafka PRODUCER span', (s) => s.kind === SpanKind.PRODUCER);
    assert.equal(produced.attributes['messaging.destination.name'], 'orders');
    const consumed = one(produced, 'Kafka CONSUMER span on fulfilment', (s) => svc(s) === 'fulfilment' && s.kind === SpanKind.CONSUMER);
    one(consumed, 'Redis set', (s) => s.attributes['db.system.name'] === 'redis' && s.attributes['db.operation.name'] === 'set');
    for (const s of [o, call, rpc, query, produced, consumed]) assert.equal(s.spanContext().traceId, o.spanContext().traceId);
  }
  assert.match(printed, /[├└]─ SELECT items {2}CLIENT .*\[checkout pid \d+\]/);
  assert.match(printed, /[├└]─ send orders {2}PRODUCER .*\[checkout pid \d+\]/);
  assert.match(printed, /[├└]─ receive orders {2}CONSUMER .*\[fulfilment pid \d+\]/);
  assert.match(printed, /3 orders, 3 traces; fulfilment's reads \(CONSUMER\) and checkout's writes \(PRODUCER\): 3 of 3 linked/);
});

/**
 * Every process descending from `root` now: its name, and its start time
 * (/proc/PID/stat field 22) to tell it from a later one with its pid.
 */
function descendants(root: number): Map<number, { start: string; comm: string }> {
  const parent = new Map<number, number>();
  const start = new Map<number, { start: string; comm: string }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(d), Number(f[1]));
      start.set(Number(d), { start: f[19]!, comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) });
    } catch { /* gone meanwhile */ }
  }
  const out = new Map<number, { start: string; comm: string }>();
  const walk = (p: number): void => {
    for (const [c, pp] of parent) if (pp === p && !out.has(c)) { out.set(c, start.get(c)!); walk(c); }
  };
  walk(root);
  return out;
}

function stillRunning(procs: Map<number, { start: string }>): string[] {
  return [...procs].flatMap(([p, { start }]) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // a zombie has ended; a pid with another start time is another process
      if (f[0] === 'Z' || f[19] !== start) return [];
      return [`${p} ${readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ').slice(0, 120)}`];
    } catch {
      return [];
    }
  });
}

const names = (procs: Map<number, { comm: string }>): string => [...procs.values()].map((p) => p.comm).sort().join(' ');

test('a demo that fails part-way (an error once the second system is traced) stops every program and server it started', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  let printed = '';
  let started = new Map<number, { start: string; comm: string }>();
  await assert.rejects(runDemo([], (s) => (printed += s), {
    onStage: (stage) => {
      if (stage !== 'part-two') return;
      started = descendants(process.pid);
      throw new Error('failure injected once the second system is traced');
    },
  }), /failure injected/);
  // all of it was running: six Go programs, PostgreSQL, Redis and the broker's JVM
  const running = names(started);
  for (const n of ['demo-service', 'shop', 'postgres', 'redis-server', 'java']) assert.ok(running.includes(n), `${n} among the demo's processes: ${running}\n${printed}`);
  assert.deepEqual(stillRunning(started), [], `nothing the demo started is left running:\n${printed}`);
});

test('a demo stopped by SIGTERM stops every program and server it started, and exits with 128 + 15', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  const demo = spawn(join(repoRoot, 'deploy', 'node'), [join(repoRoot, 'daemon', 'cli', 'main.ts'), 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let printed = '';
  demo.stderr.on('data', (d: Buffer) => (printed += d.toString()));
  const exited = new Promise<number | null>((r) => demo.once('exit', (code) => r(code)));
  let started = new Map<number, { start: string; comm: string }>();
  await new Promise<void>((resolve, reject) => {
    demo.stdout.on('data', (d: Buffer) => {
      printed += d.toString();
      // part two placing its orders: every program and server is running
      if (/placing orders/.test(printed) && started.size === 0) {
        started = descendants(demo.pid!);
        demo.kill('SIGTERM');
        resolve();
      }
    });
    void exited.then(() => reject(new Error(`the demo exited before part two:\n${printed}`)));
  });
  assert.equal(await exited, 143, printed);
  const running = names(started);
  for (const n of ['demo-service', 'shop', 'postgres', 'redis-server', 'java']) assert.ok(running.includes(n), `${n} among the demo's processes: ${running}\n${printed}`);
  assert.deepEqual(stillRunning(started), [], `nothing the demo started is left running:\n${printed}`);
  assert.match(printed, /SIGTERM: stopping the services, the servers and the agent/);
});
