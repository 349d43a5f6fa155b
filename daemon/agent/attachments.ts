/**
 * Attachment per binary, not per process: links shared by every process
 * running that binary and reference-counted; they go when the last such
 * process exits. Binaries are identified by device + inode, so the same file
 * seen through different paths (or mount namespaces) is analysed and
 * attached once.
 *
 * With uprobe_multi links (BpfRuntime.linkPerBinary), a binary has one link
 * over all its sites (one per traced process when attached per process),
 * run by gt_dispatch, which tail-calls each site's probe program: releasing
 * a link waits for kernel grace periods once per link, whatever its number
 * of sites, so fewer links release sooner (bench/detach-cost.ts). A change
 * of the binary's site set (a probe shed or restored, per-process placement)
 * replaces its links: the new ones are attached under the next link
 * generation, the binary's live generation is switched to it, and only then
 * are the old ones closed (see {@link AttachmentManager.relink}). Without
 * uprobe_multi links each (binary, program) has a link set of its own.
 */
import { existsSync, statSync } from 'node:fs';
import { DISPATCH_PROGRAM, type BpfRuntime } from './bpf-runtime.ts';
import type { BpfObject } from '../native/index.ts';
import type { TrapKind } from '../analysis/instructions.ts';
import { CookieFlags, FileFlags } from '../generated/layouts.ts';
import { fileInfoOf, fileKeyOf } from './file-identity.ts';
import { LruCache } from '../util/lru.ts';
import { planBinaryAt, planDisagreements, type BinaryPlan } from './binary-plan.ts';
import type { ProbeDescriptor } from '../probes/types.ts';
import type { Logger } from '../util/log.ts';

export interface BinaryKey {
  dev: bigint;
  ino: bigint;
  /** modification and change times (ns) and size: a file rewritten in place is another binary */
  mtimeNs?: bigint;
  ctimeNs?: bigint;
  size?: bigint;
}

export const keyString = (k: BinaryKey): string => `${k.dev}:${k.ino}:${k.mtimeNs ?? 0n}:${k.ctimeNs ?? 0n}:${k.size ?? 0n}`;
/** The inode alone: what uprobes belong to. */
export const inodeString = (k: BinaryKey): string => `${k.dev}:${k.ino}`;

/**
 * A binary is attached per process while at least as many of its processes
 * are excluded as traced, and at most this many are traced (each traced
 * process then has link sets of its own: attach and detach cost grow with it).
 */
export const PER_PROCESS_MAX = 8;

/**
 * Nice value of the threads that close detached links. Removing breakpoints
 * takes a kernel lock that passes from one closing thread to the next, and
 * beside a busy load every hand-over waited for a CPU: traps gone from 42
 * running processes (1,008 sites) in 38–122 ms instead of 147–460 ms (medians
 * of six runs of bench/detach-cost.ts); on a quiet machine a few ms later. Needs CAP_SYS_NICE; without it the closers run at
 * the agent's own priority.
 */
export const DETACH_NICE = -20;

/** Plans of recently seen binaries: short-lived processes of one binary come and go far more often than binaries change. */
const PLAN_CACHE_MAX = 512;

export interface AttachedBinary {
  id: number;
  key: string;
  binaryKey: BinaryKey;
  /** device:inode: what the kernel's uprobes belong to */
  inode: string;
  /** every probed file offset, for repairing processes that met stale breakpoints */
  sites: number[];
  /** pending detach after the last process exited */
  linger?: NodeJS.Timeout;
  /** path the analysis and the kernel open (/proc/PID/exe of the first process) */
  path: string;
  /** the executable as its first process named it */
  exe: string;
  plan?: BinaryPlan;
  /** why nothing is attached (analysis failed, or no probe applies) */
  error?: string;
  /**
   * Site sets attached (one per probe program and role), with the link
   * (`handle`) that holds them; `pid`: one process's own (per-process
   * placement), else the whole file's. `dispatched`: the link is a
   * gt_dispatch link of the probes' object, shared by every set of its
   * (binary, pid); otherwise it is the set's own link of `program`.
   */
  handles: SiteSet[];
  /** the generation (0–255) of its gt_dispatch links that is live (see gt_binary_info) */
  linkGeneration: number;
  /**
   * Probes attached per traced process (uprobes with a pid filter) rather
   * than per file, because most processes of the binary are excluded: an
   * excluded process then takes no trap at all (see {@link AttachmentManager.place}).
   */
  perProcess?: boolean;
  /** links were attached (registered with the exec hook): detaching clears that, even when shedding or per-process placement left no link */
  wasAttached?: boolean;
  /** detaches of some of its link sets (shed, per-process placement) still in flight */
  partialDetaches?: Set<Promise<void>>;
  failedProbes: Array<{ probe: string; reason: string }>;
  pids: Set<number>;
  /** probes detached to keep the binary within the overhead budget (budget.ts), attached again on restore */
  shed?: Set<string>;
}

/** A set of sites of one probe program attached to a binary (see AttachedBinary.handles). */
export interface SiteSet {
  probe: string;
  program: string;
  handle: number;
  /** number of sites */
  sites: number;
  pid?: number;
  /** file offsets of the sites */
  offsets: readonly number[];
  /** the sites are entries' stack-check branches (see attachCookie) */
  atStackCheck: boolean;
  /** per site, whether the kernel emulates or single-steps its instruction (the plan's, see binary-plan.ts) */
  trapKinds?: readonly TrapKind[];
  dispatched?: boolean;
}

/** A site set not attached yet. */
type SiteSpec = Omit<SiteSet, 'handle'>;

/** The distinct links of these site sets, one site set each. */
function distinctLinks(sets: readonly SiteSet[]): SiteSet[] {
  const seen = new Map<string, SiteSet>();
  for (const h of sets) seen.set(`${h.dispatched ? 'd' : 'p'}${h.handle}`, h);
  return [...seen.values()];
}

/** Links held by a binary's site sets (several sets share a gt_dispatch link). */
export function linkCount(b: AttachedBinary): number {
  return distinctLinks(b.handles).length;
}

export interface AttachStats {
  binariesAnalysed: number;
  attachFailures: number;
  /** Binaries analysed whose offset sources (DWARF, type metadata, database) disagreed, per field. */
  offsetDisagreements: Record<string, number>;
}

/** How long a binary's links stay after its last process exits (ms; `--linger`). */
export const DEFAULT_LINGER_MS = 30_000;

export interface AttachmentOptions {
  /** Binary ids available (the probes' array maps). Default 4096. */
  maxBinaries?: number;
  /**
   * How long a binary's links stay after its last process exited, so that a
   * restarted or short-lived program is traced from its first instruction
   * (the exec hook allows processes of an attached file at once). A file
   * rewritten in place loses its links at once (watcher, exec hook). Default
   * 30 000 ms; 0 detaches with the last process.
   */
  lingerMs?: number;
  /**
   * Whether some process runs this device:inode now. Asked when the linger
   * time ends: processes the exec hook allowed may run before the agent has
   * read their exec events (a busy node), and the links must not go under
   * them. Default: never asked.
   */
  inUse?: (inode: string) => boolean;
}

export class AttachmentManager {
  private readonly byKey = new Map<string, AttachedBinary>();
  /** device:inode → detaches in flight; a new link set on the inode waits for them */
  private readonly detachingInodes = new Map<string, Promise<void>>();
  /**
   * device:inode → sites of link sets detached from it, kept until a new
   * link set is attached there: a process started while they were still
   * registered needs them repaired (see text-repair.ts).
   */
  private readonly retiredSites = new Map<string, Set<number>>();
  private readonly freeIds: number[] = [];
  private nextId = 1;
  readonly stats: AttachStats = { binariesAnalysed: 0, attachFailures: 0, offsetDisagreements: {} };
  private readonly planCache = new LruCache<string, { plan?: BinaryPlan; error?: string; path?: string }>(PLAN_CACHE_MAX);
  private readonly rt: BpfRuntime;
  private readonly probes: readonly ProbeDescriptor[];
  private readonly log: Logger;
  private readonly maxBinaries: number;
  private readonly lingerMs: number;
  private readonly inUse: ((inode: string) => boolean) | undefined;

  constructor(rt: BpfRuntime, probes: readonly ProbeDescriptor[], log: Logger, opts: AttachmentOptions = {}) {
    this.rt = rt;
    this.probes = probes;
    this.log = log;
    this.maxBinaries = opts.maxBinaries ?? 4096;
    this.lingerMs = opts.lingerMs ?? DEFAULT_LINGER_MS;
    this.inUse = opts.inUse;
  }

  /** The link set on this device:inode, whatever content it was made for. */
  byInode(inode: string): AttachedBinary | undefined {
    for (const b of this.byKey.values()) if (b.inode === inode) return b;
    return undefined;
  }

  /**
   * A link set made for other content of the file `key` names (the file was
   * rewritten in place): it must be gone before a process of the new content
   * runs into its breakpoints.
   */
  staleFor(key: BinaryKey): AttachedBinary | undefined {
    const b = this.byInode(inodeString(key));
    return b && b.key !== keyString(key) ? b : undefined;
  }

  /**
   * A binary analysed before (attached now or recently), by identity: the
   * path its first process named and its plan; undefined when never seen or
   * evicted from the plan cache.
   */
  known(key: BinaryKey): { exe: string; plan: BinaryPlan } | undefined {
    const b = this.byKey.get(keyString(key));
    if (b?.plan) return { exe: b.exe, plan: b.plan };
    const e = this.planCache.get(keyString(key));
    return e?.plan ? { exe: e.path ?? e.plan.path, plan: e.plan } : undefined;
  }

  /** Every site a link set on this inode had since the last attach: where stale breakpoints may have been. */
  staleSites(inode: string): number[] {
    const out = new Set(this.retiredSites.get(inode) ?? []);
    for (const s of this.byInode(inode)?.sites ?? []) out.add(s);
    return [...out];
  }

  /** Resolves when no detach is in flight on this inode; undefined when none is. */
  detachInFlight(inode: string): Promise<void> | undefined {
    return this.detachingInodes.get(inode);
  }

  /** Detaches the link set on this inode now (lingering or not) and waits for every detach of it. */
  async detachInode(inode: string): Promise<void> {
    const b = this.byInode(inode);
    if (b) this.detachBinary(b);
    await this.detachingInodes.get(inode);
  }

  binaries(): AttachedBinary[] {
    return [...this.byKey.values()];
  }

  get(key: BinaryKey): AttachedBinary | undefined {
    return this.byKey.get(keyString(key));
  }

  private allocId(): number | undefined {
    const id = this.freeIds.pop() ?? (this.nextId < this.maxBinaries ? this.nextId++ : undefined);
    return id;
  }

  /**
   * Adds a process running the binary at `path` (e.g. /proc/PID/exe) with
   * identity `key`; analyses and attaches on the first process.
   */
  addProcess(pid: number, key: BinaryKey, path: string, exe = path): AttachedBinary {
    const k = keyString(key);
    let b = this.byKey.get(k);
    if (!b) {
      b = this.attachBinary(k, key, path, exe);
      this.byKey.set(k, b);
    }
    if (b.linger) clearTimeout(b.linger);
    b.linger = undefined;
    if (b.perProcess && !b.pids.has(pid)) {
      try {
        this.attachActive(b, `/proc/${pid}/exe`, pid);
      } catch (e) {
        // a process that exited before it was looked at is expected to fail here
        const gone = !existsSync(`/proc/${pid}`);
        if (!gone) this.stats.attachFailures++;
        this.log[gone ? 'debug' : 'warn']('attaching the probes of a process failed: it is not traced', { pid, path: b.exe, reason: (e as Error).message });
      }
    }
    b.pids.add(pid);
    return b;
  }

  /** Drops a process; the binary's links go `lingerMs` after its last process. */
  removeProcess(pid: number, key: BinaryKey): void {
    const k = keyString(key);
    const b = this.byKey.get(k);
    if (!b) return;
    b.pids.delete(pid);
    if (b.perProcess) this.detachHandles(b, (h) => h.pid === pid);
    if (b.pids.size > 0 || b.linger) return;
    if (this.lingerMs <= 0 || (b.handles.length === 0 && !b.shed?.size)) {
      this.detachBinary(b);
      return;
    }
    this.armLinger(b);
  }

  private armLinger(b: AttachedBinary): void {
    b.linger = setTimeout(() => {
      // After the event loop was held up, this timer runs before the
      // process events that queued meanwhile (a new process of the binary
      // may be among them): decide only after those.
      setImmediate(() => {
        b.linger = undefined;
        if (b.pids.size > 0 || this.byKey.get(b.key) !== b) return;
        if (this.inUse?.(b.inode)) {
          this.armLinger(b);
          return;
        }
        this.detachBinary(b);
      });
    }, this.lingerMs);
    b.linger.unref();
  }

  /** Binaries whose links stay without a process, waiting for one. */
  lingering(): AttachedBinary[] {
    return [...this.byKey.values()].filter((b) => b.pids.size === 0 && (b.handles.length > 0 || !!b.shed?.size));
  }

  /** Detaches every binary that has no process left, now. */
  async detachIdle(): Promise<void> {
    for (const b of [...this.byKey.values()]) if (b.pids.size === 0) this.detachBinary(b);
    await this.settled();
  }

  private attachBinary(key: string, binaryKey: BinaryKey, path: string, exe: string): AttachedBinary {
    const b: AttachedBinary = { id: 0, key, binaryKey, inode: inodeString(binaryKey), sites: [], path, exe, handles: [], linkGeneration: 0, failedProbes: [], pids: new Set() };
    // A binary nothing attaches to keeps no entry once its last process
    // exits: a program run again and again (a cron job, a build tool) would
    // log the same verdict per run. Said once per analysis; again at debug.
    const analysedBefore = this.planCache.get(key) !== undefined;
    const { plan, error } = this.planFor(key, path, exe);
    if (!plan) {
      b.error = `analysis failed: ${error ?? 'unknown error'}`;
      this.log[analysedBefore ? 'debug' : 'warn']('not tracing binary', { path: exe, reason: b.error });
      return b;
    }
    b.plan = plan;
    const attachable = plan.probes.filter((p) => p.attachable);
    for (const p of plan.probes.filter((p) => !p.attachable)) b.failedProbes.push({ probe: p.probe.id, reason: p.reason ?? 'unknown' });
    const notApplicable = b.failedProbes.length;
    if (attachable.length === 0 || plan.goidOffset === undefined) {
      b.error = plan.reason ?? 'no probe applies to this binary';
      this.log[analysedBefore ? 'debug' : 'info'](`not tracing binary: none of ${b.failedProbes.length} probes applies (gotrail inspect tells why; --log-level debug logs each reason)`, { path: exe, go: plan.goVersion, ...(plan.reason ? { reason: plan.reason } : {}) });
      this.log.debug('probes not applicable', { path: exe, reasons: b.failedProbes.map((f) => `${f.probe}: ${f.reason}`).join('; ') });
      return b;
    }
    const id = this.allocId();
    if (id === undefined) {
      b.error = `too many binaries traced at once (${this.maxBinaries})`;
      this.log.once('attach.too-many-binaries', 'not tracing binary', { path: exe, reason: b.error });
      return b;
    }
    b.id = id;
    this.rt.setBinary(id, plan.goidOffset, b.linkGeneration);
    if (this.rt.linkPerBinary) this.attachDispatched(b, attachable, path);
    else for (const p of attachable) {
      try {
        this.rt.setProbeConfig(p.probe, id, p.probe.encodeConfig(p.offsets, p.missingOptional, p.moduleVersion));
        this.attachProbe(b, p, path);
        for (const d of p.degraded) this.log.warn(`probe ${p.probe.id} degraded`, { path: exe, reason: d });
      } catch (e) {
        // One failing probe never takes down the others.
        this.stats.attachFailures++;
        const reason = (e as Error).message;
        b.failedProbes.push({ probe: p.probe.id, reason });
        this.log.warn(`probe ${p.probe.id} not attached`, { path: exe, reason });
      }
    }
    // what does not apply is the common case (a binary without gRPC has no gRPC probe): details at debug, a count in the summary below
    const failedToAttach = b.failedProbes.length - notApplicable;
    for (const f of b.failedProbes.slice(0, notApplicable)) this.log.debug(`probe ${f.probe} not attached`, { path: exe, reason: f.reason });
    if (b.handles.length) {
      b.wasAttached = true;
      this.retiredSites.delete(b.inode);
      // from now on the exec hook knows this file: its processes are allowed
      // at exec, and other content behind this inode is held for repair
      try {
        this.rt.setFile(fileKeyOf(binaryKey), fileInfoOf(binaryKey, id, FileFlags.GT_FILE_ALLOW_AT_EXEC));
      } catch (e) {
        this.log.once('file.register-failed', 'registering an attached file with the exec hook failed: its processes are found by their exec event instead', { error: (e as Error).message });
      }
    }
    this.rt.debugNote('attached', { id, key, links: b.handles.length });
    const attached = [...new Set(b.handles.map((h) => h.probe))];
    if (!attached.length) {
      this.log.warn(`not tracing binary: none of ${failedToAttach} applicable probes attached (see the warnings above); ${notApplicable} not applicable`, { path: exe, go: plan.goVersion });
      return b;
    }
    this.log.info(`tracing binary: attached ${attached.length} probe${attached.length === 1 ? '' : 's'} (${attached.join(', ')}); ${notApplicable} not applicable${failedToAttach ? `; ${failedToAttach} failed (see the warnings above)` : ''}`, {
      path: exe, go: plan.goVersion, id,
    });
    this.log.debug('probe links', { path: exe, id, links: b.handles.map((h) => `${h.probe}:${h.program}x${h.sites}`).join(',') });
    return b;
  }

  /** Attaches every site set of one probe of `b` (only in process `pid`, when given), all or none. @throws Error of the failing attach (nothing of the probe stays attached). */
  private attachProbe(b: AttachedBinary, p: BinaryPlan['probes'][number], path: string, pid?: number): void {
    const probeHandles: AttachedBinary['handles'] = [];
    try {
      for (const s of p.sites) {
        const handle = this.rt.objectFor(s.program).attachUprobes(s.program, path, s.offsets, s.offsets.map(() => attachCookie(b.id, s.atStackCheck ?? false)), pid === undefined ? undefined : { pid });
        probeHandles.push({ probe: p.probe.id, program: s.program, handle, sites: s.offsets.length, offsets: s.offsets, atStackCheck: s.atStackCheck ?? false, ...(s.trapKinds ? { trapKinds: s.trapKinds } : {}), ...(pid === undefined ? {} : { pid }) });
      }
    } catch (e) {
      for (const h of probeHandles) this.safeDetach(h);
      throw e;
    }
    this.noteSites(b, probeHandles);
    b.handles.push(...probeHandles);
  }

  /** Adds the offsets of `sets` to `b.sites` (where stale breakpoints may be found later). */
  private noteSites(b: AttachedBinary, sets: readonly SiteSpec[]): void {
    const known = new Set(b.sites);
    for (const s of sets) {
      for (const o of s.offsets) {
        if (known.has(o)) continue;
        known.add(o);
        b.sites.push(o);
      }
    }
  }

  /** The site sets of probe `p` on `b` (only in process `pid`, when given), to attach through gt_dispatch. */
  private specsOf(p: BinaryPlan['probes'][number], pid?: number): SiteSpec[] {
    return p.sites.map((s) => ({
      probe: p.probe.id, program: s.program, sites: s.offsets.length, offsets: s.offsets, atStackCheck: s.atStackCheck ?? false, dispatched: true,
      ...(s.trapKinds ? { trapKinds: s.trapKinds } : {}),
      ...(pid === undefined ? {} : { pid }),
    }));
  }

  /**
   * Attaches `specs` (all of one process `pid`, or of the whole file) as one
   * gt_dispatch link at link generation `generation`; returns their site
   * sets. @throws Error of the failing attach (nothing stays attached).
   */
  private linkSpecs(b: AttachedBinary, specs: readonly SiteSpec[], path: string, pid: number | undefined, generation: number): SiteSet[] {
    const offsets: number[] = [];
    const cookies: bigint[] = [];
    for (const s of specs) {
      const program = this.rt.probeProgramIndex(s.program);
      for (const o of s.offsets) {
        offsets.push(o);
        cookies.push(attachCookie(b.id, s.atStackCheck, { program, generation }));
      }
    }
    const handle = this.rt.obj.attachUprobes(DISPATCH_PROGRAM, path, offsets, cookies, pid === undefined ? undefined : { pid });
    this.noteSites(b, specs);
    return specs.map((s) => ({ ...s, handle }));
  }

  /**
   * A new binary's probes through gt_dispatch: their configs, then one link
   * over all their sites. When that link fails, each probe is tried on a
   * link of its own (under a generation that is never live, closed at once)
   * to find the ones that fail, and the others are attached as one link:
   * one failing probe never takes down the others.
   */
  private attachDispatched(b: AttachedBinary, probes: BinaryPlan['probes'], path: string): void {
    const failed = (p: BinaryPlan['probes'][number], e: unknown): void => {
      this.stats.attachFailures++;
      const reason = (e as Error).message;
      b.failedProbes.push({ probe: p.probe.id, reason });
      this.log.warn(`probe ${p.probe.id} not attached`, { path: b.exe, reason });
    };
    let ok: BinaryPlan['probes'] = [];
    for (const p of probes) {
      try {
        this.rt.setProbeConfig(p.probe, b.id, p.probe.encodeConfig(p.offsets, p.missingOptional, p.moduleVersion));
        ok.push(p);
      } catch (e) {
        failed(p, e);
      }
    }
    if (!ok.length) return;
    try {
      b.handles.push(...this.linkSpecs(b, ok.flatMap((p) => this.specsOf(p)), path, undefined, b.linkGeneration));
    } catch {
      const trial = (b.linkGeneration + 128) & 0xff;
      const good: BinaryPlan['probes'] = [];
      for (const p of ok) {
        try {
          this.closeLinks(b, this.linkSpecs(b, this.specsOf(p), path, undefined, trial));
          good.push(p);
        } catch (e) {
          failed(p, e);
        }
      }
      ok = good;
      if (ok.length) {
        try {
          b.handles.push(...this.linkSpecs(b, ok.flatMap((p) => this.specsOf(p)), path, undefined, b.linkGeneration));
        } catch (e) {
          for (const p of ok) failed(p, e);
          ok = [];
        }
      }
    }
    for (const p of ok) for (const d of p.degraded) this.log.warn(`probe ${p.probe.id} degraded`, { path: b.exe, reason: d });
  }

  /**
   * Replaces every link of `b` by gt_dispatch links for `specs`, one per
   * process they name (per-process placement) or one for the whole file:
   * the new links are attached under the next link generation (their hits
   * are skipped while the old generation is live), the binary's live
   * generation is switched to it in one map write, and then the old links
   * are closed in the background. So no hit of a traced process goes unseen
   * or is seen twice, except one whose trap runs both links' handlers while
   * the generation switches (a few µs): its entry is then counted as
   * no_entry at its return, or its return leaves the entry to the in-flight
   * sweep. A process that exited meanwhile gets no link. All or nothing.
   * @throws Error of the failing attach (`b` is left as it was)
   */
  private relink(b: AttachedBinary, specs: readonly SiteSpec[]): void {
    const generation = (b.linkGeneration + 1) & 0xff;
    const byPid = new Map<number | undefined, SiteSpec[]>();
    for (const s of specs) byPid.set(s.pid, [...(byPid.get(s.pid) ?? []), s]);
    const made: SiteSet[] = [];
    try {
      for (const [pid, group] of byPid) {
        const path = this.livePath(b, pid === undefined ? b.pids : [pid]);
        if (!path) {
          if (pid !== undefined) continue; // exited meanwhile
          throw new Error('no running process of the binary shows the content it was planned for');
        }
        made.push(...this.linkSpecs(b, group, path, pid, generation));
      }
    } catch (e) {
      this.closeLinks(b, made);
      throw e;
    }
    const old = b.handles;
    b.linkGeneration = generation;
    try {
      this.rt.setBinary(b.id, b.plan?.goidOffset ?? 0, generation);
    } catch (e) {
      b.linkGeneration = (generation + 255) & 0xff;
      this.closeLinks(b, made);
      throw e;
    }
    b.handles = made;
    this.closeLinks(b, old);
  }

  /**
   * Detaches these probes of a binary (the overhead budget): their traps
   * stop at once, their spans are no longer made. The binary stays attached
   * (its other probes, its id and its facts in BPF maps), and
   * {@link restoreProbes} attaches them again. Returns the probes detached.
   */
  shedProbes(b: AttachedBinary, probes: readonly string[]): string[] {
    const want = new Set(probes);
    let gone: SiteSet[];
    try {
      gone = this.detachHandles(b, (h) => want.has(h.probe));
    } catch (e) {
      this.log.warn('shedding probes failed: they stay attached', { path: b.exe, probes: probes.join(','), reason: (e as Error).message });
      return [];
    }
    if (!gone.length) return [];
    const shed = [...new Set(gone.map((h) => h.probe))];
    b.shed ??= new Set();
    for (const p of shed) b.shed.add(p);
    this.rt.debugNote('shed', { id: b.id, key: b.key, probes: shed.join(',') });
    return shed;
  }

  /**
   * Attaches shed probes of a binary again, through a running process's
   * /proc/PID/exe whose file still has the content the plan was made for
   * (never old offsets into new code). Returns the probes attached; a probe
   * that fails is logged and stays shed.
   */
  restoreProbes(b: AttachedBinary, probes: readonly string[]): string[] {
    if (!b.plan || !b.shed?.size || this.byKey.get(b.key) !== b) return [];
    const path = this.livePath(b);
    if (!path) {
      this.log.once(`restore.no-file.${b.key}`, 'shed probes not restored: no running process of the binary shows its content', { path: b.exe });
      return [];
    }
    if (this.rt.linkPerBinary) return this.restoreDispatched(b, probes);
    const out: string[] = [];
    for (const id of probes) {
      if (!b.shed.has(id)) continue;
      const p = b.plan.probes.find((x) => x.probe.id === id);
      if (!p) continue;
      const done: number[] = [];
      try {
        if (b.perProcess) {
          for (const pid of b.pids) {
            const own = this.livePath(b, [pid]);
            if (!own) continue; // exited meanwhile
            const before = b.handles.length;
            this.attachProbe(b, p, own, pid);
            done.push(...b.handles.slice(before).map((h) => h.handle));
          }
        } else {
          this.attachProbe(b, p, path);
        }
        b.shed.delete(id);
        out.push(id);
      } catch (e) {
        const mine = new Set(done);
        this.detachHandles(b, (h) => mine.has(h.handle));
        this.stats.attachFailures++;
        this.log.warn(`probe ${id} not restored`, { path: b.exe, reason: (e as Error).message });
      }
    }
    this.rt.debugNote('restored', { id: b.id, key: b.key, probes: out.join(',') });
    return out;
  }

  /**
   * restoreProbes through gt_dispatch: the binary's links are replaced by
   * links that also hold the restored probes' sites (all at once; when that
   * fails, one probe after another, a failing one staying shed).
   */
  private restoreDispatched(b: AttachedBinary, probes: readonly string[]): string[] {
    const plan = b.plan;
    const shed = b.shed;
    if (!plan || !shed) return [];
    const specsFor = (ids: readonly string[]): SiteSpec[] => ids.flatMap((id) => {
      const p = plan.probes.find((x) => x.probe.id === id);
      if (!p) return [];
      return b.perProcess ? [...b.pids].flatMap((pid) => this.specsOf(p, pid)) : this.specsOf(p);
    });
    const current = (): SiteSpec[] => b.handles.map(({ handle: _, ...spec }) => spec);
    const wanted = probes.filter((id) => shed.has(id) && plan.probes.some((x) => x.probe.id === id));
    if (!wanted.length) return [];
    const out: string[] = [];
    try {
      this.relink(b, [...current(), ...specsFor(wanted)]);
      out.push(...wanted);
    } catch {
      for (const id of wanted) {
        try {
          this.relink(b, [...current(), ...specsFor([id])]);
          out.push(id);
        } catch (e) {
          this.stats.attachFailures++;
          this.log.warn(`probe ${id} not restored`, { path: b.exe, reason: (e as Error).message });
        }
      }
    }
    for (const id of out) shed.delete(id);
    this.rt.debugNote('restored', { id: b.id, key: b.key, probes: out.join(',') });
    return out;
  }

  /** The object holding the link of site set `h`. */
  private linkObject(h: SiteSet): BpfObject {
    return h.dispatched ? this.rt.obj : this.rt.objectFor(h.program);
  }

  /** Closes the links of these site sets of `b` in the background (tracked until the kernel has released them). */
  private closeLinks(b: AttachedBinary, sets: readonly SiteSet[]): void {
    if (!sets.length) return;
    const byObject = new Map<BpfObject, number[]>();
    for (const h of distinctLinks(sets)) {
      const o = this.linkObject(h);
      byObject.set(o, [...(byObject.get(o) ?? []), h.handle]);
    }
    const done: Promise<void> = Promise.all([...byObject].map(([o, hs]) => this.detachLinks(o, hs)))
      .then(() => undefined)
      .catch((e: Error) => this.log.once('detach.failed', 'detaching a probe failed', { error: e.message }))
      .finally(() => {
        this.detaching.delete(done);
        b.partialDetaches?.delete(done);
      });
    this.detaching.add(done);
    (b.partialDetaches ??= new Set()).add(done);
  }

  /** Detaches link sets of one object; resolves once the kernel has released them. */
  private async detachLinks(o: BpfObject, handles: number[]): Promise<void> {
    const { reniced } = await o.detachAsync(handles, { nice: DETACH_NICE });
    if (!reniced && !this.detachNiceRefused) {
      this.detachNiceRefused = true;
      this.log.info('detached links are closed at the agent\'s own priority (no CAP_SYS_NICE): beside a busy load their breakpoints take longer to go');
    }
  }

  private detachNiceRefused = false;

  /**
   * Takes these site sets of `b` off it and detaches them in the background;
   * returns them. A gt_dispatch link that holds other sets too is replaced
   * (see {@link relink}). @throws Error when that replacement fails (`b` is
   * left as it was)
   */
  private detachHandles(b: AttachedBinary, which: (h: SiteSet) => boolean): SiteSet[] {
    const gone = b.handles.filter(which);
    if (!gone.length) return [];
    const goneLinks = new Set(gone.filter((h) => h.dispatched).map((h) => h.handle));
    if (b.handles.some((h) => h.dispatched && goneLinks.has(h.handle) && !which(h))) {
      this.relink(b, b.handles.filter((h) => !which(h)).map(({ handle: _, ...spec }) => spec));
      return gone;
    }
    b.handles = b.handles.filter((h) => !which(h));
    this.closeLinks(b, gone);
    return gone;
  }

  /** A path to `b`'s file with the content its plan was made for (/proc/PID/exe of one of its processes), never other content behind the inode. */
  private livePath(b: AttachedBinary, pids: Iterable<number> = b.pids): string | undefined {
    for (const pid of pids) {
      const p = `/proc/${pid}/exe`;
      try {
        const st = statSync(p, { bigint: true });
        if (keyString({ dev: st.dev, ino: st.ino, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, size: st.size }) === b.key) return p;
      } catch {
        /* exited meanwhile */
      }
    }
    return undefined;
  }

  /** The probes of `b` that are to be attached now: attachable, not failed, not shed. */
  private activeProbes(b: AttachedBinary): BinaryPlan['probes'] {
    const failed = new Set(b.failedProbes.map((f) => f.probe));
    return (b.plan?.probes ?? []).filter((p) => p.attachable && !failed.has(p.probe.id) && !b.shed?.has(p.probe.id));
  }

  /** Attaches every active probe of `b`, for the whole file or (pid) one process; all or none. @throws Error of the failing attach. */
  private attachActive(b: AttachedBinary, path: string, pid?: number): void {
    if (this.rt.linkPerBinary) {
      const specs = this.activeProbes(b).flatMap((p) => this.specsOf(p, pid));
      if (specs.length) b.handles.push(...this.linkSpecs(b, specs, path, pid, b.linkGeneration));
      return;
    }
    const before = b.handles.length;
    try {
      for (const p of this.activeProbes(b)) this.attachProbe(b, p, path, pid);
    } catch (e) {
      const mine = new Set(b.handles.slice(before).map((h) => h.handle));
      this.detachHandles(b, (h) => mine.has(h.handle));
      throw e;
    }
  }

  /**
   * Places a binary's links by how many of its processes the rules exclude
   * (`excluded`; `b.pids` are the traced ones). Uprobes belong to the file,
   * so a per-file link makes every process of it take the trap, an excluded
   * one too (it is only skipped in BPF). While at least as many are excluded
   * as traced (and at most {@link PER_PROCESS_MAX} are traced), the probes
   * are attached per traced process instead, with a pid filter: the kernel
   * then puts no breakpoint into an excluded process at all. Switching adds
   * the new links before it removes the old ones, so no call of a traced
   * process goes unseen (one in flight during the switch may be seen twice:
   * its second return counts as `no_entry`). A failed switch leaves things
   * as they were. Returns whether the placement changed.
   */
  place(key: string, excluded: number): boolean {
    const b = this.byKey.get(key);
    if (!b?.plan || !b.id || b.pids.size === 0) return false;
    const perProcess = b.pids.size <= PER_PROCESS_MAX && excluded >= b.pids.size;
    if (perProcess === !!b.perProcess) return false;
    if (this.rt.linkPerBinary) {
      const active = this.activeProbes(b);
      try {
        this.relink(b, perProcess ? [...b.pids].flatMap((pid) => active.flatMap((p) => this.specsOf(p, pid))) : active.flatMap((p) => this.specsOf(p)));
      } catch (e) {
        this.log.warn('changing how a binary is attached failed: it stays as it was', { path: b.exe, perProcess: !perProcess, reason: (e as Error).message });
        return false;
      }
      return this.placed(b, perProcess, excluded);
    }
    const old = new Set(b.handles.map((h) => h.handle));
    const before = b.handles.length;
    try {
      if (perProcess) {
        for (const pid of [...b.pids]) {
          const path = this.livePath(b, [pid]);
          if (path) this.attachActive(b, path, pid);
        }
      } else {
        const path = this.livePath(b);
        if (!path) return false;
        this.attachActive(b, path);
      }
    } catch (e) {
      const mine = new Set(b.handles.slice(before).map((h) => h.handle));
      this.detachHandles(b, (h) => mine.has(h.handle));
      this.log.warn('changing how a binary is attached failed: it stays as it was', { path: b.exe, perProcess: !perProcess, reason: (e as Error).message });
      return false;
    }
    this.detachHandles(b, (h) => old.has(h.handle));
    return this.placed(b, perProcess, excluded);
  }

  private placed(b: AttachedBinary, perProcess: boolean, excluded: number): true {
    b.perProcess = perProcess;
    this.rt.debugNote('placed', { id: b.id, key: b.key, perProcess: String(perProcess) });
    this.log.info(perProcess ? 'attaching per traced process: most processes of this binary are excluded, and per-file probes would make them take the trap'
      : 'attaching per file again: most processes of this binary are traced', { path: b.exe, traced: b.pids.size, excluded });
    return true;
  }

  /** Recently seen Go binaries on which nothing attaches, with the reasons. */
  notTraced(): Array<{ path: string; goVersion?: string; reason: string; probes: Array<{ probe: string; reason: string }> }> {
    const out: ReturnType<AttachmentManager['notTraced']> = [];
    for (const e of this.planCache.values()) {
      if (e.error) out.push({ path: e.path ?? '?', reason: e.error, probes: [] });
      else if (e.plan && !e.plan.probes.some((p) => p.attachable)) {
        out.push({
          path: e.path ?? e.plan.path, goVersion: e.plan.goVersion, reason: e.plan.reason ?? 'no probe attaches',
          probes: e.plan.probes.map((p) => ({ probe: p.probe.id, reason: p.reason ?? '' })),
        });
      }
    }
    return out;
  }

  /** Per probe: recently seen Go binaries (the plan cache) on which it cannot attach. */
  unavailableByProbe(): Record<string, number> {
    const out: Record<string, number> = Object.fromEntries(this.probes.map((p) => [p.id, 0]));
    for (const e of this.planCache.values()) {
      for (const p of e.plan?.probes ?? []) if (!p.attachable) out[p.probe.id] = (out[p.probe.id] ?? 0) + 1;
    }
    return out;
  }

  private planFor(key: string, path: string, exe: string): { plan?: BinaryPlan; error?: string } {
    const hit = this.planCache.get(key);
    if (hit) return hit;
    this.stats.binariesAnalysed++;
    const r = planBinaryAt(path, this.probes);
    const entry = { plan: r.plan, error: r.error?.message, path: exe };
    // Two sources of one binary giving different offsets is a bug in one of
    // them (or a layout change they read differently): say so, loudly.
    for (const d of r.plan ? planDisagreements(r.plan) : []) {
      this.stats.offsetDisagreements[d.field] = (this.stats.offsetDisagreements[d.field] ?? 0) + 1;
      const says = Object.entries(d.offsets).map(([k, v]) => `${k} ${v}`).join(', ');
      this.log.warn('offset sources disagree', { path: exe, field: d.field, offsets: says, using: d.chosen });
    }
    // A failure is a fact about the binary only if its process outlived the
    // analysis: a process that exits mid-read leaves a truncated or vanished
    // file behind, and the next process of the binary must be analysed anew.
    if (r.plan || existsSync(path)) this.planCache.set(key, entry);
    return entry;
  }

  private safeDetach(h: SiteSet): void {
    try {
      this.linkObject(h).detach(h.handle);
    } catch (e) {
      this.log.once('detach.failed', 'detaching a probe failed', { error: (e as Error).message });
    }
  }

  /** Detaches in flight: resolved once the kernel has released the links. */
  private readonly detaching = new Set<Promise<void>>();

  /**
   * Releases a binary whose last process exited. The links go on a pool
   * thread (detaching takes tens of milliseconds per link set, which would
   * stall discovery of the next process); the binary id is reused only
   * once they are gone.
   */
  private detachBinary(b: AttachedBinary): void {
    if (b.linger) clearTimeout(b.linger);
    b.linger = undefined;
    const links = distinctLinks(b.handles);
    const wasAttached = links.length > 0 || !!b.wasAttached;
    // link handles are per object (the probes' and any loaded separately)
    const byObject = new Map<BpfObject, number[]>();
    for (const h of links) {
      const o = this.linkObject(h);
      byObject.set(o, [...(byObject.get(o) ?? []), h.handle]);
    }
    this.rt.debugNote('detaching', { id: b.id, key: b.key, links: links.length });
    b.handles = [];
    if (this.byKey.get(b.key) === b) this.byKey.delete(b.key);
    if (wasAttached) {
      const r = this.retiredSites.get(b.inode) ?? new Set<number>();
      for (const s of b.sites) r.add(s);
      this.retiredSites.set(b.inode, r);
    }
    const id = b.id;
    if (id) {
      try {
        this.rt.releaseBinary(id);
      } catch (e) {
        this.log.once('binary.release-failed', 'marking a binary released failed', { error: (e as Error).message });
      }
    }
    const previous = this.detachingInodes.get(b.inode);
    const done: Promise<void> = Promise.all([...byObject].map(([o, hs]) => this.detachLinks(o, hs)))
      .catch((e: Error) => this.log.once('detach.failed', 'detaching a probe failed', { error: e.message }))
      .then(async () => {
        await previous;
        // the binary's id is reused only once no link of it can fire
        await Promise.all([...(b.partialDetaches ?? [])]);
        // the exec hook forgets the file only once its breakpoints are gone,
        // so that other content behind the inode is held until then
        if (wasAttached) {
          try {
            this.rt.clearFile(fileKeyOf(b.binaryKey), id);
          } catch (e) {
            this.log.once('file.clear-failed', 'clearing an attached file failed', { error: (e as Error).message });
          }
        }
        if (!id) return;
        try {
          this.rt.clearBinary(id, this.probes);
        } catch (e) {
          this.log.once('binary.clear-failed', 'clearing binary facts failed', { error: (e as Error).message });
        }
        this.freeIds.push(id);
      })
      .finally(() => {
        this.detaching.delete(done);
        if (this.detachingInodes.get(b.inode) === done) this.detachingInodes.delete(b.inode);
      });
    this.detaching.add(done);
    this.detachingInodes.set(b.inode, done);
    this.log.debug('binary released', { path: b.exe });
  }

  /** Resolves when every detach started so far has finished. */
  async settled(): Promise<void> {
    while (this.detaching.size) await Promise.all([...this.detaching]);
  }

  /** Every attached file's path (as its first process named it) and inode, for the file watcher. */
  watchedFiles(): Array<{ path: string; inode: string }> {
    return [...this.byKey.values()].filter((b) => b.handles.length > 0).map((b) => ({ path: b.exe, inode: b.inode }));
  }

  async detachAll(): Promise<void> {
    for (const b of [...this.byKey.values()]) this.detachBinary(b);
    await this.settled();
  }
}

/**
 * A site's attach cookie: the binary id, and in the upper half the flags
 * `gt_probe_enter` reads (`CookieFlags`): whether the site is a stack
 * check's branch, whose hits that grow the stack are skipped. For a site of
 * a gt_dispatch link, `dispatch` adds the link's generation (0–255) and the
 * index of the site's probe program in gt_probe_programs (0–65535).
 */
export function attachCookie(binaryId: number, atStackCheck: boolean, dispatch?: { program: number; generation: number }): bigint {
  const flags = atStackCheck ? CookieFlags.GT_COOKIE_AT_STACK_CHECK : 0;
  let cookie = BigInt(binaryId) | (BigInt(flags) << BigInt(CookieFlags.GT_COOKIE_FLAGS_SHIFT));
  if (dispatch) {
    cookie |= (BigInt(dispatch.generation & 0xff) << BigInt(CookieFlags.GT_COOKIE_GENERATION_SHIFT)) | (BigInt(dispatch.program & 0xffff) << BigInt(CookieFlags.GT_COOKIE_PROGRAM_SHIFT));
  }
  return cookie;
}
