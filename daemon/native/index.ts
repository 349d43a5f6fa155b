// Typed entry point of the native addon (daemon/native/src), a thin layer
// over libbpf: open/load objects, maps, uprobe and tracepoint links, program
// statistics and ring-buffer batches. Policy (what to attach where, retries,
// metrics) lives in TypeScript; everything here is mechanism.
//
// Every method runs synchronously on the calling JS thread unless noted;
// each ring buffer has a poll thread of its own ("gotrail-rb-<n>") that
// only takes records out of the kernel and never runs JS.
// Every error the addon throws is a NativeError: its message reads
// "<operation>: <strerror> (errno N)", optionally followed by ": <detail>"
// and, for libbpf failures, by libbpf's log on the following lines.
//
// For probe authors:
// - SEC("uprobe.multi") int prog(struct pt_regs *ctx): attached with one
//   uprobe_multi link per attachUprobes() call where the kernel has them
//   (Linux >= 6.6), else with one perf-event uprobe per site. Either way
//   bpf_get_attach_cookie(ctx) returns that site's cookie. The choice is made
//   per object at open time (OpenOptions.uprobeMulti, default: detected).
// - SEC("uprobe") programs always attach as single perf-event uprobes
//   (slow to detach: ~110 ms each); prefer uprobe.multi.
// - Tracepoints: SEC("raw_tp/<name>") and SEC("tp_btf/<name>") need no
//   tracefs; SEC("tracepoint/<cat>/<name>") needs tracefs mounted.
// - Ring buffer records: submit with BPF_RB_NO_WAKEUP; the poll thread
//   drains on a timer (a ring buffer started with `wakeup: true` also
//   wakes for records submitted with a wakeup). A batch holds frames [u32 LE length][payload][zero
//   padding to the next multiple of 8]; frames start at 8-byte-aligned
//   offsets of the batch, so a payload starts at offset % 8 == 4. The next
//   frame is at align8(frameStart + 4 + length).

import { createRequire } from 'node:module';

/** Options of {@link BpfObject}'s constructor; all are applied before load(). */
export interface OpenOptions {
  /** Load only these programs (by function name); the others keep their
   * section but are not loaded. Default: every program. Unknown names throw
   * ENOENT. */
  autoload?: string[];
  /** New max_entries per map name, applied before load. Default: as compiled. */
  mapMaxEntries?: Record<string, number>;
  /** How programs in SEC("uprobe.multi") sections are loaded and attached,
   * for the whole object: true loads them for uprobe_multi links (one link
   * per attachUprobes call; needs Linux >= 6.6 and throws EOPNOTSUPP at open
   * otherwise), false loads them as plain uprobe programs attached with one
   * perf-event link per site. Default: kernelFeatures().uprobeMulti. */
  uprobeMulti?: boolean;
  /** A loaded object whose maps this one uses instead of creating its own,
   * for every map of the same name (not the internal .rodata/.bss ones):
   * programs loaded separately (e.g. ones a kernel in lockdown refuses)
   * share the probes' state. Give it before mapMaxEntries of shared maps
   * matter: a shared map keeps the loaded object's size. Throws EINVAL when
   * not a BpfObject, EBADF when it is not loaded or closed. */
  shareMapsFrom?: BpfObject;
}

export interface MapInfo {
  /** enum bpf_map_type (e.g. 1 hash, 2 array, 27 ringbuf). */
  type: number;
  keySize: number;
  /** Per element, as declared; per-CPU maps exchange one 8-byte-aligned
   * slot per possible CPU in mapUpdate/mapLookup. */
  valueSize: number;
  maxEntries: number;
  /** The kernel's map id, once the object is loaded (absent before). */
  id?: number;
}

export interface ProgramStats {
  name: string;
  /** Both counters only advance while run-time stats are enabled
   * ({@link enableStats} or the kernel.bpf_stats_enabled sysctl). */
  runCount: bigint;
  runTimeNs: bigint;
}

export interface UprobeAttachOptions {
  /** Only fire in this process. Default -1: every process running the binary. */
  pid?: number;
  /** Attach one perf-event uprobe per site even for SEC("uprobe.multi")
   * programs. Only valid on objects opened with `uprobeMulti: false`
   * (throws EINVAL otherwise, since the program was loaded for multi links).
   * Default false. */
  forceSingle?: boolean;
}

export interface RingBufferOptions {
  /** How often the poll thread drains the ring buffer, in ms (0..60000).
   * Probes submit with BPF_RB_NO_WAKEUP, so in timer mode this is the
   * delivery latency. With wakeControl it is a data-age deadline: a poll
   * thread woken from its idle sleep by a record drains one interval later
   * (or as soon as wakeBytes wait), not at once. 0: no timer at all, only with `wakeup: true` (the
   * producers must then always submit with a wakeup). Default 5. */
  intervalMs: number;
  /** Idle sleep: the name of an mmapable BPF array map whose value starts
   * with `struct gt_rb_control` ({u32 consumer_sleeping; u32 wake_bytes; u32 woken}).
   * A poll thread that finds the ring empty twice a tick apart raises
   * consumer_sleeping and sleeps without a timer until a producer submits
   * with BPF_RB_FORCE_WAKEUP (gt_wake_flag does while the flag is up), so an
   * idle agent does not wake up at all; while records flow it drains on
   * its timer as without. A producer forcing a wakeup raises woken, which
   * holds back every other forced wakeup until the poll thread lowers it
   * (leaving its sleep, or after a drain that emptied the ring). Default
   * none. */
  wakeControl?: string;
  /** With wakeControl: producers force a wakeup when this many bytes wait
   * in the ring (0: never), waking a running poll thread before its next
   * tick: one wakeup per crossing (see woken above), not one per record
   * until the poll thread drains. Default a quarter of the ring. */
  wakeBytes?: number;
  /** Batches handed to the JS thread and not yet returned from onBatch
   * (1..2^20). When this many are out, the poll thread stops taking records
   * out of the kernel ring buffer until one returns: records wait in the
   * kernel, and what no longer fits there is counted by the BPF side (a
   * failed bpf_ringbuf_reserve). Memory held by the addon is at most
   * (maxQueuedBatches + 2) * maxBatchBytes. Default 64. */
  maxQueuedBatches: number;
  /** A batch is handed over once it would grow past this many bytes (a
   * single larger record travels alone). 64..2^30, default 1 MiB. */
  maxBatchBytes: number;
  /** Wakeup mode, for low-rate, latency-sensitive ring buffers whose
   * producers submit with wakeups (flags 0 or BPF_RB_FORCE_WAKEUP; e.g.
   * process exec/exit): the poll thread also sleeps in poll(2) on the ring
   * buffer and consumes as soon as the kernel signals a record, besides the
   * timer. BPF_RB_NO_WAKEUP records are still seen on the timer (and
   * whenever a wakeup record arrives). A flood of records makes a
   * wakeup-mode thread consume continuously; leave it off for data ring
   * buffers. Default false (timer only). */
  wakeup: boolean;
  /** Batch reuse: each batch is a view of one of a few long-lived buffers
   * of maxBatchBytes (at most maxQueuedBatches + 2, kept while the ring
   * buffer runs), which the poll thread fills again only after onBatch
   * returned from it: onBatch must keep no part of the batch (no Buffer,
   * no view) past its return, and copies what it keeps. Without it every
   * batch is a new Buffer of its own, which V8 counts as external memory:
   * at ~10 MB/s of batches that alone brought a full garbage collection
   * every few seconds. Default false. */
  reuseBatches?: boolean;
}

/** Cumulative since startRingBuffer() of that map. batches/records/bytes
 * count what was delivered to onBatch (bytes: record payloads, without
 * framing). A record taken out of the kernel is never dropped because JS is
 * slow (the poll thread stops consuming instead, see `stalls`), so the
 * dropped counters only count batches discarded at environment teardown
 * (process or worker exit); records lost because the kernel ring buffer was
 * full are counted by the BPF programs that failed to reserve them. */
export interface RingBufferStats {
  batches: bigint;
  records: bigint;
  bytes: bigint;
  droppedBatches: bigint;
  droppedRecords: bigint;
  /** Times the poll thread stopped consuming because maxQueuedBatches
   * batches were out to JS (backpressure, not loss). */
  stalls: bigint;
  /** Times the poll thread woke from its sleep (timer, kernel wakeup or
   * control signal): what an idle agent should keep at zero. */
  wakeups: bigint;
  /** With wakeControl: wakeups the producers forced (the first record of a
   * busy period, and each crossing of wakeBytes); 0 without. */
  forcedWakeups: bigint;
  /** Batches out to JS right now (a gauge; summed over maps when no map is
   * named). */
  queuedBatches: number;
}

export type LinkKind = 'uprobe_multi' | 'uprobe' | 'tracepoint' | 'socket';

export interface LinkSetInfo {
  handle: number;
  program: string;
  /** Binary path for uprobes, "category:name" for tracepoints, cgroup path or map name for socket programs. */
  target: string;
  kind: LinkKind;
  sites: number;
}

/**
 * Receives one batch: records concatenated, each framed as a little-endian
 * u32 payload length followed by the payload, then zero padding so that the
 * next frame starts at an 8-byte-aligned offset within the batch. Runs on
 * the JS thread; an exception thrown here surfaces as an uncaught exception.
 * The batch counts against maxQueuedBatches until this returns, so a slow
 * callback slows consumption rather than losing records. `stats` are the
 * map's counters including this batch; they are built (several BigInts per
 * batch) only for a callback that declares a second parameter
 * (`onBatch.length >= 2`), so a hot consumer that takes the batch alone
 * does not pay for them.
 */
export type BatchCallback = (batch: Buffer, stats: RingBufferStats) => void;

export interface BpfObject {
  /** Whether SEC("uprobe.multi") programs were set up for uprobe_multi links. */
  readonly uprobeMulti: boolean;
  readonly loaded: boolean;
  readonly closed: boolean;
  /** bpf_object__load. Errors carry the tail of the verifier log in `log`. */
  load(): void;
  programNames(): string[];
  mapNames(): string[];
  /** Works before load (shows resized max_entries). */
  mapInfo(name: string): MapInfo;
  /** flags: BPF_ANY (0, default), BPF_NOEXIST (1), BPF_EXIST (2). */
  mapUpdate(name: string, key: Uint8Array, value: Uint8Array, flags?: number): void;
  /** null when the key is absent. */
  mapLookup(name: string, key: Uint8Array): Buffer | null;
  /** false when the key was absent. */
  mapDelete(name: string, key: Uint8Array): boolean;
  /** Keys in iteration order, at most `limit` (default: max_entries). */
  mapKeys(name: string, limit?: number): Buffer[];
  /** Number of keys (for array maps: max_entries). */
  mapCount(name: string): number;
  /**
   * Attaches `program` at each file offset of `binaryPath`, site i with
   * cookies[i] (bpf_get_attach_cookie; empty array: all 0). All-or-nothing.
   * One uprobe_multi link when the program is in a SEC("uprobe.multi")
   * section and the object is in uprobe_multi mode; otherwise one perf-event
   * uprobe per site. Returns a link-set handle for detach().
   */
  attachUprobes(program: string, binaryPath: string, fileOffsets: number[], cookies: bigint[], opts?: UprobeAttachOptions): number;
  attachTracepoint(program: string, category: string, name: string): number;
  /**
   * Attaches a SEC("sockops") program to the cgroup v2 directory `target`,
   * or a SEC("sk_msg") program to the sockmap/sockhash named `target`, as a
   * BPF link (detached when the agent exits, however it exits). Returns a
   * link-set handle for detach(). Throws with the kernel's errno (EINVAL for
   * a program of another type; sockmap links need kernel 6.10).
   */
  attachSocket(program: string, target: string): number;
  /** Destroys a link set. Perf-event uprobes take ~110 ms each to detach;
   * a uprobe_multi link is quick. Unknown handles throw ENOENT. */
  detach(handle: number): void;
  /**
   * Detaches link sets without blocking the event loop: they leave
   * `linkSets()` at once and the kernel releases them on a pool thread (a
   * uprobe_multi link takes tens of milliseconds to go). Unknown handles
   * throw before anything is detached. Resolves once the kernel has
   * released every link (no handler of theirs can run any more).
   *
   * Each kernel link waits for its own RCU Tasks Trace and SRCU grace
   * period (uprobe_unregister_sync(), once per link whatever its number of
   * sites, ~50 ms here); links closed at the same time share those waits, so
   * every link gets a thread of its own. `opts.threads` (1–1024, default
   * 1024) caps the closing threads: `threads: 1` closes one link after
   * another, to measure what one costs. `opts.nice` (-20–19, default: the
   * pool thread's) is the closing threads' nice value: removing the
   * breakpoints passes a kernel lock from closer to closer, and beside a
   * busy load each hand-over otherwise waits for a CPU. Lowering it needs
   * CAP_SYS_NICE (or RLIMIT_NICE); where refused the closers keep the
   * default and `reniced` is false. Throws EINVAL for an option out of
   * range.
   */
  detachAsync(handles: number[], opts?: { threads?: number; nice?: number }): Promise<{ reniced: boolean }>;
  linkSets(): LinkSetInfo[];
  /** Loaded programs only. */
  programStats(): ProgramStats[];
  /**
   * The fd of loaded program `name`, owned by this object (valid until
   * close()): the value a BPF_MAP_TYPE_PROG_ARRAY takes (write it as a u32
   * with mapUpdate, into any object's map). Throws ENOENT for an unknown
   * program, EBADF for one not loaded.
   */
  programFd(name: string): number;
  /**
   * Starts consuming a BPF_MAP_TYPE_RINGBUF map on a poll thread of its own
   * (named "gotrail-rb-<n>"); several maps of one object may run at once.
   * onBatch runs on this JS thread, one call per batch, in ring order. While
   * it runs it keeps the event loop alive. Throws EBUSY when that map already
   * runs, EINVAL when it is not a ring buffer or an option is out of range,
   * ENOENT for an unknown map, EBADF before load() or after close().
   */
  startRingBuffer(mapName: string, onBatch: BatchCallback, opts?: Partial<RingBufferOptions>): void;
  /**
   * Pauses (true) or resumes (false) taking records out of that map's ring
   * buffer. Effective from the next record the poll thread looks at; batches
   * already taken are still delivered. While paused, records wait in the
   * kernel and the BPF side counts what does not fit; resuming consumes at
   * once. stopRingBuffer() drains even a paused ring buffer. Returns whether
   * a ring buffer runs on that map (false: nothing to pause). Does not block.
   */
  pauseRingBuffer(mapName: string, paused: boolean): boolean;
  /**
   * Makes that map's poll thread take what its ring buffer holds and hand
   * it over now, instead of at the end of its interval (a flush); nothing
   * while it is paused or JS holds all its batches. Returns whether a ring
   * buffer runs on that map. Does not block.
   */
  consumeRingBufferNow(mapName: string): boolean;
  /** One map's counters (live, or final after it stopped; zeros when it
   * never ran, ENOENT for an unknown map), or without a name the sum over
   * every ring buffer this object ran. */
  ringBufferStats(mapName?: string): RingBufferStats;
  /**
   * Stops one map's ring buffer, or every one when no name is given: the
   * poll thread takes what the ring buffer holds at that moment (at most its
   * size, paused or not), hands it over, and exits. Resolves once every
   * batch was delivered and the thread was joined; this waits for onBatch
   * to work through a full queue, never for producers that keep writing.
   * Resolves at once when nothing (of that name) runs. Does not block.
   */
  stopRingBuffer(mapName?: string): Promise<void>;
  /** Destroys every link, asks every ring buffer to stop and frees the object.
   * Idempotent; other methods throw EBADF afterwards. Garbage collection
   * does the same. */
  close(): void;
}

export interface BpfObjectConstructor {
  /** bpf_object__open_file, then the {@link OpenOptions}. */
  new (path: string, opts?: OpenOptions): BpfObject;
}

export interface KernelFeatures {
  /** BPF_TRACE_UPROBE_MULTI links work (probed, not inferred from the version). */
  uprobeMulti: boolean;
  /** Program run counters are being accumulated. */
  bpfStatsEnabled: boolean;
  /** From /sys/kernel/security/lockdown; where securityfs is not mounted,
   * inferred from the helpers the verifier accepts (lockdown removes
   * bpf_probe_write_user at integrity, bpf_probe_read_kernel too at
   * confidentiality); 'unknown' when the file is unreadable otherwise. */
  lockdown: 'none' | 'integrity' | 'confidentiality' | 'unknown';
  /** The verifier accepts bpf_probe_write_user (refused under lockdown). */
  probeWriteUser: boolean;
}

/** Shape of every error the addon throws. */
export interface NativeError extends Error {
  errno: number;
  /** errno name, e.g. 'ENOENT'. */
  code: string;
  /** What was attempted, e.g. "attach uprobe_multi prog p to /usr/bin/x (3 sites)". */
  operation: string;
  /** libbpf's output for the failed call (verifier log tail on load). */
  log?: string;
}

export function isNativeError(e: unknown): e is NativeError {
  return e instanceof Error && typeof (e as Partial<NativeError>).errno === 'number' &&
    typeof (e as Partial<NativeError>).operation === 'string';
}

/** BPF map update flags. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

interface Addon {
  BpfObject: BpfObjectConstructor;
  kernelFeatures(): KernelFeatures;
  enableStats(): boolean;
  mallocTrim(): MallocStats;
  pageOut(ranges: number[]): PageOutResult;
}

// from the install root: this module may run bundled from build/agent/ (deploy/bundle.ts)
const addonPath = new URL('../../daemon/native/build/Release/gotrail_native.node', import.meta.url);

function loadAddon(): Addon {
  const require = createRequire(import.meta.url);
  try {
    return require(addonPath.pathname) as Addon;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_DLOPEN_FAILED') {
      throw new Error(
        `gotrail native addon is not built or cannot be loaded (${addonPath.pathname}): ` +
          `run bash deploy/setup.sh (${(err as Error).message})`,
        { cause: err },
      );
    }
    throw err;
  }
}

const addon = loadAddon();

/** One libbpf object; see the BpfObject interface for its methods. */
export const BpfObject: BpfObjectConstructor = addon.BpfObject;

/** Probed once per process and cached (except bpfStatsEnabled). */
export function kernelFeatures(): KernelFeatures {
  return addon.kernelFeatures();
}

/**
 * Turns on BPF_STATS_RUN_TIME for the rest of this process's life (the fd
 * that keeps it on is never closed). Returns false when the kernel refuses.
 */
export function enableStats(): boolean {
  return addon.enableStats();
}

/** What {@link mallocTrim} leaves: bytes glibc's malloc holds from the system, and bytes free inside them. */
export interface MallocStats {
  heapBytes: number;
  freeBytes: number;
}

/**
 * Gives the pages that are free inside glibc's malloc arenas back to the
 * kernel (malloc_trim(0)), e.g. after a burst of start-up or attach work
 * whose memory is freed but would otherwise stay resident. Takes about a
 * millisecond per hundred MiB of arena; never throws.
 */
export function mallocTrim(): MallocStats {
  return addon.mallocTrim();
}

/** What {@link pageOut} did: ranges the kernel took, and the first refusal's errno (0 when none). */
export interface PageOutResult {
  advised: number;
  errno: number;
}

/**
 * Asks the kernel to reclaim the resident pages of ranges of this process
 * (madvise MADV_PAGEOUT, Linux >= 5.4; older kernels refuse with EINVAL):
 * clean file pages leave memory and are read from their file again on next
 * use; pages another process also maps are left alone by the kernel.
 * `ranges`: flat [start, length, ...], page-aligned. Never throws for a
 * refused range; a TypeError for a malformed argument.
 */
export function pageOut(ranges: number[]): PageOutResult {
  return addon.pageOut(ranges);
}
