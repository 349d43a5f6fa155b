/**
 * Span contexts are made in BPF (so a later span on the same goroutine can
 * name its parent without a round trip to user space); this turns one into
 * the fields a span record takes.
 */
import { SpanFlags, type SpanContext } from '../generated/layouts.ts';

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
