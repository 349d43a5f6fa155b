/**
 * Finished spans as the exporters take them, built directly from decoded
 * events: going through an SDK tracer per event would cap the agent far below
 * what the serializer can do.
 */
import { SpanKind, SpanStatusCode, TraceFlags, type Attributes, type SpanContext, type SpanStatus, type HrTime, type TraceState } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
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

export function makeSpan(s: SpanInput): ReadableSpan {
  const ctx: SpanContext = { traceId: s.traceId, spanId: s.spanId, traceFlags: s.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE, traceState: s.traceState };
  const parent: SpanContext | undefined = s.parentSpanId
    ? { traceId: s.traceId, spanId: s.parentSpanId, traceFlags: ctx.traceFlags, isRemote: s.parentRemote ?? false }
    : undefined;
  const end = s.endUnixNano >= s.startUnixNano ? s.endUnixNano : s.startUnixNano;
  const duration: HrTime = nanosToHrTime(end - s.startUnixNano);
  return {
    name: s.name,
    kind: s.kind,
    spanContext: () => ctx,
    parentSpanContext: parent,
    startTime: nanosToHrTime(s.startUnixNano),
    endTime: nanosToHrTime(end),
    status: s.status,
    attributes: s.attributes,
    links: [],
    events: (s.events ?? []).map((e) => ({ name: e.name, time: nanosToHrTime(e.timeUnixNano) })),
    duration,
    ended: true,
    resource: s.resource,
    instrumentationScope: { name: `${AGENT_NAME}/${s.scope}`, version: AGENT_VERSION, schemaUrl: SEMCONV_SCHEMA_URL },
    droppedAttributesCount: s.droppedAttributes ?? 0,
    droppedEventsCount: s.droppedEvents ?? 0,
    droppedLinksCount: 0,
  };
}

export { SpanKind, SpanStatusCode };
