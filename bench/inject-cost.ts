/**
 * What socket-level traceparent injection adds to an HTTP/1.1 request of a
 * traced Go client: the client's per-request latency with injection on and
 * off (`--no-inject-traceparent`), alternating agent runs of one benchmark
 * run, and the BPF time of the programs involved (`gt_inject_msg`, the
 * sk_msg program, per send; `gt_http_client_conn`, where the request is
 * marked), and a third mode, the connection in the sockmap but its
 * destination denied (`--inject-deny 127.0.0.0/8`: the sk_msg program runs,
 * no header), which tells the sockmap send path from the header. The client (test/programs/inject-peer, traced) sends N sequential
 * GETs over one kept-alive connection on loopback to an untraced server.
 *
 *   deploy/node bench/inject-cost.ts [--rounds 3] [--n 2000] [--a OTHER_CHECKOUT [--b CHECKOUT]]
 *
 * With --a, each round runs every mode with the agent of checkout A and of
 * B (this one by default), the order rotating, so that two builds compare
 * within one run.
 *
 * Needs root and built test programs (bash deploy/setup.sh).
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { benchArgs } from './lib/args.ts';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { startGoServer } from '../test/support/go-server.ts';
import { programStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, { options: { rounds: { type: 'string', default: '3' }, n: { type: 'string', default: '2000' }, a: { type: 'string' }, b: { type: 'string', default: repoRoot } } });
const sides = (values.a ? [['A', resolve(values.a)], ['B', resolve(values.b)]] : [['', repoRoot]]).map(([name, tree]) => {
  const gotrail = join(tree!, 'daemon', 'bin', 'gotrail');
  if (!existsSync(gotrail) || !existsSync(join(tree!, 'build', 'probes', 'gotrail.bpf.o'))) throw new Error(`${tree}: not a set-up gotrail checkout (run bash deploy/setup.sh there)`);
  return { name: name!, tree: tree!, command: [gotrail] };
});
// each agent started adds an exit listener (the test support's clean-up)
process.setMaxListeners(0);
const rounds = Number(values.rounds);
const n = Number(values.n);
const peer = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'inject-peer');
const dir = join(repoRoot, 'build', 'bench', 'inject-cost');
mkdirSync(dir, { recursive: true });
const client = join(dir, 'inject-peer');
copyFileSync(peer, client);

interface Latency { meanUs: number; p50Us: number; p90Us: number }

type Mode = 'on' | 'in-sockmap' | 'off';

async function round(mode: Mode, side: (typeof sides)[number]): Promise<{ lat: Latency; msgUs?: number; msgRuns?: number; connUs?: number }> {
  const agent = await startAgent(['--exporter', 'none', '--include-exe', client, '--debug-link-per-program', ...(mode === 'off' ? ['--no-inject-traceparent'] : mode === 'in-sockmap' ? ['--inject-deny', '127.0.0.0/8'] : [])], {}, { command: side.command });
  const recorder = await startGoServer(peer, ['-mode', 'recorder']);
  const child = spawn(client, ['-mode', 'client']);
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  try {
    await lines.next(); // ready
    await agent.waitTraced(child.pid!);
    const ask = async (cmd: object): Promise<Latency> => {
      child.stdin.write(`${JSON.stringify(cmd)}\n`);
      const r = JSON.parse((await lines.next()).value as string) as Latency & { ok: boolean; error?: string };
      if (!r.ok) throw new Error(r.error);
      return r;
    };
    await ask({ op: 'bench', url: `${recorder.url}/b`, n: 200 }); // warm-up
    const metrics = await agent.metricsUrl();
    const before = await programStats(metrics);
    const lat = await ask({ op: 'bench', url: `${recorder.url}/b`, n });
    const after = await programStats(metrics);
    const d = (p: string): { runs: number; us: number } => ({
      runs: (after.get(p)?.runs ?? 0) - (before.get(p)?.runs ?? 0),
      us: ((after.get(p)?.seconds ?? 0) - (before.get(p)?.seconds ?? 0)) * 1e6,
    });
    const msg = d('gt_inject_msg');
    const conn = d('gt_http_client_conn');
    return { lat, msgRuns: msg.runs / n, msgUs: msg.runs ? msg.us / msg.runs : undefined, connUs: conn.runs ? conn.us / conn.runs : undefined };
  } finally {
    child.kill('SIGKILL');
    await recorder.stop();
    await agent.stop();
  }
}

const load = loadavg();
const rows: Array<[Mode, string, Awaited<ReturnType<typeof round>>]> = [];
for (let i = 0; i < rounds; i++) {
  // the order rotates, so the machine's drift hits every mode (and side) alike
  const modes: Mode[] = ['on', 'in-sockmap', 'off'];
  for (let k = 0; k < 3; k++) {
    const m = modes[(i + k) % 3]!;
    for (let j = 0; j < sides.length; j++) {
      const side = sides[(i + k + j) % sides.length]!;
      rows.push([m, side.name, await round(m, side)]);
    }
  }
}
console.log(`HTTP/1.1 GET over loopback, ${n} sequential requests per run, Go 1.26 client traced, server untraced; load average at start ${load.map((x) => x.toFixed(2)).join(' ')}`);
if (values.a) console.log(`A: ${sides[0]!.tree}; B: ${sides[1]!.tree}`);
console.log('side'.padEnd(5) + 'injection'.padEnd(10) + 'mean µs'.padStart(10) + 'p50 µs'.padStart(10) + 'p90 µs'.padStart(10) + 'sk_msg runs/req'.padStart(17) + 'sk_msg µs/run'.padStart(15) + 'client_conn µs/run'.padStart(20));
for (const [mode, side, r] of rows) {
  console.log(side.padEnd(5) + mode.padEnd(10) + r.lat.meanUs.toFixed(1).padStart(10) + r.lat.p50Us.toFixed(1).padStart(10) + r.lat.p90Us.toFixed(1).padStart(10) +
    (r.msgRuns ?? 0).toFixed(2).padStart(17) + (r.msgUs?.toFixed(2) ?? '-').padStart(15) + (r.connUs?.toFixed(2) ?? '-').padStart(20));
}
const med = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const side of sides) {
  const mine = rows.filter(([, s]) => s === side.name);
  const p50 = (mode: Mode): number => med(mine.filter(([m]) => m === mode).map(([, , r]) => r.lat.p50Us));
  const msg = (mode: Mode): number => med(mine.filter(([m]) => m === mode).map(([, , r]) => r.msgUs ?? 0));
  const [on, sockmap, off] = [p50('on'), p50('in-sockmap'), p50('off')];
  const who = side.name ? `${side.name}: ` : '';
  console.log(`${who}median of the runs' p50: on ${on.toFixed(1)} µs, in sockmap without header ${sockmap.toFixed(1)} µs, off ${off.toFixed(1)} µs; sk_msg µs/run median: on ${msg('on').toFixed(2)}, in sockmap ${msg('in-sockmap').toFixed(2)}`);
  console.log(`${who}added per request: ${(on - off).toFixed(1)} µs in all, of which ${(sockmap - off).toFixed(1)} µs the sockmap send path, ${(on - sockmap).toFixed(1)} µs the header`);
}
