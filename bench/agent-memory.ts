/**
 * Where the running agent's resident memory goes, idle after a warm-up with
 * load, and what a change of its environment or Node's flags does to it:
 * variants alternate round by round in one run (A/B/A/B), each round a fresh
 * agent tracing the same net/http server(s) and exporting over OTLP/HTTP into
 * a real collector.
 *
 *   deploy/node bench/agent-memory.ts [--rounds 3] [--processes 1|100]
 *     [--rate 5000 --seconds 5]   also the agent's CPU per span at that rate
 *     [--variant 'NAME|ENV=V ENV2=V|--node-flag ...|/other/checkout'] ...
 *     [--json FILE]               every round's samples
 *     [--churn 20 [--churn-seconds 15]]
 *                                 processes started per second while idle (each
 *                                 lives 2 s), as on a host running builds or
 *                                 short-lived tools: the agent reads each one's
 *                                 exec and exit and its /proc scan looks at them
 *
 * A variant without node flags runs the launcher (daemon/bin/gotrail) with
 * the given environment; with flags, Node with exactly those flags and the
 * launcher's environment and entry module (set-up's bundle, build/agent, or
 * the sources when one is newer: bench/lib/agent-command.ts). --private-node runs the agent on a copy of the node
 * executable (the launcher's flags unless the variant gives its own), so that
 * no other process shares its file pages, as on a node where it runs alone.
 * A variant's fourth field runs the agent of another checkout (built, with
 * its compile cache), e.g. to compare a branch with main in one run. The default is one variant, the launcher as is.
 * Prints, per variant, the median over rounds of each class of mapping
 * (bench/lib/smaps.ts), V8's heap spaces (the agent's own metrics) and its
 * threads. Needs root, a built tree (deploy/setup.sh).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './lib/args.ts';
import { processCpuSeconds } from '../daemon/agent/overhead.ts';
import { repoRoot, startAgent, type AgentProcess } from '../test/support/agent-process.ts';
import { startCollector } from '../test/support/collector.ts';
import { httpRequest, startGoServer, type GoServer } from '../test/support/go-server.ts';
import { metricSum } from '../test/support/metrics.ts';
import { sleep } from '../test/support/wait.ts';
import { breakdown, type MemoryBreakdown } from './lib/smaps.ts';
import { copyFresh, launcherOf, privateNode } from './lib/agent-command.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    rounds: { type: 'string', default: '3' },
    processes: { type: 'string', default: '1' },
    rate: { type: 'string', default: '0' },
    seconds: { type: 'string', default: '5' },
    go: { type: 'string', default: 'go1.26' },
    'idle-ms': { type: 'string', default: '12000' },
    'hold-ms': { type: 'string', default: '0' },
    variant: { type: 'string', multiple: true, default: [] },
    'private-node': { type: 'boolean', default: false },
    json: { type: 'string' },
    churn: { type: 'string', default: '0' },
    'churn-seconds': { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const processes = Number(values.processes);
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const idleMs = Number(values['idle-ms']);
const churn = Number(values.churn);

/** Starts `perSecond` short-lived processes a second until the returned stop is called. */
function startChurn(perSecond: number): () => void {
  if (!perSecond) return () => {};
  const t = setInterval(() => {
    for (let i = 0; i < perSecond / 10; i++) spawn('/bin/sleep', ['2'], { stdio: 'ignore' }).on('error', () => {});
  }, 100);
  const end = values['churn-seconds'] ? setTimeout(() => clearInterval(t), Number(values['churn-seconds']) * 1000) : undefined;
  return () => {
    clearInterval(t);
    clearTimeout(end);
  };
}

interface Variant { name: string; env: Record<string, string>; flags: string[] | undefined; root: string }
const variants: Variant[] = (values.variant.length ? values.variant : ['launcher||']).map((s) => {
  const [name = '', env = '', flags = '', root = ''] = s.split('|');
  return {
    root: root || repoRoot,
    name,
    env: Object.fromEntries(env.split(/\s+/).filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    flags: flags.trim() ? flags.trim().split(/\s+/) : undefined,
  };
});

const log = (s: string): void => void process.stderr.write(`[agent-memory] ${s}\n`);
const workDir = join(repoRoot, 'build', 'bench');
mkdirSync(workDir, { recursive: true });
// a private copy of node: its file pages are the agent's alone, as where it runs on a node
// by itself (the bench's own node would otherwise share them, and PSS halve them)
const nodeBinary = values['private-node'] ? privateNode(repoRoot, workDir) : join(repoRoot, '.tools', 'node', 'bin', 'node');

const loadgen = join(workDir, 'loadgen');
execFileSync('go', ['build', '-o', loadgen, '.'], { cwd: join(repoRoot, 'bench', 'loadgen'), stdio: 'inherit' });
const runLoadgen = (url: string, r: number, secs: number): { achievedRate: number } =>
  JSON.parse(execFileSync(loadgen, ['-url', url, '-rate', String(r), '-duration', `${secs}s`], { encoding: 'utf8' })) as { achievedRate: number };

interface Sample { mem: MemoryBreakdown; v8: Record<string, number>; idleCpuPercent: number; cpuUsPerSpan: number; loadedRssMiB: number; timeline: number[]; loadMajorFaults: number }

/** Major page faults of a process so far (pages read from their file again). */
const majorFaults = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]!.split(' ')[9]);
const rssKiB = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1] ?? NaN);

async function round(v: Variant, bin: string, servers: GoServer[], otlp: string): Promise<Sample> {
  const args = ['--include-exe', bin, '--exporter', 'otlp', '--otlp-endpoint', otlp, '--scan-interval', '5000'];
  const launcher = launcherOf(v.root);
  const command = v.flags || values['private-node'] || v.root !== repoRoot ? [nodeBinary, ...(v.flags ?? launcher.flags), launcher.entry] : undefined;
  const env = command ? { ...launcher.env, ...v.env } : v.env;
  const agent: AgentProcess = await startAgent(args, env, command ? { command } : {});
  try {
    for (const s of servers) await agent.waitTraced(s.pid, 120_000);
    await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
    const pid = agent.child.pid!;
    runLoadgen(`${servers[0]!.url}/hello`, 1000, 3);
    // RSS every 5 s while it goes quiet
    const timeline: number[] = [];
    const stopChurn = startChurn(churn);
    let mem: MemoryBreakdown;
    try {
      for (let t = 0; t < idleMs; t += 5000) {
        await sleep(Math.min(5000, idleMs - t));
        timeline.push(rssKiB(pid) / 1024);
      }
      mem = breakdown(pid, nodeBinary);
    } finally {
      stopChurn();
    }
    if (Number(values['hold-ms'])) {
      log(`  holding the idle agent pid=${pid} for ${values['hold-ms']} ms`);
      await sleep(Number(values['hold-ms']));
    }
    const c0 = processCpuSeconds(pid)!;
    await sleep(5000);
    const idleCpu = (processCpuSeconds(pid)! - c0) / 5;
    const url = await agent.metricsUrl();
    const text = (await httpRequest(url)).body;
    const v8: Record<string, number> = {};
    for (const space of ['new', 'old', 'code', 'large_object', 'code_large_object', 'new_large_object', 'read_only', 'shared', 'trusted', 'trusted_large_object']) {
      const x = metricSum(text, 'gotrail_agent_nodejs_heap_space_size_total_bytes', { space });
      if (x) v8[`V8 ${space} space (committed)`] = x / 1024;
    }
    v8['V8 heap used'] = metricSum(text, 'gotrail_agent_nodejs_heap_size_used_bytes') / 1024;
    v8['V8 external (ArrayBuffers etc.)'] = metricSum(text, 'gotrail_agent_nodejs_external_memory_bytes') / 1024;
    let cpuUsPerSpan = NaN;
    let loadedRssMiB = NaN;
    let loadMajorFaults = NaN;
    if (rate) {
      const f0 = majorFaults(pid);
      const before = metricSum(text, 'gotrail_spans_exported_total');
      const a0 = processCpuSeconds(pid)!;
      runLoadgen(`${servers[0]!.url}/hello`, rate, seconds);
      loadedRssMiB = breakdown(pid, nodeBinary).totalRssKiB / 1024;
      loadMajorFaults = majorFaults(pid) - f0;
      await sleep(2500);
      const cpuAll = processCpuSeconds(pid)! - a0;
      const exported = metricSum((await httpRequest(url)).body, 'gotrail_spans_exported_total') - before;
      cpuUsPerSpan = exported ? ((cpuAll - idleCpu * (seconds + 2.5)) * 1e6) / exported : NaN;
    }
    return { mem, v8, idleCpuPercent: idleCpu * 100, cpuUsPerSpan, loadedRssMiB, timeline, loadMajorFaults };
  } finally {
    await agent.stop();
  }
}

const median = (xs: number[]): number => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mib = (kib: number): string => (Number.isFinite(kib) ? (kib / 1024).toFixed(1) : 'n/a');

const src = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');
const bin = join(workDir, 'httpserver-memory');
copyFresh(src, bin);
const collector = await startCollector({ logLevel: 'warn' });
const servers: GoServer[] = [];
const results = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
const load0 = loadavg();
try {
  for (let i = 0; i < processes; i++) servers.push(await startGoServer(bin));
  for (let r = 0; r < rounds; r++) {
    for (const v of r % 2 ? [...variants].reverse() : variants) {
      log(`round ${r + 1}/${rounds}: ${v.name}`);
      const s = await round(v, bin, servers, `${collector.otlpHttpEndpoint}/v1/traces`);
      log(`  RSS ${mib(s.mem.totalRssKiB)} MiB, idle CPU ${s.idleCpuPercent.toFixed(2)} %, CPU per span ${s.cpuUsPerSpan.toFixed(1)} µs`);
      results.get(v.name)!.push(s);
    }
  }
} finally {
  await Promise.all(servers.map((s) => s.stop()));
  await collector.stop();
}

const names = variants.map((v) => v.name);
const rows = new Set<string>();
for (const ss of results.values()) for (const s of ss) for (const k of [...Object.keys(s.mem.rssKiB), ...Object.keys(s.v8)]) rows.add(k);
const cell = (name: string, get: (s: Sample) => number | undefined): number => median(results.get(name)!.map((s) => get(s) ?? 0));
const lines = [
  `Agent memory, idle ${idleMs / 1000} s after a 3 s warm-up at 1000 requests/s${churn ? ` (meanwhile ${churn} processes started per second, each living 2 s${values['churn-seconds'] ? `, for its first ${values['churn-seconds']} s` : ''})` : ''}; ${processes} traced process(es); median of ${rounds} rounds per variant, alternating; load average ${load0.map((x) => x.toFixed(2)).join(' ')} at start, ${loadavg().map((x) => x.toFixed(2)).join(' ')} at end.`,
  '',
  `| MiB | ${names.join(' | ')} |`,
  `|---|${names.map(() => '---:').join('|')}|`,
  `| **RSS, total** | ${names.map((n) => `**${mib(cell(n, (s) => s.mem.totalRssKiB))}**`).join(' | ')} |`,
  ...[...rows].filter((k) => !k.startsWith('V8')).sort().map((k) => `| ${k} | ${names.map((n) => `${mib(cell(n, (s) => s.mem.rssKiB[k]))} (PSS ${mib(cell(n, (s) => s.mem.pssKiB[k]))})`).join(' | ')} |`),
  ...[...rows].filter((k) => k.startsWith('V8')).sort().map((k) => `| ${k} | ${names.map((n) => mib(cell(n, (s) => s.v8[k]))).join(' | ')} |`),
  `| malloc thread arenas (count) | ${names.map((n) => cell(n, (s) => s.mem.mallocArenas)).join(' | ')} |`,
  `| threads | ${names.map((n) => Object.entries(results.get(n)![0]!.mem.threads).map(([t, c]) => `${t}×${c}`).join(', ')).join(' | ')} |`,
  `| idle CPU (% of a core) | ${names.map((n) => cell(n, (s) => s.idleCpuPercent).toFixed(2)).join(' | ')} |`,
  ...(rate ? [
    `| CPU per span at ${rate}/s (µs) | ${names.map((n) => cell(n, (s) => s.cpuUsPerSpan).toFixed(1)).join(' | ')} |`,
    `| RSS right after ${rate}/s | ${names.map((n) => cell(n, (s) => s.loadedRssMiB).toFixed(1)).join(' | ')} |`,
    `| major page faults during ${rate}/s (pages read again) | ${names.map((n) => cell(n, (s) => s.loadMajorFaults).toFixed(0)).join(' | ')} |`,
  ] : []),
  '',
  `Per round, RSS total (MiB): ${names.map((n) => `${n}: ${results.get(n)!.map((s) => mib(s.mem.totalRssKiB)).join(', ')}`).join('; ')}`,
  '',
  'RSS every 5 s after the warm-up (MiB), per round:',
  ...names.flatMap((n) => results.get(n)!.map((s) => `- ${n}: ${s.timeline.map((x) => x.toFixed(1)).join(' ')}`)),
];
process.stdout.write(lines.join('\n') + '\n');
// every round's samples, for a look at what varies between rounds
if (values.json) writeFileSync(values.json, JSON.stringify(Object.fromEntries(results), null, 1));
