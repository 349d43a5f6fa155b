/**
 * The overhead budget (`--overhead-budget`): when the processes of one
 * binary spend more than the budget's fraction of their own CPU time on
 * tracing (the estimate of overhead.ts: probe hits × calibrated trap cost +
 * BPF run time, over their utime + stime from /proc), gotrail sheds probes of
 * that binary, one level at a time, and brings them back, one level at a
 * time, once the cost they would add is well under the budget.
 *
 * Shedding detaches the probes' links for that binary (attachments.ts): only
 * a detached uprobe stops costing its trap, so a probe that stayed attached
 * but skipped its work in BPF would save only its BPF time.
 *
 * Order, cheapest loss first (SHED_LEVELS):
 *  1. enrichment with no spans of its own: goroutine ancestry (`runtime.newproc`
 *     and `goexit1`, a hit per `go` statement and per goroutine exit, the
 *     hottest probes of a program that starts goroutines per request) and the
 *     routers (`http.route`). Spans stay; calls made on other goroutines start
 *     traces of their own, server spans lose their route.
 *  2. spans inside a request: database/sql, go-redis, spans the program makes
 *     through the OpenTelemetry API. Typically many per request.
 *  3. client spans (net/http, gRPC): the server spans of other traced
 *     processes on the node are no longer linked to them.
 *  4. server spans (net/http, gRPC): the root of every trace, shed last.
 * A probe no level lists (one added later) is shed with the client spans.
 *
 * Decision, per binary, over a moving window (`windowMs`, default 10 s) of the
 * estimate summed over its traced processes:
 *  - over budget: estimated seconds / CPU seconds > budget, and at least
 *    `floor` seconds per second (1 ms/s: below that a process's CPU, read in
 *    10 ms ticks, is too coarse to divide by, and the cost is negligible in
 *    absolute terms) → shed the next level that has a probe attached; then
 *    the window starts afresh, so each level is judged on a full window of
 *    its own.
 *  - a shed level is restored when, for `3 × windowMs` without a break, the
 *    estimate with it back stays under half the budget (hysteresis): the
 *    current estimate plus the fraction of CPU the binary's tracing cost when
 *    that level was shed (an upper bound of the level's own share), or, in
 *    absolute terms, that fraction times the CPU the processes use now stays
 *    under half the floor (load has stopped). Last shed, first restored.
 */
import type { AttachmentManager } from './attachments.ts';
import type { ProcessOverhead } from './overhead.ts';
import type { Logger } from '../util/log.ts';
import { ginProbe } from '../probes/go/github.com/gin-gonic/gin/descriptor.ts';
import { gorillaMuxProbe } from '../probes/go/github.com/gorilla/mux/descriptor.ts';
import { chiProbe } from '../probes/go/github.com/go-chi/chi/v5/descriptor.ts';
import { goRedisProbe } from '../probes/go/github.com/redis/go-redis/v9/descriptor.ts';
import { grpcClientProbe } from '../probes/go/google.golang.org/grpc/client/descriptor.ts';
import { grpcServerProbe } from '../probes/go/google.golang.org/grpc/server/descriptor.ts';
import { otelApiProbe } from '../probes/go/go.opentelemetry.io/otel/descriptor.ts';
import { httpClientProbe } from '../probes/go/net/http/client/descriptor.ts';
import { httpServerProbe } from '../probes/go/net/http/server/descriptor.ts';
import { runtimeProbe } from '../probes/go/runtime/descriptor.ts';
import { sqlProbe } from '../probes/go/database/sql/descriptor.ts';

/** One level of the shedding order: its name (in logs, metrics and /status) and its probes' ids. */
export interface ShedLevel {
  name: string;
  probes: readonly string[];
}

/** The order in which probes are shed (first first) and restored (last first). */
export const SHED_LEVELS: readonly ShedLevel[] = [
  { name: 'enrichment', probes: [runtimeProbe.id, gorillaMuxProbe.id, chiProbe.id, ginProbe.id] },
  { name: 'inner_spans', probes: [sqlProbe.id, goRedisProbe.id, otelApiProbe.id] },
  { name: 'client_spans', probes: [httpClientProbe.id, grpcClientProbe.id] },
  { name: 'server_spans', probes: [httpServerProbe.id, grpcServerProbe.id] },
];
/** Level of a probe no level lists. */
const DEFAULT_LEVEL = 2;

/** Index in SHED_LEVELS of a probe. */
export function shedLevelOf(probe: string): number {
  const i = SHED_LEVELS.findIndex((l) => l.probes.includes(probe));
  return i < 0 ? DEFAULT_LEVEL : i;
}

/** Default moving window, ms. */
export const DEFAULT_BUDGET_WINDOW_MS = 10_000;
/** Restore only after this many windows under half the budget. */
const RESTORE_WINDOWS = 3;
/** Estimated seconds per second under which a binary is never over budget. */
const FLOOR_SECONDS_PER_SECOND = 0.001;

export interface BudgetSettings {
  /** Fraction of the traced processes' CPU time tracing may cost, e.g. 0.02 for `2%`. */
  fraction: number;
  /** Moving window, ms. Default 10 000. */
  windowMs?: number;
}

/** One traced process's cumulative figures at a sample. */
export interface ProcessSample {
  pid: number;
  /** Estimated CPU seconds tracing cost it so far (overhead.ts). */
  estimatedSeconds: number;
  /** Its own CPU seconds so far (/proc), undefined when unreadable. */
  cpuSeconds: number | undefined;
}

/** What the budget asks of one binary. */
export interface BudgetAction {
  action: 'shed' | 'restore';
  level: string;
  /** Probes of the binary to detach (shed) or attach again (restore). */
  probes: string[];
  /** Over the window that decided: estimated seconds / CPU seconds. */
  cpuFraction: number;
  /** Over the window that decided: estimated seconds per second. */
  secondsPerSecond: number;
}

interface ShedEntry { level: number; probes: string[]; cpuFraction: number; at: number }

interface BinaryState {
  last: Map<number, { est: number; cpu: number | undefined }>;
  samples: Array<{ at: number; est: number; cpu: number }>;
  /** when the current window began (start, or the last shed or restore) */
  since: number;
  shed: ShedEntry[];
  /** since when the restore condition holds without a break */
  belowSince: number | undefined;
  /** last window's figures (for /status) */
  cpuFraction: number | undefined;
  secondsPerSecond: number;
}

/** /status view of one binary under the budget. */
export interface BudgetBinaryStatus {
  /** Levels shed, first shed first, with the probes detached and the estimate that decided. */
  shed: Array<{ level: string; probes: string[]; cpuFraction: number; since: string }>;
  /** The moving window's estimated seconds / CPU seconds (undefined before the processes used CPU). */
  cpuFraction: number | undefined;
  secondsPerSecond: number;
}

/**
 * Decides, per binary, what to shed and restore. Pure policy: fed with
 * samples, it answers actions; the caller detaches and attaches. Time is
 * passed in (ms), so tests can drive it.
 */
export class OverheadBudget {
  private readonly state = new Map<string, BinaryState>();
  private settings: Required<BudgetSettings>;

  constructor(settings: BudgetSettings) {
    this.settings = { windowMs: DEFAULT_BUDGET_WINDOW_MS, ...settings };
  }

  get fraction(): number {
    return this.settings.fraction;
  }

  get windowMs(): number {
    return this.settings.windowMs;
  }

  /** New settings (a configuration reload); windows start afresh, what is shed stays shed until the new settings restore it. */
  configure(settings: BudgetSettings): void {
    this.settings = { windowMs: DEFAULT_BUDGET_WINDOW_MS, ...settings };
    for (const s of this.state.values()) {
      s.samples = [];
      s.belowSince = undefined;
    }
  }

  /**
   * One sample of a binary's traced processes (cumulative figures). `probes`:
   * the binary's probes, attached or shed. Returns what to do, at most one
   * level at a time; the caller reports back with {@link shed} / {@link restored}.
   */
  observe(binary: string, procs: ProcessSample[], probes: ReadonlySet<string>, now: number): BudgetAction | undefined {
    let s = this.state.get(binary);
    if (!s) {
      s = { last: new Map(), samples: [], since: now, shed: [], belowSince: undefined, cpuFraction: undefined, secondsPerSecond: 0 };
      this.state.set(binary, s);
    }
    let est = 0;
    let cpu = 0;
    const seen = new Set<number>();
    for (const p of procs) {
      seen.add(p.pid);
      const prev = s.last.get(p.pid);
      if (prev) {
        est += Math.max(0, p.estimatedSeconds - prev.est);
        if (p.cpuSeconds !== undefined && prev.cpu !== undefined) cpu += Math.max(0, p.cpuSeconds - prev.cpu);
      }
      s.last.set(p.pid, { est: p.estimatedSeconds, cpu: p.cpuSeconds });
    }
    for (const pid of s.last.keys()) if (!seen.has(pid)) s.last.delete(pid);
    const windowMs = this.settings.windowMs;
    s.samples.push({ at: now, est, cpu });
    while (s.samples.length && s.samples[0]!.at <= now - windowMs) s.samples.shift();
    const span = Math.min(windowMs, now - s.since) / 1000;
    let wEst = 0;
    let wCpu = 0;
    for (const x of s.samples) {
      wEst += x.est;
      wCpu += x.cpu;
    }
    const fraction = wCpu > 0 ? wEst / wCpu : undefined;
    const rate = span > 0 ? wEst / span : 0;
    s.cpuFraction = fraction;
    s.secondsPerSecond = rate;
    if (now - s.since < windowMs) return undefined;

    const budget = this.settings.fraction;
    const over = rate >= FLOOR_SECONDS_PER_SECOND && (fraction === undefined || fraction > budget);
    if (over) {
      s.belowSince = undefined;
      const from = s.shed.length ? s.shed.at(-1)!.level + 1 : 0;
      for (let level = from; level < SHED_LEVELS.length; level++) {
        const mine = [...probes].filter((p) => shedLevelOf(p) === level);
        if (mine.length) return { action: 'shed', level: SHED_LEVELS[level]!.name, probes: mine, cpuFraction: fraction ?? Infinity, secondsPerSecond: rate };
      }
      return undefined;
    }
    const top = s.shed.at(-1);
    if (!top) return undefined;
    const cpuRate = span > 0 ? wCpu / span : 0;
    const underHalf = (fraction ?? 0) + top.cpuFraction < budget / 2 || rate + top.cpuFraction * cpuRate < FLOOR_SECONDS_PER_SECOND / 2;
    if (!underHalf) {
      s.belowSince = undefined;
      return undefined;
    }
    s.belowSince ??= now;
    if (now - s.belowSince < RESTORE_WINDOWS * windowMs) return undefined;
    return { action: 'restore', level: SHED_LEVELS[top.level]!.name, probes: top.probes, cpuFraction: fraction ?? 0, secondsPerSecond: rate };
  }

  /** The caller shed `a` (its probes are detached): the window starts afresh. */
  shed(binary: string, a: BudgetAction, now: number): void {
    const s = this.state.get(binary);
    if (!s) return;
    const level = SHED_LEVELS.findIndex((l) => l.name === a.level);
    s.shed.push({ level, probes: a.probes, cpuFraction: Number.isFinite(a.cpuFraction) ? a.cpuFraction : 1, at: Date.now() });
    this.restart(s, now);
  }

  /** The caller restored the last shed level. */
  restored(binary: string, now: number): void {
    const s = this.state.get(binary);
    if (!s) return;
    s.shed.pop();
    this.restart(s, now);
  }

  private restart(s: BinaryState, now: number): void {
    s.samples = [];
    s.since = now;
    s.belowSince = undefined;
  }

  /** Forgets binaries no longer attached. */
  retain(binaries: ReadonlySet<string>): void {
    for (const k of this.state.keys()) if (!binaries.has(k)) this.state.delete(k);
  }

  /** Probe ids shed for this binary. */
  shedProbes(binary: string): string[] {
    return this.state.get(binary)?.shed.flatMap((e) => e.probes) ?? [];
  }

  status(binary: string): BudgetBinaryStatus | undefined {
    const s = this.state.get(binary);
    if (!s) return undefined;
    return {
      shed: s.shed.map((e) => ({ level: SHED_LEVELS[e.level]!.name, probes: e.probes, cpuFraction: e.cpuFraction, since: new Date(e.at).toISOString() })),
      cpuFraction: s.cpuFraction,
      secondsPerSecond: s.secondsPerSecond,
    };
  }
}

/**
 * Why a budget above 100% is refused rather than taken as "no limit": the
 * cost it bounds (uprobe traps and BPF programs) runs in the traced
 * process's own context and is counted in its own CPU time, so the cost is
 * at most 100% of that time and such a budget could never act.
 */
export const BUDGET_OVER_100 = "tracing's cost is counted in the traced processes' own CPU time, so it never exceeds 100% of it and a larger budget could never act (for no budget: 0 or off)";

/**
 * A budget given as `2%`, `2` (percent), or `0`, `0%` or `off` (no budget):
 * the fraction, or undefined for off. Percent of the traced processes' own
 * CPU time, so at most 100 (see {@link BUDGET_OVER_100}).
 * @throws Error naming what was expected.
 */
export function parseBudgetPercent(text: string): number | undefined {
  const t = text.trim();
  if (t === 'off' || t === '0' || t === '0%') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*%?$/.exec(t);
  const n = m ? Number(m[1]) : NaN;
  if (n === 0) return undefined;
  if (!(n > 0 && n <= 100)) {
    throw new Error(`expected a percentage of the traced processes' CPU time up to 100 (e.g. 2%), or 0 or off (no budget), got "${text}"${n > 100 ? `: ${BUDGET_OVER_100}` : ''}`);
  }
  return n / 100;
}

/** Labels of a shed or restore count: service, level and probe. */
export interface ShedCount { service: string; level: string; probe: string; count: number }

/**
 * Applies an {@link OverheadBudget} to attached binaries: samples go in,
 * probes are detached and attached again, each step logged and counted.
 */
export class BudgetEnforcer {
  readonly budget: OverheadBudget;
  /** Cumulative probes shed (reason overhead_budget) and restored, by service, level and probe. */
  readonly shedTotal = new Map<string, ShedCount>();
  readonly restoredTotal = new Map<string, ShedCount>();
  private readonly attach: AttachmentManager;
  private readonly log: Logger;

  constructor(attach: AttachmentManager, log: Logger, settings: BudgetSettings) {
    this.attach = attach;
    this.log = log;
    this.budget = new OverheadBudget(settings);
  }

  private count(m: Map<string, ShedCount>, service: string, level: string, probe: string): void {
    const k = `${service}\0${level}\0${probe}`;
    const c = m.get(k) ?? { service, level, probe, count: 0 };
    c.count++;
    m.set(k, c);
  }

  /** One round: `procs` are every traced process's overhead figures at this sample. Never throws. */
  tick(procs: readonly ProcessOverhead[], now: number): void {
    const byPid = new Map(procs.map((p) => [p.pid, p]));
    const keys = new Set<string>();
    for (const b of this.attach.binaries()) {
      if (!b.handles.length && !b.shed?.size) continue;
      keys.add(b.key);
      const mine = [...b.pids].map((pid) => byPid.get(pid)).filter((p): p is ProcessOverhead => p !== undefined);
      const probes = new Set([...b.handles.map((h) => h.probe), ...(b.shed ?? [])]);
      // what shedding can lower: the probes' hits, not the injection's sockmap sends (shedding detaches uprobes only)
      const a = this.budget.observe(b.key, mine.map((p) => ({ pid: p.pid, estimatedSeconds: p.estimatedSeconds - p.injectSeconds, cpuSeconds: p.cpuSeconds })), probes, now);
      if (!a) continue;
      const services = [...new Set(mine.map((p) => p.service))].sort();
      const service = services.join(',') || 'unknown_service';
      const fields = {
        path: b.exe, service, level: a.level,
        cpuPercent: +(a.cpuFraction * 100).toFixed(2), budgetPercent: +(this.budget.fraction * 100).toFixed(2),
        estimatedMillisecondsPerSecond: +(a.secondsPerSecond * 1000).toFixed(3),
      };
      try {
        if (a.action === 'shed') {
          const done = this.attach.shedProbes(b, a.probes);
          this.budget.shed(b.key, { ...a, probes: done }, now);
          for (const p of done) this.count(this.shedTotal, service, a.level, p);
          this.log.warn('overhead budget exceeded: probes shed (their spans are no longer made)', { ...fields, probes: done.join(',') });
        } else {
          const done = this.attach.restoreProbes(b, a.probes);
          if (done.length < a.probes.length) continue; // tried again next round
          this.budget.restored(b.key, now);
          for (const p of done) this.count(this.restoredTotal, service, a.level, p);
          this.log.info('overhead well under budget: shed probes attached again', { ...fields, probes: done.join(',') });
        }
      } catch (e) {
        this.log.once('budget.apply', 'applying the overhead budget failed', { error: (e as Error).message });
      }
    }
    this.budget.retain(keys);
  }

  /** Budget off: every shed probe is attached again at once. */
  restoreAll(): void {
    for (const b of this.attach.binaries()) {
      if (!b.shed?.size) continue;
      const done = this.attach.restoreProbes(b, [...b.shed]);
      if (done.length) this.log.info('overhead budget off: shed probes attached again', { path: b.exe, probes: done.join(',') });
    }
  }

  /** Probes currently shed, per service (the gauge gotrail_shed_probes). */
  shedByService(procs: readonly ProcessOverhead[]): Map<string, number> {
    const svc = new Map(procs.map((p) => [p.pid, p.service]));
    const out = new Map<string, number>();
    for (const b of this.attach.binaries()) {
      const services = [...new Set([...b.pids].map((pid) => svc.get(pid)).filter((s): s is string => s !== undefined))].sort();
      const service = services.join(',');
      if (!service) continue;
      out.set(service, (out.get(service) ?? 0) + (b.shed?.size ?? 0));
    }
    return out;
  }

  /** /status: the settings and, per binary with a window open, what is shed and the current estimate. */
  status(): unknown {
    return {
      budgetPercent: this.budget.fraction * 100,
      windowSeconds: this.budget.windowMs / 1000,
      order: SHED_LEVELS.map((l) => ({ level: l.name, probes: l.probes })),
      binaries: this.attach.binaries().flatMap((b) => {
        const s = this.budget.status(b.key);
        return s ? [{ path: b.exe, pids: [...b.pids].sort((x, y) => x - y), ...s }] : [];
      }),
    };
  }
}
