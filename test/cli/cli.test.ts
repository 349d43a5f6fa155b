/** The command line as scripts use it: help, version, usage errors and their exit codes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gotrailBin } from '../support/agent-process.ts';

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
    [['run', '--ring-buffer-bytes', '5000'], /--ring-buffer-bytes: expected a power of two from 4096 to 2147483648 \(bytes\), got "5000"/],
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
    ['--max-processes', '-16', /^gotrail: --max-processes: expected an integer from 16 to 134217728 \(processes\), got "-16"\n$/],
    ['--max-inflight', '1e9x', /^gotrail: --max-inflight: expected an integer from 16 to 134217728 \(requests\), got "1e9x"\n$/],
    ['--max-http-routes', '-1', /^gotrail: --max-http-routes: expected an integer >= 0 \(routes per service\), got "-1"\n$/],
    ['--ring-buffer-bytes', '-4096', /^gotrail: --ring-buffer-bytes: expected a power of two from 4096 to 2147483648 \(bytes\), got "-4096"\n$/],
    // beyond what the kernel makes: a ring buffer's size is a 32-bit count, a
    // hash map's buckets (16 bytes each) must fit in 32 bits; these used to
    // pass the checks and fail at load (12884901888 = 3 * 2^32 even passed as
    // a power of two: the check's bitwise arithmetic wrapped at 32 bits)
    ['--ring-buffer-bytes', '4294967296', /^gotrail: --ring-buffer-bytes: expected a power of two from 4096 to 2147483648 \(bytes\), got "4294967296"\n$/],
    ['--ring-buffer-bytes', '12884901888', /^gotrail: --ring-buffer-bytes: expected a power of two from 4096 to 2147483648 \(bytes\), got "12884901888"\n$/],
    ['--max-inflight', '134217729', /^gotrail: --max-inflight: expected an integer from 16 to 134217728 \(requests\), got "134217729"\n$/],
    ['--max-inflight', '9007199254740993', /^gotrail: --max-inflight: expected an integer from 16 to 134217728 \(requests\), got "9007199254740993"\n$/],
    ['--max-processes', '4294967312', /^gotrail: --max-processes: expected an integer from 16 to 134217728 \(processes\), got "4294967312"\n$/],
    ['--overhead-budget', '-2', /^gotrail: --overhead-budget: expected a percentage .* up to 100 \(e\.g\. 2%\), or 0 or off \(no budget\), got "-2"\n$/],
    // the cost is counted in the traced processes' own CPU time: more than 100% of it never happens
    ['--overhead-budget', '500%', /^gotrail: --overhead-budget: expected a percentage .* up to 100 \(e\.g\. 2%\), or 0 or off \(no budget\), got "500%": tracing's cost is counted in the traced processes' own CPU time, so it never exceeds 100% of it and a larger budget could never act \(for no budget: 0 or off\)\n$/],
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

test('GOTRAIL_OVERHEAD_BUDGET above 100% is a usage error (exit 2) saying why, as the flag and the file\'s key are', () => {
  const r = gotrailWithEnv({ GOTRAIL_OVERHEAD_BUDGET: '500%' }, 'run', '--exporter', 'none', '--metrics-address', 'off', '--include-exe', '/nonexistent/**', '--duration', '5');
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /^gotrail: GOTRAIL_OVERHEAD_BUDGET: expected a percentage .* up to 100 .*, got "500%": tracing's cost is counted in the traced processes' own CPU time, so it never exceeds 100% of it/);
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-cli-budget-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'overheadBudget: {percent: 500}\n');
    const f = gotrail('run', '--config', file);
    assert.equal(f.code, 2, f.err);
    assert.match(f.err, new RegExp(`^gotrail: ${file}: overheadBudget\\.percent: expected a percentage from 0 \\(off\\) to 100, got 500: tracing's cost is counted in the traced processes' own CPU time`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
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
    assert.match(r.err, new RegExp(`${file}: maps\\.maxInflight: expected an integer from 16 to 134217728 \\(requests\\), got 3`));
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

test('a map size beyond what the kernel makes is refused before anything loads (exit 2), naming the flag or the file\'s key, the range and the unit', () => {
  // before, these passed the checks, loaded the probes and failed there
  // (resize map …: Invalid argument), exit 1
  const r = gotrail('run', '--exporter', 'none', '--metrics-address', 'off', '--include-exe', '/nonexistent/**', '--max-inflight', '4294967296', '--duration', '5');
  assert.equal(r.code, 2, r.err);
  assert.equal(r.err, 'gotrail: --max-inflight: expected an integer from 16 to 134217728 (requests), got "4294967296"\n');
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-cli-maps-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'maps: {maxProcesses: 8589934592, ringBufferBytes: 4294967296}\nexporter: {kind: none}\nmetricsAddress: "off"\n');
    const f = gotrail('run', '--config', file, '--include-exe', '/nonexistent/**', '--duration', '5');
    assert.equal(f.code, 2, f.err);
    assert.equal(f.err, `gotrail: ${file}: maps.maxProcesses: expected an integer from 16 to 134217728 (processes), got 8589934592\n${file}: maps.ringBufferBytes: expected a power of two from 4096 to 2147483648 (bytes), got 4294967296\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
