/**
 * Latency added by gotrail to a Go HTTP server, and events lost, at a fixed
 * request rate. Runs the same load without and with the agent in one run and
 * prints both with their ratio.
 *
 *   deploy/node bench/http-overhead.ts [--rate 1000] [--seconds 10] [--go go1.26]
 *
 * Needs root (the agent loads eBPF). The agent exports to nowhere
 * (--exporter none) so the number is the tracing cost, not a collector's.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { startGoServer, httpRequest } from '../test/support/go-server.ts';

interface LoadResult { sent: number; ok: number; errors: number; achievedRate: number; p50us: number; p90us: number; p99us: number; maxus: number }

const { values } = parseArgs({ options: { rate: { type: 'string', default: '1000' }, seconds: { type: 'string', default: '10' }, go: { type: 'string', default: 'go1.26' } } });
const rate = Number(values.rate);
const seconds = Number(values.seconds);
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

const bin = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');
const server = await startGoServer(bin);
const url = `${server.url}/hello`;
process.stderr.write(`warming up, then ${seconds} s at ${rate} req/s without the agent…\n`);
load(url);
const sb = cpuSeconds(server.pid);
const without = load(url);
const serverCpuWithout = cpuSeconds(server.pid) - sb;
process.stderr.write(`starting gotrail…\n`);
const agent = await startAgent(['--exporter', 'none', '--include-exe', bin]).catch(async (e) => {
  await server.stop();
  throw e;
});
let withAgent: LoadResult;
let events = 0;
let lost = 0;
let agentCpu = 0;
let serverCpuWith = 0;
let agentRss = 0;
let probeNs = 0;
let probeRuns = 0;
const perProgram: string[] = [];
try {
  // the agent logs "tracing process" at info; with warn, poll its metrics instead
  const murl = await agent.metricsUrl();
  for (let i = 0; i < 100; i++) {
    const m = (await httpRequest(murl)).body;
    if (metric(m, /^gotrail_processes_traced (\d+)/gm) >= 1) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const before = (await httpRequest(murl)).body;
  process.stderr.write(`${seconds} s at ${rate} req/s with the agent…\n`);
  const a0 = cpuSeconds(agent.child.pid!);
  const s0 = cpuSeconds(server.pid);
  withAgent = load(url);
  agentCpu = cpuSeconds(agent.child.pid!) - a0;
  serverCpuWith = cpuSeconds(server.pid) - s0;
  agentRss = rssMiB(agent.child.pid!);
  await new Promise((r) => setTimeout(r, 1500));
  const after = (await httpRequest(murl)).body;
  const ev = /^gotrail_events_total\{type="net\/http\/server"\} (\d+)/gm;
  events = metric(after, ev) - metric(before, ev);
  lost = metric(after, /^gotrail_events_lost_total\{[^}]*\} (\d+)/gm) - metric(before, /^gotrail_events_lost_total\{[^}]*\} (\d+)/gm);
  probeNs = (metric(after, /^gotrail_probe_run_seconds_total\{[^}]*\} ([\d.e-]+)/gm) - metric(before, /^gotrail_probe_run_seconds_total\{[^}]*\} ([\d.e-]+)/gm)) * 1e9;
  probeRuns = metric(after, /^gotrail_probe_runs_total\{[^}]*\} (\d+)/gm) - metric(before, /^gotrail_probe_runs_total\{[^}]*\} (\d+)/gm);
  for (const m of after.matchAll(/^gotrail_probe_runs_total\{program="([^"]+)"\} (\d+)/gm)) {
    const name = m[1]!;
    const runs = Number(m[2]) - metric(before, new RegExp(`^gotrail_probe_runs_total\\{program="${name}"\\} (\\d+)`, 'gm'));
    const secs = metric(after, new RegExp(`^gotrail_probe_run_seconds_total\\{program="${name}"\\} ([\\d.e-]+)`, 'gm')) - metric(before, new RegExp(`^gotrail_probe_run_seconds_total\\{program="${name}"\\} ([\\d.e-]+)`, 'gm'));
    if (runs > 0) perProgram.push(`  ${name.padEnd(26)} ${String(runs).padStart(8)} runs ${(secs * 1e9 / runs).toFixed(0).padStart(6)} ns/run`);
  }
} finally {
  await agent.stop();
  await server.stop();
}

const row = (name: string, a: number, b: number, unit: string): string =>
  `| ${name.padEnd(26)} | ${`${a.toFixed(0)} ${unit}`.padStart(12)} | ${`${b.toFixed(0)} ${unit}`.padStart(12)} | ${(a ? b / a : 0).toFixed(2).padStart(6)} |`;
const lines = [
  `net/http server overhead — ${values.go}, ${rate} req/s for ${seconds} s, keep-alive, /hello`,
  '',
  `| ${'metric'.padEnd(26)} | ${'without'.padStart(12)} | ${'with gotrail'.padStart(12)} | ${'ratio'.padStart(6)} |`,
  `|${'-'.repeat(28)}|${'-'.repeat(14)}|${'-'.repeat(14)}|${'-'.repeat(8)}|`,
  row('latency p50', without.p50us, withAgent.p50us, 'µs'),
  row('latency p90', without.p90us, withAgent.p90us, 'µs'),
  row('latency p99', without.p99us, withAgent.p99us, 'µs'),
  row('achieved rate', without.achievedRate, withAgent.achievedRate, '/s'),
  row('errors', without.errors, withAgent.errors, ''),
  row('server CPU (% of a core)', (serverCpuWithout / seconds) * 100, (serverCpuWith / seconds) * 100, '%'),
  '',
  `added latency: p50 +${withAgent.p50us - without.p50us} µs, p99 +${withAgent.p99us - without.p99us} µs`,
  `gotrail agent: ${((agentCpu / seconds) * 100).toFixed(1)}% of a core in user space, ${agentRss.toFixed(0)} MiB RSS (exporter: none)`,
  `requests ${withAgent.sent}, events received ${events}, events lost ${lost}, dropped ${Math.max(0, withAgent.sent - events)}`,
  `BPF program time: ${probeRuns} runs, ${(probeRuns ? probeNs / probeRuns : 0).toFixed(0)} ns per run (excludes the uprobe trap)`,
  ...perProgram,
];
process.stdout.write(lines.join('\n') + '\n');
