/**
 * BPF time per hit of each gotrail program on a net/http server: GET /hello
 * (server probes), GET /proxy (a handler making one HTTP client call:
 * server and client probes; it closes the response body unread, so each
 * call dials a new connection) and GET /proxy keep-alive (the same, the body
 * read first: the calls reuse one connection, the common case), `--n`
 * sequential requests per round with a
 * traceparent header on half of them (`--traceparent half`, the default), on
 * none (`none`) or on all (`all`), from the kernel's program statistics
 * as the agent exports them (gotrail_probe_runs_total and
 * gotrail_probe_run_seconds_total). Prints runs per request and ns per run
 * of each uprobe program (net/http and the goroutine probes), median over
 * rounds, and each request's BPF time per hit; the node-wide programs
 * (process, socket) also run for every other process on the node, so they
 * are left out.
 *
 * `--program http-sql` runs test/programs/http-sql instead, with one
 * request: GET /work, a handler making one HTTP client call (to the same
 * server, on a kept-alive connection) and one SQLite query through
 * database/sql (QueryRowContext): the net/http server and client programs
 * and the database/sql ones.
 *
 * `--floor` adds, in every round, a pass with no agent and the empty
 * program (gt_calibration_empty, bench/floor.ts) at the very sites the
 * agent probes: its run time per hit is what the kernel's statistics
 * themselves report for a program that does nothing (their own cost), a
 * floor under every figure above it, not a part to subtract.
 *
 * `--a CHECKOUT` compares the agent of another checkout (set up with
 * deploy/setup.sh) with this one's (or `--b`'s): each round runs both, one
 * after the other against the same server, rotating which goes first, each
 * with an agent started for it; their columns come from the same run.
 *
 *   deploy/node bench/bpf-per-hit.ts [--go go1.26] [--program httpserver|http-sql] [--rounds 3] [--n 2000] [--traceparent half|none|all]
 *     [--floor] [--a ../other-checkout [--b .]]
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { benchArgs, usageError } from './lib/args.ts';
import { repoRoot, startAgent } from '../test/support/agent-process.ts';
import { httpRequest, startGoServer } from '../test/support/go-server.ts';
import { enableStats } from '../daemon/native/index.ts';
import { attachFloor } from './floor.ts';
import { programStats, type ProgramStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    go: { type: 'string', default: 'go1.26' },
    program: { type: 'string', default: 'httpserver' },
    rounds: { type: 'string', default: '3' },
    n: { type: 'string', default: '2000' },
    traceparent: { type: 'string', default: 'half' },
    floor: { type: 'boolean', default: false },
    a: { type: 'string' },
    b: { type: 'string', default: repoRoot },
  },
});
const rounds = Number(values.rounds);
const UPROBE_PROGRAM = /^gt_(http|runtime|sql)_/;
const n = Number(values.n);
if (!['httpserver', 'http-sql'].includes(values.program)) usageError(import.meta.filename, `--program: httpserver or http-sql, not ${values.program}`);
if (!['half', 'none', 'all'].includes(values.traceparent)) usageError(import.meta.filename, `--traceparent: half, none or all, not ${values.traceparent}`);
/** whether request i of a round carries a traceparent header */
const withTraceparent = (i: number): boolean => (values.traceparent === 'half' ? i % 2 === 1 : values.traceparent === 'all');
const sides = (values.a ? [['A', resolve(values.a)], ['B', resolve(values.b)]] : [['', repoRoot]]).map(([name, tree]) => {
  const gotrail = join(tree!, 'daemon', 'bin', 'gotrail');
  if (!existsSync(gotrail) || !existsSync(join(tree!, 'build', 'probes', 'gotrail.bpf.o'))) throw new Error(`${tree}: not a set-up gotrail checkout (run bash deploy/setup.sh there)`);
  // each program's own kernel statistics need a link per program (one link
  // per binary runs them as tail calls of gt_dispatch); a checkout from
  // before that has no such flag and needs none
  const linkPerProgram = readFileSync(join(tree!, 'daemon', 'cli', 'run.ts'), 'utf8').includes('debug-link-per-program') ? ['--debug-link-per-program'] : [];
  return { name: name!, tree: tree!, command: [gotrail], linkPerProgram };
});
// each agent started adds an exit listener (the test support's clean-up)
process.setMaxListeners(0);
const bin = join(mkdtempSync(join(tmpdir(), 'gotrail-bpf-hit-')), values.program);
copyFileSync(join(repoRoot, 'build', 'go', values.go, 'plain', values.program), bin);

type Agent = Awaited<ReturnType<typeof startAgent>>;
async function startFor(side: (typeof sides)[number], pid: number): Promise<Agent> {
  const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--scan-interval', '5000', ...side.linkPerProgram], {}, { command: side.command });
  await agent.waitTraced(pid, 60_000);
  await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
  return agent;
}

const server = await startGoServer(bin);
const paths = values.program === 'http-sql'
  ? [`/work?to=${encodeURIComponent(`${server.url}/hello`)}`]
  : ['/hello', `/proxy?to=${encodeURIComponent(`${server.url}/hello`)}`, `/proxy?to=${encodeURIComponent(`${server.url}/hello`)}&drain=1`];
const reqName = (path: string): string => (path.startsWith('/work') ? 'GET /work' : path.endsWith('&drain=1') ? 'GET /proxy keep-alive' : path.startsWith('/proxy') ? 'GET /proxy' : 'GET /hello');
/** `${side}|${request}|${program}` → per round: runs per request and ns per run */
const per = new Map<string, { runsPerReq: number[]; nsPerRun: number[] }>();
/** `${side}|${request}` → per round: BPF ns per hit, all programs */
const perHit = new Map<string, number[]>();
const tp = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
const loadStart = loadavg();
try {
  for (let r = 0; r < rounds; r++) {
    const order = sides.map((_, i) => sides[(i + r) % sides.length]!);
    for (const side of order) {
      const agent = await startFor(side, server.pid);
      try {
        const url = await agent.metricsUrl();
        for (const path of paths) {
          const before: ProgramStats = await programStats(url, UPROBE_PROGRAM);
          for (let i = 0; i < n; i++) await httpRequest(`${server.url}${path}`, { headers: withTraceparent(i) ? tp : {} });
          const after = await programStats(url, UPROBE_PROGRAM);
          let runsAll = 0;
          let secondsAll = 0;
          for (const [prog, a] of after) {
            const b = before.get(prog) ?? { runs: 0, seconds: 0 };
            const runs = a.runs - b.runs;
            if (!runs) continue;
            runsAll += runs;
            secondsAll += a.seconds - b.seconds;
            const key = `${side.name}|${reqName(path)}|${prog}`;
            const e = per.get(key) ?? { runsPerReq: [], nsPerRun: [] };
            e.runsPerReq.push(runs / n);
            e.nsPerRun.push(((a.seconds - b.seconds) / runs) * 1e9);
            per.set(key, e);
          }
          const k = `${side.name}|${reqName(path)}`;
          perHit.set(k, [...(perHit.get(k) ?? []), runsAll ? (secondsAll / runsAll) * 1e9 : 0]);
        }
      } finally {
        await agent.stop();
      }
    }
    if (values.floor) {
      if (!enableStats()) throw new Error('--floor: the kernel run-time statistics could not be enabled');
      const fl = attachFloor(bin);
      try {
        for (const path of paths) {
          const before = fl.stats();
          for (let i = 0; i < n; i++) await httpRequest(`${server.url}${path}`, { headers: withTraceparent(i) ? tp : {} });
          const after = fl.stats();
          const runs = Number(after.runs - before.runs);
          const k = `floor|${reqName(path)}`;
          perHit.set(k, [...(perHit.get(k) ?? []), runs ? Number(after.ns - before.ns) / runs : 0]);
        }
      } finally {
        await fl.detach();
      }
    }
  }
} finally {
  await server.stop();
}
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const cell = (xs: number[] | undefined): string => (xs?.length ? `${median(xs).toFixed(0)} (${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})` : '—');
const heads = sides.map((s) => (s.name ? `ns per run, ${s.name} (median, range)` : 'ns per run (median, range)'));
console.log(`| request | program | runs per request | ${heads.join(' | ')} |`);
console.log(`|---|---|---:|${heads.map(() => '---:').join('|')}|`);
const rows = new Set([...per.keys()].map((k) => k.slice(k.indexOf('|') + 1)));
for (const row of [...rows].sort()) {
  const [req, prog] = row.split('|');
  const runs = per.get(`${sides.at(-1)!.name}|${row}`)?.runsPerReq ?? per.get(`${sides[0]!.name}|${row}`)?.runsPerReq ?? [];
  console.log(`| ${req} | ${prog} | ${runs.length ? median(runs).toFixed(2) : '—'} | ${sides.map((s) => cell(per.get(`${s.name}|${row}`)?.nsPerRun)).join(' | ')} |`);
}
for (const req of paths.map(reqName)) {
  console.log(`| ${req} | all, per hit | | ${sides.map((s) => cell(perHit.get(`${s.name}|${req}`))).join(' | ')} |`);
}
if (values.floor) {
  for (const req of paths.map(reqName)) console.log(`| ${req} | floor: empty program, per hit | | ${sides.map(() => cell(perHit.get(`floor|${req}`))).join(' | ')} |`);
}
console.log('');
if (values.a) console.log(`A: ${sides[0]!.tree}; B: ${sides[1]!.tree}; ${rounds} rounds, sides alternating (rotating which goes first), ${n} requests per round and request, traceparent: ${values.traceparent}`);
console.log(`load average ${loadStart.map((x) => x.toFixed(2)).join(' ')} at start, ${loadavg().map((x) => x.toFixed(2)).join(' ')} at end`);
