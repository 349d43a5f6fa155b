/**
 * The cost gotrail imposes on each traced process, estimated from what the
 * kernel counts and from a measurement of this host's uprobe trap.
 *
 * - The trap cost is calibrated in a helper process (`gotrail_calibrate`,
 *   built with the native addon): it calls a no-op function in a loop, and
 *   the agent compares the helper's thread CPU time per call with and
 *   without an empty BPF program attached at its entry and at its return
 *   (per hit: the mean of the two, an emulated and a single-stepped
 *   instruction, as gotrail's own entry and return sites). That is the part of a hit
 *   that the kernel's program statistics do not see (the breakpoint trap,
 *   the uprobe lookup, the BPF dispatch).
 * - The BPF programs' own run time per hit comes from the kernel's program
 *   statistics (run_time_ns / run_cnt per program).
 * - Probe hits per process and site are counted in BPF (maps gt_process_hits
 *   and gt_probe_hits; BpfRuntime.probeHits adds them).
 *
 * Estimated overhead of a process over a window = Σ over its sites of
 * hits × (trap cost + mean BPF run time of that site's program); divided by
 * the window's length it is seconds per second, divided by the process's
 * own CPU time over the window (utime + stime from /proc/PID/stat, which
 * includes the trap since the kernel charges it to the thread that hits
 * the probe) it is the fraction of the process's CPU that tracing costs.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BinaryFile } from '../analysis/binary-file.ts';
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
   * Median over rounds of (thread CPU per call with the empty probes − without)
   * per hit, seconds: the mean of an entry hit (on an instruction the kernel
   * emulates) and a return hit (on a RET, single-stepped), as gotrail's
   * probes come in entry and return pairs.
   */
  secondsPerHit: number;
  /** Each round's value, seconds per hit (their spread tells how steady the host was). */
  rounds: number[];
  /** Thread CPU per call without a probe, seconds (the loop's own cost). */
  baselineSecondsPerCall: number;
  /** Calls per measurement. */
  calls: number;
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
    return new Promise((resolve, reject) => {
      const onExit = (): void => reject(new Error('calibrate uprobe cost: the helper exited'));
      this.child.once('exit', onExit);
      this.waiters.push((line) => {
        this.child.off('exit', onExit);
        const n = Number(line);
        if (Number.isFinite(n)) resolve(n);
        else reject(new Error(`calibrate uprobe cost: helper answered ${JSON.stringify(line)}`));
      });
      this.child.stdin.write(`${calls}\n`);
    });
  }

  close(): void {
    this.child.stdin.end();
    this.child.kill();
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * Measures this host's cost of one uprobe hit: `rounds` alternations of
 * `calls` calls without, then with, the empty program attached to the
 * helper's no-op. Takes about rounds × calls × (trap cost) of CPU (with
 * the defaults, 0.06–0.15 s on a host whose trap costs 6–14 µs). Throws (naming
 * the step) when the helper is missing or the attach fails.
 */
export async function calibrateUprobeHitCost(obj: BpfObject, opts: { calls?: number; rounds?: number; helper?: string } = {}): Promise<HitCostCalibration> {
  const calls = opts.calls ?? 2000;
  const rounds = opts.rounds ?? 5;
  const helperPath = opts.helper ?? CALIBRATION_HELPER;
  const offsets = calibrationSiteOffsets(helperPath);
  const helper = new Helper(helperPath);
  const diffs: number[] = [];
  const bases: number[] = [];
  try {
    await helper.run(calls); // warm-up: page faults, caches
    for (let r = 0; r < rounds; r++) {
      const without = await helper.run(calls);
      const handle = obj.attachUprobes(BpfPrograms.gt_calibration_empty, helperPath, offsets, offsets.map(() => 0n));
      let withProbe: number;
      try {
        withProbe = await helper.run(calls);
      } finally {
        await obj.detachAsync([handle]);
      }
      bases.push(without / calls / 1e9);
      // two hits per call: an emulated entry and a single-stepped return
      diffs.push(Math.max(0, withProbe - without) / (calls * offsets.length) / 1e9);
    }
  } finally {
    helper.close();
  }
  return { secondsPerHit: median(diffs), rounds: diffs, baselineSecondsPerCall: median(bases), calls, at: Date.now() };
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

/**
 * Mean BPF run time per run of a site's programs, seconds. A program run by
 * gt_dispatch's tail call has no statistics of its own (the kernel counts
 * the whole run, callee included, under gt_dispatch): such a site costs the
 * dispatcher's mean per run, over every site it serves. 0 when none ran.
 */
function siteCost(cost: Map<string, number>, site: number): number {
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
  /** Estimated CPU seconds tracing has cost the process since it was first seen. */
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
}

interface ProcState {
  service: string;
  hits: Map<number, number>;
  estimated: number;
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
  /** Seconds per hit measured by the last calibration (undefined until one finished). */
  hitCost: HitCostCalibration | undefined;

  private readonly source: HitSource;
  private readonly minWindowMs: number;

  constructor(source: HitSource, minWindowMs = 1000) {
    this.source = source;
    this.minWindowMs = minWindowMs;
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
    try {
      hits = this.source.probeHits(new Set(traced.keys()));
      cost = this.programCost(this.source.obj.programStats());
    } catch {
      return this.result;
    }
    const trap = this.hitCost?.secondsPerHit ?? 0;
    for (const pid of this.procs.keys()) if (!traced.has(pid)) this.procs.delete(pid);
    const out: ProcessOverhead[] = [];
    for (const [pid, service] of traced) {
      let st = this.procs.get(pid);
      const cpu = processCpuSeconds(pid);
      if (!st) {
        st = { service, hits: new Map(), estimated: 0, cpu, last: { hitsPerSecond: 0, secondsPerSecond: 0, cpuFraction: undefined, windowSeconds: 0 } };
        this.procs.set(pid, st);
      }
      st.service = service;
      let dHits = 0;
      let dEst = 0;
      for (const [site, n] of hits.get(pid) ?? []) {
        const d = n - (st.hits.get(site) ?? 0);
        if (d <= 0) continue;
        dHits += d;
        dEst += d * (trap + siteCost(cost, site));
        st.hits.set(site, n);
      }
      st.estimated += dEst;
      if (window > 0) {
        const dCpu = cpu !== undefined && st.cpu !== undefined ? cpu - st.cpu : undefined;
        st.last = { hitsPerSecond: dHits / window, secondsPerSecond: dEst / window, cpuFraction: dCpu ? dEst / dCpu : undefined, windowSeconds: window };
      }
      st.cpu = cpu;
      out.push({
        pid, service,
        hits: Object.fromEntries([...st.hits].map(([s, n]) => [siteName(s), n])),
        estimatedSeconds: st.estimated,
        ...st.last,
        cpuSeconds: cpu,
      });
    }
    this.result = out;
    return out;
  }

  /** Processes summed per service (cpuFraction: the window's estimated seconds over the same processes' CPU seconds). */
  static byService(procs: ProcessOverhead[]): Map<string, { hits: Record<string, number>; estimatedSeconds: number; secondsPerSecond: number; cpuFraction: number | undefined }> {
    const out = new Map<string, { hits: Record<string, number>; estimatedSeconds: number; secondsPerSecond: number; cpuFraction: number | undefined; windowEst: number; windowCpu: number }>();
    for (const p of procs) {
      const s = out.get(p.service) ?? { hits: {}, estimatedSeconds: 0, secondsPerSecond: 0, cpuFraction: undefined, windowEst: 0, windowCpu: 0 };
      for (const [k, n] of Object.entries(p.hits)) s.hits[k] = (s.hits[k] ?? 0) + n;
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
