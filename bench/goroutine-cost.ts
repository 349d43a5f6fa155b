/**
 * What goroutine ancestry costs a Go program: the time per `go` statement
 * (the goroutine's creation and its exit, both probed) with and without the
 * agent. A Go program (bench/goroutines) starts N goroutines one after the
 * other, on a goroutine serving a traced request (each creation records its
 * ancestry) and on one serving nothing (the common case: a lookup finds no
 * span). Rounds alternate without and with the agent; the table gives the
 * medians, and the JSON goes to bench/results/goroutine-cost-<go>.json.
 *
 *   deploy/node bench/goroutine-cost.ts [--n 1000000] [--rounds 3] [--go go1.26|go1.19|go1.27]
 *
 * Needs root (the agent loads eBPF).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchArgs } from './lib/args.ts';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../test/support/go-server.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    n: { type: 'string', default: '1000000' },
    rounds: { type: 'string', default: '3' },
    go: { type: 'string', default: 'go1.26' },
  },
});
const n = Number(values.n);
const rounds = Number(values.rounds);
const toolchains: Record<string, { go: string; env: Record<string, string> }> = {
  'go1.19': { go: '/usr/lib/go-1.19/bin/go', env: {} },
  'go1.26': { go: 'go', env: { GOTOOLCHAIN: 'local' } },
  'go1.27': { go: 'go', env: { GOTOOLCHAIN: 'go1.27.3' } },
};
const tc = toolchains[values.go];
if (!tc) throw new Error(`--go: one of ${Object.keys(toolchains).join(', ')}`);
const bin = join(repoRoot, 'build', 'bench', values.go, 'goroutines');
execFileSync(tc.go, ['build', '-o', bin, '.'], { cwd: join(repoRoot, 'bench', 'goroutines'), stdio: 'inherit', env: { ...process.env, ...tc.env, CGO_ENABLED: '0' } });

type Where = 'background' | 'request';
const WHERE: Where[] = ['background', 'request'];

async function run(server: GoServer, where: Where): Promise<number> {
  const res = await httpRequest(`${server.url}/run?n=${n}&where=${where}`);
  const r = JSON.parse(res.body) as { n: number; ns: number };
  return r.ns / r.n;
}

function metricSum(text: string, re: RegExp): number {
  let sum = 0;
  for (const m of text.matchAll(re)) sum += Number(m[1]);
  return sum;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : 0;
};

const without: Record<Where, number[]> = { background: [], request: [] };
const withAgent: Record<Where, number[]> = { background: [], request: [] };
const bpf = new Map<string, { runs: number; secs: number }>();
const server = await startGoServer(bin);
try {
  for (const w of WHERE) await run(server, w); // warm-up: the runtime's free lists of g's
  for (let round = 1; round <= rounds; round++) {
    for (const w of WHERE) {
      process.stderr.write(`round ${round}/${rounds}: ${n} goroutines (${w}) without the agent…\n`);
      without[w].push(await run(server, w));
    }
    const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--debug-link-per-program']);
    try {
      await agent.waitTraced(server.pid);
      const murl = await agent.metricsUrl();
      const before = (await httpRequest(murl)).body;
      for (const w of WHERE) {
        process.stderr.write(`round ${round}/${rounds}: ${n} goroutines (${w}) with the agent…\n`);
        withAgent[w].push(await run(server, w));
      }
      const after = (await httpRequest(murl)).body;
      for (const name of ['gt_runtime_newproc_runqput', 'gt_runtime_newproc1_return', 'gt_runtime_goexit1']) {
        const d = (re: string): number => metricSum(after, new RegExp(re, 'gm')) - metricSum(before, new RegExp(re, 'gm'));
        const p = bpf.get(name) ?? { runs: 0, secs: 0 };
        bpf.set(name, {
          runs: p.runs + d(`^gotrail_probe_runs_total\\{program="${name}"\\} (\\d+)`),
          secs: p.secs + d(`^gotrail_probe_run_seconds_total\\{program="${name}"\\} ([\\d.e+-]+)`),
        });
      }
    } finally {
      await agent.stop();
    }
  }
} finally {
  await server.stop();
}

for (const [name, p] of bpf) if (p.runs < n * rounds) throw new Error(`${name} ran ${p.runs} times for ${n * rounds * WHERE.length} goroutines: was the probe attached?`);
const rows = WHERE.map((w) => {
  const a = median(without[w]);
  const b = median(withAgent[w]);
  return { where: w, withoutNsPerGo: a, withNsPerGo: b, addedNsPerGo: b - a };
});
const bpfNs = Object.fromEntries([...bpf].map(([name, p]) => [name, p.runs ? (p.secs * 1e9) / p.runs : 0]));
const label: Record<Where, string> = { background: 'creator serves nothing', request: 'creator serves a request' };
const lines = [
  `cost per \`go\` statement — ${values.go}, ${n} goroutines started one after the other, ${rounds} rounds per side (medians)`,
  '',
  `| ${'goroutines started by'.padEnd(26)} | ${'without'.padStart(12)} | ${'with gotrail'.padStart(12)} | ${'added'.padStart(12)} |`,
  `|${'-'.repeat(28)}|${'-'.repeat(14)}|${'-'.repeat(14)}|${'-'.repeat(14)}|`,
  ...rows.map((r) => `| ${label[r.where].padEnd(26)} | ${`${r.withoutNsPerGo.toFixed(0)} ns`.padStart(12)} | ${`${r.withNsPerGo.toFixed(0)} ns`.padStart(12)} | ${`${r.addedNsPerGo.toFixed(0)} ns`.padStart(12)} |`),
  '',
  'BPF program time per run (excludes the uprobe trap):',
  ...Object.entries(bpfNs).map(([name, ns]) => `  ${name.padEnd(28)} ${ns.toFixed(0).padStart(6)} ns`),
];
process.stdout.write(lines.join('\n') + '\n');
const out = join(repoRoot, 'bench', 'results', `goroutine-cost-${values.go}.json`);
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(out, JSON.stringify({
  bench: 'goroutine-cost', go: values.go, goroutines: n, rounds, date: new Date().toISOString(),
  machine: 'this project\'s 2-core VM (nested virtualisation)',
  rows, bpfNsPerRun: bpfNs, raw: { without, withAgent },
}, null, 2) + '\n');
process.stderr.write(`wrote ${out}\n`);
