/** The command line as scripts use it: help, version, usage errors and their exit codes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gotrailBin } from '../support/agent-process.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

function gotrail(...args: string[]): { code: number | null; out: string; err: string } {
  return gotrailWithEnv({}, ...args);
}

function gotrailWithEnv(env: Record<string, string>, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(gotrailBin, args, { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
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
    [['run', '--duration'], /--duration <value>' argument missing/],
    [['run', '--log-level', 'loud'], /--log-level/],
    [['run', '--metrics-address', 'nowhere'], /--metrics-address: expected host:port/],
    [['run', '--ring-buffer-bytes', '5000'], /--ring-buffer-bytes: expected an integer >= 4096, a power of two/],
    [['run', '--scan-interval', '1'], /--scan-interval/],
    [['run', '--no-such-flag'], /Unknown option '--no-such-flag'.* \('gotrail run --help' lists the options\)\n$/],
    [['run', '--max-queue-size', '0'], /--max-queue-size: expected an integer >= 1 \(spans\), got "0"/],
    [['run', '--schedule-delay', '1s'], /--schedule-delay: expected an integer >= 0 \(milliseconds\), got "1s"/],
  ];
  // every numeric flag, given a negative or a non-number: one line naming the flag, the value and what it accepts
  const numeric: Array<[string, string, RegExp]> = [
    ['--duration', '-1', /^gotrail: --duration: expected a number of seconds > 0 .*, got "-1"\n$/],
    ['--duration', '1m', /^gotrail: --duration: expected a number of seconds > 0 .*, got "1m"\n$/],
    ['--max-queue-size', '-5', /^gotrail: --max-queue-size: expected an integer >= 1 \(spans\), got "-5"\n$/],
    ['--max-export-batch-size', '-1', /^gotrail: --max-export-batch-size: expected an integer >= 1 \(spans\), got "-1"\n$/],
    ['--export-timeout', '-1', /^gotrail: --export-timeout: expected an integer >= 0 \(milliseconds \(0: no limit\)\), got "-1"\n$/],
    ['--max-concurrent-exports', 'two', /^gotrail: --max-concurrent-exports: expected an integer >= 1 \(exports\), got "two"\n$/],
    ['--scan-interval', '-100', /^gotrail: --scan-interval: expected an integer >= 50 \(milliseconds\), got "-100"\n$/],
    ['--linger', '-.5', /^gotrail: --linger: expected an integer >= 0 \(milliseconds; 0: detach with the last process\), got "-.5"\n$/],
    ['--max-processes', '-16', /^gotrail: --max-processes: expected an integer >= 16 \(processes\), got "-16"\n$/],
    ['--max-inflight', '1e9x', /^gotrail: --max-inflight: expected an integer >= 16 \(requests\), got "1e9x"\n$/],
    ['--max-http-routes', '-1', /^gotrail: --max-http-routes: expected an integer >= 0 \(routes per service\), got "-1"\n$/],
    ['--ring-buffer-bytes', '-4096', /^gotrail: --ring-buffer-bytes: expected an integer >= 4096, a power of two \(bytes\), got "-4096"\n$/],
    ['--overhead-budget', '-2', /^gotrail: --overhead-budget: expected a percentage .* up to 100 \(e\.g\. 2%\), or 0 or off \(no budget\), got "-2"\n$/],
    ['--overhead-budget-window', '-1000', /^gotrail: --overhead-budget-window: expected an integer >= 1000 \(milliseconds\), got "-1000"\n$/],
    ['--metrics-address', '-1', /^gotrail: --metrics-address: expected host:port \(a port up to 65535\) or off, got "-1"\n$/],
    ['--metrics-address', '127.0.0.1:70000', /^gotrail: --metrics-address: expected host:port \(a port up to 65535\) or off, got "127\.0\.0\.1:70000"\n$/],
    // beyond what a timer waits (Node fires it after 1 ms instead): the agent stopped at once, every export timed out
    ['--duration', '2147484', /^gotrail: --duration: expected a number of seconds > 0 and at most 2147483 \(about 24\.8 days: the longest a timer waits; leave it out to run until SIGINT\/SIGTERM\), got "2147484"\n$/],
    ['--export-timeout', '3000000000', /^gotrail: --export-timeout: expected at most 2147483647 \(milliseconds, about 24\.8 days: the longest a timer waits\), got "3000000000"\n$/],
  ];
  for (const [flag, value, re] of numeric) cases.push([['run', flag, value], re]);
  cases.push([['run', '--duration=-1'], numeric[0]![2]]);
  for (const [args, re] of cases) {
    const r = gotrail(...args);
    assert.equal(r.code, 2, `${args.join(' ')} exits 2 (got ${r.code}: ${r.err})`);
    assert.match(r.err, re);
  }
});

test('unusable OpenTelemetry environment variables are no usage error (they are ignored with a warning, test/export/settings.e2e.test.ts): a bad flag is', () => {
  const r = gotrailWithEnv({ OTEL_TRACES_EXPORTER: 'zipkin', OTEL_BSP_MAX_QUEUE_SIZE: 'lots', OTEL_BSP_EXPORT_TIMEOUT: '30s', OTEL_SDK_DISABLED: 'yes' }, 'run', '--log-level', 'loud');
  assert.equal(r.code, 2);
  assert.match(r.err, /^gotrail: --log-level: expected debug, info, warn or error, got "loud"\n$/);
});

test('an invalid configuration file stops the start with exit 2, naming the file, each bad key and what was expected', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-cli-config-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'exporter:\n  kind: kafka\nmaps:\n  maxInflight: 3\nselection:\n  includeExe: /srv\n');
    const r = gotrail('run', '--config', file);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, new RegExp(`${file}: exporter\\.kind: expected one of otlp, console, none, got "kafka"`));
    assert.match(r.err, new RegExp(`${file}: maps\\.maxInflight: expected an integer >= 16 \\(requests\\), got 3`));
    assert.match(r.err, new RegExp(`${file}: selection\\.includeExe: expected a list, got "/srv"`));
    const missing = gotrail('run', '--config', join(dir, 'absent.yaml'));
    assert.equal(missing.code, 2);
    assert.match(missing.err, /absent\.yaml: cannot read: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a metrics address in use stops the start at once, before the probes load, naming the address and the setting to change', async () => {
  const { createServer } = await import('node:net');
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  const port = (busy.address() as { port: number }).port;
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-cli-port-'));
  try {
    const t0 = Date.now();
    const r = gotrail('run', '--exporter', 'none', '--metrics-address', `127.0.0.1:${port}`, '--duration', '30');
    assert.equal(r.code, 1, r.err);
    assert.equal(r.err, `gotrail: cannot serve metrics on 127.0.0.1:${port}: the address is already in use (another gotrail?); choose another with --metrics-address (host:port, or off)\n`);
    // nothing was started: no probe loaded, no calibration, no other line
    assert.ok(Date.now() - t0 < 25_000, `took ${Date.now() - t0} ms`);
    const file = join(dir, 'config.yaml');
    writeFileSync(file, `metricsAddress: 127.0.0.1:${port}\nexporter: {kind: none}\n`);
    const f = gotrail('run', '--config', file, '--duration', '30');
    assert.equal(f.code, 1, f.err);
    assert.match(f.err, new RegExp(`^gotrail: cannot serve metrics on 127\\.0\\.0\\.1:${port}: the address is already in use .*; choose another with metricsAddress in the configuration file \\(host:port, or off\\)\\n$`));
  } finally {
    busy.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without root or CAP_BPF the start stops with one line saying what is needed (exit 3)', { skip: process.getuid?.() === 0 ? false : 'needs root, to drop every capability' }, () => {
  // the same user (so the checkout stays readable), without any capability
  const r = spawnSync('setpriv', ['--bounding-set=-all', '--inh-caps=-all', gotrailBin, 'run', '--exporter', 'none', '--metrics-address', 'off'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 3, r.stderr);
  assert.equal(r.stderr, 'gotrail: needs root (e.g. sudo), or the capabilities CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_KILL, CAP_DAC_READ_SEARCH, CAP_SYS_RESOURCE, CAP_NET_ADMIN and CAP_SYS_NICE: this process has neither CAP_BPF nor CAP_SYS_ADMIN\n');
});

test('a map size the maps cannot be made with stops the start naming the setting that sized them, the flag or the file\'s key', { skip: skipUnlessBpf() }, () => {
  // beyond a map's 32-bit count of entries: refused whatever the machine's memory
  const r = gotrail('run', '--exporter', 'none', '--metrics-address', 'off', '--include-exe', '/nonexistent/**', '--max-inflight', '4294967296');
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /^gotrail: starting the agent failed: .*resize map \S+: Invalid argument/m);
  assert.match(r.err, /\nthe BPF maps are sized by --max-inflight 4294967296: the maps could not be made at that size: try smaller values\n$/);
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-cli-maps-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'maps: {maxProcesses: 8589934592}\nexporter: {kind: none}\nmetricsAddress: "off"\n');
    const f = gotrail('run', '--config', file, '--include-exe', '/nonexistent/**');
    assert.equal(f.code, 1, f.err);
    assert.match(f.err, /\nthe BPF maps are sized by maps\.maxProcesses: 8589934592 \(config file\): the maps could not be made at that size: try smaller values\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
