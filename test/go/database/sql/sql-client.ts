/**
 * What the database/sql end-to-end suites share: the sql-client program
 * (test/programs/sql-client) with its three drivers, a PostgreSQL server for
 * two of them, and the calls each request makes with the spans they must give.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReceivedSpan } from '../../../support/collector.ts';
import { httpRequest, startGoServer, type GoServer } from '../../../support/go-server.ts';

/**
 * Drivers of the program: its `?driver=` value, the db.system.name it must
 * give, and the error.type of a syntax error and of a missing table (the type
 * the driver returns: pgx wraps a failed prepare's error in a PrepareError).
 */
export const DRIVERS = [
  { driver: 'pgx', system: 'postgresql', syntaxError: '*github.com/jackc/pgx/v5/pgconn.PgError', missingTable: '*github.com/jackc/pgx/v5/pgconn.PrepareError' },
  { driver: 'pq', system: 'postgresql', syntaxError: '*github.com/lib/pq.Error', missingTable: '*github.com/lib/pq.Error' },
  { driver: 'sqlite', system: 'sqlite', syntaxError: '*modernc.org/sqlite.Error', missingTable: '*modernc.org/sqlite.Error' },
] as const;
export type Driver = (typeof DRIVERS)[number];

/** Values of the program's queries: none may appear in any span. */
export const LITERALS = ["'alice'", 'alice', 'bob', 'carol', 'dave', '4242', '777', '(1, 2, 3)', '1, 2, 3'];

/** Starts sql-client `binary` on PostgreSQL `pgUrl` and a fresh SQLite file. */
export function startSqlClient(binary: string, pgUrl: string): Promise<GoServer> {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-sqlite-'));
  return startGoServer(binary, ['-pg', pgUrl, '-sqlite', join(dir, 'test.db')]);
}

async function call(url: string, expect: string): Promise<void> {
  const res = await httpRequest(url);
  assert.equal(res.status, 200, `${url}: ${res.body}`);
  assert.equal(res.body.trim(), expect, url);
}

/** Spans by name that {@link runCalls} makes, with `n` workers. */
export function expectedSpans(d: Driver, n: number): Record<string, number> {
  return {
    'DROP items': 1, 'CREATE items': 1, 'INSERT items': 1 + n,
    'SELECT items': 1 + 2 * n, 'UPDATE items': 2 * n,
    [d.system]: 1, 'SELECT no_such_table': 1,
  };
}

/** /setup (3 execs), /run with `n` workers (1+5n calls), /errors (a syntax error and a missing table). */
export async function runCalls(server: GoServer, d: Driver, n: number): Promise<void> {
  await call(`${server.url}/setup?driver=${d.driver}`, 'OK');
  await call(`${server.url}/run?driver=${d.driver}&n=${n}`, `OK=${1 + 5 * n}`);
  await call(`${server.url}/errors?driver=${d.driver}`, 'true true');
}

/** Fails when any literal of the program's queries appears in a span's name or attributes. */
export function assertNoLiterals(spans: ReceivedSpan[]): void {
  for (const s of spans) {
    const text = `${s.name} ${JSON.stringify(s.attributes)}`;
    for (const l of LITERALS) assert.ok(!text.includes(l), `literal ${l} leaked into span ${s.name}: ${text}`);
  }
}
