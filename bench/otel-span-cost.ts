/**
 * What bridging a span of the OpenTelemetry Go API costs the traced program:
 * a Go program (`test/programs/otel-api`, `GET /bench?n=N`) starts and ends
 * N spans through the global tracer (no SDK) in one request; the request's
 * time is measured without gotrail, then with it (spans exported nowhere:
 * `--exporter none`), and the BPF programs' runs and CPU time come from the
 * agent's own metrics.
 *
 *   deploy/node bench/otel-span-cost.ts [--go go1.26] [--n 20000] [--rounds 5]
 *
 * Prints the time per span without and with the agent (best of the rounds),
 * their difference (the cost per bridged span: three uprobe traps — newSpan's
 * entry, its return, End — and the BPF work), and per BPF program the runs
 * per span and the average time per run. Needs root and built test programs
 * (bash deploy/setup.sh).
 */
import { benchArgs } from './lib/args.ts';
import { join } from 'node:path';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { startGoServer, httpRequest } from '../test/support/go-server.ts';
import { programStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, { options: { go: { type: 'string', default: 'go1.26' }, n: { type: 'string', default: '20000' }, rounds: { type: 'string', default: '5' } } });
const n = Number(values.n);
const rounds = Number(values.rounds);
const bin = join(repoRoot, 'build', 'go', values.go, 'plain', 'otel-api');


/** The best time per span (ns) over the rounds of one request of n spans each. */
async function nsPerSpan(url: string): Promise<number> {
  await httpRequest(`${url}/bench?n=1000`); // warm-up
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    const res = await httpRequest(`${url}/bench?n=${n}`);
    const dt = Number(process.hrtime.bigint() - t0);
    if (res.status !== 200) throw new Error(`GET /bench: ${res.status}`);
    best = Math.min(best, dt / n);
  }
  return best;
}

console.log(`${values.go}: ${n} API spans per request, best of ${rounds} rounds`);
const plain = await startGoServer(bin, []);
let without: number;
try {
  without = await nsPerSpan(plain.url);
} finally {
  await plain.stop();
}
const agent = await startAgent(['--exporter', 'none', '--include-exe', bin, '--debug-link-per-program']);
try {
  const metrics = await agent.metricsUrl();
  const server = await startGoServer(bin, []);
  try {
    await agent.waitTraced(server.pid);
    const before = await programStats(metrics);
    const withAgent = await nsPerSpan(server.url);
    await new Promise((r) => setTimeout(r, 200));
    const after = await programStats(metrics);
    console.log(`without the agent: ${(without / 1000).toFixed(3)} µs/span`);
    console.log(`with the agent:    ${(withAgent / 1000).toFixed(2)} µs/span`);
    console.log(`cost per bridged span: ${((withAgent - without) / 1000).toFixed(2)} µs`);
    const spans = rounds * n + 1000;
    console.log('program'.padEnd(26) + 'runs/span'.padStart(12) + 'µs/run'.padStart(10));
    for (const [name, a] of [...after].sort()) {
      const b = before.get(name) ?? { runs: 0, seconds: 0 };
      const runs = a.runs - b.runs;
      if (runs <= 0 || !name.startsWith('gt_otel')) continue;
      console.log(name.padEnd(26) + (runs / spans).toFixed(2).padStart(12) + (((a.seconds - b.seconds) * 1e6) / runs).toFixed(2).padStart(10));
    }
  } finally {
    await server.stop();
  }
} finally {
  await agent.stop();
}
