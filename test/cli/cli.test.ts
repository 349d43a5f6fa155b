/** The command line as scripts use it: help, version, usage errors and their exit codes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { gotrailBin } from '../support/agent-process.ts';

function gotrail(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(gotrailBin, args, { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('help and version exit 0; no command prints help and exits 2', () => {
  for (const args of [['--help'], ['help'], ['run', '--help'], ['inspect', '--help'], ['demo', '--help']]) {
    const r = gotrail(...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
    assert.match(r.out, /Usage: gotrail/);
  }
  assert.match(gotrail('version').out, /^gotrail \d+\.\d+\.\d+/);
  const none = gotrail();
  assert.equal(none.code, 2);
  assert.match(none.out, /Commands:/);
});

test('usage errors exit 2 and name the problem', () => {
  const cases: Array<[string[], RegExp]> = [
    [['frobnicate'], /unknown command "frobnicate"/],
    [['run', '--exporter', 'kafka'], /--exporter: expected otlp, console or none/],
    [['run', '--log-level', 'loud'], /--log-level/],
    [['run', '--metrics-address', 'nowhere'], /--metrics-address: expected host:port/],
    [['run', '--ring-buffer-bytes', '5000'], /--ring-buffer-bytes: expected an integer >= 4096, a power of two/],
    [['run', '--scan-interval', '1'], /--scan-interval/],
    [['run', '--no-such-flag'], /Unknown option '--no-such-flag'/],
  ];
  for (const [args, re] of cases) {
    const r = gotrail(...args);
    assert.equal(r.code, 2, `${args.join(' ')} exits 2 (got ${r.code}: ${r.err})`);
    assert.match(r.err, re);
  }
});
