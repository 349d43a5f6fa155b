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
import type { PostgresServer } from '../../../support/servers/postgres.ts';
import { httpRequest, startGoServer, type GoServer } from '../../../support/go-server.ts';

/**
 * Drivers of the program: its `?driver=` value, the db.system.name it must
 * give, and the error.type of a syntax error, of a missing table (the type
 * the driver returns: pgx wraps a failed prepare's error in a PrepareError)
 * and of a refused connection (PostgreSQL drivers only).
 */
export const DRIVERS = [
  { driver: 'pgx', system: 'postgresql', syntaxError: '*github.com/jackc/pgx/v5/pgconn.PgError', missingTable: '*github.com/jackc/pgx/v5/pgconn.PrepareError', refused: '*github.com/jackc/pgx/v5/pgconn.ConnectError' },
  { driver: 'pq', system: 'postgresql', syntaxError: '*github.com/lib/pq.Error', missingTable: '*github.com/lib/pq.Error', refused: '*net.OpError' },
  { driver: 'sqlite', system: 'sqlite', syntaxError: '*modernc.org/sqlite.Error', missingTable: '*modernc.org/sqlite.Error', refused: undefined },
] as const;
export interface Driver {
  driver: string;
  system: string;
  syntaxError: string;
  missingTable: string;
  refused: string | undefined;
}

/**
 * `d` as the program built with toolchain `tc` has it: pgx v5.4.3 (the
 * version Go 1.19 builds) returns a failed prepare's PgError unwrapped (the
 * PrepareError came later) and names its connect error's type connectError.
 */
export function driverAt(d: Driver, tc: string): Driver {
  return tc === 'go1.19' && d.driver === 'pgx'
    ? { ...d, missingTable: '*github.com/jackc/pgx/v5/pgconn.PgError', refused: '*github.com/jackc/pgx/v5/pgconn.connectError' }
    : d;
}

/** Values of the program's queries: none may appear in any span. */
export const LITERALS = ["'alice'", 'alice', 'bob', 'carol', 'dave', '4242', '777', '(1, 2, 3)', '1, 2, 3'];

/** A PostgreSQL URL whose connections are refused: port 1 of loopback, where nothing listens. */
export const REFUSED_URL = 'postgres://postgres@127.0.0.1:1/refused?sslmode=disable&connect_timeout=5';

/**
 * The password the program's DSNs carry (the test server's trust
 * authentication ignores it): it must appear nowhere in what the agent
 * exports or logs.
 */
export const PASSWORD = 'gotrail-Pw-9d31f7';

/** `pg`'s URL with {@link PASSWORD}: `postgres://postgres:PASSWORD@127.0.0.1:PORT/DB?sslmode=disable`. */
export function passwordUrl(pg: PostgresServer): string {
  return `postgres://postgres:${PASSWORD}@${pg.host}:${pg.port}/${pg.database}?sslmode=disable`;
}

/**
 * `pg` as a keyword DSN with {@link PASSWORD}, quoted as libpq quotes values,
 * and the schema `public` first in search_path (db.namespace `DB|public`).
 */
export function keywordDsn(pg: PostgresServer): string {
  return `user=postgres password='${PASSWORD}' host=${pg.host} port=${pg.port} dbname=${pg.database} search_path='public' sslmode=disable`;
}

/**
 * Starts sql-client `binary` on PostgreSQL `pg` ({@link passwordUrl} for pgx
 * and pq, {@link keywordDsn} for pgx-kw and pq-kw, and {@link REFUSED_URL})
 * and a fresh SQLite file.
 */
export function startSqlClient(binary: string, pg: PostgresServer): Promise<GoServer> {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-sqlite-'));
  return startGoServer(binary, ['-pg', passwordUrl(pg), '-pgkw', keywordDsn(pg), '-refused', REFUSED_URL, '-sqlite', join(dir, 'test.db')]);
}

/**
 * db.namespace, server.address and server.port the span named `name` (made
 * by {@link runCalls}) of driver `d` must have: PostgreSQL's from the DSN,
 * none for SQLite (a file, no server; its DSN names no database).
 */
export function expectedServer(d: Driver, pg: PostgresServer, name: string): Record<string, string | number | undefined> {
  if (d.system !== 'postgresql') return { 'db.namespace': undefined, 'server.address': undefined, 'server.port': undefined };
  if (name.endsWith(' refused_items')) return { 'db.namespace': 'refused', 'server.address': '127.0.0.1', 'server.port': 1 };
  return { 'db.namespace': pg.database, 'server.address': pg.host, 'server.port': pg.port };
}

/** Fails when {@link PASSWORD} appears in `text` (`what`: where it was). */
export function assertNoPassword(text: string, what: string): void {
  assert.ok(!text.includes(PASSWORD), `the DSN's password leaked into ${what}`);
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
    'SELECT items': 1 + 2 * n + 2, 'UPDATE items': 2 * n + 1,
    [d.system]: 1, 'SELECT no_such_table': 1,
    ...(d.refused !== undefined ? { 'SELECT refused_items': 1, 'UPDATE refused_items': 1 } : {}),
  };
}

/** The error.type the span named `name` (made by {@link runCalls}) must have, undefined for a call that succeeds. */
export function expectedError(d: Driver, name: string): string | undefined {
  if (name === d.system) return d.syntaxError;
  if (name === 'SELECT no_such_table') return d.missingTable;
  if (name.endsWith(' refused_items')) return d.refused;
  return undefined;
}

/** Calls each request path makes on the request's goroutine (its children). */
export function callsOfRequest(d: Driver): Array<[string, number]> {
  return [['/setup', 3], ['/run', 1], ['/conn', 3], ['/errors', 2], ...(d.refused !== undefined ? [['/refused', 2] as [string, number]] : [])];
}

/**
 * /setup (3 execs), /run with `n` workers (1+5n calls), /conn (3 calls
 * through a Conn and its Tx), /errors (a syntax error and a missing table),
 * /refused (PostgreSQL drivers: a query and an exec whose connection is refused).
 */
export async function runCalls(server: GoServer, d: Driver, n: number): Promise<void> {
  await call(`${server.url}/setup?driver=${d.driver}`, 'OK');
  await call(`${server.url}/run?driver=${d.driver}&n=${n}`, `OK=${1 + 5 * n}`);
  await call(`${server.url}/conn?driver=${d.driver}`, 'OK');
  await call(`${server.url}/errors?driver=${d.driver}`, 'true true');
  if (d.refused !== undefined) await call(`${server.url}/refused?driver=${d.driver}`, 'true true');
}

/**
 * Fails when any literal of the program's queries appears in a span's name
 * or in a string attribute (where query text would go; a number attribute
 * is a port, a status or a count, and a port may well be 40777).
 */
export function assertNoLiterals(spans: ReceivedSpan[]): void {
  for (const s of spans) {
    const strings = Object.entries(s.attributes).filter(([, v]) => typeof v === 'string' || Array.isArray(v));
    const text = `${s.name} ${JSON.stringify(Object.fromEntries(strings))}`;
    for (const l of LITERALS) assert.ok(!text.includes(l), `literal ${l} leaked into span ${s.name}: ${text}`);
  }
}
