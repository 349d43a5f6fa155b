/**
 * What socket-level traceparent injection adds to a gRPC unary call (h2c) of
 * a traced Go client: the per-call latency with injection on and off
 * (`--no-inject-traceparent`), alternating agent runs, and the BPF time of
 * the sk_msg program (`gt_inject_msg`, per send: it walks the send's HTTP/2
 * frames and appends the field to marked HEADERS frames) and of the probe
 * that marks the stream (`gt_grpc_client_originate`). The client (grpc-echo,
 * grpc v1.64.1, Go 1.26, traced) makes N sequential unary calls on one
 * connection over loopback to an untraced copy of itself.
 *
 *   deploy/node bench/inject-h2-cost.ts [--rounds 3] [--n 2000]
 *
 * Needs root and the Go toolchains of deploy/setup.sh (grpc-echo is built on
 * first use, like the gRPC tests do).
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { httpRequest, startGoServer } from '../test/support/go-server.ts';
import { echoBinary, toolchains } from '../test/go/google.golang.org/grpc/echo-build.ts';
import { programStats } from './lib/program-stats.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, n: { type: 'string', default: '2000' } } });
const rounds = Number(values.rounds);
const n = Number(values.n);
const tc = toolchains().find((t) => t.version.startsWith('go1.26'));
if (!tc) throw new Error('Go 1.26 is not installed');
const built = echoBinary('1.64.1', tc, false);
if ('skip' in built) throw new Error(built.skip);
const dir = join(repoRoot, 'build', 'bench', 'inject-h2-cost');
mkdirSync(join(dir, 'traced'), { recursive: true });
mkdirSync(join(dir, 'untraced'), { recursive: true });
const client = join(dir, 'traced', 'grpc-echo');
const server = join(dir, 'untraced', 'grpc-echo');
copyFileSync(built.binary, client);
copyFileSync(built.binary, server);

type Mode = 'on' | 'off';

async function round(mode: Mode): Promise<{ p50: number; p99: number; msgRuns: number; msgUs?: number; markUs?: number }> {
  const agent = await startAgent(['--exporter', 'none', '--include-exe', client, ...(mode === 'off' ? ['--no-inject-traceparent'] : [])]);
  const echo = await startGoServer(server);
  const c = await startGoServer(client);
  try {
    await agent.waitTraced(c.pid);
    const to = (await httpRequest(`${echo.url}/addr`)).body.trim();
    const bench = async (k: number): Promise<{ p50: number; p99: number }> => {
      const m = /p50_us=(\S+) p99_us=(\S+)/.exec((await httpRequest(`${c.url}/bench?to=${to}&n=${k}`)).body);
      if (!m) throw new Error('the benchmark failed');
      return { p50: Number(m[1]), p99: Number(m[2]) };
    };
    await bench(200); // warm-up
    const metrics = await agent.metricsUrl();
    const before = await programStats(metrics);
    const lat = await bench(n);
    const after = await programStats(metrics);
    const d = (p: string): { runs: number; us: number } => ({
      runs: (after.get(p)?.runs ?? 0) - (before.get(p)?.runs ?? 0),
      us: ((after.get(p)?.seconds ?? 0) - (before.get(p)?.seconds ?? 0)) * 1e6,
    });
    const msg = d('gt_inject_msg');
    const mark = d('gt_grpc_client_originate');
    return { ...lat, msgRuns: msg.runs / n, msgUs: msg.runs ? msg.us / msg.runs : undefined, markUs: mark.runs ? mark.us / mark.runs : undefined };
  } finally {
    await c.stop();
    await echo.stop();
    await agent.stop();
  }
}

const rows: Array<[Mode, Awaited<ReturnType<typeof round>>]> = [];
for (let i = 0; i < rounds; i++) {
  // the order alternates, so the machine's drift hits both modes alike
  for (const m of (i % 2 ? ['off', 'on'] : ['on', 'off']) as Mode[]) rows.push([m, await round(m)]);
}
console.log(`gRPC unary calls (h2c) over loopback, ${n} sequential calls on one connection per run, grpc v1.64.1 / Go 1.26 client traced, server untraced`);
console.log('injection'.padEnd(10) + 'p50 µs'.padStart(10) + 'p99 µs'.padStart(10) + 'sk_msg runs/call'.padStart(18) + 'sk_msg µs/run'.padStart(15) + 'originate µs/run'.padStart(18));
for (const [mode, r] of rows) {
  console.log(mode.padEnd(10) + r.p50.toFixed(1).padStart(10) + r.p99.toFixed(1).padStart(10) + r.msgRuns.toFixed(2).padStart(18) +
    (r.msgUs?.toFixed(2) ?? '-').padStart(15) + (r.markUs?.toFixed(2) ?? '-').padStart(18));
}
const med = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p50 = (mode: Mode): number => med(rows.filter(([m]) => m === mode).map(([, r]) => r.p50));
console.log(`median of the runs' p50: on ${p50('on').toFixed(1)} µs, off ${p50('off').toFixed(1)} µs; added per call ${(p50('on') - p50('off')).toFixed(1)} µs`);
