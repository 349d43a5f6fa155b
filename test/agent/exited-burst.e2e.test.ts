/**
 * A burst of short-lived processes of a never-seen binary (a build step, a
 * cron job's workers) that all exit before the agent looks at them: the
 * binary is attached once, from the first, and said once in the log (each
 * of the others used to repeat it at info level, about a binary already
 * attached); the next process of it is traced from exec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, startAgent } from '../support/agent-process.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const work = join(repoRoot, 'build', 'test-exited-burst');
const BURST = 20;

/** Runs the Go client once (a GET to a closed port: it exits at once, status 1); resolves with its pid. */
function runOnce(bin: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn(bin, ['-get', 'http://127.0.0.1:1/'], { stdio: 'ignore' });
    c.once('error', reject);
    c.once('exit', (code) => (code === 1 ? resolve(c.pid!) : reject(new Error(`${bin} exited with ${code}`))));
  });
}

test('short-lived processes of a new binary that exit before the agent looks: the binary is attached and said once, the next process traced from exec', { skip: skipUnlessBpf() }, async (t) => {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const bin = join(work, 'client');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const agent = await startAgent(['--exporter', 'none', '--include-exe', `${work}/**`]);
  t.after(() => agent.stop());
  // stopped, the agent reads the burst's exec events once every process is gone
  process.kill(agent.child.pid!, 'SIGSTOP');
  try {
    await Promise.all(Array.from({ length: BURST }, () => runOnce(bin)));
  } finally {
    process.kill(agent.child.pid!, 'SIGCONT');
  }
  await agent.waitFor(/attached the binary of a process that exited before it was looked at/);
  // the next run is allowed at exec: traced, though it exits at once
  const pid = await runOnce(bin);
  await agent.waitTraced(pid);
  const said = agent.log().split('\n').filter((l) => /attached the binary of a process that exited before it was looked at/.test(l));
  assert.equal(said.length, 1, said.join('\n'));
  assert.equal(agent.log().split('\n').filter((l) => /tracing binary: attached/.test(l)).length, 1, 'attached once');
});
