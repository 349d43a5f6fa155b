/**
 * The running agent's CPU per span, two builds compared in one run: the
 * agent of tree A and the agent of tree B (each a checkout set up with
 * deploy/setup.sh, so that its build/ holds its own addon and probes) trace
 * the same Go net/http server in turn (A, B, then B, A, ... rotating which
 * goes first each round), exporting over OTLP/HTTP into a real collector,
 * while a load generator sends each rate for `--seconds`. Two agents never
 * run at once (they would trace the server twice).
 *
 * Per agent run: start, warm-up (3 s at 1000 requests/s: V8 compiles the hot
 * path once), a quiet period long enough for the agent's memory reduction
 * (12 s), the idle CPU over `--idle` seconds (default 10), then each rate. CPU is read per
 * thread from /proc/PID/task/TID/schedstat (nanoseconds on the CPU, unlike
 * the 10 ms ticks of /stat) and grouped by thread name: `main` (the
 * JavaScript thread), `rb` (the ring-buffer poll threads, gotrail-rb-*) and
 * `other` (libuv's pool, V8's platform workers, Node's own threads), each
 * also shown by name with --threads. Per span: the window's CPU (from the
 * start of the load until its last span was exported), less the idle CPU
 * over as long, per span exported. RSS after each rate and when idle.
 *
 *   deploy/node bench/agent-ab.ts --a ../base-checkout [--b .] [--rates 1000,10000]
 *     [--rounds 3] [--seconds 5] [--idle 5] [--a-env K=V]... [--b-env K=V]...
 *     [--a-arg FLAG]... [--b-arg FLAG]... [--threads] [--json out.json]
 *
 * --a-env/--b-env set environment variables of that side's agent (e.g.
 * NODE_OPTIONS), --a-arg/--b-arg add flags to its `gotrail run`; the two
 * sides may then be one tree. Needs root (eBPF) and this tree's set-up (the
 * Go server, the load generator's toolchain, the collector).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { benchArgs, usageError } from './lib/args.ts';
import { repoRoot, startAgent, type AgentProcess } from '../test/support/agent-process.ts';
import { httpRequest, startGoServer } from '../test/support/go-server.ts';
import { startCollector } from '../test/support/collector.ts';
import { metricSum } from '../test/support/metrics.ts';
import { sleep } from '../test/support/wait.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    a: { type: 'string' },
    b: { type: 'string', default: repoRoot },
    'a-env': { type: 'string', multiple: true, default: [] },
    'b-env': { type: 'string', multiple: true, default: [] },
    'a-arg': { type: 'string', multiple: true, default: [] },
    'b-arg': { type: 'string', multiple: true, default: [] },
    rates: { type: 'string', default: '1000,10000' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '5' },
    idle: { type: 'string', default: '10' },
    go: { type: 'string', default: 'go1.26' },
    threads: { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
if (!values.a) throw new Error('--a: the checkout to compare against (set up with deploy/setup.sh)');
const rates = values.rates.split(',').map(Number);
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const idleSeconds = Number(values.idle);
for (const [k, v] of Object.entries({ rounds, seconds, idle: idleSeconds, ...Object.fromEntries(rates.map((r, i) => [`rates[${i}]`, r])) })) {
  if (!Number.isInteger(v) || v < 1) usageError(import.meta.filename, `--${k}: a positive integer`);
}

interface Side { name: 'A' | 'B'; tree: string; env: Record<string, string>; args: string[] }
const envOf = (kvs: string[]): Record<string, string> => Object.fromEntries(kvs.map((kv) => {
  const i = kv.indexOf('=');
  if (i < 1) throw new Error(`environment entry ${kv}: expected NAME=VALUE`);
  return [kv.slice(0, i), kv.slice(i + 1)];
}));
const sides: Side[] = [
  { name: 'A', tree: resolve(values.a), env: envOf(values['a-env']), args: values['a-arg'] },
  { name: 'B', tree: resolve(values.b), env: envOf(values['b-env']), args: values['b-arg'] },
];
for (const s of sides) {
  const gotrail = join(s.tree, 'daemon', 'bin', 'gotrail');
  if (!existsSync(gotrail) || !existsSync(join(s.tree, 'build', 'probes', 'gotrail.bpf.o'))) throw new Error(`${s.tree}: not a set-up gotrail checkout (run bash deploy/setup.sh there)`);
}

const log = (s: string): void => void process.stderr.write(`[agent-ab] ${s}\n`);
const workDir = join(repoRoot, 'build', 'bench');
mkdirSync(workDir, { recursive: true });

// --- per-thread CPU ---------------------------------------------------------
/** Thread id → [name, ns on the CPU]. */
type ThreadCpu = Map<number, { name: string; ns: number }>;
function threadCpu(pid: number): ThreadCpu {
  const out: ThreadCpu = new Map();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${t}/comm`, 'latin1').trim();
      const ns = Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'latin1').split(' ')[0]);
      out.set(Number(t), { name, ns });
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return out;
}
/** The thread's group: main (the JavaScript thread), rb (ring-buffer poll threads), other. */
const groupOf = (pid: number, tid: number, name: string): 'main' | 'rb' | 'other' => (tid === pid ? 'main' : name.startsWith('gotrail-rb') ? 'rb' : 'other');
interface CpuSplit { total: number; main: number; rb: number; other: number; byName: Record<string, number>; exitedThreads: number }
/** Seconds on the CPU between two snapshots, per group and per thread name. */
function cpuBetween(pid: number, a: ThreadCpu, b: ThreadCpu): CpuSplit {
  const s: CpuSplit = { total: 0, main: 0, rb: 0, other: 0, byName: {}, exitedThreads: 0 };
  for (const [tid, t] of b) {
    const d = (t.ns - (a.get(tid)?.ns ?? 0)) / 1e9;
    s.total += d;
    s[groupOf(pid, tid, t.name)] += d;
    const key = tid === pid ? 'main' : t.name;
    s.byName[key] = (s.byName[key] ?? 0) + d;
  }
  for (const tid of a.keys()) if (!b.has(tid)) s.exitedThreads++;
  return s;
}
const scale = (c: CpuSplit, k: number, less?: CpuSplit, lessK = 0): CpuSplit => {
  const byName: Record<string, number> = {};
  for (const [n, v] of Object.entries(c.byName)) byName[n] = (v - (less?.byName[n] ?? 0) * lessK) * k;
  return {
    total: (c.total - (less?.total ?? 0) * lessK) * k, main: (c.main - (less?.main ?? 0) * lessK) * k, rb: (c.rb - (less?.rb ?? 0) * lessK) * k,
    other: (c.other - (less?.other ?? 0) * lessK) * k, byName, exitedThreads: c.exitedThreads,
  };
};
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return m ? Number(m[1]) / 1024 : NaN;
}

// --- load -------------------------------------------------------------------
const loadgen = join(workDir, 'loadgen');
execFileSync('go', ['build', '-o', loadgen, '.'], { cwd: join(repoRoot, 'bench', 'loadgen'), stdio: 'inherit' });
function runLoadgen(url: string, r: number, secs: number): { achievedRate: number } {
  return JSON.parse(execFileSync(loadgen, ['-url', url, '-rate', String(r), '-duration', `${secs}s`], { encoding: 'utf8', timeout: (secs + 120) * 1000 })) as { achievedRate: number };
}

// --- one agent run ----------------------------------------------------------
interface RateResult { rate: number; achieved: number; spans: number; exported: number; lost: number; windowSeconds: number; usPerSpan: CpuSplit; grossUsPerSpan: number; rssMiB: number; handOffsPerSecond: number; pollWakeupsPerSecond: number; forcedWakeupsPerSecond: number; bpfNsPerHit: number; bpfUsPerRequest: number }
interface RunResult { side: 'A' | 'B'; round: number; idleCpuPercent: number; idleRssMiB: number; idleSplit: CpuSplit; rates: RateResult[] }

const QUIET_MS = 12_000;
/**
 * The /proc reconciliation scan's interval: a minute rather than the default
 * 5 s, so that no scan falls into the windows. Its cost is fixed, not per
 * span, and depends on how many processes the host runs (on a shared host,
 * one scan more or less in the idle window moved the figures by µs per span).
 */
const SCAN_MS = 60_000;
/** After the load: the export queue's delay (1 s) and the export itself. */
const TAIL_MS = 2_000;

/**
 * A counter summed over the uprobe programs (net/http, runtime, and
 * gt_dispatch, under which the programs it tail-calls count): the node-wide
 * programs also run for every other process on the node.
 */
function uprobeSum(text: string, name: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}\\{program="(gt_(?:http|runtime|dispatch)[^"]*)"\\} (\\S+)$`, 'gm'))) sum += Number(m[2]);
  return sum;
}

async function runAgent(side: Side, round: number, bin: string, serverPid: number, serverUrl: string, otlp: string): Promise<RunResult> {
  const agent: AgentProcess = await startAgent(['--include-exe', bin, '--exporter', 'otlp', '--otlp-endpoint', otlp, '--scan-interval', String(SCAN_MS), ...side.args], side.env, { command: [join(side.tree, 'daemon', 'bin', 'gotrail')] });
  try {
    await agent.waitTraced(serverPid, 60_000);
    await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
    const pid = agent.child.pid!;
    const scrape = async (): Promise<string> => (await httpRequest(await agent.metricsUrl())).body;
    runLoadgen(`${serverUrl}/hello`, 1000, 3);
    await sleep(QUIET_MS);
    const i0 = threadCpu(pid);
    await sleep(idleSeconds * 1000);
    const idle = cpuBetween(pid, i0, threadCpu(pid));
    const idleRss = rssMiB(pid);
    const out: RunResult = { side: side.name, round, idleCpuPercent: (idle.total / idleSeconds) * 100, idleRssMiB: idleRss, idleSplit: scale(idle, 1 / idleSeconds), rates: [] };
    for (const r of rates) {
      const before = await scrape();
      const t0 = performance.now();
      const c0 = threadCpu(pid);
      const l = runLoadgen(`${serverUrl}/hello`, r, seconds);
      const rss = rssMiB(pid);
      await sleep(TAIL_MS);
      const c1 = threadCpu(pid);
      const window = (performance.now() - t0) / 1000;
      const after = await scrape();
      const d = (name: string, labels: Record<string, string> = {}): number => metricSum(after, name, labels) - metricSum(before, name, labels);
      const exported = d('gotrail_spans_exported_total');
      const spans = d('gotrail_events_total', { type: 'net/http/server' });
      if (exported < spans) log(`${side.name} round ${round} rate ${r}: ${spans - exported} of ${spans} spans not exported within ${TAIL_MS} ms after the load`);
      const cpu = cpuBetween(pid, c0, c1);
      out.rates.push({
        rate: r, achieved: l.achievedRate, spans, exported, lost: d('gotrail_events_lost_total'), windowSeconds: window,
        usPerSpan: scale(cpu, 1e6 / exported, out.idleSplit, window), grossUsPerSpan: (cpu.total * 1e6) / exported, rssMiB: rss,
        handOffsPerSecond: d('gotrail_ringbuf_batches_total', { map: 'gt_events' }) / window,
        pollWakeupsPerSecond: d('gotrail_ringbuf_wakeups_total', { map: 'gt_events' }) / window,
        // 0 for a build from before the probes counted them
        forcedWakeupsPerSecond: d('gotrail_ringbuf_forced_wakeups_total', { map: 'gt_events' }) / window,
        bpfNsPerHit: ((uprobeSum(after, 'gotrail_probe_run_seconds_total') - uprobeSum(before, 'gotrail_probe_run_seconds_total')) * 1e9) / (uprobeSum(after, 'gotrail_probe_runs_total') - uprobeSum(before, 'gotrail_probe_runs_total')),
        bpfUsPerRequest: ((uprobeSum(after, 'gotrail_probe_run_seconds_total') - uprobeSum(before, 'gotrail_probe_run_seconds_total')) * 1e6) / spans,
      });
    }
    return out;
  } finally {
    await agent.stop();
  }
}

// --- the run ----------------------------------------------------------------
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const f = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

const src = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');
if (!existsSync(src)) throw new Error(`${src} is missing: run bash deploy/setup.sh`);
const bin = join(workDir, 'httpserver-ab');
copyFileSync(src, bin);
const loadAtStart = loadavg();
const server = await startGoServer(bin);
const collector = await startCollector({ logLevel: 'warn' });
const runs: RunResult[] = [];
try {
  for (let round = 0; round < rounds; round++) {
    for (const side of round % 2 ? [sides[1]!, sides[0]!] : sides) {
      log(`round ${round + 1}/${rounds}: ${side.name} (${side.tree}${side.args.length ? ` ${side.args.join(' ')}` : ''}${Object.keys(side.env).length ? ` ${JSON.stringify(side.env)}` : ''})`);
      const r = await runAgent(side, round, bin, server.pid, server.url, `${collector.otlpHttpEndpoint}/v1/traces`);
      runs.push(r);
      log(`  idle ${f(r.idleCpuPercent, 2)} % ${f(r.idleRssMiB, 0)} MiB; ${r.rates.map((x) => `${x.rate}/s: ${f(x.usPerSpan.total, 2)} µs/span (main ${f(x.usPerSpan.main, 2)}, rb ${f(x.usPerSpan.rb, 2)}, other ${f(x.usPerSpan.other, 2)}), ${f(x.rssMiB, 0)} MiB`).join('; ')}`);
      await collector.clear();
    }
  }
} finally {
  await collector.stop();
  await server.stop();
}
const loadAtEnd = loadavg();

const lines: string[] = [];
lines.push(`A: ${sides[0]!.tree} ${sides[0]!.args.join(' ')} ${JSON.stringify(sides[0]!.env)}`, `B: ${sides[1]!.tree} ${sides[1]!.args.join(' ')} ${JSON.stringify(sides[1]!.env)}`, '');
lines.push('| rate | side | CPU µs/span (rounds) | median | main | rb | other | gross | hand-offs/s | poll wakeups/s | forced wakeups/s | BPF ns/hit | BPF µs/request | lost | RSS after |', '|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rates) {
  for (const s of sides) {
    const xs = runs.filter((x) => x.side === s.name).map((x) => x.rates.find((y) => y.rate === r)!);
    const m = (g: (x: RateResult) => number): number => median(xs.map(g));
    lines.push(`| ${r} | ${s.name} | ${xs.map((x) => f(x.usPerSpan.total, 2)).join(', ')} | ${f(m((x) => x.usPerSpan.total), 2)} | ${f(m((x) => x.usPerSpan.main), 2)} | ${f(m((x) => x.usPerSpan.rb), 2)} | ${f(m((x) => x.usPerSpan.other), 2)} | ${f(m((x) => x.grossUsPerSpan), 2)} | ${f(m((x) => x.handOffsPerSecond), 1)} | ${f(m((x) => x.pollWakeupsPerSecond), 1)} | ${f(m((x) => x.forcedWakeupsPerSecond), 1)} | ${f(m((x) => x.bpfNsPerHit), 0)} (${xs.map((x) => f(x.bpfNsPerHit, 0)).join(', ')}) | ${f(m((x) => x.bpfUsPerRequest), 2)} | ${xs.reduce((a, x) => a + x.lost, 0)} | ${f(m((x) => x.rssMiB), 0)} MiB |`);
  }
}
lines.push('', '| side | idle CPU (rounds) | idle RSS (rounds) |', '|---|---|---|');
for (const s of sides) {
  const xs = runs.filter((x) => x.side === s.name);
  lines.push(`| ${s.name} | ${xs.map((x) => `${f(x.idleCpuPercent, 2)} %`).join(', ')} | ${xs.map((x) => `${f(x.idleRssMiB, 0)} MiB`).join(', ')} |`);
}
if (values.threads) {
  lines.push('', 'µs per span by thread name (median over rounds; idle share subtracted)', '');
  for (const r of rates) {
    for (const s of sides) {
      const xs = runs.filter((x) => x.side === s.name).map((x) => x.rates.find((y) => y.rate === r)!);
      const names = [...new Set(xs.flatMap((x) => Object.keys(x.usPerSpan.byName)))].sort();
      lines.push(`- ${r}/s ${s.name}: ${names.map((n) => `${n} ${f(median(xs.map((x) => x.usPerSpan.byName[n] ?? 0)), 2)}`).join(', ')}`);
    }
  }
}
lines.push('', `load average ${loadAtStart.map((x) => x.toFixed(2)).join(' ')} at start, ${loadAtEnd.map((x) => x.toFixed(2)).join(' ')} at end; ${rounds} rounds, ${seconds} s per rate, sides alternating (first side rotating per round)`);
console.log(lines.join('\n'));
if (values.json) writeFileSync(values.json, JSON.stringify({ sides, rates, rounds, seconds, loadAtStart, loadAtEnd, runs }, null, 1));
