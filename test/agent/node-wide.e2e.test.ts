/**
 * The agent as one per node: many Go processes at once, processes coming and
 * going, processes in other mount namespaces — real processes, real eBPF.
 * The agent runs in this test process so its internals (link sets, BPF maps,
 * file descriptors, memory) can be checked directly.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SpanKind } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { startBusyLoad } from '../support/busy.ts';
import { sleep, until } from '../support/wait.ts';
import { binaryLinkSets } from '../support/link-sets.ts';

const skip = skipUnlessBpf();
const goBin = (tc: string, v: string, name = 'httpserver'): string => join(repoRoot, 'build', 'go', tc, v, name);
const work = join(repoRoot, 'build', 'test-node-wide');



function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

describe('node-wide agent', { skip }, () => {
  let agent: Agent;
  const spans: ReadableSpan[] = [];
  const pidOf = (s: ReadableSpan): number => Number(s.resource.attributes['process.pid']);

  before(async () => {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    agent = new Agent(createLogger('warn'), {
      // the test's own requests are the traced programs' traffic
      skipOwnRequests: false,
      exporter: createExporter({ kind: 'none' }),
      selection: { includeExe: [join(repoRoot, 'build', '**')] },
      onSpan: (s) => spans.push(s),
      batcher: { scheduledDelayMillis: 100 },
      // Long enough to outlive gaps between short-lived processes, also when
      // this test process (which spawns them and runs the agent) stalls on
      // busy cores; short enough for the test to see links go.
      lingerMs: 5000,
    });
    await agent.start();
  });

  after(async () => {
    await agent?.stop();
  });

  test('100 concurrent processes of 10 binaries: all traced, one uprobe link per binary', async () => {
    const binaries: Array<{ path: string; args: string[] }> = [];
    for (const tc of ['go1.19', 'go1.26', 'go1.27']) for (const v of ['plain', 'stripped', 'pie']) binaries.push({ path: goBin(tc, v), args: [] });
    binaries.push({ path: goBin('go1.26', 'plain', 'demo-service'), args: ['-role', 'inventory'] });
    const servers: GoServer[] = [];
    try {
      for (let i = 0; i < 100; i++) {
        const b = binaries[i % binaries.length]!;
        servers.push(await startGoServer(b.path, b.args));
      }
      await until('all 100 processes traced', () => servers.every((s) => agent.tracedPids().includes(s.pid)), 30_000);
      const rt = agent.runtime()!;
      const attached = agent.attachments()!.binaries().filter((b) => b.handles.length > 0);
      assert.equal(attached.length, 10, 'ten distinct binaries attached');
      for (const b of attached) {
        // every site group (the entry and the RETs of each probed function) under one link
        const sites = b.plan!.probes.filter((p) => p.attachable).flatMap((p) => p.sites);
        assert.ok(sites.length >= 4, 'server and client probes attached');
        assert.equal(b.handles.length, sites.length, `${b.path}: every probed site group attached`);
        assert.equal(new Set(b.handles.map((h) => h.handle)).size, 1, `${b.path}: one link for all its sites`);
        assert.equal(b.pids.size, 10, 'ten processes share each binary\'s link');
      }
      const uprobeSets = binaryLinkSets(rt.obj);
      assert.equal(uprobeSets.length, attached.length, 'one uprobe link per binary, not per process or program');
      assert.deepEqual(new Set(uprobeSets.map((l) => l.program)), new Set(['gt_dispatch']));
      assert.equal(rt.obj.mapCount('gt_processes'), 100, 'all 100 in the BPF allow-list');

      for (const s of servers) await httpRequest(`${s.url}${s.url.includes('inventory') ? '' : ''}/hello`).catch(() => undefined);
      for (const s of servers.filter((_, i) => i % 10 === 9)) await httpRequest(`${s.url}/stock/teapot`);
      await until('a span from every process', () => {
        const seen = new Set(spans.map(pidOf));
        return servers.every((s) => seen.has(s.pid));
      }, 20_000);
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
    await until('every process released', () => agent.tracedPids().length === 0);
    assert.equal(agent.attachments()!.lingering().length, 10, 'each binary\'s links linger after its last process, for the next one');
    await until('links detached once the linger time passed', () => binaryLinkSets(agent.runtime()!.obj).length === 0, 20_000);
  });

  test('1,000 start/exit cycles of short-lived Go processes on busy cores: every one traced, nothing left behind', async () => {
    const rt = agent.runtime()!;
    const a = join(work, 'short-a');
    const b = join(work, 'short-b');
    copyFileSync(goBin('go1.26', 'stripped'), a);
    copyFileSync(goBin('go1.19', 'plain'), b);
    // warm up: first analysis, JIT, allocations that stay. Each warm-up
    // process is traced and released before counting starts, so that none
    // of their events, which a busy core delays, is counted as a cycle's.
    for (const bin of [a, b]) {
      const warm = await startGoServer(bin);
      await until('warm-up process traced', () => agent.tracedPids().includes(warm.pid), 30_000);
      await warm.stop();
      await until('warm-up process released', () => !agent.tracedPids().includes(warm.pid), 30_000);
    }
    global.gc?.();
    const fds0 = openFds();
    const rss0 = process.memoryUsage().rss;
    const before = { ...agent.totals };
    // judged per pid: a node-wide agent traces other processes of its rules meanwhile
    const acceptedPids = recordAccepted(agent);
    const cycles = 1000;
    const parallel = 24;
    let started = 0;
    const pids = new Set<number>();
    const worker = async (): Promise<void> => {
      while (started < cycles) {
        const n = started++;
        const child = spawn(n % 2 ? a : b, ['-exit-after', '150ms'], { stdio: 'ignore' });
        pids.add(child.pid!);
        await new Promise((r) => child.once('exit', r));
      }
    };
    const busy = startBusyLoad();
    const t0 = Date.now();
    try {
      await Promise.all(Array.from({ length: parallel }, worker));
    } finally {
      await busy.stop();
    }
    // the agent may still be reading process events the busy cores delayed
    await until('an exit event for every process, and all released', () => agent.totals.exitEvents - before.exitEvents >= cycles && agent.tracedPids().length === 0, 30_000)
      .catch(() => undefined);
    acceptedPids.stop();
    const tracedCycles = acceptedPids.pids.filter((p) => pids.has(p));
    const traced = new Set(tracedCycles).size;
    agent.scan();
    await agent.attachments()!.detachIdle();
    global.gc?.();
    const elapsed = Date.now() - t0;
    const fds1 = openFds();
    const rss1 = process.memoryUsage().rss;
    const lost = rt.counters()['process_events_full'] ?? 0n;
    // a process judged again after its exit was read (a late look from its
    // exec event, or after a detach it waited for) is not traced again
    const twice = [...new Set(tracedCycles.filter((p, i) => tracedCycles.indexOf(p) !== i))];
    process.stderr.write(`# 1000 cycles in ${elapsed} ms beside ${busy.count} busy processes; ${traced} processes traced, ${agent.totals.execEvents - before.execEvents} exec and ${agent.totals.exitEvents - before.exitEvents} exit events (${lost} process events lost); ${twice.length} traced twice; fds ${fds0} -> ${fds1}; rss ${(rss0 / 2 ** 20).toFixed(0)} -> ${(rss1 / 2 ** 20).toFixed(0)} MiB\n`);
    assert.equal(pids.size, cycles);
    assert.equal(lost, 0n, 'no process event lost');
    assert.equal(traced, cycles, `every short-lived process was traced (${traced} of ${cycles})`);
    assert.deepEqual(twice, [], `each process traced once (traced twice: ${twice.join(', ')})`);
    assert.equal(agent.totals.exitEvents - before.exitEvents, cycles, 'an exit event for every traced process');
    assert.equal(binaryLinkSets(rt.obj).length, 0, 'no uprobe links remain');
    assert.equal(rt.obj.mapCount('gt_processes'), 0, 'no allow-list entries remain');
    assert.equal(rt.obj.mapCount('gt_binary_files'), 0, 'no attached files remain known to the exec hook');
    assert.equal(rt.obj.mapCount('gt_http_server_inflight'), 0, 'no in-flight entries remain');
    assert.equal(agent.attachments()!.binaries().length, 0, 'no attached binaries remain');
    assert.ok(fds1 <= fds0 + 8, `file descriptors bounded: ${fds0} before, ${fds1} after`);
    assert.ok(rss1 - rss0 < 64 * 2 ** 20, `memory growth under 64 MiB: ${(rss1 - rss0) / 2 ** 20} MiB`);
  });

  test('a client that sends one request and exits is traced on every run, also on busy cores', async () => {
    const server = await startGoServer(goBin('go1.26', 'plain'));
    const client = join(work, 'oneshot');
    copyFileSync(goBin('go1.27', 'stripped'), client);
    const busy = startBusyLoad();
    const run = (): Promise<{ pid: number; out: string }> => new Promise((resolve, reject) => {
      const c = spawn(client, ['-get', `${server.url}/hello`], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.once('error', reject);
      c.once('exit', () => resolve({ pid: c.pid!, out: out.trim() }));
    });
    const clientSpans = (pid: number): ReadableSpan[] => spans.filter((s) => pidOf(s) === pid && s.kind === SpanKind.CLIENT);
    try {
      // the binary's first run: found by its exec event, attached after analysis
      const first = await run();
      await agent.flush();
      const firstTraced = clientSpans(first.pid).length;
      const runs: number[] = [];
      for (let i = 0; i < 15; i++) {
        const r = await run();
        assert.equal(r.out, '200', 'the client got its answer');
        runs.push(r.pid);
      }
      await until('client spans of all 15 runs', () => runs.every((p) => clientSpans(p).length === 1), 10_000).catch(() => undefined);
      await agent.flush();
      const traced = runs.filter((p) => clientSpans(p).length === 1).length;
      process.stderr.write(`# one-request clients: first run of a never-seen binary ${firstTraced ? 'traced' : 'not traced'}; then ${traced} of 15 traced\n`);
      assert.equal(traced, 15, 'every later run of the client has its CLIENT span');
      for (const p of runs) assert.equal(clientSpans(p).length, 1, `exactly one client span for run ${p}`);
    } finally {
      await busy.stop();
      await server.stop();
    }
  });

  test('a process started through env (two execs in a row) is traced once, never released', async () => {
    const bin = join(work, 'via-env');
    copyFileSync(goBin('go1.26', 'plain'), bin);
    // per pid: a node-wide agent also releases other processes meanwhile (e.g.
    // one of an earlier test that a /proc scan finds gone only now)
    const released: number[] = [];
    const processExited = agent['processExited'].bind(agent);
    agent['processExited'] = (pid: number): void => {
      released.push(pid);
      processExited(pid);
    };
    const accepted = recordAccepted(agent);
    const analysedBefore = agent.attachments()!.stats.binariesAnalysed;
    const child = spawn('env', ['GOTRAIL_TEST=1', bin], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await until('server via env listens', () => /listening on/.test(out), 10_000);
      await until('traced', () => agent.tracedPids().includes(child.pid!), 10_000);
      const url = `http://${/listening on (\S+)/.exec(out)![1]}`;
      for (let i = 0; i < 3; i++) await httpRequest(`${url}/hello`);
      await until('spans', () => spans.filter((s) => pidOf(s) === child.pid).length === 3, 10_000);
      assert.ok(!released.includes(child.pid!), 'the process was not released on the second exec');
      assert.equal(accepted.pids.filter((p) => p === child.pid).length, 1, 'traced exactly once');
      assert.equal(agent.attachments()!.stats.binariesAnalysed - analysedBefore, 1, 'its binary analysed and attached once');
    } finally {
      agent['processExited'] = processExited;
      accepted.stop();
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  test('exec to first span within one second', async () => {
    const latencies: number[] = [];
    for (let i = 0; i < 6; i++) {
      // half on binaries never seen before (full analysis), half on a known one
      const bin = i % 2 === 0 ? join(work, `fresh-${i}`) : goBin('go1.27', 'pie');
      if (i % 2 === 0) copyFileSync(goBin('go1.27', 'plain'), bin);
      const t0 = Date.now();
      const server = await startGoServer(bin);
      try {
        let first: ReadableSpan | undefined;
        const deadline = t0 + 5000;
        while (!first && Date.now() < deadline) {
          await httpRequest(`${server.url}/hello`);
          await sleep(5);
          await agent.flush();
          first = spans.find((s) => pidOf(s) === server.pid);
        }
        assert.ok(first, 'a span arrived');
        const startMs = first.startTime[0] * 1000 + first.startTime[1] / 1e6;
        latencies.push(startMs - t0);
      } finally {
        await server.stop();
      }
    }
    const sorted = [...latencies].sort((x, y) => x - y);
    const median = (sorted[2]! + sorted[3]!) / 2;
    const attach = agent.recentExecToAttach().slice(-6).map((x) => x * 1000);
    const attachSorted = [...attach].sort((x, y) => x - y);
    process.stderr.write(`# exec-to-first-span ms (first request polled every ~50 ms): ${latencies.map((l) => l.toFixed(1)).join(', ')}; median ${median.toFixed(1)}\n`);
    process.stderr.write(`# exec-to-attach ms (kernel exec timestamp to probes active): ${attach.map((l) => l.toFixed(1)).join(', ')}; median ${((attachSorted[2]! + attachSorted[3]!) / 2).toFixed(1)}\n`);
    for (const l of latencies) assert.ok(l <= 1000, `exec to first span ${l} ms`);
    assert.equal(attach.length, 6);
    for (const l of attach) assert.ok(l <= 1000, `exec to attach ${l} ms`);
  });

  test('a process in another mount namespace is found and traced', async () => {
    const root = join(work, 'mntns-root');
    mkdirSync(root, { recursive: true });
    // the binary exists only on a tmpfs mounted inside the new mount namespace
    const script = `mount -t tmpfs tmpfs "${root}" && cp "${goBin('go1.26', 'plain')}" "${root}/srv" && exec chroot "${root}" /srv`;
    const child = spawn('unshare', ['--mount', '--propagation', 'private', '--fork', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    try {
      await until('the namespaced server listens', () => /listening on/.test(out) || child.exitCode !== null, 10_000);
      assert.match(out, /listening on/, `server in the namespace failed: ${err}`);
      assert.deepEqual(readdirSync(root), [], 'the binary is not visible from the agent\'s mount namespace');
      const url = `http://${/listening on (\S+)/.exec(out)![1]}`;
      let got: ReadableSpan | undefined;
      const deadline = Date.now() + 10_000;
      while (!got && Date.now() < deadline) {
        await httpRequest(`${url}/hello`);
        await agent.flush();
        // the kernel names the executable by its path inside its own mount namespace
        got = spans.find((s) => s.resource.attributes['process.executable.path'] === join(root, 'srv'));
      }
      assert.ok(got, 'a span from the process in the other mount namespace');
      assert.equal(got.attributes['url.path'], '/hello');
    } finally {
      child.kill('SIGKILL');
      spawn('pkill', ['-f', '^/srv']).unref();
    }
  });
});

/** Records the pids the agent starts tracing (each time it does), until stop(). */
function recordAccepted(agent: Agent): { pids: number[]; stop: () => void } {
  const pids: number[] = [];
  const accept = agent['accept'].bind(agent);
  agent['accept'] = (info: Parameters<typeof accept>[0], judgedAtNs?: bigint): void => {
    const before = agent.totals.processesTraced;
    accept(info, judgedAtNs);
    if (agent.totals.processesTraced > before) pids.push(info.pid);
  };
  return { pids, stop: () => void (agent['accept'] = accept) };
}
