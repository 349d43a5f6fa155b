/**
 * Probes stamp events with bpf_ktime_get_ns (CLOCK_MONOTONIC); spans need wall
 * time. process.hrtime reads the same monotonic clock, so one offset, sampled
 * at start and refreshed now and then (NTP slews the wall clock), converts.
 */
import type { HrTime } from '@opentelemetry/api';

export class MonotonicClock {
  private offsetNs = 0n;
  private sampledAt = 0;
  private calls = 0;

  constructor() {
    this.resample();
  }

  /** Re-measures wall − monotonic; cheap, called at most once a second. */
  resample(): void {
    const before = process.hrtime.bigint();
    const wallMs = Date.now();
    const after = process.hrtime.bigint();
    const mono = (before + after) / 2n;
    this.offsetNs = BigInt(wallMs) * 1_000_000n - mono;
    this.sampledAt = wallMs;
  }

  /** Wall-clock nanoseconds since the epoch for a CLOCK_MONOTONIC stamp. */
  toUnixNano(monoNs: bigint): bigint {
    // the wall clock looked at once per 256 stamps, not for every one
    if ((++this.calls & 0xff) === 0 && Date.now() - this.sampledAt > 1000) this.resample();
    return monoNs + this.offsetNs;
  }
}

export function nanosToHrTime(ns: bigint): HrTime {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}
