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
import { nanosToHrTime } from './clock.ts';
import { AGENT_NAME, AGENT_VERSION, SEMCONV_SCHEMA_URL } from './resource.ts';

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
  scope: string;
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

/** A finished span (a ReadableSpan) that keeps its ids as bytes and its stamps as nanoseconds. */
export class SpanRecord implements ReadableSpan {
  readonly name: string;
  readonly kind: SpanKind;
  /** See {@link RawSpanInput.ids}. */
  readonly ids: string;
  readonly hasParent: boolean;
  readonly parentRemote: boolean;
  readonly traceFlags: number;
  readonly traceState: TraceState | undefined;
  /** Wall-clock nanoseconds since the epoch; never before the start. */
  readonly startUnixNano: bigint;
  readonly endUnixNano: bigint;
  readonly status: SpanStatus;
  readonly attributes: Attributes;
  readonly links: Link[] = NO_LINKS;
  readonly events: TimedEvent[];
  readonly ended = true;
  readonly resource: Resource;
  readonly instrumentationScope: InstrumentationScope;
  readonly droppedAttributesCount: number;
  readonly droppedEventsCount: number;
  readonly droppedLinksCount = 0;
  #context: SpanContext | undefined;
  #parent: SpanContext | undefined;

  constructor(s: RawSpanInput) {
    this.name = s.name;
    this.kind = s.kind;
    this.ids = s.ids;
    this.hasParent = s.hasParent;
    this.parentRemote = s.parentRemote;
    this.traceFlags = s.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE;
    this.traceState = s.traceState;
    this.startUnixNano = s.startUnixNano;
    this.endUnixNano = s.endUnixNano >= s.startUnixNano ? s.endUnixNano : s.startUnixNano;
    this.status = s.status;
    this.attributes = s.attributes;
    this.events = s.events.length ? s.events : NO_EVENTS;
    this.resource = s.resource;
    this.instrumentationScope = instrumentationScope(s.scope);
    this.droppedAttributesCount = s.droppedAttributes;
    this.droppedEventsCount = s.droppedEvents;
  }

  spanContext(): SpanContext {
    this.#context ??= { traceId: hexOf(this.ids, 0, 16), spanId: hexOf(this.ids, 16, 24), traceFlags: this.traceFlags, traceState: this.traceState };
    return this.#context;
  }

  get parentSpanContext(): SpanContext | undefined {
    if (!this.hasParent) return undefined;
    this.#parent ??= { traceId: this.spanContext().traceId, spanId: hexOf(this.ids, 24, 32), traceFlags: this.traceFlags, isRemote: this.parentRemote };
    return this.#parent;
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
}

function hexOf(ids: string, from: number, to: number): string {
  return Buffer.from(ids.slice(from, to), 'latin1').toString('hex');
}

/** The span record of a probe's event. */
export function spanRecord(s: RawSpanInput): SpanRecord {
  return new SpanRecord(s);
}

/** A span record from hex ids (spans made outside the probes' events, and tests). */
export function makeSpan(s: SpanInput): ReadableSpan {
  const ids = Buffer.alloc(32);
  ids.write(s.traceId, 0, 16, 'hex');
  ids.write(s.spanId, 16, 8, 'hex');
  if (s.parentSpanId) ids.write(s.parentSpanId, 24, 8, 'hex');
  return new SpanRecord({
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
