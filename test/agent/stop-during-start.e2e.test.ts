/**
 * Stopping right after start-up: the start-up's background work (the uprobe
 * hit cost calibration) is cut short by stopping, which is no failure, so the
 * agent stops cleanly, without a warning.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { gotrailBin } from '../support/agent-process.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

test('SIGTERM right after "gotrail running" stops with exit code 0, without a calibration warning or an error', { skip: skipUnlessBpf() }, async () => {
  // a selection that matches nothing: the test is about the agent alone
  const child = spawn(gotrailBin, ['run', '--exporter', 'none', '--metrics-address', '127.0.0.1:0', '--include-exe', '/nonexistent/**'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  let signalled = false;
  const onData = (d: Buffer): void => {
    text += d.toString();
    if (!signalled && /gotrail running /.test(text)) {
      signalled = true;
      child.kill('SIGTERM');
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(killer);
  assert.ok(signalled, text);
  assert.equal(code, 0, text);
  assert.match(text, / INFO {2}stopping/);
  // the calibration still running when stopping closed the BPF object
  assert.doesNotMatch(text, /calibration failed/, text);
  assert.doesNotMatch(text, / ERROR /, text);
});
