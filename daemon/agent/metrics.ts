/**
 * The agent's own overhead and health as Prometheus metrics, served on an
 * address the operator chooses (loopback by default: metrics reveal which
 * programs run on the node).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { BlockList } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BatcherStats } from '../export/batcher.ts';
import { OverheadEstimator, type GoneOverhead, type HitCostCalibration, type ProcessOverhead } from './overhead.ts';
import { WRITE_USER_STATES } from './write-user.ts';

// node:http through getBuiltinModule, not import: an ES import of node:http
// evaluates its lazy WebSocket exports, which loads Node's bundled undici
// (~2 MiB of heap the agent never uses).
const { createServer } = process.getBuiltinModule('node:http');

export interface MetricsSource {
  collect(): MetricsSnapshot;
}

export interface MetricsSnapshot {
  processesTraced: number;
  binariesAttached: number;
  links: number;
  events: Record<string, number>;
  eventsMalformed: number;
  bpfCounters: Record<string, bigint>;
  /** idle in-flight records (kept for a goroutine's next call, holding none) removed by the sweep of full in-flight maps */
  inflightIdleRemoved?: number;
  /** traceparent injection outcomes by name (see enum gt_inject_outcome) */
  propagation?: Record<string, number>;
  ringBuffer: { droppedRecords: bigint; droppedBatches: bigint; records: bigint; /** per ring-buffer map: poll-thread wake-ups */ wakeups?: Record<string, bigint>; /** per ring-buffer map: wakeups the probes forced */ forcedWakeups?: Record<string, bigint>; /** per ring-buffer map: batches handed to JS */ batches?: Record<string, bigint> };
  spans: BatcherStats;
  programs: Array<{ name: string; runCount: bigint; runTimeNs: bigint }>;
  /** lru: the map evicts its least recently used entries when full (BPF_MAP_TYPE_LRU_HASH), by design */
  maps: Array<{ name: string; entries: number; capacity: number; lru?: boolean }>;
  attachFailures: number;
  /** per field: binaries whose offset sources (DWARF, type metadata, database) gave different offsets */
  offsetDisagreements?: Record<string, number>;
  /** per probe: binaries in use on which it could not attach (reasons in the log and in `gotrail inspect`) */
  probeUnavailable: Record<string, number>;
  /** exec-to-attach samples (seconds) since the last snapshot */
  execToAttach: number[];
  /** matched routes not reported as http.route, by reason (cardinality: past the per-service limit; truncated: longer than the probe copies) */
  httpRoutesCut?: Record<string, number>;
  /** the Kubernetes pod watcher, when running in a cluster */
  kubernetes?: { pods: number; relists: number; failures: number; events: number };
  /** the bpf_probe_write_user injection as detected at start, and its requests by outcome */
  writeUser?: { method: string; state: string; outcomes: Record<string, number> };
  /** Kafka producer→consumer links by outcome, and Kafka messages not traced by reason */
  kafka?: { links: Record<string, number>; untraced: Record<string, number> };
  /** process lifecycle: rewritten binaries met at exec, processes held for repair, repaired code bytes, held probe events */
  /** the calibrated uprobe trap cost and each traced process's estimated overhead */
  /** processes: those traced now; gone: what those no longer traced counted, by service */
  overhead?: { hitCost: HitCostCalibration | undefined; processes: ProcessOverhead[]; gone?: ReadonlyMap<string, GoneOverhead> };
  /** the overhead budget (undefined while it was never on): probes shed and restored so far, and shed now per service */
  budget?: { shed: Array<{ service: string; level: string; probe: string; count: number }>; restored: Array<{ service: string; level: string; probe: string; count: number }>; shedNow: Map<string, number> };
  lifecycle?: { staleExecs: number; heldProcesses: number; repairedBytes: number; eventsHeld: number; eventsNotSelected: number; eventsUndecided: number; /** processes that exited before they were looked at whose executable could not be found, by reason */ unexamined?: Record<string, number>; /** selected Go processes left untraced, by reason */ untraced?: Record<string, number> };
}

/**
 * How often the event-loop delay is sampled (ms): at prom-client's default
 * (every 10 ms) that timer was the idle agent's main source of wake-ups
 * (~100 per second); once a second keeps the metric at 1 wake-up per second.
 */
const EVENT_LOOP_SAMPLE_MS = 1000;
/**
 * The event-loop delay histogram's min when it holds no sample: INT64_MAX
 * nanoseconds (Node's `histogram.min` before the first record), in seconds.
 * No real delay comes near it (292 years).
 */
const EVENT_LOOP_NO_SAMPLE_S = Number(2n ** 63n - 1n) / 1e9;

/** BPF counters named skipped_<reason> count requests not traced on purpose, not losses. */
const SKIPPED = 'skipped_';
/** BPF counters that count no lost event: each has a metric of its own. */
const NOT_LOSSES: ReadonlySet<string> = new Set(['not_sampled', 'not_sampled_sampler', 'traceparent_invalid']);

export function createMetrics(source: MetricsSource): Registry {
  const reg = new Registry();
  collectDefaultMetrics({ register: reg, prefix: 'gotrail_agent_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  // Node's event-loop delay histogram records the time between its timer's
  // runs, the sampling interval included: once a second, an idle agent's
  // lag min, mean and p50 read ~1 s. Reported here: the delay beyond the
  // interval, what a lag is (never below 0: the timer may run a little early).
  // Each scrape resets the histogram (prom-client): a scrape within a
  // second of the previous one finds no sample, where the histogram's min
  // is its int64 "none" sentinel (~9.2e9 s) and its mean and stddev NaN.
  // No delay recorded since the last scrape reads 0.
  const lagGauge = (stat: string): Gauge<string> | undefined => reg.getSingleMetric(`gotrail_agent_nodejs_eventloop_lag_${stat}_seconds`) as Gauge<string> | undefined;
  const minGauge = lagGauge('min');
  const rawMin = minGauge?.get.bind(minGauge);
  const noSample = async (): Promise<boolean> => {
    const v = (await rawMin?.())?.values[0]?.value;
    return v === undefined || !(v < EVENT_LOOP_NO_SAMPLE_S);
  };
  for (const stat of ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99']) {
    const g = lagGauge(stat);
    if (!g) continue;
    const get = g.get.bind(g);
    // stddev does not move with the interval; every other statistic does
    const shift = stat === 'stddev' ? 0 : EVENT_LOOP_SAMPLE_MS / 1000;
    g.get = async () => {
      const r = await get();
      const none = await noSample();
      return { ...r, values: r.values.map((v) => ({ ...v, value: none ? 0 : Math.max(0, v.value - shift) })) };
    };
  }
  let snap: MetricsSnapshot | undefined;
  const take = (): MetricsSnapshot => (snap ??= source.collect());
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge<string>, s: MetricsSnapshot) => void): void => {
    new Gauge({ name, help, labelNames, registers: [reg], collect() { fill(this, take()); } });
  };
  // counters read from cumulative sources are exposed with Counter semantics via reset+inc
  const counter = (name: string, help: string, labelNames: string[], fill: (set: (labels: Record<string, string>, v: number) => void, s: MetricsSnapshot) => void): void => {
    new Counter({
      name, help, labelNames, registers: [reg],
      collect() {
        this.reset();
        fill((labels, v) => this.inc(labels, v), take());
      },
    });
  };
  gauge('gotrail_propagation_method_state', 'Header injection with bpf_probe_write_user by state, as detected at start (1: the current state): active, dry-run (the build without the helper call), refused (the kernel refuses the helper, e.g. in lockdown) or off', ['method', 'state'], (g, s) => {
    const m = s.writeUser;
    if (m) for (const st of WRITE_USER_STATES) g.set({ method: m.method, state: st }, m.state === st ? 1 : 0);
  });
  counter('gotrail_propagation_write_user_total', 'Outgoing net/http requests the bpf_probe_write_user injection handled, by outcome (injected; would_inject: dry run; has_traceparent, excluded: not losses; no_room, flushed, too_long, not_buffered, write_failed: the request went out without the header)', ['outcome'], (set, s) => {
    for (const [o, v] of Object.entries(s.writeUser?.outcomes ?? {})) set({ outcome: o }, v);
  });
  gauge('gotrail_processes_traced', 'Go processes currently traced', [], (g, s) => g.set(s.processesTraced));
  gauge('gotrail_binaries_attached', 'Distinct binaries with probes attached', [], (g, s) => g.set(s.binariesAttached));
  gauge('gotrail_link_sets', 'Probe link sets currently attached', [], (g, s) => g.set(s.links));
  counter('gotrail_events_total', 'Events received from the probes, by type', ['type'], (set, s) => {
    for (const [t, v] of Object.entries(s.events)) set({ type: t }, v);
  });
  counter('gotrail_events_malformed_total', 'Events that could not be decoded', [], (set, s) => set({}, s.eventsMalformed));
  counter('gotrail_events_lost_total', 'Events lost before reaching user space, by reason', ['reason'], (set, s) => {
    for (const [r, v] of Object.entries(s.bpfCounters)) if (!r.startsWith(SKIPPED) && !NOT_LOSSES.has(r)) set({ reason: r }, Number(v));
    set({ reason: 'ringbuf_consumer_queue_full' }, Number(s.ringBuffer.droppedRecords));
  });
  counter('gotrail_inflight_idle_records_removed_total', 'Idle in-flight records (kept between a goroutine\'s calls, holding none) removed from in-flight maps at least half full: no span lost; the goroutine\'s next call makes its record again', [], (set, s) => set({}, s.inflightIdleRemoved ?? 0));
  counter('gotrail_ringbuf_wakeups_total', 'Times the poll thread of each ring buffer woke up (timer tick, kernel wakeup or control signal); an idle agent keeps it still', ['map'], (set, s) => {
    for (const [m, v] of Object.entries(s.ringBuffer.wakeups ?? {})) set({ map: m }, Number(v));
  });
  counter('gotrail_ringbuf_forced_wakeups_total', 'Wakeups the probes forced on each ring buffer with a wake control: the first event after the consumer fell asleep, and one per crossing of the wake threshold while it runs (not one per event)', ['map'], (set, s) => {
    for (const [m, v] of Object.entries(s.ringBuffer.forcedWakeups ?? {})) set({ map: m }, Number(v));
  });
  counter('gotrail_ringbuf_batches_total', 'Batches of records each ring buffer\'s poll thread handed to the JavaScript thread; each hand-off costs a fixed share of the agent\'s CPU, so while events flow it should grow by about one per consume interval', ['map'], (set, s) => {
    for (const [m, v] of Object.entries(s.ringBuffer.batches ?? {})) set({ map: m }, Number(v));
  });
  counter('gotrail_requests_skipped_total', 'Requests deliberately not traced, by reason (self: sent by gotrail itself, e.g. its OTLP exports to a traced collector)', ['reason'], (set, s) => {
    for (const [r, v] of Object.entries(s.bpfCounters)) if (r.startsWith(SKIPPED)) set({ reason: r.slice(SKIPPED.length) }, Number(v));
  });
  counter('gotrail_spans_not_sampled_total', 'Spans not made (no event sent) because their trace is not sampled, by where that was decided (parent: an incoming traceparent\'s flags, under a parentbased_* sampler; sampler: this node\'s OTEL_TRACES_SAMPLER at the trace\'s root span)', ['decided_by'], (set, s) => {
    set({ decided_by: 'parent' }, Number(s.bpfCounters['not_sampled'] ?? 0n));
    set({ decided_by: 'sampler' }, Number(s.bpfCounters['not_sampled_sampler'] ?? 0n));
  });
  counter('gotrail_http_routes_cut_total', 'Matched HTTP routes left out of their span (no http.route, method-only name), by reason (cardinality: past --max-http-routes distinct routes of the service; truncated: a template longer than the 128 bytes the probe copies)', ['reason'], (set, s) => {
    for (const [r, v] of Object.entries(s.httpRoutesCut ?? {})) set({ reason: r }, v);
  });
  counter('gotrail_traceparents_invalid_total', 'Incoming traceparents not used (malformed, or sent more than once): the request started a new trace', [], (set, s) => {
    set({}, Number(s.bpfCounters['traceparent_invalid'] ?? 0n));
  });
  counter('gotrail_propagation_inject_total', 'Outgoing HTTP/1.x requests and traceparent injection, by outcome (injected; marked: requests marked for injection; denied, not_allowed: destination rules; present: the request carried a traceparent already; not_in_sockmap: connection opened before gotrail or before its process was traced; not_a_request, header_incomplete, pull_failed, push_failed, store_failed, not_sent, sockmap_full: failures, the request went out unchanged)', ['outcome'], (set, s) => {
    for (const [o, v] of Object.entries(s.propagation ?? {})) set({ outcome: o }, v);
  });
  counter('gotrail_kafka_links_total', 'Kafka producer→consumer links, by outcome (published: a written message\'s span recorded; found: a read message joined its producer\'s trace; found_by_content: read before its producer had the offset, joined by content; ambiguous: so read, but identical messages were in flight, not linked; expired: found past its lifetime, not used; not_found: a read message with neither traceparent nor traced producer; evicted: pushed out of the full map unused or before its lifetime; store_failed)', ['outcome'], (set, s) => {
    for (const [k, v] of Object.entries(s.kafka?.links ?? {})) set({ outcome: k }, v);
  });
  counter('gotrail_kafka_messages_untraced_total', 'Kafka messages written without a span, by reason (limit: beyond the 128 traced per WriteMessages call or batch, or a message with neither key nor value; unpaired: its WriteMessages call was not seen, e.g. it began before the process was traced)', ['reason'], (set, s) => {
    for (const [k, v] of Object.entries(s.kafka?.untraced ?? {})) set({ reason: k }, v);
  });
  counter('gotrail_spans_exported_total', 'Spans handed to the exporter successfully', [], (set, s) => set({}, s.spans.exported));
  counter('gotrail_spans_dropped_total', 'Spans dropped before export, by reason (queue_full: pushed into a full export queue; shutdown: unexported when the agent stopped)', ['reason'], (set, s) => {
    for (const [r, v] of Object.entries(s.spans.dropped)) set({ reason: r }, v);
  });
  counter('gotrail_export_failures_total', 'Export attempts that failed (their spans are retried)', [], (set, s) => set({}, s.spans.failed));
  gauge('gotrail_span_queue_length', 'Spans held in the export queue (waiting or being exported)', [], (g, s) => g.set(s.spans.queued));
  counter('gotrail_probe_runs_total', 'Times each BPF program ran, as the kernel counts it: a probe program that gt_dispatch tail-calls (one uprobe_multi link per binary) is counted, with its run time, under gt_dispatch; gotrail_probe_hits_total gives the hits per probe site', ['program'], (set, s) => {
    for (const p of s.programs) set({ program: p.name }, Number(p.runCount));
  });
  counter('gotrail_probe_run_seconds_total', 'CPU time spent in each BPF program (excludes the uprobe trap itself); gt_dispatch includes the probe programs it tail-calls', ['program'], (set, s) => {
    for (const p of s.programs) set({ program: p.name }, Number(p.runTimeNs) / 1e9);
  });
  gauge('gotrail_bpf_map_entries', 'Entries in each BPF map', ['map'], (g, s) => {
    for (const m of s.maps) g.set({ map: m.name }, m.entries);
  });
  gauge('gotrail_bpf_map_capacity', 'Capacity (max entries) of each BPF map', ['map'], (g, s) => {
    for (const m of s.maps) g.set({ map: m.name }, m.capacity);
  });
  gauge('gotrail_bpf_map_fill_ratio', 'How full each BPF hash map that refuses new entries when full is (entries / capacity); LRU maps, which make room by evicting their least recently used entries and run full by design on a busy node, are left out (gotrail_bpf_map_entries has them)', ['map'], (g, s) => {
    for (const m of s.maps) if (!m.lru) g.set({ map: m.name }, m.capacity ? m.entries / m.capacity : 0);
  });
  counter('gotrail_offset_disagreements_total', 'Binaries analysed whose offset sources (DWARF, Go type metadata, offsets database) gave different offsets for a field (DWARF, then type metadata, is used; the log names the binary)', ['field'], (set, s) => {
    for (const [f, n] of Object.entries(s.offsetDisagreements ?? {})) set({ field: f }, n);
  });
  gauge('gotrail_probe_unavailable_binaries', 'Recently seen Go binaries on which a probe cannot attach (the log and gotrail inspect say why)', ['probe'], (g, s) => {
    for (const [p, n] of Object.entries(s.probeUnavailable)) g.set({ probe: p }, n);
  });
  new Histogram({
    name: 'gotrail_exec_to_attach_seconds',
    help: 'Time from a Go process\'s exec to its probes being active',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [reg],
    collect() {
      for (const v of take().execToAttach) this.observe(v);
    },
  });
  gauge('gotrail_kubernetes_pods', 'Pods of this node known to the agent (absent outside Kubernetes)', [], (g, s) => {
    if (s.kubernetes) g.set(s.kubernetes.pods);
  });
  counter('gotrail_kubernetes_watch_failures_total', 'Failed Kubernetes API requests (list or watch), retried with backoff', [], (set, s) => {
    if (s.kubernetes) set({}, s.kubernetes.failures);
  });
  counter('gotrail_kubernetes_relists_total', 'Full pod relists (after 410 Gone or a lost watch)', [], (set, s) => {
    if (s.kubernetes) set({}, s.kubernetes.relists);
  });
  counter('gotrail_attach_failures_total', 'Probe attachments that failed', [], (set, s) => set({}, s.attachFailures));
  counter('gotrail_binary_rewrites_total', 'Processes started on an attached binary rewritten in place (its stale probes were replaced first)', [], (set, s) => set({}, s.lifecycle?.staleExecs ?? 0));
  counter('gotrail_processes_held_total', 'Processes stopped at exec until stale probes of their rewritten binary were gone', [], (set, s) => set({}, s.lifecycle?.heldProcesses ?? 0));
  counter('gotrail_code_bytes_repaired_total', 'Code bytes of such processes the kernel had restored from the old binary, put back to the file\'s content', [], (set, s) => set({}, s.lifecycle?.repairedBytes ?? 0));
  counter('gotrail_processes_unexamined_total', 'Processes that exited before the agent looked at them and whose executable could not be found by their exec event\'s path, so neither they nor the next processes of that binary are traced if it is a Go program, by reason (cwd_gone: run by a relative path, and neither the process nor its parent was there to resolve it against; not_found: the path names no file now, or another file than the one run; no_path: the exec event had no path); the log says each path once', ['reason'], (set, s) => {
    for (const [r, v] of Object.entries(s.lifecycle?.unexamined ?? {})) set({ reason: r }, v);
  });
  counter('gotrail_events_held_total', 'Probe events of processes allowed at exec, kept until the agent decided on the process', [], (set, s) => set({}, s.lifecycle?.eventsHeld ?? 0));
  counter('gotrail_processes_untraced_total', 'Go processes the selection rules chose that were left untraced, by reason (allow_list_full: the BPF allow-list held --max-processes processes already; each such process is counted once, tried again by every scan while it waits, and traced once a traced process exits; /status lists those waiting)', ['reason'], (set, s) => {
    for (const [r, v] of Object.entries(s.lifecycle?.untraced ?? {})) set({ reason: r }, v);
  });
  counter('gotrail_events_dropped_total', 'Probe events dropped in user space, by reason (not_selected: the selection rules excluded the process after the exec hook allowed it; undecided_process: no decision in time)', ['reason'], (set, s) => {
    set({ reason: 'not_selected' }, s.lifecycle?.eventsNotSelected ?? 0);
    set({ reason: 'undecided_process' }, s.lifecycle?.eventsUndecided ?? 0);
  });
  const perService = (s: MetricsSnapshot): ReturnType<typeof OverheadEstimator.byService> => OverheadEstimator.byService(s.overhead?.processes ?? [], s.overhead?.gone);
  gauge('gotrail_uprobe_hit_cost_seconds', 'CPU time one uprobe hit costs the traced thread on this host, besides the BPF program\'s own run time (the trap and the kernel\'s dispatch), by kind of the probed instruction: emulated by the kernel (a branch, a direct CALL, PUSH, NOP) or single-stepped out of line, a second trap (RET, MOV and the rest); calibrated at start-up with an empty program at the entry PUSH (emulated) and at the RET (single_stepped) of a helper\'s no-op function; absent until calibrated', ['kind'], (g, s) => {
    const c = s.overhead?.hitCost;
    if (c) for (const kind of ['emulated', 'single_stepped'] as const) g.set({ kind }, c.secondsPerHit[kind]);
  });
  gauge('gotrail_inject_send_cost_seconds', 'CPU time one send through the traceparent injection\'s sockmap costs the sending process on this host, besides the sk_msg program\'s own run time (the kernel\'s tcp_bpf send path and its receive path for the reply): calibrated at start-up as the difference in thread CPU per request/response exchange of a helper\'s loopback connection in the sockmap and not in it, less the program\'s run time; 0 until calibrated and while injection is off', [], (g, s) => {
    g.set({}, s.overhead?.hitCost?.secondsPerInjectSend ?? 0);
  });
  counter('gotrail_propagation_inject_sends_total', 'Sends of traced processes through the traceparent injection\'s sockmap (runs of the sk_msg program, counted in BPF per process), by service; each is priced in gotrail_overhead_estimated_seconds_total at gotrail_inject_send_cost_seconds plus the program\'s run time', ['service'], (set, s) => {
    for (const [svc, o] of perService(s)) set({ service: svc }, o.injectSends);
  });
  counter('gotrail_probe_hits_total', 'Uprobe hits in traced processes, by service and probe site (counted in BPF; what a process counted stays in the sum after it exits)', ['service', 'site'], (set, s) => {
    for (const [svc, o] of perService(s)) for (const [site, n] of Object.entries(o.hits)) set({ service: svc, site }, n);
  });
  counter('gotrail_overhead_estimated_seconds_total', 'Estimated CPU time tracing cost the traced processes, by service: Σ over probe sites of hits × (calibrated trap cost of the kind of the probed instruction + BPF run time), plus sends through the traceparent injection\'s sockmap × (gotrail_inject_send_cost_seconds + the sk_msg program\'s run time)', ['service'], (set, s) => {
    for (const [svc, o] of perService(s)) set({ service: svc }, o.estimatedSeconds);
  });
  // only services with traced processes, and a ratio only over a window in which they used CPU
  const traced = (s: MetricsSnapshot): Set<string> => new Set((s.overhead?.processes ?? []).map((p) => p.service));
  gauge('gotrail_overhead_seconds_per_second', 'Estimated CPU seconds per second tracing costs the traced processes, by service with traced processes, since the previous sample', ['service'], (g, s) => {
    g.reset();
    const now = traced(s);
    for (const [svc, o] of perService(s)) if (now.has(svc)) g.set({ service: svc }, o.secondsPerSecond);
  });
  gauge('gotrail_overhead_cpu_ratio', 'Estimated tracing cost as a fraction of the traced processes\' own CPU time (from /proc), by service, since the previous sample; absent for a service whose processes used no CPU in that window, or that has none traced', ['service'], (g, s) => {
    g.reset();
    const now = traced(s);
    for (const [svc, o] of perService(s)) if (now.has(svc) && o.cpuFraction !== undefined) g.set({ service: svc }, o.cpuFraction);
  });
  counter('gotrail_probes_shed_total', 'Probes detached from a binary to keep its processes within the overhead budget (--overhead-budget), by reason, service, shedding level and probe', ['reason', 'service', 'level', 'probe'], (set, s) => {
    for (const c of s.budget?.shed ?? []) set({ reason: 'overhead_budget', service: c.service, level: c.level, probe: c.probe }, c.count);
  });
  counter('gotrail_probes_restored_total', 'Shed probes attached again once the estimate stayed under half the overhead budget, by service, level and probe', ['service', 'level', 'probe'], (set, s) => {
    for (const c of s.budget?.restored ?? []) set({ service: c.service, level: c.level, probe: c.probe }, c.count);
  });
  gauge('gotrail_shed_probes', 'Probes currently shed by the overhead budget, by service', ['service'], (g, s) => {
    g.reset();
    for (const [svc, n] of s.budget?.shedNow ?? []) g.set({ service: svc }, n);
  });
  // one snapshot per scrape
  const orig = reg.metrics.bind(reg);
  reg.metrics = async () => {
    snap = undefined;
    try {
      return await orig();
    } finally {
      snap = undefined;
    }
  };
  return reg;
}

/**
 * The path of a request target, without its query: the origin form
 * (`/metrics?x=1`) as most clients send it, or the absolute form
 * (`http://host:9464/metrics`), which a client going through a proxy, or
 * configured with one, sends and which every HTTP/1.1 server must accept
 * (RFC 9112, 3.2.2). Node passes the target as it came. Anything else (an
 * asterisk, a malformed URL) is returned as given, and so answered 404.
 */
function requestPath(target: string): string {
  if (/^https?:\/\//i.test(target)) {
    try {
      return new URL(target).pathname;
    } catch {
      return target;
    }
  }
  return target.split('?', 1)[0]!;
}

export interface MetricsServer {
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Who may use the operational endpoints, /status (what the node runs and
 * how the agent is configured) and POST /calibrate (makes the agent measure
 * again): `loopback`, peers on a loopback address only (127.0.0.0/8, ::1,
 * and IPv4-mapped 127.x) — a shell on the host, or `kubectl port-forward`,
 * whose container runtime connects from the pod's own loopback — or `any`,
 * every peer that reaches the metrics address. /metrics, /healthz and
 * /readyz answer every peer (scrapers, the kubelet's probes).
 */
export type AdminAccess = 'loopback' | 'any';

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/**
 * Whether a peer address (`socket.remoteAddress`) is a loopback address;
 * an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, as a server bound to
 * `::` sees IPv4 peers) counts as its IPv4 address. Undefined (a closed
 * socket): false.
 */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  return LOOPBACK.check(address, address.includes(':') ? 'ipv6' : 'ipv4');
}

/**
 * Serves /metrics, /healthz, /readyz and /status (GET and HEAD), and POST
 * /calibrate (measures the uprobe trap cost again and answers the result;
 * only when `admin.calibrate` is given): `healthy` decides the liveness
 * answer (/healthz), `ready` the readiness answer (/readyz; 200 or 503 with
 * the reason as text), `status` (JSON) says what is traced and why not.
 * /status and /calibrate answer the peers `admin.access` admits (default
 * `loopback`), any other peer 403 whatever the method. Another method on
 * one of these paths is answered 405 with an `Allow` header (RFC 9110,
 * 15.5.6), any other path 404. `bound`: a server already listening (its
 * address is then not bound again).
 */
export function serveMetrics(reg: Registry, host: string, port: number, healthy: () => { ok: boolean; detail: string }, status: () => unknown = () => ({}), ready: () => { ok: boolean; detail: string } = healthy, admin: { calibrate?: () => Promise<unknown>; access?: AdminAccess } = {}, bound?: Server): Promise<MetricsServer> {
  type Route = (res: ServerResponse) => void;
  const probe = (answer: () => { ok: boolean; detail: string }): Route => (res) => {
    const h = answer();
    res.writeHead(h.ok ? 200 : 503, { 'content-type': 'text/plain' });
    res.end(h.detail + '\n');
  };
  // reads only: HEAD answers as GET does (Node's server leaves the body out)
  const reads: Record<string, Route> = {
    '/metrics': (res) => {
      reg.metrics().then((text) => {
        res.writeHead(200, { 'content-type': reg.contentType });
        res.end(text);
      }, (e: Error) => {
        res.writeHead(500);
        res.end(e.message);
      });
    },
    '/status': (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(status(), null, 2) + '\n');
    },
    '/healthz': probe(healthy),
    '/readyz': probe(ready),
  };
  const calibrate = admin.calibrate;
  const anyPeer = (admin.access ?? 'loopback') === 'any';
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    // routed by path alone: a scraper may add a query (Prometheus' `params`), which changes nothing here
    const path = requestPath(req.url ?? '');
    const method = req.method ?? '';
    const read = Object.hasOwn(reads, path) ? reads[path] : undefined;
    if ((path === '/status' || (path === '/calibrate' && calibrate)) && !anyPeer && !isLoopbackAddress(req.socket.remoteAddress)) {
      // refused whatever the method: such a peer is shown nothing and runs nothing
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end(`${path} answers loopback peers only (on the host, or through kubectl port-forward); --admin-access any opens it to every peer (or adminAccess: any in the configuration file, where no --admin-access flag is given: the Helm chart and the kustomize base give one, set by metrics.adminAccess / their args)\n`);
    } else if (read && (method === 'GET' || method === 'HEAD')) {
      read(res);
    } else if (path === '/calibrate' && calibrate && method === 'POST') {
      calibrate().then((c) => {
        res.writeHead(c ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify(c ?? { error: 'calibration failed (see the log)' }) + '\n');
      }, () => {
        res.writeHead(500);
        res.end();
      });
    } else if (read || (path === '/calibrate' && calibrate)) {
      // a wrong method changes nothing: a DELETE /status or a POST /metrics is refused, not served
      const allow = read ? 'GET, HEAD' : 'POST';
      res.writeHead(405, { allow, 'content-type': 'text/plain' });
      res.end(`method ${method} not allowed on ${path}: use ${allow}\n`);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(`not found: try /metrics, /healthz, /readyz or /status${calibrate ? ' (GET), or POST /calibrate' : ''}\n`);
    }
  };
  const close = (server: Server) => (): Promise<void> => new Promise((r) => server.close(() => r()));
  if (bound) {
    // a server the caller bound early (an address in use stops the start before the probes load)
    bound.on('request', handler);
    bound.ref();
    const a = bound.address();
    return Promise.resolve({ address: host, port: typeof a === 'object' && a ? a.port : port, close: close(bound) });
  }
  const server: Server = createServer(handler);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address();
      resolve({
        address: host,
        port: typeof a === 'object' && a ? a.port : port,
        close: close(server),
      });
    });
  });
}
