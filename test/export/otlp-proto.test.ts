/**
 * gotrail's OTLP protobuf encoder writes, byte for byte, the request the
 * OpenTelemetry serializer writes for the same spans: span records from
 * probe events and from hex ids, other ReadableSpans (events, links,
 * tracestate, every attribute type), several resources and scopes, and
 * buffers that must grow.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode, TraceFlags } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { decodeEncodedSpans, EncodedSpan, OtlpTraceEncoder, spanCount, type QueuedSpan } from '../../daemon/export/otlp-proto.ts';
import { instrumentationScope, makeSpan, spanRecord, type SpanRecord } from '../../daemon/spans/span-record.ts';
import { rawSpanContextAt } from '../../daemon/spans/span-context.ts';
import { MonotonicClock } from '../../daemon/spans/clock.ts';
import { emitProbeSpan, type EventContext } from '../../daemon/probes/types.ts';
import { encodeSpanContext, SpanFlags } from '../../daemon/generated/layouts.ts';

const resA = resourceFromAttributes({ 'service.name': 'shop', 'process.pid': 41, 'host.arch': 'amd64', 'k8s.pod.labels': ['a', 'b'] });
const resB = resourceFromAttributes({ 'service.name': 'billing — ünïcødé', 'process.pid': 42 });

function fromHex(i: number, resource = resA, scope = 'net/http'): ReadableSpan {
  return makeSpan({
    name: `GET /items/${i}`, kind: SpanKind.SERVER, traceId: (i + 1).toString(16).padStart(32, '0'), spanId: (i + 7).toString(16).padStart(16, 'f'),
    parentSpanId: i % 2 ? 'abcdef0123456789' : undefined, parentRemote: i % 4 === 1, sampled: i % 3 !== 0,
    traceState: i % 5 === 0 ? new TraceState('vendor=x,other=y') : undefined,
    startUnixNano: 1_764_547_200_123_456_789n + BigInt(i), endUnixNano: 1_764_547_200_223_456_789n + BigInt(i * 3),
    attributes: {
      'http.request.method': 'GET', 'url.path': `/items/${i}`, 'http.response.status_code': 200 + i, 'server.port': 8080,
      'gotrail.truncated': i % 2 === 0, 'some.double': 1.5, 'some.negative': -3, 'some.big': 2 ** 40, 'some.list': [1, 2, 3], 'some.unicode': 'çà → ✓',
      'long.value': 'x'.repeat(300 + i),
    },
    status: i % 2 ? { code: SpanStatusCode.ERROR, message: 'boom' } : { code: SpanStatusCode.UNSET },
    resource, scope,
    events: i % 3 === 0 ? [{ name: 'exception', timeUnixNano: 1_764_547_200_200_000_000n }] : undefined,
    droppedAttributes: i % 2, droppedEvents: i % 3,
  });
}

function sdkLike(i: number): ReadableSpan {
  const base = fromHex(i, resB, 'database/sql');
  const ctx = base.spanContext();
  return {
    name: base.name, kind: SpanKind.CLIENT, spanContext: () => ctx, parentSpanContext: base.parentSpanContext,
    startTime: base.startTime, endTime: base.endTime, status: base.status, attributes: base.attributes,
    links: [{ context: { traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8), traceFlags: TraceFlags.SAMPLED, isRemote: true }, attributes: { 'link.kind': 'follows' } }],
    events: [{ name: 'evt', time: [1_764_547_200, 999_999_999], attributes: { k: 'v' }, droppedAttributesCount: 2 }],
    duration: base.duration, ended: true, resource: resB, instrumentationScope: instrumentationScope('database/sql'),
    droppedAttributesCount: 0, droppedEventsCount: 0, droppedLinksCount: 0,
  };
}

function same(spans: ReadableSpan[], encoder = new OtlpTraceEncoder()): void {
  const theirs = ProtobufTraceSerializer.serializeRequest(spans);
  assert.ok(theirs);
  const ours = encoder.encode(spans);
  assert.equal(Buffer.from(ours).toString('hex'), Buffer.from(theirs).toString('hex'));
}

test('span records from hex ids encode as the OpenTelemetry serializer encodes them', () => {
  same(Array.from({ length: 40 }, (_, i) => fromHex(i)));
});

test('several resources and scopes, other ReadableSpans with links and events, one encoder reused', () => {
  const encoder = new OtlpTraceEncoder(64);
  for (let round = 0; round < 3; round++) {
    same([fromHex(1), sdkLike(2), fromHex(3, resB), fromHex(4, resA, 'google.golang.org/grpc'), sdkLike(5), fromHex(6)], encoder);
  }
});

test('attribute values that repeat, change, change type or are mutated in place encode as the OpenTelemetry serializer encodes them', () => {
  // the encoder reuses a KeyValue whose value came twice in a row under its key and field
  const list = [1, 2];
  const values: Array<string | number | boolean | number[]> = ['GET', 'GET', 'GET', 'POST', 'GET', 'GET', 7, 7, '7', '7', true, true, false, -0, 0, 0, 1.5, 1.5, 'y'.repeat(400), 'y'.repeat(400), 'y'.repeat(400), list, list];
  const encoder = new OtlpTraceEncoder();
  const spans = values.map((v, i) => {
    if (i === values.length - 1) list.push(3);
    return makeSpan({
      name: 'n', kind: SpanKind.SERVER, traceId: (i + 1).toString(16).padStart(32, '0'), spanId: (i + 1).toString(16).padStart(16, '0'), sampled: true,
      startUnixNano: 1_764_547_200_000_000_000n, endUnixNano: 1_764_547_200_000_000_001n,
      attributes: { k: v, 'service.name': i % 3 ? 'shop' : 'other' }, status: { code: SpanStatusCode.UNSET }, resource: resA, scope: 'net/http',
    });
  });
  same(spans, encoder);
  same(spans, encoder);
  const prepared = encoder.encode(spans.map((s) => encoder.prepare(s)));
  assert.equal(Buffer.from(prepared).toString('hex'), Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!).toString('hex'), 'prepared when queued');
});

test('a span record read in place from event bytes carries the ids, flags and stamps BPF wrote', () => {
  const buf = Buffer.alloc(64);
  const ids = { trace_id: Buffer.from('0af7651916cd43dd8448eb211c80319c', 'hex'), span_id: Buffer.from('b7ad6b7169203331', 'hex'), parent_span_id: Buffer.from('00f067aa0ba902b7', 'hex') };
  encodeSpanContext({ ...ids, flags: SpanFlags.GT_SPAN_SAMPLED | SpanFlags.GT_SPAN_HAS_PARENT | SpanFlags.GT_SPAN_PARENT_REMOTE, reserved: 0 }, buf, 8);
  const raw = rawSpanContextAt(buf, 8);
  const span = spanRecord({
    name: 'GET', kind: SpanKind.SERVER, ids: raw.ids, hasParent: true, parentRemote: true, sampled: true, traceState: undefined,
    startUnixNano: 1_764_547_200_000_000_001n, endUnixNano: 1_764_547_200_000_000_000n, attributes: { a: 1 }, status: { code: SpanStatusCode.UNSET },
    resource: resA, scope: 'net/http', events: [], droppedEvents: 0, droppedAttributes: 0,
  });
  assert.deepEqual(span.spanContext(), { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED, traceState: undefined });
  assert.deepEqual(span.parentSpanContext, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: '00f067aa0ba902b7', traceFlags: TraceFlags.SAMPLED, isRemote: true });
  // an end before the start is clamped to the start
  assert.deepEqual(span.startTime, [1_764_547_200, 1]);
  assert.deepEqual(span.endTime, [1_764_547_200, 1]);
  assert.deepEqual(span.duration, [0, 0]);
  same([span]);
});

test('a span record read in place from an event (eventSpanRecord) encodes as the one made from its decoded fields', () => {
  // stamps whose low halves carry into the high ones once the offset is added, an end before the start, no parent, a trace state
  const clock = new MonotonicClock();
  const encoder = new OtlpTraceEncoder(64);
  const stamps = [0n, 0xffff_ffffn, 0x1_ffff_fff0n, 123_456_789_000n, process.hrtime.bigint(), 0x7fff_ffff_ffff_fff0n];
  for (const [i, start] of stamps.entries()) {
    for (const end of [start + 0x1_0000_0010n, start, start > 5n ? start - 5n : start]) {
      const buf = Buffer.alloc(96);
      const flags = (i % 2 ? SpanFlags.GT_SPAN_HAS_PARENT : 0) | (i % 3 ? SpanFlags.GT_SPAN_SAMPLED : 0) | (i === 1 ? SpanFlags.GT_SPAN_PARENT_REMOTE : 0);
      encodeSpanContext({ trace_id: Buffer.alloc(16, i + 1), span_id: Buffer.alloc(8, 0xb0 + i), parent_span_id: Buffer.alloc(8, i % 2 ? 0xc0 : 0), flags, reserved: 0 }, buf, 16);
      buf.writeBigUInt64LE(start, 72);
      buf.writeBigUInt64LE(end, 80);
      const fields = { name: `GET /x/${i}`, kind: SpanKind.SERVER, attributes: { 'url.path': `/x/${i}` }, error: i === 2, resource: resA, scope: 'net/http',
        traceState: i === 3 ? new TraceState('vendor=x') : undefined };
      const emitted: ReadableSpan[] = [];
      const ctx = { clock, emit: (s: ReadableSpan) => emitted.push(s) } as unknown as EventContext;
      emitProbeSpan(ctx, { ...fields, event: buf, spanAt: 16, startAt: 72, endAt: 80 });
      emitProbeSpan(ctx, { ...fields, span: rawSpanContextAt(buf, 16), start_ns: start, end_ns: end });
      const [inPlace, decoded] = emitted as [SpanRecord, SpanRecord];
      assert.equal(inPlace.startUnixNano, clock.toUnixNano(start));
      assert.equal(inPlace.endUnixNano, decoded.endUnixNano);
      assert.ok(inPlace.endUnixNano >= inPlace.startUnixNano, 'never ends before it starts');
      assert.deepEqual(inPlace.spanContext(), decoded.spanContext());
      assert.deepEqual(inPlace.parentSpanContext, decoded.parentSpanContext);
      assert.equal(Buffer.from(encoder.encode([inPlace])).toString('hex'), Buffer.from(encoder.encode([decoded])).toString('hex'));
      same([inPlace, decoded], encoder);
    }
  }
});

test('spans prepared when queued (OtlpTraceEncoder.prepare) encode as they would have at export, mixed with others, across chunks', () => {
  const encoder = new OtlpTraceEncoder(64);
  // 1,500 spans of ~1 KiB fill several 256 KiB chunks; a 300 KiB one grows a chunk of its own
  const spans: ReadableSpan[] = Array.from({ length: 1500 }, (_, i) => fromHex(i, i % 7 ? resA : resB, i % 5 ? 'net/http' : 'database/sql'));
  spans.splice(700, 0, makeSpan({ name: 'huge', kind: SpanKind.CLIENT, traceId: '1'.repeat(32), spanId: '2'.repeat(16), sampled: true, startUnixNano: 5n, endUnixNano: 6n,
    attributes: { 'db.query.text': 'y'.repeat(300 * 1024) }, status: { code: SpanStatusCode.UNSET }, resource: resA, scope: 'database/sql' }));
  spans.push(sdkLike(3));
  const queued = spans.map((sp, i) => (i % 3 === 2 ? sp : encoder.prepare(sp)));
  assert.ok(queued.filter((q) => q instanceof EncodedSpan).length > 1000, 'span records are prepared');
  assert.ok(!(queued.at(-1) instanceof EncodedSpan), 'other ReadableSpans are left as they are');
  assert.ok(new Set(queued.flatMap((q) => (q instanceof EncodedSpan ? [q.chunk] : []))).size >= 5, 'several chunks');
  const theirs = ProtobufTraceSerializer.serializeRequest(spans);
  assert.equal(Buffer.from(encoder.encode(queued)).toString('hex'), Buffer.from(theirs!).toString('hex'));
  // a batch sent again (after a failed export) encodes the same
  assert.equal(Buffer.from(encoder.encode(queued)).toString('hex'), Buffer.from(theirs!).toString('hex'));
});

test('spans prepared onto the queue\'s last run (prepareOnto) share runs, split anywhere, and encode and decode as the spans one by one', () => {
  const encoder = new OtlpTraceEncoder(64);
  // same resource and scope in stretches, a change of either starts a run; a 300 KiB span grows a chunk of its own
  const spans: ReadableSpan[] = Array.from({ length: 2500 }, (_, i) => fromHex(i, i % 500 < 480 ? resA : resB, i % 700 < 650 ? 'net/http' : 'database/sql'));
  spans.splice(1200, 0, makeSpan({ name: 'huge', kind: SpanKind.CLIENT, traceId: '1'.repeat(32), spanId: '2'.repeat(16), sampled: true, startUnixNano: 5n, endUnixNano: 6n,
    attributes: { 'db.query.text': 'y'.repeat(300 * 1024) }, status: { code: SpanStatusCode.UNSET }, resource: resA, scope: 'net/http' }));
  spans.splice(1800, 0, sdkLike(3));
  const queue: QueuedSpan[] = [];
  for (const sp of spans) {
    const tail = queue.at(-1);
    const q = encoder.prepareOnto(tail, sp);
    if (q !== tail) queue.push(q);
  }
  assert.equal(queue.reduce((n, q) => n + spanCount(q), 0), spans.length, 'every span is in one item');
  assert.ok(queue.length < 40, `a few runs hold the spans (${queue.length} items)`);
  assert.ok(queue.some((q) => spanCount(q) > 50), 'runs of many spans (one per chunk at most)');
  const theirs = ProtobufTraceSerializer.serializeRequest(spans);
  assert.equal(Buffer.from(encoder.encode(queue)).toString('hex'), Buffer.from(theirs!).toString('hex'));
  // split every run into pieces of 1, 2, 3 ... spans, as batches cut them
  const pieces: QueuedSpan[] = [];
  let k = 1;
  for (const q of queue) {
    if (!(q instanceof EncodedSpan)) {
      pieces.push(q);
      continue;
    }
    const rest = new EncodedSpan(q.chunk, q.start, q.end, q.resource, q.instrumentationScope, q.count);
    while (rest.count > 1) pieces.push(rest.splitOff(Math.min(rest.count - 1, (k++ % 7) + 1)));
    pieces.push(rest);
  }
  assert.ok(pieces.length > 100);
  assert.equal(pieces.reduce((n, q) => n + spanCount(q), 0), spans.length);
  assert.equal(Buffer.from(encoder.encode(pieces)).toString('hex'), Buffer.from(theirs!).toString('hex'), 'the pieces encode as the whole');
  const decoded = pieces.flatMap((q) => (q instanceof EncodedSpan ? decodeEncodedSpans(q) : [q]));
  assert.deepEqual(decoded.map((d) => d.name), spans.map((sp) => sp.name));
  assert.equal(Buffer.from(new OtlpTraceEncoder().encode(decoded)).toString('hex'), Buffer.from(theirs!).toString('hex'), 'the decoded spans encode as the originals');
});

test('a prepared span decodes back into the span it was made from (decodeEncodedSpans)', () => {
  const encoder = new OtlpTraceEncoder();
  for (let i = 0; i < 40; i++) {
    const original = fromHex(i, i % 2 ? resA : resB, 'google.golang.org/grpc');
    const all = decodeEncodedSpans(encoder.prepare(original) as EncodedSpan);
    assert.equal(all.length, 1, 'one span prepared, one decoded');
    const decoded = all[0]!;
    for (const k of ['name', 'kind', 'attributes', 'status', 'events', 'links', 'droppedAttributesCount', 'droppedEventsCount', 'startTime', 'endTime', 'resource', 'instrumentationScope'] as const) {
      assert.deepEqual(decoded[k], original[k], `${k} of span ${i}`);
    }
    const ctx = (sp: ReadableSpan) => ({ ...sp.spanContext(), traceState: sp.spanContext().traceState?.serialize() });
    assert.deepEqual(ctx(decoded), ctx(original));
    assert.deepEqual(decoded.parentSpanContext, original.parentSpanContext);
    same([decoded, original], encoder);
  }
});

test('a request larger than the initial buffer grows it', () => {
  const spans = Array.from({ length: 300 }, (_, i) => fromHex(i));
  same(spans, new OtlpTraceEncoder(16));
});

test("the exporter's serializer reads a collector's partial success (rejected spans and the message) from the response", async () => {
  const { otlpTraceSerializer } = await import('../../daemon/export/otlp-exporter.ts');
  const message = Buffer.from('3 spans had no name');
  // ExportTraceServiceResponse{partial_success(1): {rejected_spans(1): 3, error_message(2): ...}}, with an unknown field 9 to skip
  const inner = Buffer.concat([Buffer.from([0x08, 3, 0x12, message.length]), message]);
  const body = Buffer.concat([Buffer.from([0x48, 1, 0x0a, inner.length]), inner]);
  const got = otlpTraceSerializer().deserializeResponse(body);
  assert.deepEqual({ ...got, partialSuccess: { ...got.partialSuccess, rejectedSpans: Number(got.partialSuccess?.rejectedSpans) } }, { partialSuccess: { rejectedSpans: 3, errorMessage: '3 spans had no name' } });
  assert.deepEqual(got, ProtobufTraceSerializer.deserializeResponse(body), 'the same as the OpenTelemetry serializer reads');
  assert.deepEqual(otlpTraceSerializer().deserializeResponse(new Uint8Array(0)), {});
});

test('a request keeps its bytes until it is recycled; the next request of a fitting size then reuses its buffer', () => {
  const encoder = new OtlpTraceEncoder();
  const a = encoder.encode([fromHex(1), fromHex(2)]);
  const aHex = Buffer.from(a).toString('hex');
  const b = encoder.encode([fromHex(3)]);
  assert.notEqual(b.buffer, a.buffer, 'a request not recycled is not written again');
  assert.equal(Buffer.from(a).toString('hex'), aHex);
  encoder.recycle(a);
  const spans = [fromHex(4), fromHex(5), fromHex(6)];
  const c = encoder.encode(spans);
  assert.equal(c.buffer, a.buffer, 'the recycled buffer carries the next request');
  assert.equal(Buffer.from(c).toString('hex'), Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!).toString('hex'));
  assert.equal(Buffer.from(b).toString('hex'), Buffer.from(ProtobufTraceSerializer.serializeRequest([fromHex(3)])!).toString('hex'), 'a request still out keeps its bytes');
  // a request larger than every free buffer gets a buffer of its own
  encoder.recycle(b);
  const big = Array.from({ length: 300 }, (_, i) => fromHex(i));
  const d = encoder.encode(big);
  assert.notEqual(d.buffer, b.buffer);
  assert.equal(Buffer.from(d).toString('hex'), Buffer.from(ProtobufTraceSerializer.serializeRequest(big)!).toString('hex'));
});

test('the exporter reuses a request buffer only after its export succeeded: concurrent, slow and failed exports each send their own bytes', async () => {
  const { createServer } = await import('node:http');
  const { OtlpProtoTraceExporter } = await import('../../daemon/export/otlp-exporter.ts');
  const bodies: string[] = [];
  const pending: Array<() => void> = [];
  // the server reads each body whole, then answers when the test says (in arrival order)
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      bodies.push(Buffer.concat(parts).toString('hex'));
      pending.push(() => {
        res.statusCode = status;
        res.end();
      });
    });
  });
  let status = 200;
  const answer = (s: number): void => {
    status = s;
    pending.shift()?.();
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const encoder = new OtlpTraceEncoder();
  let recycled = 0;
  const recycle = encoder.recycle.bind(encoder);
  encoder.recycle = (r) => {
    recycled++;
    recycle(r);
  };
  const exporter = new OtlpProtoTraceExporter({ url: `http://127.0.0.1:${port}/v1/traces`, timeoutMillis: 10_000 }, encoder);
  const hexOf = (spans: ReadableSpan[]): string => Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!).toString('hex');
  const exportOf = (spans: ReadableSpan[]): Promise<number> => new Promise((r) => exporter.export(spans, (x) => r(x.code)));
  const until = async (f: () => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!f()) {
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  try {
    const batches = Array.from({ length: 6 }, (_, k) => Array.from({ length: 3 + k }, (_, i) => fromHex(10 * k + i)));
    // two at once, both waiting for their answer; then the first succeeds and a third goes while the second still waits
    const e0 = exportOf(batches[0]!);
    const e1 = exportOf(batches[1]!);
    await until(() => pending.length === 2);
    answer(200);
    assert.equal(await e0, 0);
    const e2 = exportOf(batches[2]!);
    await until(() => pending.length === 2);
    // the second fails (not recycled), the third succeeds; the next two go on
    answer(400);
    assert.equal(await e1, 1);
    answer(200);
    assert.equal(await e2, 0);
    const e3 = exportOf(batches[3]!);
    const e4 = exportOf(batches[4]!);
    await until(() => pending.length === 2);
    answer(200);
    answer(200);
    assert.deepEqual([await e3, await e4], [0, 0]);
    const e5 = exportOf(batches[5]!);
    await until(() => pending.length === 1);
    answer(200);
    assert.equal(await e5, 0);
    assert.deepEqual(bodies, batches.map(hexOf), 'each request sent the bytes of its own batch');
    assert.equal(recycled, 5, 'the five that succeeded went back to the encoder');
  } finally {
    await exporter.shutdown();
    server.close();
  }
});
