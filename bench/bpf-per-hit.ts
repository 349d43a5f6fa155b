/**
 * BPF time per hit of each gotrail program on a net/http server: GET /hello
 * (server probes) and GET /proxy (a handler making one HTTP client call:
 * server and client probes), `--n` sequential requests per round with a
 * traceparent header on half of them (`--traceparent half`, the default), on
 * none (`none`) or on all (`all`), from the kernel's program statistics
 * as the agent exports them (gotrail_probe_runs_total and
 * gotrail_probe_run_seconds_total). Prints runs per request and ns per run
 * of each uprobe program (net/http and the goroutine probes), median over
 * rounds; the node-wide programs (process, socket) also run for every other
 * process on the node, so they are left out.
 *
 *   deploy/node bench/bpf-per-hit.ts [--go go1.26] [--rounds 3] [--n 2000] [--traceparent half|none|all]
 */
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot, startAgent } from '../test/support/agent-process.ts';
import { httpRequest, startGoServer } from '../test/support/go-server.ts';
import { programStats, type ProgramStats } from './lib/program-stats.ts';

const { values } = parseArgs({
  options: {
    go: { type: 'string', default: 'go1.26' },
    rounds: { type: 'string', default: '3' },
    n: { type: 'string', default: '2000' },
    traceparent: { type: 'string', default: 'half' },
  },
});
const rounds = Number(values.rounds);
const UPROBE_PROGRAM = /^gt_(http|runtime)_/;
const n = Number(values.n);
if (!['half', 'none', 'all'].includes(values.traceparent)) throw new Error(`--traceparent: half, none or all, not ${values.traceparent}`);
/** whether request i of a round carries a traceparent header */
const withTraceparent = (i: number): boolean => (values.traceparent === 'half' ? i % 2 === 1 : values.traceparent === 'all');
const bin = join(mkdtempSync(join(tmpdir(), 'gotrail-bpf-hit-')), 'httpserver');
copyFileSync(join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver'), bin);

const server = await startGoServer(bin);
const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--scan-interval', '5000', '--debug-link-per-program']);
const per = new Map<string, { runsPerReq: number[]; nsPerRun: number[] }>();
try {
  await agent.waitTraced(server.pid, 60_000);
  await agent.waitFor(/uprobe hit cost calibrated|calibration failed/, 60_000);
  const url = await agent.metricsUrl();
  const tp = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
  for (const path of ['/hello', `/proxy?to=${encodeURIComponent(`${server.url}/hello`)}`]) {
    for (let r = 0; r < rounds; r++) {
      const before: ProgramStats = await programStats(url, UPROBE_PROGRAM);
      for (let i = 0; i < n; i++) await httpRequest(`${server.url}${path}`, { headers: withTraceparent(i) ? tp : {} });
      const after = await programStats(url, UPROBE_PROGRAM);
      for (const [prog, a] of after) {
        const b = before.get(prog) ?? { runs: 0, seconds: 0 };
        const runs = a.runs - b.runs;
        if (!runs) continue;
        const key = `${path.startsWith('/proxy') ? 'GET /proxy' : 'GET /hello'} ${prog}`;
        const e = per.get(key) ?? { runsPerReq: [], nsPerRun: [] };
        e.runsPerReq.push(runs / n);
        e.nsPerRun.push(((a.seconds - b.seconds) / runs) * 1e9);
        per.set(key, e);
      }
    }
  }
} finally {
  await agent.stop();
  await server.stop();
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log('| request | program | runs per request | ns per run (median) | range |');
console.log('|---|---|---:|---:|---:|');
for (const [k, e] of [...per].sort()) {
  const [req, prog] = [k.slice(0, 10), k.slice(11)];
  console.log(`| ${req} | ${prog} | ${median(e.runsPerReq).toFixed(2)} | ${median(e.nsPerRun).toFixed(0)} | ${Math.min(...e.nsPerRun).toFixed(0)}–${Math.max(...e.nsPerRun).toFixed(0)} |`);
}
