/**
 * The agent run under Node's CPU profiler (node --cpu-prof), as one profiles
 * it in production: the profiler's SIGPROF every millisecond used to cut the
 * kernel's verification of every BPF program short (EAGAIN), so every probe
 * was left out and the agent made no span. It loads and traces as without it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { repoRoot, startAgent } from '../support/agent-process.ts';
import { startBusyLoad } from '../support/busy.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { metricSum } from '../support/metrics.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';

const work = join(repoRoot, 'build', 'test-cpu-prof');
const REQUESTS = 400;
/**
 * How long the profiled agent may take to start on busy cores (ms). Most of
 * it is the kernel verifying the probes, which the profiler's signals and the
 * busy load slow down: measured here, 17–35 s to `gotrail running` with
 * twelve more busy processes on the 2 cores (15–27 s of it loading the
 * probes), over the 30 s an agent is given elsewhere.
 */
const START_TIMEOUT_MS = 120_000;

test('under node --cpu-prof on busy cores the agent loads every probe and exports a span per request', { skip: skipUnlessBpf() }, async (t) => {
  rmSync(work, { recursive: true, force: true });
  const profiles = join(work, 'profiles');
  mkdirSync(profiles, { recursive: true });
  const bin = join(work, 'server');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const server = await startGoServer(bin);
  t.after(() => server.stop());
  const busy = startBusyLoad();
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  try {
    // a start that times out stops the agent (startAgent): none is orphaned
    agent = await startAgent(['--include-exe', bin, '--exporter', 'none'], {}, {
      command: [join(repoRoot, 'deploy', 'node'), '--cpu-prof', `--cpu-prof-dir=${profiles}`, join(repoRoot, 'daemon', 'cli', 'main.ts')],
      startTimeoutMs: START_TIMEOUT_MS,
    });
    const started = agent;
    t.after(() => started.stop());
    await agent.waitTraced(server.pid, 30_000);
  } finally {
    await busy.stop();
  }
  try {
    const leftOut = agent.log().split('\n').filter((l) => /probe .* disabled|injection disabled|Resource temporarily unavailable/.test(l));
    assert.deepEqual(leftOut, [], 'no probe left out');
    const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 4 });
    const get = (): Promise<void> => new Promise((resolve, reject) => {
      const r = request(`${server.url}/hello`, { agent: keepAlive }, (m) => {
        m.resume();
        m.on('end', () => resolve());
      });
      r.on('error', reject);
      r.end();
    });
    for (let i = 0; i < REQUESTS; i += 4) await Promise.all([get(), get(), get(), get()]);
    keepAlive.destroy();
    const url = await agent.metricsUrl();
    let text = '';
    for (const deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(200)) {
      text = (await httpRequest(url)).body;
      if (metricSum(text, 'gotrail_spans_exported_total') >= REQUESTS) break;
    }
    assert.equal(metricSum(text, 'gotrail_events_total', { type: 'net/http/server' }), REQUESTS);
    assert.equal(metricSum(text, 'gotrail_spans_exported_total'), REQUESTS);
  } finally {
    await agent.stop();
  }
  assert.equal(readdirSync(profiles).filter((f) => f.endsWith('.cpuprofile')).length, 1, 'the profile is written at exit');
});
