/**
 * The overhead gotrail reports for a traced process: the calibrated uprobe
 * hit cost, probe hits counted per process and site, and the estimated CPU
 * cost, checked against known load and against the CPU time the server
 * really spent more with the agent than without.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { processCpuSeconds, siteName, siteProgramsOf } from '../../daemon/agent/overhead.ts';
import { BpfPrograms, HitSite } from '../../daemon/generated/layouts.ts';
import { WRITE_USER_PROGRAMS } from '../../daemon/agent/write-user.ts';
import { repoRoot, startAgent, type AgentProcess } from '../support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';

const metric = (text: string, name: string, labels: Record<string, string> = {}): number | undefined => {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
};

/**
 * `n` GET /proxy over `conns` keep-alive connections (one request at a time
 * on each): each makes one net/http client call, on a kept-alive
 * connection, to the same server's /hello. Per call: two served requests
 * (their ends at CALLs the kernel emulates), one client call (its end at
 * Transport.roundTrip's branch on its error, emulated too), and the
 * goroutines net/http starts per request; the probes' cost stands above
 * the round-to-round noise of the server's own CPU time.
 */
async function load(server: GoServer, n: number, conns = 4): Promise<void> {
  let next = 0;
  const url = `${server.url}/proxy?drain=1&to=${encodeURIComponent(`${server.url}/hello`)}`;
  await Promise.all(Array.from({ length: conns }, async () => {
    while (next < n) {
      next++;
      const r = await httpRequest(url);
      assert.equal(r.status, 200);
    }
  }));
}

async function scrape(agent: AgentProcess): Promise<string> {
  // the estimator samples at most once a second: let a fresh window open
  await sleep(1100);
  return (await httpRequest(`${await agent.metricsUrl()}`)).body;
}

test('every probe site names the BPF program whose run time its hits add', () => {
  const programs = new Set<string>([...Object.values(BpfPrograms), ...WRITE_USER_PROGRAMS]);
  for (const site of Object.values(HitSite)) {
    const mine = siteProgramsOf(site);
    assert.ok(mine.length > 0 && mine.every((p) => programs.has(p)), `site ${site} (${siteName(site)}): ${mine.join(', ') || 'no program'}`);
  }
});

/**
 * `inject`: with the socket-level traceparent injection on (the default),
 * each call's request also goes through the kernel's sockmap send path with
 * a header added, which the estimate prices per send; off
 * (`--no-inject-traceparent`), probe hits alone.
 */
async function overheadCase(inject: boolean): Promise<void> {
  const dir = join(repoRoot, 'build', 'test-overhead');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const server = await startGoServer(bin);
  // The server on a CPU of its own, this process (the load) and the agents
  // it starts (they inherit it) on another: the agent's work on the server's
  // CPU (its consumer, its V8 threads, a span per request served) would
  // disturb the server's caches and count in its CPU time, which is no cost
  // of the probes and not what the estimate prices.
  const cpus = availableParallelism();
  const pinned = cpus >= 2;
  if (pinned) {
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(server.pid)], { stdio: 'ignore' });
    execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  }
  const N = 20_000;
  const ROUNDS = 3;
  const measured: number[] = [];
  const estimated: number[] = [];
  const without: number[] = [];
  try {
    await load(server, 2000); // warm-up: connections, heap, caches
    const baseline = async (): Promise<number> => {
      const c0 = processCpuSeconds(server.pid)!;
      await load(server, N);
      const base = processCpuSeconds(server.pid)! - c0;
      without.push(base);
      return base;
    };
    // without, with, without, with, without, with, without: each round with
    // the agent is compared with the mean of the rounds either side of it
    await baseline();
    for (let round = 0; round < ROUNDS; round++) {
      const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', ...(inject ? [] : ['--no-inject-traceparent'])]);
      try {
        await agent.waitTraced(server.pid);
        await agent.waitFor(/uprobe hit cost calibrated/, 60_000);
        const before = await scrape(agent);
        const c0 = processCpuSeconds(server.pid)!;
        await load(server, N);
        const traced = processCpuSeconds(server.pid)! - c0;
        const after = await scrape(agent);
        const svc = { service: 'httpserver' };
        const d = (name: string, labels: Record<string, string>): number => (metric(after, name, labels) ?? 0) - (metric(before, name, labels) ?? 0);
        assert.equal(d('gotrail_probe_hits_total', { ...svc, site: 'http_server_entry' }), 2 * N, 'one entry hit per request served, two per call');
        assert.equal(d('gotrail_probe_hits_total', { ...svc, site: 'http_server_return' }), 2 * N, 'one end hit per request served');
        assert.equal(d('gotrail_probe_hits_total', { ...svc, site: 'http_client_entry' }), N, 'one client entry hit per call');
        // a call that succeeds ends at roundTrip's branch on its error, not at a RET
        assert.equal(d('gotrail_probe_hits_total', { ...svc, site: 'http_client_done' }), N, 'one client end hit per call');
        assert.equal(d('gotrail_probe_hits_total', { ...svc, site: 'http_client_return' }), 0, 'no client RET hit: every call succeeded');
        const cost = { emulated: metric(after, 'gotrail_uprobe_hit_cost_seconds', { kind: 'emulated' }), single_stepped: metric(after, 'gotrail_uprobe_hit_cost_seconds', { kind: 'single_stepped' }) };
        for (const c of Object.values(cost)) assert.ok(c !== undefined && c > 1e-8 && c < 1e-3, `calibrated costs ${JSON.stringify(cost)} s per hit`);
        // each call's request is one send on a kept-alive connection to the
        // server itself (the only connections it opens), the header added;
        // except on a connection opened before the agent started (in the
        // sockmap only those opened since)
        const sends = d('gotrail_propagation_inject_sends_total', svc);
        const sendCost = metric(after, 'gotrail_inject_send_cost_seconds');
        if (inject) {
          const injected = d('gotrail_propagation_inject_total', { outcome: 'injected' });
          assert.equal(injected + d('gotrail_propagation_inject_total', { outcome: 'not_in_sockmap' }), N, 'a header added to every call on a connection in the sockmap');
          assert.equal(sends, injected, 'one send through the sockmap per call on a connection in it');
          assert.ok(sendCost !== undefined && sendCost >= 0 && sendCost < 1e-3, `calibrated send cost ${sendCost} s`);
        } else {
          assert.equal(sends, 0, 'no send through the sockmap with injection off');
          assert.equal(sendCost, 0, 'no send cost calibrated with injection off');
        }
        // the single-step is a second trap
        assert.ok(cost.single_stepped! > cost.emulated!, `calibrated costs ${JSON.stringify(cost)} s per hit`);
        const est = d('gotrail_overhead_estimated_seconds_total', svc);
        const ratio = metric(after, 'gotrail_overhead_cpu_ratio', svc);
        assert.ok(ratio !== undefined && ratio > 0 && ratio < 1, `overhead ratio ${ratio}`);
        const status = JSON.parse((await httpRequest(`${(await agent.metricsUrl()).replace(/\/metrics$/, '')}/status`)).body) as { overhead: { uprobeHitCostSeconds: Record<string, number>; injectSendCostSeconds?: number; processes: Array<{ pid: number; hits: Record<string, number>; hitsByKind: Record<string, number>; injectSends: number; injectSeconds: number; estimatedSeconds: number }> } };
        const mine = status.overhead.processes.find((p) => p.pid === server.pid);
        assert.ok(mine && mine.hits['http_server_entry']! >= 2 * N && mine.estimatedSeconds > 0, 'shown per process in /status');
        assert.deepEqual(status.overhead.uprobeHitCostSeconds, cost);
        assert.equal(status.overhead.injectSendCostSeconds ?? 0, sendCost);
        if (inject) assert.ok(mine.injectSends >= sends && mine.injectSeconds > 0 && mine.injectSeconds < mine.estimatedSeconds, `sends shown per process in /status: ${mine.injectSends}, ${mine.injectSeconds} s`);
        // every hit has its kind; the entry site (Go 1.26: the PUSH after the stack check) is emulated
        const hitSum = Object.values(mine.hits).reduce((a, n) => a + n, 0);
        assert.equal(mine.hitsByKind['emulated']! + mine.hitsByKind['single_stepped']!, hitSum, `hits by kind ${JSON.stringify(mine.hitsByKind)} of ${JSON.stringify(mine.hits)}`);
        // every site hit is emulated, the client's end (at Transport.roundTrip's JE on its error) included
        assert.equal(mine.hitsByKind['single_stepped'], 0, `hits by kind ${JSON.stringify(mine.hitsByKind)} of ${JSON.stringify(mine.hits)}`);
        assert.ok(mine.hitsByKind['emulated']! >= 2 * mine.hits['http_server_entry']! + mine.hits['http_client_entry']! + mine.hits['http_client_done']!, `hits by kind ${JSON.stringify(mine.hitsByKind)} of ${JSON.stringify(mine.hits)}`);
        if (round === 0) {
          const again = await httpRequest(`${(await agent.metricsUrl()).replace(/\/metrics$/, '')}/calibrate`, { method: 'POST' });
          assert.equal(again.status, 200, 'calibrated again on demand');
          const c = JSON.parse(again.body) as { secondsPerHit: Record<string, number>; rounds: Record<string, number[]> };
          for (const kind of ['emulated', 'single_stepped']) assert.ok(c.secondsPerHit[kind]! > 1e-8 && c.rounds[kind]!.length === 5, `${kind}: ${again.body}`);
        }
        measured.push(traced);
        estimated.push(est);
        console.log(`round ${round}: without ${(without.at(-1)! * 1e6 / N).toFixed(1)} µs/req, with ${(traced * 1e6 / N).toFixed(1)} µs/req; ` +
          `estimate ${(est * 1e6 / N).toFixed(1)} µs/req (hit cost ${(cost.emulated! * 1e6).toFixed(2)} µs emulated, ${(cost.single_stepped! * 1e6).toFixed(2)} µs single-stepped; ` +
          `hits ${JSON.stringify(mine.hitsByKind)}${inject ? `; sockmap send ${(sendCost * 1e6).toFixed(2)} µs, ${sends} sends` : ''}); ratio ${ratio.toFixed(3)}`);
      } finally {
        await agent.stop();
      }
      await baseline();
    }
  } finally {
    await server.stop();
    if (pinned) execFileSync('taskset', ['-a', '-p', '-c', `0-${cpus - 1}`, String(process.pid)], { stdio: 'ignore' });
  }
  // measured difference: CPU time with the agent minus without, over both rounds
  const diff = measured.reduce((a, m, i) => a + m - (without[i]! + without[i + 1]!) / 2, 0);
  const est = estimated.reduce((a, b) => a + b, 0);
  console.log(`measured difference (each round with the agent against the mean of the rounds either side) ${(diff * 1e6 / (ROUNDS * N)).toFixed(1)} µs/req, estimated ${(est * 1e6 / (ROUNDS * N)).toFixed(1)} µs/req`);
  // Stated tolerance: the estimate is within 0.4× to 2× of the measured
  // difference. It tends to undershoot, as it leaves out second-order costs
  // of the trap (caches and TLB disturbed in a real program, unlike in the
  // tight calibration loop); on a 2-core VM, the server and the agent
  // pinned apart, it came to 0.71× of the difference (31.6 against 44.6 µs
  // per call: a client RET single-stepped at 16.7–17.0 µs and 11 emulated
  // hits at 0.5 µs each, plus BPF time), and 0.45–0.55× with nothing
  // pinned, the agent's work then sharing the server's CPU; since the
  // client's end moved from that RET to an emulated branch, 0.68× (13.8
  // against 20.2 µs per call: 12.5 emulated hits at 0.44–0.48 µs, plus BPF
  // time). Before that move, both injection cases in one run: with the
  // traceparent injection on, the sockmap sends priced too, 0.69× (28.4
  // against 41.3 µs per call); with it off, 0.65× (27.1 against 41.7).
  assert.ok(est > diff * 0.4 && est < diff * 2, `estimate ${est.toFixed(3)} s vs measured ${diff.toFixed(3)} s`);
}

test('overhead, traceparent injection on: calibrated hit and send costs, exact hits and sends per request, estimate close to the CPU time the server really spent', { skip: skipUnlessBpf(), timeout: 600_000 }, () => overheadCase(true));

test('overhead, traceparent injection off: probe hits alone', { skip: skipUnlessBpf(), timeout: 600_000 }, () => overheadCase(false));
