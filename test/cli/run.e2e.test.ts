/**
 * `gotrail run` as an operator meets it: what a stray signal does to the
 * running agent, and the address it says it serves its metrics on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { gotrailBin, repoRoot, startAgent } from '../support/agent-process.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { sleep } from '../support/wait.ts';

const quiet = ['--exporter', 'none', '--include-exe', '/nonexistent/**'];

/** TCP ports `pid` listens on (its socket descriptors matched with /proc/PID/net/tcp and tcp6). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, the inode is the tenth field
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports.sort((a, b) => a - b);
}

test('SIGUSR1 opens no debugger in the agent: it keeps running and listens on its metrics port alone', { skip: skipUnlessBpf() }, async () => {
  // Node's default for SIGUSR1 is to start its inspector on 127.0.0.1:9229,
  // through which anyone on the node who can connect there runs code with
  // the agent's privileges.
  const agent = await startAgent(quiet);
  try {
    const url = new URL(await agent.metricsUrl());
    const pid = agent.child.pid!;
    assert.deepEqual(listeningPorts(pid), [Number(url.port)]);
    process.kill(pid, 'SIGUSR1');
    // the inspector, when it starts, says so at once on stderr; give it time
    await sleep(1000);
    assert.equal((await fetch(new URL('/healthz', url))).status, 200);
    assert.doesNotMatch(agent.log(), /Debugger listening/);
    assert.deepEqual(listeningPorts(pid), [Number(url.port)]);
    assert.equal(agent.child.exitCode, null);
  } finally {
    assert.equal(await agent.stop(), 0);
  }
});

test('an IPv6 metrics address is logged as a URL one can fetch (brackets around the address)', { skip: skipUnlessBpf() }, async () => {
  const agent = await startAgent([...quiet, '--metrics-address', '[::1]:0']);
  try {
    const logged = await agent.metricsUrl();
    assert.match(logged, /^http:\/\/\[::1\]:\d+\/metrics$/);
    const res = await fetch(logged);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /^gotrail_processes_traced /m);
  } finally {
    assert.equal(await agent.stop(), 0);
  }
});

test('a start that fails after the probes loaded ends the process (exit 1) instead of leaving it running', { skip: skipUnlessBpf() }, async () => {
  // The probe-hit log's path names no file that can be opened (its
  // directory does not exist): the start fails once the probes' object is
  // loaded. Before, a failed start printed its error and stayed: what had
  // started (the ring buffer's poll thread, timers, the metrics port) ran
  // on, and a SIGTERM was taken as a stop request nobody waited for.
  // (A write failure of that log, later, stops nothing: see below.)
  const bin = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');
  const server = await startGoServer(bin);
  try {
    const child = spawn(gotrailBin, ['run', '--debug-probe-hits', '/nonexistent/gotrail/hits.jsonl', '--include-exe', bin, '--exporter', 'none', '--metrics-address', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    // it ends by itself (here in 3-5 s); the test kills it past 30 s
    const timeout = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await exited;
    clearTimeout(timeout);
    assert.equal(code, 1, log);
    assert.match(log, /gotrail: starting the agent failed: cannot open the probe-hit log \/nonexistent\/gotrail\/hits\.jsonl \(--debug-probe-hits\): ENOENT/);
  } finally {
    await server.stop();
  }
});

test('a probe-hit log that cannot be written (a full device) never stops tracing: the failure is logged once with the file and errno, the lines lost counted', { skip: skipUnlessBpf() }, async () => {
  // Before, the first line that could not be written (in the start's first
  // scan, attaching a Go process already running) threw out of the attach,
  // and the start failed: a debugging aid stopped the tracing it was to help.
  const bin = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');
  const server = await startGoServer(bin);
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  try {
    agent = await startAgent(['--debug-probe-hits', '/dev/full', '--include-exe', bin, '--exporter', 'none']);
    await agent.waitTraced(server.pid);
    const url = new URL(await agent.metricsUrl());
    for (let i = 0; i < 5; i++) assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    // the requests' server spans are made and exported: tracing went on
    const exported = async (): Promise<number> => Number(/^gotrail_spans_exported_total (\S+)$/m.exec(await (await fetch(new URL('/metrics', url))).text())?.[1] ?? 0);
    for (const deadline = Date.now() + 15_000; (await exported()) < 5; ) {
      assert.ok(Date.now() < deadline, `spans exported: ${await exported()}\n${agent.log()}`);
      await sleep(200);
    }
    const status = (await (await fetch(new URL('/status', url))).json()) as { debugProbeHits?: { file: string; writtenLines: number; unwrittenLines: number } };
    assert.equal(status.debugProbeHits?.file, '/dev/full');
    assert.equal(status.debugProbeHits?.writtenLines, 0);
    // at least the attach steps and the five requests' entry and return hits
    assert.ok((status.debugProbeHits?.unwrittenLines ?? 0) >= 10, JSON.stringify(status.debugProbeHits));
    const failures = agent.log().split('\n').filter((l) => l.includes('cannot write the probe-hit log'));
    assert.equal(failures.length, 1, agent.log());
    assert.match(failures[0]!, /file=\/dev\/full errno=ENOSPC/);
  } finally {
    if (agent) {
      assert.equal(await agent.stop(), 0, agent.log());
      assert.match(agent.log(), /probe-hit log lines not written file=\/dev\/full unwritten=\d+ written=0/);
    }
    await server.stop();
  }
});
