/**
 * The overhead budget end to end: a real Go server (test/programs/goroutines)
 * whose probed path is hot — every /fanout request starts 14 goroutines and
 * makes 8 client calls to its own /leaf, i.e. about 70 probe hits — traced
 * by the agent with a 1 % budget, on a busy machine. Its estimated cost is
 * tens of percent of its CPU, far over the budget, so the agent sheds the
 * binary's probes level by level (goroutine ancestry, then client spans,
 * then server spans) until no probe hit is counted at all while the load
 * goes on; once the load stops, the cost the shed levels would add is far
 * under half the budget, and they come back, last shed first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, startAgent } from '../support/agent-process.ts';
import { startBusyLoad } from '../support/busy.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';

interface Status {
  binaries: Array<{ path: string; attached: string[]; shed: string[] }>;
  overhead: { processes: Array<{ pid: number; hits: Record<string, number>; estimatedSeconds: number }> };
  overheadBudget: { budgetPercent: number; binaries: Array<{ path: string; shed: Array<{ level: string; probes: string[]; cpuFraction: number }>; cpuFraction?: number }> };
}

const metric = (text: string, name: string, labels: Record<string, string> = {}): number | undefined => {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
};

const LEVELS = [
  { level: 'enrichment', probes: ['runtime/goroutines'] },
  { level: 'client_spans', probes: ['net/http/client'] },
  { level: 'server_spans', probes: ['net/http/server'] },
];

test('overhead budget: a hot binary over a 1% budget is shed level by level until no probe is hit, and restored last-shed-first once its load stops', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-budget');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'goroutines');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'goroutines'), bin);
  const server = await startGoServer(bin);
  // without the socket-level injection: its sockmap sends go on while every
  // probe is shed (shedding detaches uprobes only), so the estimate's rate
  // would not drop to nothing, though the budget leaves them out
  const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--overhead-budget', '1%', '--overhead-budget-window', '2000', '--no-inject-traceparent']);
  const base = (await agent.metricsUrl()).replace(/\/metrics$/, '');
  const status = async (): Promise<Status> => JSON.parse((await httpRequest(`${base}/status`)).body) as Status;
  const hitsOf = (s: Status): number => Object.values(s.overhead.processes.find((p) => p.pid === server.pid)?.hits ?? {}).reduce((a, b) => a + b, 0);
  const busy = startBusyLoad();
  let loading = true;
  let served = 0;
  const load = Promise.all(Array.from({ length: 4 }, async (_, w) => {
    for (let i = 0; loading; i++) {
      const r = await httpRequest(`${server.url}/fanout/w${w}-${i}`);
      assert.equal(r.status, 200, r.body);
      served++;
    }
  }));
  try {
    await agent.waitTraced(server.pid);
    // each level is shed after a full window over the budget, in order
    const shedAt: number[] = [];
    for (const l of LEVELS) {
      const m = await agent.waitFor(new RegExp(`overhead budget exceeded: probes shed .*level=${l.level}\\b.*`), 60_000);
      shedAt.push(m.index);
      console.log(m[0]);
      assert.match(m[0], new RegExp(`probes=${l.probes.join(',')}`));
      const pct = Number(/cpuPercent=([\d.]+)/.exec(m[0])?.[1]);
      assert.ok(pct > 1, `shed at an estimate of ${pct}% of the server's CPU, over the 1% budget`);
    }
    assert.deepEqual([...shedAt].sort((a, b) => a - b), shedAt, 'shed in the documented order');
    assert.doesNotMatch(agent.log(), /level=inner_spans/, 'a level with no probe on the binary is skipped');
    assert.doesNotMatch(agent.log(), /attached again/, 'nothing restored while the load lasts');

    // everything shed: the load goes on, not a single trap is taken
    await sleep(1500); // detaches finish
    const s1 = await status();
    const mine = s1.binaries.find((b) => b.path === bin)!;
    assert.deepEqual(mine.attached, []);
    assert.deepEqual([...mine.shed].sort(), LEVELS.flatMap((l) => l.probes).sort());
    assert.deepEqual(s1.overheadBudget.binaries.find((b) => b.path === bin)?.shed.map((e) => e.level), LEVELS.map((l) => l.level));
    const served1 = served;
    const hits1 = hitsOf(s1);
    await sleep(3000);
    const s2 = await status();
    assert.ok(served - served1 > 20, `the server kept serving (${served - served1} requests)`);
    assert.equal(hitsOf(s2), hits1, 'no probe hit while every probe is shed');
    const m = (await httpRequest(`${base}/metrics`)).body;
    assert.equal(metric(m, 'gotrail_shed_probes', { service: 'goroutines' }), 3);
    for (const l of LEVELS) {
      assert.equal(metric(m, 'gotrail_probes_shed_total', { reason: 'overhead_budget', service: 'goroutines', level: l.level, probe: l.probes[0]! }), 1);
    }
    assert.equal(metric(m, 'gotrail_overhead_seconds_per_second', { service: 'goroutines' }), 0, 'the estimate dropped to nothing');
  } finally {
    loading = false;
    await load;
    await busy.stop();
  }
  try {
    // load stopped: restored one level at a time, last shed first
    const restoredAt: number[] = [];
    for (const l of [...LEVELS].reverse()) {
      const m = await agent.waitFor(new RegExp(`shed probes attached again .*level=${l.level}\\b.*`), 60_000);
      restoredAt.push(m.index);
      console.log(m[0]);
      assert.match(m[0], new RegExp(`probes=${l.probes.join(',')}`));
    }
    assert.deepEqual([...restoredAt].sort((a, b) => a - b), restoredAt, 'restored last shed first');
    const s = await status();
    const mine = s.binaries.find((b) => b.path === bin)!;
    assert.deepEqual(mine.shed, []);
    assert.deepEqual([...mine.attached].sort(), LEVELS.flatMap((l) => l.probes).sort());
    // read while nothing runs: the request below is a burst that, over a
    // window of 2 s on cores kept busy (a higher calibrated trap cost), can
    // put the idle server over its 1% budget again, and shedding it then is
    // right
    const m = (await httpRequest(`${base}/metrics`)).body;
    assert.equal(metric(m, 'gotrail_shed_probes', { service: 'goroutines' }), 0);
    assert.equal(metric(m, 'gotrail_probes_restored_total', { service: 'goroutines', level: 'enrichment', probe: 'runtime/goroutines' }), 1);
    // traced again: one /fanout is 9 requests served (entry and return each)
    await sleep(1100);
    const before = (await status()).overhead.processes.find((p) => p.pid === server.pid)!.hits;
    const r = await httpRequest(`${server.url}/fanout/again`);
    assert.equal(r.status, 200);
    await sleep(1100);
    const after = (await status()).overhead.processes.find((p) => p.pid === server.pid)!.hits;
    assert.equal((after['http_server_entry'] ?? 0) - (before['http_server_entry'] ?? 0), 9);
    assert.equal((after['http_client_entry'] ?? 0) - (before['http_client_entry'] ?? 0), 8);
    assert.ok((after['runtime_newproc_runqput'] ?? 0) - (before['runtime_newproc_runqput'] ?? 0) >= 14, `goroutine hits: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  } finally {
    await agent.stop();
    await server.stop();
  }
});

test('overhead budget: set, changed and turned off by a configuration reload', { skip: skipUnlessBpf(), timeout: 120_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-budget');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'config.yaml');
  const write = (text: string): void => {
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file); // an editor's write-and-rename
  };
  write('exporter: {kind: none}\nselection: {includeExe: ["/nonexistent/**"]}\n');
  const agent = await startAgent(['--config', file]);
  try {
    const base = (await agent.metricsUrl()).replace(/\/metrics$/, '');
    const budget = async (): Promise<{ budgetPercent: number | null; windowSeconds?: number }> =>
      (JSON.parse((await httpRequest(`${base}/status`)).body) as { overheadBudget: { budgetPercent: number | null; windowSeconds?: number } }).overheadBudget;
    const until = async (want: number | null): Promise<{ budgetPercent: number | null; windowSeconds?: number }> => {
      for (let i = 0; i < 100; i++) {
        const b = await budget();
        if (b.budgetPercent === want) return b;
        await sleep(100);
      }
      throw new Error(`budget ${want} not applied:\n${agent.log().slice(-2000)}`);
    };
    assert.equal((await budget()).budgetPercent, null, 'off by default');
    write('exporter: {kind: none}\nselection: {includeExe: ["/nonexistent/**"]}\noverheadBudget: {percent: 5, windowMillis: 4000}\n');
    assert.equal((await until(5)).windowSeconds, 4);
    write('exporter: {kind: none}\nselection: {includeExe: ["/nonexistent/**"]}\noverheadBudget: {percent: 2.5}\n');
    assert.equal((await until(2.5)).windowSeconds, 10, 'the default window');
    write('exporter: {kind: none}\nselection: {includeExe: ["/nonexistent/**"]}\n');
    await until(null);
  } finally {
    await agent.stop();
  }
});
