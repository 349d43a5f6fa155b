/**
 * The database/sql event → span mapping, on hand-built events encoded with
 * the generated layout (the end-to-end test covers real probes and drivers).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { sqlProbe } from '../../../../daemon/probes/go/database/sql/descriptor.ts';
import { encodeSqlEvent, EventType, SQL_EVENT_SIZE, SqlEventFlags, SqlLimits, SpanFlags } from '../../../../daemon/generated/layouts.ts';
import { runProbeEvent } from '../../../support/probe-event.ts';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const SPAN = 'a1b2c3d4e5f60718';
// no process has this pid: code addresses cannot be placed, the system is other_sql
const PID = 0x7ffffff0;

function event(o: { query: string; queryLen?: number; flags?: number; parent?: boolean }): Buffer {
  const buf = Buffer.alloc(SQL_EVENT_SIZE + 8);
  const query = Buffer.alloc(SqlLimits.GT_SQL_QUERY_MAX);
  query.write(o.query.slice(0, SqlLimits.GT_SQL_QUERY_MAX));
  encodeSqlEvent({
    hdr: { type: EventType.GT_EVENT_SQL, size: SQL_EVENT_SIZE, tgid: PID, binary_id: 1, cpu: 0, goid: 7n },
    start_ns: 1_000_000_000n,
    end_ns: 1_000_300_000n,
    span: {
      trace_id: Buffer.from(TRACE, 'hex'),
      span_id: Buffer.from(SPAN, 'hex'),
      parent_span_id: Buffer.from(o.parent ? PARENT : '0000000000000000', 'hex'),
      flags: SpanFlags.GT_SPAN_SAMPLED | (o.parent ? SpanFlags.GT_SPAN_HAS_PARENT : 0),
      reserved: 0,
    },
    connector_fn: 0n,
    driver_fn: 0n,
    error_fn: 0n,
    db: 0n,
    connector: 0n,
    sql_dsn: -1,
    pgx_dsn: -1,
    query_len: o.queryLen ?? Buffer.byteLength(o.query),
    flags: o.flags ?? 0,
    query,
  }, buf, 8);
  return buf;
}

function run(buf: Buffer): { spans: ReadableSpan[]; problems: string[] } {
  return runProbeEvent(sqlProbe, buf, { dbQueryText });
}

let dbQueryText = false;
afterEach(() => (dbQueryText = false));

test('a query becomes one CLIENT span named by its operation and table, with no text by default', () => {
  const { spans } = run(event({ query: "SELECT name FROM items WHERE id = 4242 AND name = 'alice'", parent: true }));
  assert.equal(spans.length, 1);
  const s = spans[0]!;
  assert.equal(s.kind, SpanKind.CLIENT);
  assert.equal(s.name, 'SELECT items');
  assert.deepEqual(s.attributes, { 'db.system.name': 'other_sql', 'db.operation.name': 'SELECT', 'db.collection.name': 'items' });
  assert.equal(s.status.code, SpanStatusCode.UNSET);
  assert.deepEqual(s.duration, [0, 300_000]);
  assert.equal(s.parentSpanContext?.spanId, PARENT);
  assert.equal(s.instrumentationScope.name, 'gotrail/database/sql');
});

test('turned on, db.query.text is the sanitised text', () => {
  dbQueryText = true;
  const { spans } = run(event({ query: "UPDATE items SET name = 'bob' WHERE id IN (1, 2)", flags: SqlEventFlags.GT_SQL_EVENT_EXEC }));
  assert.equal(spans[0]!.attributes['db.query.text'], 'UPDATE items SET name = ? WHERE id IN (?, ?)');
});

test('an error return: error status, error.type _OTHER when the error\'s type cannot be told', () => {
  const { spans } = run(event({ query: "SELEC 'x'", flags: SqlEventFlags.GT_SQL_EVENT_ERROR }));
  const s = spans[0]!;
  assert.equal(s.name, 'other_sql', 'a text naming no operation: the span is named by the system');
  assert.equal(s.status.code, SpanStatusCode.ERROR);
  assert.equal(s.attributes['error.type'], '_OTHER');
});

test('a query longer than the capture: marked truncated, no table, no literal even cut in half', () => {
  dbQueryText = true;
  const long = `SELECT * FROM items WHERE name = '${'x'.repeat(SqlLimits.GT_SQL_QUERY_MAX)}'`;
  const { spans } = run(event({ query: long, queryLen: long.length }));
  const s = spans[0]!;
  assert.equal(s.name, 'SELECT');
  assert.equal(s.attributes['gotrail.db.query.truncated'], true);
  assert.equal(s.attributes['db.collection.name'], undefined);
  assert.equal(s.attributes['db.query.text'], 'SELECT * FROM items WHERE name = ?');
});
