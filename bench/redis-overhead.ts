/**
 * What tracing costs a go-redis v9 client: the latency of one GET against a
 * real Redis on loopback (test/programs/redis-client's /loop, which times N
 * sequential GETs inside the program), with and without the agent, in the
 * same run; and the BPF programs run per command with their CPU time, from
 * the agent's own metrics.
 *
 *   deploy/node bench/redis-overhead.ts [--go go1.26] [--version 9.23.0] [--rounds 7] [--n 2000]
 *
 * Prints the median µs per GET over the rounds untraced and traced, the
 * difference, and per BPF program the runs per GET and µs per run.
 * Needs root, redis-server and the Go toolchains (bash deploy/setup.sh).
 */
import { benchArgs } from './lib/args.ts';
import { startAgent } from '../test/support/agent-process.ts';
import { startGoServer, httpRequest } from '../test/support/go-server.ts';
import { startRedis } from '../test/support/servers/redis.ts';
import { GO_REDIS_VERSIONS, redisClientBinary, toolchains } from '../test/go/github.com/redis/go-redis/v9/build.ts';
import { programStats, type ProgramStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    go: { type: 'string', default: 'go1.26' },
    version: { type: 'string', default: '9.23.0' },
    rounds: { type: 'string', default: '7' },
    n: { type: 'string', default: '2000' },
  },
});
const rounds = Number(values.rounds);
const n = Number(values.n);
const spec = GO_REDIS_VERSIONS.find((v) => v.version === values.version);
const tc = toolchains().find((t) => t.version.startsWith(values.go));
if (!spec || !tc) throw new Error(`unknown go-redis version ${values.version} or toolchain ${values.go}`);
const built = redisClientBinary(spec.version, spec.needsGo, tc, false);
if ('skip' in built) throw new Error(built.skip);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** µs per GET of each round (the program times its own loop). */
async function measure(url: string): Promise<number[]> {
  await httpRequest(`${url}/loop?n=${n}`); // warm-up: connection, page faults
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) out.push(Number((await httpRequest(`${url}/loop?n=${n}`)).body.trim()) / n / 1000);
  return out;
}

const probeStats = (url: string): Promise<ProgramStats> => programStats(url, /^gt_redis_/);

const redis = await startRedis();
const env = { REDIS_ADDR: redis.addr };
try {
  const plain = await startGoServer(built.binary, [], env);
  const untraced = await measure(plain.url);
  await plain.stop();

  const agent = await startAgent(['--exporter', 'none', '--include-exe', built.binary, '--debug-link-per-program']);
  try {
    const proc = await startGoServer(built.binary, [], env);
    await agent.waitTraced(proc.pid);
    await httpRequest(`${proc.url}/loop?n=${n}`);
    const before = await probeStats(await agent.metricsUrl());
    const traced = await measure(proc.url);
    const after = await probeStats(await agent.metricsUrl());
    await proc.stop();
    const gets = (rounds + 1) * n;
    const u = median(untraced);
    const t = median(traced);
    console.log(`go-redis v${spec.version}, ${tc.version}, ${rounds} rounds of ${n} sequential GETs on loopback`);
    console.log(`untraced: ${u.toFixed(1)} µs/GET (rounds: ${untraced.map((x) => x.toFixed(1)).join(' ')})`);
    console.log(`traced:   ${t.toFixed(1)} µs/GET (rounds: ${traced.map((x) => x.toFixed(1)).join(' ')})`);
    console.log(`added:    ${(t - u).toFixed(1)} µs/GET (median traced − median untraced)`);
    for (const [prog, a] of after) {
      const b = before.get(prog) ?? { runs: 0, seconds: 0 };
      const runs = a.runs - b.runs;
      if (runs === 0) continue;
      console.log(`${prog}: ${(runs / gets).toFixed(2)} runs/GET, ${(((a.seconds - b.seconds) / runs) * 1e6).toFixed(2)} µs/run`);
    }
  } finally {
    await agent.stop();
  }
} finally {
  await redis.stop();
}
