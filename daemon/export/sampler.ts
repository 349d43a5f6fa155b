/**
 * The trace sampler of OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (or the
 * configuration file's `sampling`), as the probes apply it in BPF
 * (probes/include/sampling.h).
 *
 * The decision is made where a probe starts a span without a local parent —
 * a new root, or a span whose parent came in a `traceparent` — and every
 * other span follows it: its children on the same goroutine, on goroutines
 * it started, and server spans on this node linked to it. An unsampled
 * request sends no event from any of its spans (counted in
 * `gotrail_spans_not_sampled_total`), yet its context is kept, so its
 * children and the servers it calls on this node know it is not sampled.
 *
 * Supported: `always_on`, `always_off`, `traceidratio` (these ignore an
 * incoming parent's sampled flag, as the specification requires),
 * `parentbased_always_on` (the default), `parentbased_always_off` and
 * `parentbased_traceidratio` (an incoming parent's sampled flag decides; the
 * root sampler decides only traces that start here).
 *
 * TraceIdRatioBased follows the OpenTelemetry specification's rule (W3C
 * Trace Context Level 2 randomness): the rejection threshold
 * T = 2^56 − round(ratio × 2^56), and a trace is sampled when its randomness
 * R — the 7 rightmost bytes of the trace id, big-endian — is ≥ T. The
 * threshold is kept at full precision (the specification's examples round
 * it to 4 hex digits for `th`; the decisions differ only for R within that
 * rounding of T).
 *
 * Nothing is left to decide in user space: every span event the probes send
 * is of a sampled trace. Events already in the ring buffer when the sampler
 * changes (a configuration reload) were decided by the previous sampler.
 */
import { SamplerRoot, SamplerFlags, encodeSamplerConfig, type SamplerConfig as BpfSamplerConfig } from '../generated/layouts.ts';
import type { SamplingConfig } from '../config/resolve.ts';

const TWO_56 = 1n << 56n;

/** The rejection threshold of TraceIdRatioBased for `ratio` (0–1): 2^56 samples nothing, 0 everything. */
export function ratioThreshold(ratio: number): bigint {
  if (!(ratio > 0)) return TWO_56;
  if (ratio >= 1) return 0n;
  // ratio × 2^56, rounded: exact in a double for the top 53 bits
  return TWO_56 - BigInt(Math.round(ratio * 2 ** 56));
}

/** The gt_sampler map's entry for `c`. */
export function bpfSamplerConfig(c: SamplingConfig): BpfSamplerConfig {
  const parentBased = c.sampler.startsWith('parentbased_');
  const root = parentBased ? c.sampler.slice('parentbased_'.length) : c.sampler;
  return {
    root: root === 'always_off' ? SamplerRoot.GT_SAMPLER_ALWAYS_OFF
      : root === 'traceidratio' ? SamplerRoot.GT_SAMPLER_TRACE_ID_RATIO
      : SamplerRoot.GT_SAMPLER_ALWAYS_ON,
    flags: parentBased ? 0 : SamplerFlags.GT_SAMPLER_IGNORE_PARENT,
    threshold: root === 'traceidratio' ? ratioThreshold(c.ratio) : 0n,
  };
}

/** The map value of bpfSamplerConfig(c). */
export function encodeBpfSampler(c: SamplingConfig): Buffer {
  return encodeSamplerConfig(bpfSamplerConfig(c));
}

/** The sampler's description, as the specification's GetDescription gives it (logs, /status). */
export function describeSampler(c: SamplingConfig): string {
  const one = (name: string): string => name === 'always_on' ? 'AlwaysOnSampler' : name === 'always_off' ? 'AlwaysOffSampler' : `TraceIdRatioBased{${c.ratio}}`;
  return c.sampler.startsWith('parentbased_') ? `ParentBased{root=${one(c.sampler.slice('parentbased_'.length))}}` : one(c.sampler);
}
