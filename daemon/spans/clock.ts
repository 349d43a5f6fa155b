/**
 * Probes stamp events with bpf_ktime_get_ns (CLOCK_MONOTONIC); spans need wall
 * time. process.hrtime reads the same monotonic clock, so one offset, sampled
 * at start and refreshed now and then (NTP slews the wall clock), converts.
 */
import type { HrTime } from '@opentelemetry/api';

export class MonotonicClock {
  private offsetNs = 0n;
  // the offset as the two 32-bit halves of its 64-bit two's complement, for copyUnixNano
  private offsetLo = 0;
  private offsetHi = 0;
  private sampledAt = 0;
  private calls = 0;
  private sampled = false;

  constructor() {
    this.resample();
  }

  /**
   * Re-measures wall − monotonic; cheap, called at most once a second. A
   * measurement is only good to the millisecond (Date.now()): the offset
   * moves only when the wall clock moved by more than {@link OFFSET_STEP_NS}
   * (an NTP step, or a slew adding up), so that re-measuring between the
   * stamps of a parent and its child never reorders them.
   */
  resample(): void {
    const before = process.hrtime.bigint();
    const wallMs = Date.now();
    const after = process.hrtime.bigint();
    const mono = (before + after) / 2n;
    const offset = BigInt(wallMs) * 1_000_000n - mono;
    const moved = offset > this.offsetNs ? offset - this.offsetNs : this.offsetNs - offset;
    if (!this.sampled || moved > OFFSET_STEP_NS) {
      this.offsetNs = offset;
      const u = BigInt.asUintN(64, offset);
      this.offsetLo = Number(u & 0xffffffffn);
      this.offsetHi = Number(u >> 32n);
    }
    this.sampled = true;
    this.sampledAt = wallMs;
  }

  /** Wall-clock nanoseconds since the epoch for a CLOCK_MONOTONIC stamp. */
  toUnixNano(monoNs: bigint): bigint {
    // the wall clock looked at once per 256 stamps, not for every one
    if ((++this.calls & 0xff) === 0 && Date.now() - this.sampledAt > 1000) this.resample();
    return monoNs + this.offsetNs;
  }

  /**
   * Writes the wall-clock stamp (u64 little-endian nanoseconds since the
   * epoch) of the CLOCK_MONOTONIC stamp at `from` (u64 little-endian) to
   * `to`: {@link toUnixNano} without a BigInt, in 32-bit halves (the hot
   * path makes two per span, and BigInts are heap objects).
   */
  copyUnixNano(from: Buffer, fromAt: number, to: Buffer, toAt: number): void {
    if ((++this.calls & 0xff) === 0 && Date.now() - this.sampledAt > 1000) this.resample();
    const lo = u32(from, fromAt) + this.offsetLo;
    const carry = lo > 0xffffffff ? 1 : 0;
    putU32(to, toAt, lo - carry * 0x100000000);
    putU32(to, toAt + 4, (u32(from, fromAt + 4) + this.offsetHi + carry) % 0x100000000);
  }
}

/** How far the wall clock must move from the offset in use before it is taken (2 ms: twice a measurement's resolution). */
const OFFSET_STEP_NS = 2_000_000n;

export function nanosToHrTime(ns: bigint): HrTime {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

/** The u32 little-endian at `at` of `b` (in range: the caller checked), without Buffer.readUInt32LE's checks. */
export function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** Writes `v` (0 ≤ v < 2^32) as u32 little-endian at `at` of `b`, without Buffer.writeUInt32LE's checks. */
export function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v;
  b[at + 1] = v >>> 8;
  b[at + 2] = v >>> 16;
  b[at + 3] = v >>> 24;
}
