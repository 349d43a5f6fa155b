/**
 * Gives memory back once the agent has gone quiet. Start-up, each attach
 * (binary analysis, BPF object and link set-up, module loading) and each
 * stretch of span traffic allocate and free memory in bursts; afterwards
 * V8 keeps its young generation at its grown size (8 MiB with the
 * launcher's 4 MiB semi-spaces) and pages of freed large objects, and glibc
 * keeps the freed pages inside its arenas, so without a reduction the
 * agent's RSS stays at the peak of its last burst.
 *
 * After `quietMs` without activity it runs one memory-reducing full GC
 * (V8's "last resort" collection, the one behind a low-memory notification:
 * it also shrinks the young generation and releases empty pages; tens of ms
 * of CPU, and the next waits until they stay under 1% of the time since)
 * when `globalThis.gc` is exposed
 * (the launcher runs Node with --expose-gc), then malloc_trim. No timer runs
 * while the agent stays idle: the next activity arms it again.
 */
import { mallocTrim, type MallocStats } from '../native/index.ts';

/** Quiet time after the last activity before reducing, in ms. */
export const REDUCE_QUIET_MS = 5000;
/** Wait between the GC and the trim, in ms. */
const TRIM_AFTER_GC_MS = 500;
/** Most of the agent's time reductions may take (bounds their CPU when traffic comes in bursts just over the quiet time apart). */
export const REDUCE_MAX_TIME_SHARE = 0.01;

type GcFunction = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async'; flavor?: 'regular' | 'last-resort' }) => void;

export interface MemoryTrimOptions {
  /** The trim (default: malloc_trim through the addon). */
  trim?: () => MallocStats;
  /** The GC to run before it (default: `globalThis.gc` when exposed, else none). */
  gc?: GcFunction | undefined;
  /** Default {@link REDUCE_QUIET_MS}. */
  quietMs?: number;
  /** Called before the GC: drop what only bursts of work use (e.g. the instruction decoder), loaded again when needed. */
  release?: Array<() => void>;
  /** Default {@link REDUCE_MAX_TIME_SHARE}. */
  maxTimeShare?: number;
}

export class MemoryTrim {
  private timer: NodeJS.Timeout | undefined;
  private activityCount = 0;
  private armedAt = 0;
  private nextAllowedAt = -Infinity;
  private readonly trim: () => MallocStats;
  private readonly gc: GcFunction | undefined;
  private readonly quietMs: number;
  private readonly maxTimeShare: number;
  private readonly release: Array<() => void>;
  /** Reductions done so far, and what the last trim left (for tests and logs). */
  reductions = 0;
  last: MallocStats | undefined;

  constructor(opts: MemoryTrimOptions = {}) {
    this.trim = opts.trim ?? mallocTrim;
    this.gc = 'gc' in opts ? opts.gc : (globalThis as { gc?: GcFunction }).gc;
    this.quietMs = opts.quietMs ?? REDUCE_QUIET_MS;
    this.maxTimeShare = opts.maxTimeShare ?? REDUCE_MAX_TIME_SHARE;
    this.release = opts.release ?? [];
  }

  /**
   * Something allocated (an attach, a span): reduce once it has been quiet.
   * Cheap enough for every span (a counter and, when no timer is armed, one
   * timer). Never throws.
   */
  activity(): void {
    this.activityCount++;
    if (!this.timer) this.arm(this.quietMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(ms: number): void {
    this.armedAt = this.activityCount;
    this.timer = setTimeout(() => this.fire(), ms);
    this.timer.unref();
  }

  private fire(): void {
    this.timer = undefined;
    // activity since arming: not quiet yet (while traffic flows this wakes once per quietMs)
    if (this.activityCount !== this.armedAt) return this.arm(this.quietMs);
    const start = performance.now();
    if (this.nextAllowedAt > start) return this.arm(this.nextAllowedAt - start);
    try {
      for (const r of this.release) r();
      this.gc?.({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    } catch {
      // an optimisation only: without it memory stays resident, nothing else changes
    }
    const end = performance.now();
    this.nextAllowedAt = end + (end - start) / this.maxTimeShare;
    // V8 frees the backing stores of dead ArrayBuffers (malloc'd) after the
    // GC, on a background task: trim once that is done
    if (!this.gc) return this.trimNow();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.trimNow();
      // activity meanwhile found the timer taken: arm it for that
      if (this.activityCount !== this.armedAt) this.arm(this.quietMs);
    }, TRIM_AFTER_GC_MS);
    this.timer.unref();
  }

  private trimNow(): void {
    try {
      this.last = this.trim();
      this.reductions++;
    } catch {
      // as above
    }
  }
}
