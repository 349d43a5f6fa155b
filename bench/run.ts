/**
 * `npm run bench`: every benchmark of gotrail in one command, printing
 * Markdown tables, writing JSON under bench/results/ (with the kernel, CPU,
 * virtualisation and versions it ran on) and rewriting the results section
 * of bench/README.md from them — the tables there are never typed by hand.
 *
 *   npm run bench [-- --scenario http,grpc] [--rounds 3] [--seconds 5]
 *                 [--calls 3000] [--go go1.26] [--grpc 1.85.0]
 *
 * --rounds: rounds per mode of the latency scenarios (and of entry-site and
 * the detach table); --calls: sequential requests or calls timed per round;
 * --seconds: time per rate of agent-load and of the idle figures.
 *
 * Scenarios (all by default, in this order):
 * - `http`: a net/http server answering GET /hello (2 probe hits);
 * - `http-client`: a net/http handler that makes an HTTP client call to the
 *   same server on a kept-alive connection (test/programs/http-sql, GET
 *   /call?to=/hello: a server span, a client span and the called server span);
 * - `http-sql`: the same handler making the same call and then a SQLite query
 *   through database/sql before it answers (GET /work?to=/hello);
 * - `grpc`: unary gRPC calls, client and server in one traced program;
 * - `sampling`: the grpc scenario's calls under OTEL_TRACES_SAMPLER always_on
 *   and always_off (decided in BPF), alternating with rounds without the
 *   agent: added latency, agent CPU and BPF time per call, events sent;
 * - `agent-load`: the agent's CPU and RSS while the http server serves 100,
 *   1 000 and 10 000 requests/s (one span each), with events lost;
 * - `attach`: planning, attaching and detaching gotrail's programs for one
 *   binary and for 100 binaries (copies), and the agent with 100 traced
 *   processes: time until all are traced, its CPU and RSS, time to stop;
 *   and detach of 1008 sites in 42 running processes, quiet and beside a
 *   busy load (traps gone and release), against the target of 100 ms
 *   (bench/detach-cost.ts);
 * - `pipeline`: the agent's user-space path on one core (decode → span →
 *   OTLP bytes) and end to end into a real collector (bench/agent-throughput.ts).
 * - `entry-site`: an entry probe's cost after the stack check and on its
 *   branch, with Go 1.19 and 1.26 (bench/entry-site.ts).
 *
 * The latency scenarios alternate, in one run, rounds without the agent,
 * with gotrail, and with the same probe sites attached to an empty BPF
 * program (the kernel's floor: the uprobe trap alone); each round rotates
 * which goes first, so the machine's drift hits all three alike. Each round
 * is closed-loop: `--calls` sequential requests (after a warm-up), timed by
 * the client (bench/loadgen -requests, one keep-alive connection; grpc: by
 * the program itself), so that no wake-up from idle or queueing hides the
 * few µs a probe hit adds. Reported: median and p99 (medians over rounds),
 * added µs per request and per probe hit, and gotrail's added latency as a
 * ratio of the floor's (target ≤ 1.5×).
 *
 * Needs root (eBPF) and set-up (bash deploy/setup.sh).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { benchArgs, usageError } from './lib/args.ts';
import { processCpuSeconds } from '../daemon/agent/overhead.ts';
import { echoBinary, toolchains } from '../test/go/google.golang.org/grpc/echo-build.ts';
import { repoRoot, startAgent, type AgentProcess } from '../test/support/agent-process.ts';
import { httpRequest, startGoServer, type GoServer } from '../test/support/go-server.ts';
import { sleep } from '../test/support/wait.ts';
import { environmentLine, roundsLine, tracedLine, type BenchEnvironment } from './report.ts';
import { startCollector } from '../test/support/collector.ts';
import { attachFloor } from './floor.ts';
import { entrySiteBench, entrySiteMarkdown } from './entry-site.ts';
import { DETACH_NICE } from '../daemon/agent/attachments.ts';
import { detachBench, detachMarkdown } from './detach-cost.ts';
import { planBinaryAt } from '../daemon/agent/binary-plan.ts';
import { DEFAULT_BPF_OBJECT, DISPATCH_PROGRAM } from '../daemon/agent/bpf-runtime.ts';
import { BpfObject } from '../daemon/native/index.ts';
import { probes } from '../daemon/probes/registry.ts';
import { metricSum } from '../test/support/metrics.ts';
import { perRequestBpfSeconds } from './lib/program-stats.ts';
import { agentCommand } from './lib/agent-command.ts';

const SCENARIOS = ['http', 'http-client', 'http-sql', 'grpc', 'sampling', 'agent-load', 'attach', 'pipeline', 'entry-site'] as const;
type Scenario = (typeof SCENARIOS)[number];

const { values } = benchArgs(import.meta.filename, {
  options: {
    scenario: { type: 'string', default: SCENARIOS.join(',') },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '5' },
    calls: { type: 'string', default: '3000' },
    go: { type: 'string', default: 'go1.26' },
    grpc: { type: 'string', default: '1.85.0' },
  },
});
const chosen = values.scenario.split(',').map((s) => s.trim()).filter(Boolean);
for (const s of chosen) if (!SCENARIOS.includes(s as Scenario)) usageError(import.meta.filename, `--scenario ${s}: one of ${SCENARIOS.join(', ')}`);
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const calls = Number(values.calls);
for (const [k, v] of Object.entries({ rounds, seconds, calls })) if (!Number.isInteger(v) || v < 1) usageError(import.meta.filename, `--${k}: a positive integer`);

const resultsDir = join(repoRoot, 'bench', 'results');
const workDir = join(repoRoot, 'build', 'bench');
mkdirSync(resultsDir, { recursive: true });
mkdirSync(workDir, { recursive: true });
const log = (s: string): void => void process.stderr.write(`[bench] ${s}\n`);

// --- environment ------------------------------------------------------------
const sh = (cmd: string, args: string[]): string => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch (e) {
    return ((e as { stdout?: string }).stdout ?? '').trim() || 'unknown';
  }
};
const environment: BenchEnvironment = {
  date: new Date().toISOString(),
  kernel: release(),
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
  virtualisation: sh('systemd-detect-virt', []) || 'unknown',
  node: process.version,
  go: sh('go', ['version']),
  libbpf: sh('pkg-config', ['--modversion', 'libbpf']),
  gotrail: sh('git', ['-C', repoRoot, 'describe', '--always', '--dirty']),
  loadAverageAtStart: loadavg().map((x) => +x.toFixed(2)),
  loadAverageAtEnd: [],
};

// --- helpers ----------------------------------------------------------------
const median = (xs: number[]): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const f = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const signed = (x: number, d = 1): string => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(d)}` : 'n/a');

/** BPF CPU seconds of the programs that run for traced requests, between two scrapes of /metrics. */
function bpfSeconds(before: string, after: string): number {
  let sum = 0;
  for (const v of perRequestBpfSeconds(before, after).values()) sum += v;
  return sum;
}
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const loadgen = join(workDir, 'loadgen');
let loadgenBuilt = false;
function buildLoadgen(): void {
  if (!loadgenBuilt) execFileSync('go', ['build', '-o', loadgen, '.'], { cwd: join(repoRoot, 'bench', 'loadgen'), stdio: 'inherit' });
  loadgenBuilt = true;
}
interface Load { sent: number; ok: number; errors: number; achievedRate: number; p50us: number; p99us: number }
/** Open loop: `r` GETs a second for `secs` s (the agent-load scenario's load). */
function runLoadgen(url: string, r: number, secs: number): Load {
  buildLoadgen();
  return JSON.parse(execFileSync(loadgen, ['-url', url, '-rate', String(r), '-duration', `${secs}s`], { encoding: 'utf8', timeout: (secs + 120) * 1000 })) as Load;
}
interface ClosedLoad { count: number; errors: number; connections: number; p50us: number; p99us: number }
/** Closed loop: `warmup` then `n` sequential GETs on one keep-alive connection, each timed by the client (µs). Throws on any failed request. */
function runClosedLoop(url: string, n: number, warmup: number): ClosedLoad {
  buildLoadgen();
  const l = JSON.parse(execFileSync(loadgen, ['-url', url, '-requests', String(n), '-warmup', String(warmup)], { encoding: 'utf8', timeout: 600_000 })) as ClosedLoad;
  if (l.errors || l.count !== n) throw new Error(`loadgen ${url}: ${l.errors} of ${n} requests failed`);
  return l;
}
/** Unrecorded requests before each closed-loop round: the connection, the server's goroutines and caches warm. */
const WARMUP = 200;
/**
 * After a freshly started agent's untimed round, how long the latency
 * scenarios wait before timing one (ms): the consume timer's first drains
 * (DEFAULT_CONSUME_INTERVAL_MS apart) and V8's compilation of what they run.
 */
const AGENT_WARMUP_MS = 1000;

/** A copy of a test program under build/bench, so that only the bench's own processes run it. */
function benchCopy(src: string, name: string): string {
  if (!existsSync(src)) throw new Error(`${src} is missing: run bash deploy/setup.sh`);
  const dst = join(workDir, name);
  copyFileSync(src, dst);
  return dst;
}

async function startTracing(bin: string, pid: number, env: Record<string, string> = {}, exporter = ['--exporter', 'none'], scanIntervalMs = 5000, command?: string[]): Promise<AgentProcess> {
  // the default scan interval (the test helper's 200 ms would add a /proc scan five times a second to the idle CPU)
  const agent = await startAgent(['--include-exe', bin, ...exporter, '--scan-interval', String(scanIntervalMs)], env, command ? { command } : {});
  await agent.waitTraced(pid, 60_000);
  // the start-up calibration runs probes of its own: let it finish first
  await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
  return agent;
}
const scrape = async (agent: AgentProcess): Promise<string> => (await httpRequest(await agent.metricsUrl())).body;

// --- latency scenarios ------------------------------------------------------
type Mode = 'without' | 'floor' | 'gotrail';
const MODES: Mode[] = ['without', 'floor', 'gotrail'];
interface Round { p50: number; p99: number }
interface LatencyResult {
  scenario: string;
  title: string;
  rounds: Record<Mode, Round[]>;
  requestsTraced: number;
  /** what requestsTraced counts, where the scenario knows (its warm-ups) */
  requestsTracedLine?: string;
  hitsPerRequest: number;
  bpfUsPerRequest: number;
  /** BPF µs per request of each program that ran (the sum is bpfUsPerRequest) */
  bpfUsPerRequestByProgram: Record<string, number>;
  /** gotrail_uprobe_hit_cost_seconds of the last agent, µs, per kind of the probed instruction */
  hitCostUs: { emulated: number; single_stepped: number };
  floorSites: number;
  eventsLost: number;
  summary: Record<'p50' | 'p99', Record<Mode, number>> & { addedUs: Record<'p50' | 'p99', { gotrail: number; floor: number }>; addedUsPerHit: { gotrail: number; floor: number }; ratioToFloor: number };
}

async function latency(scenario: string, title: string, bin: string, server: GoServer, measure: () => Promise<Round & { requests: number }>): Promise<LatencyResult> {
  const rs: Record<Mode, Round[]> = { without: [], floor: [], gotrail: [] };
  let requests = 0;
  let hits = 0;
  let bpf = 0;
  const bpfByProgram = new Map<string, number>();
  let lost = 0;
  let hitCost = { emulated: NaN, single_stepped: NaN };
  let floorSites = 0;
  log(`${scenario}: warming up`);
  await measure();
  for (let round = 0; round < rounds; round++) {
    const order = [...MODES.slice(round % 3), ...MODES.slice(0, round % 3)];
    for (const mode of order) {
      log(`${scenario}: round ${round + 1}/${rounds}, ${mode}`);
      if (mode === 'without') {
        rs.without.push(await measure());
      } else if (mode === 'floor') {
        const fl = attachFloor(bin);
        floorSites = fl.sites;
        try {
          rs.floor.push(await measure());
        } finally {
          await fl.detach();
        }
      } else {
        const agent = await startTracing(bin, server.pid);
        try {
          // A fresh agent compiles its event path (V8's compiler threads) and
          // grows its heap on its first drains: a start-up cost, paid once per
          // agent, which would land in the timed requests of every round and
          // set their p99 (bench/README.md). An untimed round, drained, first.
          await measure();
          await sleep(AGENT_WARMUP_MS);
          const before = await scrape(agent);
          const r = await measure();
          rs.gotrail.push(r);
          await sleep(1500); // the overhead estimator samples at most once a second
          const after = await scrape(agent);
          const d = (name: string): number => metricSum(after, name) - metricSum(before, name);
          requests += r.requests;
          hits += d('gotrail_probe_hits_total');
          lost += d('gotrail_events_lost_total');
          for (const [prog, secs] of perRequestBpfSeconds(before, after)) {
            bpf += secs;
            bpfByProgram.set(prog, (bpfByProgram.get(prog) ?? 0) + secs);
          }
          const cost = (kind: string): number => metricSum(after, 'gotrail_uprobe_hit_cost_seconds', { kind }) * 1e6;
          hitCost = { emulated: cost('emulated'), single_stepped: cost('single_stepped') };
        } finally {
          await agent.stop();
        }
      }
    }
  }
  const m = (mode: Mode, k: 'p50' | 'p99'): number => median(rs[mode].map((r) => r[k]));
  const hitsPerRequest = requests ? hits / requests : NaN;
  // the median of each round's difference with that round's run without the
  // agent (the modes of a round run back to back): the host's speed drifts
  // between rounds by more than the probes cost, which a difference of
  // medians taken over different rounds would count as the probes'
  const addedOf = (mode: 'gotrail' | 'floor', k: 'p50' | 'p99'): number => median(rs[mode].map((r, i) => r[k] - (rs.without[i]?.[k] ?? NaN)));
  const added = (k: 'p50' | 'p99'): { gotrail: number; floor: number } => ({ gotrail: addedOf('gotrail', k), floor: addedOf('floor', k) });
  const a50 = added('p50');
  return {
    scenario, title, rounds: rs, requestsTraced: requests, hitsPerRequest, bpfUsPerRequest: requests ? (bpf * 1e6) / requests : NaN,
    bpfUsPerRequestByProgram: Object.fromEntries([...bpfByProgram].sort((a, b) => b[1] - a[1]).map(([p, secs]) => [p, +((secs * 1e6) / requests).toFixed(3)])),
    hitCostUs: hitCost, floorSites, eventsLost: lost,
    summary: {
      p50: { without: m('without', 'p50'), floor: m('floor', 'p50'), gotrail: m('gotrail', 'p50') },
      p99: { without: m('without', 'p99'), floor: m('floor', 'p99'), gotrail: m('gotrail', 'p99') },
      addedUs: { p50: a50, p99: added('p99') },
      addedUsPerHit: { gotrail: a50.gotrail / hitsPerRequest, floor: a50.floor / hitsPerRequest },
      ratioToFloor: a50.gotrail / a50.floor,
    },
  };
}

/** gotrail's added latency over the floor's; none when the floor added nothing measurable (the run did not resolve the trap's cost there). */
const ratio = (gotrail: number, floor: number): string => (floor > 0 ? `${f(gotrail / floor, 2)}×` : 'n/a (floor ≤ 0)');

/** Each round's added median of `mode` over that round's run without the agent, µs. */
const perRound = (r: LatencyResult, mode: 'gotrail' | 'floor'): string => r.rounds[mode].map((g, i) => signed(g.p50 - (r.rounds.without[i]?.p50 ?? NaN), 1)).join(', ');

function latencyMarkdown(r: LatencyResult): string {
  const s = r.summary;
  const row = (k: 'p50' | 'p99', name: string): string =>
    `| ${name} | ${f(s[k].without)} µs | ${f(s[k].floor)} µs | ${f(s[k].gotrail)} µs | ${signed(s.addedUs[k].floor)} µs | ${signed(s.addedUs[k].gotrail)} µs | ${ratio(s.addedUs[k].gotrail, s.addedUs[k].floor)} |`;
  return [
    `### ${r.scenario}: ${r.title}`,
    '',
    roundsLine(rounds),
    '',
    '| latency per request | without | floor (empty programs) | gotrail | added by floor (per round) | added by gotrail (per round) | gotrail / floor |',
    '|---|---:|---:|---:|---:|---:|---:|',
    row('p50', 'median'),
    row('p99', 'p99'),
    '',
    '| per request | value |',
    '|---|---:|',
    `| probe hits | ${f(r.hitsPerRequest, 2)} |`,
    `| added per hit, gotrail (median) | ${signed(s.addedUsPerHit.gotrail, 2)} µs |`,
    `| added per hit, floor (median) | ${signed(s.addedUsPerHit.floor, 2)} µs |`,
    `| BPF program time (kernel statistics) | ${f(r.bpfUsPerRequest, 2)} µs (${f(r.bpfUsPerRequest / r.hitsPerRequest, 2)} µs per hit; target < 1) |`,
    `| calibrated uprobe hit cost (gotrail_uprobe_hit_cost_seconds) | ${f(r.hitCostUs.emulated, 2)} µs per hit emulated, ${f(r.hitCostUs.single_stepped, 2)} µs single-stepped |`,
    `| gotrail / floor (median added latency) | ${ratio(s.addedUs.p50.gotrail, s.addedUs.p50.floor)} (target ≤ 1.5×, moonshot 1.1×) |`,
    '',
    `${r.requestsTracedLine ?? `requests traced ${r.requestsTraced}`}, events lost ${r.eventsLost}; floor: ${r.floorSites} sites with an empty program; ` +
      `added median per round, gotrail: ${perRound(r, 'gotrail')} µs, floor: ${perRound(r, 'floor')} µs; ` +
      `BPF time per request by program: ${Object.entries(r.bpfUsPerRequestByProgram).map(([p, us]) => `${p} ${f(us, 2)} µs`).join(', ') || 'none'}`,
  ].join('\n');
}

/** The net/http scenarios: which program, which request (to the same server's /hello where the handler calls out), what it is. */
const HTTP_SCENARIOS = {
  'http': { program: 'httpserver', path: (_: string) => '/hello', what: 'net/http server, GET /hello' },
  'http-client': { program: 'http-sql', path: (url: string) => `/call?to=${encodeURIComponent(`${url}/hello`)}`, what: 'net/http handler making one HTTP client call' },
  'http-sql': { program: 'http-sql', path: (url: string) => `/work?to=${encodeURIComponent(`${url}/hello`)}`, what: 'net/http handler making one HTTP client call and one SQLite query (database/sql, modernc.org/sqlite)' },
} as const;

async function httpScenario(scenario: keyof typeof HTTP_SCENARIOS): Promise<{ json: unknown; markdown: string }> {
  const sc = HTTP_SCENARIOS[scenario];
  const bin = benchCopy(join(repoRoot, 'build', 'go', values.go, 'plain', sc.program), sc.program);
  const server = await startGoServer(bin);
  try {
    const url = server.url + sc.path(server.url);
    const measure = (): Promise<Round & { requests: number }> => {
      const l = runClosedLoop(url, calls, WARMUP);
      // the agent sees the warm-up's requests too: they count for the hits and BPF time per request
      return Promise.resolve({ p50: l.p50us, p99: l.p99us, requests: calls + WARMUP });
    };
    const title = `${sc.what} (${values.go}, ${calls} sequential requests per round on one keep-alive connection, timed by the client)`;
    const r = await latency(scenario, title, bin, server, measure);
    r.requestsTracedLine = tracedLine(r.requestsTraced, calls, WARMUP, rounds);
    return { json: r, markdown: latencyMarkdown(r) };
  } finally {
    await server.stop();
  }
}

async function grpcScenario(): Promise<{ json: unknown; markdown: string }> {
  const tc = toolchains().find((t) => t.version === values.go || t.version.startsWith(`${values.go}.`));
  if (!tc) throw new Error(`--go ${values.go}: no such toolchain here`);
  const built = echoBinary(values.grpc, tc, false);
  if ('skip' in built) throw new Error(built.skip);
  const bin = benchCopy(built.binary, 'grpc-echo');
  const server = await startGoServer(bin);
  try {
    const addr = (await httpRequest(`${server.url}/addr`)).body.trim();
    const measure = async (): Promise<Round & { requests: number }> => {
      const r = await httpRequest(`${server.url}/bench?to=${addr}&n=${calls}`);
      const m = /p50_us=([\d.]+) p99_us=([\d.]+)/.exec(r.body);
      if (r.status !== 200 || !m) throw new Error(`grpc-echo /bench: ${r.status} ${r.body}`);
      return { p50: Number(m[1]), p99: Number(m[2]), requests: calls };
    };
    const r = await latency('grpc', `unary gRPC call, client and server in one traced program (${tc.version}, grpc-go v${values.grpc}, ${calls} sequential calls per round)`, bin, server, measure);
    return { json: r, markdown: latencyMarkdown(r) };
  } finally {
    await server.stop();
  }
}

/**
 * How long the agent is left quiet before its idle figures are taken, in ms:
 * past its memory reductions (a GC and malloc_trim 5-10 s after its last
 * activity, the page-out of its file pages at 30 s; daemon/agent/memory-trim.ts),
 * and long enough after them that what the idle agent reads again is back.
 */
const IDLE_AFTER_MS = 45_000;

async function agentLoadScenario(): Promise<{ json: unknown; markdown: string }> {
  const bin = benchCopy(join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver'), 'httpserver');
  const server = await startGoServer(bin);
  // all in: the agent exports every span over OTLP/HTTP into a real collector
  const collector = await startCollector({ logLevel: 'warn' });
  const rows: Array<{ rate: number; achieved: number; agentCpuPercent: number; agentRssMiB: number; spans: number; exported: number; lost: number; cpuUsPerSpan: number; wakeupsPerSecond: number }> = [];
  const wakeups = (text: string): number => metricSum(text, 'gotrail_ringbuf_wakeups_total', { map: 'gt_events' });
  try {
    // no /proc scan within the windows: its cost is fixed, not per span, and
    // follows the host's process count (on a shared host one scan more or
    // less in the idle window turned the 1k/s row's figure negative);
    // on a node of its own, as where it runs alone (bench/lib/agent-command.ts): its memory figures are its own
    const own = agentCommand(repoRoot, workDir);
    const agent = await startTracing(bin, server.pid, own.env, ['--exporter', 'otlp', '--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`], 60_000, own.command);
    try {
      // warm-up: the first spans make V8 compile the decode, span and export
      // paths (tens of ms of compiler threads, once); not a cost per span
      runLoadgen(`${server.url}/hello`, 1000, 3);
      // idle: the agent gives memory back 5-10 s after its last activity (daemon/agent/memory-trim.ts)
      await sleep(IDLE_AFTER_MS);
      rows.push({ rate: 0, achieved: 0, agentCpuPercent: NaN, agentRssMiB: rssMiB(agent.child.pid!), spans: 0, exported: 0, lost: 0, cpuUsPerSpan: NaN, wakeupsPerSecond: NaN });
      const idleBefore = await scrape(agent);
      const c0 = processCpuSeconds(agent.child.pid!)!;
      await sleep(seconds * 1000);
      const idleCpu = (processCpuSeconds(agent.child.pid!)! - c0) / seconds;
      rows[0]!.agentCpuPercent = idleCpu * 100;
      rows[0]!.wakeupsPerSecond = (wakeups(await scrape(agent)) - wakeups(idleBefore)) / seconds;
      for (const r of [100, 1000, 10000]) {
        log(`agent-load: ${r} req/s`);
        const before = await scrape(agent);
        const a0 = processCpuSeconds(agent.child.pid!)!;
        const l = runLoadgen(`${server.url}/hello`, r, seconds);
        const cpu = ((processCpuSeconds(agent.child.pid!)! - a0) / seconds) * 100;
        const rss = rssMiB(agent.child.pid!);
        const during = await scrape(agent);
        // until the last batch is exported (the batch delay is 1 s); its CPU counts too
        await sleep(2500);
        const cpuAll = processCpuSeconds(agent.child.pid!)! - a0;
        const after = await scrape(agent);
        const d = (name: string, labels: Record<string, string> = {}): number => metricSum(after, name, labels) - metricSum(before, name, labels);
        const exported = d('gotrail_spans_exported_total');
        rows.push({
          rate: r, achieved: l.achievedRate, agentCpuPercent: cpu, agentRssMiB: rss, spans: d('gotrail_events_total', { type: 'net/http/server' }), exported, lost: d('gotrail_events_lost_total'),
          // the agent's whole CPU while the spans were made and exported, less what it spends idle in as long
          cpuUsPerSpan: exported ? ((cpuAll - idleCpu * (seconds + 2.5)) * 1e6) / exported : NaN,
          wakeupsPerSecond: (wakeups(during) - wakeups(before)) / seconds,
        });
      }
    } finally {
      await agent.stop();
    }
  } finally {
    await collector.stop();
    await server.stop();
  }
  const markdown = [
    `### agent-load: the agent's CPU and RSS under load (net/http server, ${values.go}, ${seconds} s per rate, OTLP/HTTP export into a collector)`,
    '',
    '| requests/s asked | achieved | spans received | spans exported | events lost | agent CPU (% of a core) | agent CPU per span, all in | agent RSS | probe-event consumer wake-ups/s |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.rate || 'idle'} | ${f(r.achieved, 0)} | ${r.spans} | ${r.exported} | ${r.lost} | ${f(r.agentCpuPercent, 1)} % | ${r.rate ? `${f(r.cpuUsPerSpan, 1)} µs` : ''} | ${f(r.agentRssMiB, 0)} MiB | ${f(r.wakeupsPerSecond, 1)} |`),
    '',
    'Agent CPU per span: the agent process\'s CPU time (all threads) from the start of a rate until its last span was exported, less its idle CPU over as long, per span exported (decode → span → OTLP bytes → send). Target < 5 µs. The /proc reconciliation scan (every 5 s by default, a fixed cost that follows the host\'s process count) is set to once a minute here, out of the windows; `bench/agent-ab.ts` splits the figure by thread and compares two builds. Measured after a 3 s warm-up at 1000 requests/s: the first spans make V8 compile the hot path once (tens of ms on its compiler threads), which would otherwise be charged to the first rate.',
    `Idle: ${IDLE_AFTER_MS / 1000} s after the warm-up's last request (the agent gives freed memory back 5–10 s after its last activity, with one memory-reducing GC, and hands its file pages back to the kernel at 30 s, the first time with that reduction; a host's process churn is tidied up after within 10 s); the other rows' RSS is taken right after their load. The agent runs as its launcher runs it, on a copy of \`node\` of its own: the bench's Node would otherwise share its pages.`,
    'Targets: 0 events lost at 10k spans/s; RSS under 60 MiB idle, under 100 MiB with 100 traced processes (row "agent RSS with 100 processes" of `attach`); no wake-up when idle.',
  ].join('\n');
  return { json: { scenario: 'agent-load', rows }, markdown };
}

/** Attaches every attachable probe of gotrail's plan for each binary as the agent does (one dispatcher link per binary); ms for plan, attach and detach. */
async function attachTimes(obj: BpfObject, bins: string[]): Promise<{ planMs: number; attachMs: number; detachMs: number; sites: number; linkSets: number }> {
  let t = performance.now();
  const plans = bins.map((b) => {
    const { plan, error } = planBinaryAt(b, probes);
    if (!plan) throw new Error(`plan ${b}: ${error?.message}`);
    return plan;
  });
  const planMs = performance.now() - t;
  const handles: number[] = [];
  let sites = 0;
  t = performance.now();
  for (const plan of plans) {
    // as the agent attaches: one link of the dispatcher per binary over all its sites
    const offsets = plan.probes.filter((p) => p.attachable).flatMap((p) => p.sites.flatMap((set) => set.offsets));
    if (!offsets.length) continue;
    handles.push(obj.attachUprobes(DISPATCH_PROGRAM, plan.path, offsets, offsets.map(() => 0n)));
    sites += offsets.length;
  }
  const attachMs = performance.now() - t;
  t = performance.now();
  await obj.detachAsync(handles, { nice: DETACH_NICE });
  return { planMs, attachMs, detachMs: performance.now() - t, sites, linkSets: handles.length };
}

async function attachScenario(): Promise<{ json: unknown; markdown: string }> {
  const src = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');
  const one = benchCopy(src, 'httpserver');
  const many = Array.from({ length: 100 }, (_, i) => benchCopy(src, `httpserver-copy-${i}`));
  const obj = new BpfObject(DEFAULT_BPF_OBJECT);
  obj.load();
  let single, hundred;
  try {
    single = await attachTimes(obj, [one]);
    hundred = await attachTimes(obj, many);
  } finally {
    obj.close();
  }
  // the agent with 100 traced processes of one binary
  log('attach: starting 100 processes');
  const servers: GoServer[] = [];
  let agentRow: { tracedMs: number; rssMiB: number; cpuPercent: number; stopMs: number } | undefined;
  try {
    for (let i = 0; i < 100; i++) servers.push(await startGoServer(one));
    const t0 = performance.now();
    const own = agentCommand(repoRoot, workDir);
    const agent = await startAgent(['--include-exe', one, '--exporter', 'none', '--scan-interval', '5000'], own.env, { command: own.command });
    try {
      for (const s of servers) await agent.waitTraced(s.pid, 120_000);
      const tracedMs = performance.now() - t0;
      await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
      await sleep(IDLE_AFTER_MS);
      const c0 = processCpuSeconds(agent.child.pid!)!;
      await sleep(seconds * 1000);
      const cpuPercent = ((processCpuSeconds(agent.child.pid!)! - c0) / seconds) * 100;
      const rss = rssMiB(agent.child.pid!);
      const s0 = performance.now();
      await agent.stop();
      agentRow = { tracedMs, rssMiB: rss, cpuPercent, stopMs: performance.now() - s0 };
    } finally {
      await agent.stop();
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
  // detach of 1000+ sites against the target, quiet and beside a busy load
  log('attach: detach of 1008 sites (42 copies), quiet and busy');
  const detach = await detachBench(src, 42, rounds, log);
  const row = (name: string, r: typeof single): string => `| ${name} | ${r.linkSets} | ${r.sites} | ${f(r.planMs, 0)} ms | ${f(r.attachMs, 1)} ms | ${f(r.detachMs, 1)} ms |`;
  const markdown = [
    `### attach: attach and detach time (${values.go} net/http server binary, every probe gotrail plans for it)`,
    '',
    '| binaries | link sets | sites | plan | attach | detach |',
    '|---|---:|---:|---:|---:|---:|',
    row('1', single),
    row('100 (copies, not running)', hundred),
    '',
    '| agent with 100 traced processes of one binary | value |',
    '|---|---:|',
    `| start until all 100 traced | ${f(agentRow.tracedMs, 0)} ms |`,
    `| agent CPU, idle with 100 processes | ${f(agentRow.cpuPercent, 1)} % of a core |`,
    `| agent RSS with 100 processes | ${f(agentRow.rssMiB, 0)} MiB (target < 100 MiB) |`,
    `| agent stop (detach, drain, flush) | ${f(agentRow.stopMs, 0)} ms |`,
    '',
    'Detach of 1000 sites (target < 100 ms; bench/detach-cost.ts): every probe gotrail plans, attached to 42 running copies of the binary, then detached by the agent\'s way (`link per binary`: one link of the dispatcher program per copy, a thread per link, at nice -20); `link per binary, normal priority` is the same without CAP_SYS_NICE, `link per program` the same sites as one link per probe program and copy (how gotrail attached before its dispatcher), `sequential` shows one such link\'s cost alone.',
    '',
    detachMarkdown(detach, rounds),
    '',
    `Idle CPU and RSS with 100 processes: from ${IDLE_AFTER_MS / 1000} s after the start-up's calibration, the agent on a copy of \`node\` of its own.`,
  ].join('\n');
  return { json: { scenario: 'attach', single, hundred, agent: agentRow, detach }, markdown };
}

async function entrySiteScenario(): Promise<{ json: unknown; markdown: string }> {
  const calls = 20000;
  const rows = await entrySiteBench(['go1.19', 'go1.26'], rounds, calls, log);
  const markdown = [
    '### entry-site: one entry probe\'s cost at each site of the prologue (bench/entry-site.ts)',
    '',
    entrySiteMarkdown(rows, calls, rounds),
    '',
    'The instruction after the stack check is single-stepped by the kernel unless it emulates it (a branch, PUSH, NOP): a second trap per call. gotrail probes the check\'s branch there, and its programs skip a hit whose branch grows the stack.',
  ].join('\n');
  return { json: { scenario: 'entry-site', rows }, markdown };
}

function pipelineScenario(): { json: unknown; markdown: string } {
  const out = execFileSync(process.execPath, [join(repoRoot, 'bench', 'agent-throughput.ts'), '--events', '200000', '--export', '--concurrency', '1,2', '--batch', '2048'], { encoding: 'utf8', cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
  const markdown = ['### pipeline: the agent\'s user-space path (bench/agent-throughput.ts)', '', out.trim(), '', 'Target: ≥ 300k spans/s per core.'].join('\n');
  return { json: { scenario: 'pipeline', output: out }, markdown };
}

/**
 * What an unsampled request costs against a sampled one, in one run: the
 * grpc scenario's sequential calls (timed inside the program) without the
 * agent, with OTEL_TRACES_SAMPLER=always_on and with always_off, rounds
 * alternating. An unsampled call takes the same probe hits (the trap is the
 * file's) but sends no event, so the agent has nothing to do for it.
 */
async function samplingScenario(): Promise<{ json: unknown; markdown: string }> {
  type SMode = 'without' | 'always_on' | 'always_off';
  const modes: SMode[] = ['without', 'always_on', 'always_off'];
  const tc = toolchains().find((t) => t.version === values.go || t.version.startsWith(`${values.go}.`));
  if (!tc) throw new Error(`--go ${values.go}: no such toolchain here`);
  const built = echoBinary(values.grpc, tc, false);
  if ('skip' in built) throw new Error(built.skip);
  const bin = benchCopy(built.binary, 'grpc-echo');
  const server = await startGoServer(bin);
  const per: Record<SMode, Array<Round & { agentCpuUs: number; bpfUs: number; events: number; notSampled: number }>> = { without: [], always_on: [], always_off: [] };
  try {
    const addr = (await httpRequest(`${server.url}/addr`)).body.trim();
    const measure = async (): Promise<Round> => {
      const r = await httpRequest(`${server.url}/bench?to=${addr}&n=${calls}`);
      const m = /p50_us=([\d.]+) p99_us=([\d.]+)/.exec(r.body);
      if (r.status !== 200 || !m) throw new Error(`grpc-echo /bench: ${r.status} ${r.body}`);
      return { p50: Number(m[1]), p99: Number(m[2]) };
    };
    log('sampling: warming up');
    await measure();
    for (let round = 0; round < rounds; round++) {
      const order = [...modes.slice(round % 3), ...modes.slice(0, round % 3)];
      for (const mode of order) {
        log(`sampling: round ${round + 1}/${rounds}, ${mode}`);
        if (mode === 'without') {
          per.without.push({ ...(await measure()), agentCpuUs: NaN, bpfUs: NaN, events: NaN, notSampled: NaN });
          continue;
        }
        const agent = await startTracing(bin, server.pid, { OTEL_TRACES_SAMPLER: mode, OTEL_TRACES_SAMPLER_ARG: '' });
        try {
          const before = await scrape(agent);
          const cpu0 = processCpuSeconds(agent.child.pid!)!;
          const r = await measure();
          await sleep(500); // the last events consumed
          const cpu = processCpuSeconds(agent.child.pid!)! - cpu0;
          const after = await scrape(agent);
          const d = (name: string, labels: Record<string, string> = {}): number => metricSum(after, name, labels) - metricSum(before, name, labels);
          per[mode].push({
            ...r, agentCpuUs: (cpu * 1e6) / calls, bpfUs: (bpfSeconds(before, after) * 1e6) / calls,
            events: (d('gotrail_events_total', { type: 'google.golang.org/grpc/server' }) + d('gotrail_events_total', { type: 'google.golang.org/grpc/client' })) / calls,
            notSampled: d('gotrail_spans_not_sampled_total') / calls,
          });
        } finally {
          await agent.stop();
        }
      }
    }
  } finally {
    await server.stop();
  }
  const m = (mode: SMode, k: 'p50' | 'p99' | 'agentCpuUs' | 'bpfUs' | 'events' | 'notSampled'): number => median(per[mode].map((r) => r[k]));
  const row = (mode: SMode): string =>
    `| ${mode} | ${f(m(mode, 'p50'))} µs | ${signed(m(mode, 'p50') - m('without', 'p50'))} µs | ${f(m(mode, 'p99'))} µs | ${f(m(mode, 'agentCpuUs'), 2)} µs | ${f(m(mode, 'bpfUs'), 2)} µs | ${f(m(mode, 'events'), 2)} | ${f(m(mode, 'notSampled'), 2)} |`;
  const markdown = [
    `### sampling: unary gRPC call under always_on and always_off, decided in BPF (${tc.version}, grpc-go v${values.grpc}, ${calls} sequential calls per round)`,
    '',
    `${rounds} rounds per mode, alternating in one run (medians over rounds); agent CPU and BPF time are per call`,
    '',
    '| sampler | median | added (median) | p99 | agent CPU | BPF program time | events sent | spans not made |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    `| without the agent | ${f(m('without', 'p50'))} µs | — | ${f(m('without', 'p99'))} µs | — | — | — | — |`,
    row('always_on'),
    row('always_off'),
    '',
    `always_off saves per call: ${signed(m('always_on', 'p50') - m('always_off', 'p50'))} µs median latency, ${f(m('always_on', 'agentCpuUs') - m('always_off', 'agentCpuUs'), 2)} µs of agent CPU, ${f(m('always_on', 'bpfUs') - m('always_off', 'bpfUs'), 2)} µs of BPF time; the probe hits (the uprobe traps) remain.`,
  ].join('\n');
  return { json: { scenario: 'sampling', rounds: per }, markdown };
}

// --- run --------------------------------------------------------------------
const run: Record<string, { json: unknown; markdown: string }> = {};
for (const s of SCENARIOS) {
  if (!chosen.includes(s)) continue;
  log(`scenario ${s}`);
  if (s === 'http' || s === 'http-client' || s === 'http-sql') run[s] = await httpScenario(s);
  else if (s === 'grpc') run[s] = await grpcScenario();
  else if (s === 'sampling') run[s] = await samplingScenario();
  else if (s === 'agent-load') run[s] = await agentLoadScenario();
  else if (s === 'attach') run[s] = await attachScenario();
  else if (s === 'entry-site') run[s] = await entrySiteScenario();
  else run[s] = pipelineScenario();
  process.stdout.write(run[s].markdown + '\n\n');
}
environment.loadAverageAtEnd = loadavg().map((x) => +x.toFixed(2));
// with the tables, not only in bench/README.md: figures taken on a busy host say little
process.stdout.write(`ran on: ${environmentLine(environment)}\n`);
const options = { rounds, seconds, calls, go: values.go, grpc: values.grpc };
for (const [s, r] of Object.entries(run)) {
  writeFileSync(join(resultsDir, `${s}.json`), JSON.stringify({ scenario: s, environment, options, result: r.json, markdown: r.markdown }, null, 2) + '\n');
}
log(`wrote ${Object.keys(run).map((s) => `bench/results/${s}.json`).join(', ')}`);

// bench/README.md: its results section, rebuilt from the latest result of every scenario
interface Stored { scenario: string; environment: typeof environment; options: typeof options; markdown: string }
const stored = readdirSync(resultsDir).filter((n) => SCENARIOS.includes(n.replace(/\.json$/, '') as Scenario))
  .map((n) => JSON.parse(readFileSync(join(resultsDir, n), 'utf8')) as Stored)
  .sort((a, b) => SCENARIOS.indexOf(a.scenario as Scenario) - SCENARIOS.indexOf(b.scenario as Scenario));
const envLine = environmentLine;
const section = [
  '<!-- bench:results:begin (written by bench/run.ts; do not edit) -->',
  ...stored.flatMap((r) => [r.markdown, '', `<sub>${envLine(r.environment)}; options ${JSON.stringify(r.options)}</sub>`, '']),
  '<!-- bench:results:end -->',
].join('\n');
const readme = join(repoRoot, 'bench', 'README.md');
const text = existsSync(readme) ? readFileSync(readme, 'utf8') : '';
const re = /<!-- bench:results:begin[^]*?<!-- bench:results:end -->/;
writeFileSync(readme, re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n## Latest results\n\n${section}\n`);
log(`rewrote the results section of bench/README.md with the latest result of each scenario (this run's: ${Object.keys(run).join(', ')}, ${rounds} round${rounds === 1 ? '' : 's'} of ${calls} calls); git diff bench/ shows what it replaced`);
