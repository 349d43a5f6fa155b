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
import { SpanKind, SpanStatusCode, type Attributes, type AttributeValue, type SpanStatus } from '@opentelemetry/api';
import {
  PairedFunction,
  BpfMaps, BpfPrograms, EventType, OtelAttributeType, OtelFlags, OtelLimits, OtelStatusCode, OTEL_SPAN_EVENT_SIZE,
  decodeOtelSpanEvent, encodeOtelConfig, type OtelAttribute,
} from '../../../../generated/layouts.ts';
import { emitProbeSpan, type EventContext, type EventProbe } from '../../../types.ts';
import { goString } from '../../../../spans/go-values.ts';

const OTEL = 'go.opentelemetry.io/otel';
const GLOBAL = `${OTEL}/internal/global`;
const NO_SPANS = 'this program makes no spans through the OpenTelemetry API';
const ATTRIBUTE = `${OTEL}/attribute`;
const F = {
  kvKey: `${ATTRIBUTE}.KeyValue.Key`,
  kvValue: `${ATTRIBUTE}.KeyValue.Value`,
  vtype: `${ATTRIBUTE}.Value.vtype`,
  numeric: `${ATTRIBUTE}.Value.numeric`,
  stringly: `${ATTRIBUTE}.Value.stringly`,
  slice: `${ATTRIBUTE}.Value.slice`,
} as const;
const NO_ATTRIBUTES = 'the attributes a program sets on its spans are not reported';

/** The value of an attribute the probe kept, undefined for a type it does not keep. */
function attributeValue(a: OtelAttribute): AttributeValue | undefined {
  switch (a.type) {
    case OtelAttributeType.GT_OTEL_ATTRIBUTE_BOOL: return a.numeric !== 0n;
    case OtelAttributeType.GT_OTEL_ATTRIBUTE_INT64: return Number(BigInt.asIntN(64, a.numeric));
    case OtelAttributeType.GT_OTEL_ATTRIBUTE_FLOAT64: {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(a.numeric);
      return b.readDoubleLE(0);
    }
    case OtelAttributeType.GT_OTEL_ATTRIBUTE_STRING: return a.string_len >= 0 ? goString(a.string, a.string_len) : undefined;
    default: return undefined;
  }
}

export const otelApiProbe: EventProbe = {
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
    { symbol: `${GLOBAL}.(*nonRecordingSpan).SetAttributes`, entryProgram: BpfPrograms.gt_otel_set_attributes, optional: NO_ATTRIBUTES },
  ],
  // the span's name, status and events are read from registers; attributes from the KeyValues handed to SetAttributes
  fields: {
    [F.kvKey]: { reads: 'an attribute\'s key', optional: NO_ATTRIBUTES },
    [F.kvValue]: { reads: 'an attribute\'s value', optional: NO_ATTRIBUTES },
    [F.vtype]: { reads: 'an attribute value\'s type', optional: NO_ATTRIBUTES },
    [F.numeric]: { reads: 'a bool, int64 or float64 attribute value', optional: NO_ATTRIBUTES },
    [F.stringly]: { reads: 'a string attribute value', optional: NO_ATTRIBUTES },
    [F.slice]: { reads: 'the size of attribute.KeyValue (slice is Value\'s last field), to step through a []KeyValue', optional: NO_ATTRIBUTES },
  },
  configMap: BpfMaps.gt_otel_config,
  stateMaps: [BpfMaps.gt_otel_starting, BpfMaps.gt_otel_spans],
  inflightMaps: [{ map: BpfMaps.gt_otel_starting, paired: [PairedFunction.GT_PAIRED_OTEL_START] }, { map: BpfMaps.gt_otel_spans, paired: [] }],
  encodeConfig(o, missingOptional) {
    const all = Object.values(F).every((f) => o[f] !== undefined && !missingOptional.includes(f));
    return encodeOtelConfig({
      flags: OtelFlags.GT_OTEL_ENABLED | (all ? OtelFlags.GT_OTEL_ATTRIBUTES : 0),
      // Value's last field is `slice`, an interface (16 bytes)
      kv_size: all ? o[F.kvValue]! + o[F.slice]! + 16 : 0,
      kv_key: o[F.kvKey] ?? 0,
      kv_value: o[F.kvValue] ?? 0,
      value_vtype: o[F.vtype] ?? 0,
      value_numeric: o[F.numeric] ?? 0,
      value_stringly: o[F.stringly] ?? 0,
      reserved: 0,
    });
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
    const keptAttributes = Math.min(ev.attributes, OtelLimits.GT_OTEL_ATTRIBUTES_MAX);
    const slots = [ev.attr0, ev.attr1, ev.attr2, ev.attr3, ev.attr4, ev.attr5, ev.attr6, ev.attr7];
    let droppedAttributes = ev.attributes - keptAttributes;
    for (const a of slots.slice(0, keptAttributes)) {
      const value = attributeValue(a);
      // an unreadable key, or a type not kept (slices, maps)
      if (a.key_len <= 0 || value === undefined) {
        droppedAttributes++;
        continue;
      }
      // a key set again replaces the value, as in the SDK
      attributes[goString(a.key, a.key_len)] = value;
    }
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
      droppedAttributes,
      resource,
      scope: OTEL,
    });
  },
};
