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
 * (the launcher runs Node with --expose-gc), then malloc_trim.
 *
 * After `pageOutQuietMs` without activity it also asks the kernel to reclaim
 * the resident pages of the read-only files it maps (madvise MADV_PAGEOUT):
 * the `node` executable's code and data (the compilers, start-up paths,
 * ICU), the addon and libraries. The idle agent keeps about a third of them
 * in use; the rest (30-40 MiB of a ~50 MiB working set after load) would
 * otherwise stay resident until memory pressure. The kernel leaves pages
 * that another process also maps, so this takes nothing from anyone else.
 * The cost comes with the next burst of work: the pages it needs are read
 * from the file again (page faults, I/O on a cold cache), which is why this
 * waits for a longer quiet than the GC. The first page-out, though, follows
 * the first reduction (`firstPageOutQuietMs`): what start-up touched (the
 * compilers, the binary analysis, the BPF object's load) is not what the
 * first spans need, and an agent that has just started would otherwise be
 * read at ~90 MiB for its first half minute.
 *
 * The idle agent still works for the host: each process that starts or
 * exits there is an event it reads, and the /proc scan looks at new
 * processes. That work frees what it allocates, but glibc keeps the pages
 * and V8 frees the buffers it read into (/proc files, command lines) only at
 * its next GC, which an idle heap reaches rarely: on a host where processes
 * come and go (builds, cron, short-lived tools) the idle RSS crept up by
 * 3-6 MiB in the minute after the page-out. So such housekeeping
 * ({@link MemoryTrim.housekeeping}) arms a tidy-up: `tidyAfterMs` later a
 * full GC (~10-20 ms here) and malloc_trim, at most once per `tidyAfterMs`,
 * within the same time share; it leaves the page-out's schedule alone and
 * does nothing while span traffic keeps a reduction pending. What that work
 * read back of the files' pages is paged out again once housekeeping too has
 * been quiet for `pageOutQuietMs` (after the first page-out only).
 *
 * No timer runs while the agent and its host stay idle: the next activity
 * (or housekeeping) arms it again.
 */
import { readFileSync } from 'node:fs';
import { mallocTrim, pageOut, type MallocStats, type PageOutResult } from '../native/index.ts';

/** Quiet time after the last activity before reducing, in ms. */
export const REDUCE_QUIET_MS = 5000;
/** Wait between the GC and the trim, in ms. */
const TRIM_AFTER_GC_MS = 500;
/** Quiet time after the last activity before paging out file pages, in ms. */
export const PAGE_OUT_QUIET_MS = 30_000;
/** Longest a tidy-up follows the idle housekeeping that asked for it, in ms (see the module's note). */
export const TIDY_AFTER_MS = 10_000;
/** Quiet time before the first page-out (after start-up), in ms: with the first reduction. */
export const FIRST_PAGE_OUT_QUIET_MS = REDUCE_QUIET_MS;
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
  /** Pages out what the agent maps from files (default {@link pageOutFileMappings}); null: never. */
  pageOut?: (() => PageOutResult) | null;
  /** Default {@link PAGE_OUT_QUIET_MS}; counted from the last activity, at least the reduction's quiet time. */
  pageOutQuietMs?: number;
  /** Default {@link FIRST_PAGE_OUT_QUIET_MS}: the same for the first page-out (see the module's note). */
  firstPageOutQuietMs?: number;
  /** Told what each page-out did (e.g. to log it). */
  onPageOut?: (r: PageOutResult) => void;
  /** Default {@link TIDY_AFTER_MS}. */
  tidyAfterMs?: number;
}

/** Mappings of files that this process cannot write to: /proc/self/maps lines, as [start, length] pairs. */
export function readOnlyFileMappings(maps = readFileSync('/proc/self/maps', 'latin1')): number[] {
  const ranges: number[] = [];
  for (const line of maps.split('\n')) {
    // 00400000-0074d000 r--p 00000000 08:01 1234 /usr/bin/node
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s+(\/.*)$/.exec(line);
    if (!m || m[3]!.includes('w') || !m[3]!.startsWith('r') || m[4]!.endsWith(' (deleted)')) continue;
    const start = parseInt(m[1]!, 16);
    ranges.push(start, parseInt(m[2]!, 16) - start);
  }
  return ranges;
}

/** Asks the kernel to reclaim this process's resident pages of read-only file mappings (see the module's note). */
export function pageOutFileMappings(): PageOutResult {
  return pageOut(readOnlyFileMappings());
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
  private readonly pageOutFn: (() => PageOutResult) | null;
  private readonly pageOutQuietMs: number;
  private readonly firstPageOutQuietMs: number;
  private pagedOutOnce = false;
  private readonly onPageOut: ((r: PageOutResult) => void) | undefined;
  private readonly tidyAfterMs: number;
  private tidyTimer: NodeJS.Timeout | undefined;
  private housekeepingCount = 0;
  private housekeepingPageOutTimer: NodeJS.Timeout | undefined;
  /** What the armed timer does when it fires. */
  private stage: 'reduce' | 'pageOut' = 'reduce';
  /** Reductions done so far, and what the last trim left (for tests and logs). */
  reductions = 0;
  last: MallocStats | undefined;
  /** Page-outs done so far, and what the last one did. */
  pageOuts = 0;
  lastPageOut: PageOutResult | undefined;
  /** Tidy-ups done so far (see {@link housekeeping}). */
  tidies = 0;

  constructor(opts: MemoryTrimOptions = {}) {
    this.trim = opts.trim ?? mallocTrim;
    this.gc = 'gc' in opts ? opts.gc : (globalThis as { gc?: GcFunction }).gc;
    this.quietMs = opts.quietMs ?? REDUCE_QUIET_MS;
    this.maxTimeShare = opts.maxTimeShare ?? REDUCE_MAX_TIME_SHARE;
    this.release = opts.release ?? [];
    this.pageOutFn = opts.pageOut === undefined ? pageOutFileMappings : opts.pageOut;
    this.pageOutQuietMs = opts.pageOutQuietMs ?? PAGE_OUT_QUIET_MS;
    this.firstPageOutQuietMs = opts.firstPageOutQuietMs ?? FIRST_PAGE_OUT_QUIET_MS;
    this.onPageOut = opts.onPageOut;
    this.tidyAfterMs = opts.tidyAfterMs ?? TIDY_AFTER_MS;
  }

  /**
   * Something allocated (an attach, a span): reduce once it has been quiet.
   * Cheap enough for every span (a counter and, when no timer is armed, one
   * timer). Never throws.
   */
  activity(): void {
    this.activityCount++;
    if (this.timer && this.stage === 'reduce') return;
    // a pending page-out is put off: the next reduction comes first
    clearTimeout(this.timer);
    this.arm(this.quietMs);
  }

  /**
   * Idle work for the host (a process started or exited, the scan looked at
   * new processes): tidy up within `tidyAfterMs`. Cheap enough for every
   * exec event of a busy host (a check and, at most once per `tidyAfterMs`,
   * one timer). Never throws.
   */
  housekeeping(): void {
    this.housekeepingCount++;
    if (this.tidyTimer) return;
    this.tidyTimer = setTimeout(() => this.tidy(), this.tidyAfterMs);
    this.tidyTimer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.tidyTimer);
    this.tidyTimer = undefined;
    clearTimeout(this.housekeepingPageOutTimer);
    this.housekeepingPageOutTimer = undefined;
  }

  /**
   * After a tidy-up: the work for the host read back file pages (idle RSS
   * rose here in steps of 5-7 MiB of node's code while other programs ran
   * on the host), which would stay resident while the agent stays idle, as
   * no activity comes to page them out. Once housekeeping too has been
   * quiet for pageOutQuietMs, page out again; activity's own schedule, when
   * one is pending, comes first.
   */
  private pageOutAfterHousekeeping(): void {
    if (!this.pageOutFn || !this.pagedOutOnce || this.timer || this.housekeepingPageOutTimer) return;
    const armedAt = this.housekeepingCount;
    this.housekeepingPageOutTimer = setTimeout(() => {
      this.housekeepingPageOutTimer = undefined;
      if (this.housekeepingCount !== armedAt) return this.pageOutAfterHousekeeping();
      if (!this.timer) this.pageOutNow();
    }, this.pageOutQuietMs);
    this.housekeepingPageOutTimer.unref();
  }

  private tidy(): void {
    // span traffic keeps a reduction pending: it does all this once quiet
    if (this.timer && this.stage === 'reduce') {
      this.tidyTimer = undefined;
      return;
    }
    const start = performance.now();
    if (this.nextAllowedAt > start) {
      this.tidyTimer = setTimeout(() => this.tidy(), this.nextAllowedAt - start);
      this.tidyTimer.unref();
      return;
    }
    try {
      // a regular full GC (not the last-resort one: that shrinks and flushes
      // more, which the next exec event would undo): measured under 20
      // processes a second, idle RSS 63.3 MiB against 66.8 with a
      // young-generation GC alone (malloc 9.5 against 10.0, V8's old space
      // 7.7 against 8.3, fewer code pages read back)
      this.gc?.({ type: 'major', execution: 'sync' });
    } catch {
      // as in fire()
    }
    const end = performance.now();
    this.nextAllowedAt = end + (end - start) / this.maxTimeShare;
    // the timer stays set until the trim: housekeeping meanwhile waits for the next round
    this.tidyTimer = setTimeout(() => {
      try {
        this.last = this.trim();
        this.tidies++;
      } catch {
        // as in fire()
      }
      this.tidyTimer = undefined;
      this.pageOutAfterHousekeeping();
    }, this.gc ? TRIM_AFTER_GC_MS : 0);
    this.tidyTimer.unref();
  }

  private arm(ms: number, stage: 'reduce' | 'pageOut' = 'reduce'): void {
    this.armedAt = this.activityCount;
    this.stage = stage;
    this.timer = setTimeout(() => this.fire(), ms);
    this.timer.unref();
  }

  private fire(): void {
    this.timer = undefined;
    // activity since arming: not quiet yet (while traffic flows this wakes once per quietMs)
    if (this.activityCount !== this.armedAt) return this.arm(this.quietMs);
    if (this.stage === 'pageOut') return this.pageOutNow();
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
    // activity meanwhile found the timer taken: arm it for that; else page
    // out once the quiet has lasted pageOutQuietMs since the last activity
    if (this.activityCount !== this.armedAt) this.arm(this.quietMs);
    else if (this.pageOutFn) {
      const quiet = this.pagedOutOnce ? this.pageOutQuietMs : this.firstPageOutQuietMs;
      this.arm(Math.max(0, quiet - this.quietMs - (this.gc ? TRIM_AFTER_GC_MS : 0)), 'pageOut');
    }
  }

  private pageOutNow(): void {
    this.pagedOutOnce = true;
    try {
      this.lastPageOut = this.pageOutFn!();
      this.pageOuts++;
      this.onPageOut?.(this.lastPageOut);
    } catch {
      // as above
    }
  }
}
