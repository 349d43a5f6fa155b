/**
 * The export queue against an in-memory exporter, on mocked timers: when
 * batches leave (full at once, partial after the delay), how many at once,
 * timeouts, retries while the exporter fails, the queue bound and its
 * backpressure signal, shutdown; and the settings from flags and the
 * standard environment variables.
 */
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { SpanBatcher, BATCHER_DEFAULTS, type BatcherOptions } from '../../daemon/export/batcher.ts';
import type { QueuedSpan } from '../../daemon/export/otlp-proto.ts';
import { resolveExportConfig } from '../../daemon/export/config.ts';
import { createLogger } from '../../daemon/util/log.ts';

interface Call {
  spans: ReadableSpan[];
  done: (r: ExportResult) => void;
}

/** Records every export; answers at once with `answer`, or leaves the call pending when it is 'manual'. */
class MemoryExporter implements SpanExporter {
  answer: 'ok' | 'fail' | 'manual' = 'ok';
  readonly calls: Call[] = [];
  readonly delivered: string[] = [];
  shutdowns = 0;
  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    const call: Call = {
      spans,
      done: (r) => {
        if (r.code === ExportResultCode.SUCCESS) this.delivered.push(...spans.map((s) => s.name));
        done(r);
      },
    };
    this.calls.push(call);
    if (this.answer === 'ok') call.done({ code: ExportResultCode.SUCCESS });
    else if (this.answer === 'fail') call.done({ code: ExportResultCode.FAILED, error: new Error('collector down') });
  }
  shutdown(): Promise<void> {
    this.shutdowns++;
    return Promise.resolve();
  }
}

const ok = { code: ExportResultCode.SUCCESS };
const span = (i: number): ReadableSpan => ({ name: `s${i}` }) as ReadableSpan;
const names = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `s${from + i}`);

/** Lets promise continuations (export completions, the microtask that starts full batches) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

function setup(opts: BatcherOptions = {}): { exp: MemoryExporter; b: SpanBatcher; logs: string[] } {
  const logs: string[] = [];
  const exp = new MemoryExporter();
  const b = new SpanBatcher(exp, createLogger('info', (l) => logs.push(l)), opts);
  return { exp, b, logs };
}

describe('SpanBatcher', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  test('a full batch is exported at once, without waiting for the scheduled delay', async () => {
    const { exp, b } = setup({ maxExportBatchSize: 4, scheduledDelayMillis: 60_000 });
    for (let i = 0; i < 10; i++) b.push(span(i));
    await settle();
    assert.equal(exp.calls.length, 2, 'two full batches of 4, at once');
    assert.deepEqual(exp.delivered, names(0, 8));
    assert.equal(b.stats.queued, 2, 'the partial batch waits');
    mock.timers.tick(59_999);
    await settle();
    assert.equal(exp.calls.length, 2);
    mock.timers.tick(1);
    await settle();
    assert.equal(exp.calls.length, 3);
    assert.deepEqual(exp.delivered, names(0, 10));
    assert.deepEqual(b.stats, { queued: 0, exported: 10, failed: 0, dropped: { queue_full: 0, shutdown: 0 } });
  });

  test('a partial batch leaves scheduledDelayMillis after its first span; the timer is re-armed after each export', async () => {
    const { exp, b } = setup({ maxExportBatchSize: 100, scheduledDelayMillis: 1000 });
    b.push(span(0));
    mock.timers.tick(600);
    b.push(span(1));
    mock.timers.tick(399);
    await settle();
    assert.equal(exp.calls.length, 0, 'not before the delay');
    mock.timers.tick(1);
    await settle();
    assert.equal(exp.calls.length, 1);
    assert.deepEqual(exp.delivered, ['s0', 's1'], 'both spans in one export');
    b.push(span(2));
    mock.timers.tick(999);
    await settle();
    assert.equal(exp.calls.length, 1);
    mock.timers.tick(1);
    await settle();
    assert.deepEqual(exp.delivered, ['s0', 's1', 's2']);
    mock.timers.tick(10_000);
    await settle();
    assert.equal(exp.calls.length, 2, 'no empty exports');
  });

  test('at most maxConcurrentExports exports run at once; the next starts when one finishes', async () => {
    const { exp, b } = setup({ maxExportBatchSize: 2, maxConcurrentExports: 2, scheduledDelayMillis: 60_000 });
    exp.answer = 'manual';
    for (let i = 0; i < 10; i++) b.push(span(i));
    await settle();
    assert.equal(exp.calls.length, 2, 'two in flight');
    assert.equal(b.stats.queued, 10, 'spans being exported still count as queued');
    exp.calls[1]!.done(ok);
    await settle();
    assert.equal(exp.calls.length, 3, 'a slot freed: the next full batch starts at once');
    assert.equal(b.stats.queued, 8);
    for (let i = 0; i < 20 && exp.calls.some((c) => !c.spans.every((s) => exp.delivered.includes(s.name))); i++) {
      for (const c of exp.calls) if (!c.spans.every((s) => exp.delivered.includes(s.name))) c.done(ok);
      await settle();
      const pending = exp.calls.filter((c) => !c.spans.every((s) => exp.delivered.includes(s.name))).length;
      assert.ok(pending <= 2, `never more than 2 exports in flight (saw ${pending})`);
    }
    assert.equal(exp.calls.length, 5);
    assert.deepEqual([...exp.delivered].sort(), names(0, 10).sort());
    assert.equal(b.stats.exported, 10);
  });

  test('an export that does not finish within exportTimeoutMillis counts as failed and its spans are retried', async () => {
    const { exp, b, logs } = setup({ maxExportBatchSize: 3, exportTimeoutMillis: 500, scheduledDelayMillis: 100 });
    exp.answer = 'manual';
    for (let i = 0; i < 3; i++) b.push(span(i));
    await settle();
    assert.equal(exp.calls.length, 1);
    mock.timers.tick(499);
    await settle();
    assert.equal(b.stats.failed, 0);
    mock.timers.tick(1);
    await settle();
    assert.equal(b.stats.failed, 1, 'the hung export counts as failed');
    assert.equal(b.stats.queued, 3, 'its spans are queued again');
    assert.match(logs.join(''), /span export failed: spans kept and retried.*export timed out after 500 ms/);
    exp.calls[0]!.done(ok); // a late answer to the abandoned export changes nothing
    await settle();
    assert.equal(b.stats.exported, 0);
    exp.answer = 'ok';
    mock.timers.tick(100); // first retry after the backoff of scheduledDelayMillis
    await settle();
    assert.equal(exp.calls.length, 2);
    assert.deepEqual(exp.calls[1]!.spans.map((s) => s.name), names(0, 3), 'the same spans, retried');
    assert.equal(b.stats.exported, 3);
  });

  test('while the exporter fails spans are kept and retried with backoff, then delivered once, in order', async () => {
    const { exp, b, logs } = setup({ maxExportBatchSize: 4, scheduledDelayMillis: 100, maxBackoffMillis: 800 });
    exp.answer = 'fail';
    for (let i = 0; i < 6; i++) b.push(span(i));
    await settle();
    assert.equal(exp.calls.length, 1, 'the full batch was tried at once');
    assert.equal(b.stats.failed, 1);
    // backoff 100, 200, 400, 800, 800: no attempt in between, however many spans arrive
    const attemptsAt: number[] = [];
    let t = 0;
    for (let i = 0; i < 2200; i += 50) {
      mock.timers.tick(50);
      t += 50;
      if (i === 500) for (let j = 6; j < 12; j++) b.push(span(j));
      await settle();
      while (attemptsAt.length < exp.calls.length - 1) attemptsAt.push(t);
    }
    assert.deepEqual(attemptsAt, [100, 300, 700, 1500], 'retries back off, doubling up to maxBackoffMillis');
    assert.equal(b.stats.failed, 5);
    assert.equal(b.stats.queued, 12, 'nothing lost while failing');
    assert.equal(b.stats.dropped.queue_full, 0);
    assert.equal(logs.filter((l) => /span export failed/.test(l)).length, 1, 'the failure is logged once');
    exp.answer = 'ok';
    mock.timers.tick(800);
    await settle();
    mock.timers.tick(100);
    await settle();
    assert.deepEqual(exp.delivered, names(0, 12), 'every span delivered once, oldest first');
    assert.equal(b.stats.queued, 0);
    assert.match(logs.join(''), /span export recovered/);
  });

  test('beyond maxQueueSize spans are dropped and counted as queue_full; full and onSpace signal backpressure', async () => {
    const { exp, b, logs } = setup({ maxQueueSize: 6, maxExportBatchSize: 3, maxConcurrentExports: 1, scheduledDelayMillis: 60_000 });
    exp.answer = 'manual';
    let spaces = 0;
    b.onSpace(() => spaces++);
    for (let i = 0; i < 5; i++) b.push(span(i));
    assert.equal(b.full, false);
    b.push(span(5));
    assert.equal(b.full, true, 'maxQueueSize spans held');
    b.push(span(6));
    b.push(span(7));
    assert.equal(b.stats.dropped.queue_full, 2);
    assert.equal(b.stats.queued, 6);
    assert.equal(logs.filter((l) => /span queue full/.test(l)).length, 1, 'logged once');
    await settle();
    assert.equal(exp.calls.length, 1);
    assert.equal(b.full, true, 'spans being exported still take room');
    assert.equal(spaces, 0);
    exp.calls[0]!.done({ code: ExportResultCode.FAILED, error: new Error('down') });
    await settle();
    assert.equal(b.full, true, 'a failed batch is back in the queue: still full');
    assert.equal(spaces, 0);
    mock.timers.tick(60_000); // the retry, after a backoff of scheduledDelayMillis
    await settle();
    exp.calls[1]!.done(ok);
    await settle();
    assert.equal(b.full, false);
    assert.equal(spaces, 1, 'onSpace called once the queue has room again');
    assert.deepEqual(exp.delivered, names(0, 3));
    exp.calls[2]!.done(ok);
    await settle();
    assert.equal(spaces, 1, 'not called again while the queue was not full in between');
    assert.equal(b.stats.dropped.queue_full, 2);
    assert.deepEqual(exp.delivered, names(0, 6), 'the spans accepted are all delivered');
  });

  test('shutdown flushes once, shuts the exporter down once, is idempotent, and counts what it could not deliver', async () => {
    const { exp, b } = setup({ maxExportBatchSize: 2, scheduledDelayMillis: 60_000 });
    exp.answer = 'manual';
    for (let i = 0; i < 3; i++) b.push(span(i));
    await settle();
    assert.equal(exp.calls.length, 1, 'one full batch in flight, one span waiting');
    const first = b.shutdown();
    assert.equal(b.shutdown(), first, 'the same promise');
    exp.calls[0]!.done(ok);
    await settle();
    assert.equal(exp.calls.length, 2, 'the waiting span is flushed without its delay');
    exp.calls[1]!.done(ok);
    await first;
    await b.shutdown();
    assert.equal(exp.shutdowns, 1);
    assert.deepEqual(exp.delivered, names(0, 3));
    b.push(span(9));
    assert.deepEqual(b.stats.dropped, { queue_full: 0, shutdown: 1 }, 'a span pushed after shutdown is counted');
    mock.timers.tick(120_000);
    await settle();
    assert.equal(exp.calls.length, 2, 'no export after shutdown');

    // a dead collector: one attempt, then what is left is counted
    const dead = setup({ maxExportBatchSize: 2, scheduledDelayMillis: 60_000 });
    dead.exp.answer = 'fail';
    for (let i = 0; i < 5; i++) dead.b.push(span(i));
    await settle();
    assert.equal(dead.exp.calls.length, 1, 'the first full batch failed; the next attempt waits for the backoff');
    await dead.b.shutdown();
    assert.equal(dead.exp.calls.length, 2, 'shutdown tries once more, ignoring the backoff, and stops at that failure');
    assert.equal(dead.b.stats.dropped.shutdown, 5);
    assert.equal(dead.b.stats.queued, 0);
    assert.equal(dead.exp.shutdowns, 1);
  });

  test('shutdown is bounded: it says what it flushes and where, gives up at the export timeout (30 s when unlimited), and counts and logs what it dropped', async () => {
    for (const [exportTimeoutMillis, giveUpMs] of [[0, 30_000], [5_000, 5_000]] as const) {
      const { exp, b, logs } = setup({ maxExportBatchSize: 2, scheduledDelayMillis: 60_000, exportTimeoutMillis });
      Object.assign(exp, { destination: 'http://collector.invalid:4318/v1/traces' });
      exp.answer = 'manual'; // a collector that never answers
      for (let i = 0; i < 3; i++) b.push(span(i));
      await settle();
      let stopped = false;
      const p = b.shutdown().then(() => (stopped = true));
      await settle();
      assert.match(logs.join(''), new RegExp(`INFO  flushing 3 spans to http://collector\\.invalid:4318/v1/traces before stopping \\(giving up after ${giveUpMs / 1000} s, the export timeout\\)`));
      mock.timers.tick(giveUpMs - 1);
      await settle();
      assert.equal(stopped, false, `still flushing ${giveUpMs - 1} ms in`);
      mock.timers.tick(1);
      await settle();
      await p;
      assert.equal(b.stats.dropped.shutdown, 3, 'the batch in flight and the span waiting are counted');
      assert.equal(b.stats.queued, 0);
      const warn = logs.filter((l) => l.includes('WARN  stopping'));
      assert.equal(warn.length, 1, warn.join(''));
      assert.match(warn[0]!, /WARN {2}stopping without exporting 3 spans to http:\/\/collector\.invalid:4318\/v1\/traces: dropped, counted in gotrail_spans_dropped_total\{reason="shutdown"\} spans=3 reason=/);
      assert.equal(exp.shutdowns, 1);
    }
    // a flush during the stop that failed is the last attempt: shutdown does not try the dead collector again
    const dead = setup({ maxExportBatchSize: 2, scheduledDelayMillis: 60_000 });
    dead.exp.answer = 'fail';
    for (let i = 0; i < 3; i++) dead.b.push(span(i));
    await settle();
    dead.b.beginShutdown();
    await dead.b.forceFlush();
    const attempts = dead.exp.calls.length;
    await dead.b.shutdown();
    assert.equal(dead.exp.calls.length, attempts, 'no attempt after the failed flush');
    assert.equal(dead.b.stats.dropped.shutdown, 3);
    assert.match(dead.logs.join(''), /WARN {2}stopping without exporting 3 spans to the exporter: .* reason="the last export failed: collector down"/);
    // nothing queued: nothing said
    const idle = setup();
    await idle.b.shutdown();
    assert.deepEqual(idle.logs, []);
  });

  test('forceFlush exports what waits, ignoring the delay, and resolves when it is delivered', async () => {
    const { exp, b } = setup({ maxExportBatchSize: 2, scheduledDelayMillis: 60_000 });
    for (let i = 0; i < 5; i++) b.push(span(i));
    await b.forceFlush();
    assert.deepEqual(exp.delivered, names(0, 5));
    assert.equal(b.stats.queued, 0);
  });

  test('spans an OTLP exporter prepares share queued runs: batches are cut inside runs, counted in spans, and carry the bytes of the spans one by one, also when retried', async () => {
    const { OtlpTraceEncoder, spanCount } = await import('../../daemon/export/otlp-proto.ts');
    const { ProtobufTraceSerializer } = await import('@opentelemetry/otlp-transformer');
    const { makeSpan } = await import('../../daemon/spans/span-record.ts');
    const { resourceFromAttributes } = await import('@opentelemetry/resources');
    /** Prepares as the OTLP exporter does; records each export's request bytes and its items. */
    class EncodingExporter implements SpanExporter {
      readonly encoder = new OtlpTraceEncoder();
      answer: 'ok' | 'fail' = 'ok';
      readonly requests: string[] = [];
      readonly items: number[] = [];
      prepare(sp: ReadableSpan) {
        return this.encoder.prepare(sp);
      }
      prepareOnto(tail: QueuedSpan | undefined, sp: ReadableSpan) {
        return this.encoder.prepareOnto(tail, sp);
      }
      readonly counted: number[] = [];
      export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
        this.items.push(spans.length);
        this.counted.push((spans as QueuedSpan[]).reduce((n, q) => n + spanCount(q), 0));
        if (this.answer === 'fail') return done({ code: ExportResultCode.FAILED, error: new Error('collector down') });
        this.requests.push(Buffer.from(this.encoder.encode(spans)).toString('hex'));
        done(ok);
      }
      shutdown(): Promise<void> {
        return Promise.resolve();
      }
    }
    const exp = new EncodingExporter();
    const b = new SpanBatcher(exp, createLogger('info', () => {}), { maxExportBatchSize: 100, maxQueueSize: 1000, scheduledDelayMillis: 100 });
    const resources = [resourceFromAttributes({ 'service.name': 'a' }), resourceFromAttributes({ 'service.name': 'b' })];
    const made = Array.from({ length: 530 }, (_, i) => makeSpan({
      name: `GET /${i}`, kind: 1, traceId: (i + 1).toString(16).padStart(32, '0'), spanId: (i + 1).toString(16).padStart(16, '0'), sampled: true,
      startUnixNano: 1_764_547_200_123_456_789n + BigInt(i), endUnixNano: 1_764_547_200_223_456_789n + BigInt(i),
      attributes: { 'url.path': `/${i}`, 'http.response.status_code': 200 }, status: { code: 0 }, resource: resources[i < 300 || i >= 310 ? 0 : 1]!, scope: 'net/http',
    }));
    exp.answer = 'fail';
    for (const sp of made.slice(0, 150)) b.push(sp);
    await settle();
    assert.equal(exp.items.length, 1, 'the full batch was tried at once');
    assert.equal(exp.items[0], 1, 'its 100 spans as one run');
    assert.equal(b.stats.queued, 150, 'counted in spans');
    exp.answer = 'ok';
    for (const sp of made.slice(150)) b.push(sp);
    assert.equal(b.stats.queued, 530);
    mock.timers.tick(100);
    await settle();
    mock.timers.tick(100);
    await settle();
    const want = [];
    for (let i = 0; i < made.length; i += 100) want.push(Buffer.from(ProtobufTraceSerializer.serializeRequest(made.slice(i, i + 100))!).toString('hex'));
    assert.equal(exp.requests.length, want.length, 'batches of 100 spans: the failed one first, then in order');
    for (const [i, r] of exp.requests.entries()) assert.equal(r, want[i], `request ${i} as the OpenTelemetry serializer writes its spans`);
    assert.ok(exp.items.every((n) => n <= 4), `a few items per batch (${exp.items.join(' ')})`);
    assert.deepEqual(exp.counted, [100, 100, 100, 100, 100, 100, 30], 'spans per export, the failed one and its retry included');
    assert.deepEqual(b.stats, { queued: 0, exported: 530, failed: 1, dropped: { queue_full: 0, shutdown: 0 } });
  });

  test('a batch size above the queue size is clamped with a warning; bad options throw', () => {
    const { b, logs } = setup({ maxQueueSize: 100, maxExportBatchSize: 512 });
    assert.equal(b.options.maxExportBatchSize, 100);
    assert.match(logs.join(''), /WARN .*maxExportBatchSize exceeds maxQueueSize/);
    assert.throws(() => setup({ maxQueueSize: 0 }), /maxQueueSize: expected an integer >= 1/);
    assert.throws(() => setup({ scheduledDelayMillis: -1 }), /scheduledDelayMillis: expected an integer >= 0/);
  });
});

describe('export settings from flags and environment variables', () => {
  test('defaults', () => {
    const c = resolveExportConfig({}, {});
    assert.equal(c.exporter, 'otlp');
    assert.deepEqual(c.batcher, { ...BATCHER_DEFAULTS });
    assert.equal(c.batcher.maxQueueSize, 65536);
    assert.equal(c.batcher.maxExportBatchSize, 2048);
    assert.equal(c.batcher.scheduledDelayMillis, 1000);
    assert.equal(c.batcher.exportTimeoutMillis, 30000);
    assert.equal(c.batcher.maxConcurrentExports, 2);
  });

  test('the standard variables, with their meaning; an empty variable counts as unset', () => {
    const c = resolveExportConfig({}, {
      OTEL_TRACES_EXPORTER: 'console', OTEL_BSP_MAX_QUEUE_SIZE: '4096', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '256',
      OTEL_BSP_SCHEDULE_DELAY: '250', OTEL_BSP_EXPORT_TIMEOUT: '0',
    });
    assert.equal(c.exporter, 'console');
    assert.deepEqual(c.batcher, { ...BATCHER_DEFAULTS, maxQueueSize: 4096, maxExportBatchSize: 256, scheduledDelayMillis: 250, exportTimeoutMillis: 0 });
    assert.equal(c.sources['maxQueueSize'], 'OTEL_BSP_MAX_QUEUE_SIZE');
    assert.equal(resolveExportConfig({}, { OTEL_TRACES_EXPORTER: 'none' }).exporter, 'none');
    assert.equal(resolveExportConfig({}, { OTEL_TRACES_EXPORTER: ' OTLP ' }).exporter, 'otlp');
    const empty = resolveExportConfig({}, { OTEL_TRACES_EXPORTER: '', OTEL_BSP_MAX_QUEUE_SIZE: '' });
    assert.equal(empty.exporter, 'otlp');
    assert.equal(empty.batcher.maxQueueSize, 65536);
  });

  test('a flag wins over its variable', () => {
    const c = resolveExportConfig(
      { exporter: 'none', maxQueueSize: '1000', scheduleDelay: '5', exportTimeout: '700', maxExportBatchSize: '10', maxConcurrentExports: '4' },
      { OTEL_TRACES_EXPORTER: 'console', OTEL_BSP_MAX_QUEUE_SIZE: '9', OTEL_BSP_SCHEDULE_DELAY: '9', OTEL_BSP_EXPORT_TIMEOUT: '9', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '9' },
    );
    assert.equal(c.exporter, 'none');
    assert.deepEqual(c.batcher, { ...BATCHER_DEFAULTS, maxQueueSize: 1000, maxExportBatchSize: 10, scheduledDelayMillis: 5, exportTimeoutMillis: 700, maxConcurrentExports: 4 });
    assert.equal(c.sources['exporter'], '--exporter');
    // a variable the flag overrides is not even parsed
    assert.equal(resolveExportConfig({ maxQueueSize: '10' }, { OTEL_BSP_MAX_QUEUE_SIZE: 'many' }).batcher.maxQueueSize, 10);
  });

  test('a variable\'s unusable value is ignored with a warning naming it (the specification\'s rule), the file\'s or default value used; a flag\'s is an error', () => {
    const ignored: Array<[Record<string, string>, string]> = [
      [{ OTEL_TRACES_EXPORTER: 'zipkin' }, 'OTEL_TRACES_EXPORTER: expected otlp, console or none, got "zipkin": ignored, using otlp'],
      [{ OTEL_TRACES_EXPORTER: 'console,jaeger' }, 'OTEL_TRACES_EXPORTER: expected otlp, console or none, got "console,jaeger": ignored, using otlp'],
      [{ OTEL_BSP_MAX_QUEUE_SIZE: '0' }, 'OTEL_BSP_MAX_QUEUE_SIZE: expected an integer >= 1 (spans), got "0": ignored, using 65536'],
      [{ OTEL_BSP_MAX_QUEUE_SIZE: '1e4' }, 'OTEL_BSP_MAX_QUEUE_SIZE: expected an integer >= 1 (spans), got "1e4": ignored, using 65536'],
      [{ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: 'big' }, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE: expected an integer >= 1 (spans), got "big": ignored, using 2048'],
      [{ OTEL_BSP_SCHEDULE_DELAY: '-1' }, 'OTEL_BSP_SCHEDULE_DELAY: expected an integer >= 0 (milliseconds), got "-1": ignored, using 1000'],
      [{ OTEL_BSP_EXPORT_TIMEOUT: '10s' }, 'OTEL_BSP_EXPORT_TIMEOUT: expected an integer >= 0 (milliseconds (0: no limit)), got "10s": ignored, using 30000'],
    ];
    for (const [env, warning] of ignored) {
      const c = resolveExportConfig({}, env);
      assert.deepEqual(c.warnings, [warning], JSON.stringify(env));
      assert.equal(c.exporter, 'otlp');
      assert.deepEqual(c.batcher, BATCHER_DEFAULTS);
      assert.ok(Object.values(c.sources).every((v) => v === 'default'), JSON.stringify(c.sources));
    }
    // the configuration file's value stands when the variable is unusable
    const withFile = resolveExportConfig({}, { OTEL_TRACES_EXPORTER: 'zipkin', OTEL_BSP_MAX_QUEUE_SIZE: '-3' }, { exporter: 'console', maxQueueSize: 500 });
    assert.equal(withFile.exporter, 'console');
    assert.equal(withFile.batcher.maxQueueSize, 500);
    assert.deepEqual(withFile.sources, { ...withFile.sources, exporter: 'config file', maxQueueSize: 'config file' });
    assert.deepEqual(withFile.warnings, [
      'OTEL_TRACES_EXPORTER: expected otlp, console or none, got "zipkin": ignored, using console',
      'OTEL_BSP_MAX_QUEUE_SIZE: expected an integer >= 1 (spans), got "-3": ignored, using 500 (configuration file)',
    ]);
    // a list: gotrail has one exporter, the first named is used (values are case-insensitive, repeats collapse)
    const list = resolveExportConfig({}, { OTEL_TRACES_EXPORTER: ' Console , otlp,console' });
    assert.equal(list.exporter, 'console');
    assert.deepEqual(list.warnings, ['OTEL_TRACES_EXPORTER: gotrail sends spans to one exporter, got " Console , otlp,console": using console, not otlp']);
    assert.deepEqual(resolveExportConfig({}, { OTEL_TRACES_EXPORTER: 'none,none', OTEL_BSP_MAX_QUEUE_SIZE: ' 4096 ' }).warnings, []);
    assert.throws(() => resolveExportConfig({ exporter: 'jaeger' }, {}), /^ExportConfigError: --exporter: expected otlp, console or none, got "jaeger"$/);
    assert.throws(() => resolveExportConfig({ maxConcurrentExports: '0' }, {}), /--max-concurrent-exports: expected an integer >= 1/);
  });
});

describe('SpanBatcher.reconfigure (a configuration reload)', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  test('queued spans go to the new exporter; an export under way finishes on the old one, which is then shut down', async () => {
    const { exp: old, b } = setup({ maxExportBatchSize: 2, scheduledDelayMillis: 60_000 });
    old.answer = 'manual';
    for (let i = 0; i < 5; i++) b.push(span(i));
    await settle();
    assert.equal(old.calls.length, 2, 'two full batches under way');
    const next = new MemoryExporter();
    b.reconfigure(next, { maxExportBatchSize: 10, scheduledDelayMillis: 60_000 });
    await settle();
    assert.deepEqual(next.calls.length, 0, 'both export slots are taken');
    assert.equal(old.shutdowns, 0, 'not shut down while its exports run');
    for (const c of old.calls) c.done(ok);
    await settle();
    assert.deepEqual(old.delivered, names(0, 4));
    assert.equal(old.shutdowns, 1);
    assert.deepEqual(next.delivered, ['s4'], 'the waiting span leaves through the new exporter as soon as a slot is free, not after the delay');
    assert.equal(b.options.maxExportBatchSize, 10);
    assert.deepEqual(b.stats, { queued: 0, exported: 5, failed: 0, dropped: { queue_full: 0, shutdown: 0 } });
  });

  test('spans an OTLP exporter prepared as they were queued reach a new exporter that does not prepare as the spans they were', async () => {
    const { OtlpProtoTraceExporter } = await import('../../daemon/export/otlp-exporter.ts');
    const { makeSpan } = await import('../../daemon/spans/span-record.ts');
    const { resourceFromAttributes } = await import('@opentelemetry/resources');
    const otlp = new OtlpProtoTraceExporter({ url: 'http://127.0.0.1:9/v1/traces' });
    const b = new SpanBatcher(otlp, createLogger('info', () => {}), { scheduledDelayMillis: 60_000 });
    // one resource: the three are queued as one run of prepared spans
    const resource = resourceFromAttributes({ 'service.name': 's' });
    const made = Array.from({ length: 3 }, (_, i) => makeSpan({
      name: `GET /${i}`, kind: 1, traceId: 'ab'.repeat(16), spanId: `${i}`.repeat(16), parentSpanId: 'cd'.repeat(8), sampled: true,
      startUnixNano: 1_764_547_200_123_456_789n, endUnixNano: 1_764_547_200_223_456_789n + BigInt(i),
      attributes: { 'url.path': `/${i}`, 'http.response.status_code': 200 }, status: { code: 0 }, resource, scope: 'net/http',
    }));
    for (const s of made) b.push(s);
    const next = new MemoryExporter();
    b.reconfigure(next, { scheduledDelayMillis: 0 });
    mock.timers.tick(1);
    await settle();
    assert.deepEqual(next.delivered, ['GET /0', 'GET /1', 'GET /2']);
    const got = next.calls[0]!.spans;
    for (const [i, s] of made.entries()) {
      assert.deepEqual(got[i]!.attributes, s.attributes);
      assert.deepEqual(got[i]!.spanContext(), s.spanContext());
      assert.deepEqual(got[i]!.endTime, s.endTime);
    }
  });

  test('the OTLP exporter\'s destination, which the shutdown lines log, leaves out a user name and password in its URL', async () => {
    const { OtlpProtoTraceExporter } = await import('../../daemon/export/otlp-exporter.ts');
    const otlp = new OtlpProtoTraceExporter({ url: 'http://user:s3cret@127.0.0.1:9/v1/traces?tenant=a' });
    assert.equal(otlp.destination, 'http://127.0.0.1:9/v1/traces?tenant=a');
    assert.equal(new OtlpProtoTraceExporter({ url: 'https://token@collector.invalid/v1/traces' }).destination, 'https://collector.invalid/v1/traces');
    assert.equal(new OtlpProtoTraceExporter({ url: 'http://127.0.0.1:9/v1/traces' }).destination, 'http://127.0.0.1:9/v1/traces');
  });

  test('the new exporter starts without the old one\'s backoff, and readiness follows it; invalid options change nothing', async () => {
    const { exp: old, b } = setup({ scheduledDelayMillis: 100 });
    old.answer = 'fail';
    b.push(span(0));
    mock.timers.tick(100);
    await settle();
    assert.equal(b.exportHealthy, false);
    assert.throws(() => b.reconfigure(new MemoryExporter(), { maxQueueSize: 0 }), /maxQueueSize: expected an integer >= 1/);
    assert.equal(b.exportHealthy, false);
    const next = new MemoryExporter();
    b.reconfigure(next, { scheduledDelayMillis: 100 });
    await settle();
    assert.deepEqual(next.delivered, ['s0'], 'retried at once, not after the backoff');
    assert.equal(b.exportHealthy, true);
    assert.deepEqual(b.stats, { queued: 0, exported: 1, failed: 1, dropped: { queue_full: 0, shutdown: 0 } });
  });

  test('a larger queue lets a producer waiting for space go on', () => {
    const { exp, b } = setup({ maxQueueSize: 2, maxExportBatchSize: 2, scheduledDelayMillis: 100 });
    exp.answer = 'manual';
    let spaces = 0;
    b.onSpace(() => spaces++);
    b.push(span(0));
    b.push(span(1));
    assert.equal(b.full, true);
    b.reconfigure(exp, { maxQueueSize: 100, maxExportBatchSize: 2, scheduledDelayMillis: 100 });
    assert.equal(b.full, false);
    assert.equal(spaces, 1);
  });
});
