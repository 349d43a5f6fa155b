/**
 * The configuration file as a user writes it: every problem names the key's
 * path and what was expected; flags, variables, file and defaults combine
 * in the documented order; the example file shipped in deploy/ is valid; the
 * sampler's settings become the probes' rule (TraceIdRatioBased thresholds).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkConfig, ConfigFileError, configFileSchema, loadConfigFile, parseConfig } from '../../daemon/config/file.ts';
import { DEFAULT_OTLP_TIMEOUT_MS, DEFAULT_OTLP_TRACES_ENDPOINT, resolveRunConfig, RunConfigError, startOnlyChanges } from '../../daemon/config/resolve.ts';
import { z } from 'zod';
import { DEFAULT_SCAN_INTERVAL_MS } from '../../daemon/agent/agent.ts';
import { DEFAULT_LINGER_MS } from '../../daemon/agent/attachments.ts';
import { DEFAULT_MAX_HTTP_ROUTES } from '../../daemon/spans/http-route.ts';
import { CONFIG_FILE_MAX_BYTES } from '../../daemon/config/read.ts';
import { bpfSamplerConfig, describeSampler, ratioThreshold } from '../../daemon/export/sampler.ts';
import { SamplerFlags, SamplerRoot } from '../../daemon/generated/layouts.ts';
import { repoRoot } from '../support/agent-process.ts';
import { decide } from '../../daemon/agent/selection.ts';
import { BUDGET_OVER_100, DEFAULT_BUDGET_WINDOW_MS } from '../../daemon/agent/budget.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import type { OtlpProtoTraceExporter } from '../../daemon/export/otlp-exporter.ts';

function problems(text: string): string[] {
  try {
    parseConfig(text, 'config.yaml');
  } catch (e) {
    assert.ok(e instanceof ConfigFileError, String(e));
    return e.problems;
  }
  assert.fail('expected the file to be rejected');
}

test('schema errors name the path of every bad key and what was expected', () => {
  assert.deepEqual(problems([
    'selection:',
    '  includeExe: ["/srv/**", 3]',
    '  excludeName: debug-*',
    'exporter:',
    '  kind: jaeger',
    '  batch:',
    '    maxQueueSize: 0',
    '    scheduleDelayMillis: 1.5',
    '  otlp:',
    '    endpoint: ftp://collector',
    '    headrs: {}',
    'sampling: {sampler: parentbased_sometimes, ratio: 2}',
    'maps: {ringBufferBytes: 5000}',
    'metricsAddress: everywhere',
    'logLevel: loud',
    'lingerMillis: "30s"',
    'tracing: on',
  ].join('\n')).sort(), [
    'exporter.batch.maxQueueSize: expected an integer >= 1 (spans), got 0',
    'exporter.batch.scheduleDelayMillis: expected an integer >= 0 (milliseconds), got 1.5',
    'exporter.kind: expected one of otlp, console, none, got "jaeger"',
    'exporter.otlp.endpoint: expected an http:// or https:// URL, got "ftp://collector"',
    'exporter.otlp.headrs: unknown key (expected one of endpoint, headers, timeoutMillis)',
    'lingerMillis: expected an integer >= 0 (milliseconds), got "30s"',
    'logLevel: expected one of debug, info, warn, error, got "loud"',
    'maps.ringBufferBytes: expected a power of two from 4096 to 2147483648 (bytes), got 5000',
    'metricsAddress: expected host:port (a port up to 65535) or off, got "everywhere"',
    'sampling.ratio: expected a number from 0 to 1, got 2',
    'sampling.sampler: expected one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio, got "parentbased_sometimes"',
    'selection.excludeName: expected a list, got "debug-*"',
    'selection.includeExe[1]: expected a string, got 3',
    'tracing: unknown key (expected one of selection, kubernetes, exporter, sampling, metricsAddress, adminAccess, scanIntervalMillis, lingerMillis, maps, maxHttpRoutes, dbQueryText, overheadBudget, kafkaMessageKey, logLevel, propagation, debugProbeHits)',
  ].sort());
});

test('metricsAddress in the file: a port beyond 65535 is the file\'s error, named by its key', () => {
  assert.deepEqual(checkConfig({ metricsAddress: '127.0.0.1:99999' }).problems, ['metricsAddress: expected host:port (a port up to 65535) or off, got "127.0.0.1:99999"']);
  assert.deepEqual(checkConfig({ metricsAddress: '70000' }).problems, ['metricsAddress: expected host:port (a port up to 65535) or off, got "70000"']);
  for (const ok of ['127.0.0.1:65535', '[::1]:9464', ':0', '9464', 'off']) assert.deepEqual(checkConfig({ metricsAddress: ok }).problems, [], ok);
});

test('a configuration path that is no configuration file (an endless device, a huge file) is refused after 1 MiB, not read forever', () => {
  assert.throws(() => loadConfigFile('/dev/zero'), { name: 'ConfigFileError', message: '/dev/zero: cannot read: larger than 1 MiB: not a configuration file?' });
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-config-'));
  const f = join(dir, 'config.yaml');
  // 1 MiB exactly (a comment padding a valid file) is read; one byte more is not
  const body = 'logLevel: debug\n#';
  writeFileSync(f, body + 'x'.repeat(CONFIG_FILE_MAX_BYTES - body.length));
  assert.equal(loadConfigFile(f).config.logLevel, 'debug');
  writeFileSync(f, body + 'x'.repeat(CONFIG_FILE_MAX_BYTES - body.length + 1));
  assert.throws(() => loadConfigFile(f), { name: 'ConfigFileError', message: `${f}: cannot read: larger than 1 MiB: not a configuration file?` });
});

test('the message of a rejected file starts each problem with the file name; YAML syntax errors give the line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-config-'));
  const f = join(dir, 'config.yaml');
  writeFileSync(f, 'selection: [1]\n');
  assert.throws(() => loadConfigFile(f), { name: 'ConfigFileError', message: `${f}: selection: expected a mapping, got a list` });
  writeFileSync(f, 'selection:\n  includeExe: [/a\nexporter: {kind: none}\n');
  assert.throws(() => loadConfigFile(f), (e: Error) => e instanceof ConfigFileError && /^.*config\.yaml: YAML: .* at line \d+, column \d+$/m.test(e.message));
  writeFileSync(f, 'logLevel: info\nlogLevel: debug\n');
  assert.throws(() => loadConfigFile(f), /Map keys must be unique/);
  assert.throws(() => loadConfigFile(join(dir, 'absent.yaml')), /absent\.yaml: cannot read: ENOENT/);
  writeFileSync(f, '# nothing set\n');
  assert.deepEqual(loadConfigFile(f).config, {});
});

/** Every leaf key path of the file's schema (`exporter.batch.maxQueueSize`), a mapping of values (headers) being a leaf. */
function schemaLeaves(schema: z.ZodType = configFileSchema, prefix = ''): string[] {
  const s = schema instanceof z.ZodOptional ? (schema.unwrap() as z.ZodType) : schema;
  if (!(s instanceof z.ZodObject)) return [prefix];
  return Object.entries(s.shape as Record<string, z.ZodType>).flatMap(([k, v]) => schemaLeaves(v, prefix ? `${prefix}.${k}` : k));
}

/** The `max_entries` of BPF map `name` as the probes' build declares it (probes/include/gotrail.h, the maps' one source). */
function builtMapSize(name: string): number {
  const header = readFileSync(join(repoRoot, 'probes', 'include', 'gotrail.h'), 'utf8');
  const m = new RegExp(`struct \\{[^}]*__uint\\(max_entries, ([^)]+)\\);[^}]*\\} ${name} SEC\\("\\.maps"\\)`).exec(header);
  assert.ok(m, `map ${name} in gotrail.h`);
  // a literal or a product of literals (2 * 1024 * 1024)
  assert.match(m[1]!, /^[\d\s*]+$/);
  return m[1]!.split('*').reduce((a, f) => a * Number(f.trim()), 1);
}

test('the example configuration in deploy/ has every key of the schema, each set to what the agent uses without it', () => {
  const path = join(repoRoot, 'deploy', 'config.example.yaml');
  const text = readFileSync(path, 'utf8');
  const { config } = loadConfigFile(path);
  const defaults = resolveRunConfig({}, {}, {});
  // what the agent uses when the key is absent, from where the agent takes it
  const expected: Record<string, unknown> = {
    ...Object.fromEntries(['includeExe', 'excludeExe', 'includeName', 'excludeName', 'includeCmdline', 'excludeCmdline', 'includeContainer', 'excludeContainer',
      'includeNamespace', 'excludeNamespace', 'includePodLabel', 'excludePodLabel'].map((k) => [`selection.${k}`, defaults.selection[k as keyof typeof defaults.selection] ?? []])),
    'selection.defaultExcludes': defaults.selection.defaultExcludes ?? true,
    kubernetes: defaults.kubernetes,
    'exporter.kind': defaults.export.exporter,
    'exporter.otlp.endpoint': DEFAULT_OTLP_TRACES_ENDPOINT,
    'exporter.otlp.headers': {},
    'exporter.otlp.timeoutMillis': DEFAULT_OTLP_TIMEOUT_MS,
    'exporter.batch.maxQueueSize': defaults.export.batcher.maxQueueSize,
    'exporter.batch.maxExportBatchSize': defaults.export.batcher.maxExportBatchSize,
    'exporter.batch.scheduleDelayMillis': defaults.export.batcher.scheduledDelayMillis,
    'exporter.batch.exportTimeoutMillis': defaults.export.batcher.exportTimeoutMillis,
    'exporter.batch.maxConcurrentExports': defaults.export.batcher.maxConcurrentExports,
    'sampling.sampler': defaults.sampling.sampler,
    'sampling.ratio': defaults.sampling.ratio,
    metricsAddress: defaults.metricsAddress,
    adminAccess: defaults.adminAccess,
    scanIntervalMillis: DEFAULT_SCAN_INTERVAL_MS,
    lingerMillis: DEFAULT_LINGER_MS,
    'maps.maxProcesses': builtMapSize('gt_processes'),
    'maps.maxInflight': builtMapSize('gt_goroutine_spans'),
    'maps.ringBufferBytes': builtMapSize('gt_events'),
    maxHttpRoutes: DEFAULT_MAX_HTTP_ROUTES,
    dbQueryText: defaults.dbQueryText,
    // off: the file's 0 is off, as the flag's
    'overheadBudget.percent': defaults.overheadBudget === undefined ? 0 : defaults.overheadBudget.fraction * 100,
    'overheadBudget.windowMillis': DEFAULT_BUDGET_WINDOW_MS,
    kafkaMessageKey: defaults.kafkaMessageKey,
    logLevel: defaults.logLevel,
    'propagation.inject': defaults.propagation.inject,
    'propagation.allow': defaults.propagation.allow,
    'propagation.deny': defaults.propagation.deny,
    'propagation.excludeExe': defaults.propagation.excludeExe,
    'propagation.localLinking': defaults.propagation.localLinking,
  };
  // keys whose absence is their default (no opt-in variable, no probe-hit
  // log): any value would change something, so they are shown commented out
  const noDefault = ['selection.optInEnv', 'debugProbeHits'];
  const leaves = schemaLeaves();
  assert.deepEqual([...Object.keys(expected), ...noDefault].sort(), [...leaves].sort(), 'the expectations cover the schema, key for key');
  const at = (key: string): unknown => key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], config);
  for (const key of leaves) {
    if (noDefault.includes(key)) {
      assert.equal(at(key), undefined, `${key} is not set`);
      const leaf = key.split('.').at(-1)!;
      assert.match(text, new RegExp(`^\\s*# ${leaf}: \\S`, 'm'), `${key} is shown, commented out`);
      continue;
    }
    assert.deepEqual(at(key), expected[key], `${key} in ${path}`);
  }
  // and, resolved, the file changes nothing the agent is given
  const resolved = resolveRunConfig({}, {}, config);
  assert.deepEqual(resolved.export.batcher, defaults.export.batcher);
  assert.deepEqual(resolved.sampling, defaults.sampling);
  assert.equal(resolved.overheadBudget, undefined);
  assert.deepEqual(resolved.propagation, defaults.propagation);
  // the exclusions it used to set (debug-*, kube-system, tracing=off) are gone: a process they matched is traced
  assert.equal(decide(resolved.selection, { pid: 1, exe: '/srv/app', name: 'debug-app', pod: () => ({ namespace: 'kube-system', labels: { tracing: 'off' } }) }).traced, true);
});

test('precedence: flag > environment variable > file > default, per setting', () => {
  const file = parseConfig([
    'exporter:',
    '  kind: console',
    '  batch: {maxQueueSize: 1000, maxExportBatchSize: 100, scheduleDelayMillis: 200}',
    '  otlp: {endpoint: "http://file:4318/v1/traces", headers: {x-from: file}}',
    'selection: {includeExe: ["/file/**"], excludeName: [from-file]}',
    'sampling: {sampler: traceidratio, ratio: 0.5}',
    'lingerMillis: 100',
    'logLevel: debug',
  ].join('\n'), 'config.yaml');
  const noEnv = resolveRunConfig({}, {}, file);
  assert.equal(noEnv.export.exporter, 'console');
  assert.equal(noEnv.export.batcher.maxQueueSize, 1000);
  assert.equal(noEnv.export.batcher.exportTimeoutMillis, 30000, 'unset everywhere: the default');
  assert.equal(noEnv.export.sources['exportTimeoutMillis'], 'default');
  assert.deepEqual(noEnv.otlp, { endpoint: 'http://file:4318/v1/traces', headers: { 'x-from': 'file' } });
  assert.deepEqual(noEnv.sampling, { sampler: 'traceidratio', ratio: 0.5 });
  assert.equal(noEnv.lingerMs, 100);
  assert.equal(noEnv.logLevel, 'debug');

  const env = {
    OTEL_TRACES_EXPORTER: 'none', OTEL_BSP_MAX_QUEUE_SIZE: '2000', OTEL_BSP_SCHEDULE_DELAY: '',
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://env:4318', OTEL_EXPORTER_OTLP_HEADERS: 'x-from=env',
    OTEL_TRACES_SAMPLER: 'always_off',
  };
  const withEnv = resolveRunConfig({}, env, file);
  assert.equal(withEnv.export.exporter, 'none');
  assert.equal(withEnv.export.sources['exporter'], 'OTEL_TRACES_EXPORTER');
  assert.equal(withEnv.export.batcher.maxQueueSize, 2000);
  assert.equal(withEnv.export.batcher.scheduledDelayMillis, 200, 'an empty variable counts as unset: the file decides');
  // the OTLP exporter reads its variables itself: the file's values are not passed where a variable is set
  assert.deepEqual(withEnv.otlp, {});
  assert.equal(withEnv.sources['otlp.endpoint'], 'OTEL_EXPORTER_OTLP_ENDPOINT');
  assert.deepEqual(withEnv.sampling, { sampler: 'always_off', ratio: 0.5 });

  const withFlags = resolveRunConfig({
    exporter: 'otlp', 'max-queue-size': '3000', 'include-exe': ['/flag/**'], linger: '0', 'log-level': 'warn', 'otlp-endpoint': 'http://flag:4318/v1/traces',
  }, env, file);
  assert.equal(withFlags.export.exporter, 'otlp');
  assert.equal(withFlags.export.batcher.maxQueueSize, 3000);
  assert.equal(withFlags.export.batcher.maxExportBatchSize, 100);
  assert.deepEqual(withFlags.selection.includeExe, ['/flag/**'], 'a flag list replaces the file list of its key');
  assert.deepEqual(withFlags.selection.excludeName, ['from-file'], 'other keys of the file stay');
  assert.equal(withFlags.lingerMs, 0);
  assert.equal(withFlags.logLevel, 'warn');
  assert.equal(withFlags.otlp.endpoint, 'http://flag:4318/v1/traces');
  assert.equal(withFlags.sources['selection.includeExe'], '--include-exe');
  assert.equal(withFlags.sources['selection.excludeName'], 'config file');

  const defaults = resolveRunConfig({}, {}, {});
  assert.equal(defaults.export.exporter, 'otlp');
  assert.equal(defaults.metricsAddress, '127.0.0.1:9464');
  assert.deepEqual(defaults.sampling, { sampler: 'parentbased_always_on', ratio: 1 });
  assert.deepEqual(defaults.selection, {});
});

test('invalid variables and flags are refused by name; start-only settings are told apart', () => {
  assert.throws(() => resolveRunConfig({ 'max-inflight': '3' }), /--max-inflight: expected an integer from 16 to 134217728 \(requests\), got "3"/);
  assert.throws(() => resolveRunConfig({}, {}, { selection: { includePodLabel: ['=x'] } }), RunConfigError);
  const a = resolveRunConfig({}, {}, parseConfig('maps: {maxInflight: 1024}\nexporter: {kind: none}', 'c'));
  const b = resolveRunConfig({}, {}, parseConfig('maps: {maxInflight: 2048}\nexporter: {kind: console}\nmetricsAddress: 0.0.0.0:9464', 'c'));
  assert.deepEqual(startOnlyChanges(a, b), ['metricsAddress', 'mapSizes']);
});

test('adminAccess: loopback unless the flag or the file opens /status and /calibrate to any peer; another value is refused by name; read at start', () => {
  assert.equal(resolveRunConfig({}, {}, {}).adminAccess, 'loopback');
  assert.equal(resolveRunConfig({ 'metrics-address': '0.0.0.0:9464' }, {}, {}).adminAccess, 'loopback', 'a wider metrics address opens nothing more');
  const file = parseConfig('adminAccess: any', 'c');
  assert.equal(resolveRunConfig({}, {}, file).adminAccess, 'any');
  assert.equal(resolveRunConfig({}, {}, file).sources['adminAccess'], 'config file');
  assert.equal(resolveRunConfig({ 'admin-access': 'loopback' }, {}, file).adminAccess, 'loopback', 'the flag wins');
  assert.throws(() => resolveRunConfig({ 'admin-access': 'everyone' }), /--admin-access: expected loopback or any, got "everyone"/);
  assert.deepEqual(checkConfig({ adminAccess: 'all' }).problems, ['adminAccess: expected one of loopback, any, got "all"']);
  assert.deepEqual(startOnlyChanges(resolveRunConfig({}, {}, {}), resolveRunConfig({}, {}, file)), ['adminAccess']);
});

test('an overhead budget of 0 is off in the file, on the command line and in the variable alike', () => {
  const off = parseConfig('overheadBudget: {percent: 0, windowMillis: 5000}', 'c');
  assert.equal(resolveRunConfig({}, {}, off).overheadBudget, undefined);
  for (const v of ['0', '0%', 'off', '0.0']) {
    assert.equal(resolveRunConfig({ 'overhead-budget': v }).overheadBudget, undefined, `--overhead-budget ${v}`);
    assert.equal(resolveRunConfig({}, { GOTRAIL_OVERHEAD_BUDGET: v }).overheadBudget, undefined, `GOTRAIL_OVERHEAD_BUDGET=${v}`);
  }
  // a flag of 0 turns off the file's budget; the file's 2 (percent) is a budget
  const on = parseConfig('overheadBudget: {percent: 2}', 'c');
  assert.equal(resolveRunConfig({ 'overhead-budget': '0' }, {}, on).overheadBudget, undefined);
  assert.deepEqual(resolveRunConfig({}, {}, on).overheadBudget, { fraction: 0.02, windowMs: 10_000 });
  assert.deepEqual(problems('overheadBudget: {percent: -1}'), ['overheadBudget.percent: expected a percentage from 0 (off) to 100, got -1']);
  assert.deepEqual(problems('overheadBudget: {percent: 101}'), [`overheadBudget.percent: expected a percentage from 0 (off) to 100, got 101: ${BUDGET_OVER_100}`]);
  // a budget is a share of the traced processes' own CPU time, in which tracing's cost is counted: above 100% it could never act
  for (const v of ['500%', '100.5', '1000']) {
    assert.throws(() => resolveRunConfig({ 'overhead-budget': v }), (e: Error) => e instanceof RunConfigError && e.message === `--overhead-budget: expected a percentage of the traced processes' CPU time up to 100 (e.g. 2%), or 0 or off (no budget), got "${v}": ${BUDGET_OVER_100}`);
    assert.throws(() => resolveRunConfig({}, { GOTRAIL_OVERHEAD_BUDGET: v }), (e: Error) => e instanceof RunConfigError && e.message.startsWith('GOTRAIL_OVERHEAD_BUDGET: ') && e.message.endsWith(BUDGET_OVER_100));
  }
  assert.deepEqual(resolveRunConfig({ 'overhead-budget': '100%' }).overheadBudget, { fraction: 1, windowMs: 10_000 });
  assert.throws(() => resolveRunConfig({ 'overhead-budget': '-1' }), /--overhead-budget: .*0 or off \(no budget\), got "-1"/);
});

test('a bad OTEL_TRACES_SAMPLER or OTEL_TRACES_SAMPLER_ARG is ignored with a warning (the specification\'s behaviour), the default used', () => {
  const badName = resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'parentbased_sometimes', OTEL_TRACES_SAMPLER_ARG: '0.5' });
  assert.deepEqual(badName.sampling, { sampler: 'parentbased_always_on', ratio: 1 });
  assert.deepEqual(badName.warnings, ['OTEL_TRACES_SAMPLER: expected one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio, got "parentbased_sometimes": ignored, using parentbased_always_on']);
  // the file's sampler stands when the variable is unusable
  const fromFile = resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'sometimes' }, parseConfig('sampling: {sampler: always_off}', 'c'));
  assert.equal(fromFile.sampling.sampler, 'always_off');
  assert.match(fromFile.warnings?.[0] ?? '', /got "sometimes": ignored, using always_off$/);
  for (const arg of ['1.5', '-0.1', 'half', '0x1', 'NaN', '1e3']) {
    const r = resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: arg });
    assert.deepEqual(r.sampling, { sampler: 'parentbased_traceidratio', ratio: 1 }, arg);
    assert.deepEqual(r.warnings, [`OTEL_TRACES_SAMPLER_ARG: expected a sampling probability from 0 to 1, got "${arg}": ignored, using the default 1.0`]);
  }
  // enum values are case-insensitive (the specification's rule for every variable)
  const upper = resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'ALWAYS_OFF' });
  assert.equal(upper.sampling.sampler, 'always_off');
  assert.equal(upper.sources['sampling.sampler'], 'OTEL_TRACES_SAMPLER');
  assert.equal(upper.warnings, undefined);
  assert.equal(resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'ParentBased_TraceIdRatio', OTEL_TRACES_SAMPLER_ARG: '0.5' }).sampling.ratio, 0.5);
  assert.deepEqual(resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'Always_Sometimes' }).warnings, ['OTEL_TRACES_SAMPLER: expected one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio, got "Always_Sometimes": ignored, using parentbased_always_on']);
  const ok = resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: ' 0.25 ' });
  assert.deepEqual(ok.sampling, { sampler: 'traceidratio', ratio: 0.25 });
  assert.equal(ok.warnings, undefined);
  assert.equal(ok.sources['sampling.ratio'], 'OTEL_TRACES_SAMPLER_ARG');
  // the argument belongs to the ratio samplers only
  assert.equal(resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'always_on', OTEL_TRACES_SAMPLER_ARG: 'junk' }).warnings, undefined);
});

test('OTEL_SDK_DISABLED: only "true" (any case) disables: nothing traced, nothing exported, whatever flags and file say; other values are false, with a warning unless "false"', () => {
  const file = parseConfig('exporter: {kind: console}\nselection: {includeExe: ["/srv/**"]}', 'c');
  for (const v of ['true', 'TRUE', ' True ']) {
    const r = resolveRunConfig({ exporter: 'otlp', 'include-name': ['api'] }, { OTEL_SDK_DISABLED: v }, file);
    assert.equal(r.sdkDisabled, true, v);
    assert.equal(r.export.exporter, 'none', v);
    assert.equal(r.sources['export.exporter'], 'OTEL_SDK_DISABLED');
    assert.equal(r.propagation.inject, false);
    assert.equal(r.warnings, undefined);
    assert.deepEqual(decide(r.selection, { pid: 1, exe: '/srv/api', name: 'api' }), { traced: false, reason: `tracing is disabled (OTEL_SDK_DISABLED=${v.trim()})` });
  }
  for (const v of ['false', 'FALSE', '', '  ']) {
    const r = resolveRunConfig({}, { OTEL_SDK_DISABLED: v });
    assert.equal(r.sdkDisabled, false, JSON.stringify(v));
    assert.equal(r.export.exporter, 'otlp');
    assert.equal(r.selection.disabledBy, undefined);
    assert.equal(r.warnings, undefined, JSON.stringify(v));
  }
  for (const v of ['1', 'yes', 'on', 'disabled']) {
    const r = resolveRunConfig({}, { OTEL_SDK_DISABLED: v });
    assert.equal(r.sdkDisabled, false, v);
    assert.equal(r.propagation.inject, true);
    assert.deepEqual(r.warnings, [`OTEL_SDK_DISABLED: expected true or false, got "${v}": taken as false (tracing stays on)`]);
    assert.deepEqual(decide(r.selection, { pid: 1, exe: '/srv/api', name: 'api' }).traced, true);
  }
  assert.equal(resolveRunConfig({}, {}).sdkDisabled, false);
});

test('OTLP variables the exporter would ignore silently (protocol, timeout, compression) are named in a warning', () => {
  const bad = resolveRunConfig({}, {
    OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_TIMEOUT: 'abc', OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '-5',
    OTEL_EXPORTER_OTLP_COMPRESSION: 'zstd',
  });
  assert.deepEqual(bad.warnings, [
    'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: gotrail exports OTLP over HTTP with protobuf only (http/protobuf), got "http/json": ignored (a gRPC endpoint, port 4317, does not accept it; use the collector\'s OTLP/HTTP port, 4318)',
    'OTEL_EXPORTER_OTLP_PROTOCOL: gotrail exports OTLP over HTTP with protobuf only (http/protobuf), got "grpc": ignored (a gRPC endpoint, port 4317, does not accept it; use the collector\'s OTLP/HTTP port, 4318)',
    'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: expected a number of milliseconds >= 0 (0: no limit), got "-5": the OTLP exporter ignores it',
    'OTEL_EXPORTER_OTLP_TIMEOUT: expected a number of milliseconds >= 0 (0: no limit), got "abc": the OTLP exporter ignores it',
    'OTEL_EXPORTER_OTLP_COMPRESSION: expected none or gzip, got "zstd": the OTLP exporter ignores it',
  ]);
  // header entries the exporter drops or cuts, named without their values (often secrets)
  assert.deepEqual(resolveRunConfig({}, { OTEL_EXPORTER_OTLP_HEADERS: 'a=b,,=c, d ,authorization=Bearer abc;def,x=%zz,y=' }).warnings, [
    'OTEL_EXPORTER_OTLP_HEADERS: entry 3 is not key=value (percent-encoded, comma-separated): the OTLP exporter ignores it',
    'OTEL_EXPORTER_OTLP_HEADERS: entry 4 is not key=value (percent-encoded, comma-separated): the OTLP exporter ignores it',
    'OTEL_EXPORTER_OTLP_HEADERS: entry 5 ("authorization") has a ";": the OTLP exporter drops what follows it (write it as %3B)',
    'OTEL_EXPORTER_OTLP_HEADERS: entry 6 ("x") is not key=value (percent-encoded, comma-separated): the OTLP exporter ignores it',
    'OTEL_EXPORTER_OTLP_HEADERS: entry 7 ("y") is not key=value (percent-encoded, comma-separated): the OTLP exporter ignores it',
  ]);
  assert.equal(resolveRunConfig({}, { OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'authorization=Basic%20dXNlcjpwYXNz, x-tenant = a%3Bb ,' }).warnings, undefined);
  // what the exporter accepts (and empty variables, which count as unset) warns of nothing
  const ok = resolveRunConfig({}, {
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'HTTP/Protobuf', OTEL_EXPORTER_OTLP_TIMEOUT: ' 2500 ', OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '',
    OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip', OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: 'none',
  });
  assert.equal(ok.warnings, undefined);
});

test('the traces URL: the traces variable as is, the generic one with v1/traces appended, the traces one first; a variable that is no http(s) URL is ignored, the next source used', async () => {
  const names = ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT'] as const;
  const saved = names.map((n) => process.env[n]);
  // the exporter reads the variables from the process environment when it is made
  const destination = async (env: Partial<Record<(typeof names)[number], string>>, fileText = ''): Promise<{ url: string; source: string | undefined; warnings: string[] }> => {
    for (const n of names) {
      if (env[n] === undefined) delete process.env[n];
      else process.env[n] = env[n];
    }
    const cfg = resolveRunConfig({}, process.env, fileText ? parseConfig(fileText, 'c') : {});
    const exporter = createExporter({ kind: 'otlp', endpoint: cfg.otlp.endpoint }) as OtlpProtoTraceExporter;
    await exporter.shutdown();
    return { url: exporter.destination, source: cfg.sources['otlp.endpoint'], warnings: (cfg.warnings ?? []).map((w) => w.split(':', 1)[0]!) };
  };
  const file = 'exporter: {otlp: {endpoint: "http://file:4318/v1/traces"}}';
  try {
    assert.deepEqual(await destination({}), { url: 'http://localhost:4318/v1/traces', source: 'default', warnings: [] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }), { url: 'http://c:4318/v1/traces', source: 'OTEL_EXPORTER_OTLP_ENDPOINT', warnings: [] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/otlp/' }), { url: 'http://c:4318/otlp/v1/traces', source: 'OTEL_EXPORTER_OTLP_ENDPOINT', warnings: [] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4318/custom' }), { url: 'http://t:4318/custom', source: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', warnings: [] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4318/custom', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, file), { url: 'http://t:4318/custom', source: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', warnings: [] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, file), { url: 'http://c:4318/v1/traces', source: 'OTEL_EXPORTER_OTLP_ENDPOINT', warnings: [] });
    // unusable values: warned, and the next source decides
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'collector:4318', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }), { url: 'http://c:4318/v1/traces', source: 'OTEL_EXPORTER_OTLP_ENDPOINT', warnings: ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'collector:4318' }, file), { url: 'http://file:4318/v1/traces', source: 'config file', warnings: ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://c:4317' }), { url: 'http://localhost:4318/v1/traces', source: 'default', warnings: ['OTEL_EXPORTER_OTLP_ENDPOINT'] });
    assert.deepEqual(await destination({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4318/custom', OTEL_EXPORTER_OTLP_ENDPOINT: 'c:4318' }), { url: 'http://t:4318/custom', source: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', warnings: ['OTEL_EXPORTER_OTLP_ENDPOINT'] });
  } finally {
    names.forEach((n, i) => {
      if (saved[i] === undefined) delete process.env[n];
      else process.env[n] = saved[i];
    });
  }
});

test('OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT=0 is no limit (the specification\'s Timeout), which the exporter would refuse: it gets 2^31 - 1 ms', async () => {
  const timeoutOf = async (env: Record<string, string>, fileText?: string): Promise<{ given: number | undefined; used: number; warnings: string[] | undefined }> => {
    const cfg = resolveRunConfig({}, env, fileText === undefined ? undefined : parseConfig(fileText, 'c'));
    const names = Object.keys(env);
    const saved = names.map((n) => process.env[n]);
    Object.assign(process.env, env);
    try {
      // what the exporter makes of the variables and the value given in code
      const { convertLegacyHttpOptions } = await import('@opentelemetry/otlp-exporter-base/node-http');
      const used = convertLegacyHttpOptions(cfg.otlp.timeoutMillis !== undefined ? { timeoutMillis: cfg.otlp.timeoutMillis } : {}, 'TRACES', 'v1/traces', {}).timeoutMillis;
      return { given: cfg.otlp.timeoutMillis, used, warnings: cfg.warnings };
    } finally {
      names.forEach((n, i) => {
        if (saved[i] === undefined) delete process.env[n];
        else process.env[n] = saved[i];
      });
    }
  };
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TIMEOUT: '0' }), { given: 2147483647, used: 2147483647, warnings: undefined });
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: ' 0 ', OTEL_EXPORTER_OTLP_TIMEOUT: '5000' }), { given: 2147483647, used: 2147483647, warnings: undefined });
  // the traces variable decides when it is usable
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '2500', OTEL_EXPORTER_OTLP_TIMEOUT: '0' }), { given: undefined, used: 2500, warnings: undefined });
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TIMEOUT: '2500' }), { given: undefined, used: 2500, warnings: undefined });
  assert.deepEqual(await timeoutOf({}), { given: undefined, used: 10000, warnings: undefined });
  // a number too long for a timer: ignored with a warning, as the other
  // durations' variables are (the exporter would take it, and Node warn at
  // every export), the next source given to the exporter instead
  const tooLong = 'expected at most 2147483647 (milliseconds, about 24.8 days: the longest a timer waits), got "3000000000": ignored (0 is no limit)';
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TIMEOUT: '3000000000' }), { given: 10000, used: 10000, warnings: [`OTEL_EXPORTER_OTLP_TIMEOUT: ${tooLong}`] });
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '3000000000', OTEL_EXPORTER_OTLP_TIMEOUT: '2500' }), { given: 2500, used: 2500, warnings: [`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: ${tooLong}`] });
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TIMEOUT: '3000000000' }, 'exporter: {otlp: {timeoutMillis: 4000}}'), { given: 4000, used: 4000, warnings: [`OTEL_EXPORTER_OTLP_TIMEOUT: ${tooLong}`] });
  // a variable that is ignored leaves the file's value to decide, not the exporter's default
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TIMEOUT: 'abc' }, 'exporter: {otlp: {timeoutMillis: 4000}}'), {
    given: 4000, used: 4000, warnings: ['OTEL_EXPORTER_OTLP_TIMEOUT: expected a number of milliseconds >= 0 (0: no limit), got "abc": the OTLP exporter ignores it'],
  });
  assert.deepEqual(await timeoutOf({ OTEL_EXPORTER_OTLP_TIMEOUT: '2147483647' }), { given: undefined, used: 2147483647, warnings: undefined });
});

test('each sampler becomes the probes\' rule; TraceIdRatioBased thresholds are the specification\'s', () => {
  // T = 2^56 - ratio * 2^56: the specification's table (tracestate probability sampling) for exact ratios
  assert.equal(ratioThreshold(1), 0n);
  assert.equal(ratioThreshold(0.5), 0x80000000000000n);
  assert.equal(ratioThreshold(0.25), 0xc0000000000000n);
  assert.equal(ratioThreshold(0.125), 0xe0000000000000n);
  assert.equal(ratioThreshold(0.0625), 0xf0000000000000n);
  assert.equal(ratioThreshold(0), 1n << 56n, 'ratio 0: no randomness value (at most 2^56 - 1) reaches it');
  // 1-in-10: within the specification's 5-digit rounding (e6666) of the exact threshold
  assert.equal(ratioThreshold(0.1) >> 36n, 0xe6666n);
  // a higher ratio samples every trace a lower one does
  let last = 1n << 56n;
  for (let r = 0.01; r <= 1; r += 0.01) {
    const t = ratioThreshold(r);
    assert.ok(t <= last);
    last = t;
  }
  const on = SamplerRoot.GT_SAMPLER_ALWAYS_ON, off = SamplerRoot.GT_SAMPLER_ALWAYS_OFF, ratio = SamplerRoot.GT_SAMPLER_TRACE_ID_RATIO;
  const ignore = SamplerFlags.GT_SAMPLER_IGNORE_PARENT;
  assert.deepEqual(bpfSamplerConfig({ sampler: 'parentbased_always_on', ratio: 1 }), { root: on, flags: 0, threshold: 0n });
  assert.equal(on, 0, 'the all-zero map entry, before the agent writes it, is the default sampler');
  assert.deepEqual(bpfSamplerConfig({ sampler: 'always_on', ratio: 1 }), { root: on, flags: ignore, threshold: 0n });
  assert.deepEqual(bpfSamplerConfig({ sampler: 'always_off', ratio: 1 }), { root: off, flags: ignore, threshold: 0n });
  assert.deepEqual(bpfSamplerConfig({ sampler: 'parentbased_always_off', ratio: 1 }), { root: off, flags: 0, threshold: 0n });
  assert.deepEqual(bpfSamplerConfig({ sampler: 'traceidratio', ratio: 0.25 }), { root: ratio, flags: ignore, threshold: 0xc0000000000000n });
  assert.deepEqual(bpfSamplerConfig({ sampler: 'parentbased_traceidratio', ratio: 0.5 }), { root: ratio, flags: 0, threshold: 0x80000000000000n });
  assert.equal(describeSampler({ sampler: 'parentbased_traceidratio', ratio: 0.25 }), 'ParentBased{root=TraceIdRatioBased{0.25}}');
  assert.equal(describeSampler({ sampler: 'always_off', ratio: 1 }), 'AlwaysOffSampler');
});

test('the README documents every top-level key of the file', () => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  for (const k of Object.keys(configFileSchema.shape)) {
    assert.ok(new RegExp(`\`${k}[\`.:]`).test(readme), `README: configuration key ${k}`);
  }
});

test('the configuration files gotrail ships (ConfigMap, Helm values, install script, example) are valid', async () => {
  const { parse } = await import('yaml');
  const read = (p: string): string => readFileSync(join(repoRoot, p), 'utf8');
  const configMap = parse(read('deploy/kubernetes/base/configmap.yaml')) as { data: Record<string, string> };
  const values = parse(read('deploy/helm/gotrail/values.yaml')) as { config: unknown };
  const installed = /config\.yaml" <<'CONF'\n([\s\S]*?)\nCONF/.exec(read('deploy/systemd/install.sh'));
  assert.ok(installed, 'install.sh writes a default configuration file');
  const files: Array<[string, unknown]> = [
    ['configmap.yaml', parse(configMap.data['config.yaml'] ?? '')],
    ['values.yaml config', values.config],
    ['install.sh', parse(installed[1] ?? '')],
    ['config.example.yaml', parse(read('deploy/config.example.yaml'))],
  ];
  for (const [name, content] of files) {
    const { problems } = checkConfig(content);
    assert.deepEqual(problems, [], name);
  }
});

test('a header of the wrong type is named by its key and the type it has, never by its value (often a credential)', () => {
  assert.deepEqual(problems('exporter:\n  otlp:\n    headers: {x-api-key: 88392011223344, x-on: true, x-list: [SECRET1], x-none: null}\n'), [
    'exporter.otlp.headers.x-api-key: expected a string header value (quote it), got a number',
    'exporter.otlp.headers.x-on: expected a string header value (quote it), got a boolean',
    'exporter.otlp.headers.x-list: expected a string header value (quote it), got a list',
    'exporter.otlp.headers.x-none: expected a string header value (quote it), got null',
  ]);
  assert.deepEqual(problems('exporter:\n  otlp:\n    headers: "authorization=Bearer SECRET2"\n'), [
    'exporter.otlp.headers: expected a mapping of header names to values, got a string',
  ]);
});

test('a user name and password in a traces URL never reach a message: not from the file, the flag or the variables', () => {
  assert.deepEqual(problems('exporter:\n  otlp:\n    endpoint: "ftp://user:SECRET3@h/v1/traces"\n'), [
    'exporter.otlp.endpoint: expected an http:// or https:// URL, got "ftp://h/v1/traces"',
  ]);
  assert.throws(() => resolveRunConfig({ 'otlp-endpoint': 'htp://user:SECRET4@h:4318' }, {}, {}), { name: 'RunConfigError', message: '--otlp-endpoint: expected an http:// or https:// URL, got "htp://h:4318"' });
  const cfg = resolveRunConfig({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector://token@h:4318' }, {});
  assert.deepEqual(cfg.warnings, ['OTEL_EXPORTER_OTLP_ENDPOINT: expected an http:// or https:// URL, got "collector://h:4318": the OTLP exporter ignores it (the start line\'s endpoint= says where spans go)']);
});

test('YAML errors that only show when the document is built (an alias to no anchor, an alias bomb) are the file\'s errors, not a crash', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-config-'));
  const f = join(dir, 'config.yaml');
  writeFileSync(f, 'exporter:\n  otlp:\n    headers:\n      authorization: &a Bearer X\n    endpoint: *b\n');
  assert.throws(() => loadConfigFile(f), { name: 'ConfigFileError', message: `${f}: YAML: Unresolved alias (the anchor must be set before the alias): b` });
  const bomb = ['a: &a [x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 10; i++) bomb.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(', ')}]`);
  writeFileSync(f, bomb.join('\n') + '\n');
  assert.throws(() => loadConfigFile(f), (e: Error) => e instanceof ConfigFileError && /^.*config\.yaml: YAML: Excessive alias count/.test(e.message));
});

test('exporter.otlp.timeoutMillis: 0 in the file is no limit, as OTEL_EXPORTER_OTLP_TIMEOUT=0 is', () => {
  const timeout = (text: string): number | undefined => resolveRunConfig({}, {}, parseConfig(text, 'config.yaml')).otlp.timeoutMillis;
  assert.equal(timeout('exporter:\n  otlp:\n    timeoutMillis: 0\n'), 2 ** 31 - 1, 'the stand-in for no limit the exporter accepts');
  assert.equal(timeout('exporter:\n  otlp:\n    timeoutMillis: 2500\n'), 2500);
  assert.deepEqual(problems('exporter:\n  otlp:\n    timeoutMillis: -1\n'), ['exporter.otlp.timeoutMillis: expected an integer >= 0 (milliseconds (0: no limit)), got -1']);
  assert.deepEqual(problems('exporter:\n  otlp:\n    timeoutMillis: 3000000000\n'), ['exporter.otlp.timeoutMillis: expected at most 2147483647 (milliseconds, about 24.8 days: the longest a timer waits), got 3000000000']);
});

test('a duration a timer cannot wait (beyond 2^31 - 1 ms, about 24.8 days) is refused by name in the file and on the command line, ignored with a warning in a variable: Node would fire it after 1 ms', () => {
  const tooLong = 'expected at most 2147483647 (milliseconds, about 24.8 days: the longest a timer waits), got';
  assert.deepEqual(problems([
    'exporter:',
    '  batch: {scheduleDelayMillis: 3000000000, exportTimeoutMillis: 2147483648}',
    'scanIntervalMillis: 1e10',
    'lingerMillis: 4294967296',
  ].join('\n')).sort(), [
    `exporter.batch.exportTimeoutMillis: ${tooLong} 2147483648`,
    `exporter.batch.scheduleDelayMillis: ${tooLong} 3000000000`,
    `lingerMillis: ${tooLong} 4294967296`,
    `scanIntervalMillis: ${tooLong} 10000000000`,
  ]);
  for (const flag of ['schedule-delay', 'export-timeout', 'scan-interval', 'linger'] as const) {
    assert.throws(() => resolveRunConfig({ [flag]: '3000000000' }), { message: `--${flag}: ${tooLong} "3000000000"` });
    const max = resolveRunConfig({ [flag]: '2147483647' });
    assert.equal([max.export.batcher.scheduledDelayMillis, max.export.batcher.exportTimeoutMillis, max.scanIntervalMs, max.lingerMs].filter((v) => v === 2147483647).length, 1, `--${flag} 2147483647 is taken`);
  }
  const env = resolveRunConfig({}, { OTEL_BSP_EXPORT_TIMEOUT: '3000000000', OTEL_BSP_SCHEDULE_DELAY: '9999999999' });
  assert.equal(env.export.batcher.exportTimeoutMillis, 30000);
  assert.equal(env.export.batcher.scheduledDelayMillis, 1000);
  assert.deepEqual(env.warnings, [
    `OTEL_BSP_SCHEDULE_DELAY: ${tooLong} "9999999999": ignored, using 1000`,
    `OTEL_BSP_EXPORT_TIMEOUT: ${tooLong} "3000000000": ignored, using 30000`,
  ]);
});

test('every duration flag that becomes a timer reads its text alike: decimal digits only, blanks around them allowed', () => {
  const units: Record<string, string> = {
    'schedule-delay': 'milliseconds', 'export-timeout': 'milliseconds (0: no limit)',
    'scan-interval': 'milliseconds', linger: 'milliseconds; 0: detach with the last process',
  };
  const read = (flag: string, v: string): number | undefined => {
    const c = resolveRunConfig({ [flag]: v });
    return { 'schedule-delay': c.export.batcher.scheduledDelayMillis, 'export-timeout': c.export.batcher.exportTimeoutMillis, 'scan-interval': c.scanIntervalMs, linger: c.lingerMs }[flag];
  };
  for (const [flag, unit] of Object.entries(units)) {
    const min = flag === 'scan-interval' ? 50 : 0;
    assert.equal(read(flag, ' 2000 '), 2000, `--${flag} " 2000 "`);
    // an exponent, hex, a fraction, a sign or nothing at all is no count of
    // milliseconds (Number() reads "1e3" as 1000, "0x64" as 100 and "" as 0)
    for (const v of ['1e3', '0x64', '100.0', '+100', '', ' ', '-0', '100ms']) {
      assert.throws(() => resolveRunConfig({ [flag]: v }), { message: `--${flag}: expected an integer >= ${min} (${unit}), got "${v}"` }, `--${flag} "${v}"`);
    }
  }
  // the variables read their text alike, ignored with a warning
  const env = resolveRunConfig({}, { OTEL_BSP_SCHEDULE_DELAY: '1e3' });
  assert.equal(env.export.batcher.scheduledDelayMillis, 1000);
  assert.deepEqual(env.warnings, ['OTEL_BSP_SCHEDULE_DELAY: expected an integer >= 0 (milliseconds), got "1e3": ignored, using 1000']);
});

test('GOTRAIL_DB_QUERY_TEXT takes true and 1, false and 0 (any case), as gotrail\'s other switches do; another value is refused by name', () => {
  for (const v of ['true', 'TRUE', '1', ' 1 ']) {
    const c = resolveRunConfig({}, { GOTRAIL_DB_QUERY_TEXT: v });
    assert.equal(c.dbQueryText, true, v);
    assert.equal(c.sources.dbQueryText, 'GOTRAIL_DB_QUERY_TEXT', v);
  }
  for (const v of ['false', 'False', '0']) assert.equal(resolveRunConfig({}, { GOTRAIL_DB_QUERY_TEXT: v }, parseConfig('dbQueryText: true', 'c')).dbQueryText, false, v);
  assert.equal(resolveRunConfig({ 'db-query-text': true }, { GOTRAIL_DB_QUERY_TEXT: '0' }).dbQueryText, true, 'the flag wins over the variable');
  assert.equal(resolveRunConfig({}, { GOTRAIL_DB_QUERY_TEXT: '' }).dbQueryText, false, 'an empty variable is unset');
  for (const v of ['yes', '2', 'on']) assert.throws(() => resolveRunConfig({}, { GOTRAIL_DB_QUERY_TEXT: v }), { message: `GOTRAIL_DB_QUERY_TEXT: expected true or false (or 1, 0), got "${v}"` });
});

test('OTEL_TRACES_SAMPLER_ARG is the ratio of a ratio sampler the file chose, as it is of one the variable chose (a variable wins over the file, per setting)', () => {
  const fileSampler = resolveRunConfig({}, { OTEL_TRACES_SAMPLER_ARG: '0.1' }, parseConfig('sampling: {sampler: traceidratio}', 'c'));
  assert.deepEqual(fileSampler.sampling, { sampler: 'traceidratio', ratio: 0.1 });
  assert.equal(fileSampler.sources['sampling.ratio'], 'OTEL_TRACES_SAMPLER_ARG');
  assert.deepEqual(resolveRunConfig({}, { OTEL_TRACES_SAMPLER_ARG: '0.1' }, parseConfig('sampling: {sampler: parentbased_traceidratio, ratio: 0.5}', 'c')).sampling, { sampler: 'parentbased_traceidratio', ratio: 0.1 });
  const bad = resolveRunConfig({}, { OTEL_TRACES_SAMPLER_ARG: 'half' }, parseConfig('sampling: {sampler: traceidratio, ratio: 0.5}', 'c'));
  assert.deepEqual(bad.sampling, { sampler: 'traceidratio', ratio: 0.5 });
  assert.deepEqual(bad.warnings, ['OTEL_TRACES_SAMPLER_ARG: expected a sampling probability from 0 to 1, got "half": ignored, using 0.5 (configuration file)']);
  // still no ratio for a sampler that takes none
  assert.deepEqual(resolveRunConfig({}, { OTEL_TRACES_SAMPLER_ARG: '0.1' }, parseConfig('sampling: {sampler: always_on}', 'c')).sampling, { sampler: 'always_on', ratio: 1 });
});

test('--no-inject-exe (propagation.excludeExe) refuses a relative glob, as the selection\'s executable rules do: it would match no executable and exempt nothing', () => {
  assert.throws(() => resolveRunConfig({ 'no-inject-exe': ['bin/legacy'] }), { message: '--no-inject-exe: "bin/legacy": expected a glob of an absolute path (executables are matched by their absolute path): e.g. "/srv/**", or "**/bin/legacy" in any directory' });
  assert.deepEqual(resolveRunConfig({ 'no-inject-exe': ['/opt/legacy/**', '**/legacy'] }).propagation.excludeExe, ['/opt/legacy/**', '**/legacy']);
});

test('map sizes are refused beyond what the kernel makes, alike from a flag and from the file: the range and the unit named, powers of two checked without 32-bit wrap-around', () => {
  const cases: Array<[string, string, string, string]> = [
    // [flag, file key, value, what is expected]
    ['max-processes', 'maxProcesses', '134217729', 'an integer from 16 to 134217728 (processes)'],
    ['max-processes', 'maxProcesses', '15', 'an integer from 16 to 134217728 (processes)'],
    ['max-inflight', 'maxInflight', '4294967296', 'an integer from 16 to 134217728 (requests)'],
    ['ring-buffer-bytes', 'ringBufferBytes', '4294967296', 'a power of two from 4096 to 2147483648 (bytes)'],
    // 3 * 2^32: its low 32 bits are 0, which a bitwise power-of-two check takes for one
    ['ring-buffer-bytes', 'ringBufferBytes', '12884901888', 'a power of two from 4096 to 2147483648 (bytes)'],
    ['ring-buffer-bytes', 'ringBufferBytes', '6144', 'a power of two from 4096 to 2147483648 (bytes)'],
  ];
  for (const [flag, key, v, expected] of cases) {
    assert.throws(() => resolveRunConfig({ [flag]: v }), (e: Error) => e instanceof RunConfigError && e.message === `--${flag}: expected ${expected}, got "${v}"`, `--${flag} ${v}`);
    assert.deepEqual(problems(`maps: {${key}: ${v}}`), [`maps.${key}: expected ${expected}, got ${v}`], `maps.${key}: ${v}`);
  }
  // the bounds themselves are accepted
  const top = resolveRunConfig({ 'max-processes': '134217728', 'max-inflight': '16', 'ring-buffer-bytes': '2147483648' });
  assert.deepEqual(top.mapSizes, { processes: 134217728, inflight: 16, ringBufferBytes: 2147483648 });
  assert.deepEqual(resolveRunConfig({}, {}, parseConfig('maps: {maxProcesses: 16, maxInflight: 134217728, ringBufferBytes: 4096}', 'c')).mapSizes, { processes: 16, inflight: 134217728, ringBufferBytes: 4096 });
});
