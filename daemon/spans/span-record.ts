/**
 * Finished spans as the exporters take them, built directly from decoded
 * events: going through an SDK tracer per event would cap the agent far below
 * what the serializer can do.
 *
 * A span record keeps what the probe delivered in the form the OTLP encoder
 * writes (ids as their 32 raw bytes, stamps as nanoseconds): the hex ids and
 * `[seconds, nanos]` times of the ReadableSpan interface are made only when
 * something asks for them (the console exporter, head sampling by trace id),
 * not once per span on the way to the wire.
 */
import { SpanKind, SpanStatusCode, TraceFlags, type Attributes, type SpanContext, type SpanStatus, type HrTime, type TraceState, type Link } from '@opentelemetry/api';
import type { InstrumentationScope } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace-base';
import { nanosToHrTime, u32 } from './clock.ts';
import { AGENT_NAME, AGENT_VERSION, SEMCONV_SCHEMA_URL } from './resource.ts';
import { SpanContextOffsets, SpanFlags } from '../generated/layouts.ts';

const SPAN_CONTEXT_FLAGS = SpanContextOffsets.flags;

export interface SpanInput {
  name: string;
  kind: SpanKind;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  /** the parent came from another process (a traceparent header) */
  parentRemote?: boolean;
  sampled: boolean;
  /** W3C tracestate carried in from the parent, already validated */
  traceState?: TraceState;
  startUnixNano: bigint;
  endUnixNano: bigint;
  attributes: Attributes;
  status: SpanStatus;
  resource: Resource;
  /** instrumentation scope: the instrumented Go package */
  scope: string;
  /** span events (none by default) */
  events?: Array<{ name: string; timeUnixNano: bigint }>;
  /** events the probe could not keep */
  droppedEvents?: number;
  /** attributes the probe could not keep */
  droppedAttributes?: number;
}

/** What {@link spanRecord} takes: the ids as raw bytes, as a probe delivers them. */
export interface RawSpanInput {
  name: string;
  kind: SpanKind;
  /**
   * trace id (16 bytes), span id (8) and parent span id (8), as one latin1
   * string of 32 characters, one per byte (one small string per span
   * instead of three hex conversions).
   */
  ids: string;
  hasParent: boolean;
  parentRemote: boolean;
  sampled: boolean;
  traceState: TraceState | undefined;
  startUnixNano: bigint;
  endUnixNano: bigint;
  attributes: Attributes;
  status: SpanStatus;
  resource: Resource;
  /** the instrumented Go package, or its scope as made by {@link instrumentationScope} */
  scope: string | InstrumentationScope;
  events: TimedEvent[];
  droppedEvents: number;
  droppedAttributes: number;
}

export const STATUS_UNSET: SpanStatus = Object.freeze({ code: SpanStatusCode.UNSET });
export const STATUS_ERROR: SpanStatus = Object.freeze({ code: SpanStatusCode.ERROR });
const NO_LINKS: Link[] = Object.freeze([]) as unknown as Link[];
const NO_EVENTS: TimedEvent[] = Object.freeze([]) as unknown as TimedEvent[];

const scopes = new Map<string, InstrumentationScope>();
/**
 * One InstrumentationScope object per Go package, shared by its spans, so
 * that exporters grouping by identity (the OTLP serializers) write it once
 * per batch rather than once per span.
 */
export function instrumentationScope(scope: string): InstrumentationScope {
  let s = scopes.get(scope);
  if (!s) {
    s = Object.freeze({ name: `${AGENT_NAME}/${scope}`, version: AGENT_VERSION, schemaUrl: SEMCONV_SCHEMA_URL });
    scopes.set(scope, s);
  }
  return s;
}

/**
 * Where span records keep their ids and stamps: {@link SLOT_BYTES} bytes each
 * (trace id 16, span id 8, parent span id 8, then start and end as u64
 * little-endian nanoseconds since the epoch), side by side in slabs shared by
 * consecutive records. A record costs no string, BigInt or Buffer of its
 * own; a slab is freed with the last record that uses it.
 */
const SLOT_BYTES = 48;
const SLAB_BYTES = SLOT_BYTES * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let slabNext = 0;

/** Takes the next slot: returns its offset in `slab` (which it may replace with a fresh one). */
function takeSlot(): number {
  if (slabNext + SLOT_BYTES > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabNext = 0;
  }
  const at = slabNext;
  slabNext += SLOT_BYTES;
  return at;
}

/** Makes the end stamp at `at` of `b` no earlier than the start stamp (a span never ends before it starts). */
function clampEnd(b: Buffer, at: number): void {
  const sHi = u32(b, at + 36);
  const eHi = u32(b, at + 44);
  if (eHi > sHi || (eHi === sHi && u32(b, at + 40) >= u32(b, at + 32))) return;
  b.copy(b, at + 40, at + 32, at + 40);
}

/** What a clock must offer {@link eventSpanRecord} (MonotonicClock). */
export interface StampConverter {
  copyUnixNano(from: Buffer, fromAt: number, to: Buffer, toAt: number): void;
}

/** {@link SpanRecord}'s packed flags: the trace flags in the low byte, then these. */
const HAS_PARENT = 0x100;
const PARENT_REMOTE = 0x200;

/**
 * A finished span (a ReadableSpan) that keeps its ids as bytes and its stamps
 * as nanoseconds. One is made per span: what is the same for every record
 * (no links, ended) lives on the prototype, and the parent's flags share one
 * field with the trace flags, so that a record is ~140 bytes of V8's heap
 * rather than ~190.
 */
export class SpanRecord implements ReadableSpan {
  readonly name: string;
  readonly kind: SpanKind;
  /** The slab holding this record's ids and stamps (see {@link SLOT_BYTES}), at {@link at}. */
  readonly bytes: Buffer;
  readonly at: number;
  /** The trace flags (low byte), {@link HAS_PARENT} and {@link PARENT_REMOTE}. */
  readonly #flags: number;
  readonly traceState: TraceState | undefined;
  readonly status: SpanStatus;
  readonly attributes: Attributes;
  readonly events: TimedEvent[];
  readonly resource: Resource;
  readonly instrumentationScope: InstrumentationScope;
  readonly droppedAttributesCount: number;
  readonly droppedEventsCount: number;
  #context: SpanContext | undefined;

  /** Positional, for the hot path: see {@link spanRecord} and {@link eventSpanRecord}. */
  constructor(
    name: string, kind: SpanKind, bytes: Buffer, at: number, hasParent: boolean, parentRemote: boolean, sampled: boolean, traceState: TraceState | undefined,
    attributes: Attributes, status: SpanStatus, resource: Resource, scope: InstrumentationScope, events: TimedEvent[], droppedEvents: number, droppedAttributes: number,
  ) {
    this.name = name;
    this.kind = kind;
    this.bytes = bytes;
    this.at = at;
    this.#flags = (sampled ? TraceFlags.SAMPLED : TraceFlags.NONE) | (hasParent ? HAS_PARENT : 0) | (parentRemote ? PARENT_REMOTE : 0);
    this.traceState = traceState;
    this.status = status;
    this.attributes = attributes;
    this.events = events.length ? events : NO_EVENTS;
    this.resource = resource;
    this.instrumentationScope = scope;
    this.droppedAttributesCount = droppedAttributes;
    this.droppedEventsCount = droppedEvents;
  }

  get traceFlags(): number {
    return this.#flags & 0xff;
  }

  /** Whether the span has a parent (its id is then at 24..32 of the slot). */
  get hasParent(): boolean {
    return (this.#flags & HAS_PARENT) !== 0;
  }

  /** Whether the parent came from another process (a traceparent header). */
  get parentRemote(): boolean {
    return (this.#flags & PARENT_REMOTE) !== 0;
  }

  get links(): Link[] {
    return NO_LINKS;
  }

  get droppedLinksCount(): number {
    return 0;
  }

  get ended(): boolean {
    return true;
  }

  /** See {@link RawSpanInput.ids}. */
  get ids(): string {
    return this.bytes.toString('latin1', this.at, this.at + 32);
  }

  /** Wall-clock nanoseconds since the epoch. */
  get startUnixNano(): bigint {
    return this.bytes.readBigUInt64LE(this.at + 32);
  }

  /** Wall-clock nanoseconds since the epoch; never before the start. */
  get endUnixNano(): bigint {
    return this.bytes.readBigUInt64LE(this.at + 40);
  }

  spanContext(): SpanContext {
    this.#context ??= { traceId: this.#hex(0, 16), spanId: this.#hex(16, 24), traceFlags: this.traceFlags, traceState: this.traceState };
    return this.#context;
  }

  get parentSpanContext(): SpanContext | undefined {
    // made on each call (the console exporter and tests ask): a field to keep it in would cost every record
    if (!this.hasParent) return undefined;
    return { traceId: this.spanContext().traceId, spanId: this.#hex(24, 32), traceFlags: this.traceFlags, isRemote: this.parentRemote };
  }

  get startTime(): HrTime {
    return nanosToHrTime(this.startUnixNano);
  }

  get endTime(): HrTime {
    return nanosToHrTime(this.endUnixNano);
  }

  get duration(): HrTime {
    return nanosToHrTime(this.endUnixNano - this.startUnixNano);
  }

  #hex(from: number, to: number): string {
    return this.bytes.toString('hex', this.at + from, this.at + to);
  }
}

/** The span record of a probe's event, from decoded fields. */
export function spanRecord(s: RawSpanInput): SpanRecord {
  const at = takeSlot();
  const b = slab;
  b.write(s.ids, at, 32, 'latin1');
  b.writeBigUInt64LE(BigInt.asUintN(64, s.startUnixNano), at + 32);
  b.writeBigUInt64LE(BigInt.asUintN(64, s.endUnixNano), at + 40);
  clampEnd(b, at);
  return new SpanRecord(s.name, s.kind, b, at, s.hasParent, s.parentRemote, s.sampled, s.traceState, s.attributes, s.status, s.resource,
    typeof s.scope === 'string' ? instrumentationScope(s.scope) : s.scope, s.events, s.droppedEvents, s.droppedAttributes);
}

/**
 * The span record of a probe's event read in place: the struct
 * gt_span_context at `spanAt` of `event` (its ids and flags) and the
 * CLOCK_MONOTONIC stamps (u64 little-endian) at `startAt` and `endAt`,
 * turned to wall time by `clock`. Copies 48 bytes and allocates nothing but
 * the record.
 */
export function eventSpanRecord(
  event: Buffer, spanAt: number, startAt: number, endAt: number, clock: StampConverter,
  name: string, kind: SpanKind, traceState: TraceState | undefined, attributes: Attributes, status: SpanStatus, resource: Resource, scope: InstrumentationScope,
): SpanRecord {
  const at = takeSlot();
  const b = slab;
  for (let i = 0; i < 32; i++) b[at + i] = event[spanAt + i]!;
  clock.copyUnixNano(event, startAt, b, at + 32);
  clock.copyUnixNano(event, endAt, b, at + 40);
  clampEnd(b, at);
  const flags = u32(event, spanAt + SPAN_CONTEXT_FLAGS);
  return new SpanRecord(name, kind, b, at, (flags & SpanFlags.GT_SPAN_HAS_PARENT) !== 0, (flags & SpanFlags.GT_SPAN_PARENT_REMOTE) !== 0,
    (flags & SpanFlags.GT_SPAN_SAMPLED) !== 0, traceState, attributes, status, resource, scope, NO_EVENTS, 0, 0);
}

/** A span record from hex ids (spans made outside the probes' events, and tests). */
export function makeSpan(s: SpanInput): ReadableSpan {
  const ids = Buffer.alloc(32);
  ids.write(s.traceId, 0, 16, 'hex');
  ids.write(s.spanId, 16, 8, 'hex');
  if (s.parentSpanId) ids.write(s.parentSpanId, 24, 8, 'hex');
  return spanRecord({
    name: s.name,
    kind: s.kind,
    ids: ids.toString('latin1'),
    hasParent: !!s.parentSpanId,
    parentRemote: s.parentRemote ?? false,
    sampled: s.sampled,
    traceState: s.traceState,
    startUnixNano: s.startUnixNano,
    endUnixNano: s.endUnixNano,
    attributes: s.attributes,
    status: s.status,
    resource: s.resource,
    scope: s.scope,
    events: (s.events ?? []).map((e) => ({ name: e.name, time: nanosToHrTime(e.timeUnixNano) })),
    droppedEvents: s.droppedEvents ?? 0,
    droppedAttributes: s.droppedAttributes ?? 0,
  });
}

export { SpanKind, SpanStatusCode };
