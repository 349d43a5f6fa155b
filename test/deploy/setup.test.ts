/**
 * deploy/setup.sh as a newcomer meets it: no terminal escape codes in its
 * output unless that output is a terminal (and NO_COLOR is unset), and
 * `--demo` (what `npm run demo` runs) builds only what the demo needs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/agent-process.ts';

const ESC = '\x1b';

function setup(args: string[], env: Record<string, string> = {}): { code: number | null; out: string } {
  const r = spawnSync('bash', [join(repoRoot, 'deploy', 'setup.sh'), ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout + r.stderr };
}

/** Runs set-up with a terminal as its output (util-linux `script`); returns what the terminal got. */
function setupOnTerminal(env: Record<string, string>): { code: number | null; out: string } {
  const r = spawnSync('script', ['-qec', `bash ${join(repoRoot, 'deploy', 'setup.sh')}`, '/dev/null'], {
    encoding: 'utf8', timeout: 300_000, env: { ...process.env, GOTRAIL_SETUP_SKIP_TESTS: '1', ...env },
  });
  return { code: r.status, out: r.stdout };
}

const canSetup = process.getuid?.() === 0 ? false : 'set-up installs Debian packages: needs root';

test('set-up writes no escape codes into a pipe or a log; on a terminal it does, unless NO_COLOR is set', { skip: canSetup }, () => {
  const piped = setup([]);
  assert.equal(piped.code, 0, piped.out);
  assert.match(piped.out, /^\[setup\] ready$/m);
  assert.ok(!piped.out.includes(ESC), `escape codes in piped output:\n${JSON.stringify(piped.out)}`);
  const tty = setupOnTerminal({ NO_COLOR: '' });
  assert.equal(tty.code, 0, tty.out);
  assert.ok(tty.out.includes(`${ESC}[1m[setup]${ESC}[0m ready`), JSON.stringify(tty.out));
  const noColor = setupOnTerminal({ NO_COLOR: '1' });
  assert.equal(noColor.code, 0, noColor.out);
  assert.match(noColor.out, /\[setup\] ready/);
  assert.ok(!noColor.out.includes(ESC), JSON.stringify(noColor.out));
});

test('set-up refuses an unknown option', () => {
  const r = setup(['--everything']);
  assert.equal(r.code, 2);
  assert.match(r.out, /setup: unknown option --everything \(expected --demo or nothing\)/);
});

test('`npm run demo` sets up only what the demo needs: its two Go programs, no test programs or test tools', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  assert.match(pkg.scripts['demo']!, /^bash deploy\/setup\.sh --demo && /);
  assert.match(pkg.scripts['test']!, /^bash deploy\/setup\.sh && /, 'npm test sets up everything');
  const build = mkdtempSync(join(tmpdir(), 'gotrail-setup-plan-'));
  try {
    // what make would build into an empty build directory (-n: nothing is built)
    const plan = (vars: string[]): string => {
      // NODE as set-up passes it: under npm the environment's NODE is npm's own Node, which may be too old to run TypeScript
      const r = spawnSync('make', ['-n', '--no-print-directory', '-f', join(repoRoot, 'deploy', 'build.mk'), `NODE=${join(repoRoot, 'deploy', 'node')}`, `BUILD=${build}`, ...vars], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const programs = (out: string): string[] => [...out.matchAll(/building test program (\S+) \((\S+), (\S+)\)/g)].map((m) => `${m[1]} ${m[2]} ${m[3]}`).sort();
    // what setup.sh --demo asks make for
    const setupSh = readFileSync(join(repoRoot, 'deploy', 'setup.sh'), 'utf8');
    assert.match(setupSh, /\$\{skip_tests:\+SKIP_TESTS=1\} \$\{demo:\+DEMO=1\}/);
    const demo = plan(['SKIP_TESTS=1', 'DEMO=1']);
    assert.deepEqual(programs(demo), ['demo-service go1.26 plain', 'shop go1.26 plain']);
    assert.doesNotMatch(demo, /OpenTelemetry Collector|deployment validators/);
    // an image or a host install: the demo's first system only
    assert.deepEqual(programs(plan(['SKIP_TESTS=1'])), ['demo-service go1.26 plain']);
    const all = plan([]);
    assert.match(all, /building test program httpserver \(go1\.19, plain\)/);
    assert.match(all, /building the OpenTelemetry Collector/);
  } finally {
    rmSync(build, { recursive: true, force: true });
  }
});
