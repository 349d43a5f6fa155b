/**
 * A process that exits before the agent looks at it is judged by the path
 * execve was given (its binary is attached for the next run). By then that
 * path may name another file: here a FIFO, which any user can put in a
 * directory they write to. Opening a FIFO for reading waits for a writer,
 * and used to stop the agent's whole thread there: no span, no scan, no
 * /healthz, on the whole node. It is refused like any other file that is
 * not the one executed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, startAgent } from '../support/agent-process.ts';
import { httpRequest, startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const work = join(repoRoot, 'build', 'test-replaced-path');
const program = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');

test('an exited process whose path names a FIFO by the time the agent reads its exec: the agent goes on (it used to wait for a writer forever)', { skip: skipUnlessBpf() }, async (t) => {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const shortLived = join(work, 'short-lived');
  const server = join(work, 'server');
  copyFileSync(program, shortLived);
  copyFileSync(program, server);
  const agent = await startAgent(['--exporter', 'none', '--include-exe', `${work}/**`]);
  t.after(() => agent.stop());
  const pid = agent.child.pid!;
  // the agent, stopped, reads the exec event only once the process is gone
  // and its path replaced (the launcher execs Node: this pid is the agent)
  process.kill(pid, 'SIGSTOP');
  try {
    const run = spawnSync(shortLived, ['-get', 'http://127.0.0.1:1/'], { timeout: 10_000 });
    assert.equal(run.status, 1, 'the short-lived Go client ran and exited (connection refused)');
    rmSync(shortLived);
    assert.equal(spawnSync('mkfifo', [shortLived]).status, 0);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  // exec events are read in order: a process started after it is traced
  // only once the agent got past the short-lived one's
  const s = await startGoServer(server);
  t.after(() => s.stop());
  await agent.waitTraced(s.pid);
  const health = await httpRequest((await agent.metricsUrl()).replace(/\/metrics$/, '/healthz'));
  assert.equal(health.status, 200);
  assert.equal(await agent.stop(), 0, 'and stops on SIGTERM');
});
