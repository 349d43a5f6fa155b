/**
 * The OpenTelemetry API bridge's event → span mapping, on hand-built events
 * encoded with the generated layout (the end-to-end test covers real probes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { otelApiProbe } from '../../../../daemon/probes/go/go.opentelemetry.io/otel/descriptor.ts';
import { encodeOtelSpanEvent, EventType, OTEL_SPAN_EVENT_SIZE, OtelAttributeType, OtelLimits, OtelStatusCode, SpanFlags, type OtelAttribute } from '../../../../daemon/generated/layouts.ts';
import { runProbeEvent } from '../../../support/probe-event.ts';

function field(s: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(s.slice(0, size), 'utf8');
  return b;
}

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const SPAN = 'a1b2c3d4e5f60718';

type Attr = { key: string; type: number; numeric?: bigint; string?: string; keyLen?: number };

function attr(a: Attr | undefined): OtelAttribute {
  return {
    type: a?.type ?? 0,
    key_len: a ? (a.keyLen ?? Buffer.byteLength(a.key)) : 0,
    string_len: a?.string !== undefined ? Buffer.byteLength(a.string) : 0,
    reserved: 0,
    numeric: a?.numeric ?? 0n,
    key: field(a?.key ?? '', OtelLimits.GT_OTEL_ATTRIBUTE_KEY_MAX),
    string: field(a?.string ?? '', OtelLimits.GT_OTEL_ATTRIBUTE_STRING_MAX),
  };
}

function event(o: { name?: string; nameLen?: number; status?: number; description?: string; events?: string[]; eventCount?: number; attrs?: Attr[]; attrCount?: number }): Buffer {
  const name = o.name ?? 'work';
  const attrs = o.attrs ?? [];
  const events = o.events ?? [];
  const buf = Buffer.alloc(OTEL_SPAN_EVENT_SIZE + 8);
  const items = Array.from({ length: OtelLimits.GT_OTEL_EVENTS_MAX }, (_, i) => ({
    time_ns: 1_001_000_000n + BigInt(i),
    name_len: events[i] !== undefined ? Buffer.byteLength(events[i]) : 0,
    reserved: 0,
    name: field(events[i] ?? '', OtelLimits.GT_OTEL_EVENT_NAME_MAX),
  }));
  encodeOtelSpanEvent({
    hdr: { type: EventType.GT_EVENT_OTEL_SPAN, size: OTEL_SPAN_EVENT_SIZE, tgid: 42, binary_id: 1, cpu: 0, goid: 7n },
    start_ns: 1_000_000_000n,
    end_ns: 1_002_500_000n,
    span: {
      trace_id: Buffer.from(TRACE, 'hex'),
      span_id: Buffer.from(SPAN, 'hex'),
      parent_span_id: Buffer.from(PARENT, 'hex'),
      flags: SpanFlags.GT_SPAN_SAMPLED | SpanFlags.GT_SPAN_HAS_PARENT,
      reserved: 0,
    },
    name_len: o.nameLen ?? Buffer.byteLength(name),
    status_code: o.status ?? OtelStatusCode.GT_OTEL_STATUS_UNSET,
    description_len: o.description === undefined ? 0 : Buffer.byteLength(o.description),
    events: o.eventCount ?? events.length,
    name: field(name, OtelLimits.GT_OTEL_NAME_MAX),
    description: field(o.description ?? '', OtelLimits.GT_OTEL_DESCRIPTION_MAX),
    event0: items[0]!,
    event1: items[1]!,
    event2: items[2]!,
    event3: items[3]!,
    attributes: o.attrCount ?? attrs.length,
    reserved: 0,
    attr0: attr(attrs[0]), attr1: attr(attrs[1]), attr2: attr(attrs[2]), attr3: attr(attrs[3]),
    attr4: attr(attrs[4]), attr5: attr(attrs[5]), attr6: attr(attrs[6]), attr7: attr(attrs[7]),
  }, buf, 8);
  return buf;
}

function run(buf: Buffer): { spans: ReadableSpan[]; problems: string[] } {
  return runProbeEvent(otelApiProbe, buf);
}

test('an API span becomes an INTERNAL span with its name, its parent and its ids', () => {
  const { spans, problems } = run(event({ name: 'load-user' }));
  assert.deepEqual(problems, []);
  const s = spans[0]!;
  assert.equal(s.name, 'load-user');
  assert.equal(s.kind, SpanKind.INTERNAL);
  assert.equal(s.spanContext().traceId, TRACE);
  assert.equal(s.spanContext().spanId, SPAN);
  assert.equal(s.parentSpanContext?.spanId, PARENT);
  assert.deepEqual(s.duration, [0, 2_500_000]);
  assert.deepEqual(s.status, { code: SpanStatusCode.UNSET });
  assert.deepEqual(s.attributes, {});
  assert.equal(s.instrumentationScope.name, 'gotrail/go.opentelemetry.io/otel');
});

test('SetStatus: Error with its description, Ok without one', () => {
  assert.deepEqual(run(event({ status: OtelStatusCode.GT_OTEL_STATUS_ERROR, description: 'db down' })).spans[0]!.status, { code: SpanStatusCode.ERROR, message: 'db down' });
  assert.deepEqual(run(event({ status: OtelStatusCode.GT_OTEL_STATUS_ERROR })).spans[0]!.status, { code: SpanStatusCode.ERROR });
  assert.deepEqual(run(event({ status: OtelStatusCode.GT_OTEL_STATUS_OK })).spans[0]!.status, { code: SpanStatusCode.OK });
});

test('events: the first ones kept in order, the others counted as dropped', () => {
  const s = run(event({ events: ['a', 'b'] })).spans[0]!;
  assert.deepEqual(s.events.map((e) => e.name), ['a', 'b']);
  assert.equal(s.droppedEventsCount, 0);
  // six AddEvent calls: four kept
  const many = run(event({ events: ['1', '2', '3', '4'], eventCount: 6 })).spans[0]!;
  assert.deepEqual(many.events.map((e) => e.name), ['1', '2', '3', '4']);
  assert.equal(many.droppedEventsCount, 2);
});

test('a name longer than kept is cut and marked; an unreadable one is a counted problem, no span', () => {
  const long = 'x'.repeat(OtelLimits.GT_OTEL_NAME_MAX);
  const s = run(event({ name: long, nameLen: 100 })).spans[0]!;
  assert.equal(s.name, long);
  assert.equal(s.attributes['gotrail.otel.span.name.truncated'], true);
  const bad = run(event({ nameLen: -1 }));
  assert.equal(bad.spans.length, 0);
  assert.deepEqual(bad.problems, ['otel span event without a readable name']);
});

test('attributes: bool, int64, float64 and string; a key set again replaces its value; what is not kept is counted', () => {
  const f = Buffer.alloc(8);
  f.writeDoubleLE(2.5);
  const s = run(event({
    attrs: [
      { key: 'cache.hit', type: OtelAttributeType.GT_OTEL_ATTRIBUTE_BOOL, numeric: 1n },
      { key: 'items', type: OtelAttributeType.GT_OTEL_ATTRIBUTE_INT64, numeric: BigInt.asUintN(64, -3n) },
      { key: 'ratio', type: OtelAttributeType.GT_OTEL_ATTRIBUTE_FLOAT64, numeric: f.readBigUInt64LE(0) },
      { key: 'user', type: OtelAttributeType.GT_OTEL_ATTRIBUTE_STRING, string: 'ada' },
      { key: 'user', type: OtelAttributeType.GT_OTEL_ATTRIBUTE_STRING, string: 'grace' },
      // a slice: not kept
      { key: 'tags', type: 0 },
    ],
    // ten set: eight kept (one of them a slice)
    attrCount: 10,
  })).spans[0]!;
  assert.deepEqual(s.attributes, { 'cache.hit': true, items: -3, ratio: 2.5, user: 'grace' });
  assert.equal(s.droppedAttributesCount, 2 + 1 + 2);
});
