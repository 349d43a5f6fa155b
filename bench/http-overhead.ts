/**
 * Latency added by gotrail to a Go HTTP server, and events lost, at a fixed
 * request rate. Alternates rounds without and with the agent in one run (the
 * machine's noise then hits both sides alike) and prints the medians over
 * rounds with their ratio.
 *
 *   deploy/node bench/http-overhead.ts [--rate 1000] [--seconds 10] [--rounds 3]
 *                                      [--go go1.26] [--exporter none|otlp]
 *
 * Needs root (the agent loads eBPF). With --exporter none (the default) the
 * numbers are the tracing cost alone; with --exporter otlp the agent sends
 * every span to a real OpenTelemetry Collector (built by set-up), and the
 * table also shows the collector's CPU.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchArgs } from './lib/args.ts';
import { startAgent, repoRoot, type AgentProcess } from '../test/support/agent-process.ts';
import { startCollector, type Collector } from '../test/support/collector.ts';
import { startGoServer, httpRequest } from '../test/support/go-server.ts';

interface LoadResult { sent: number; ok: number; errors: number; achievedRate: number; p50us: number; p90us: number; p99us: number; maxus: number }

const { values } = benchArgs(import.meta.filename, {
  options: {
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    go: { type: 'string', default: 'go1.26' },
    exporter: { type: 'string', default: 'none' },
  },
});
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
if (!['none', 'otlp'].includes(values.exporter)) throw new Error('--exporter: none or otlp');
const loadgen = join(repoRoot, 'build', 'bench', 'loadgen');
execFileSync('go', ['build', '-o', loadgen, '.'], { cwd: join(repoRoot, 'bench', 'loadgen'), stdio: 'inherit' });

function load(url: string): LoadResult {
  const out = execFileSync(loadgen, ['-url', url, '-rate', String(rate), '-duration', `${seconds}s`], { encoding: 'utf8', timeout: (seconds + 60) * 1000 });
  return JSON.parse(out) as LoadResult;
}

/** CPU seconds (user + system) a process has used, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return m ? Number(m[1]) / 1024 : 0;
}

function metric(text: string, re: RegExp): number {
  let sum = 0;
  for (const m of text.matchAll(re)) sum += Number(m[1]);
  return sum;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface Side { p50: number[]; p90: number[]; p99: number[]; rate: number[]; errors: number[]; serverCpu: number[] }
const side = (): Side => ({ p50: [], p90: [], p99: [], rate: [], errors: [], serverCpu: [] });
const without = side();
const withAgent = side();
const agentCpu: number[] = [];
const agentRss: number[] = [];
const collectorCpu: number[] = [];
let requests = 0;
let events = 0;
let lost = 0;
const programs = new Map<string, { runs: number; secs: number }>();

function record(s: Side, r: LoadResult, serverCpu: number): void {
  s.p50.push(r.p50us);
  s.p90.push(r.p90us);
  s.p99.push(r.p99us);
  s.rate.push(r.achievedRate);
  s.errors.push(r.errors);
  s.serverCpu.push((serverCpu / seconds) * 100);
}

const bin = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');
const server = await startGoServer(bin);
const url = `${server.url}/hello`;
let collector: Collector | undefined;
try {
  if (values.exporter === 'otlp') collector = await startCollector({ logLevel: 'warn' });
  process.stderr.write(`warming up…\n`);
  load(url);
  for (let round = 1; round <= rounds; round++) {
    process.stderr.write(`round ${round}/${rounds}: ${seconds} s at ${rate} req/s without the agent…\n`);
    let c0 = cpuSeconds(server.pid);
    record(without, load(url), cpuSeconds(server.pid) - c0);

    const args = ['--include-exe', bin, '--exporter', values.exporter];
    if (collector) args.push('--otlp-endpoint', `${collector.otlpHttpEndpoint}/v1/traces`);
    const agent: AgentProcess = await startAgent(args);
    try {
      await agent.waitTraced(server.pid);
      const murl = await agent.metricsUrl();
      const before = (await httpRequest(murl)).body;
      process.stderr.write(`round ${round}/${rounds}: ${seconds} s at ${rate} req/s with the agent…\n`);
      const a0 = cpuSeconds(agent.child.pid!);
      const k0 = collector ? cpuSeconds(collector.pid) : 0;
      c0 = cpuSeconds(server.pid);
      const r = load(url);
      record(withAgent, r, cpuSeconds(server.pid) - c0);
      agentCpu.push(((cpuSeconds(agent.child.pid!) - a0) / seconds) * 100);
      if (collector) collectorCpu.push(((cpuSeconds(collector.pid) - k0) / seconds) * 100);
      agentRss.push(rssMiB(agent.child.pid!));
      await new Promise((res) => setTimeout(res, 1500));
      const after = (await httpRequest(murl)).body;
      const delta = (re: RegExp): number => metric(after, re) - metric(before, re);
      requests += r.sent;
      events += delta(/^gotrail_events_total\{type="net\/http\/server"\} (\d+)/gm);
      lost += delta(/^gotrail_events_lost_total\{[^}]*\} (\d+)/gm);
      for (const m of after.matchAll(/^gotrail_probe_runs_total\{program="([^"]+)"\} (\d+)/gm)) {
        const name = m[1]!;
        const runs = delta(new RegExp(`^gotrail_probe_runs_total\\{program="${name}"\\} (\\d+)`, 'gm'));
        const secs = delta(new RegExp(`^gotrail_probe_run_seconds_total\\{program="${name}"\\} ([\\d.e-]+)`, 'gm'));
        const p = programs.get(name) ?? { runs: 0, secs: 0 };
        programs.set(name, { runs: p.runs + runs, secs: p.secs + secs });
      }
    } finally {
      await agent.stop();
    }
  }
} finally {
  await server.stop();
  await collector?.stop();
}

const row = (name: string, a: number, b: number, unit: string): string =>
  `| ${name.padEnd(26)} | ${`${a.toFixed(0)} ${unit}`.padStart(12)} | ${`${b.toFixed(0)} ${unit}`.padStart(12)} | ${(a ? b / a : 0).toFixed(2).padStart(6)} |`;
const m = (s: Side, k: keyof Side): number => median(s[k]);
const lines = [
  `net/http server overhead — ${values.go}, ${rate} req/s, ${rounds} rounds of ${seconds} s per side, keep-alive, /hello, exporter ${values.exporter}`,
  '(medians over rounds)',
  '',
  `| ${'metric'.padEnd(26)} | ${'without'.padStart(12)} | ${'with gotrail'.padStart(12)} | ${'ratio'.padStart(6)} |`,
  `|${'-'.repeat(28)}|${'-'.repeat(14)}|${'-'.repeat(14)}|${'-'.repeat(8)}|`,
  row('latency p50', m(without, 'p50'), m(withAgent, 'p50'), 'µs'),
  row('latency p90', m(without, 'p90'), m(withAgent, 'p90'), 'µs'),
  row('latency p99', m(without, 'p99'), m(withAgent, 'p99'), 'µs'),
  row('achieved rate', m(without, 'rate'), m(withAgent, 'rate'), '/s'),
  row('errors', m(without, 'errors'), m(withAgent, 'errors'), ''),
  row('server CPU (% of a core)', m(without, 'serverCpu'), m(withAgent, 'serverCpu'), '%'),
  '',
  `added latency per round: p50 ${without.p50.map((w, i) => `+${(withAgent.p50[i]! - w).toFixed(0)}`).join(', ')} µs; p99 ${without.p99.map((w, i) => `+${(withAgent.p99[i]! - w).toFixed(0)}`).join(', ')} µs`,
  `gotrail agent: ${median(agentCpu).toFixed(1)}% of a core in user space and kernel, ${median(agentRss).toFixed(0)} MiB RSS`,
  ...(collector ? [`OpenTelemetry Collector receiving the spans: ${median(collectorCpu).toFixed(1)}% of a core`] : []),
  `requests ${requests}, events received ${events}, events lost ${lost}, dropped ${Math.max(0, requests - events)}`,
  'BPF program time (excludes the ~10 µs uprobe trap per hit):',
  ...[...programs].filter(([, p]) => p.runs > 0).map(([name, p]) => `  ${name.padEnd(26)} ${String(p.runs).padStart(8)} runs ${((p.secs * 1e9) / p.runs).toFixed(0).padStart(6)} ns/run`),
];
process.stdout.write(lines.join('\n') + '\n');
