/**
 * Latency gotrail adds to a unary gRPC call, and the probe hits it costs.
 * The grpc-echo test program (test/programs/grpc-echo, built against the
 * chosen grpc-go version) calls its own gRPC server: `--calls` sequential
 * unary calls of /demo.Echo/Unary on one connection per round, timed in the
 * program. Rounds without and with the agent alternate in one run (the
 * machine's noise then hits both sides alike; odd rounds start without, even
 * rounds with the agent). The agent traces both ends of every call, so the
 * added latency is that of a CLIENT and a SERVER span.
 *
 *   deploy/node bench/grpc-overhead.ts [--calls 5000] [--rounds 5]
 *                                      [--go go1.26] [--grpc 1.85.0]
 *
 * Prints a Markdown table (medians over rounds of each round's median and
 * p99 latency) and writes the same as JSON to
 * bench/results/grpc-overhead-<go>-grpc<version>.json. Probe hits per RPC are
 * the agent's `gotrail_probe_runs_total` of its uprobe programs over the
 * calls made. Needs root (the agent loads eBPF).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchArgs } from './lib/args.ts';
import { echoBinary, toolchains } from '../test/go/google.golang.org/grpc/echo-build.ts';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { httpRequest, startGoServer } from '../test/support/go-server.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    calls: { type: 'string', default: '5000' },
    rounds: { type: 'string', default: '5' },
    go: { type: 'string', default: 'go1.26' },
    grpc: { type: 'string', default: '1.85.0' },
  },
});
const calls = Number(values.calls);
const rounds = Number(values.rounds);
if (!Number.isInteger(calls) || calls < 100) throw new Error('--calls: an integer >= 100');
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds: an integer >= 1');
const tc = toolchains().find((t) => t.version === values.go || t.version.startsWith(`${values.go}.`));
if (!tc) throw new Error(`--go ${values.go}: no such toolchain here`);
const built = echoBinary(values.grpc, tc, false);
if ('skip' in built) throw new Error(built.skip);
const bin = built.binary;

/** Latency of one round, µs, as the program measured it. */
interface Round { p50: number; p99: number }
/** Uprobe programs: one run is one probe hit (the tracepoint programs are not per call). */
const UPROBE_PROGRAM = /^gt_(grpc|http)_/;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function metricSum(text: string, re: RegExp): number {
  let sum = 0;
  for (const m of text.matchAll(re)) sum += Number(m[1]);
  return sum;
}

function programStats(text: string): Map<string, { runs: number; secs: number }> {
  const out = new Map<string, { runs: number; secs: number }>();
  for (const m of text.matchAll(/^gotrail_probe_runs_total\{program="([^"]+)"\} (\d+)/gm)) out.set(m[1]!, { runs: Number(m[2]), secs: 0 });
  for (const m of text.matchAll(/^gotrail_probe_run_seconds_total\{program="([^"]+)"\} ([\d.e+-]+)/gm)) {
    const p = out.get(m[1]!);
    if (p) p.secs = Number(m[2]);
  }
  return out;
}

const server = await startGoServer(bin);
const without: Round[] = [];
const withAgent: Round[] = [];
const programs = new Map<string, { runs: number; secs: number }>();
let tracedCalls = 0;
let events = 0;
let lost = 0;
try {
  const grpcAddr = (await httpRequest(`${server.url}/addr`)).body.trim();
  const bench = async (): Promise<Round> => {
    const r = await httpRequest(`${server.url}/bench?to=${grpcAddr}&n=${calls}`);
    const m = /p50_us=([\d.]+) p99_us=([\d.]+)/.exec(r.body);
    if (r.status !== 200 || !m) throw new Error(`grpc-echo /bench: ${r.status} ${r.body}`);
    return { p50: Number(m[1]), p99: Number(m[2]) };
  };
  process.stderr.write(`warming up…\n`);
  await bench();
  const runWith = async (round: number): Promise<void> => {
    const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--debug-link-per-program']);
    try {
      await agent.waitTraced(server.pid);
      const murl = await agent.metricsUrl();
      const before = (await httpRequest(murl)).body;
      process.stderr.write(`round ${round}/${rounds}: ${calls} calls with the agent…\n`);
      withAgent.push(await bench());
      await new Promise((res) => setTimeout(res, 1500));
      const after = (await httpRequest(murl)).body;
      const delta = (re: RegExp): number => metricSum(after, re) - metricSum(before, re);
      tracedCalls += calls;
      events += delta(/^gotrail_events_total\{type="google\.golang\.org\/grpc\/[a-z]+"\} (\d+)/gm);
      lost += delta(/^gotrail_events_lost_total\{[^}]*\} (\d+)/gm);
      const b = programStats(before);
      for (const [name, a] of programStats(after)) {
        const p = programs.get(name) ?? { runs: 0, secs: 0 };
        programs.set(name, { runs: p.runs + a.runs - (b.get(name)?.runs ?? 0), secs: p.secs + a.secs - (b.get(name)?.secs ?? 0) });
      }
    } finally {
      await agent.stop();
    }
  };
  for (let round = 1; round <= rounds; round++) {
    if (round % 2 === 0) await runWith(round);
    process.stderr.write(`round ${round}/${rounds}: ${calls} calls without the agent…\n`);
    without.push(await bench());
    if (round % 2 === 1) await runWith(round);
  }
} finally {
  await server.stop();
}

const p50 = { without: median(without.map((r) => r.p50)), with: median(withAgent.map((r) => r.p50)) };
const p99 = { without: median(without.map((r) => r.p99)), with: median(withAgent.map((r) => r.p99)) };
const perProgram = [...programs].filter(([name, p]) => UPROBE_PROGRAM.test(name) && p.runs > 0)
  .map(([name, p]) => ({ program: name, hitsPerCall: p.runs / tracedCalls, nsPerRun: (p.secs * 1e9) / p.runs }));
const hitsPerCall = perProgram.reduce((s, p) => s + p.hitsPerCall, 0);
const bpfUsPerCall = perProgram.reduce((s, p) => s + (p.hitsPerCall * p.nsPerRun) / 1e3, 0);

const f = (x: number, d = 0): string => x.toFixed(d);
const signed = (x: number, d = 0): string => `${x >= 0 ? '+' : ''}${x.toFixed(d)}`;
const lines = [
  `gRPC unary call overhead — ${tc.version}, grpc-go v${values.grpc}, ${rounds} rounds of ${calls} sequential calls per side, one connection, client and server in one traced process`,
  '(medians over rounds)',
  '',
  '| latency per call | without | with gotrail | added |',
  '|---|---:|---:|---:|',
  `| median | ${f(p50.without, 1)} µs | ${f(p50.with, 1)} µs | ${signed(p50.with - p50.without, 1)} µs |`,
  `| p99 | ${f(p99.without, 1)} µs | ${f(p99.with, 1)} µs | ${signed(p99.with - p99.without, 1)} µs |`,
  '',
  `added per round: median ${without.map((w, i) => signed(withAgent[i]!.p50 - w.p50)).join(', ')} µs; p99 ${without.map((w, i) => signed(withAgent[i]!.p99 - w.p99)).join(', ')} µs`,
  '',
  `| probe program | hits per call | BPF time per run |`,
  '|---|---:|---:|',
  ...perProgram.map((p) => `| ${p.program} | ${f(p.hitsPerCall, 3)} | ${f(p.nsPerRun)} ns |`),
  `| **total** | **${f(hitsPerCall, 2)}** | ${f(bpfUsPerCall, 1)} µs per call |`,
  '',
  `calls traced ${tracedCalls}, gRPC events received ${events}, events lost ${lost}`,
  '(the uprobe trap itself, ~6–10 µs per hit on this kind of VM, is not in the BPF time)',
];
process.stdout.write(lines.join('\n') + '\n');

const dir = join(repoRoot, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `grpc-overhead-${values.go}-grpc${values.grpc}.json`);
writeFileSync(file, JSON.stringify({
  bench: 'grpc-overhead',
  date: new Date().toISOString(),
  go: tc.version,
  grpc: values.grpc,
  calls,
  rounds,
  latencyUs: { median: { ...p50, added: p50.with - p50.without }, p99: { ...p99, added: p99.with - p99.without } },
  roundsUs: { without, with: withAgent },
  probeHitsPerCall: hitsPerCall,
  bpfUsPerCall,
  programs: perProgram,
  tracedCalls,
  events,
  lost,
}, null, 2) + '\n');
process.stderr.write(`wrote ${file}\n`);
