/** Finding other gotrail agents by their command lines, in a /proc made for the test, and on this host. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { otherAgents } from '../../daemon/agent/other-agents.ts';
import { startAgent } from '../support/agent-process.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

test('otherAgents lists processes running `gotrail run`, not this one, not `gotrail inspect`, not other programs naming main.ts', () => {
  const proc = mkdtempSync(join(tmpdir(), 'gotrail-proc-'));
  const cmdline = (pid: number | string, args: string[]): void => {
    mkdirSync(join(proc, String(pid)));
    writeFileSync(join(proc, String(pid), 'cmdline'), args.map((a) => a + '\0').join(''));
  };
  try {
    cmdline(10, ['/opt/gotrail/deploy/node', '--max-semi-space-size=4', '/opt/gotrail/daemon/cli/main.ts', 'run', '--exporter', 'console']);
    cmdline(11, ['/usr/bin/node', '/srv/gotrail/daemon/cli/main.ts', 'inspect', '1234']);
    cmdline(12, ['/usr/bin/vim', '/srv/gotrail/daemon/cli/main.ts', 'run']);
    cmdline(13, ['/usr/bin/python3', 'run.py']);
    cmdline(14, ['node', 'daemon/cli/main.ts', 'run']); // started from the install directory
    cmdline(16, ['/opt/gotrail/deploy/node', '--enable-source-maps', '/opt/gotrail/build/agent/main.mjs', 'run']); // the bundle, as the launcher runs it
    cmdline(17, ['/opt/gotrail/deploy/node', '/opt/gotrail/build/agent/main.mjs', 'inspect', '1234']);
    cmdline(99, ['/opt/gotrail/deploy/node', '/opt/gotrail/daemon/cli/main.ts', 'run']); // "this" agent
    mkdirSync(join(proc, '15')); // gone: no cmdline left
    mkdirSync(join(proc, 'self'));
    assert.deepEqual(otherAgents(proc, 99), [10, 14, 16]);
  } finally {
    rmSync(proc, { recursive: true, force: true });
  }
});

test('an agent started beside another warns, naming the other\'s pid', { skip: skipUnlessBpf() }, async () => {
  const first = await startAgent(['--exporter', 'none', '--include-exe', '/nonexistent/**']);
  const second = await startAgent(['--exporter', 'none', '--include-exe', '/nonexistent/**']);
  try {
    const m = await second.waitFor(/WARN {2}another gotrail agent runs on this node: .* pids=(\S+)/);
    assert.ok(m[1]!.split(',').map(Number).includes(first.child.pid!), m[0]);
    assert.ok(!m[1]!.split(',').map(Number).includes(second.child.pid!), m[0]);
  } finally {
    assert.equal(await second.stop(), 0, second.log().slice(-3000));
    assert.equal(await first.stop(), 0, first.log().slice(-3000));
  }
});
