/**
 * The agent: loads the probes once, finds Go processes, attaches per binary,
 * turns events into spans and exports them. One instance per node.
 */
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { BpfRuntime, type MapSizes } from './bpf-runtime.ts';
import { AttachmentManager } from './attachments.ts';
import { GoProcessProbe, listPids, type ProcessInfo } from './discovery.ts';
import { decide, usesKubernetes, type SelectionRules } from './selection.ts';
import type { MetricsSnapshot, MetricsSource } from './metrics.ts';
import { SpanBatcher, type BatcherOptions } from '../export/batcher.ts';
import { MonotonicClock } from '../spans/clock.ts';
import { EventType, decodeEventHeader, decodeProcessEvent } from '../generated/layouts.ts';
import { processResource } from '../spans/resource.ts';
import { inClusterConnection, PodWatcher, type KubernetesConnection, type PodWatcherOptions } from '../metadata/kubernetes.ts';
import { ProcessMetadata } from '../metadata/process.ts';
import { probes as allProbes } from '../probes/registry.ts';
import type { EventContext, ProbeDescriptor } from '../probes/types.ts';
import type { Logger } from '../util/log.ts';

export interface AgentOptions {
  /** Which processes to trace. Default: every Go process except gotrail. */
  selection?: SelectionRules;
  /** Where spans go. */
  exporter: SpanExporter;
  batcher?: BatcherOptions;
  /** Interval of the /proc reconciliation scan, the safety net behind exec/exit events. Default 5000 ms (1000 ms when exec events are unavailable). */
  scanIntervalMs?: number;
  /** Ring-buffer consume interval. Default 5 ms. */
  consumeIntervalMs?: number;
  /** Probes to load. Default: all registered. */
  probes?: readonly ProbeDescriptor[];
  mapSizes?: MapSizes;
  /**
   * Attach with one uprobe_multi link per (binary, program) (true) or one
   * perf-event uprobe per site (false), as kernels before 6.6 require.
   * Default: uprobe_multi where the kernel has it.
   */
  uprobeMulti?: boolean;
  /** Compiled probe object. Default: build/probes/gotrail.bpf.o. */
  bpfObjectPath?: string;
  /** Called for every span before export (tests, demo). */
  onSpan?: (span: ReadableSpan) => void;
  /**
   * Kubernetes pod metadata (resource attributes, namespace and label rules).
   * Default: watched when running in a cluster (service-account token and
   * `KUBERNETES_SERVICE_HOST`), else nothing is attempted. `false`: never.
   */
  kubernetes?: false | (Omit<PodWatcherOptions, 'connection'> & { connection?: KubernetesConnection });
}

interface TracedProcess {
  info: ProcessInfo;
  resource: Resource;
  /** CLOCK_MONOTONIC ns when tracing began (the image then in place is the one traced) */
  sinceNs: bigint;
}

/** How long the resource of an exited process is kept for its last events. */
const EXITED_GRACE_MS = 10_000;
/** How long start waits for the first pod list, so that the first processes are named at once. */
const KUBERNETES_SYNC_WAIT_MS = 3000;

export class Agent implements MetricsSource {
  readonly log: Logger;
  private readonly opts: AgentOptions;
  private readonly probes: readonly ProbeDescriptor[];
  private rt: BpfRuntime | undefined;
  private attach: AttachmentManager | undefined;
  private batcher: SpanBatcher | undefined;
  private readonly discovery = new GoProcessProbe();
  private readonly clock = new MonotonicClock();
  /** pid → traced process */
  private readonly traced = new Map<number, TracedProcess>();
  /** pid → start time of processes seen and not traced (non-Go, excluded) */
  private readonly ignored = new Map<number, string>();
  private readonly exited = new Map<number, { resource: Resource; at: number }>();
  /** pid → start time of Go processes whose selection waits for their pod */
  private readonly pending = new Map<number, string>();
  private readonly meta = new ProcessMetadata();
  private k8s: PodWatcher | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private readonly problems = new Map<string, number>();
  private started = false;
  /** Cumulative counts since start. */
  readonly totals = { processesTraced: 0, processesExited: 0, execEvents: 0, exitEvents: 0 };

  constructor(log: Logger, opts: AgentOptions) {
    this.log = log;
    this.opts = opts;
    this.probes = opts.probes ?? allProbes;
    this.meta.onRefresh((pids) => this.podsChanged(pids));
  }

  async start(): Promise<void> {
    this.rt = new BpfRuntime(this.log, this.probes, { objectPath: this.opts.bpfObjectPath, mapSizes: this.opts.mapSizes, uprobeMulti: this.opts.uprobeMulti });
    const f = this.rt.features;
    this.log.info('probes loaded', {
      uprobeMulti: f.uprobeMulti, lockdown: f.lockdown,
      headerInjection: f.probeWriteUser ? 'available' : 'unavailable (kernel lockdown); node-local links only',
    });
    const usable = this.probes.filter((p) => !this.rt!.disabledProbes.has(p.id));
    this.attach = new AttachmentManager(this.rt, usable, this.log);
    this.batcher = new SpanBatcher(this.opts.exporter, this.log, this.opts.batcher);
    this.rt.onSystemEvent(EventType.GT_EVENT_PROCESS_EXEC, (buf, off) => {
      this.totals.execEvents++;
      const ev = decodeProcessEvent(buf, off);
      this.onExec(ev.hdr.tgid, ev.time_ns);
    });
    this.rt.onSystemEvent(EventType.GT_EVENT_PROCESS_EXIT, (buf, off) => {
      this.totals.exitEvents++;
      this.processExited(decodeEventHeader(buf, off).tgid);
    });
    const events = this.rt.attachProcessEvents();
    this.rt.start(this.eventContext(), { intervalMs: this.opts.consumeIntervalMs });
    await this.startKubernetes();
    this.started = true;
    this.scan();
    this.scanTimer = setInterval(() => this.scan(), this.opts.scanIntervalMs ?? (events ? 5000 : 1000));
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
    return {
      clock: this.clock,
      resourceOf: (tgid) => this.traced.get(tgid)?.resource ?? this.exited.get(tgid)?.resource,
      emit: (span) => {
        this.opts.onSpan?.(span);
        this.batcher?.push(span);
      },
      problem: (reason) => {
        const n = (this.problems.get(reason) ?? 0) + 1;
        this.problems.set(reason, n);
        if (n === 1) this.log.warn(`event problem: ${reason} (counted in gotrail_events_malformed_total)`);
      },
    };
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
    for (const [pid] of this.traced) if (!alive.has(pid)) this.processExited(pid);
    for (const [pid] of this.ignored) if (!alive.has(pid)) this.ignored.delete(pid);
    for (const [pid] of this.pending) if (!alive.has(pid)) this.pending.delete(pid);
    this.meta.prune(alive);
    const now = Date.now();
    for (const [pid, e] of this.exited) if (now - e.at > EXITED_GRACE_MS) this.exited.delete(pid);
    for (const pid of pids) {
      if (this.traced.has(pid) || this.ignored.has(pid)) continue;
      this.consider(pid);
    }
  }

  /** A process replaced its image: judge it afresh (it may be Go now, or no longer). */
  private onExec(pid: number, execNs: bigint): void {
    // The /proc scan can find the new image before its exec event is
    // consumed: that exec is already the traced image, and releasing and
    // re-attaching it would drop the requests in flight meanwhile.
    const t = this.traced.get(pid);
    if (t && execNs <= t.sinceNs) return;
    if (t) this.processExited(pid);
    this.ignored.delete(pid);
    this.meta.forget(pid);
    this.consider(pid);
    if (this.traced.has(pid)) {
      // the exec event's kernel timestamp and process.hrtime share CLOCK_MONOTONIC
      const seconds = Number(process.hrtime.bigint() - execNs) / 1e9;
      for (const list of [this.execToAttach, this.execToAttachRecent]) {
        list.push(seconds);
        if (list.length > 4096) list.splice(0, list.length - 4096);
      }
    }
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

  private consider(pid: number): void {
    const r = this.discovery.probe(pid);
    if (r.kind === 'gone') return;
    if (r.kind === 'unreadable') {
      // e.g. processes of another user namespace; not an agent problem
      this.log.debug('cannot inspect process', { pid, reason: r.reason });
      this.ignored.set(pid, '');
      return;
    }
    if (r.kind === 'not-go') {
      this.ignored.set(pid, '');
      return;
    }
    const info = r.info;
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
      return;
    }
    const resource = this.resourceOf(info);
    // allow-list first, so that no event of this process is missed once the links exist
    this.rt!.traceProcess(pid);
    const b = this.attach!.addProcess(pid, info.key, info.exePath, info.exe);
    if (b.handles.length === 0) {
      this.rt!.untraceProcess(pid);
      this.attach!.removeProcess(pid, info.key);
      this.ignored.set(pid, info.startTime);
      return;
    }
    this.traced.set(pid, { info, resource, sinceNs: process.hrtime.bigint() });
    this.totals.processesTraced++;
    this.log.info('tracing process', { pid, exe: info.exe, service: String(resource.attributes['service.name']) });
  }

  private resourceOf(info: ProcessInfo): Resource {
    return processResource({ pid: info.pid, executablePath: info.exe, goVersion: info.goVersion, env: this.meta.env(info.pid), extra: this.meta.resourceAttributes(info.pid) });
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
    try {
      this.rt?.untraceProcess(pid);
      this.rt?.forgetProcessState(pid);
    } catch (e) {
      this.log.once('exit.cleanup', 'cleaning BPF state of an exited process failed', { error: (e as Error).message });
    }
    this.attach?.removeProcess(pid, t.info.key);
    return t;
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

  /** What is traced right now, per binary and probe, with the reason for every probe that is not attached. */
  status(): unknown {
    const binaries = (this.attach?.binaries() ?? []).map((b) => ({
      path: b.exe,
      goVersion: b.plan?.goVersion,
      pids: [...b.pids].sort((x, y) => x - y),
      attached: [...new Set(b.handles.map((h) => h.probe))],
      notAttached: b.failedProbes,
      degraded: b.plan?.probes.flatMap((p) => p.degraded.map((d) => ({ probe: p.probe.id, reason: d }))) ?? [],
    }));
    return {
      processesTraced: [...this.traced.values()].map((t) => ({ pid: t.info.pid, exe: t.info.exe, service: t.resource.attributes['service.name'] })),
      binaries,
      notTraced: this.attach?.notTraced() ?? [],
      disabledProbes: Object.fromEntries(this.rt?.disabledProbes ?? []),
      kernel: this.rt?.features,
    };
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
        maps.push({ name, entries: rt?.obj.mapCount(name) ?? 0, capacity: rt?.obj.mapInfo(name).maxEntries ?? 0 });
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
      links: binaries.reduce((n, b) => n + b.handles.length, 0),
      events,
      eventsMalformed: malformed,
      bpfCounters: rt?.counters() ?? {},
      ringBuffer: { droppedRecords: rb?.droppedRecords ?? 0n, droppedBatches: rb?.droppedBatches ?? 0n, records: rb?.records ?? 0n },
      spans: this.batcher?.stats ?? { exported: 0, dropped: 0, failed: 0, queued: 0 },
      programs: rt?.obj.programStats() ?? [],
      maps,
      attachFailures: this.attach?.stats.attachFailures ?? 0,
      probeUnavailable: this.attach?.unavailableByProbe() ?? {},
      execToAttach: this.drainExecToAttach(),
      kubernetes: this.k8s ? { pods: this.k8s.stats.pods, relists: this.k8s.stats.relists, failures: this.k8s.stats.failures, events: this.k8s.stats.events } : undefined,
    };
  }

  /** Exports every span produced so far (after consuming what the ring buffer holds). */
  async flush(): Promise<void> {
    await new Promise((r) => setTimeout(r, (this.opts.consumeIntervalMs ?? 5) * 4 + 20));
    await this.batcher?.flush();
  }

  async stop(): Promise<void> {
    if (this.scanTimer) clearInterval(this.scanTimer);
    this.scanTimer = undefined;
    await this.attach?.detachAll();
    await this.k8s?.stop();
    await this.flush();
    await this.rt?.stop();
    await this.batcher?.shutdown();
    this.started = false;
  }
}

/** The name of an event type for metric labels: `GT_EVENT_PROCESS_EXEC` → `process_exec`. */
function eventTypeName(t: number): string {
  const name = Object.entries(EventType).find(([, v]) => v === t)?.[0];
  return name ? name.replace(/^GT_EVENT_/, '').toLowerCase() : `type_${t}`;
}
