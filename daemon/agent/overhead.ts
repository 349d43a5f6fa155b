/**
 * The cost gotrail imposes on each traced process, estimated from what the
 * kernel counts and from a measurement of this host's uprobe trap.
 *
 * - The trap cost is calibrated in a helper process (`gotrail_calibrate`,
 *   built with the native addon): it calls a no-op function in a loop, and
 *   the agent compares the helper's thread CPU time per call with and
 *   without an empty BPF program attached, once at the no-op's entry (a
 *   PUSH, which the kernel emulates) and once at its RET (which it
 *   single-steps out of line, a second trap): one cost per {@link TrapKind},
 *   16 µs against 0.5 µs per hit on an Intel Xeon Firecracker VM. That is
 *   the part of a hit that the kernel's program statistics do not see (the
 *   breakpoint trap, the uprobe lookup, the BPF dispatch, the single-step).
 * - Each probe site's kind comes from the instructions gotrail probes in
 *   that binary (the plan's `trapKinds`, see `kernelEmulates`).
 * - The BPF programs' own run time per hit comes from the kernel's program
 *   statistics (run_time_ns / run_cnt per program).
 * - Probe hits per process and site are counted in BPF (maps gt_process_hits
 *   and gt_probe_hits; BpfRuntime.probeHits adds them).
 * - The socket-level traceparent injection (probes/inject/) puts each TCP
 *   connection of a traced process in a sockmap, whose send path (the
 *   kernel's tcp_bpf: a copy into an sk_msg, the sk_msg program, the push
 *   to TCP; and tcp_bpf's receive) costs more than plain TCP's. Its sends
 *   are counted per process in BPF (gt_inject_sends), and the same helper
 *   measures the cost of one: a loopback connection's request/response
 *   exchanges with its client end in the sockmap and without, the
 *   difference less the sk_msg program's run time over those sends (the
 *   program's time is priced from the kernel's statistics, as a probe's
 *   is).
 *
 * Estimated overhead of a process over a window = Σ over its sites of
 * hits × (trap cost of the site's kind + mean BPF run time of that site's
 * program) + its sockmap sends × (calibrated send cost + mean run time of
 * gt_inject_msg); divided by the window's length it is seconds per second,
 * divided by the process's own CPU time over the window (utime + stime
 * from /proc/PID/stat, which includes the trap since the kernel charges it
 * to the thread that hits the probe) it is the fraction of the process's
 * CPU that tracing costs.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BinaryFile } from '../analysis/binary-file.ts';
import type { TrapKind } from '../analysis/instructions.ts';
import { ElfFile } from '../analysis/elf.ts';
import { BpfPrograms, HitSite } from '../generated/layouts.ts';
import type { BpfObject, ProgramStats } from '../native/index.ts';
import { readStatFields } from './discovery.ts';
import { WRITE_USER_PROGRAMS } from './write-user.ts';

/** The helper program built beside the addon (the path from the install root: this module may run bundled, build/agent/, see deploy/bundle.ts). */
export const CALIBRATION_HELPER = fileURLToPath(new URL('../../daemon/native/build/Release/gotrail_calibrate', import.meta.url));
const NOOP_SYMBOL = 'gotrail_calibration_noop';
/** The no-op's RET (a label in its assembly). */
const NOOP_RET_SYMBOL = 'gotrail_calibration_noop_ret';

/** Result of one calibration. */
export interface HitCostCalibration {
  /**
   * Per {@link TrapKind}: the median over rounds of (thread CPU per call with
   * the empty program attached − without), seconds per hit. `emulated`: the
   * program at the helper's no-op's entry, a PUSH; `single_stepped`: at its
   * RET.
   */
  secondsPerHit: Record<TrapKind, number>;
  /** Each round's value per kind, seconds per hit (their spread tells how steady the host was). */
  rounds: Record<TrapKind, number[]>;
  /** Thread CPU per call without a probe, seconds (the loop's own cost). */
  baselineSecondsPerCall: number;
  /** Calls per measurement. */
  calls: number;
  /**
   * What one send through the injection's sockmap costs the sending
   * process besides the sk_msg program's run time: the median over rounds
   * of (thread CPU per request/response exchange on a loopback connection
   * in the sockmap − on one that is not) − gt_inject_msg's mean run time
   * over those sends, seconds. Absent when injection is not attached (or
   * this part of the calibration failed: see `injectSendError`).
   */
  secondsPerInjectSend?: number;
  /** Each round's value, seconds per send. */
  injectSendRounds?: number[];
  /** Exchanges per measurement of the send cost. */
  injectSends?: number;
  /** Why the send cost could not be measured, when it could not. */
  injectSendError?: string;
  /** When it finished (ms since the epoch). */
  at: number;
}

/**
 * File offsets of the calibration probes in the helper: the no-op's entry (a
 * PUSH, which the kernel emulates, as at gotrail's entry sites) and its RET
 * (single-stepped out of line, as at gotrail's return sites).
 * @throws Error when either symbol is missing from the helper's symbol table.
 */
export function calibrationSiteOffsets(helper = CALIBRATION_HELPER): [entry: number, ret: number] {
  const elf = ElfFile.parse(BinaryFile.open(helper));
  try {
    const found = elf.symbolValues([NOOP_SYMBOL, NOOP_RET_SYMBOL]);
    const at = (name: string): number => {
      const vaddr = found.get(name);
      if (vaddr === undefined) throw new Error(`calibrate uprobe cost: ${name} not found in the symbol table of ${helper}`);
      return elf.fileOffset(vaddr, 1, name);
    };
    return [at(NOOP_SYMBOL), at(NOOP_RET_SYMBOL)];
  } finally {
    elf.file.close();
  }
}

class Helper {
  private readonly child: ChildProcessWithoutNullStreams;
  private buf = '';
  private waiters: Array<(line: string) => void> = [];

  constructor(path: string) {
    this.child = spawn(path, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        this.waiters.shift()?.(line);
      }
    });
  }

  /** Thread CPU nanoseconds for `calls` calls of the no-op. */
  run(calls: number): Promise<number> {
    return this.ask(`${calls}`);
  }

  /** Thread CPU nanoseconds for `n` loopback request/response exchanges, the client end in the sockhash of id `mapId` (0: none). */
  send(n: number, mapId: number, keySize: number): Promise<number> {
    return this.ask(`send ${n} ${mapId} ${keySize}`);
  }

  private ask(command: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onExit = (): void => reject(new Error('calibrate uprobe cost: the helper exited'));
      this.child.once('exit', onExit);
      // a helper stuck (e.g. a send path that never answers) must not hold the calibration forever
      const timer = setTimeout(() => {
        this.child.off('exit', onExit);
        this.child.kill('SIGKILL');
        reject(new Error(`calibrate uprobe cost: the helper did not answer "${command}" within ${HELPER_ANSWER_MS / 1000} s`));
      }, HELPER_ANSWER_MS);
      timer.unref();
      this.waiters.push((line) => {
        clearTimeout(timer);
        this.child.off('exit', onExit);
        const n = Number(line);
        if (Number.isFinite(n)) resolve(n);
        else reject(new Error(`calibrate uprobe cost: helper answered ${JSON.stringify(line)}`));
      });
      this.child.stdin.write(`${command}\n`);
    });
  }

  close(): void {
    this.child.stdin.end();
    this.child.kill();
  }
}

/** How long one command of the calibration helper may take (ms): a round takes well under a second. */
const HELPER_ANSWER_MS = 30_000;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * Measures this host's cost of one uprobe hit of each {@link TrapKind}:
 * `rounds` times `calls` calls without a probe, then with the empty program
 * at the helper's no-op's entry (emulated), then at its RET (single-stepped).
 * Takes about rounds × calls × (the two costs) of CPU (with the defaults,
 * 0.17 s on a host whose single-step costs 16 µs). Throws (naming the step)
 * when the helper is missing or an attach fails.
 */
export async function calibrateUprobeHitCost(obj: BpfObject, opts: { calls?: number; rounds?: number; helper?: string; injectSockmap?: string; sends?: number } = {}): Promise<HitCostCalibration> {
  const calls = opts.calls ?? 2000;
  const rounds = opts.rounds ?? 5;
  const helperPath = opts.helper ?? CALIBRATION_HELPER;
  const offsets = calibrationSiteOffsets(helperPath);
  const helper = new Helper(helperPath);
  const diffs: Record<TrapKind, number[]> = { emulated: [], single_stepped: [] };
  const bases: number[] = [];
  const out = { secondsPerHit: { emulated: 0, single_stepped: 0 }, rounds: diffs, baselineSecondsPerCall: 0, calls, at: 0 } as HitCostCalibration;
  // one hit per call: at the entry's PUSH, or at the RET
  const sites: Array<[TrapKind, number]> = [['emulated', offsets[0]], ['single_stepped', offsets[1]]];
  try {
    await helper.run(calls); // warm-up: page faults, caches
    for (let r = 0; r < rounds; r++) {
      const without = await helper.run(calls);
      bases.push(without / calls / 1e9);
      for (const [kind, offset] of sites) {
        const handle = obj.attachUprobes(BpfPrograms.gt_calibration_empty, helperPath, [offset], [0n]);
        let withProbe: number;
        try {
          withProbe = await helper.run(calls);
        } finally {
          await obj.detachAsync([handle]);
        }
        diffs[kind].push(Math.max(0, withProbe - without) / calls / 1e9);
      }
    }
    Object.assign(out, { secondsPerHit: { emulated: median(diffs.emulated), single_stepped: median(diffs.single_stepped) }, baselineSecondsPerCall: median(bases), at: Date.now() });
    if (opts.injectSockmap) {
      Object.assign(out, await calibrateSendCost(obj, helper, opts.injectSockmap, opts.sends ?? 2000, rounds));
      out.at = Date.now();
    }
  } finally {
    helper.close();
  }
  return out;
}

/**
 * The send-cost part of {@link calibrateUprobeHitCost}: `rounds` times
 * `sends` exchanges without, then with the helper's connection in the
 * sockhash `map` (whose sk_msg program then runs once per send, finding no
 * mark). Never throws: a failure is returned as `injectSendError`.
 */
async function calibrateSendCost(obj: BpfObject, helper: Helper, map: string, sends: number, rounds: number): Promise<Pick<HitCostCalibration, 'secondsPerInjectSend' | 'injectSendRounds' | 'injectSends' | 'injectSendError'>> {
  try {
    const info = obj.mapInfo(map);
    if (info.id === undefined) throw new Error(`${map} is not loaded`);
    const programRun = (): { runs: bigint; ns: bigint } => {
      const p = obj.programStats().find((s) => s.name === BpfPrograms.gt_inject_msg);
      return { runs: p?.runCount ?? 0n, ns: p?.runTimeNs ?? 0n };
    };
    await helper.send(sends, 0, info.keySize); // warm-up: the connection's buffers, caches
    const diffs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const without = await helper.send(sends, 0, info.keySize);
      const p0 = programRun();
      const withMap = await helper.send(sends, info.id, info.keySize);
      const p1 = programRun();
      // the program's runs over the round: a round in which other
      // processes' sends ran it too (a busy node: their sends may carry a
      // header, several times the helper's cost per run) is left out
      const runs = Number(p1.runs - p0.runs);
      if (runs > sends * 1.05) continue;
      const programNs = runs > 0 ? (Number(p1.ns - p0.ns) / runs) * sends : 0;
      diffs.push(Math.max(0, withMap - without - programNs) / sends / 1e9);
    }
    if (diffs.length === 0) throw new Error(`every round of ${rounds} ran gt_inject_msg for other processes' sends too`);
    return { secondsPerInjectSend: median(diffs), injectSendRounds: diffs, injectSends: sends };
  } catch (e) {
    return { injectSendError: (e as Error).message };
  }
}

/** enum gt_hit_site value → the probe's BPF program (GT_HIT_HTTP_SERVER_ENTRY → gt_http_server_entry). */
const siteNames = new Map<number, string>(Object.entries(HitSite).map(([k, v]) => [v, k.replace(/^GT_HIT_/, '').toLowerCase()]));
export const siteName = (site: number): string => siteNames.get(site) ?? `site_${site}`;

// the probes' object, and the bpf_probe_write_user injection's, loaded separately
const programNames: readonly string[] = [...Object.values(BpfPrograms), ...WRITE_USER_PROGRAMS];
/**
 * The BPF programs whose runs a site's hits are: `gt_<site>` where one
 * program serves the site, else every `gt_<probe>_…_<step>` (one site counted
 * for several functions, e.g. sql_entry: gt_sql_query_entry,
 * gt_sql_exec_entry, …).
 */
export function siteProgramsOf(site: number): string[] {
  const name = siteName(site);
  if (programNames.includes(`gt_${name}`)) return [`gt_${name}`];
  const i = name.indexOf('_');
  const j = name.lastIndexOf('_');
  if (i < 0 || i !== j) return [];
  const [probe, step] = [name.slice(0, i), name.slice(j + 1)];
  return programNames.filter((p) => p.startsWith(`gt_${probe}_`) && p.endsWith(`_${step}`));
}

/** BPF program → the hit site (enum gt_hit_site) its runs count: the inverse of {@link siteProgramsOf}. */
const programSites = new Map<string, number>(Object.values(HitSite).flatMap((site) => siteProgramsOf(site).map((p): [string, number] => [p, site])));

/** The hit site (enum gt_hit_site) that runs of `program` count, if any. */
export function siteOfProgram(program: string): number | undefined {
  return programSites.get(program);
}

/** Sites of one probe program attached to a binary, as the binary's plan has them. */
export interface ProbedSites {
  program: string;
  offsets: readonly number[];
  /** Per offset (see `SiteSet.trapKinds` of binary-plan.ts); absent when unknown. */
  trapKinds?: readonly TrapKind[];
}

/**
 * The {@link TrapKind} of each hit site (enum gt_hit_site) of one binary,
 * from the site sets attached to it: `emulated` where every instruction
 * that the site's programs are attached at is emulated, else
 * `single_stepped`. BPF counts hits per site, not per instruction, so where
 * one site is probed at instructions of both kinds (an after-call site and
 * a RET, say) its hits cannot be told apart, and all of them are costed as
 * single-stepped: the estimate errs high there, never low. So are sites
 * whose instructions are unknown.
 */
export function hitSiteKinds(sets: Iterable<ProbedSites>): Map<number, TrapKind> {
  const out = new Map<number, TrapKind>();
  for (const set of sets) {
    const site = siteOfProgram(set.program);
    if (site === undefined) continue;
    const all = set.trapKinds !== undefined && set.trapKinds.length === set.offsets.length && set.trapKinds.every((k) => k === 'emulated');
    out.set(site, all && out.get(site) !== 'single_stepped' ? 'emulated' : 'single_stepped');
  }
  return out;
}

/** Hits per {@link TrapKind}. */
export type HitsByKind = Record<TrapKind, number>;

/**
 * Estimated CPU seconds that `hits` (hit site → hits) cost: Σ over sites of
 * hits × (`trap[kind]` for the site's kind in `kinds`, single-stepped where
 * it has none, + the mean BPF run time of the site's programs from `bpf`,
 * program → seconds per run). `trap` undefined (not calibrated yet) counts
 * BPF run time only. Also returns the hits per kind.
 */
export function estimateHits(hits: ReadonlyMap<number, number>, kinds: ReadonlyMap<number, TrapKind> | undefined, trap: Record<TrapKind, number> | undefined, bpf: ReadonlyMap<string, number>): { seconds: number; hits: HitsByKind } {
  const byKind: HitsByKind = { emulated: 0, single_stepped: 0 };
  let seconds = 0;
  for (const [site, n] of hits) {
    if (n <= 0) continue;
    const kind = kinds?.get(site) ?? 'single_stepped';
    byKind[kind] += n;
    seconds += n * ((trap?.[kind] ?? 0) + siteCost(bpf, site));
  }
  return { seconds, hits: byKind };
}

/**
 * Mean BPF run time per run of a site's programs, seconds. A program run by
 * gt_dispatch's tail call has no statistics of its own (the kernel counts
 * the whole run, callee included, under gt_dispatch): such a site costs the
 * dispatcher's mean per run, over every site it serves. 0 when none ran.
 */
function siteCost(cost: ReadonlyMap<string, number>, site: number): number {
  const runs = siteProgramsOf(site).map((p) => cost.get(p)).filter((c): c is number => c !== undefined);
  if (runs.length) return runs.reduce((a, b) => a + b, 0) / runs.length;
  return cost.get(BpfPrograms.gt_dispatch) ?? 0;
}

/** CPU seconds (user + system) a process has used, from /proc/PID/stat; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  const f = readStatFields(pid);
  return f === undefined ? undefined : (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}
/** USER_HZ: 100 on every Linux ABI gotrail runs on (x86-64, arm64). */
const CLOCK_TICKS = 100;

/** One traced process's overhead. */
export interface ProcessOverhead {
  pid: number;
  service: string;
  /** Probe hits since the process was first seen, by site (e.g. http_server_entry). */
  hits: Record<string, number>;
  /** The same hits by the kind of trap each cost (see {@link hitSiteKinds}). */
  hitsByKind: HitsByKind;
  /** Sends through the injection's sockmap since the process was first seen (0 when none, or injection is off). */
  injectSends: number;
  /** The part of `estimatedSeconds` those sends cost: sends × (calibrated send cost + gt_inject_msg's mean run time). */
  injectSeconds: number;
  /** Estimated CPU seconds tracing has cost the process since it was first seen (probe hits and sockmap sends). */
  estimatedSeconds: number;
  /** Over the last window: probe hits per second. */
  hitsPerSecond: number;
  /** Over the last window: estimated CPU seconds per second of wall time. */
  secondsPerSecond: number;
  /** Over the last window: estimated seconds / the process's own CPU seconds (undefined when it used none). */
  cpuFraction: number | undefined;
  /** Length of the last window, seconds (0 before a second sample). */
  windowSeconds: number;
  /** The process's own CPU seconds (utime + stime) at this sample; undefined when /proc could not be read. */
  cpuSeconds: number | undefined;
}

/** Where the estimator reads hits and program statistics (a BpfRuntime). */
export interface HitSource {
  readonly obj: BpfObject;
  /** pid → site (enum gt_hit_site) → hits since the process was first seen. */
  probeHits(pids?: Set<number>): Map<number, Map<number, number>>;
  /** pid → sends through the injection's sockmap since the process was first seen (absent: none counted). */
  injectSends?(pids?: Set<number>): Map<number, number>;
}

/** pid → hit site → trap kind, for the processes asked about (those it knows). */
export type SiteKindSource = (pids: ReadonlySet<number>) => Map<number, ReadonlyMap<number, TrapKind>>;

/** What the processes of a service that are no longer traced counted. */
export interface GoneOverhead {
  /** Probe hits by site name. */
  hits: Record<string, number>;
  /** Estimated CPU seconds tracing cost them. */
  estimatedSeconds: number;
  /** Sends through the injection's sockmap, and the part of `estimatedSeconds` they cost. */
  injectSends: number;
  injectSeconds: number;
}

interface ProcState {
  service: string;
  hits: Map<number, number>;
  hitsByKind: HitsByKind;
  /** The last site kinds known for it (kept when its binary's sets are gone, e.g. while it exits). */
  kinds: ReadonlyMap<number, TrapKind> | undefined;
  estimated: number;
  injectSends: number;
  injectSeconds: number;
  cpu: number | undefined;
  last: { hitsPerSecond: number; secondsPerSecond: number; cpuFraction: number | undefined; windowSeconds: number };
}

/**
 * Keeps per-process hit counts and estimates between samples. `sample()`
 * reads the BPF map and the kernel's statistics once; call it at most every
 * `minWindowMs` (more frequent calls return the previous result), e.g. from
 * a metrics scrape or /status.
 */
export class OverheadEstimator {
  private readonly procs = new Map<number, ProcState>();
  private lastAt = 0;
  private lastPrograms = new Map<string, { runs: bigint; ns: bigint }>();
  private result: ProcessOverhead[] = [];
  /** The last sample's BPF run time per program run, seconds: prices a gone process's last hits. */
  private lastCost = new Map<string, number>();
  /** What processes no longer traced had counted, by service: kept so that sums over a service never go back. */
  private readonly gone = new Map<string, { hits: Map<number, number>; estimated: number; injectSends: number; injectSeconds: number }>();
  /** Seconds per hit measured by the last calibration (undefined until one finished). */
  hitCost: HitCostCalibration | undefined;

  private readonly source: HitSource;
  private readonly minWindowMs: number;
  private readonly kindsOf: SiteKindSource | undefined;

  /** `kindsOf`: each process's hit site kinds (without it, or for a process it does not know, every hit counts as single-stepped). */
  constructor(source: HitSource, minWindowMs = 1000, kindsOf?: SiteKindSource) {
    this.source = source;
    this.minWindowMs = minWindowMs;
    this.kindsOf = kindsOf;
  }

  /** Mean BPF run time per run of each program over the window, seconds; all-time when the window saw no run. */
  private programCost(stats: ProgramStats[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const p of stats) {
      const prev = this.lastPrograms.get(p.name);
      const runs = p.runCount - (prev?.runs ?? 0n);
      const ns = p.runTimeNs - (prev?.ns ?? 0n);
      if (runs > 0n) out.set(p.name, Number(ns) / Number(runs) / 1e9);
      else if (p.runCount > 0n) out.set(p.name, Number(p.runTimeNs) / Number(p.runCount) / 1e9);
      this.lastPrograms.set(p.name, { runs: p.runCount, ns: p.runTimeNs });
    }
    return out;
  }

  /** Reads hits of `traced` (pid → service name) and updates the estimates. Never throws. */
  sample(traced: Map<number, string>, now = Date.now()): ProcessOverhead[] {
    if (this.lastAt && now - this.lastAt < this.minWindowMs) return this.result;
    const window = this.lastAt ? (now - this.lastAt) / 1000 : 0;
    this.lastAt = now;
    let hits: Map<number, Map<number, number>>;
    let cost: Map<string, number>;
    let kinds: Map<number, ReadonlyMap<number, TrapKind>>;
    let sends: Map<number, number>;
    try {
      const pids = new Set(traced.keys());
      hits = this.source.probeHits(pids);
      sends = this.source.injectSends?.(pids) ?? new Map<number, number>();
      cost = this.programCost(this.source.obj.programStats());
      kinds = this.kindsOf?.(pids) ?? new Map<number, ReadonlyMap<number, TrapKind>>();
    } catch {
      return this.result;
    }
    this.lastCost = cost;
    for (const pid of this.procs.keys()) if (!traced.has(pid)) this.retire(pid);
    const out: ProcessOverhead[] = [];
    for (const [pid, service] of traced) {
      let st = this.procs.get(pid);
      const cpu = processCpuSeconds(pid);
      if (!st) {
        st = { service, hits: new Map(), hitsByKind: { emulated: 0, single_stepped: 0 }, kinds: undefined, estimated: 0, injectSends: 0, injectSeconds: 0, cpu, last: { hitsPerSecond: 0, secondsPerSecond: 0, cpuFraction: undefined, windowSeconds: 0 } };
        this.procs.set(pid, st);
      }
      st.service = service;
      // kinds of sets detached since (shed by the budget) still price their last hits
      const now = kinds.get(pid);
      if (now) st.kinds = st.kinds ? new Map([...st.kinds, ...now]) : now;
      const { hits: dHits, seconds: dEst } = this.advance(st, hits.get(pid), sends.get(pid), cost);
      if (window > 0) {
        const dCpu = cpu !== undefined && st.cpu !== undefined ? cpu - st.cpu : undefined;
        st.last = { hitsPerSecond: dHits / window, secondsPerSecond: dEst / window, cpuFraction: dCpu ? dEst / dCpu : undefined, windowSeconds: window };
      }
      st.cpu = cpu;
      out.push({
        pid, service,
        hits: Object.fromEntries([...st.hits].map(([s, n]) => [siteName(s), n])),
        hitsByKind: { ...st.hitsByKind },
        injectSends: st.injectSends,
        injectSeconds: st.injectSeconds,
        estimatedSeconds: st.estimated,
        ...st.last,
        cpuSeconds: cpu,
      });
    }
    this.result = out;
    return out;
  }

  /**
   * A traced process is no longer traced (it exited, or was released): its
   * hits since the last sample are read one last time, while its counts are
   * still kept (call before BpfRuntime.forgetProcessState), and what it
   * counted stays in its service's sums (see {@link goneByService}). Never
   * throws; without a last read, the last sample's counts are kept.
   */
  processGone(pid: number): void {
    const st = this.procs.get(pid);
    if (!st) return;
    try {
      const only = new Set([pid]);
      this.advance(st, this.source.probeHits(only).get(pid), this.source.injectSends?.(only).get(pid), this.lastCost);
    } catch {
      /* its last hits are unknown: the last sample's counts stay */
    }
    this.retire(pid);
    this.result = this.result.filter((p) => p.pid !== pid);
  }

  /**
   * Moves a process's state on to its counts now (`hits`: site → hits,
   * `sends`: sockmap sends, both since it was first seen), pricing what is
   * new at the calibrated costs and `cost` (BPF run time per program run);
   * returns the new hits and their estimated seconds.
   */
  private advance(st: ProcState, hits: ReadonlyMap<number, number> | undefined, sends: number | undefined, cost: Map<string, number>): { hits: number; seconds: number } {
    const delta = new Map<number, number>();
    for (const [site, n] of hits ?? []) {
      const d = n - (st.hits.get(site) ?? 0);
      if (d <= 0) continue;
      delta.set(site, d);
      st.hits.set(site, n);
    }
    const e = estimateHits(delta, st.kinds, this.hitCost?.secondsPerHit, cost);
    // per send: the path (calibrated; 0 until then) and the program's own run time
    const perSend = (this.hitCost?.secondsPerInjectSend ?? 0) + (cost.get(BpfPrograms.gt_inject_msg) ?? 0);
    const dSends = Math.max(0, (sends ?? 0) - st.injectSends);
    st.injectSends += dSends;
    st.injectSeconds += dSends * perSend;
    st.hitsByKind.emulated += e.hits.emulated;
    st.hitsByKind.single_stepped += e.hits.single_stepped;
    const seconds = e.seconds + dSends * perSend;
    st.estimated += seconds;
    return { hits: e.hits.emulated + e.hits.single_stepped, seconds };
  }

  private retire(pid: number): void {
    const st = this.procs.get(pid);
    if (!st) return;
    this.procs.delete(pid);
    const g = this.gone.get(st.service) ?? { hits: new Map<number, number>(), estimated: 0, injectSends: 0, injectSeconds: 0 };
    for (const [site, n] of st.hits) g.hits.set(site, (g.hits.get(site) ?? 0) + n);
    g.estimated += st.estimated;
    g.injectSends += st.injectSends;
    g.injectSeconds += st.injectSeconds;
    this.gone.set(st.service, g);
  }

  /** What processes no longer traced counted, by service: hits by site name, estimated CPU seconds. */
  goneByService(): Map<string, GoneOverhead> {
    const out = new Map<string, GoneOverhead>();
    for (const [svc, g] of this.gone) out.set(svc, { hits: Object.fromEntries([...g.hits].map(([s, n]) => [siteName(s), n])), estimatedSeconds: g.estimated, injectSends: g.injectSends, injectSeconds: g.injectSeconds });
    return out;
  }

  /**
   * Processes summed per service (cpuFraction: the window's estimated
   * seconds over the same processes' CPU seconds). With `gone`, the hits
   * and estimated seconds of processes no longer traced are in the sums
   * too, so that they never go back when a process exits; rates are the
   * traced processes' alone.
   */
  static byService(procs: ProcessOverhead[], gone?: ReadonlyMap<string, GoneOverhead>): Map<string, { hits: Record<string, number>; injectSends: number; injectSeconds: number; estimatedSeconds: number; secondsPerSecond: number; cpuFraction: number | undefined }> {
    const out = new Map<string, { hits: Record<string, number>; injectSends: number; injectSeconds: number; estimatedSeconds: number; secondsPerSecond: number; cpuFraction: number | undefined; windowEst: number; windowCpu: number }>();
    for (const [svc, g] of gone ?? []) out.set(svc, { hits: { ...g.hits }, injectSends: g.injectSends, injectSeconds: g.injectSeconds, estimatedSeconds: g.estimatedSeconds, secondsPerSecond: 0, cpuFraction: undefined, windowEst: 0, windowCpu: 0 });
    for (const p of procs) {
      const s = out.get(p.service) ?? { hits: {}, injectSends: 0, injectSeconds: 0, estimatedSeconds: 0, secondsPerSecond: 0, cpuFraction: undefined, windowEst: 0, windowCpu: 0 };
      for (const [k, n] of Object.entries(p.hits)) s.hits[k] = (s.hits[k] ?? 0) + n;
      s.injectSends += p.injectSends;
      s.injectSeconds += p.injectSeconds;
      s.estimatedSeconds += p.estimatedSeconds;
      s.secondsPerSecond += p.secondsPerSecond;
      if (p.cpuFraction !== undefined && p.cpuFraction > 0) {
        s.windowEst += p.secondsPerSecond * p.windowSeconds;
        s.windowCpu += (p.secondsPerSecond * p.windowSeconds) / p.cpuFraction;
      }
      s.cpuFraction = s.windowCpu > 0 ? s.windowEst / s.windowCpu : undefined;
      out.set(p.service, s);
    }
    return out;
  }
}
