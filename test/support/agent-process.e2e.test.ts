/**
 * The helper every end-to-end test starts `gotrail run` with
 * (test/support/agent-process.ts), with real agents: it must neither leave
 * an agent behind when a start fails nor add a process listener per agent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { randomUUID } from 'node:crypto';
import { startAgent } from './agent-process.ts';
import { skipUnlessBpf } from './privileges.ts';

/**
 * Pids of the Node.js processes (agents) whose command line holds `marker`.
 * Not the launcher's shell: killed in its first milliseconds, the subshells
 * of its command substitutions (same command line) may end a moment later.
 */
function agentsWith(marker: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (basename(readlinkSync(`/proc/${d}/exe`)) === 'node' && readFileSync(`/proc/${d}/cmdline`, 'latin1').includes(marker)) out.push(Number(d));
    } catch {
      /* gone, or a kernel thread */
    }
  }
  return out;
}

test('a start that fails (not running in time) stops the agent before it throws: no agent is left behind', { skip: skipUnlessBpf() }, async () => {
  // a rule that selects nothing, unique to this start, to find its process by
  const marker = `/nonexistent/${randomUUID()}/**`;
  try {
    await assert.rejects(startAgent(['--exporter', 'none', '--include-exe', marker], {}, { startTimeoutMs: 1 }), /timed out waiting for \/gotrail running\//);
    assert.deepEqual(agentsWith(marker), [], 'that agent does not run on');
  } finally {
    // one left behind would hold this file's test process open (its pipes)
    for (const pid of agentsWith(marker)) process.kill(pid, 'SIGKILL');
  }
});

test('starting and stopping more agents than Node\'s default listener limit (10) adds one exit listener, and no warning', { skip: skipUnlessBpf() }, async () => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  const before = process.listenerCount('exit');
  try {
    for (let i = 0; i < 12; i++) {
      const agent = await startAgent(['--exporter', 'none', '--include-exe', '/nonexistent/**']);
      const added = process.listenerCount('exit') - before;
      assert.equal(await agent.stop(), 0);
      assert.ok(added <= 1, `${added} exit listeners added by ${i + 1} agents`);
    }
  } finally {
    process.off('warning', onWarning);
  }
  assert.deepEqual(warnings.filter((w) => /MaxListeners/.test(w)), []);
});
