/**
 * End to end: the queries and execs of a real program (test/programs/sql-client)
 * through database/sql with pgx v5 (stdlib), lib/pq against a real PostgreSQL
 * server, and the pure-Go modernc.org/sqlite, built with each Go toolchain
 * (Go 1.19 with the drivers' last versions it builds), stripped and not: exactly one CLIENT span per call,
 * 20 goroutines at once (DB, prepared statement, Conn and transaction paths),
 * with the conventions' attributes; errors (a syntax error, a missing table,
 * a refused connection) as error spans with the error's type; a call made while the goroutine serves an
 * HTTP request is that request's child; and no literal of any query in any
 * span, with db.query.text off (the default) or on (sanitised; turned on by
 * GOTRAIL_DB_QUERY_TEXT=1).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { attributeText, type ReceivedSpan } from '../../../support/collector.ts';
import { skipUnlessBpf } from '../../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../../support/traced-collector.ts';
import { repoRoot } from '../../../support/agent-process.ts';
import { httpRequest } from '../../../support/go-server.ts';
import { postgresBinDir, startPostgres, type PostgresServer } from '../../../support/servers/postgres.ts';
import {
  DRIVERS, assertNoLiterals, assertNoPassword, driverAt, callsOfRequest, expectedError, expectedServer, expectedSpans, runCalls, startSqlClient,
} from './sql-client.ts';

const pgBin = postgresBinDir();
const skip = skipUnlessBpf() || (typeof pgBin !== 'string' && pgBin.skip);
const WORKERS = 20;
// the drivers' current versions need Go >= 1.26 (see the program's
// program.conf); Go 1.19 builds the same program with older drivers
// (sql-client-go119: pgx v5.4.3, lib/pq v1.10.9, modernc.org/sqlite v1.20.4)
const TOOLCHAINS = ['go1.19', 'go1.26', 'go1.27'] as const;
const VARIANTS = ['plain', 'stripped'] as const;
const copies = join(repoRoot, 'build', 'e2e-sql');
const programOf = (tc: string): string => (tc === 'go1.19' ? 'sql-client-go119' : 'sql-client');
const binPath = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, programOf(tc));

function usePostgres(): () => PostgresServer {
  let pg: PostgresServer | undefined;
  before(async () => {
    for (const tc of TOOLCHAINS) for (const v of VARIANTS) assert.ok(existsSync(binPath(tc, v)), `${binPath(tc, v)} missing: run bash deploy/setup.sh`);
    pg = await startPostgres();
  });
  after(async () => pg?.stop());
  return () => pg!;
}

/** The HTTP request span of `path` in `all`. */
function request(all: ReceivedSpan[], pid: number, path: string): ReceivedSpan {
  const s = all.filter((x) => x.resource['process.pid'] === pid && x.kind === 'SERVER' && x.attributes['url.path'] === path);
  assert.equal(s.length, 1, `one SERVER span for ${path}`);
  return s[0]!;
}

describe('database/sql: one CLIENT span per query or exec', { skip }, () => {
  const pg = usePostgres();
  const traced = tracedCollector(['--include-exe', `${copies}/**`]);

  for (const tc of TOOLCHAINS) {
    for (const v of VARIANTS) {
      for (const d of DRIVERS.map((x) => driverAt(x, tc))) {
        test(`${d.driver}, ${tc} ${v}: ${1 + 5 * WORKERS} calls from ${WORKERS} goroutines, errors, parents, no literal`, async () => {
          const server = await startSqlClient(freshCopy(copies, tc, v, programOf(tc)), pg());
          try {
            await traced.agent.waitTraced(server.pid);
            await runCalls(server, d, WORKERS);
            const want = expectedSpans(d, WORKERS);
            const total = Object.values(want).reduce((a, b) => a + b, 0);
            const spans = await traced.spansOf(server.pid, 'CLIENT', total, 'one CLIENT span per query or exec');
            const all = await traced.collector.spans();
            for (const [name, count] of Object.entries(want)) {
              assert.equal(spans.filter((s) => s.name === name).length, count, `spans named ${name}`);
            }
            for (const s of spans) {
              assert.equal(s.attributes['db.system.name'], d.system, `${s.name}: db.system.name`);
              assert.equal(s.scope.name, 'gotrail/database/sql');
              assert.equal(s.attributes['db.query.text'], undefined, 'no query text unless turned on');
              const [op, table] = s.name.split(' ');
              if (s.name !== d.system) {
                assert.equal(s.attributes['db.operation.name'], op, `${s.name}: db.operation.name`);
                assert.equal(s.attributes['db.collection.name'], table, `${s.name}: db.collection.name`);
              }
              const error = expectedError(d, s.name);
              assert.equal(s.status.code, error ? 'ERROR' : 'UNSET', `${s.name}: status`);
              assert.equal(s.attributes['error.type'], error, `${s.name}: error.type`);
              assert.ok(s.endTimeUnixNano >= s.startTimeUnixNano);
              for (const [k, want] of Object.entries(expectedServer(d, pg(), s.name))) assert.equal(s.attributes[k], want, `${s.name}: ${k}`);
            }
            // the calls made on a request's goroutine are its children; the workers' are roots
            for (const [path, n] of callsOfRequest(d)) {
              const req = request(all, server.pid, path);
              const children = spans.filter((s) => s.parentSpanId === req.spanId);
              assert.equal(children.length, n, `${path}: its calls are its children`);
              for (const c of children) assert.equal(c.traceId, req.traceId);
            }
            assert.equal(spans.filter((s) => s.parentSpanId === '').length, 5 * WORKERS, 'the workers\' calls (no request on their goroutine) are roots');
            assertNoLiterals(all.filter((s) => s.resource['process.pid'] === server.pid));
            assertNoPassword(readFileSync(traced.collector.outputPath, 'utf8'), 'the collector\'s output');
            assertNoPassword(traced.agent.log(), 'the agent\'s log');
          } finally {
            await server.stop();
          }
        });
      }
      test(`keyword DSNs with search_path (pgx, lib/pq), ${tc} ${v}: db.namespace, server.address, server.port; no password anywhere`, async () => {
        const server = await startSqlClient(freshCopy(copies, tc, v, programOf(tc)), pg());
        try {
          await traced.agent.waitTraced(server.pid);
          for (const path of ['/setup?driver=pgx-kw', '/conn?driver=pgx-kw', '/conn?driver=pq-kw']) {
            const res = await httpRequest(`${server.url}${path}`);
            assert.equal(res.status, 200, `${path}: ${res.body}`);
          }
          const spans = await traced.spansOf(server.pid, 'CLIENT', 9, 'three execs of /setup, three calls through a Conn per driver');
          for (const s of spans) {
            assert.equal(s.attributes['db.system.name'], 'postgresql');
            assert.equal(s.attributes['db.namespace'], `${pg().database}|public`, `${s.name}: db.namespace {database}|{schema}`);
            assert.equal(s.attributes['server.address'], pg().host, `${s.name}: server.address`);
            assert.equal(s.attributes['server.port'], pg().port, `${s.name}: server.port`);
          }
          assertNoPassword(readFileSync(traced.collector.outputPath, 'utf8'), 'the collector\'s output');
          assertNoPassword(traced.agent.log(), 'the agent\'s log');
          const metrics = await traced.agent.metricsUrl();
          for (const url of [metrics, metrics.replace(/\/metrics$/, '/status')]) {
            const res = await fetch(url);
            assert.equal(res.status, 200, url);
            assertNoPassword(await res.text(), url);
          }
        } finally {
          await server.stop();
        }
      });
    }
  }
});

describe('database/sql: db.query.text, turned on, is sanitised', { skip }, () => {
  const pg = usePostgres();
  // turned on by the variable, with 1 (as gotrail's other switches take it,
  // where the agent once refused to start); the go-redis test uses the flag
  const traced = tracedCollector(['--include-exe', `${copies}/**`], { GOTRAIL_DB_QUERY_TEXT: '1' });

  for (const d of DRIVERS) {
    test(`${d.driver}: every literal is ?`, async () => {
      const server = await startSqlClient(freshCopy(copies, 'go1.26', 'plain', 'sql-client'), pg());
      try {
        await traced.agent.waitTraced(server.pid);
        await runCalls(server, d, 2);
        const want = expectedSpans(d, 2);
        const spans = await traced.spansOf(server.pid, 'CLIENT', Object.values(want).reduce((a, b) => a + b, 0), 'one CLIENT span per query or exec');
        const texts = new Set(spans.map((s) => attributeText(s.attributes['db.query.text'])));
        const p = d.driver === 'sqlite' ? '?' : '$1';
        for (const t of [
          'SELECT id, name FROM items WHERE name = ? AND id IN (?, ?, ?)',
          'UPDATE items SET name = ? WHERE id = ?',
          'INSERT INTO items (id, name) VALUES (?, ?)',
          'INSERT INTO items (id, name) VALUES (?, ?), (?, ?), (?, ?)',
          'SELECT name FROM items WHERE id = ?',
          `SELECT name FROM items WHERE id = ${p}`,
          `UPDATE items SET name = ? WHERE id = ${p}`,
          'SELEC ? FROM items',
          'SELECT name FROM no_such_table WHERE id = ?',
          'DROP TABLE IF EXISTS items',
          'CREATE TABLE items (id INTEGER, name TEXT)',
        ]) assert.ok(texts.has(t), `db.query.text ${t} among ${[...texts].join(' | ')}`);
        assertNoLiterals(spans);
      } finally {
        await server.stop();
      }
    });
  }
});
