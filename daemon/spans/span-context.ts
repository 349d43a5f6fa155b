/**
 * Span contexts are made in BPF (so a later span on the same goroutine can
 * name its parent without a round trip to user space); this turns one into
 * the fields a span record takes.
 */
import { SpanContextOffsets, SpanFlags, type SpanContext } from '../generated/layouts.ts';

export interface SpanIds {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  parentRemote: boolean;
  sampled: boolean;
}

export function spanContextFrom(c: SpanContext): SpanIds {
  const hasParent = (c.flags & SpanFlags.GT_SPAN_HAS_PARENT) !== 0;
  return {
    traceId: c.trace_id.toString('hex'),
    spanId: c.span_id.toString('hex'),
    parentSpanId: hasParent ? c.parent_span_id.toString('hex') : undefined,
    parentRemote: (c.flags & SpanFlags.GT_SPAN_PARENT_REMOTE) !== 0,
    sampled: (c.flags & SpanFlags.GT_SPAN_SAMPLED) !== 0,
  };
}

/**
 * A struct gt_span_context read in place from an event: its three ids as one
 * latin1 string of 32 characters (trace id, span id, parent span id; see
 * `RawSpanInput.ids`) and its flags (`SpanFlags`).
 */
export interface RawSpanContext {
  ids: string;
  flags: number;
}

/** The struct gt_span_context at `off` of `buf`, without a view per id. */
export function rawSpanContextAt(buf: Buffer, off: number): RawSpanContext {
  return { ids: buf.toString('latin1', off, off + SpanContextOffsets.flags), flags: buf.readUInt32LE(off + SpanContextOffsets.flags) };
}

/** A decoded struct gt_span_context as a {@link RawSpanContext}. */
export function rawSpanContext(c: SpanContext): RawSpanContext {
  return { ids: c.trace_id.toString('latin1') + c.span_id.toString('latin1') + c.parent_span_id.toString('latin1'), flags: c.flags };
}
