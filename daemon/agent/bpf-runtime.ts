/**
 * The agent's one loaded BPF object: shared maps (per-binary facts, process
 * allow-list, counters), the ring buffer, and the event dispatch to probes.
 * Everything here is policy-free; the attachment manager decides.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfObject, enableStats, kernelFeatures } from '../native/index.ts';
import {
  BinaryFlags, Counter, ProcessFlags, EVENT_HEADER_SIZE,
  encodeBinaryInfo, encodeProcessInfo,
} from '../generated/layouts.ts';
import type { EventContext, ProbeDescriptor } from '../probes/types.ts';
import type { Logger } from '../util/log.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_BPF_OBJECT = join(root, 'build', 'probes', 'gotrail.bpf.o');

export interface MapSizes {
  /** Binaries tracked at once (array maps indexed by binary id). Fixed by the probes' build: 4096. */
  processes?: number;
  /** In-flight requests per probe (LRU). Default 16384. */
  inflight?: number;
  /** Ring buffer bytes (a power of two, multiple of the page size). Default 4 MiB. */
  ringBufferBytes?: number;
}

export interface EventStats {
  records: number;
  byType: Map<number, number>;
  unknownType: number;
  malformed: number;
}

function u32key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

export class BpfRuntime {
  readonly obj: BpfObject;
  readonly features: ReturnType<typeof kernelFeatures>;
  readonly eventStats: EventStats = { records: 0, byType: new Map(), unknownType: 0, malformed: 0 };
  private readonly handlers = new Map<number, ProbeDescriptor>();
  /** Handlers of the agent's own events (process lifecycle), by event type. */
  private readonly systemHandlers = new Map<number, (buf: Buffer, off: number) => void>();
  private readonly log: Logger;
  private readonly stateMaps: string[];

  constructor(log: Logger, probes: readonly ProbeDescriptor[], opts: { objectPath?: string; mapSizes?: MapSizes; uprobeMulti?: boolean } = {}) {
    this.log = log;
    const path = opts.objectPath ?? DEFAULT_BPF_OBJECT;
    if (!existsSync(path)) throw new Error(`BPF object ${path} not found: run bash deploy/setup.sh to build the probes`);
    this.features = kernelFeatures();
    const sizes: Record<string, number> = {};
    if (opts.mapSizes?.processes) sizes['gt_processes'] = opts.mapSizes.processes;
    if (opts.mapSizes?.inflight) {
      sizes['gt_goroutine_spans'] = opts.mapSizes.inflight;
      for (const p of probes) for (const m of p.stateMaps) sizes[m] = opts.mapSizes.inflight;
    }
    if (opts.mapSizes?.ringBufferBytes) sizes['gt_events'] = opts.mapSizes.ringBufferBytes;
    this.obj = this.loadSparingFailures(path, probes, { mapMaxEntries: sizes, ...(opts.uprobeMulti === undefined ? {} : { uprobeMulti: opts.uprobeMulti }) });
    if (!enableStats()) log.warn('BPF run-time statistics unavailable: probe overhead metrics will read 0');
    const usable = probes.filter((p) => !this.disabledProbes.has(p.id));
    for (const p of usable) this.handlers.set(p.eventType, p);
    this.stateMaps = ['gt_goroutine_spans', 'gt_self_skipped', ...usable.flatMap((p) => p.stateMaps)];
  }

  /** Probes whose programs the kernel refused, with the reason: the others run without them. */
  readonly disabledProbes = new Map<string, string>();

  /**
   * Loads the object; when the kernel refuses one program (a verifier that
   * is older or stricter than ours, a missing helper), the probe owning it
   * is left out and the rest is loaded again, so one failing probe never
   * takes the others down. Failures outside any probe's programs (maps, the
   * process tracepoints' dependencies) still fail the load.
   */
  private loadSparingFailures(path: string, probes: readonly ProbeDescriptor[], open: ConstructorParameters<typeof BpfObject>[1]): BpfObject {
    const programsOf = (p: ProbeDescriptor): string[] => p.functions.flatMap((f) => [f.entryProgram, f.returnProgram]).filter((x): x is string => !!x);
    const skipped = new Set<string>();
    let obj = new BpfObject(path, open);
    const all = obj.programNames();
    for (;;) {
      if (skipped.size) obj = new BpfObject(path, { ...open, autoload: all.filter((n) => !skipped.has(n)) });
      try {
        obj.load();
        return obj;
      } catch (e) {
        obj.close();
        const text = `${(e as Error).message}\n${(e as { log?: string }).log ?? ''}`;
        const prog = /prog '([^']+)': (?:BPF program load failed|failed to load)/.exec(text)?.[1];
        const owner = prog ? probes.find((p) => programsOf(p).includes(prog)) : undefined;
        if (!prog || !owner || skipped.has(prog)) throw e;
        const reason = `the kernel refused its BPF program ${prog}: ${(e as Error).message.split('\n')[0]}`;
        this.disabledProbes.set(owner.id, reason);
        for (const q of programsOf(owner)) skipped.add(q);
        this.log.error(`probe ${owner.id} disabled`, { reason });
      }
    }
  }

  setBinary(id: number, goidOffset: number): void {
    this.obj.mapUpdate('gt_binaries', u32key(id), encodeBinaryInfo({ goid_offset: goidOffset, flags: BinaryFlags.GT_BINARY_VALID }));
  }

  clearBinary(id: number, probes: readonly ProbeDescriptor[]): void {
    this.obj.mapUpdate('gt_binaries', u32key(id), encodeBinaryInfo({ goid_offset: 0, flags: 0 }));
    for (const p of probes) this.obj.mapUpdate(p.configMap, u32key(id), Buffer.alloc(this.obj.mapInfo(p.configMap).valueSize));
  }

  setProbeConfig(probe: ProbeDescriptor, id: number, config: Buffer): void {
    this.obj.mapUpdate(probe.configMap, u32key(id), config);
  }

  traceProcess(tgid: number): void {
    this.obj.mapUpdate('gt_processes', u32key(tgid), encodeProcessInfo({ flags: ProcessFlags.GT_PROCESS_TRACED, reserved: 0 }));
  }

  untraceProcess(tgid: number): boolean {
    return this.obj.mapDelete('gt_processes', u32key(tgid));
  }

  /** Removes in-flight goroutine state of a process that exited. */
  forgetProcessState(tgid: number): number {
    let removed = 0;
    for (const map of this.stateMaps) {
      for (const k of this.obj.mapKeys(map)) {
        if (k.readUInt32LE(0) === tgid && this.obj.mapDelete(map, k)) removed++;
      }
    }
    return removed;
  }

  /** Maps whose fill the agent reports. */
  trackedMaps(): string[] {
    return ['gt_processes', 'gt_self_conns', ...this.stateMaps];
  }

  /** Sums the per-CPU BPF-side counters. */
  counters(): Record<string, bigint> {
    const out: Record<string, bigint> = {};
    for (const [name, idx] of Object.entries(Counter)) {
      if (name === 'GT_COUNTER_MAX') continue;
      const v = this.obj.mapLookup('gt_counters', u32key(idx));
      let sum = 0n;
      if (v) for (let o = 0; o + 8 <= v.length; o += 8) sum += v.readBigUInt64LE(o);
      out[name.replace('GT_COUNTER_', '').toLowerCase()] = sum;
    }
    return out;
  }

  /** Routes an event type that is not a probe's (process exec/exit) to `fn`. */
  onSystemEvent(type: number, fn: (buf: Buffer, off: number) => void): void {
    this.systemHandlers.set(type, fn);
  }

  /** Attaches the process exec/exit tracepoints; returns false (and says why) when they cannot be. */
  attachProcessEvents(): boolean {
    try {
      this.obj.attachTracepoint('gt_process_exec', 'sched', 'sched_process_exec');
      this.obj.attachTracepoint('gt_process_exit', 'sched', 'sched_process_exit');
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
      this.obj.mapUpdate('gt_self_processes', u32key(tgid), v);
      this.obj.attachTracepoint('gt_self_sock_state', 'sock', 'inet_sock_set_state');
      return true;
    } catch (e) {
      this.log.warn('gotrail cannot recognise its own connections: its requests to traced servers (e.g. OTLP exports to a traced collector) are traced', { error: (e as Error).message });
      return false;
    }
  }

  /** Starts consuming events; `ctx` turns them into spans. */
  start(ctx: EventContext, opts: { intervalMs?: number } = {}): void {
    this.obj.startRingBuffer('gt_events', (batch) => this.dispatch(batch, ctx), { intervalMs: opts.intervalMs ?? 5 });
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
        } else if (!h) this.eventStats.unknownType++;
        else if (len < h.eventSize) {
          this.eventStats.malformed++;
          this.log.once(`event.short.${type}`, 'event shorter than its layout: skipped', { type, len, expected: h.eventSize });
        } else {
          try {
            h.handleEvent(batch, rec, ctx);
          } catch (e) {
            this.eventStats.malformed++;
            this.log.once(`event.decode.${h.id}`, `decoding a ${h.id} event failed`, { error: (e as Error).message });
          }
        }
      } else this.eventStats.malformed++;
      off = (rec + len + 7) & ~7;
    }
  }

  async stop(): Promise<void> {
    await this.obj.stopRingBuffer();
    this.obj.close();
  }
}
