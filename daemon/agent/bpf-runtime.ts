/**
 * The agent's one loaded BPF object: shared maps (per-binary facts, process
 * allow-list, counters), the ring buffer, and the event dispatch to probes.
 * Everything here is policy-free; the attachment manager decides.
 */
import { hash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfObject, enableStats, isNativeError, kernelFeatures } from '../native/index.ts';
import {
  BpfMaps, BpfPrograms, BinaryFlags, Counter, DebugFlags, KafkaCounter, EventType, ProcessFlags, ProcessesGenSlot, EVENT_HEADER_SIZE,
  decodeFileInfo, decodeHitKey, encodeBinaryInfo, encodeFileInfo, encodeFileKey, encodeProcessInfo,
  HitLimits, type BpfMapName, type BpfProgramName, type FileInfo, type FileKey,
} from '../generated/layouts.ts';
import { ProbeHitLog } from './probe-hit-log.ts';
import { programsOfProbe, type EventContext, type ProbeDescriptor } from '../probes/types.ts';
import type { Logger } from '../util/log.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The program every gt_dispatch link runs (probes/dispatch/dispatch.bpf.c). */
export const DISPATCH_PROGRAM = BpfPrograms.gt_dispatch;
/** The socket-level header injection programs (probes/inject/): optional, left out when the kernel refuses them. */
const INJECT_PROGRAMS = [BpfPrograms.gt_inject_msg, BpfPrograms.gt_inject_sockops] as const;

/**
 * Default probe-event consume interval, ms: the data-age deadline of the
 * ring-buffer consumer (an event waits at most about this long before the
 * span pipeline gets it, and its span then waits for its export batch, up
 * to OTEL_BSP_SCHEDULE_DELAY, 1 s by default). Each hand-off to JS costs
 * the agent a fixed share of CPU, and a small batch runs its path cold: at
 * 1000 spans/s a 20 ms interval (20 events per hand-off) cost ~30 µs of the
 * JavaScript thread per span, 200 ms ~10 µs (bench/agent-ab.ts). Busier
 * rings are handed over sooner, once WAKE_BYTES wait, so the interval binds
 * only below ~1200 HTTP spans/s: the consumer is rate-adaptive through that
 * threshold.
 */
export const DEFAULT_CONSUME_INTERVAL_MS = 200;
/** Producers wake a consumer that is between ticks once this many bytes wait (at most a quarter of the ring): a burst is taken in batches of about maxBatchBytes instead of filling the ring within one interval. */
const WAKE_BYTES = 256 * 1024;

export const DEFAULT_BPF_OBJECT = join(root, 'build', 'probes', 'gotrail.bpf.o');

export interface MapSizes {
  /** Go processes traced at once (the allow-list gt_processes). Default 16384 (the probes' build); at most 2^27 (a hash map's limit). */
  processes?: number;
  /** In-flight calls per probe (hash maps that refuse, counted, when full). Default 16384; at most 2^27. */
  inflight?: number;
  /** Ring buffer bytes (a power of two, multiple of the page size, at most 2^31). Default 2 MiB (the probes' build). */
  ringBufferBytes?: number;
}

export interface EventStats {
  records: number;
  byType: Map<number, number>;
  unknownType: number;
  malformed: number;
  /** probe events of processes the agent had not decided on yet, kept until it did */
  held: number;
  /** held events dropped: their process was not selected (the user's choice, not a loss) */
  heldNotSelected: number;
  /** held events dropped: no decision came in time, or the holding area was full */
  heldExpired: number;
}

/**
 * How long a probe event of an undecided process is kept. A process of a
 * known file is allowed at exec in BPF and may emit events before the agent
 * has read its exec event (the two come through different ring buffers).
 */
const HOLD_MS = 2000;
/** Probe events kept for undecided processes, node-wide. */
const HOLD_MAX = 16384;

/**
 * The in-flight maps, as the probes declare them (ProbeDescriptor.inflightMaps):
 * plain hash maps, keyed by goroutine (struct gt_goroutine_key), holding a
 * call's state from its entry to its return. A full one refuses a new call
 * (counted in BPF as inflight_full) instead of evicting another call's state,
 * as an LRU map would, silently. State whose return never comes (a goroutine
 * that panicked through the function, or blocks forever) is swept by age
 * ({@link BpfRuntime.sweepInflight}); a record a probe keeps between calls
 * (`idle`) is swept once it stayed idle from one pass to the next. A map
 * shared by several probes sweeps for all of them (their paired functions
 * merged).
 */
interface SweptMap {
  paired: number[];
  idle: ((value: Buffer) => boolean) | undefined;
}

function inflightMapsOf(probes: readonly ProbeDescriptor[]): Map<BpfMapName, SweptMap> {
  const out = new Map<BpfMapName, SweptMap>();
  for (const p of probes) {
    for (const m of p.inflightMaps ?? []) {
      const e = out.get(m.map) ?? { paired: [], idle: undefined };
      for (const fn of m.paired) if (!e.paired.includes(fn)) e.paired.push(fn);
      e.idle ??= m.idle;
      out.set(m.map, e);
    }
  }
  return out;
}
/** enum gt_entered_mark's GT_ENTERED_COUNTED (probes/include/gotrail.h) */
const ENTERED_COUNTED = 2;
/** An in-flight map is swept only from this fill on: below it, old state costs nothing (the maps are preallocated) and a long call keeps its span. */
const SWEEP_FROM_FILL = 0.5;

/** Processes whose released slots' counts are kept (as many as gt_probe_hits has keys). */
const RELEASED_HITS_MAX = 16384;
/** Bytes of a slot's counts: a u64 per site (the value goes on with what else probes keep per process, struct process_slot in probes/include/gotrail.h). */
const PROCESS_HITS_BYTES = HitLimits.GT_HIT_SITES_MAX * 8;

const EAGAIN = 11;
/** errno of a map update that needs a new entry in a full hash map */
const E2BIG = 7;
/** Loads cut short by a signal that are tried again before the error counts as a program's refusal. */
const MAX_INTERRUPTED_LOADS = 3;

function u32key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

export class BpfRuntime {
  readonly obj: BpfObject;
  readonly features: ReturnType<typeof kernelFeatures>;
  readonly eventStats: EventStats = { records: 0, byType: new Map(), unknownType: 0, malformed: 0, held: 0, heldNotSelected: 0, heldExpired: 0 };
  /** tgid → probe events (copies) waiting for the agent's decision on that process */
  private readonly heldEvents = new Map<number, { since: number; records: Buffer[] }>();
  private heldCount = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  private ctx: EventContext | undefined;
  /**
   * The last process-event batch handed over, kept until the next one: a
   * Buffer made by the addon has a hidden class of its own (Node gives the
   * typed array Buffer's prototype after creating it), which dies with the
   * last such Buffer at a memory-reducing GC and with it the optimized code
   * of the batch walk (dispatch, handleRecord and the Buffer reads inlined
   * there; see the agent's lastSpanOfScope). Holds at most one batch's
   * bytes while the agent is quiet. Probe-event batches are views of the
   * addon's reused buffers (reuseBatches), which are never kept past
   * dispatch: their bytes are overwritten once it returns.
   */
  private lastBatch: Buffer | undefined;
  private readonly handlers = new Map<number, { id: string; eventSize: number; handleEvent(buf: Buffer, off: number, ctx: EventContext): void }>();
  /** Handlers of the agent's own events (process lifecycle), by event type. */
  private readonly systemHandlers = new Map<number, (buf: Buffer, off: number) => void>();
  private readonly log: Logger;
  private readonly stateMaps: BpfMapName[];
  private readonly inflightMaps: Map<BpfMapName, SweptMap>;
  /** Entries of gt_process_hits (slot 0 included, never assigned). */
  private readonly hitSlotCount: number;

  /**
   * Whether uprobes attach through gt_dispatch (probes/dispatch/), one
   * uprobe_multi link per binary (and per process, for per-process
   * placement) over all its sites, each site's cookie naming the probe
   * program to tail-call; otherwise one link per (binary, program), or one
   * perf-event uprobe per site where the kernel has no uprobe_multi links.
   */
  readonly linkPerBinary: boolean;

  constructor(log: Logger, probes: readonly ProbeDescriptor[], opts: { objectPath?: string; mapSizes?: MapSizes; uprobeMulti?: boolean; linkPerBinary?: boolean } = {}) {
    this.log = log;
    const path = opts.objectPath ?? DEFAULT_BPF_OBJECT;
    if (!existsSync(path)) throw new Error(`BPF object ${path} not found: run bash deploy/setup.sh to build the probes`);
    this.features = kernelFeatures();
    const sizes: Record<string, number> = {};
    if (opts.mapSizes?.processes) {
      sizes[BpfMaps.gt_processes] = opts.mapSizes.processes;
      // one hit counter slot per traced process (slot 0 is none), up to the
      // build's count (1 KiB each); processes beyond it count in gt_probe_hits
      if (opts.mapSizes.processes < HitLimits.GT_PROCESS_HIT_SLOTS) sizes[BpfMaps.gt_process_hits] = opts.mapSizes.processes + 1;
    }
    if (opts.mapSizes?.inflight) {
      sizes[BpfMaps.gt_goroutine_spans] = opts.mapSizes.inflight;
      // one mark per goroutine that entered a paired function, kept until its
      // process exits: never fewer than the build's 16384, however small the
      // in-flight maps are made (a mark pushed out miscounts a loss's reason)
      sizes[BpfMaps.gt_goroutines_entered] = Math.max(opts.mapSizes.inflight, 16384);
      for (const p of probes) for (const m of p.stateMaps) sizes[m] = opts.mapSizes.inflight;
    }
    if (opts.mapSizes?.ringBufferBytes) sizes[BpfMaps.gt_events] = opts.mapSizes.ringBufferBytes;
    this.obj = this.loadSparingFailures(path, probes, { mapMaxEntries: sizes, ...(opts.uprobeMulti === undefined ? {} : { uprobeMulti: opts.uprobeMulti }) });
    this.hitSlotCount = this.obj.mapInfo(BpfMaps.gt_process_hits).maxEntries;
    this.linkPerBinary = (opts.linkPerBinary ?? true) && this.obj.uprobeMulti && this.obj.programStats().some((p) => p.name === DISPATCH_PROGRAM);
    if (!enableStats()) log.warn('BPF run-time statistics unavailable: probe overhead metrics will read 0');
    const usable = probes.filter((p) => !this.disabledProbes.has(p.id));
    for (const p of usable) {
      if (p.eventType !== undefined && p.eventSize !== undefined && p.handleEvent) {
        this.handlers.set(p.eventType, { id: p.id, eventSize: p.eventSize, handleEvent: p.handleEvent.bind(p) });
      }
    }
    this.stateMaps = [BpfMaps.gt_goroutine_spans, BpfMaps.gt_goroutines_entered, BpfMaps.gt_self_skipped, BpfMaps.gt_probe_hits, BpfMaps.gt_inject_sends, ...usable.flatMap((p) => p.stateMaps)];
    this.inflightMaps = inflightMapsOf(usable);
  }

  /** Probes whose programs the kernel refused, with the reason: the others run without them. */
  readonly disabledProbes = new Map<string, string>();

  /** Why the socket programs of header injection were refused by the kernel (then left out), if they were. */
  injectionRefused: string | undefined;

  /**
   * Loads the object; when the kernel refuses one program (a verifier that
   * is older or stricter than ours, a missing helper), the probe owning it
   * is left out and the rest is loaded again, so one failing probe never
   * takes the others down. Failures outside any probe's programs (maps, the
   * process tracepoints' dependencies) still fail the load.
   */
  private loadSparingFailures(path: string, probes: readonly ProbeDescriptor[], open: ConstructorParameters<typeof BpfObject>[1]): BpfObject {
    const programsOf = (p: ProbeDescriptor): BpfProgramName[] => programsOfProbe(p);
    const skipped = new Set<string>();
    let obj = new BpfObject(path, open);
    const all = obj.programNames();
    let interrupted = 0;
    for (let first = true; ; first = false) {
      if (!first) obj = new BpfObject(path, skipped.size ? { ...open, autoload: all.filter((n) => !skipped.has(n)) } : open);
      try {
        obj.load();
        return obj;
      } catch (e) {
        obj.close();
        // EAGAIN: verification was cut short by a signal (the native load
        // holds the thread's signals, so this is rare), not a refusal of the
        // program: load the same set again rather than leave a probe out
        if ((e as { errno?: number }).errno === EAGAIN && interrupted++ < MAX_INTERRUPTED_LOADS) continue;
        const text = `${(e as Error).message}\n${(e as { log?: string }).log ?? ''}`;
        const prog = /prog '([^']+)': (?:BPF program load failed|failed to load)/.exec(text)?.[1];
        const owner = prog ? probes.find((p) => (programsOf(p) as string[]).includes(prog)) : undefined;
        if (prog && !owner && !skipped.has(prog) && (INJECT_PROGRAMS as readonly string[]).includes(prog)) {
          // header injection is optional: the rest loads without it
          this.injectionRefused = `the kernel refused its BPF program ${prog}: ${(e as Error).message.split('\n')[0]}`;
          for (const q of INJECT_PROGRAMS) skipped.add(q);
          this.log.error('traceparent injection disabled', { reason: this.injectionRefused });
          continue;
        }
        if (!prog || !owner || skipped.has(prog)) throw e;
        const reason = `the kernel refused its BPF program ${prog}: ${(e as Error).message.split('\n')[0]}`;
        this.disabledProbes.set(owner.id, reason);
        for (const q of programsOf(owner)) skipped.add(q);
        this.log.error(`probe ${owner.id} disabled`, { reason });
      }
    }
  }

  private hitLog: ProbeHitLog | undefined;

  /**
   * Records every probe hit and the agent's steps that change what a hit
   * sees into `path` (JSON lines, see ProbeHitLog). A debugging aid: one
   * synchronous write per hit. Throws when `path` cannot be opened; a
   * write that fails later is counted and logged, never thrown.
   */
  enableProbeHitLog(path: string): void {
    this.hitLog = new ProbeHitLog(path, this.log);
    const log = this.hitLog;
    this.onSystemEvent(EventType.GT_EVENT_PROBE_HIT, (buf, off) => log.hit(buf, off));
    const v = Buffer.alloc(4);
    v.writeUInt32LE(DebugFlags.GT_DEBUG_PROBE_HITS);
    this.obj.mapUpdate(BpfMaps.gt_debug, u32key(0), v);
  }

  /** Sets the head sampler the probes apply (gt_sampler, see probes/include/sampling.h); takes effect at the next root span. */
  setSampler(config: Buffer): void {
    this.obj.mapUpdate(BpfMaps.gt_sampler, u32key(0), config);
  }

  /** The probe-hit log's file and line counts, when it is on. */
  get probeHitLog(): { file: string; writtenLines: number; unwrittenLines: number } | undefined {
    const l = this.hitLog;
    return l && { file: l.path, writtenLines: l.writtenLines, unwrittenLines: l.unwrittenLines };
  }

  /** An agent step for the probe-hit log; nothing when it is off. */
  debugNote(op: string, fields: Record<string, number | string | bigint | undefined> = {}): void {
    this.hitLog?.note(op, fields);
  }

  /**
   * Writes binary `id`'s facts. `linkGeneration` (0–255): the generation of
   * its gt_dispatch links that is live; writing a new one switches the
   * binary's hits from its old links to its new ones at once (see
   * AttachmentManager's relink).
   */
  setBinary(id: number, goidOffset: number, linkGeneration = 0): void {
    this.debugNote('binary', { id, linkGeneration });
    this.obj.mapUpdate(BpfMaps.gt_binaries, u32key(id), encodeBinaryInfo({ goid_offset: goidOffset, flags: BinaryFlags.GT_BINARY_VALID, link_generation: linkGeneration, reserved: 0 }));
  }

  /** Tells the exec hook about an attached file (see probes/process/process.bpf.c). */
  setFile(key: FileKey, info: FileInfo): void {
    this.obj.mapUpdate(BpfMaps.gt_binary_files, encodeFileKey(key), encodeFileInfo(info));
  }

  /** Forgets an attached file, unless it was registered again for another binary id since. */
  clearFile(key: FileKey, binaryId: number): void {
    const k = encodeFileKey(key);
    const v = this.obj.mapLookup(BpfMaps.gt_binary_files, k);
    if (v && decodeFileInfo(v).binary_id === binaryId) this.obj.mapDelete(BpfMaps.gt_binary_files, k);
  }

  /**
   * Makes the probes ignore the hits of binary `id`'s link set from now on,
   * before it is detached: a new process of the same file may get a new link
   * set while this one is still being detached, and each site must count once.
   */
  releaseBinary(id: number): void {
    this.debugNote('releasing', { id });
    this.obj.mapUpdate(BpfMaps.gt_binaries, u32key(id), encodeBinaryInfo({ goid_offset: 0, flags: BinaryFlags.GT_BINARY_RELEASED, link_generation: 0, reserved: 0 }));
  }

  clearBinary(id: number, probes: readonly ProbeDescriptor[]): void {
    this.debugNote('released', { id });
    this.obj.mapUpdate(BpfMaps.gt_binaries, u32key(id), encodeBinaryInfo({ goid_offset: 0, flags: 0, link_generation: 0, reserved: 0 }));
    for (const p of probes) {
      const o = this.objectWithMap(p.configMap);
      o.mapUpdate(p.configMap, u32key(id), Buffer.alloc(o.mapInfo(p.configMap).valueSize));
    }
  }

  setProbeConfig(probe: ProbeDescriptor, id: number, config: Buffer): void {
    this.objectWithMap(probe.configMap).mapUpdate(probe.configMap, u32key(id), config);
  }

  /** Objects loaded separately (sharing this one's maps), by program and by map of their own. */
  private readonly extraPrograms = new Map<string, BpfObject>();
  private readonly extraMaps = new Map<string, BpfObject>();

  /**
   * Adds an object loaded separately with `shareMapsFrom: this.obj` (e.g.
   * one a kernel may refuse, which must not take the probes down): its
   * programs attach through the attachment manager like the probes', its
   * own maps are found by name. The caller keeps closing it.
   */
  addObject(obj: BpfObject): void {
    const ours = new Set(this.obj.mapNames());
    // loaded programs only: an object may carry sections it does not load
    for (const p of obj.programStats()) this.extraPrograms.set(p.name, obj);
    for (const m of obj.mapNames()) if (!ours.has(m)) this.extraMaps.set(m, obj);
  }

  /** program → its index in gt_probe_programs (the dispatcher's program array) */
  private readonly programIndexes = new Map<string, number>();

  /**
   * The index of probe program `program` (of this object or one added with
   * addObject) in gt_probe_programs, inserting it there on first use: what a
   * gt_dispatch site's cookie names. @throws Error when the program is not
   * loaded (e.g. the kernel refused it) or the array is full.
   */
  probeProgramIndex(program: string): number {
    const known = this.programIndexes.get(program);
    if (known !== undefined) return known;
    const index = this.programIndexes.size;
    const capacity = this.obj.mapInfo(BpfMaps.gt_probe_programs).maxEntries;
    if (index >= capacity) throw new Error(`insert prog ${program} into map ${BpfMaps.gt_probe_programs}: full (${capacity} programs)`);
    this.obj.mapUpdate(BpfMaps.gt_probe_programs, u32key(index), u32key(this.objectFor(program).programFd(program)));
    this.programIndexes.set(program, index);
    return index;
  }

  /** The object holding `program`: the probes' or one added with addObject. */
  objectFor(program: string): BpfObject {
    return this.extraPrograms.get(program) ?? this.obj;
  }

  /** The object holding map `name`: the probes' or one added with addObject. */
  objectWithMap(name: string): BpfObject {
    return this.extraMaps.get(name) ?? this.obj;
  }

  /**
   * Allows process `tgid` in BPF. `file`: the executable it was judged on
   * (kernel encoding, see file-identity.ts), so that the exec hook keeps the
   * decision when the process execs that very file afterwards. `noInject`:
   * its connections never get a traceparent header (`--no-inject-exe`).
   * Returns false, with nothing changed, when the allow-list is full (the
   * kernel's E2BIG for a new key of a full hash map; an entry already there
   * is always updated): the process is not traced.
   * @throws NativeError on any other failure of the update
   */
  traceProcess(tgid: number, file?: FileKey, noInject = false): boolean {
    this.debugNote('trace', { tgid });
    const hadSlot = this.hitSlots.has(tgid);
    try {
      this.obj.mapUpdate(BpfMaps.gt_processes, u32key(tgid), encodeProcessInfo({
        flags: ProcessFlags.GT_PROCESS_TRACED | (noInject ? ProcessFlags.GT_PROCESS_NO_INJECT : 0), hits_slot: this.hitSlotOf(tgid), file_dev: file?.dev ?? 0n, file_ino: file?.ino ?? 0n,
      }));
      return true;
    } catch (e) {
      if (!isNativeError(e) || e.errno !== E2BIG) throw e;
      // no entry points at the slot just taken for it
      if (!hadSlot) this.releaseHitSlot(tgid);
      return false;
    } finally {
      this.processesChanged();
    }
  }

  /** How many processes the allow-list (gt_processes) holds at most (`--max-processes`). */
  get processCapacity(): number {
    return this.obj.mapInfo(BpfMaps.gt_processes).maxEntries;
  }

  untraceProcess(tgid: number): boolean {
    this.debugNote('untrace', { tgid });
    const deleted = this.obj.mapDelete(BpfMaps.gt_processes, u32key(tgid));
    // before the slot is released: no CPU goes on counting in it from what it remembered
    this.processesChanged();
    this.releaseHitSlot(tgid);
    return deleted;
  }

  /** User space's generation of gt_processes (probes/include/gotrail.h): bumped after each change of the map, so that no CPU keeps using what it remembered of an entry. */
  private processesGen = 0n;

  private processesChanged(): void {
    this.processesGen++;
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(this.processesGen);
    this.obj.mapUpdate(BpfMaps.gt_processes_gen, u32key(ProcessesGenSlot.GT_PROCESSES_GEN_USER), v);
  }

  /** tgid → its slot of gt_process_hits (see probes/include/gotrail.h), while traced. */
  private readonly hitSlots = new Map<number, number>();
  /** Slots released, reused first-in first-out: a hit that read a process's entry just before it was deleted lands in its old slot, long before the slot is reused. */
  private readonly freeHitSlots: number[] = [];
  /** The next slot never used (slot 0 stands for none). */
  private nextHitSlot = 1;
  /** Hits counted in a process's released slot, kept until its state is forgotten: tgid → site → hits. */
  private readonly releasedHits = new Map<number, Map<number, number>>();

  /** The process's hit counter slot, assigned (zeroed) at its first call; 0 when every slot is taken (its hits then go to gt_probe_hits). */
  private hitSlotOf(tgid: number): number {
    let slot = this.hitSlots.get(tgid);
    if (slot !== undefined) return slot;
    slot = this.freeHitSlots.shift() ?? (this.nextHitSlot < this.hitSlotCount ? this.nextHitSlot++ : 0);
    if (!slot) return 0;
    try {
      this.obj.mapUpdate(BpfMaps.gt_process_hits, u32key(slot), Buffer.alloc(this.obj.mapInfo(BpfMaps.gt_process_hits).valueSize));
    } catch {
      this.freeHitSlots.push(slot);
      return 0;
    }
    this.hitSlots.set(tgid, slot);
    return slot;
  }

  /** Frees the process's slot once its gt_processes entry is gone, keeping what it counted. */
  private releaseHitSlot(tgid: number): void {
    const slot = this.hitSlots.get(tgid);
    if (slot === undefined) return;
    this.hitSlots.delete(tgid);
    const kept = this.releasedHits.get(tgid) ?? new Map<number, number>();
    try {
      for (const [site, n] of this.slotHits(slot)) kept.set(site, (kept.get(site) ?? 0) + n);
    } catch {
      /* unreadable: those hits are unknown */
    }
    if (kept.size) {
      this.releasedHits.set(tgid, kept);
      // bounded as gt_probe_hits is: a process released without being forgotten (never attached) ages out
      if (this.releasedHits.size > RELEASED_HITS_MAX) this.releasedHits.delete(this.releasedHits.keys().next().value!);
    }
    this.freeHitSlots.push(slot);
  }

  /** A slot's non-zero counts: site → hits. */
  private slotHits(slot: number): Map<number, number> {
    const out = new Map<number, number>();
    const v = this.obj.mapLookup(BpfMaps.gt_process_hits, u32key(slot));
    if (v) for (let site = 0; site * 8 + 8 <= Math.min(v.length, PROCESS_HITS_BYTES); site++) {
      const n = Number(v.readBigUInt64LE(site * 8));
      if (n) out.set(site, n);
    }
    return out;
  }

  /**
   * Probe hits of these processes (all when omitted) since the agent first
   * saw them, by site (enum gt_hit_site): pid → site → hits. Sums their
   * slots of gt_process_hits, what slots they left counted, and
   * gt_probe_hits (hits while not traced or without a slot). Throws when a
   * map cannot be read.
   */
  probeHits(pids?: Set<number>): Map<number, Map<number, number>> {
    const out = new Map<number, Map<number, number>>();
    const add = (pid: number, site: number, n: number): void => {
      if (pids && !pids.has(pid)) return;
      const m = out.get(pid) ?? new Map<number, number>();
      m.set(site, (m.get(site) ?? 0) + n);
      out.set(pid, m);
    };
    for (const k of this.obj.mapKeys(BpfMaps.gt_probe_hits)) {
      const key = decodeHitKey(k);
      if (pids && !pids.has(key.tgid)) continue;
      const v = this.obj.mapLookup(BpfMaps.gt_probe_hits, k);
      if (v) add(key.tgid, key.site, Number(v.readBigUInt64LE(0)));
    }
    for (const [pid, kept] of this.releasedHits) for (const [site, n] of kept) add(pid, site, n);
    for (const [pid, slot] of this.hitSlots) {
      if (pids && !pids.has(pid)) continue;
      for (const [site, n] of this.slotHits(slot)) add(pid, site, n);
    }
    return out;
  }

  /**
   * pid → sends through the injection's sockmap (gt_inject_msg runs) since
   * the process was first seen, counted in BPF per tgid (gt_inject_sends).
   * Throws when the map cannot be read.
   */
  injectSends(pids?: Set<number>): Map<number, number> {
    const out = new Map<number, number>();
    for (const k of this.obj.mapKeys(BpfMaps.gt_inject_sends)) {
      const pid = k.readUInt32LE(0);
      if (pids && !pids.has(pid)) continue;
      const v = this.obj.mapLookup(BpfMaps.gt_inject_sends, k);
      if (v) out.set(pid, Number(v.readBigUInt64LE(0)));
    }
    return out;
  }

  /** Removes in-flight goroutine state of a process that exited. */
  forgetProcessState(tgid: number): number {
    this.releaseHitSlot(tgid);
    this.releasedHits.delete(tgid);
    let removed = 0;
    for (const map of this.stateMaps) {
      for (const k of this.obj.mapKeys(map)) {
        if (k.readUInt32LE(0) === tgid && this.obj.mapDelete(map, k)) removed++;
      }
    }
    this.debugNote('forget', { tgid, removed });
    return removed;
  }

  /** In-flight state removed by {@link sweepInflight}: calls whose span is lost (counted as inflight_expired). */
  inflightExpired = 0;
  /** Idle records (kept between calls, holding none) removed by {@link sweepInflight}: no loss. */
  inflightIdleRemoved = 0;
  /** map → key (base64) → a digest of the value first seen unchanged, and when (ms) */
  private readonly inflightSeen = new Map<string, Map<string, { value: string; since: number }>>();

  /**
   * Removes from the in-flight maps at least half full (see
   * {@link inflightMapsOf}) the state that stayed unchanged for `maxAgeMs` or
   * longer: a call whose return never came. Each removal is a lost span,
   * counted (inflightExpired); the goroutine is marked so that a return
   * coming after all is not counted again. An idle record (a probe's record
   * kept for its goroutine's next call) is removed, uncounted, once a pass
   * finds it as the previous pass left it. Walks every entry of those maps
   * (at most their capacity each): run it seconds apart. Returns the calls
   * removed, and whether a map was at least half full (a next pass will find
   * more to remove: the caller keeps sweeping while that holds).
   */
  sweepInflight(maxAgeMs: number, now = Date.now()): { removed: number; full: boolean } {
    let removed = 0;
    let full = false;
    for (const [map, { paired, idle }] of this.inflightMaps) {
      let keys: Buffer[];
      let capacity: number;
      try {
        capacity = this.obj.mapInfo(map).maxEntries;
        keys = this.obj.mapKeys(map);
      } catch {
        continue; // a map the object does not have
      }
      const seen = this.inflightSeen.get(map) ?? new Map<string, { value: string; since: number }>();
      this.inflightSeen.set(map, seen);
      const present = new Set<string>();
      const sweep = keys.length >= capacity * SWEEP_FROM_FILL;
      full ||= sweep;
      for (const k of keys) {
        const v = this.obj.mapLookup(map, k);
        if (!v) continue;
        const key = k.toString('base64');
        // a digest: values run to a kilobyte, and a full map holds thousands
        const value = hash('sha1', v, 'base64');
        const was = seen.get(key);
        if (!was || was.value !== value) {
          seen.set(key, { value, since: now });
          present.add(key);
          continue;
        }
        const isIdle = idle?.(v) ?? false;
        if (sweep && isIdle) {
          // looked up again just before: a goroutine whose next call began
          // since keeps its record (one beginning in between loses its span
          // to the delete, counted at its return as no_entry)
          const again = this.obj.mapLookup(map, k);
          if (again && again.equals(v) && this.obj.mapDelete(map, k)) {
            this.inflightIdleRemoved++;
            seen.delete(key);
            continue;
          }
        } else if (sweep && now - was.since >= maxAgeMs && this.obj.mapDelete(map, k)) {
          removed++;
          seen.delete(key);
          for (const fn of paired) this.markCounted(k, fn);
          continue;
        }
        present.add(key);
      }
      for (const key of seen.keys()) if (!present.has(key)) seen.delete(key);
    }
    this.inflightExpired += removed;
    if (removed) this.log.once('inflight.expired', `in-flight calls older than ${Math.round(maxAgeMs / 1000)} s removed from full in-flight maps: their spans are lost (counted in gotrail_events_lost_total{reason="inflight_expired"})`, { removed });
    return { removed, full };
  }

  /** Marks goroutine `key` (a gt_goroutine_key) as having its call of `fn` counted as lost, when it entered `fn` while traced. */
  private markCounted(key: Buffer, fn: number): void {
    const k = Buffer.from(key.subarray(0, 16));
    k.writeUInt32LE(fn, 4);
    try {
      if (this.obj.mapLookup(BpfMaps.gt_goroutines_entered, k)) this.obj.mapUpdate(BpfMaps.gt_goroutines_entered, k, u32key(ENTERED_COUNTED));
    } catch {
      /* the mark is a refinement: without it a later return counts as no_entry too */
    }
  }

  /** Maps whose fill the agent reports. */
  trackedMaps(): string[] {
    return [BpfMaps.gt_processes, BpfMaps.gt_self_conns, ...this.stateMaps];
  }

  /** Sums the per-CPU BPF-side counters. */
  counters(): Record<string, bigint> {
    const out: Record<string, bigint> = {};
    for (const [name, idx] of Object.entries(Counter)) {
      if (name === 'GT_COUNTER_MAX') continue;
      const v = this.obj.mapLookup(BpfMaps.gt_counters, u32key(idx));
      let sum = 0n;
      if (v) for (let o = 0; o + 8 <= v.length; o += 8) sum += v.readBigUInt64LE(o);
      out[name.replace('GT_COUNTER_', '').toLowerCase()] = sum;
    }
    // counted in user space: in-flight state swept past its age (sweepInflight)
    out['inflight_expired'] = BigInt(this.inflightExpired);
    return out;
  }

  /** The last eviction count of the Kafka links (a counter: never lowered). */
  private kafkaEvicted = 0;

  /**
   * The Kafka producer→consumer links (probes/go/github.com/segmentio/kafka-go/kafka.h)
   * by outcome, and the messages not traced by reason. `evicted` (links pushed
   * out of the full LRU map before any lifetime ended) is what was published
   * and is neither present nor expired; it walks the map's keys (at most
   * 65536), so it is read at scrape time only.
   */
  kafkaStats(): { links: Record<string, number>; untraced: Record<string, number> } {
    const sum = (idx: number): number => {
      const v = this.obj.mapLookup(BpfMaps.gt_kafka_counters, u32key(idx));
      let n = 0n;
      if (v) for (let o = 0; o + 8 <= v.length; o += 8) n += v.readBigUInt64LE(o);
      return Number(n);
    };
    const links = {
      published: sum(KafkaCounter.GT_KAFKA_LINK_PUBLISHED),
      found: sum(KafkaCounter.GT_KAFKA_LINK_FOUND),
      found_by_content: sum(KafkaCounter.GT_KAFKA_LINK_FOUND_BY_CONTENT),
      ambiguous: sum(KafkaCounter.GT_KAFKA_LINK_AMBIGUOUS),
      expired: sum(KafkaCounter.GT_KAFKA_LINK_EXPIRED) + sum(KafkaCounter.GT_KAFKA_CONTENT_EXPIRED),
      not_found: sum(KafkaCounter.GT_KAFKA_LINK_NOT_FOUND),
      store_failed: sum(KafkaCounter.GT_KAFKA_LINK_STORE_FAILED) + sum(KafkaCounter.GT_KAFKA_CONTENT_STORE_FAILED),
      evicted: this.kafkaEvicted,
    };
    let present: number | undefined = 0;
    try {
      if (links.published > 0) present = this.obj.mapKeys(BpfMaps.gt_kafka_links).length;
    } catch {
      present = undefined; // unknown this time: no eviction count rather than a wrong one
    }
    if (present !== undefined) links.evicted = this.kafkaEvicted = Math.max(this.kafkaEvicted, links.published - sum(KafkaCounter.GT_KAFKA_LINK_EXPIRED) - present);
    return { links, untraced: { limit: sum(KafkaCounter.GT_KAFKA_MSGS_UNTRACED), unpaired: sum(KafkaCounter.GT_KAFKA_MSGS_UNPAIRED) } };
  }

  /** Routes an event type that is not a probe's (process exec/exit) to `fn`. */
  onSystemEvent(type: number, fn: (buf: Buffer, off: number) => void): void {
    this.systemHandlers.set(type, fn);
  }

  /** Attaches the process exec/exit tracepoints; returns false (and says why) when they cannot be. */
  attachProcessEvents(): boolean {
    try {
      this.obj.attachTracepoint(BpfPrograms.gt_process_exec, 'sched', 'sched_process_exec');
      this.obj.attachTracepoint(BpfPrograms.gt_process_exit, 'sched', 'sched_process_exit');
      return true;
    } catch (e) {
      this.log.warn('process exec/exit events unavailable: new processes are found by the periodic /proc scan only', { error: (e as Error).message });
      return false;
    }
  }

  /**
   * Makes the probes recognise the TCP connections process `tgid` (the
   * agent) opens from now on, so that no span is made of a request it sent
   * (its OTLP exports to a traced collector would otherwise each make a
   * span, exported in turn: a loop). Returns false, and says why, when the
   * kernel lacks the inet_sock_set_state BTF tracepoint; requests gotrail
   * sends to traced servers are then traced.
   */
  trackOwnConnections(tgid: number): boolean {
    try {
      const v = Buffer.alloc(4);
      v.writeUInt32LE(tgid >>> 0);
      this.obj.mapUpdate(BpfMaps.gt_self_processes, u32key(tgid), v);
      this.obj.attachTracepoint(BpfPrograms.gt_self_sock_state, 'sock', 'inet_sock_set_state');
      return true;
    } catch (e) {
      this.log.warn('gotrail cannot recognise its own connections: its requests to traced servers (e.g. OTLP exports to a traced collector) are traced', { error: (e as Error).message });
      return false;
    }
  }

  /**
   * Starts consuming events; `ctx` turns them into spans. Process events
   * have their own ring buffer, polled with wakeups so they arrive at once
   * and survive floods of probe events.
   */
  start(ctx: EventContext, opts: { intervalMs?: number } = {}): void {
    this.ctx = ctx;
    // With wakeups most batches hold a record or two: the bound on batches
    // out to JS must be high for it not to stop consumption long before the
    // kernel ring buffer is full (memory stays bounded by batches × bytes).
    // Every process event is submitted with the kernel's adaptive wakeup
    // (flags 0: a wakeup whenever the consumer has caught up), so this one
    // needs no timer at all.
    this.obj.startRingBuffer(BpfMaps.gt_process_events, (batch) => {
      this.lastBatch = batch;
      this.dispatch(batch, ctx);
    }, { intervalMs: 0, wakeup: true, maxQueuedBatches: 1024, maxBatchBytes: 64 * 1024 });
    // Few, moderate batches in flight: when the export queue fills, what was
    // already taken from the kernel (and must be kept) stays small. Probe
    // events drain on a timer while they flow; an empty ring puts the poll
    // thread to sleep until the next event (gt_rb_control), so an idle
    // agent has no periodic wake-up here. Once woken, the poll thread lets
    // events gather for one interval (or until WAKE_BYTES wait) before it
    // hands them over: each hand-off to JS has a fixed cost (see
    // DEFAULT_CONSUME_INTERVAL_MS), so one per interval rather than one per
    // event. The batches are views of a few reused buffers (reuseBatches):
    // a new buffer per batch was ~10 MB/s of external memory at 10k
    // requests/s, and V8 answered it with a full garbage collection every
    // few seconds. Nothing of a batch outlives dispatch: decoders copy
    // strings and span ids out, and held events are copies.
    this.obj.startRingBuffer(BpfMaps.gt_events, (batch) => this.dispatch(batch, ctx), { reuseBatches: true, intervalMs: opts.intervalMs ?? DEFAULT_CONSUME_INTERVAL_MS, maxQueuedBatches: 8, maxBatchBytes: 256 * 1024, wakeControl: BpfMaps.gt_rb_control, wakeBytes: Math.min(WAKE_BYTES, Math.floor(this.obj.mapInfo(BpfMaps.gt_events).maxEntries / 4)) });
  }

  /**
   * Stops (true) or resumes (false) taking probe events out of the kernel:
   * while the span pipeline is full, events wait in the ring buffer (where
   * an overflow is counted as ringbuf_full) rather than being taken and
   * dropped. Process events keep flowing.
   */
  pauseProbeEvents(paused: boolean): void {
    this.obj.pauseRingBuffer(BpfMaps.gt_events, paused);
  }

  /** Has the probe events in the ring buffer handed over now rather than at the end of the consume interval (a flush). */
  consumeNow(): void {
    this.obj.consumeRingBufferNow(BpfMaps.gt_events);
  }

  /** Per ring-buffer map: times its poll thread woke up (see RingBufferStats.wakeups). */
  ringBufferWakeups(): Record<string, bigint> {
    return this.ringBufferCounter('wakeups');
  }

  /** Per ring-buffer map: batches handed to the JS thread (see RingBufferStats.batches). */
  ringBufferBatches(): Record<string, bigint> {
    return this.ringBufferCounter('batches');
  }

  /** Per ring-buffer map: wakeups its producers forced (see RingBufferStats.forcedWakeups). */
  ringBufferForcedWakeups(): Record<string, bigint> {
    return this.ringBufferCounter('forcedWakeups');
  }

  private ringBufferCounter(key: 'wakeups' | 'batches' | 'forcedWakeups'): Record<string, bigint> {
    const out: Record<string, bigint> = {};
    for (const m of [BpfMaps.gt_events, BpfMaps.gt_process_events]) {
      try {
        out[m] = this.obj.ringBufferStats(m)[key];
      } catch {
        /* not started */
      }
    }
    return out;
  }

  /** The agent decided on process `tgid`: its held events are handled now (traced) or dropped (not). */
  decided(tgid: number, traced: boolean): void {
    this.releaseHeld(tgid, traced ? 'traced' : 'not-selected');
  }

  private releaseHeld(tgid: number, outcome: 'traced' | 'not-selected' | 'expired'): void {
    const h = this.heldEvents.get(tgid);
    if (!h) return;
    this.heldEvents.delete(tgid);
    this.heldCount -= h.records.length;
    if (outcome === 'traced' && this.ctx) {
      for (const r of h.records) this.handleRecord(r, 0, r.length, this.ctx, false);
    } else if (outcome === 'not-selected') {
      this.eventStats.heldNotSelected += h.records.length;
    } else {
      this.eventStats.heldExpired += h.records.length;
      this.log.once('event.hold-expired', 'probe events of a process the agent never decided on were dropped (counted in gotrail_events_dropped_total{reason="undecided_process"})', { tgid });
    }
  }

  private expireHeld(): void {
    if (!this.heldEvents.size) {
      // runs only while events are held: an idle agent has no timer here
      clearInterval(this.holdTimer);
      this.holdTimer = undefined;
      return;
    }
    const now = Date.now();
    for (const [tgid, h] of this.heldEvents) {
      if (now - h.since < HOLD_MS) continue;
      // the decision may have been made on a path that does not report here
      this.releaseHeld(tgid, this.ctx?.resourceOf(tgid) !== undefined ? 'traced' : 'expired');
    }
  }

  private hold(tgid: number, batch: Buffer, rec: number, len: number): void {
    if (this.heldCount >= HOLD_MAX) {
      this.eventStats.heldExpired++;
      this.log.once('event.hold-full', `probe events of undecided processes exceed ${HOLD_MAX}: dropped (counted in gotrail_events_dropped_total{reason="undecided_process"})`);
      return;
    }
    let h = this.heldEvents.get(tgid);
    if (!h) {
      h = { since: Date.now(), records: [] };
      this.heldEvents.set(tgid, h);
      if (!this.holdTimer) {
        this.holdTimer = setInterval(() => this.expireHeld(), 250);
        this.holdTimer.unref();
      }
    }
    h.records.push(Buffer.from(batch.subarray(rec, rec + len)));
    this.heldCount++;
    this.eventStats.held++;
  }

  /** Walks one batch (u32 length + record, 8-byte aligned) without throwing. */
  dispatch(batch: Buffer, ctx: EventContext): void {
    let off = 0;
    while (off + 4 <= batch.length) {
      const len = batch.readUInt32LE(off);
      const rec = off + 4;
      if (len === 0 || rec + len > batch.length) {
        this.eventStats.malformed++;
        this.log.once('event.malformed-batch', 'malformed ring-buffer batch: rest of batch skipped', { offset: off, len });
        return;
      }
      this.eventStats.records++;
      if (len >= EVENT_HEADER_SIZE) {
        const type = batch.readUInt16LE(rec);
        this.eventStats.byType.set(type, (this.eventStats.byType.get(type) ?? 0) + 1);
        const h = this.handlers.get(type);
        const sys = h ? undefined : this.systemHandlers.get(type);
        if (sys) {
          try {
            sys(batch, rec);
          } catch (e) {
            this.eventStats.malformed++;
            this.log.once(`event.system.${type}`, 'handling a process event failed', { error: (e as Error).message });
          }
        } else this.handleRecord(batch, rec, len, ctx, true);
      } else this.eventStats.malformed++;
      off = (rec + len + 7) & ~7;
    }
  }

  /** One probe event; `mayHold`: keep it when its process is not decided yet. */
  private handleRecord(batch: Buffer, rec: number, len: number, ctx: EventContext, mayHold: boolean): void {
    const type = batch.readUInt16LE(rec);
    const h = this.handlers.get(type);
    if (!h) {
      this.eventStats.unknownType++;
      return;
    }
    if (len < (h.eventSize ?? 0)) {
      this.eventStats.malformed++;
      this.log.once(`event.short.${type}`, 'event shorter than its layout: skipped', { type, len, expected: h.eventSize });
      return;
    }
    const tgid = batch.readUInt32LE(rec + 4);
    if (mayHold && ctx.resourceOf(tgid) === undefined) {
      this.hold(tgid, batch, rec, len);
      return;
    }
    try {
      h.handleEvent?.(batch, rec, ctx);
    } catch (e) {
      this.eventStats.malformed++;
      this.log.once(`event.decode.${h.id}`, `decoding a ${h.id} event failed`, { error: (e as Error).message });
    }
  }

  async stop(): Promise<void> {
    if (this.holdTimer) clearInterval(this.holdTimer);
    for (const tgid of [...this.heldEvents.keys()]) this.releaseHeld(tgid, this.ctx?.resourceOf(tgid) !== undefined ? 'traced' : 'expired');
    await this.obj.stopRingBuffer();
    this.obj.close();
    this.hitLog?.close();
  }
}
