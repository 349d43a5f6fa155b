/**
 * A short-lived Go job started by a relative path (`./job`, as a shell or a
 * cron script in its working directory runs it) that exits before the agent
 * looks: its exec event gives only `./job`. The path is resolved against the
 * launching shell's working directory (the job itself is gone), checked
 * against the identity of the file executed, and the binary attached, so the
 * next runs are traced from exec and their spans arrive at a real
 * collector. When the path cannot be resolved (the parent is gone too), the
 * process is counted by reason and said once per path, never passed over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, startAgent, type AgentProcess } from '../support/agent-process.ts';
import { attributeText, startCollector } from '../support/collector.ts';
import { startGoServer } from '../support/go-server.ts';
import { metricSum, scrapeMetrics } from '../support/metrics.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const work = join(repoRoot, 'build', 'test-relative-exec');
const goClient = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');

/** A shell that stays alive in `cwd` and runs what it is given, one line at a time. */
class Shell {
  private readonly sh: ChildProcessWithoutNullStreams;
  private out = '';
  private waiters: Array<() => void> = [];
  constructor(cwd: string) {
    this.sh = spawn('sh', [], { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    this.sh.stdout.on('data', (d: Buffer) => {
      this.out += d.toString();
      for (const w of this.waiters.splice(0)) w();
    });
  }
  get pid(): number {
    return this.sh.pid!;
  }
  /** Runs `./job ARGS` in the background and waits for it: resolves with its pid and exit status. */
  async run(cmd: string): Promise<{ pid: number; status: number }> {
    const mark = `done-${Math.random().toString(36).slice(2)}`;
    this.sh.stdin.write(`${cmd} & p=$!; wait $p; echo "${mark} $p $?"\n`);
    const re = new RegExp(`${mark} (\\d+) (\\d+)`);
    for (;;) {
      const m = re.exec(this.out);
      if (m) return { pid: Number(m[1]), status: Number(m[2]) };
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
  stop(): void {
    this.sh.stdin.end();
    this.sh.kill();
  }
}

/** Runs `fn` while the agent is stopped: it reads the exec events once every process started meanwhile is gone. */
async function whileStopped(agent: AgentProcess, fn: () => Promise<void>): Promise<void> {
  process.kill(agent.child.pid!, 'SIGSTOP');
  try {
    await fn();
  } finally {
    process.kill(agent.child.pid!, 'SIGCONT');
  }
}

test('a Go job run as ./job from a live shell that exits before the agent looks: its binary is found through the shell\'s directory, the next runs are traced', { skip: skipUnlessBpf(), timeout: 120_000 }, async (t) => {
  const dir = join(work, 'resolved');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(goClient, join(dir, 'job'));
  const server = await startGoServer(goClient);
  t.after(() => server.stop());
  const collector = await startCollector();
  t.after(() => collector.stop());
  const agent = await startAgent(['--include-exe', `${dir}/**`, '--exporter', 'otlp', '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`]);
  t.after(() => agent.stop());
  const shell = new Shell(dir);
  t.after(() => shell.stop());
  const job = `./job -get ${server.url}/hello`;
  await whileStopped(agent, async () => {
    for (let i = 0; i < 3; i++) assert.equal((await shell.run(job)).status, 0, 'the job got its answer');
  });
  const m = await agent.waitFor(/attached the binary of a process that exited before it was looked at.*exe=(\S+)/);
  assert.equal(m[1], join(dir, 'job'), 'the path resolved through the shell\'s working directory');
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await shell.run(job);
    assert.equal(r.status, 0, 'the job got its answer');
    runs.push(r.pid);
  }
  const spans = await collector.waitForSpans((s) => runs.every((pid) => s.some((x) => x.kind === 'CLIENT' && x.resource['process.pid'] === pid)), 20_000);
  for (const pid of runs) {
    const mine = spans.filter((x) => x.kind === 'CLIENT' && x.resource['process.pid'] === pid);
    assert.equal(mine.length, 1, `one client span of run ${pid}`);
    assert.equal(attributeText(mine[0]!.resource['process.executable.path']), join(dir, 'job'));
  }
  assert.doesNotMatch(agent.log(), /executable cannot be found.*path=\.\/job/, 'never said unresolved');
});

test('a Go job run by a relative path whose parent is gone too: counted by reason and said once for its path', { skip: skipUnlessBpf(), timeout: 120_000 }, async (t) => {
  const dir = join(work, 'unresolved');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(goClient, join(dir, 'lostjob'));
  // a script run by a relative path: its exec event names the interpreter (the file executed), found as such
  writeFileSync(join(dir, 'lostscript.sh'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  const agent = await startAgent(['--include-exe', `${dir}/**`, '--exporter', 'none']);
  t.after(() => agent.stop());
  /** The job (after a script) from a shell that exits after it (`; exit`: the shell forks, it does not exec the job). */
  const runOnce = (): Promise<void> => new Promise((resolve, reject) => {
    const c = spawn('sh', ['-c', './lostscript.sh; ./lostjob -get http://127.0.0.1:1/; exit 0'], { cwd: dir, stdio: 'ignore' });
    c.once('error', reject);
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`sh exited with ${code}`))));
  });
  await whileStopped(agent, async () => {
    for (let i = 0; i < 3; i++) await runOnce();
  });
  await agent.waitFor(/executable cannot be found.*path=\.\/lostjob.*reason=cwd_gone/);
  // the first metric scrape comes after the exec events were read (the log line above)
  const text = await scrapeMetrics(agent);
  assert.ok(metricSum(text, 'gotrail_processes_unexamined_total', { reason: 'cwd_gone' }) >= 3, text.split('\n').filter((l) => l.includes('unexamined')).join('\n'));
  assert.equal(agent.log().split('\n').filter((l) => /executable cannot be found.*path=\.\/lostjob/.test(l)).length, 1, 'said once for its path');
  assert.doesNotMatch(agent.log(), /attached the binary of a process that exited/, 'nothing attached');
  assert.doesNotMatch(agent.log(), /executable cannot be found.*lostscript/, 'a script is found by its interpreter');
});
