/**
 * What reading `http.route` costs a traced server: BPF programs run and their
 * CPU time per request, from the agent's own metrics
 * (`gotrail_probe_runs_total`, `gotrail_probe_run_seconds_total`), while
 * requests go one at a time to a traced Go server routing them with each
 * router (`test/programs/http-routers`) and with ServeMux patterns
 * (`test/programs/http-routes`).
 *
 *   deploy/node bench/http-route-cost.ts [--go go1.26] [--n 2000]
 *
 * Prints, per server and BPF program, the runs per request and the average
 * time per run (the uprobe trap itself, about 6–10 µs per hit on this
 * project's VMs, comes on top of each run). Needs root and built test
 * programs (bash deploy/setup.sh).
 */
import { benchArgs } from './lib/args.ts';
import { join } from 'node:path';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { startGoServer, httpRequest } from '../test/support/go-server.ts';
import { programStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, { options: { go: { type: 'string', default: 'go1.26' }, n: { type: 'string', default: '2000' } } });
const n = Number(values.n);
const dir = join(repoRoot, 'build', 'go', values.go, 'plain');


const servers: Array<{ name: string; bin: string; args: string[]; path: string }> = [
  { name: 'ServeMux', bin: join(dir, 'http-routes'), args: [], path: '/users/42' },
  { name: 'gorilla/mux', bin: join(dir, 'http-routers'), args: ['-router', 'gorilla'], path: '/api/v1/items/9' },
  { name: 'chi (2 Muxes)', bin: join(dir, 'http-routers'), args: ['-router', 'chi'], path: '/api/v1/items/9' },
  { name: 'chi (1 Mux)', bin: join(dir, 'http-routers'), args: ['-router', 'chi'], path: '/users/42' },
  { name: 'gin', bin: join(dir, 'http-routers'), args: ['-router', 'gin'], path: '/api/v1/items/9' },
];

const agent = await startAgent(['--exporter', 'none', '--include-exe', join(dir, '*'), '--debug-link-per-program']);
try {
  const metrics = await agent.metricsUrl();
  console.log(`${values.go}: ${n} sequential requests per server`);
  console.log('server'.padEnd(16) + 'program'.padEnd(26) + 'runs/request'.padStart(14) + 'µs/run'.padStart(10) + 'µs/request'.padStart(12));
  for (const s of servers) {
    const server = await startGoServer(s.bin, s.args);
    try {
      await agent.waitTraced(server.pid);
      for (let i = 0; i < 50; i++) await httpRequest(server.url + s.path); // warm-up
      const before = await programStats(metrics);
      for (let i = 0; i < n; i++) await httpRequest(server.url + s.path);
      await new Promise((r) => setTimeout(r, 200));
      const after = await programStats(metrics);
      for (const [name, a] of [...after].sort()) {
        const b = before.get(name) ?? { runs: 0, seconds: 0 };
        const runs = a.runs - b.runs;
        if (runs <= 0 || !/^gt_(http_server|gin|chi|gorilla)/.test(name)) continue;
        const us = (a.seconds - b.seconds) * 1e6;
        console.log(s.name.padEnd(16) + name.padEnd(26) + (runs / n).toFixed(2).padStart(14) + (us / runs).toFixed(2).padStart(10) + (us / n).toFixed(2).padStart(12));
      }
    } finally {
      await server.stop();
    }
  }
} finally {
  await agent.stop();
}
