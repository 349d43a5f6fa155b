/**
 * The agent: loads the probes once, finds Go processes, attaches per binary,
 * turns events into spans and exports them. One instance per node.
 */
import { matchesGlob } from 'node:path';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { BpfRuntime, DEFAULT_CONSUME_INTERVAL_MS, type MapSizes } from './bpf-runtime.ts';
import { AttachmentManager } from './attachments.ts';
import { GoProcessProbe, listPids, releaseProcessInfo, type ProcessInfo, type UnresolvedReason } from './discovery.ts';
import { LruCache } from '../util/lru.ts';
import { inodeString, keyString, linkCount, type BinaryKey } from './attachments.ts';
import { binaryKeyOf, fileKeyOf } from './file-identity.ts';
import { repairStaleSites } from './text-repair.ts';
import { BinaryWatcher } from './binary-watcher.ts';
import { decide, usesKubernetes, type SelectionRules } from './selection.ts';
import type { MetricsSnapshot, MetricsSource } from './metrics.ts';
import { BudgetEnforcer, type BudgetSettings, type ShedCount } from './budget.ts';
import { OverheadEstimator, calibrateUprobeHitCost, hitSiteKinds, type GoneOverhead, type HitCostCalibration, type ProcessOverhead } from './overhead.ts';
import type { TrapKind } from '../analysis/instructions.ts';
import { SpanBatcher, type BatcherOptions } from '../export/batcher.ts';
import { MonotonicClock } from '../spans/clock.ts';
import {
  BpfMaps, EventType, ExecFlags, PROCESS_EXEC_ARGS_SIZE,
  decodeProcessEvent, decodeProcessExecArgs, type ProcessEvent,
} from '../generated/layouts.ts';
import { processResource } from '../spans/resource.ts';
import { inClusterConnection, PodWatcher, type KubernetesConnection, type PodWatcherOptions } from '../metadata/kubernetes.ts';
import { ProcessMetadata } from '../metadata/process.ts';
import { probes as allProbes } from '../probes/registry.ts';
import type { EventContext, ProbeDescriptor } from '../probes/types.ts';
import { HttpRouteBound } from '../spans/http-route.ts';
import { describeSampler, encodeBpfSampler } from '../export/sampler.ts';
import type { SamplingConfig } from '../config/resolve.ts';
import { HeaderPropagation, type PropagationOptions } from './propagation.ts';
import type { Logger } from '../util/log.ts';
import { WriteUserInjection, type WriteUserOptions, type WriteUserStatus } from './write-user.ts';
import { MemoryTrim } from './memory-trim.ts';
import { releaseInstructionDecoder } from '../analysis/instructions.ts';

/** enum bpf_map_type (include/uapi/linux/bpf.h): maps that evict their least recently used entries when full. */
const BPF_MAP_TYPE_LRU_HASH = 9;
const BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;

/** The /proc reconciliation scan's interval when exec/exit events arrive (ms; `--scan-interval`). */
export const DEFAULT_SCAN_INTERVAL_MS = 5000;
/** The scan's interval without exec/exit events, when it is the only way to see new processes (ms). */
const SCAN_INTERVAL_WITHOUT_EVENTS_MS = 1000;

export interface AgentOptions {
  /** Header injection with bpf_probe_write_user where the kernel allows it (see write-user.ts). Default: on. */
  writeUser?: WriteUserOptions;
  /** Which processes to trace. Default: every Go process except gotrail. */
  selection?: SelectionRules;
  /** Where spans go. */
  exporter: SpanExporter;
  batcher?: BatcherOptions;
  /** Interval of the /proc reconciliation scan, the safety net behind exec/exit events. Default {@link DEFAULT_SCAN_INTERVAL_MS} (1000 ms when exec events are unavailable). */
  scanIntervalMs?: number;
  /** Probe-event consume interval in ms: the longest a probe event waits in the ring buffer before it is handed to the span pipeline (a data-age deadline). Default {@link DEFAULT_CONSUME_INTERVAL_MS}. */
  consumeIntervalMs?: number;
  /** Probes to load. Default: all registered. */
  probes?: readonly ProbeDescriptor[];
  mapSizes?: MapSizes;
  /**
   * In-flight call state unchanged for this long (ms) is removed from an
   * in-flight map at least half full: a call whose return never came (a
   * goroutine that panicked through the traced function, or blocks forever).
   * Each removal is a lost span, counted in
   * gotrail_events_lost_total{reason="inflight_expired"}. Default 600000 (10 minutes).
   */
  inflightMaxAgeMs?: number;
  /**
   * Attach with uprobe_multi links (true; see linkPerBinary) or one
   * perf-event uprobe per site (false), as kernels before 6.6 require.
   * Default: uprobe_multi where the kernel has it.
   */
  uprobeMulti?: boolean;
  /**
   * With uprobe_multi links: one link per binary (and per traced process
   * when attached per process) over all its sites, run by a dispatcher that
   * tail-calls each site's probe program (true), or one link per (binary,
   * program) (false). Fewer links are released sooner on detach (the kernel
   * waits for its grace periods once per link). Default true.
   */
  linkPerBinary?: boolean;
  /**
   * How long a binary's links stay after its last process exited (ms), so
   * that restarted and short-lived programs are traced from their first
   * instruction. Default 30 000; 0 detaches with the last process.
   */
  lingerMs?: number;
  /**
   * Debugging aid: record every probe hit and the agent's steps into this
   * file (JSON lines, see ProbeHitLog). Default: off.
   */
  debugProbeHitsPath?: string;
  /** Database spans carry db.query.text, sanitised (`--db-query-text`). Default false. */
  dbQueryText?: boolean;
  /**
   * Overhead budget (`--overhead-budget`): probes of a binary whose traced
   * processes spend more than this fraction of their CPU on tracing are shed
   * (budget.ts). Default: off.
   */
  overheadBudget?: BudgetSettings;
  /** Kafka spans carry messaging.kafka.message.key (`--kafka-message-key`). Default false. */
  kafkaMessageKey?: boolean;
  /** Compiled probe object. Default: build/probes/gotrail.bpf.o. */
  bpfObjectPath?: string;
  /**
   * Distinct `http.route` values reported per service; further new routes
   * are left out of their spans and counted. Default 1000 (DEFAULT_MAX_HTTP_ROUTES).
   */
  maxHttpRoutes?: number;
  /**
   * Requests this process sends to traced servers make no span (its OTLP
   * exports to a traced collector would otherwise each make a span, exported
   * in turn, forever). Default true. Turn it off only where the process
   * embedding the agent is also the traced programs' client (the demo,
   * tests): its requests are then traced like anyone's.
   */
  skipOwnRequests?: boolean;
  /** Called for every span before export (tests, demo). */
  onSpan?: (span: ReadableSpan) => void;
  /**
   * The head sampler (OTEL_TRACES_SAMPLER), decided by the probes at each
   * trace's root span. Default: parentbased_always_on.
   */
  sampling?: SamplingConfig;
  /**
   * Kubernetes pod metadata (resource attributes, namespace and label rules).
   * Default: watched when running in a cluster (service-account token and
   * `KUBERNETES_SERVICE_HOST`), else nothing is attempted. `false`: never.
   */
  kubernetes?: false | (Omit<PodWatcherOptions, 'connection'> & { connection?: KubernetesConnection });
  /** traceparent injection into outgoing requests and node-local linking (see PropagationOptions). Default: both on. */
  propagation?: PropagationOptions;
}

interface TracedProcess {
  info: ProcessInfo;
  resource: Resource;
  /** CLOCK_MONOTONIC ns just before /proc/PID/exe was read: the image judged is that of every exec before */
  judgedAtNs: bigint;
}

/** AgentOptions.inflightMaxAgeMs's default. */
const DEFAULT_INFLIGHT_MAX_AGE_MS = 600_000;
/** How long the resource of an exited process is kept for its last events. */
const EXITED_GRACE_MS = 10_000;
/** What the exec hook learnt of a process, for when it is gone before the agent looks. */
interface ExecFacts {
  key: BinaryKey;
  startTime: string;
  comm: string;
  /** the path of the file executed, as execve was given it (relative to the process's working directory when not absolute) */
  filename: string;
  /** the parent at exec (0 when unknown) */
  ppid: number;
  /** the exec hook allowed it: it ran an attached file, whose events are on their way */
  allowed: boolean;
}

/** NUL-separated strings of a copied area; a cut last string is dropped when `total` says the area was cut. */
function nulStrings(buf: Buffer, len: number, total: number): string[] {
  const parts = buf.subarray(0, len).toString('utf8').split('\0');
  if (parts.at(-1) === '' || len < total) parts.pop();
  return parts;
}

/**
 * The longest a process stopped at exec (its binary rewritten in place) waits
 * for the agent: past this it is continued whatever the agent is doing.
 */
const HOLD_LIMIT_MS = 5000;

/** How long start waits for the first pod list, so that the first processes are named at once. */
const KUBERNETES_SYNC_WAIT_MS = 3000;
/** How long a flush waits for the probe events it asked the consumer for (see drainRingBuffer), ms. */
const DRAIN_WAIT_MS = 60;

export class Agent implements MetricsSource {
  readonly log: Logger;
  private readonly opts: AgentOptions;
  private readonly probes: readonly ProbeDescriptor[];
  private rt: BpfRuntime | undefined;
  private propagation: HeaderPropagation | undefined;
  private attach: AttachmentManager | undefined;
  private batcher: SpanBatcher | undefined;
  private readonly discovery = new GoProcessProbe();
  private readonly clock = new MonotonicClock();
  /** pid → traced process */
  private readonly traced = new Map<number, TracedProcess>();
  /** pid → start time of processes seen and not traced (non-Go, excluded) */
  private readonly ignored = new Map<number, string>();
  private readonly exited = new Map<number, { resource: Resource; at: number }>();
  /**
   * pid → start time of processes whose exit the agent has read, traced or
   * not (kept as long as {@link exited}): a process judged again after that
   * (a late look from its exec event, or once a detach in flight is done)
   * is not traced a second time.
   */
  private readonly exitedStarts = new Map<number, { startTime: string; at: number }>();
  /** pid → Go processes the selection rules leave out, with the rule's reason (for /status) */
  private readonly notSelected = new Map<number, { exe: string; reason: string; key?: string }>();
  /**
   * pid → selected Go processes left untraced because the allow-list
   * (gt_processes, `--max-processes`) was full: each scan tries them again
   * while fewer processes are traced than it holds.
   */
  private readonly allowListFull = new Map<number, { startTime: string; exe: string }>();
  /** the allow-list's being full was logged, and no process has waited since it had room */
  private allowListFullSaid = false;
  /** pid → start time of Go processes whose selection waits for their pod */
  private readonly pending = new Map<number, string>();
  private readonly meta = new ProcessMetadata();
  private k8s: PodWatcher | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private readonly problems = new Map<string, number>();
  private readonly routes: HttpRouteBound;
  private started = false;
  /** pids whose tracing waits for a stale link set to go (and, when held, for SIGCONT) */
  private readonly waiting = new Set<number>();
  /** pids the exec hook stopped (SIGSTOP) and the agent has not continued yet */
  private readonly held = new Set<number>();
  private watcher: BinaryWatcher | undefined;
  private overhead: OverheadEstimator | undefined;
  private calibrating: Promise<HitCostCalibration | undefined> | undefined;
  private budget: BudgetEnforcer | undefined;
  private budgetTimer: NodeJS.Timeout | undefined;
  /** Cumulative counts since start. */
  readonly totals = {
    processesTraced: 0, processesExited: 0, execEvents: 0, exitEvents: 0,
    /** execs of an attached inode whose content changed (rewritten in place) */
    staleExecs: 0,
    /** processes stopped at exec until stale links were gone */
    heldProcesses: 0,
    /** code bytes of such processes put back to the file's content */
    repairedBytes: 0,
    /** times probe events stopped being taken from the kernel because the export queue was full */
    backpressurePauses: 0,
    /** processes that exited before they were looked at whose executable could not be found, by reason */
    unexamined: { cwd_gone: 0, not_found: 0, no_path: 0 } satisfies Record<UnresolvedReason, number>,
    /** selected Go processes left untraced, by reason (allow_list_full: counted once per process, however often it is tried again) */
    untraced: { allow_list_full: 0 },
  };
  /** paths of unexamined processes said in the log already (recent ones) */
  private readonly unexaminedSaid = new LruCache<string, boolean>(1024);
  /** the first /proc scan has run (readiness) */
  private initialScanDone = false;
  private readonly memoryTrim: MemoryTrim;

  constructor(log: Logger, opts: AgentOptions) {
    this.log = log;
    this.memoryTrim = new MemoryTrim({
      release: [releaseInstructionDecoder],
      onPageOut: (r) => log.debug('idle: file pages handed back to the kernel', { ranges: r.advised, ...(r.errno ? { errno: r.errno } : {}) }),
    });
    this.opts = opts;
    this.probes = opts.probes ?? allProbes;
    this.routes = new HttpRouteBound(opts.maxHttpRoutes);
    this.meta.onRefresh((pids) => this.podsChanged(pids));
  }

  async start(): Promise<void> {
    this.rt = new BpfRuntime(this.log, this.probes, { objectPath: this.opts.bpfObjectPath, mapSizes: this.opts.mapSizes, uprobeMulti: this.opts.uprobeMulti, linkPerBinary: this.opts.linkPerBinary });
    if (this.opts.sampling) this.rt.setSampler(encodeBpfSampler(this.opts.sampling));
    if (this.opts.debugProbeHitsPath) {
      this.rt.enableProbeHitLog(this.opts.debugProbeHitsPath);
      this.log.warn('recording every probe hit (a debugging aid that slows every traced request)', { file: this.opts.debugProbeHitsPath });
    }
    const f = this.rt.features;
    this.log.info('probes loaded', { uprobeMulti: f.uprobeMulti, linkPerBinary: this.rt.linkPerBinary, lockdown: f.lockdown });
    // after the probes' object, whose maps it shares; a refusal is reported, never thrown
    this.writeUser = new WriteUserInjection(this.rt, this.log, { ...this.opts.writeUser, enabled: this.opts.propagation?.inject !== false && this.opts.writeUser?.enabled !== false });
    const usable = [...this.probes.filter((p) => !this.rt!.disabledProbes.has(p.id)), ...(this.writeUser.probe ? [this.writeUser.probe] : [])];
    this.attach = new AttachmentManager(this.rt, usable, this.log, { lingerMs: this.opts.lingerMs, inUse: (inode) => this.discovery.anyProcessRuns(inode) });
    this.watcher = new BinaryWatcher(this.log, (inode) => this.binaryChanged(inode));
    this.batcher = new SpanBatcher(this.opts.exporter, this.log, this.opts.batcher);
    this.batcher.onSpace(() => this.exportQueueHasSpace());
    this.rt.onSystemEvent(EventType.GT_EVENT_PROCESS_EXEC, (buf, off) => {
      this.totals.execEvents++;
      this.memoryTrim.housekeeping();
      const ev = decodeProcessEvent(buf, off);
      let seed: { cmdline?: string; env?: Map<string, string> } | undefined;
      if ((ev.flags & ExecFlags.GT_EXEC_ARGS) && buf.length >= off + PROCESS_EXEC_ARGS_SIZE) {
        const a = decodeProcessExecArgs(buf, off);
        const env = new Map<string, string>();
        for (const kv of nulStrings(a.env, ev.env_len, ev.env_total)) {
          const i = kv.indexOf('=');
          if (i > 0) env.set(kv.slice(0, i), kv.slice(i + 1));
        }
        seed = { cmdline: nulStrings(a.args, ev.args_len, ev.args_len).join(' ') || undefined, env };
      }
      this.onExec(ev, seed);
    });
    this.rt.onSystemEvent(EventType.GT_EVENT_PROCESS_EXIT, (buf, off) => {
      this.totals.exitEvents++;
      this.memoryTrim.housekeeping();
      const ev = decodeProcessEvent(buf, off);
      // /proc/PID/stat's start time is in clock ticks (USER_HZ = 100)
      this.exitedStarts.set(ev.hdr.tgid, { startTime: String(ev.start_boottime / 10_000_000n), at: Date.now() });
      this.processExited(ev.hdr.tgid);
    });
    const events = this.rt.attachProcessEvents();
    this.propagation = new HeaderPropagation(this.rt.obj, this.opts.propagation ?? {}, this.log, this.rt.injectionRefused);
    // before anything is exported, so that the exporter's first connection is known
    if (this.opts.skipOwnRequests ?? true) this.rt.trackOwnConnections(process.pid);
    this.rt.start(this.eventContext(), { intervalMs: this.opts.consumeIntervalMs });
    this.overhead = new OverheadEstimator(this.rt, undefined, (pids) => this.siteKinds(pids));
    // in the background (~0.2 s of a helper's CPU; a failure is logged), so
    // that start-up is not delayed: until it is done, estimates count BPF
    // run time only and gotrail_uprobe_hit_cost_seconds is absent
    void this.calibrate();
    this.setOverheadBudget(this.opts.overheadBudget);
    await this.startKubernetes();
    this.started = true;
    this.scan();
    this.initialScanDone = true;
    this.activity();
    this.scanTimer = setInterval(() => this.scan(), this.opts.scanIntervalMs ?? (events ? DEFAULT_SCAN_INTERVAL_MS : SCAN_INTERVAL_WITHOUT_EVENTS_MS));
    this.setInflightMaxAge(this.opts.inflightMaxAgeMs);
  }

  private async startKubernetes(): Promise<void> {
    const k = this.opts.kubernetes;
    const connection = k === false ? undefined : k?.connection ?? inClusterConnection();
    if (!connection) {
      this.log.debug(k === false ? 'Kubernetes metadata disabled' : 'not in a Kubernetes cluster: no Kubernetes metadata');
      if (usesKubernetes(this.opts.selection ?? {})) this.log.warn('namespace and pod-label rules match no process without Kubernetes metadata');
      return;
    }
    this.k8s = new PodWatcher(this.log, { ...(k || {}), connection });
    this.meta.setPodSource(this.k8s);
    this.k8s.start();
    if (!(await this.k8s.whenSynced(KUBERNETES_SYNC_WAIT_MS))) this.log.info('Kubernetes pods not listed yet; processes get their pod metadata when it arrives');
  }

  private eventContext(): EventContext {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the getter below has its own this
    const self = this;
    return {
      clock: this.clock,
      // read per event: a configuration reload turns it on or off
      get dbQueryText(): boolean {
        return self.opts.dbQueryText ?? false;
      },
      get kafkaMessageKey(): boolean {
        return self.opts.kafkaMessageKey ?? false;
      },
      resourceOf: (tgid) => this.traced.get(tgid)?.resource ?? this.exited.get(tgid)?.resource,
      emit: (span) => {
        this.activity();
        this.lastSpanOfScope.set(span.instrumentationScope, span);
        this.opts.onSpan?.(span);
        const b = this.batcher;
        if (!b) return;
        if (this.overflow.length > this.overflowHead || b.full) {
          // Backpressure: spans already taken from the kernel are kept, and
          // no more are taken until the export queue has room (events wait
          // in the ring buffer, where an overflow is counted). What is kept
          // here is bounded by the batches in flight from the ring buffer.
          this.overflow.push(span);
          this.pauseProbeEvents(true);
          return;
        }
        b.push(span);
      },
      problem: (reason) => {
        const n = (this.problems.get(reason) ?? 0) + 1;
        this.problems.set(reason, n);
        if (n === 1) this.log.warn(`event problem: ${reason} (counted in gotrail_events_malformed_total)`);
      },
      routes: this.routes,
    };
  }

  /**
   * The last span of each instrumentation scope (one per instrumented Go
   * package), kept so that a live object of each shape the span path makes
   * (the span record, its attributes) survives quiet periods. V8's optimized
   * code refers weakly to the hidden classes ("maps") it was specialized for,
   * and a map of which no object is alive dies at a memory-reducing GC (the
   * one MemoryTrim runs once the agent is quiet, or V8's own memory reducer),
   * which deoptimizes every function that embeds it: measured here
   * (--trace-deopt), the whole span path (handleEvent, the span record's
   * constructor, the OTLP encoder's prepare and #record) was thrown away at
   * each quiet period and compiled again when spans came back (tens to
   * hundreds of ms of V8's compiler threads per burst). What it holds: one
   * span per scope, whose ids slab and attributes are a few KiB at most.
   */
  private readonly lastSpanOfScope = new Map<object, ReadableSpan>();

  /** Spans taken from the kernel while the export queue was full, oldest first from overflowHead. */
  private overflow: ReadableSpan[] = [];
  private overflowHead = 0;
  private probeEventsPaused = false;

  private pauseProbeEvents(paused: boolean): void {
    if (this.probeEventsPaused === paused) return;
    this.probeEventsPaused = paused;
    this.totals.backpressurePauses += paused ? 1 : 0;
    try {
      this.rt?.pauseProbeEvents(paused);
    } catch (e) {
      this.log.once('backpressure.pause', 'pausing probe events failed', { error: (e as Error).message });
    }
  }

  /** The export queue has room again: hand over kept spans, and take events again once all are handed over. */
  private exportQueueHasSpace(): void {
    const b = this.batcher;
    if (!b) return;
    while (this.overflowHead < this.overflow.length && !b.full) b.push(this.overflow[this.overflowHead++]!);
    if (this.overflowHead < this.overflow.length) return;
    this.overflow = [];
    this.overflowHead = 0;
    this.pauseProbeEvents(false);
  }

  /** One pass over /proc: attach new Go processes, release exited ones. */
  scan(): void {
    if (!this.rt || !this.attach) return;
    let pids: number[];
    try {
      pids = listPids();
    } catch (e) {
      this.log.once('scan.proc', 'cannot list /proc', { error: (e as Error).message });
      return;
    }
    const alive = new Set(pids);
    for (const [pid, t] of this.traced) {
      if (alive.has(pid)) continue;
      // gone before its exit event was read: a late look must not trace it again either
      this.exitedStarts.set(pid, { startTime: t.info.startTime, at: Date.now() });
      this.processExited(pid);
    }
    for (const [pid] of this.ignored) if (!alive.has(pid)) this.ignored.delete(pid);
    for (const [pid] of this.pending) if (!alive.has(pid)) this.pending.delete(pid);
    for (const [pid] of this.notSelected) if (!alive.has(pid)) this.notSelected.delete(pid);
    for (const [pid] of this.allowListFull) if (!alive.has(pid) || this.traced.has(pid) || this.ignored.has(pid)) this.allowListFull.delete(pid);
    this.allowListHasRoom();
    this.meta.prune(alive);
    const now = Date.now();
    for (const [pid, e] of this.exited) if (now - e.at > EXITED_GRACE_MS) this.exited.delete(pid);
    for (const [pid, e] of this.exitedStarts) if (now - e.at > EXITED_GRACE_MS) this.exitedStarts.delete(pid);
    // at least as many entries as traced processes: a waiting one cannot fit yet
    const full = this.allowListFull.size > 0 && this.traced.size >= this.rt.processCapacity;
    for (const pid of pids) {
      if (this.traced.has(pid) || this.ignored.has(pid)) continue;
      if (full && this.allowListFull.has(pid)) continue;
      this.memoryTrim.housekeeping();
      this.consider(pid);
    }
    this.placeBinaries();
  }

  /**
   * A traced process exec'd the image it is traced on: back on the allow-list
   * (the exec hook may have taken it off). Should the list have filled up
   * meanwhile, it is released and waits as a process that did not fit.
   */
  private keepTraced(pid: number, t: TracedProcess): void {
    if (this.rt!.traceProcess(pid, fileKeyOf(t.info.key), this.noInject(t.info.exe))) {
      this.rt!.decided(pid, true);
      return;
    }
    this.release(pid);
    this.allowListRefused(t.info);
    this.rt!.decided(pid, false);
  }

  /**
   * A selected process does not fit in the allow-list: it stays untraced
   * (no links were added for it), counted once, listed in /status, and
   * tried again by the scans. Logged once per burst: at warn when the list
   * is first found full, then at debug until no process waits any more.
   */
  private allowListRefused(info: ProcessInfo): void {
    const pid = info.pid;
    if (this.allowListFull.get(pid)?.startTime !== info.startTime) {
      this.totals.untraced.allow_list_full++;
      this.allowListFull.set(pid, { startTime: info.startTime, exe: info.exe });
    }
    if (this.allowListFullSaid) {
      this.log.debug('process not traced: the allow-list is full', { pid, exe: info.exe });
      return;
    }
    this.allowListFullSaid = true;
    this.log.warn(`${this.allowListFullReason()}: selected Go processes stay untraced until traced ones exit (counted in gotrail_processes_untraced_total{reason="allow_list_full"}, listed in /status; this is said once until all of them are traced or gone)`, { pid, exe: info.exe });
  }

  /** Once no process waits for the allow-list, its next refusal is logged again. */
  private allowListHasRoom(): void {
    if (!this.allowListFullSaid || this.allowListFull.size > 0) return;
    this.allowListFullSaid = false;
    this.log.info('no process waits for the allow-list any more');
  }

  private allowListFullReason(): string {
    return `the allow-list is full (${this.rt?.processCapacity ?? '?'} processes, --max-processes)`;
  }

  /**
   * A process replaced its image: judge it afresh (it may be Go now, or no
   * longer). `seed`: the command line and environment the exec hook copied
   * (processes of attached files), for when the process is gone before
   * /proc is read.
   */
  private onExec(ev: ProcessEvent, seed?: { cmdline?: string; env?: Map<string, string> }): void {
    const pid = ev.hdr.tgid;
    const facts: ExecFacts = {
      key: binaryKeyOf(ev.file, ev.content),
      // /proc/PID/stat's start time is in clock ticks (USER_HZ = 100)
      startTime: String(ev.start_boottime / 10_000_000n),
      comm: ev.comm.toString('latin1').replace(/\0.*$/s, ''),
      filename: ev.filename.toString('utf8').replace(/\0.*$/s, ''),
      ppid: ev.ppid,
      allowed: (ev.flags & ExecFlags.GT_EXEC_ALLOWED) !== 0,
    };
    if (this.log.level === 'debug') this.log.debug('exec', { pid, flags: ev.flags, filename: facts.filename });
    if (ev.flags & ExecFlags.GT_EXEC_STALE) {
      this.totals.staleExecs++;
      if (ev.flags & ExecFlags.GT_EXEC_HELD) this.totals.heldProcesses++;
      const held = (ev.flags & ExecFlags.GT_EXEC_HELD) !== 0;
      this.log.info('process started on a binary rewritten in place: replacing its stale probes first', { pid, held });
      if (held) {
        this.held.add(pid);
        // whatever happens on the way, a held process is never left stopped
        setTimeout(() => this.continueHeld(pid, true), HOLD_LIMIT_MS).unref();
      }
      void this.replaceStale(pid, facts.key);
      return;
    }
    this.rt?.debugNote('exec', { tgid: pid, execNs: ev.time_ns });
    const t = this.traced.get(pid);
    // The /proc scan may have judged the new image before this event was
    // consumed: that process is traced already. Releasing and attaching it
    // again would leave it untraced mid-request and its binary attached twice.
    if (t && ev.time_ns < t.judgedAtNs) {
      this.keepTraced(pid, t);
      return;
    }
    if (t) {
      // The same program again (a wrapper such as env exec'ing twice, or an
      // exec event read after the scan already found the final image): it
      // stays traced; the exec hook took it off the allow-list.
      const now = this.discovery.currentKey(pid);
      if (now && keyString(now) === keyString(t.info.key)) {
        this.keepTraced(pid, t);
        return;
      }
      // gone already (its exit event not read yet): judged below by the exec
      // event's facts, it must not be traced a second time
      if (!now && t.info.startTime === facts.startTime) this.exitedStarts.set(pid, { startTime: t.info.startTime, at: Date.now() });
      this.processExited(pid);
    }
    this.ignored.delete(pid);
    this.notSelected.delete(pid);
    this.meta.forget(pid);
    if (seed) this.meta.seed(pid, facts.startTime, seed);
    this.consider(pid, facts);
    if (!this.waiting.has(pid)) this.settleDecision(pid);
    if (this.traced.has(pid)) {
      // the exec event's kernel timestamp and process.hrtime share CLOCK_MONOTONIC
      const seconds = (ev.flags & ExecFlags.GT_EXEC_ALLOWED) ? 0 : Number(process.hrtime.bigint() - ev.time_ns) / 1e9;
      for (const list of [this.execToAttach, this.execToAttachRecent]) {
        list.push(seconds);
        if (list.length > 4096) list.splice(0, list.length - 4096);
      }
    }
  }

  /**
   * A process runs content that a stale link set's breakpoints were made
   * for (its file was rewritten in place). The stale links go first; the
   * bytes the kernel put back from the old code are repaired; then the new
   * content is attached and the process, stopped at exec by the hook,
   * continues. SIGCONT is sent whatever fails on the way.
   */
  private async replaceStale(pid: number, key: BinaryKey): Promise<void> {
    // already on its way (found by the scan first): that run continues it
    if (this.waiting.has(pid)) return;
    this.waiting.add(pid);
    const inode = inodeString(key);
    try {
      const stale = this.attach!.byInode(inode);
      const sites = this.attach!.staleSites(inode);
      // a file being executed cannot be written, so processes recorded on
      // the old content are gone whatever the bookkeeping says
      for (const p of [...(stale?.pids ?? [])]) if (p !== pid) this.processExited(p);
      if (this.traced.get(pid)) this.processExited(pid);
      await this.attach!.detachInode(inode);
      for (const s of this.attach!.staleSites(inode)) if (!sites.includes(s)) sites.push(s);
      if (sites.length) {
        try {
          const r = repairStaleSites(pid, key.ino, `/proc/${pid}/exe`, sites);
          this.totals.repairedBytes += r.repaired;
          this.log.info('stale probe sites repaired', { pid, checked: r.checked, repaired: r.repaired });
        } catch (e) {
          this.log.warn('could not repair the code of a process started on a rewritten binary', { pid, error: (e as Error).message });
        }
      }
      this.waiting.delete(pid);
      this.ignored.delete(pid);
      this.meta.forget(pid);
      this.consider(pid);
      this.settleDecision(pid);
    } catch (e) {
      this.log.warn('replacing stale probes failed', { pid, error: (e as Error).message });
    } finally {
      this.waiting.delete(pid);
      this.continueHeld(pid, false);
    }
  }

  /**
   * The agent has decided on `pid`: off the BPF allow-list unless traced (the
   * exec hook may have allowed it), and its held probe events handled or
   * dropped accordingly.
   */
  private settleDecision(pid: number): void {
    const traced = this.traced.has(pid);
    if (!traced) this.rt?.untraceProcess(pid);
    this.rt?.decided(pid, traced);
  }

  /** Continues a process the exec hook stopped, once. `late`: the hold limit passed first (logged). */
  private continueHeld(pid: number, late: boolean): void {
    if (!this.held.delete(pid)) return;
    if (late) this.log.warn(`a process held at exec was continued after ${HOLD_LIMIT_MS} ms, before its stale probes were replaced`, { pid });
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* exited meanwhile */
    }
  }

  /** An attached file changed on disk: links without processes go at once, before a process of the new content meets them. */
  private binaryChanged(inode: string): void {
    const b = this.attach?.byInode(inode);
    if (!b || b.pids.size > 0) return;
    this.log.debug('attached binary changed on disk: detaching its idle probes', { path: b.exe });
    void this.attach!.detachInode(inode).then(() => this.watcher?.sync(this.attach!.watchedFiles()));
  }

  /** Seconds from exec to attached, for processes found by their exec event; drained by the metrics. */
  private execToAttach: number[] = [];
  private execToAttachRecent: number[] = [];

  /** Takes the exec-to-attach samples recorded since the last call. */
  drainExecToAttach(): number[] {
    return this.execToAttach.splice(0);
  }

  /** The last (up to 4096) exec-to-attach times in seconds, oldest first. */
  recentExecToAttach(): number[] {
    return [...this.execToAttachRecent];
  }

  private consider(pid: number, facts?: ExecFacts): void {
    if (this.waiting.has(pid)) return;
    const judgedAtNs = process.hrtime.bigint();
    const r = this.discovery.probe(pid);
    if (r.kind === 'gone') {
      // A process that exited before it could be looked at: when it ran an
      // attached file, the exec hook allowed it and its events are on their
      // way; judge it by what the hook learnt.
      // (When its links went meanwhile, the ones made now serve the next
      // processes of the file.)
      if (!facts) return;
      const known = facts.allowed ? this.attach!.known(facts.key) : undefined;
      if (!known) {
        this.prepareBinary(pid, facts);
        return;
      }
      const info = { pid, startTime: facts.startTime, exe: known.exe, name: facts.comm, key: facts.key, goVersion: known.plan.goVersion };
      if (this.attach!.get(facts.key)) {
        // its links exist: no path is opened
        this.accept({ ...info, exePath: facts.filename, fd: -1 });
        return;
      }
      // Its links went meanwhile: the ones made now must be made on the
      // very file it ran, found as a never-seen binary's is (its path as
      // given may be relative, or name another file by now).
      const f = this.discovery.probeExited(pid, facts.ppid, facts.filename, facts.key);
      if (f.kind === 'unresolved') this.unexamined(pid, facts, f.reason);
      if (f.kind !== 'go') return;
      try {
        this.accept({ ...info, exePath: f.info.exePath, fd: -1 });
      } finally {
        releaseProcessInfo(f.info);
      }
      return;
    }
    if (r.kind === 'unreadable') {
      // e.g. processes of another user namespace; not an agent problem
      this.log.debug('cannot inspect process', { pid, reason: r.reason });
      this.ignored.set(pid, '');
      return;
    }
    if (r.kind === 'not-go') {
      // once per file (the answer is cached): a Go program may be left untraced
      if (r.unreadableElf) this.log.warn('cannot read executable, not traced', { pid, exe: r.unreadableElf.exe, reason: r.unreadableElf.reason });
      this.ignored.set(pid, '');
      return;
    }
    const info = r.info;
    try {
      const stale = this.attach!.staleFor(info.key);
      const inflight = this.attach!.detachInFlight(inodeString(info.key));
      if (stale) {
        // found by the scan, or on a filesystem the exec hook cannot match
        this.totals.staleExecs++;
        void this.replaceStale(pid, info.key);
        return;
      }
      if (inflight) {
        // a link set of this inode is being detached: a second one at once
        // would make every site fire twice
        this.waiting.add(pid);
        void inflight.finally(() => {
          this.waiting.delete(pid);
          this.ignored.delete(pid);
          this.consider(pid, facts);
          this.settleDecision(pid);
          this.continueHeld(pid, false);
        });
        return;
      }
      this.accept(info, judgedAtNs);
    } finally {
      releaseProcessInfo(info);
    }
  }

  /**
   * A process exited before it could be looked at, running a file not
   * attached yet: its requests are lost, but the file is attached (when the
   * rules would trace such a process) so that the next process of it is
   * allowed at exec and traced from its first instruction. The file is found
   * by the path execve was given (a relative one through the working
   * directory of the process or its parent), checked against the exec
   * event's identity; when it cannot be, that is counted and said.
   */
  private prepareBinary(pid: number, facts: ExecFacts): void {
    const r = this.discovery.probeExited(pid, facts.ppid, facts.filename, facts.key);
    if (r.kind === 'unresolved') {
      this.unexamined(pid, facts, r.reason);
      return;
    }
    if (r.kind !== 'go') return;
    try {
      const info: ProcessInfo = { ...r.info, pid, startTime: facts.startTime, name: facts.comm };
      const d = decide(this.opts.selection ?? {}, this.meta.identity(info));
      if (!d.traced) return;
      const attachedBefore = (this.attach!.get(info.key)?.handles.length ?? 0) > 0;
      const b = this.attach!.addProcess(pid, info.key, info.exePath, info.exe);
      this.attach!.removeProcess(pid, info.key);
      if (b.handles.length) {
        // once per binary: a burst of short-lived runs (a build step, a
        // cron job's workers) exiting before the agent looks would repeat it
        // for each process, about a binary already attached
        const say = attachedBefore ? this.log.debug.bind(this.log) : this.log.info.bind(this.log);
        say('attached the binary of a process that exited before it was looked at: its next processes are traced from exec', { pid, exe: info.exe });
        this.watcher?.sync(this.attach!.watchedFiles());
      }
    } finally {
      releaseProcessInfo(r.info);
    }
  }

  /**
   * A process exited before it was looked at and its executable could not
   * be found: it may have been a Go program, whose binary then stays
   * unattached for its next processes too. Counted by reason; said once per
   * path at info level (a cron job repeats the same path).
   */
  private unexamined(pid: number, facts: ExecFacts, reason: UnresolvedReason): void {
    this.totals.unexamined[reason]++;
    const path = facts.filename;
    if (this.unexaminedSaid.get(path)) return;
    this.unexaminedSaid.set(path, true);
    const why = {
      cwd_gone: 'it was run by a relative path, and neither it nor its parent was there to resolve the path against',
      not_found: 'its path names no file now, or another file than the one it ran',
      no_path: 'its exec event carried no path',
    }[reason];
    this.log.info(`a process exited before it was looked at and its executable cannot be found: if it is a Go program, it was not traced and its binary is not attached for its next processes (${why})`, { pid, path, ppid: facts.ppid, comm: facts.comm, reason });
  }

  /** Decides on a Go process and, when selected, attaches its binary and traces it. */
  private accept(info: ProcessInfo, judgedAtNs = process.hrtime.bigint()): void {
    const pid = info.pid;
    const d = decide(this.opts.selection ?? {}, this.meta.identity(info));
    if (d.pending) {
      // asked again at the next scan, or as soon as the pod arrives
      if (this.pending.get(pid) !== info.startTime) this.log.debug('process selection waits', { pid, exe: info.exe, reason: d.reason });
      this.pending.set(pid, info.startTime);
      return;
    }
    this.pending.delete(pid);
    if (!d.traced) {
      this.log.debug('process not selected', { pid, exe: info.exe, reason: d.reason });
      this.ignored.set(pid, info.startTime);
      this.notSelected.set(pid, { exe: info.exe, reason: d.reason, key: keyString(info.key) });
      this.placeBinaries();
      return;
    }
    this.notSelected.delete(pid);
    const resource = this.resourceOf(info);
    if (info.startTime !== '' && this.exitedStarts.get(pid)?.startTime === info.startTime) {
      // Its exit was read already (this is a late look: its exec event, or
      // the end of a detach it waited for): tracing it now would last until
      // the next scan. The events it sent before exiting were held for this
      // decision and become its spans, under the resource it was or would
      // have been traced with.
      if (!this.exited.has(pid)) {
        this.exited.set(pid, { resource, at: Date.now() });
        this.totals.processesTraced++;
        this.totals.processesExited++;
      }
      this.rt!.decided(pid, true);
      return;
    }
    // allow-list first, so that no event of this process is missed once the links exist
    if (!this.rt!.traceProcess(pid, fileKeyOf(info.key), this.noInject(info.exe))) {
      this.allowListRefused(info);
      return;
    }
    const b = this.attach!.addProcess(pid, info.key, info.exePath, info.exe);
    if (b.handles.length === 0 && !b.shed?.size) {
      this.rt!.untraceProcess(pid);
      this.attach!.removeProcess(pid, info.key);
      this.ignored.set(pid, info.startTime);
      return;
    }
    this.traced.set(pid, { info, resource, judgedAtNs });
    this.totals.processesTraced++;
    if (this.allowListFull.delete(pid)) this.allowListHasRoom();
    this.placeBinaries();
    this.watcher?.sync(this.attach!.watchedFiles());
    this.log.info('tracing process', { pid, exe: info.exe, service: String(resource.attributes['service.name']) });
    this.activity();
  }

  private resourceOf(info: ProcessInfo): Resource {
    return processResource({ pid: info.pid, executablePath: info.exe, goVersion: info.goVersion, env: this.meta.env(info.pid), extra: this.meta.resourceAttributes(info.pid) }, (problem) => {
      // once per executable: every run of a cron job would repeat it; the value is not logged (it may hold secrets)
      this.log.once(`resource-attributes:${info.exe}`, 'OTEL_RESOURCE_ATTRIBUTES of a traced process is malformed: all of it is ignored, as an OpenTelemetry SDK would', { pid: info.pid, exe: info.exe, problem });
    });
  }

  /**
   * Pods of these processes were added, changed or deleted: name the traced
   * ones anew, and decide again where namespace or label rules may now
   * decide otherwise.
   */
  private podsChanged(pids: number[]): void {
    if (!this.started) return;
    const selection = this.opts.selection ?? {};
    const podRules = usesKubernetes(selection);
    for (const pid of pids) {
      const t = this.traced.get(pid);
      if (t) {
        const d = podRules ? decide(selection, this.meta.identity(t.info)) : undefined;
        if (d && !d.traced && !d.pending) {
          this.log.info('process no longer selected', { pid, exe: t.info.exe, reason: d.reason });
          this.release(pid);
          this.ignored.set(pid, t.info.startTime);
          this.notSelected.set(pid, { exe: t.info.exe, reason: d.reason, key: keyString(t.info.key) });
        } else {
          t.resource = this.resourceOf(t.info);
        }
      } else if (this.pending.has(pid) || (podRules && this.ignored.get(pid))) {
        this.ignored.delete(pid);
        this.consider(pid);
      }
    }
  }

  private processExited(pid: number): void {
    const t = this.release(pid);
    if (!t) return;
    this.totals.processesExited++;
    this.log.info('process exited', { pid, exe: t.info.exe });
  }

  /** Stops tracing a process, keeping its resource a while for its last events. */
  private release(pid: number): TracedProcess | undefined {
    const t = this.traced.get(pid);
    if (!t) return undefined;
    this.traced.delete(pid);
    this.exited.set(pid, { resource: t.resource, at: Date.now() });
    // its last hits, while its counts are still kept
    this.overhead?.processGone(pid);
    try {
      this.rt?.untraceProcess(pid);
      this.rt?.forgetProcessState(pid);
    } catch (e) {
      this.log.once('exit.cleanup', 'cleaning BPF state of an exited process failed', { error: (e as Error).message });
    }
    this.attach?.removeProcess(pid, t.info.key);
    this.placeBinaries();
    return t;
  }

  /** Per-file or per-process links for each attached binary, by how many of its processes the rules exclude (AttachmentManager.place). */
  private placeBinaries(): void {
    if (!this.attach) return;
    const excluded = new Map<string, number>();
    for (const n of this.notSelected.values()) if (n.key) excluded.set(n.key, (excluded.get(n.key) ?? 0) + 1);
    for (const b of this.attach.binaries()) this.attach.place(b.key, excluded.get(b.key) ?? 0);
  }

  tracedPids(): number[] {
    return [...this.traced.keys()];
  }

  attachments(): AttachmentManager | undefined {
    return this.attach;
  }

  runtime(): BpfRuntime | undefined {
    return this.rt;
  }

  private writeUser: WriteUserInjection | undefined;

  /** The bpf_probe_write_user injection as detected at start, with its requests by outcome. */
  writeUserReport(): (WriteUserStatus & { outcomes: Record<string, number> }) | undefined {
    const wu = this.writeUser;
    return wu ? { ...wu.status, outcomes: wu.results() } : undefined;
  }

  /** The dry-run injection's last line for process `pid` (tests; undefined unless the dry-run build runs). */
  writeUserLastLine(pid: number): string | undefined {
    return this.writeUser?.lastDryRunLine(pid);
  }

  /** Whether a traced process's requests must go without a traceparent header (`--no-inject-exe`). */
  private noInject(exe: string): boolean {
    return (this.opts.propagation?.excludeExe ?? []).some((g) => g === exe || matchesGlob(exe, g));
  }

  /** What is traced right now, per binary and probe, with the reason for every probe that is not attached. */
  status(): unknown {
    let excludedHits = new Map<number, Map<number, number>>();
    try {
      if (this.notSelected.size && this.rt) excludedHits = this.rt.probeHits(new Set(this.notSelected.keys()));
    } catch {
      /* map unreadable: hits unknown (0) */
    }
    const binaries = (this.attach?.binaries() ?? []).map((b) => ({
      path: b.exe,
      goVersion: b.plan?.goVersion,
      pids: [...b.pids].sort((x, y) => x - y),
      attached: [...new Set(b.handles.map((h) => h.probe))],
      shed: [...(b.shed ?? [])],
      perProcess: !!b.perProcess,
      // excluded processes of the binary and the probe hits they took (the trap, skipped in BPF): none while attached per process
      excluded: [...this.notSelected].filter(([, n]) => n.key === b.key)
        .map(([pid]) => ({ pid, hits: [...(excludedHits.get(pid)?.values() ?? [])].reduce((a, n) => a + n, 0) })),
      notAttached: b.failedProbes,
      degraded: b.plan?.probes.flatMap((p) => p.degraded.map((d) => ({ probe: p.probe.id, reason: d }))) ?? [],
    }));
    return {
      processesTraced: [...this.traced.values()].map((t) => ({ pid: t.info.pid, exe: t.info.exe, service: t.resource.attributes['service.name'] })),
      processesNotSelected: [...this.notSelected].map(([pid, n]) => ({ pid, exe: n.exe, reason: n.reason })),
      // selected, and waiting for room in the allow-list
      processesNotTraced: [...this.allowListFull].map(([pid, w]) => ({ pid, exe: w.exe, reason: this.allowListFullReason() })),
      binaries,
      notTraced: this.attach?.notTraced() ?? [],
      disabledProbes: Object.fromEntries(this.rt?.disabledProbes ?? []),
      propagation: this.propagation ? { ...this.propagation.status, bpfProbeWriteUser: this.writeUserReport() } : undefined,
      kernel: this.rt?.features,
      overhead: (() => {
        const o = this.overheadNow();
        return { uprobeHitCostSeconds: o.hitCost?.secondsPerHit, injectSendCostSeconds: o.hitCost?.secondsPerInjectSend, calibration: o.hitCost, processes: o.processes };
      })(),
      overheadBudget: (this.opts.overheadBudget && this.budget?.status()) ?? { budgetPercent: null },
      // --debug-probe-hits: lines lost to write failures are counted here
      ...(this.rt?.probeHitLog ? { debugProbeHits: this.rt.probeHitLog } : {}),
    };
  }

  /**
   * Applies new selection rules to a running agent: traced processes the new
   * rules exclude are released (their binary's probes detach with the last
   * of them, after the linger time), and Go processes left out before are
   * judged again, so that newly included ones are attached (both just after
   * this returns).
   */
  setSelection(rules: SelectionRules): void {
    this.opts.selection = rules;
    if (!this.started) return;
    // The rules are in force for every decision from now on; the processes
    // already judged are judged again right after, since attaching a newly
    // included binary means analysing it (tens of milliseconds, seconds on a
    // saturated machine), which should not hold up the reload.
    this.rejudgeGeneration++;
    const generation = this.rejudgeGeneration;
    setImmediate(() => {
      if (generation === this.rejudgeGeneration && this.started) this.rejudge(rules);
    });
  }

  private rejudgeGeneration = 0;

  private rejudge(rules: SelectionRules): void {
    const released = new Set<number>();
    for (const [pid, t] of [...this.traced]) {
      const d = decide(rules, this.meta.identity(t.info));
      if (d.traced || d.pending) continue;
      this.log.info('process no longer selected', { pid, exe: t.info.exe, reason: d.reason });
      this.release(pid);
      released.add(pid);
      this.ignored.set(pid, t.info.startTime);
      this.notSelected.set(pid, { exe: t.info.exe, reason: d.reason, key: keyString(t.info.key) });
    }
    // Go processes not traced (their start time is known; non-Go ones have
    // none) and those waiting for their pod; not those just released, which
    // these rules have judged
    const again = [...this.ignored].filter(([pid, start]) => start !== '' && !released.has(pid)).map(([pid]) => pid);
    for (const pid of new Set([...again, ...this.pending.keys()])) {
      this.ignored.delete(pid);
      this.notSelected.delete(pid);
      this.consider(pid);
      if (!this.traced.has(pid) && !this.pending.has(pid)) this.settleDecision(pid);
    }
  }

  /** Sends spans from now on through `exporter` with these batch settings; queued spans go to the new exporter. @throws Error on invalid batch settings (nothing changed). */
  /**
   * Makes a stop (begun, or to come) stop waiting for the exporter at once:
   * spans still unexported are dropped, logged with `why` and counted
   * (`gotrail_spans_dropped_total{reason="shutdown"}`).
   */
  giveUpExport(why: string): void {
    this.batcher?.giveUp(why);
  }

  setExporter(exporter: SpanExporter, batcher: BatcherOptions): void {
    this.opts.exporter = exporter;
    this.opts.batcher = batcher;
    this.batcher?.reconfigure(exporter, batcher);
  }

  private sweepTimer: NodeJS.Timeout | undefined;

  /**
   * Sets the age (ms; undefined: the default, 10 minutes) past which
   * in-flight call state is swept from full in-flight maps (see
   * {@link AgentOptions.inflightMaxAgeMs}). A pass runs a quarter of the age
   * (at least 250 ms, at most a minute) after activity (spans, processes
   * traced), and again after that while an in-flight map is at least half
   * full: an idle agent sets no timer for it.
   */
  setInflightMaxAge(ms: number | undefined): void {
    this.opts.inflightMaxAgeMs = ms;
    clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    this.armSweep();
  }

  /** Something happened (a span, a process traced, an attach): the memory trim and the in-flight sweep follow it. */
  private activity(): void {
    this.memoryTrim.activity();
    this.armSweep();
  }

  private armSweep(): void {
    if (this.sweepTimer || this.stopping) return;
    const age = this.opts.inflightMaxAgeMs ?? DEFAULT_INFLIGHT_MAX_AGE_MS;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      let full = false;
      try {
        full = this.rt?.sweepInflight(age).full ?? false;
      } catch (e) {
        this.log.once('inflight.sweep', 'sweeping in-flight state failed', { error: (e as Error).message });
      }
      // a half-full map's stale calls and idle records go only at a later
      // pass, which must come even if nothing else happens (calls refused by
      // a full map send no events); else the next activity arms it
      if (full) this.armSweep();
    }, Math.min(60_000, Math.max(250, age / 4)));
    this.sweepTimer.unref();
  }

  /** Changes the head sampler (OTEL_TRACES_SAMPLER, a configuration reload): traces starting from now on are decided by it. */
  setSampling(c: SamplingConfig): void {
    this.opts.sampling = c;
    this.rt?.setSampler(encodeBpfSampler(c));
    this.log.info('sampler set', { sampler: describeSampler(c) });
  }

  /** Turns sanitised `db.query.text` on database spans on or off (a configuration reload). */
  setDbQueryText(on: boolean): void {
    this.opts.dbQueryText = on;
  }

  /** Turns messaging.kafka.message.key on Kafka spans on or off (a configuration reload). */
  setKafkaMessageKey(on: boolean): void {
    this.opts.kafkaMessageKey = on;
  }

  /**
   * Readiness: the probes are loaded, the first /proc scan is done and the
   * exporter is healthy (its last export did not fail). `detail` names what is missing.
   */
  ready(): { ok: boolean; detail: string } {
    const missing: string[] = [];
    if (!this.started || !this.rt) missing.push('probes not loaded');
    if (!this.initialScanDone) missing.push('initial scan not done');
    if (this.batcher && !this.batcher.exportHealthy) missing.push(`exporter failing (${this.batcher.stats.failed} failed exports so far, ${this.batcher.stats.queued} spans queued)`);
    return missing.length ? { ok: false, detail: `not ready: ${missing.join('; ')}` } : { ok: true, detail: `ready: ${this.traced.size} processes traced` };
  }

  /** Set by stop(): what fails because the agent is stopping is not reported as a failure. */
  private stopping = false;

  /**
   * Measures this host's uprobe trap cost (see overhead.ts) and uses it for
   * the overhead estimates from then on. At start-up and on demand (POST
   * /calibrate); concurrent calls share one run. Resolves undefined (logged)
   * when it cannot run, e.g. without the helper program.
   */
  calibrate(): Promise<HitCostCalibration | undefined> {
    const rt = this.rt;
    if (!rt || !this.overhead) return Promise.resolve(undefined);
    // the sockmap's send cost, where the injection is attached
    const injectSockmap = this.propagation?.status.injection === 'on' ? BpfMaps.gt_inject_socks : undefined;
    this.calibrating ??= calibrateUprobeHitCost(rt.obj, { injectSockmap }).then((c) => {
      if (this.overhead) this.overhead.hitCost = c;
      const us = (x: number): number => +(x * 1e6).toFixed(2);
      this.log.info('uprobe hit cost calibrated', {
        microsecondsPerHitEmulated: us(c.secondsPerHit.emulated), microsecondsPerHitSingleStepped: us(c.secondsPerHit.single_stepped),
        roundsEmulated: c.rounds.emulated.map(us), roundsSingleStepped: c.rounds.single_stepped.map(us),
        ...(c.secondsPerInjectSend !== undefined ? { microsecondsPerInjectSend: us(c.secondsPerInjectSend), roundsInjectSend: c.injectSendRounds?.map(us) } : {}),
      });
      if (c.injectSendError) this.log.warn('sockmap send cost calibration failed: overhead estimates price the injection\'s sends at the sk_msg program\'s run time only', { error: c.injectSendError });
      return c;
    }, (e: Error) => {
      // stopping closes the object under a calibration still running: not a failure worth a warning
      if (this.stopping) this.log.debug('uprobe hit cost calibration cut short by stopping', { error: e.message });
      else this.log.warn('uprobe hit cost calibration failed: overhead estimates count BPF run time only', { error: e.message });
      return undefined;
    }).finally(() => {
      this.calibrating = undefined;
      this.activity();
    });
    return this.calibrating;
  }

  /** pid → hit site → trap kind of these processes, from their binaries' attached site sets. */
  private siteKinds(pids: ReadonlySet<number>): Map<number, ReadonlyMap<number, TrapKind>> {
    const out = new Map<number, ReadonlyMap<number, TrapKind>>();
    for (const b of this.attach?.binaries() ?? []) {
      const mine = [...b.pids].filter((pid) => pids.has(pid));
      if (!mine.length) continue;
      const kinds = hitSiteKinds(b.handles);
      for (const pid of mine) out.set(pid, kinds);
    }
    return out;
  }

  /** Per traced process: probe hits and estimated overhead (sampled at most once a second). */
  overheadNow(): { hitCost: HitCostCalibration | undefined; processes: ProcessOverhead[]; gone: Map<string, GoneOverhead> } {
    const traced = new Map<number, string>();
    for (const t of this.traced.values()) traced.set(t.info.pid, String(t.resource.attributes['service.name'] ?? 'unknown_service'));
    const processes = this.overhead?.sample(traced) ?? [];
    return { hitCost: this.overhead?.hitCost, processes, gone: this.overhead?.goneByService() ?? new Map<string, GoneOverhead>() };
  }

  /**
   * Sets, changes or (undefined) turns off the overhead budget; off attaches
   * every shed probe again. Samples the estimate once a second while on.
   */
  setOverheadBudget(settings: BudgetSettings | undefined): void {
    this.opts.overheadBudget = settings;
    if (!this.attach) return;
    if (!settings) {
      if (this.budgetTimer) clearInterval(this.budgetTimer);
      this.budgetTimer = undefined;
      // the enforcer stays, so that its counters never go back
      this.budget?.restoreAll();
      return;
    }
    if (this.budget) this.budget.budget.configure(settings);
    else this.budget = new BudgetEnforcer(this.attach, this.log, settings);
    this.budgetTimer ??= setInterval(() => this.budget?.tick(this.overheadNow().processes, Date.now()), 1000);
    this.budgetTimer.unref();
  }

  /** Probes shed and restored by the overhead budget, and shed now per service. */
  private budgetCounts(processes: ProcessOverhead[]): { shed: ShedCount[]; restored: ShedCount[]; shedNow: Map<string, number> } | undefined {
    const b = this.budget;
    return b ? { shed: [...b.shedTotal.values()], restored: [...b.restoredTotal.values()], shedNow: b.shedByService(processes) } : undefined;
  }

  healthy(): { ok: boolean; detail: string } {
    if (!this.started) return { ok: false, detail: 'starting' };
    return { ok: true, detail: `ok: ${this.traced.size} processes traced` };
  }

  collect(): MetricsSnapshot {
    const rt = this.rt;
    const events: Record<string, number> = {};
    for (const [t, n] of rt?.eventStats.byType ?? []) {
      events[this.probes.find((p) => p.eventType === t)?.id ?? eventTypeName(t)] = n;
    }
    const rb = rt?.obj.ringBufferStats();
    const maps: MetricsSnapshot['maps'] = [];
    for (const name of rt?.trackedMaps() ?? []) {
      try {
        const info = rt?.obj.mapInfo(name);
        maps.push({ name, entries: rt?.obj.mapCount(name) ?? 0, capacity: info?.maxEntries ?? 0, lru: info?.type === BPF_MAP_TYPE_LRU_HASH || info?.type === BPF_MAP_TYPE_LRU_PERCPU_HASH });
      } catch {
        /* map absent from this build */
      }
    }
    const binaries = this.attach?.binaries() ?? [];
    let malformed = rt?.eventStats.malformed ?? 0;
    for (const n of this.problems.values()) malformed += n;
    return {
      processesTraced: this.traced.size,
      binariesAttached: binaries.filter((b) => b.handles.length > 0).length,
      links: binaries.reduce((n, b) => n + linkCount(b), 0),
      events,
      eventsMalformed: malformed,
      bpfCounters: rt?.counters() ?? {},
      inflightIdleRemoved: rt?.inflightIdleRemoved ?? 0,
      kafka: rt?.kafkaStats(),
      ringBuffer: { droppedRecords: rb?.droppedRecords ?? 0n, droppedBatches: rb?.droppedBatches ?? 0n, records: rb?.records ?? 0n, wakeups: rt?.ringBufferWakeups() ?? {}, forcedWakeups: rt?.ringBufferForcedWakeups() ?? {}, batches: rt?.ringBufferBatches() ?? {} },
      spans: this.batcher?.stats ?? { exported: 0, dropped: { queue_full: 0, shutdown: 0 }, failed: 0, queued: 0 },
      programs: rt?.obj.programStats() ?? [],
      maps,
      attachFailures: this.attach?.stats.attachFailures ?? 0,
      offsetDisagreements: this.attach?.stats.offsetDisagreements ?? {},
      probeUnavailable: this.attach?.unavailableByProbe() ?? {},
      execToAttach: this.drainExecToAttach(),
      writeUser: this.writeUserReport(),
      lifecycle: {
        staleExecs: this.totals.staleExecs, heldProcesses: this.totals.heldProcesses, repairedBytes: this.totals.repairedBytes,
        unexamined: { ...this.totals.unexamined },
        untraced: { ...this.totals.untraced },
        eventsHeld: rt?.eventStats.held ?? 0, eventsNotSelected: rt?.eventStats.heldNotSelected ?? 0, eventsUndecided: rt?.eventStats.heldExpired ?? 0,
      },
      httpRoutesCut: { ...this.routes.cut },
      propagation: this.propagation?.counters() ?? {},
      overhead: this.overheadNow(),
      budget: this.budgetCounts(this.overheadNow().processes),
      kubernetes: this.k8s ? { pods: this.k8s.stats.pods, relists: this.k8s.stats.relists, failures: this.k8s.stats.failures, events: this.k8s.stats.events } : undefined,
    };
  }

  /**
   * Lets the ring-buffer consumer take what the probes have submitted so
   * far: asks for a hand-off now and gives it the time two hand-offs of the
   * former 20 ms interval had (the poll thread answers within a few ms
   * unless the machine stalls it), never longer than two intervals.
   */
  private async drainRingBuffer(): Promise<void> {
    this.rt?.consumeNow();
    await new Promise((r) => setTimeout(r, Math.min(DRAIN_WAIT_MS, (this.opts.consumeIntervalMs ?? DEFAULT_CONSUME_INTERVAL_MS) * 2 + 20)));
  }

  /** Exports every span produced so far (after consuming what the ring buffer holds). */
  async flush(): Promise<void> {
    await this.drainRingBuffer();
    await this.batcher?.forceFlush();
    // spans kept while the queue was full enter it as exports free room
    while (this.overflowHead < this.overflow.length) {
      const before = this.overflowHead;
      this.exportQueueHasSpace();
      if (this.overflowHead === before) break; // nothing left the queue (collector down)
      await this.batcher?.forceFlush();
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const pid of [...this.held]) this.continueHeld(pid, false);
    await this.watcher?.close();
    if (this.scanTimer) clearInterval(this.scanTimer);
    this.memoryTrim.stop();
    clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    this.scanTimer = undefined;
    if (this.budgetTimer) clearInterval(this.budgetTimer);
    this.budgetTimer = undefined;
    await this.attach?.detachAll();
    this.writeUser?.close();
    await this.k8s?.stop();
    await this.drainRingBuffer();
    await this.rt?.stop();
    // the whole flush is bounded by the batcher's shutdown timeout (the export timeout)
    this.batcher?.beginShutdown(this.overflow.length - this.overflowHead);
    await this.batcher?.untilShutdownDeadline(this.flush());
    // what still waits could not be exported (a dead collector): the
    // batcher counts it as it refuses it
    for (; this.overflowHead < this.overflow.length; this.overflowHead++) this.batcher?.push(this.overflow[this.overflowHead]!);
    // flushes once; what a dead collector leaves unexported is counted as dropped
    await this.batcher?.shutdown();
    this.started = false;
  }
}

/** The name of an event type for metric labels: `GT_EVENT_PROCESS_EXEC` → `process_exec`. */
function eventTypeName(t: number): string {
  const name = Object.entries(EventType).find(([, v]) => v === t)?.[0];
  return name ? name.replace(/^GT_EVENT_/, '').toLowerCase() : `type_${t}`;
}
