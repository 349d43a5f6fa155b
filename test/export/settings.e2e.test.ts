/**
 * The export settings as a user sets them on `gotrail run`: the standard
 * OTEL_TRACES_EXPORTER and OTEL_BSP_* variables take effect, a flag wins over
 * its variable, a batch size above the queue size is clamped with a
 * warning, a variable's unusable value is ignored with a warning (the
 * specification's rule), and OTEL_SDK_DISABLED=true traces nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startAgent, repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';

const bin = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver');

test('OTEL_TRACES_EXPORTER=console and OTEL_BSP_SCHEDULE_DELAY: a request is printed as a trace tree', { skip: skipUnlessBpf() }, async () => {
  const agent = await startAgent(['--include-exe', bin], { OTEL_TRACES_EXPORTER: 'console', OTEL_BSP_SCHEDULE_DELAY: '100' });
  const server = await startGoServer(bin, ['-tag', 'settings-console'], { OTEL_SERVICE_NAME: 'settings-console' });
  try {
    assert.match(agent.log(), /gotrail running exporter=console .*scheduledDelayMillis=100\b/);
    await agent.waitTraced(server.pid);
    assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    await agent.waitFor(/GET {2}\/hello {2}SERVER {2}200 .*\[settings-console pid \d+\]/, 15_000);
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0, `gotrail run exits 0 on SIGTERM:\n${agent.log().slice(-3000)}`);
  }
});

test('a flag wins over its variable; a batch size above the queue size is clamped with a warning', { skip: skipUnlessBpf() }, async () => {
  const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--max-queue-size', '300'], {
    OTEL_TRACES_EXPORTER: 'console',
    OTEL_BSP_MAX_QUEUE_SIZE: '5',
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '1000',
    OTEL_BSP_EXPORT_TIMEOUT: '0',
  });
  try {
    const log = agent.log();
    assert.match(log, /WARN .*the export batch size exceeds the queue size: using the queue size maxExportBatchSize=1000 from=OTEL_BSP_MAX_EXPORT_BATCH_SIZE maxQueueSize=300 queueSizeFrom=--max-queue-size/);
    assert.match(log, /gotrail running exporter=none .*maxQueueSize=300 maxExportBatchSize=300 scheduledDelayMillis=1000 exportTimeoutMillis=0 maxConcurrentExports=2/);
    // drops are exported by reason, every reason present from the start
    const metrics = (await httpRequest(await agent.metricsUrl())).body;
    assert.match(metrics, /^gotrail_spans_dropped_total\{reason="queue_full"\} 0$/m);
    assert.match(metrics, /^gotrail_spans_dropped_total\{reason="shutdown"\} 0$/m);
    assert.match(metrics, /^gotrail_span_queue_length 0$/m);
  } finally {
    assert.equal(await agent.stop(), 0, `gotrail run exits 0 on SIGTERM:\n${agent.log().slice(-3000)}`);
  }
});

test('unusable OpenTelemetry variables do not stop the start: each is named in a warning and ignored, the default used', { skip: skipUnlessBpf() }, async () => {
  const agent = await startAgent(['--include-exe', bin], {
    OTEL_TRACES_EXPORTER: 'zipkin', OTEL_BSP_MAX_QUEUE_SIZE: 'lots', OTEL_BSP_SCHEDULE_DELAY: '2.5', OTEL_SDK_DISABLED: 'yes',
  });
  try {
    const log = agent.log();
    assert.match(log, /WARN +OTEL_TRACES_EXPORTER: expected otlp, console or none, got "zipkin": ignored, using otlp\n/);
    assert.match(log, /WARN +OTEL_BSP_MAX_QUEUE_SIZE: expected an integer >= 1 \(spans\), got "lots": ignored, using 65536\n/);
    assert.match(log, /WARN +OTEL_BSP_SCHEDULE_DELAY: expected an integer >= 0 \(milliseconds\), got "2.5": ignored, using 1000\n/);
    assert.match(log, /WARN +OTEL_SDK_DISABLED: expected true or false, got "yes": taken as false \(tracing stays on\)\n/);
    assert.match(log, /gotrail running exporter=otlp .*maxQueueSize=65536 .*scheduledDelayMillis=1000\b/);
    assert.doesNotMatch(log, /tracing is disabled/);
  } finally {
    assert.equal(await agent.stop(), 0, `gotrail run exits 0 on SIGTERM:\n${agent.log().slice(-3000)}`);
  }
});

test('OTEL_SDK_DISABLED=true: the agent runs and says so, serves health and status, but traces and exports nothing', { skip: skipUnlessBpf() }, async () => {
  const agent = await startAgent(['--include-exe', bin, '--exporter', 'console', '--log-level', 'debug'], { OTEL_SDK_DISABLED: 'True', OTEL_BSP_SCHEDULE_DELAY: '100' });
  const server = await startGoServer(bin, ['-tag', 'settings-disabled'], { OTEL_SERVICE_NAME: 'settings-disabled' });
  try {
    assert.match(agent.log(), /WARN +tracing is disabled by OTEL_SDK_DISABLED=true: no process is traced \(no probe attached\) and no span exported/);
    assert.match(agent.log(), /gotrail running exporter=none .*tracing="disabled \(OTEL_SDK_DISABLED\)"/);
    const base = (await agent.metricsUrl()).replace(/\/metrics$/, '');
    // the server is seen, and left out by the variable
    await agent.waitFor(new RegExp(`process not selected pid=${server.pid} exe=\\S+ reason="tracing is disabled \\(OTEL_SDK_DISABLED=True\\)"`));
    const status = JSON.parse((await httpRequest(`${base}/status`)).body) as { processesNotSelected?: Array<{ pid: number; reason: string }>; config?: { sources?: Record<string, string> } };
    assert.deepEqual(status.processesNotSelected?.find((p) => p.pid === server.pid), { pid: server.pid, exe: bin, reason: 'tracing is disabled (OTEL_SDK_DISABLED=True)' });
    assert.equal(status.config?.sources?.['export.exporter'], 'OTEL_SDK_DISABLED');
    assert.equal((await httpRequest(`${base}/healthz`)).status, 200);
    assert.equal((await httpRequest(`${server.url}/hello`)).status, 200);
    const metrics = (await httpRequest(`${base}/metrics`)).body;
    assert.match(metrics, /^gotrail_processes_traced 0$/m);
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0, `gotrail run exits 0 on SIGTERM:\n${agent.log().slice(-3000)}`);
  }
  assert.doesNotMatch(agent.log(), /tracing process|SERVER {2}200/, 'nothing traced, nothing printed');
});
