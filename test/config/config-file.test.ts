/**
 * The configuration file as a user writes it: every problem names the key's
 * path and what was expected; flags, variables, file and defaults combine
 * in the documented order; the example file shipped in deploy/ is valid; the
 * sampler keeps whole traces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { checkConfig, ConfigFileError, configFileSchema, loadConfigFile, parseConfig } from '../../daemon/config/file.ts';
import { resolveRunConfig, RunConfigError, startOnlyChanges } from '../../daemon/config/resolve.ts';
import { createSpanFilter } from '../../daemon/export/sampler.ts';
import { repoRoot } from '../support/agent-process.ts';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';

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
    'sampling: {sampler: parentbased_traceidratio, ratio: 2}',
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
    'maps.ringBufferBytes: expected a power of two >= 4096 (bytes), got 5000',
    'metricsAddress: expected host:port or off, got "everywhere"',
    'sampling.ratio: expected a number from 0 to 1, got 2',
    'sampling.sampler: expected one of always_on, always_off, traceidratio, parentbased_always_on, got "parentbased_traceidratio"',
    'selection.excludeName: expected a list, got "debug-*"',
    'selection.includeExe[1]: expected a string, got 3',
    'tracing: unknown key (expected one of selection, kubernetes, exporter, sampling, metricsAddress, scanIntervalMillis, lingerMillis, maps, maxHttpRoutes, dbQueryText, kafkaMessageKey, logLevel, debugProbeHits)',
  ].sort());
});

test('the message of a rejected file starts each problem with the file name; YAML syntax errors give the line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-config-'));
  const f = join(dir, 'config.yaml');
  writeFileSync(f, 'selection: [1]\n');
  assert.throws(() => loadConfigFile(f), { name: 'ConfigFileError', message: `${f}: selection: expected a mapping, got a list` });
  writeFileSync(f, 'selection:\n  includeExe: [/a\nexporter: {kind: none}\n');
  assert.throws(() => loadConfigFile(f), (e: Error) => e instanceof ConfigFileError && /^.*config\.yaml: YAML: .* at line \d+, column \d+/.test(e.message));
  writeFileSync(f, 'logLevel: info\nlogLevel: debug\n');
  assert.throws(() => loadConfigFile(f), /Map keys must be unique/);
  assert.throws(() => loadConfigFile(join(dir, 'absent.yaml')), /absent\.yaml: cannot read: ENOENT/);
  writeFileSync(f, '# nothing set\n');
  assert.deepEqual(loadConfigFile(f).config, {});
});

test('the example configuration in deploy/ is valid and sets what it says', () => {
  const { config } = loadConfigFile(join(repoRoot, 'deploy', 'config.example.yaml'));
  const cfg = resolveRunConfig({}, {}, config);
  assert.equal(cfg.export.exporter, 'otlp');
  assert.equal(cfg.sources['export.exporter'], 'config file');
  assert.ok((cfg.selection.excludeNamespace ?? []).includes('kube-system'));
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
  assert.throws(() => resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio' }), (e: Error) => e instanceof RunConfigError && /^OTEL_TRACES_SAMPLER: expected one of always_on, always_off, traceidratio, parentbased_always_on, got "parentbased_traceidratio"/.test(e.message));
  assert.throws(() => resolveRunConfig({}, { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1.5' }), /OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got "1.5"/);
  assert.throws(() => resolveRunConfig({ 'max-inflight': '3' }), /--max-inflight: expected an integer >= 16, got "3"/);
  assert.throws(() => resolveRunConfig({}, {}, { selection: { includePodLabel: ['=x'] } }), RunConfigError);
  const a = resolveRunConfig({}, {}, parseConfig('maps: {maxInflight: 1024}\nexporter: {kind: none}', 'c'));
  const b = resolveRunConfig({}, {}, parseConfig('maps: {maxInflight: 2048}\nexporter: {kind: console}\nmetricsAddress: 0.0.0.0:9464', 'c'));
  assert.deepEqual(startOnlyChanges(a, b), ['metricsAddress', 'mapSizes']);
});

function spanOf(traceId: string): ReadableSpan {
  return { name: 'GET', kind: 1, spanContext: () => ({ traceId, spanId: '1'.repeat(16), traceFlags: 1 }) } as unknown as ReadableSpan;
}

test('traceidratio keeps a whole trace or none of it, at the configured ratio', () => {
  const keep = createSpanFilter({ sampler: 'traceidratio', ratio: 0.25 });
  assert.ok(keep);
  let kept = 0;
  for (let i = 0; i < 4000; i++) {
    const id = randomBytes(16).toString('hex');
    const first = keep(spanOf(id));
    // every span of the trace (server, client, a linked server on the node) gets the same decision
    for (let j = 0; j < 3; j++) assert.equal(keep(spanOf(id)), first);
    if (first) kept++;
  }
  // 4000 Bernoulli(0.25) trials: mean 1000, σ ≈ 27; ±6σ
  assert.ok(kept > 840 && kept < 1160, `kept ${kept} of 4000 traces at ratio 0.25`);
  assert.equal(createSpanFilter({ sampler: 'always_on', ratio: 1 }), undefined, 'always_on costs nothing per span');
  assert.equal(createSpanFilter({ sampler: 'traceidratio', ratio: 1 }), undefined);
  const none = createSpanFilter({ sampler: 'always_off', ratio: 1 });
  assert.equal(none?.(spanOf(randomBytes(16).toString('hex'))), false);
  const zero = createSpanFilter({ sampler: 'traceidratio', ratio: 0 });
  assert.equal(zero?.(spanOf('f'.repeat(32))), false);
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
