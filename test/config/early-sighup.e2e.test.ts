/**
 * A SIGHUP that arrives while the agent starts — a service manager's reload,
 * a configuration tool, a closing terminal — does not kill it (Node's
 * default action for SIGHUP, exit 129): the launcher's preload catches it
 * from the first moment JavaScript runs, and the agent reloads once it has
 * started, saying the signal came during start.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { gotrailBin } from '../support/agent-process.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

/** Whether the process has a handler for `signal` (SigCgt of /proc/PID/status, bit signal - 1). */
function catches(pid: number, signal: number): boolean {
  const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m !== null && ((BigInt(`0x${m[1]}`) >> BigInt(signal - 1)) & 1n) === 1n;
}

const SIGHUP = 1;

test('a SIGHUP while the agent is held reading its configuration is caught, and taken as a reload once the agent runs', { skip: skipUnlessBpf() }, async () => {
  // The configuration comes through a pipe (`--config <(…)`) whose writer
  // waits for a byte on its standard input: the agent's start waits there,
  // reading it, until the test lets it go. A pipe cannot be read again (its
  // writer is gone: it would read as an empty configuration), so the reload
  // the early SIGHUP asks for says there is nothing to reload.
  const child = spawn('bash', ['-c', 'exec "$0" run --config <(head -c1 >/dev/null; printf "logLevel: info\\n") "$@"', gotrailBin,
    '--metrics-address', 'off', '--exporter', 'none', '--include-exe', '/nonexistent/**'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let log = '';
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const changed: Array<() => void> = [];
  const wake = (): void => void changed.splice(0).forEach((f) => f());
  child.stdout.on('data', (d: Buffer) => ((log += d.toString()), wake()));
  child.stderr.on('data', (d: Buffer) => ((log += d.toString()), wake()));
  const exited = new Promise<void>((r) => child.once('exit', (code, signal) => ((exit = { code, signal }), wake(), r())));
  const until = async (what: string, ok: () => boolean, timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!ok()) {
      if (exit) assert.fail(`gotrail exited (${JSON.stringify(exit)}) before ${what}:\n${log}`);
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}:\n${log}`);
      // woken by output or exit, else polled (a /proc state has no event)
      await new Promise<void>((r) => {
        const t = setTimeout(r, 5);
        changed.push(() => (clearTimeout(t), r()));
      });
    }
  };
  try {
    // once the shells have become Node (bash, which the launcher also is, catches SIGHUP its own way)
    const isNode = (): boolean => /^node/.test(basename(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0')[0]!));
    await until('SIGHUP caught by the agent (SigCgt)', () => isNode() && catches(child.pid!, SIGHUP), 10_000);
    assert.doesNotMatch(log, /gotrail running/, 'still starting');
    child.kill('SIGHUP');
    // the start goes on only now: the configuration arrives after the signal
    child.stdin.end('x');
    await until('the agent runs', () => /gotrail running/.test(log));
    await until('the early SIGHUP taken', () => /reload asked, but the configuration was read from a pipe, which cannot be read again: nothing to reload \(restart to change it\) file=\S+ trigger=SIGHUP\n/.test(log));
    assert.match(log, /INFO +SIGHUP received while starting: reloading the configuration now signals=1\n/);
    assert.equal(exit, undefined, 'alive');
  } finally {
    if (!exit) child.kill('SIGTERM');
    await exited;
  }
  assert.deepEqual(exit, { code: 0, signal: null }, `gotrail run exits 0 on SIGTERM:\n${log.slice(-3000)}`);
});
