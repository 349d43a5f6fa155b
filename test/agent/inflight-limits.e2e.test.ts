/**
 * More calls open at once than the in-flight maps hold: every span lost is
 * counted once, with its reason, and none is lost silently. The maps are
 * made small (--max-inflight's option) so that a test server can exceed them;
 * the server holds its calls open until it gets SIGUSR1.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createMetrics } from '../../daemon/agent/metrics.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, type GoServer } from '../support/go-server.ts';
import { metricSum } from '../support/metrics.ts';
import { HttpServerInflightOffsets, HttpInflightState } from '../../daemon/generated/layouts.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { startBusyLoad } from '../support/busy.ts';
import { until } from '../support/wait.ts';

const work = join(repoRoot, 'build', 'test-inflight-limits');
const MAP_SIZE = 16;
const CALLS = 40;

/** GET through `agent` (connections kept open between requests); resolves with the status. */
function getVia(agent: HttpAgent, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** GET without connection reuse (each call its own connection, so all are open at once); resolves with the status. */
function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('in-flight maps full', { skip: skipUnlessBpf() }, () => {
  let agent: Agent;
  const spans: ReadableSpan[] = [];
  const pidSpans = (pid: number): ReadableSpan[] => spans.filter((s) => s.resource.attributes['process.pid'] === pid);

  before(async () => {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    agent = new Agent(createLogger('warn'), {
      skipOwnRequests: false,
      exporter: createExporter({ kind: 'none' }),
      // only this test's server: its counters are the agent's own
      selection: { includeExe: [join(work, '*')] },
      mapSizes: { inflight: MAP_SIZE },
      onSpan: (s) => spans.push(s),
      batcher: { scheduledDelayMillis: 100 },
    });
    await agent.start();
  });

  after(async () => {
    await agent?.stop();
  });

  /** Starts a copy of the test server, traced; counts the calls it holds. */
  async function holdingServer(name: string): Promise<{ server: GoServer; held: () => number }> {
    const bin = join(work, name);
    copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
    const server = await startGoServer(bin);
    let held = 0;
    server.child.stdout!.on('data', (d: Buffer) => (held += d.toString().split('\n').filter((l) => l === 'held').length));
    await until('traced', () => agent.tracedPids().includes(server.pid));
    return { server, held: () => held };
  }

  const counters = (): Record<string, bigint> => agent.runtime()!.counters();
  /** The net/http server's records by state: a record outlives its request, idle until its connection's next one. */
  const records = (): { active: number; idle: number } => {
    const obj = agent.runtime()!.obj;
    const out = { active: 0, idle: 0 };
    for (const k of obj.mapKeys('gt_http_server_inflight')) {
      const v = obj.mapLookup('gt_http_server_inflight', k);
      if (v) out[v.readUInt32LE(HttpServerInflightOffsets.state) === HttpInflightState.GT_HTTP_INFLIGHT_ACTIVE ? 'active' : 'idle']++;
    }
    return out;
  };
  const delta = (after: Record<string, bigint>, before: Record<string, bigint>, name: string): number => Number((after[name] ?? 0n) - (before[name] ?? 0n));

  test(`${CALLS} calls open at once with room for ${MAP_SIZE}: ${MAP_SIZE} spans, ${CALLS - MAP_SIZE} counted as inflight_full, on busy cores`, async (t) => {
    const { server, held } = await holdingServer('refused');
    t.after(() => server.stop());
    const c0 = counters();
    const busy = startBusyLoad();
    let statuses: number[];
    try {
      const calls = Array.from({ length: CALLS }, () => get(`${server.url}/hold`));
      await until(`${CALLS} calls held`, () => held() === CALLS, 30_000);
      const rt = agent.runtime()!;
      assert.equal(rt.obj.mapCount('gt_http_server_inflight'), MAP_SIZE, 'the map is full');
      assert.equal(delta(counters(), c0, 'inflight_full'), CALLS - MAP_SIZE, 'each call refused is counted at its entry');
      server.child.kill('SIGUSR1');
      statuses = await Promise.all(calls);
    } finally {
      await busy.stop();
    }
    assert.deepEqual([...new Set(statuses)], [200], 'the traced program is unharmed');
    await agent.flush();
    await until(`${MAP_SIZE} spans`, () => pidSpans(server.pid).length >= MAP_SIZE, 20_000);
    const c1 = counters();
    assert.equal(pidSpans(server.pid).length, MAP_SIZE);
    assert.equal(delta(c1, c0, 'inflight_full'), CALLS - MAP_SIZE);
    assert.equal(delta(c1, c0, 'no_entry'), 0, 'the returns of refused calls are not counted a second time');
    assert.equal(delta(c1, c0, 'no_entry_preattach'), 0);
    assert.equal(pidSpans(server.pid).length + delta(c1, c0, 'inflight_full'), CALLS, 'every call is a span or a counted loss');
    const text = await createMetrics(agent).metrics();
    assert.equal(metricSum(text, 'gotrail_events_lost_total', { reason: 'inflight_full' }), CALLS - MAP_SIZE, 'exposed as a metric');
    assert.equal(records().active, 0, 'no call left in flight');
    // each call had a connection of its own: its goroutine's record goes when the connection ends
    await until('the connections\' records removed', () => agent.runtime()!.obj.mapCount('gt_http_server_inflight') === 0, 20_000);
  });

  test('calls whose return never comes are swept from a full map by age, each counted once as inflight_expired', async (t) => {
    const { server, held } = await holdingServer('expired');
    t.after(() => server.stop());
    const rt = agent.runtime()!;
    const c0 = counters();
    const calls = Array.from({ length: MAP_SIZE }, () => get(`${server.url}/hold`));
    await until(`${MAP_SIZE} calls held`, () => held() === MAP_SIZE, 30_000);
    assert.equal(rt.obj.mapCount('gt_http_server_inflight'), MAP_SIZE);
    // the held calls stand for calls that never return (a handler blocked forever)
    agent.setInflightMaxAge(1000);
    try {
      await until('the stale calls swept', () => rt.obj.mapCount('gt_http_server_inflight') === 0, 20_000);
      assert.equal(delta(counters(), c0, 'inflight_expired'), MAP_SIZE, 'each removal counted');
      // the map has room again: a new call is traced
      const fresh = get(`${server.url}/hold`);
      await until('the new call held', () => held() === MAP_SIZE + 1, 30_000);
      server.child.kill('SIGUSR1');
      const statuses = await Promise.all([...calls, fresh]);
      assert.deepEqual([...new Set(statuses)], [200]);
    } finally {
      agent.setInflightMaxAge(undefined);
    }
    await agent.flush();
    await until('the new call\'s span', () => pidSpans(server.pid).length >= 1, 20_000);
    const c1 = counters();
    assert.equal(pidSpans(server.pid).length, 1, 'only the call that was in the map when it returned makes a span');
    assert.equal(delta(c1, c0, 'inflight_expired'), MAP_SIZE);
    assert.equal(delta(c1, c0, 'no_entry'), 0, 'the late returns of swept calls are not counted a second time');
    assert.equal(delta(c1, c0, 'inflight_full'), 0);
    const text = await createMetrics(agent).metrics();
    assert.equal(metricSum(text, 'gotrail_events_lost_total', { reason: 'inflight_expired' }), MAP_SIZE, 'exposed as a metric');
  });

  test('idle records of keep-alive connections are swept from a map at least half full, uncounted, and their connections\' next requests traced', async (t) => {
    const { server, held } = await holdingServer('idle');
    t.after(() => server.stop());
    const rt = agent.runtime()!;
    const CONNS = 12; // at least half of MAP_SIZE
    const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: CONNS });
    t.after(() => keepAlive.destroy());
    const c0 = counters();
    const idle0 = rt.inflightIdleRemoved;
    const calls = Array.from({ length: CONNS }, () => getVia(keepAlive, `${server.url}/hold`));
    await until(`${CONNS} calls held`, () => held() === CONNS, 30_000);
    server.child.kill('SIGUSR1');
    assert.deepEqual([...new Set(await Promise.all(calls))], [200]);
    await agent.flush();
    await until(`${CONNS} spans`, () => pidSpans(server.pid).length >= CONNS, 20_000);
    assert.deepEqual(records(), { active: 0, idle: CONNS }, 'each open connection keeps its goroutine\'s record, idle');
    agent.setInflightMaxAge(1000);
    try {
      await until('the idle records swept', () => rt.obj.mapCount('gt_http_server_inflight') === 0, 20_000);
    } finally {
      agent.setInflightMaxAge(undefined);
    }
    assert.equal(rt.inflightIdleRemoved - idle0, CONNS);
    assert.equal(metricSum(await createMetrics(agent).metrics(), 'gotrail_inflight_idle_records_removed_total', {}), idle0 + CONNS, 'exposed as a metric');
    // the connections are still open: their next requests make records again
    for (let i = 0; i < CONNS; i++) assert.equal(await getVia(keepAlive, `${server.url}/hello`), 200);
    await agent.flush();
    await until(`${2 * CONNS} spans`, () => pidSpans(server.pid).length >= 2 * CONNS, 20_000);
    const c1 = counters();
    assert.equal(pidSpans(server.pid).length, 2 * CONNS, 'every request a span');
    for (const reason of ['inflight_expired', 'inflight_full', 'no_entry', 'no_entry_preattach']) assert.equal(delta(c1, c0, reason), 0, `${reason}: an idle record is no call`);
    keepAlive.destroy();
    await until('the closed connections\' records removed', () => rt.obj.mapCount('gt_http_server_inflight') === 0, 20_000);
  });

  test('the sweep runs after activity and while a map is at least half full, never on its own while nothing happens', async (t) => {
    const { server } = await holdingServer('quiet');
    t.after(() => server.stop());
    const rt = agent.runtime()!;
    let passes = 0;
    const sweep = rt.sweepInflight.bind(rt);
    rt.sweepInflight = (...a: Parameters<typeof sweep>) => {
      passes++;
      return sweep(...a);
    };
    t.after(() => {
      rt.sweepInflight = sweep;
    });
    agent.setInflightMaxAge(1000); // a pass 250 ms after activity
    try {
      await until('the pass setting the age arms', () => passes >= 1, 10_000);
      // nothing traced happens (the server is idle, the maps nearly empty): no further pass
      const quiet = passes;
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(passes, quiet, 'no pass while nothing happened');
      // a request's span is activity: one pass follows
      assert.equal(await get(`${server.url}/hello`), 200);
      await until('a pass after the span', () => passes > quiet, 10_000);
    } finally {
      agent.setInflightMaxAge(undefined);
    }
  });
});
