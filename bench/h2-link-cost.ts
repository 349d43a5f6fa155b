/**
 * What linking HTTP/2 requests costs the traced client: BPF programs run and
 * their CPU time per HTTP/2 client request, from the agent's own metrics
 * (`gotrail_probe_runs_total`, `gotrail_probe_run_seconds_total`), while a
 * traced Go client sends batches of concurrent HTTP/2 requests (TLS, or h2c
 * with --h2c) to a traced Go server on this node.
 *
 *   deploy/node bench/h2-link-cost.ts [--go go1.26] [--rounds 20] [--n 50] [--h2c]
 *
 * Prints, per BPF program, the runs per request and the average time per run.
 * Needs root and built test programs (bash deploy/setup.sh).
 */
import { benchArgs } from './lib/args.ts';
import { join } from 'node:path';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { startGoServer, httpRequest } from '../test/support/go-server.ts';
import { programStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    go: { type: 'string', default: 'go1.26' },
    rounds: { type: 'string', default: '20' },
    n: { type: 'string', default: '50' },
    h2c: { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const n = Number(values.n);
const bin = join(repoRoot, 'build', 'go', values.go, 'plain', 'httpserver');


const agent = await startAgent(['--exporter', 'none', '--include-exe', bin, '--debug-link-per-program']);
const server = await startGoServer(bin, [values.h2c ? '-h2c' : '-tls']);
const client = await startGoServer(bin);
try {
  await agent.waitTraced(server.pid);
  await agent.waitTraced(client.pid);
  const metrics = await agent.metricsUrl();
  const target = values.h2c ? server.url : server.url.replace('http://', 'https://');
  const call = async (): Promise<void> => {
    const res = await httpRequest(`${client.url}/proxy2?to=${encodeURIComponent(target)}&n=${n}${values.h2c ? '&h2c=1' : ''}`);
    if (res.status !== 200) throw new Error(`/proxy2: ${res.status} ${res.body}`);
  };
  await call(); // warm-up: connections, stacks, maps
  const before = await programStats(metrics);
  for (let i = 0; i < rounds; i++) await call();
  await new Promise((r) => setTimeout(r, 200));
  const after = await programStats(metrics);
  const requests = rounds * (n + 1);
  console.log(`${values.go}, HTTP/2 ${values.h2c ? 'h2c' : 'over TLS'}: ${requests} client requests (${rounds} rounds of ${n} concurrent + 1)`);
  console.log('program'.padEnd(30) + 'runs/request'.padStart(14) + 'µs/run'.padStart(10) + 'µs/request'.padStart(12));
  for (const [name, a] of [...after].sort()) {
    const b = before.get(name) ?? { runs: 0, seconds: 0 };
    const runs = a.runs - b.runs;
    if (runs <= 0 || !/^gt_http_(client|server)/.test(name)) continue;
    const us = (a.seconds - b.seconds) * 1e6;
    console.log(name.padEnd(30) + (runs / requests).toFixed(2).padStart(14) + (us / runs).toFixed(2).padStart(10) + (us / requests).toFixed(2).padStart(12));
  }
} finally {
  await client.stop();
  await server.stop();
  await agent.stop();
}
