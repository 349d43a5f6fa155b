/**
 * go.opentelemetry.io/otel: the spans a program makes itself through the
 * OpenTelemetry Go API's global tracer while no SDK is installed (the API's
 * no-op spans), exported as if an SDK had recorded them: name, status
 * (SetStatus), events (AddEvent names), kind INTERNAL. Each is the child of
 * the span active on its goroutine when it starts (a traced request, or
 * another API span), and spans the probes make on that goroutine while it
 * runs are its children (the links are made in BPF). With an SDK installed,
 * the global tracer delegates to it and nothing is bridged: the SDK's spans
 * are its own.
 */
import { SpanKind, SpanStatusCode, type Attributes, type SpanStatus } from '@opentelemetry/api';
import {
  BpfMaps, BpfPrograms, EventType, OtelFlags, OtelLimits, OtelStatusCode, OTEL_SPAN_EVENT_SIZE,
  decodeOtelSpanEvent, encodeOtelConfig,
} from '../../../../generated/layouts.ts';
import { emitProbeSpan, type EventContext, type ProbeDescriptor } from '../../../types.ts';
import { goString } from '../../../../spans/go-values.ts';

const OTEL = 'go.opentelemetry.io/otel';
const GLOBAL = `${OTEL}/internal/global`;
const NO_SPANS = 'this program makes no spans through the OpenTelemetry API';

export const otelApiProbe: ProbeDescriptor = {
  id: 'go.opentelemetry.io/otel',
  module: OTEL,
  goPackage: GLOBAL,
  description: 'spans made through the OpenTelemetry Go API with no SDK installed (INTERNAL spans)',
  functions: [
    {
      symbol: `${GLOBAL}.(*tracer).newSpan`,
      entryProgram: BpfPrograms.gt_otel_start,
      returnProgram: BpfPrograms.gt_otel_start_return,
      absentMeans: `${NO_SPANS} through the global tracer, or its otel version predates v1.35.0 (where the no-op span is made in tracer.Start itself): such versions are not bridged`,
    },
    { symbol: `${GLOBAL}.(*nonRecordingSpan).End`, entryProgram: BpfPrograms.gt_otel_end, absentMeans: `${NO_SPANS} (or never ends one)` },
    { symbol: `${GLOBAL}.(*nonRecordingSpan).SetStatus`, entryProgram: BpfPrograms.gt_otel_set_status, optional: 'the status a program sets on its spans' },
    { symbol: `${GLOBAL}.(*nonRecordingSpan).AddEvent`, entryProgram: BpfPrograms.gt_otel_add_event, optional: 'the events a program adds to its spans' },
  ],
  // everything is read from registers: no struct field
  fields: {},
  configMap: BpfMaps.gt_otel_config,
  stateMaps: [BpfMaps.gt_otel_starting, BpfMaps.gt_otel_spans],
  encodeConfig() {
    return encodeOtelConfig({ flags: OtelFlags.GT_OTEL_ENABLED, reserved: 0 });
  },
  eventType: EventType.GT_EVENT_OTEL_SPAN,
  eventSize: OTEL_SPAN_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    const ev = decodeOtelSpanEvent(buf, off);
    const resource = ctx.resourceOf(ev.hdr.tgid);
    if (!resource) {
      ctx.problem('otel span event from an unknown process');
      return;
    }
    if (ev.name_len < 0) {
      ctx.problem('otel span event without a readable name');
      return;
    }
    const attributes: Attributes = {};
    if (ev.name_len > ev.name.length) attributes['gotrail.otel.span.name.truncated'] = true;
    let status: SpanStatus = { code: SpanStatusCode.UNSET };
    if (ev.status_code === OtelStatusCode.GT_OTEL_STATUS_OK) status = { code: SpanStatusCode.OK };
    else if (ev.status_code === OtelStatusCode.GT_OTEL_STATUS_ERROR) {
      const message = ev.description_len > 0 ? goString(ev.description, ev.description_len) : '';
      status = message ? { code: SpanStatusCode.ERROR, message } : { code: SpanStatusCode.ERROR };
    }
    const kept = Math.min(ev.events, OtelLimits.GT_OTEL_EVENTS_MAX);
    const events = [ev.event0, ev.event1, ev.event2, ev.event3].slice(0, kept).map((e) => ({ name: e.name_len >= 0 ? goString(e.name, e.name_len) : '', time_ns: e.time_ns }));
    emitProbeSpan(ctx, {
      name: goString(ev.name, ev.name_len),
      kind: SpanKind.INTERNAL,
      span: ev.span,
      start_ns: ev.start_ns,
      end_ns: ev.end_ns,
      attributes,
      error: status.code === SpanStatusCode.ERROR,
      status,
      events,
      droppedEvents: ev.events - kept,
      resource,
      scope: OTEL,
    });
  },
};
