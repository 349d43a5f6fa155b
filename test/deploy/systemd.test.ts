/**
 * The systemd service as a host receives it: deploy/systemd/install.sh into a
 * scratch root, then `systemd-analyze verify` (unit syntax, every command
 * present and executable) and `systemd-analyze security` (the sandbox's
 * exposure score) on the installed unit; and the agent's log lines carrying
 * their syslog priority when stderr is the journal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/agent-process.ts';
import { BATCHER_DEFAULTS } from '../../daemon/export/batcher.ts';

/** The highest exposure accepted (systemd's scale: 0 safest … 10; the unit scores 3.3 with systemd 252). */
const MAX_EXPOSURE = 3.5;

function sh(cmd: string, args: string[], env: Record<string, string> = {}): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd: repoRoot, encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 16 << 20 });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout + r.stderr };
}

const skip = process.getuid?.() !== 0 ? 'install.sh runs as root' : spawnSync('systemd-analyze', ['--version']).status !== 0 ? 'needs systemd-analyze' : false;

test('install.sh installs a unit that systemd-analyze verifies, with a sandbox exposure of at most 3.5', { skip, timeout: 300_000 }, (t) => {
  const root = mkdtempSync(join(tmpdir(), 'gotrail-systemd-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const inst = sh('bash', ['deploy/systemd/install.sh', '--root', root]);
  assert.equal(inst.status, 0, inst.out);
  for (const f of ['etc/systemd/system/gotrail.service', 'etc/default/gotrail', 'etc/gotrail/config.yaml', 'opt/gotrail/daemon/bin/gotrail', 'opt/gotrail/.tools/node/bin/node', 'opt/gotrail/build/probes/gotrail.bpf.o', 'opt/gotrail/daemon/native/build/Release/gotrail_native.node', 'opt/gotrail/docs/operations.md']) {
    assert.ok(existsSync(join(root, f)), `${f} installed`);
  }
  assert.ok(!existsSync(join(root, 'opt/gotrail/node_modules/typescript')), 'no development dependencies');
  // both may hold collector credentials (OTLP headers): no other user reads them
  assert.equal(statSync(join(root, 'etc/gotrail/config.yaml')).mode & 0o777, 0o600);
  assert.equal(statSync(join(root, 'etc/default/gotrail')).mode & 0o777, 0o600);
  // the installed Node runs the installed daemon
  const version = sh(join(root, 'opt/gotrail/daemon/bin/gotrail'), ['--version']);
  assert.equal(version.status, 0, version.out);

  // a second install (an upgrade) keeps the operator's files
  const edited = readFileSync(join(root, 'etc/default/gotrail'), 'utf8') + 'GOTRAIL_ARGS=--log-level debug\n';
  writeFileSync(join(root, 'etc/default/gotrail'), edited);
  const again = sh('bash', ['deploy/systemd/install.sh', '--root', root]);
  assert.equal(again.status, 0, again.out);
  assert.equal(readFileSync(join(root, 'etc/default/gotrail'), 'utf8'), edited);

  // systemd's own units (targets the unit orders against) and the commands it names
  mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
  cpSync('/lib/systemd/system', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  cpSync('/usr/bin/kill', join(root, 'usr/bin/kill'));
  symlinkSync('usr/bin', join(root, 'bin'));

  // the stop's flush gives up after the export timeout; detaching comes after it
  const stopSec = Number(/^TimeoutStopSec=(\d+)$/m.exec(readFileSync(join(root, 'etc/systemd/system/gotrail.service'), 'utf8'))?.[1]);
  assert.ok(stopSec * 1000 >= BATCHER_DEFAULTS.exportTimeoutMillis + 10_000, `TimeoutStopSec=${stopSec} leaves time to detach after a flush that times out`);

  // a reload (SIGHUP) in the first tens of milliseconds of a start, before
  // Node runs the launcher's preload, ends the agent by its signal: a clean
  // exit to systemd (SIGHUP is one of its four clean signals), which
  // Restart=on-failure would leave stopped
  const unit = readFileSync(join(root, 'etc/systemd/system/gotrail.service'), 'utf8');
  assert.match(unit, /^Restart=on-failure$/m);
  assert.match(unit, /^RestartForceExitStatus=(.* )?SIGHUP( .*)?$/m, 'an agent a reload ended while it started is started again');

  const verify = sh('systemd-analyze', ['verify', `--root=${root}`, 'gotrail.service']);
  assert.equal(verify.status, 0, verify.out);
  assert.equal(verify.out.trim(), '', 'no warning');

  const security = sh('systemd-analyze', ['security', '--offline=true', `--root=${root}`, '--no-pager', 'gotrail.service'], { SYSTEMD_COLORS: '0' });
  const m = /Overall exposure level for gotrail\.service: (\d+\.\d) (\w+)/.exec(security.out);
  assert.ok(m, security.out);
  const score = Number(m[1]);
  t.diagnostic(`systemd-analyze security: exposure ${score} ${m[2]}`);
  assert.ok(score <= MAX_EXPOSURE, `exposure ${score} > ${MAX_EXPOSURE}:\n${security.out}`);
  for (const line of ['NoNewPrivileges=', 'ProtectSystem=', 'PrivateTmp=', 'ProtectKernelModules=', 'SystemCallFilter=~@mount', 'CapabilityBoundingSet=~CAP_SYS_ADMIN', 'RestrictNamespaces=~user']) {
    assert.match(security.out, new RegExp(`✓ ${line.replace(/[~[\]()|*+.]/g, '\\$&')}`), `${line} is closed`);
  }
});

test('under systemd (stderr is the journal) log lines carry their syslog priority instead of a timestamp', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-journal-'));
  try {
    const file = join(dir, 'stderr');
    const logNode = (env: Record<string, string>): string => {
      const fd = openSync(file, 'w');
      const st = statSync(file, { bigint: true });
      const code = `import { createLogger } from ${JSON.stringify(join(repoRoot, 'daemon/util/log.ts'))};
const log = createLogger('debug'); log.debug('d'); log.info('gotrail running', { exporter: 'otlp' }); log.warn('w', { pid: 7 }); log.error('e');`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'ignore', fd], env: { ...process.env, ...env, JOURNAL_STREAM: env.JOURNAL_STREAM === 'self' ? `${st.dev}:${st.ino}` : (env.JOURNAL_STREAM ?? '') } });
      closeSync(fd);
      assert.equal(r.status, 0);
      return readFileSync(file, 'utf8');
    };
    assert.equal(logNode({ JOURNAL_STREAM: 'self' }), '<7>DEBUG d\n<6>INFO  gotrail running exporter=otlp\n<4>WARN  w pid=7\n<3>ERROR e\n');
    // JOURNAL_STREAM inherited from a parent whose stderr was the journal: not ours
    assert.match(logNode({ JOURNAL_STREAM: '1:2' }), /^\d{4}-\d\d-\d\dT\S+ DEBUG d\n/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
