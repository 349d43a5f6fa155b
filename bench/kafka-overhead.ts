/**
 * What tracing costs a kafka-go program: the latency of writing one message
 * (a WriteMessages call of its own, sent as its own batch and acknowledged
 * by a real broker on loopback) and of reading one (FetchMessage of
 * prefetched messages), each timed inside test/programs/kafka-client
 * (/loop, /readloop), with and without the agent, in the same run
 * (alternating rounds of an untraced process and a traced copy); and the
 * BPF programs run per message with their CPU time, from the agent's own
 * metrics.
 *
 *   deploy/node bench/kafka-overhead.ts [--go go1.26] [--rounds 7] [--n 500]
 *
 * Prints the median µs per message written and read over the rounds
 * untraced and traced, the difference, and per BPF program the runs per
 * message and µs per run. Needs root, Java 17 and the broker's jars and the
 * Go toolchains (bash deploy/setup.sh).
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { benchArgs } from './lib/args.ts';
import { repoRoot, startAgent } from '../test/support/agent-process.ts';
import { startGoServer, httpRequest, type GoServer } from '../test/support/go-server.ts';
import { startKafka } from '../test/support/servers/kafka.ts';
import { programStats, type ProgramStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    go: { type: 'string', default: 'go1.26' },
    rounds: { type: 'string', default: '7' },
    n: { type: 'string', default: '500' },
  },
});
const rounds = Number(values.rounds);
const n = Number(values.n);
const binary = join(repoRoot, 'build', 'go', values.go, 'plain', 'kafka-client');

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function ok(url: string): Promise<string> {
  const r = await httpRequest(url);
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${r.body}`);
  return r.body.trim();
}

let topics = 0;
/** A fresh topic whose leader is known (the first write succeeded: one message). */
async function fresh(p: GoServer): Promise<string> {
  const topic = `bench-${process.pid}-${topics++}`;
  await ok(`${p.url}/create?topic=${topic}`);
  for (let i = 0; ; i++) {
    const r = await httpRequest(`${p.url}/loop?topic=${topic}&n=1`);
    if (r.status === 200) return topic;
    if (i > 50) throw new Error(`${topic}: ${r.body}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

/** One round on `p`: µs per message written and read (the program times its own loops), on a fresh topic. */
async function round(p: GoServer): Promise<{ write: number; read: number }> {
  const topic = await fresh(p);
  const write = Number(await ok(`${p.url}/loop?topic=${topic}&n=${n}`)) / n / 1000;
  // n + 1 messages in the topic: the first read is not timed
  const read = Number(await ok(`${p.url}/readloop?topic=${topic}&n=${n + 1}`)) / n / 1000;
  return { write, read };
}

const probeStats = (url: string): Promise<ProgramStats> => programStats(url, /^gt_kafka_/);

const kafka = await startKafka();
const env = { KAFKA_BOOTSTRAP: kafka.bootstrap };
// the traced process runs a copy, which the agent selects; the untraced one the original
const copyDir = join(repoRoot, 'build', 'bench-kafka');
mkdirSync(copyDir, { recursive: true });
const copy = join(copyDir, 'kafka-client');
copyFileSync(binary, copy);
try {
  const agent = await startAgent(['--exporter', 'none', '--include-exe', copy, '--debug-link-per-program']);
  try {
    const plain = await startGoServer(binary, [], env);
    const proc = await startGoServer(copy, [], env);
    await agent.waitTraced(proc.pid);
    // warm-up: connections, page faults
    await round(plain);
    await round(proc);
    const before = await probeStats(await agent.metricsUrl());
    const untraced = { write: [] as number[], read: [] as number[] };
    const traced = { write: [] as number[], read: [] as number[] };
    // alternating rounds, each pair in a rotating order: the machine's drift hits both alike
    for (let r = 0; r < rounds; r++) {
      for (const [p, out] of r % 2 === 0 ? [[plain, untraced], [proc, traced]] as const : [[proc, traced], [plain, untraced]] as const) {
        const x = await round(p);
        out.write.push(x.write);
        out.read.push(x.read);
      }
    }
    const after = await probeStats(await agent.metricsUrl());
    await plain.stop();
    await proc.stop();
    // written per round: n + 1 (1 to find the leader); read per round: n + 1
    const written = rounds * (n + 1);
    const read = rounds * (n + 1);
    console.log(`kafka-go v0.4.47, ${values.go}, ${rounds} alternating rounds of ${n} messages written one by one (each its own batch, acks=1) and read back (FetchMessage, no group), broker on loopback`);
    for (const [what, u, t] of [['write', untraced.write, traced.write], ['read', untraced.read, traced.read]] as const) {
      console.log(`${what} untraced: ${median(u).toFixed(1)} µs/message (rounds: ${u.map((x) => x.toFixed(1)).join(' ')})`);
      console.log(`${what} traced:   ${median(t).toFixed(1)} µs/message (rounds: ${t.map((x) => x.toFixed(1)).join(' ')})`);
      console.log(`${what} added:    ${(median(t) - median(u)).toFixed(1)} µs/message (median traced − median untraced)`);
    }
    for (const [prog, a] of after) {
      const b = before.get(prog) ?? { runs: 0, seconds: 0 };
      const runs = a.runs - b.runs;
      if (runs === 0) continue;
      const per = prog.includes('fetch') ? read : written;
      console.log(`${prog}: ${(runs / per).toFixed(2)} runs/message, ${(((a.seconds - b.seconds) / runs) * 1e6).toFixed(2)} µs/run`);
    }
  } finally {
    await agent.stop();
  }
} finally {
  await kafka.stop();
}
