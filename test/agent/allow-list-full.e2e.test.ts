/**
 * More selected Go processes than the BPF allow-list holds (`--max-processes`
 * at its minimum, 16): the agent stays up, traces as many as fit, counts each
 * one left out once (gotrail_processes_untraced_total{reason="allow_list_full"}),
 * lists them in /status with the reason, says it once in the log, and traces
 * a waiting process within a scan once a traced one exits. Found at start (the
 * /proc scan) and at exec (the exec event) alike. Real Go servers, real eBPF,
 * spans received by a collector.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { gotrailBin, repoRoot, startAgent, type AgentProcess } from '../support/agent-process.ts';
import { attributeText, startCollector } from '../support/collector.ts';
import { httpRequest, startGoServer, type GoServer } from '../support/go-server.ts';
import { metricSum } from '../support/metrics.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';

const CAPACITY = 16;
/** servers running when the agent starts */
const AT_START = CAPACITY + 4;
/** traced servers stopped to make room */
const STOPPED = 3;
/** servers started while the allow-list is full again */
const LATER = 2;
const REASON = `the allow-list is full (${CAPACITY} processes, --max-processes)`;

interface Status {
  processesTraced: Array<{ pid: number }>;
  processesNotTraced?: Array<{ pid: number; exe: string; reason: string }>;
}

test(`${AT_START} selected Go processes with room for ${CAPACITY}: ${CAPACITY} traced, the rest counted, listed and traced once room frees; the agent stays up`, { skip: skipUnlessBpf(), timeout: 180_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-allow-list-full');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const servers = new Map<number, GoServer>();
  const start = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const s = await startGoServer(bin);
      servers.set(s.pid, s);
    }
  };
  const collector = await startCollector();
  let agent: AgentProcess;
  try {
    await start(AT_START);
    // startAgent scans every 200 ms (--scan-interval)
    agent = await startAgent(['--max-processes', String(CAPACITY), '--include-exe', bin, '--exporter', 'otlp', '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`]);
  } catch (e) {
    await collector.stop();
    await Promise.all([...servers.values()].map((x) => x.stop()));
    throw e;
  }
  const base = (await agent.metricsUrl()).replace(/\/metrics$/, '');
  const status = async (): Promise<Status> => JSON.parse((await httpRequest(`${base}/status`)).body) as Status;
  const metrics = async (): Promise<string> => (await httpRequest(`${base}/metrics`)).body;
  const untracedTotal = async (): Promise<number> => metricSum(await metrics(), 'gotrail_processes_untraced_total', { reason: 'allow_list_full' });
  /** /status once it shows `traced` processes traced and `waiting` waiting (scans settle within a few intervals). */
  const settled = async (traced: number, waiting: number): Promise<Status> => {
    let s = await status();
    for (let i = 0; i < 100 && (s.processesTraced.length !== traced || s.processesNotTraced?.length !== waiting); i++) {
      await sleep(100);
      s = await status();
    }
    await sleep(1000); // a few scans more: nothing changes any more
    s = await status();
    assert.equal(s.processesTraced.length, traced, JSON.stringify(s.processesTraced));
    assert.equal(s.processesNotTraced?.length, waiting, JSON.stringify(s.processesNotTraced));
    return s;
  };
  /** A /hello to every server; the pids with a SERVER span of it. */
  const spansAfterRequests = async (expected: number[]): Promise<Set<number>> => {
    await collector.clear();
    for (const s of servers.values()) assert.equal((await httpRequest(`${s.url}/hello`)).status, 200);
    const pids = async (): Promise<Set<number>> => new Set((await collector.spans())
      .filter((x) => x.kind === 'SERVER' && attributeText(x.attributes['url.path']) === '/hello')
      .map((x) => x.resource['process.pid'] as number));
    for (let i = 0; i < 100 && (await pids()).size < expected.length; i++) await sleep(100);
    await sleep(1500); // stragglers, which must not come
    return pids();
  };
  const sorted = (xs: Iterable<number>): number[] => [...xs].sort((a, b) => a - b);
  try {
    // found by the start's scan
    let s = await settled(CAPACITY, AT_START - CAPACITY);
    assert.equal(agent.child.exitCode, null, 'the agent runs');
    assert.deepEqual([...new Set(s.processesNotTraced!.map((p) => p.reason))], [REASON]);
    assert.deepEqual(s.processesNotTraced!.map((p) => p.exe), s.processesNotTraced!.map(() => bin));
    assert.deepEqual(sorted([...s.processesTraced, ...s.processesNotTraced!].map((p) => p.pid)), sorted(servers.keys()), 'every server is either traced or waiting');
    assert.equal(await untracedTotal(), AT_START - CAPACITY, 'each process left out counted once, however many scans retried it');
    assert.equal(metricSum(await metrics(), 'gotrail_processes_traced'), CAPACITY);
    const inspect = (pid: number): string => execFileSync(gotrailBin, ['inspect', String(pid), '--agent', base], { encoding: 'utf8' });
    assert.match(inspect(s.processesNotTraced![0]!.pid), new RegExp(`^agent: +not traced: ${REASON.replace(/[()]/g, '\\$&')} \\(`, 'm'));
    assert.match(inspect(s.processesTraced[0]!.pid), /^agent: +traced \(/m);
    const traced = s.processesTraced.map((p) => p.pid);
    assert.deepEqual(sorted(await spansAfterRequests(traced)), sorted(traced), 'spans of the traced processes, none of the others');

    // room for STOPPED: as many waiting ones traced within a few scans, nothing counted anew
    const waiting0 = s.processesNotTraced!.map((p) => p.pid);
    for (const pid of traced.slice(0, STOPPED)) {
      await servers.get(pid)!.stop();
      servers.delete(pid);
    }
    s = await settled(CAPACITY, AT_START - CAPACITY - STOPPED);
    const nowTraced = waiting0.filter((pid) => s.processesTraced.some((p) => p.pid === pid));
    assert.equal(nowTraced.length, STOPPED, 'the waiting processes took the slots freed');
    assert.equal(await untracedTotal(), AT_START - CAPACITY);
    const spans = await spansAfterRequests(s.processesTraced.map((p) => p.pid));
    for (const pid of nowTraced) assert.ok(spans.has(pid), `spans of process ${pid}, traced once room freed`);

    // found by their exec events while the allow-list is full
    await start(LATER);
    s = await settled(CAPACITY, AT_START - CAPACITY - STOPPED + LATER);
    assert.equal(await untracedTotal(), AT_START - CAPACITY + LATER);
    assert.equal(agent.child.exitCode, null, 'the agent runs');
    // one warning for the burst, not one per process
    assert.equal(agent.log().match(/the allow-list is full/g)?.length, 1, agent.log().slice(-4000));
    assert.doesNotMatch(agent.log(), /ERROR|uncaught|E2BIG|Argument list too long/, agent.log().slice(-4000));
  } finally {
    const code = await agent.stop();
    await collector.stop();
    await Promise.all([...servers.values()].map((x) => x.stop()));
    assert.equal(code, 0, agent.log().slice(-4000));
  }
});

test(`${CAPACITY + LATER} selected Go processes started while the agent runs with room for ${CAPACITY}: found by their exec events, ${LATER} counted, the agent stays up`, { skip: skipUnlessBpf(), timeout: 120_000 }, async () => {
  const dir = join(repoRoot, 'build', 'test-allow-list-full-exec');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  // a scan interval far longer than the test: only the exec events find the servers
  const agent = await startAgent(['--max-processes', String(CAPACITY), '--include-exe', bin, '--exporter', 'none', '--scan-interval', '600000']);
  const servers: GoServer[] = [];
  try {
    const base = (await agent.metricsUrl()).replace(/\/metrics$/, '');
    for (let i = 0; i < CAPACITY + LATER; i++) servers.push(await startGoServer(bin));
    const status = async (): Promise<Status> => JSON.parse((await httpRequest(`${base}/status`)).body) as Status;
    let s = await status();
    for (let i = 0; i < 100 && (s.processesTraced.length + (s.processesNotTraced?.length ?? 0) < servers.length); i++) {
      await sleep(100);
      s = await status();
    }
    assert.equal(s.processesTraced.length, CAPACITY);
    assert.deepEqual(s.processesNotTraced?.map((p) => p.reason), servers.slice(CAPACITY).map(() => REASON));
    assert.equal(metricSum((await httpRequest(`${base}/metrics`)).body, 'gotrail_processes_untraced_total', { reason: 'allow_list_full' }), LATER);
    assert.equal(agent.child.exitCode, null, 'the agent runs');
  } finally {
    const code = await agent.stop();
    await Promise.all(servers.map((x) => x.stop()));
    assert.equal(code, 0, agent.log().slice(-4000));
  }
});
