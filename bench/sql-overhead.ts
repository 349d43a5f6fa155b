/**
 * What tracing database/sql adds to a query: the median latency of one
 * QueryRowContext (a one-row SELECT by key) in the same program traced and
 * not traced, in the same run (two copies of test/programs/sql-client, the
 * agent tracing one; rounds alternate between them), with pgx v5 and lib/pq
 * against a local PostgreSQL and modernc.org/sqlite; and the BPF program
 * runs (probe hits) per query, from the agent's metrics.
 *
 *   deploy/node bench/sql-overhead.ts [--go go1.26] [--rounds 5] [--n 500]
 *
 * Needs root, Debian's postgresql and built test programs (bash deploy/setup.sh).
 */
import { benchArgs } from './lib/args.ts';
import { copyFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, repoRoot } from '../test/support/agent-process.ts';
import { httpRequest, startGoServer } from '../test/support/go-server.ts';
import { startPostgres } from '../test/support/servers/postgres.ts';
import { programStats } from './lib/program-stats.ts';

const { values } = benchArgs(import.meta.filename, {
  options: {
    go: { type: 'string', default: 'go1.26' },
    rounds: { type: 'string', default: '5' },
    n: { type: 'string', default: '500' },
  },
});
const rounds = Number(values.rounds);
const n = Number(values.n);
const built = join(repoRoot, 'build', 'go', values.go, 'plain', 'sql-client');
const dir = mkdtempSync(join(tmpdir(), 'gotrail-sql-bench-'));
const copy = (name: string): string => {
  mkdirSync(join(dir, name));
  copyFileSync(built, join(dir, name, 'sql-client'));
  return join(dir, name, 'sql-client');
};

/** BPF program runs (probe hits) of the database/sql probe and their total run time (s). */
async function sqlRuns(url: string): Promise<{ runs: number; seconds: number }> {
  let runs = 0, seconds = 0;
  for (const s of (await programStats(url, /^gt_sql_/)).values()) {
    runs += s.runs;
    seconds += s.seconds;
  }
  return { runs, seconds };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const pg = await startPostgres();
const agent = await startAgent(['--exporter', 'none', '--include-exe', join(dir, 'traced', '**'), '--debug-link-per-program']);
const traced = await startGoServer(copy('traced'), ['-pg', pg.url, '-sqlite', join(dir, 'traced.db')]);
const plain = await startGoServer(copy('untraced'), ['-pg', pg.url, '-sqlite', join(dir, 'untraced.db')]);
try {
  await agent.waitTraced(traced.pid);
  const rows: string[] = [];
  for (const driver of ['pgx', 'pq', 'sqlite']) {
    for (const s of [traced, plain]) {
      const r = await httpRequest(`${s.url}/setup?driver=${driver}`);
      if (r.status !== 200) throw new Error(`setup ${driver}: ${r.body}`);
    }
    const t: number[] = [];
    const u: number[] = [];
    const before = await sqlRuns(await agent.metricsUrl());
    for (let i = 0; i < rounds; i++) {
      u.push(Number((await httpRequest(`${plain.url}/bench?driver=${driver}&n=${n}`)).body));
      t.push(Number((await httpRequest(`${traced.url}/bench?driver=${driver}&n=${n}`)).body));
    }
    const after = await sqlRuns(await agent.metricsUrl());
    const runs = after.runs - before.runs;
    const bpfUs = runs ? ((after.seconds - before.seconds) / runs) * 1e6 : 0;
    const mt = median(t) / 1000, mu = median(u) / 1000;
    rows.push(`${driver.padEnd(8)} ${mu.toFixed(1).padStart(10)} ${mt.toFixed(1).padStart(10)} ${(mt - mu).toFixed(1).padStart(10)} ${(runs / (rounds * n)).toFixed(2).padStart(10)} ${bpfUs.toFixed(2).padStart(12)}`);
  }
  console.log(`database/sql, ${values.go}: median µs per QueryRowContext (median of ${rounds} rounds of ${n} sequential queries)`);
  console.log(`${'driver'.padEnd(8)} ${'untraced'.padStart(10)} ${'traced'.padStart(10)} ${'added'.padStart(10)} ${'hits/query'.padStart(10)} ${'BPF µs/hit'.padStart(12)}`);
  for (const r of rows) console.log(r);
} finally {
  await traced.stop();
  await plain.stop();
  await agent.stop();
  await pg.stop();
}
