/**
 * The trace sampler of OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (or the
 * configuration file's `sampling`), applied to each finished span in the
 * agent, through the OpenTelemetry SDK's own samplers.
 *
 * Supported: `always_on`, `always_off`, `traceidratio` (the SDK's
 * TraceIdRatioBased sampler, which decides by the trace id alone: every span
 * of one trace gets the same decision, in every process on the node) and `parentbased_always_on` (the
 * default: every span, and a request whose incoming parent is not sampled
 * makes no span, as the probes already decide). The other parent-based
 * samplers need the decision made when the root span starts and inherited
 * by its children, which ends before it; gotrail refuses them rather than
 * breaking traces apart.
 *
 * The decision is made after the probes have sent the span's events: a
 * sampled-out request costs the traced program as much as a kept one, and
 * only saves the export.
 */
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { AlwaysOffSampler, SamplingDecision, TraceIdRatioBasedSampler, type ReadableSpan, type Sampler } from '@opentelemetry/sdk-trace-base';
import type { SamplingConfig } from '../config/resolve.ts';

/** Whether a finished span is kept; undefined when every span is (no work per span). */
export type SpanFilter = ((span: ReadableSpan) => boolean) | undefined;

export function createSpanFilter(c: SamplingConfig): SpanFilter {
  let sampler: Sampler;
  switch (c.sampler) {
    case 'always_on':
    case 'parentbased_always_on':
      return undefined;
    case 'always_off':
      sampler = new AlwaysOffSampler();
      break;
    case 'traceidratio':
      if (c.ratio >= 1) return undefined;
      sampler = new TraceIdRatioBasedSampler(c.ratio);
      break;
  }
  return (span) => {
    try {
      return sampler.shouldSample(ROOT_CONTEXT, span.spanContext().traceId, span.name, span.kind, {}, []).decision === SamplingDecision.RECORD_AND_SAMPLED;
    } catch {
      return true; // never on the hot path: keep the span
    }
  };
}
