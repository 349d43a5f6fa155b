// The collector helper against the real OpenTelemetry Collector: spans sent
// with the OpenTelemetry JS SDK over OTLP/HTTP protobuf (and one over raw
// OTLP/gRPC) must come back from the collector's file exporter intact.
//
// Run: deploy/node --test test/collector/

import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, type IncomingHttpHeaders } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { parseExportLine, startCollector, type Collector, type ReceivedSpan } from '../support/collector.ts';

const T0 = 1_700_000_000;

function sdk(collector: Collector, resource: Record<string, string | number | boolean | string[]>) {
  const exporter = new OTLPTraceExporter({ url: `${collector.otlpHttpEndpoint}/v1/traces` });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes(resource),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  return { provider, tracer: provider.getTracer('gotrail-collector-test', '1.2.3') };
}

function byId(spans: ReceivedSpan[], span: Span): ReceivedSpan {
  const found = spans.find((s) => s.spanId === span.spanContext().spanId);
  assert.ok(found, `span ${span.spanContext().spanId} was not received`);
  return found;
}

describe('OpenTelemetry Collector helper', () => {
  let collector: Collector;

  before(async () => {
    collector = await startCollector();
  });

  after(async () => {
    await collector?.stop();
  });

  it('listens on loopback only', () => {
    assert.match(collector.otlpHttpEndpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(collector.otlpGrpcEndpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(collector.otlpHttpEndpoint, collector.otlpGrpcEndpoint);
  });

  it('receives spans sent over OTLP/HTTP protobuf with ids, kinds, parents, times and attributes intact', async () => {
    await collector.clear();
    const { provider, tracer } = sdk(collector, {
      'service.name': 'collector-test',
      'deployment.environment.name': 'test',
      'process.pid': 4242,
      'gotrail.flags': ['a', 'b'],
    });

    const root = tracer.startSpan('GET /orders/{id}', {
      kind: SpanKind.SERVER,
      startTime: [T0, 123_456_789],
      attributes: {
        'http.request.method': 'GET',
        'http.response.status_code': 200,
        'gotrail.ratio': 0.25,
        'gotrail.sampled': true,
        'gotrail.strings': ['x', 'y'],
        'gotrail.ints': [1, 2, 3],
        'gotrail.bools': [true, false],
      },
    });
    const rootCtx = trace.setSpan(ROOT_CONTEXT, root);
    const client = tracer.startSpan('SELECT orders', { kind: SpanKind.CLIENT, startTime: [T0, 200_000_000] }, rootCtx);
    const clientCtx = trace.setSpan(rootCtx, client);
    const internal = tracer.startSpan('decode', { kind: SpanKind.INTERNAL, startTime: [T0, 300_000_000] }, clientCtx);
    const producer = tracer.startSpan('orders publish', { kind: SpanKind.PRODUCER }, rootCtx);
    const consumer = tracer.startSpan('orders process', {
      kind: SpanKind.CONSUMER,
      links: [{ context: producer.spanContext(), attributes: { 'messaging.operation.type': 'process' } }],
    });

    internal.addEvent('cache miss', { 'cache.key': 'order:7' }, [T0, 310_000_000]);
    internal.end([T0, 400_000_000]);
    client.setStatus({ code: SpanStatusCode.ERROR, message: 'connection reset' });
    client.end([T0, 500_000_000]);
    producer.end();
    consumer.end();
    root.setStatus({ code: SpanStatusCode.OK });
    root.end([T0 + 1, 0]);
    await provider.forceFlush();

    const spans = await collector.waitForSpans((s) => s.length >= 5, 10_000);
    assert.equal(spans.length, 5);
    await provider.shutdown();

    const r = byId(spans, root);
    const c = byId(spans, client);
    const i = byId(spans, internal);
    const p = byId(spans, producer);
    const k = byId(spans, consumer);

    const traceId = root.spanContext().traceId;
    assert.match(traceId, /^[0-9a-f]{32}$/);
    for (const s of [r, c, i, p]) assert.equal(s.traceId, traceId);
    assert.notEqual(k.traceId, traceId, 'the consumer span was started as a new trace');
    for (const s of spans) assert.match(s.spanId, /^[0-9a-f]{16}$/);

    assert.equal(r.parentSpanId, '');
    assert.equal(c.parentSpanId, r.spanId);
    assert.equal(i.parentSpanId, c.spanId);
    assert.equal(p.parentSpanId, r.spanId);
    assert.equal(k.parentSpanId, '');

    assert.deepEqual(
      spans.map((s) => [s.name, s.kind]).sort(),
      [
        ['GET /orders/{id}', 'SERVER'],
        ['SELECT orders', 'CLIENT'],
        ['decode', 'INTERNAL'],
        ['orders process', 'CONSUMER'],
        ['orders publish', 'PRODUCER'],
      ],
    );

    assert.equal(r.startTimeUnixNano, 1_700_000_000_123_456_789n);
    assert.equal(r.endTimeUnixNano, 1_700_000_001_000_000_000n);
    assert.equal(c.startTimeUnixNano, 1_700_000_000_200_000_000n);
    assert.equal(c.endTimeUnixNano, 1_700_000_000_500_000_000n);
    assert.equal(typeof p.startTimeUnixNano, 'bigint');
    assert.ok(p.endTimeUnixNano >= p.startTimeUnixNano);

    assert.deepEqual(r.status, { code: 'OK' });
    assert.deepEqual(c.status, { code: 'ERROR', message: 'connection reset' });
    assert.deepEqual(i.status, { code: 'UNSET' });

    assert.deepEqual(r.attributes, {
      'http.request.method': 'GET',
      'http.response.status_code': 200,
      'gotrail.ratio': 0.25,
      'gotrail.sampled': true,
      'gotrail.strings': ['x', 'y'],
      'gotrail.ints': [1, 2, 3],
      'gotrail.bools': [true, false],
    });
    // The SDK sends whole numbers as ints and fractions as doubles; raw keeps that.
    const rawValue = (key: string) => r.raw.attributes?.find((kv) => kv.key === key)?.value;
    assert.deepEqual(rawValue('http.response.status_code'), { intValue: '200' });
    assert.deepEqual(rawValue('gotrail.ratio'), { doubleValue: 0.25 });
    assert.deepEqual(c.attributes, {});

    assert.deepEqual(i.events, [
      { name: 'cache miss', timeUnixNano: 1_700_000_000_310_000_000n, attributes: { 'cache.key': 'order:7' } },
    ]);
    assert.deepEqual(k.links, [
      {
        traceId: p.traceId,
        spanId: p.spanId,
        traceState: '',
        attributes: { 'messaging.operation.type': 'process' },
      },
    ]);

    for (const s of spans) {
      assert.equal(s.resource['service.name'], 'collector-test');
      assert.equal(s.resource['deployment.environment.name'], 'test');
      assert.equal(s.resource['process.pid'], 4242);
      assert.deepEqual(s.resource['gotrail.flags'], ['a', 'b']);
      assert.equal(s.scope.name, 'gotrail-collector-test');
      assert.equal(s.scope.version, '1.2.3');
    }
  });

  it('receives a span sent over OTLP/gRPC', async () => {
    await collector.clear();
    const traceId = Buffer.from('0af7651916cd43dd8448eb211c80319c', 'hex');
    const spanId = Buffer.from('b7ad6b7169203331', 'hex');
    const request = pb.message([
      pb.field(1, [
        pb.field(1, [pb.field(1, [pb.string(1, 'service.name'), pb.field(2, [pb.string(1, 'grpc-sender')])])]),
        pb.field(2, [
          pb.field(1, [pb.string(1, 'raw-grpc'), pb.string(2, '0.0.1')]),
          pb.field(2, [
            pb.bytes(1, traceId),
            pb.bytes(2, spanId),
            pb.string(5, 'grpc span'),
            pb.varint(6, 3),
            pb.fixed64(7, 1_700_000_000_000_000_001n),
            pb.fixed64(8, 1_700_000_000_000_000_002n),
          ]),
        ]),
      ]),
    ]);
    const grpcStatus = await grpcExport(collector.otlpGrpcEndpoint, request);
    assert.equal(grpcStatus, '0');

    const [span] = await collector.waitForSpans((s) => s.length === 1, 10_000);
    assert.ok(span);
    assert.equal(span.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(span.spanId, 'b7ad6b7169203331');
    assert.equal(span.parentSpanId, '');
    assert.equal(span.name, 'grpc span');
    assert.equal(span.kind, 'CLIENT');
    assert.equal(span.startTimeUnixNano, 1_700_000_000_000_000_001n);
    assert.equal(span.endTimeUnixNano, 1_700_000_000_000_000_002n);
    assert.deepEqual(span.resource, { 'service.name': 'grpc-sender' });
    assert.deepEqual(span.scope, { name: 'raw-grpc', version: '0.0.1', attributes: {}, schemaUrl: '' });
  });

  it('clear() forgets what was received before', async () => {
    const { provider, tracer } = sdk(collector, { 'service.name': 'clear-test' });
    tracer.startSpan('before clear').end();
    await provider.forceFlush();
    await collector.waitForSpans((s) => s.some((x) => x.name === 'before clear'));
    await collector.clear();
    assert.deepEqual(await collector.spans(), []);
    tracer.startSpan('after clear').end();
    await provider.shutdown();
    const spans = await collector.waitForSpans((s) => s.length > 0);
    assert.deepEqual(
      spans.map((s) => s.name),
      ['after clear'],
    );
  });

  it('waitForSpans fails with a summary of what did arrive', async () => {
    await collector.clear();
    const { provider, tracer } = sdk(collector, { 'service.name': 'timeout-test' });
    tracer.startSpan('the only span').end();
    await provider.shutdown();
    await collector.waitForSpans((s) => s.length === 1);
    await assert.rejects(
      collector.waitForSpans((s) => s.some((x) => x.name === 'never sent'), 300),
      /did not arrive; 1 span\(s\) received:\n {2}the only span \[INTERNAL\]/,
    );
  });
});

describe('collector lifecycle', () => {
  it('stop() is idempotent, ends the process and keeps the received spans readable', async () => {
    const collector = await startCollector();
    const { provider, tracer } = sdk(collector, { 'service.name': 'stop-test' });
    tracer.startSpan('last words').end();
    await provider.shutdown();
    await collector.waitForSpans((s) => s.length === 1);

    await Promise.all([collector.stop(), collector.stop()]);
    await collector.stop();
    assert.throws(() => process.kill(collector.pid, 0), { code: 'ESRCH' });
    await assert.rejects(stat(collector.dir), { code: 'ENOENT' });
    assert.deepEqual(
      (await collector.spans()).map((s) => s.name),
      ['last words'],
    );
    assert.match(collector.lastStderr(), /Everything is ready|Starting otelcol/);
  });

  it('waitForSpans reports a collector that died instead of waiting out its timeout', async () => {
    const collector = await startCollector();
    try {
      process.kill(collector.pid, 'SIGKILL');
      const started = Date.now();
      await assert.rejects(collector.waitForSpans(() => false, 20_000), /exited while waiting for spans; no span received/);
      assert.ok(Date.now() - started < 5_000);
    } finally {
      await collector.stop();
    }
  });

  it('two collectors run side by side on different ports', async () => {
    const [a, b] = await Promise.all([startCollector(), startCollector()]);
    try {
      assert.notEqual(a.otlpHttpEndpoint, b.otlpHttpEndpoint);
      assert.notEqual(a.otlpGrpcEndpoint, b.otlpGrpcEndpoint);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  describe('start-up failures', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'gotrail-collector-test-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    async function script(name: string, body: string): Promise<string> {
      const path = join(dir, name);
      await writeFile(path, `#!/bin/sh\n${body}\n`);
      await chmod(path, 0o755);
      return path;
    }

    it('names a missing binary and how to build it', async () => {
      await assert.rejects(startCollector({ binaryPath: join(dir, 'no-such-otelcol') }), (e: Error) => {
        assert.match(e.message, /binary not found at .*no-such-otelcol/);
        assert.match(e.message, /deploy\/setup\.sh/);
        return true;
      });
    });

    it('reports an early exit with the exit code and the stderr tail', async () => {
      const binaryPath = await script('crashes', 'echo "Error: invalid configuration: no receivers" >&2\nexit 3');
      await assert.rejects(startCollector({ binaryPath }), (e: Error) => {
        assert.match(e.message, /exited during start-up \(exit code 3\)/);
        assert.match(e.message, /Error: invalid configuration: no receivers/);
        return true;
      });
    });

    it("reports the real collector's own error when it rejects its configuration", async () => {
      await assert.rejects(startCollector({ logLevel: 'bogus' as 'info' }), (e: Error) => {
        assert.match(e.message, /exited during start-up \(exit code 1\)/);
        assert.match(e.message, /unrecognized level: "bogus"/);
        return true;
      });
    });

    it('retries on new ports when a picked port was taken meanwhile', async () => {
      const runs = join(dir, 'runs');
      const binaryPath = await script(
        'port-taken',
        `echo run >> '${runs}'\necho 'Error: listen tcp 127.0.0.1:4318: bind: address already in use' >&2\nexit 1`,
      );
      await assert.rejects(startCollector({ binaryPath }), /address already in use/);
      assert.equal((await readFile(runs, 'utf8')).split('\n').filter(Boolean).length, 3);
    });

    it('reports a collector that never listens, after the start timeout', async () => {
      const binaryPath = await script('hangs', 'echo "stuck before listening" >&2\nexec sleep 30');
      const started = Date.now();
      await assert.rejects(startCollector({ binaryPath, startTimeoutMs: 500 }), (e: Error) => {
        assert.match(e.message, /did not accept connections on 127\.0\.0\.1:\d+ \(OTLP\/HTTP\).* within 500 ms/);
        assert.match(e.message, /stuck before listening/);
        return true;
      });
      assert.ok(Date.now() - started < 10_000);
    });
  });
});

describe('OTLP JSON parsing', () => {
  it('decodes every attribute value kind and the enum and int64 encodings', () => {
    const line = JSON.stringify({
      resourceSpans: [
        {
          resource: { attributes: [{ key: 'service.name', value: { stringValue: 'svc' } }] },
          scopeSpans: [
            {
              scope: { name: 's' },
              spans: [
                {
                  traceId: '0AF7651916CD43DD8448EB211C80319C',
                  spanId: 'B7AD6B7169203331',
                  parentSpanId: '00f067aa0ba902b7',
                  name: 'n',
                  kind: 5,
                  startTimeUnixNano: '18446744073709551615',
                  endTimeUnixNano: 1000,
                  status: { code: 2 },
                  attributes: [
                    { key: 'str', value: { stringValue: '' } },
                    { key: 'int', value: { intValue: '-42' } },
                    { key: 'bigint', value: { intValue: '9223372036854775807' } },
                    { key: 'double', value: { doubleValue: 1.5 } },
                    { key: 'nan', value: { doubleValue: 'NaN' } },
                    { key: 'bool', value: { boolValue: false } },
                    { key: 'bytes', value: { bytesValue: 'AQID' } },
                    { key: 'array', value: { arrayValue: { values: [{ intValue: '1' }, { stringValue: 'two' }, {}] } } },
                    { key: 'emptyArray', value: { arrayValue: {} } },
                    { key: 'kv', value: { kvlistValue: { values: [{ key: 'a', value: { boolValue: true } }] } } },
                    { key: 'empty', value: {} },
                  ],
                },
              ],
            },
          ],
        },
      ],
    });
    const [span] = parseExportLine(line);
    assert.ok(span);
    assert.equal(span.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(span.spanId, 'b7ad6b7169203331');
    assert.equal(span.parentSpanId, '00f067aa0ba902b7');
    assert.equal(span.kind, 'CONSUMER');
    assert.deepEqual(span.status, { code: 'ERROR' });
    assert.equal(span.startTimeUnixNano, 18_446_744_073_709_551_615n);
    assert.equal(span.endTimeUnixNano, 1000n);
    assert.deepEqual(span.scope, { name: 's', version: '', attributes: {}, schemaUrl: '' });
    assert.deepEqual(span.attributes, {
      str: '',
      int: -42,
      bigint: 9_223_372_036_854_775_807n,
      double: 1.5,
      nan: NaN,
      bool: false,
      bytes: new Uint8Array([1, 2, 3]),
      array: [1, 'two', null],
      emptyArray: [],
      kv: { a: true },
      empty: null,
    });
  });

  it('rejects an unknown span kind rather than guessing', () => {
    const line = JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ kind: 9 }] }] }] });
    assert.throws(() => parseExportLine(line), /unknown span kind 9/);
  });
});

// --- a minimal protobuf writer and gRPC client, enough for one OTLP export ------

const pb = {
  varintBytes(n: bigint): Buffer {
    const out: number[] = [];
    do {
      let b = Number(n & 0x7fn);
      n >>= 7n;
      if (n > 0n) b |= 0x80;
      out.push(b);
    } while (n > 0n);
    return Buffer.from(out);
  },
  tag(field: number, wire: number): Buffer {
    return pb.varintBytes(BigInt((field << 3) | wire));
  },
  bytes(field: number, value: Buffer): Buffer {
    return Buffer.concat([pb.tag(field, 2), pb.varintBytes(BigInt(value.length)), value]);
  },
  string(field: number, value: string): Buffer {
    return pb.bytes(field, Buffer.from(value, 'utf8'));
  },
  field(field: number, parts: Buffer[]): Buffer {
    return pb.bytes(field, Buffer.concat(parts));
  },
  varint(field: number, value: number): Buffer {
    return Buffer.concat([pb.tag(field, 0), pb.varintBytes(BigInt(value))]);
  },
  fixed64(field: number, value: bigint): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(value);
    return Buffer.concat([pb.tag(field, 1), b]);
  },
  message(parts: Buffer[]): Buffer {
    return Buffer.concat(parts);
  },
};

/** Sends one ExportTraceServiceRequest over plaintext HTTP/2 and resolves with the grpc-status trailer. */
function grpcExport(endpoint: string, request: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = connect(endpoint);
    session.once('error', reject);
    const frame = Buffer.alloc(5);
    frame.writeUInt32BE(request.length, 1);
    const stream = session.request({
      ':method': 'POST',
      ':path': '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    let status: string | undefined;
    stream.on('response', (headers) => {
      // A gRPC error without a body comes back as headers-only ("trailers-only").
      if (headers['grpc-status'] !== undefined) status = String(headers['grpc-status']);
    });
    stream.on('trailers', (trailers: IncomingHttpHeaders) => {
      status = String(trailers['grpc-status']);
    });
    stream.on('data', () => {});
    stream.once('error', reject);
    stream.once('close', () => {
      session.close();
      if (status === undefined) reject(new Error('no grpc-status from the collector'));
      else resolve(status);
    });
    stream.end(Buffer.concat([frame, request]));
  });
}
