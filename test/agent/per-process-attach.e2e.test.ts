/**
 * Uprobes belong to the file: with per-file links, a process the rules
 * exclude still takes every probe's trap (the probe only skips it in BPF).
 * Where at least as many processes of a binary are excluded as traced, the
 * agent attaches per traced process instead (a pid filter on each link), and
 * an excluded process takes no trap at all; it switches back and forth as
 * processes come and go, without a gap for the traced ones. Real Go servers
 * of one binary, real eBPF, probe hits counted in BPF.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { processCpuSeconds } from '../../daemon/agent/overhead.ts';
import { repoRoot, startAgent } from '../support/agent-process.ts';
import { attributeText, startCollector, type ReceivedSpan } from '../support/collector.ts';
import { startBusyLoad } from '../support/busy.ts';
import { httpRequest, startGoServer, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';

interface Status {
  processesNotSelected: Array<{ pid: number }>;
  binaries: Array<{ path: string; pids: number[]; perProcess: boolean; excluded: Array<{ pid: number; hits: number }> }>;
  overhead: { processes: Array<{ pid: number; hits: Record<string, number> }> };
}

async function requests(s: GoServer, n: number, conns = 4): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: conns }, async () => {
    while (next < n) {
      next++;
      const r = await httpRequest(`${s.url}/hello`);
      assert.equal(r.status, 200);
    }
  }));
}

test('per-process attach: an excluded process of a traced binary takes no trap once most of its processes are excluded; placement follows processes coming and going', { skip: skipUnlessBpf(), timeout: 300_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-per-process');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const N = 3000;
  /** requests whose CPU time is compared (10 ms ticks of /proc: 1 µs per request) */
  const M = 10_000;
  const a1 = await startGoServer(bin, ['-tag', 'a1']);
  let a2 = await startGoServer(bin, ['-tag', 'a2']);
  const excluded = await startGoServer(bin, ['-tag', 'excluded'], { GOTRAIL_TRACE: 'false' });
  const collector = await startCollector();
  const agent = await startAgent(['--include-exe', bin, '--exporter', 'otlp', '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`]);
  /** SERVER spans of /hello of a process, received so far. */
  const spansOf = async (pid: number): Promise<ReceivedSpan[]> =>
    (await collector.spans()).filter((x) => x.kind === 'SERVER' && x.resource['process.pid'] === pid && attributeText(x.attributes['url.path']) === '/hello');
  /** Exactly `n` such spans of `pid` (stragglers given time to arrive). */
  const exactly = async (pid: number, n: number, what: string): Promise<void> => {
    for (let i = 0; i < 100 && (await spansOf(pid)).length < n; i++) await sleep(100);
    await sleep(1500);
    assert.equal((await spansOf(pid)).length, n, what);
  };
  const base = (await agent.metricsUrl()).replace(/\/metrics$/, '');
  const status = async (): Promise<Status> => JSON.parse((await httpRequest(`${base}/status`)).body) as Status;
  const binary = async (): Promise<Status['binaries'][number]> => (await status()).binaries.find((b) => b.path === bin)!;
  const excludedHits = async (): Promise<number> => (await binary()).excluded.find((e) => e.pid === excluded.pid)?.hits ?? 0;
  const entries = async (pid: number): Promise<number> => {
    await sleep(1100); // the estimator samples at most once a second
    return (await status()).overhead.processes.find((p) => p.pid === pid)?.hits['http_server_entry'] ?? 0;
  };
  /** CPU µs per request the excluded server spends for `n` requests. */
  const cpuPerRequest = async (n: number): Promise<number> => {
    const c0 = processCpuSeconds(excluded.pid)!;
    await requests(excluded, n);
    return ((processCpuSeconds(excluded.pid)! - c0) / n) * 1e6;
  };
  try {
    await agent.waitTraced(a1.pid);
    await agent.waitTraced(a2.pid);
    for (let i = 0; i < 100 && !(await status()).processesNotSelected.some((p) => p.pid === excluded.pid); i++) await sleep(100);
    assert.ok((await status()).processesNotSelected.some((p) => p.pid === excluded.pid), 'GOTRAIL_TRACE=false: not selected');

    // two traced, one excluded: per file, and the excluded one takes the trap
    assert.equal((await binary()).perProcess, false);
    await requests(excluded, 200); // warm-up
    const h0 = await excludedHits();
    const filePerReq = await cpuPerRequest(M);
    const h1 = await excludedHits();
    assert.ok(h1 - h0 >= 2 * M, `per file: the excluded process took ${h1 - h0} probe hits for ${M} requests (entry and return each)`);

    // one traced process exits: one traced, one excluded → per process
    await a2.stop();
    await agent.waitFor(/attaching per traced process/, 30_000);
    assert.equal((await binary()).perProcess, true);
    await sleep(500); // the per-file links' detach finishes
    const h2 = await excludedHits();
    const procPerReq = await cpuPerRequest(M);
    assert.equal(await excludedHits(), h2, 'per process: the excluded process takes no probe hit');
    // the traced one is traced: exactly one entry hit per request, on a busy machine too
    const busy = startBusyLoad();
    try {
      await collector.clear();
      const e0 = await entries(a1.pid);
      await requests(a1, N);
      assert.equal(await entries(a1.pid) - e0, N, 'the traced process: one entry hit per request');
      await exactly(a1.pid, N, 'the traced process: one SERVER span per request');
      assert.equal((await collector.spans()).filter((x) => x.resource['process.pid'] === excluded.pid).length, 0);
    } finally {
      await busy.stop();
    }
    console.log(`excluded process of a traced binary: ${filePerReq.toFixed(1)} µs CPU per request with per-file probes (${((h1 - h0) / M).toFixed(2)} hits per request), ${procPerReq.toFixed(1)} µs with per-process probes (0 hits)`);

    // a second traced process again: back to per file, and requests to the
    // traced process across the switch are all seen
    await collector.clear();
    const seen0 = await entries(a1.pid);
    let sent = 0;
    let loading = true;
    const load = (async () => {
      while (loading) {
        const r = await httpRequest(`${a1.url}/hello`);
        assert.equal(r.status, 200);
        sent++;
      }
    })();
    try {
      await sleep(300);
      a2 = await startGoServer(bin, ['-tag', 'a2-again']);
      await agent.waitTraced(a2.pid);
      await agent.waitFor(/attaching per file again/, 30_000);
      await sleep(300);
    } finally {
      loading = false;
      await load;
    }
    assert.equal((await binary()).perProcess, false);
    // both links fire while they overlap: a request may count twice, none is missed
    assert.ok(await entries(a1.pid) - seen0 >= sent, 'no request of the traced process missed across the switch');
    await exactly(a1.pid, sent, `one SERVER span per request across the switch (${sent} requests), none lost, none twice`);
    const h3 = await excludedHits();
    await requests(excluded, 100);
    assert.ok(await excludedHits() - h3 >= 200, 'per file again: the excluded process takes the trap again');
  } finally {
    await agent.stop();
    await collector.stop();
    await Promise.all([a1.stop(), a2.stop(), excluded.stop()]);
  }
});
