/**
 * The SQL text rules of the database/sql probe: sanitising (no literal ever
 * kept, even in a query cut short) and the operation and table a statement
 * names; and the error type told from an Error method's name.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sanitizeSql, summarizeSql } from '../../../../daemon/probes/go/database/sql/query.ts';
import { receiverType, systemOfFunction } from '../../../../daemon/probes/go/database/sql/drivers.ts';

test('every literal becomes ?; placeholders, identifiers and keywords stay; comments go', () => {
  const cases: Array<[string, string]> = [
    ["SELECT id, name FROM items WHERE name = 'alice' AND id IN (1, 2, 3)", 'SELECT id, name FROM items WHERE name = ? AND id IN (?, ?, ?)'],
    ["UPDATE t SET a = 'it''s', b = -1.5e3, c = .5 WHERE id = $1", 'UPDATE t SET a = ?, b = -?, c = ? WHERE id = $1'],
    ["SELECT E'a\\'b', X'ff', B'0101', N'n' FROM t2", 'SELECT ?, ?, ?, ? FROM t2'],
    ['SELECT $$body$$, $tag$x $$ y$tag$ FROM t', 'SELECT ?, ? FROM t'],
    ['SELECT "col1", `col2` FROM "Table3" WHERE x = :name AND y = @p1 AND z = ?', 'SELECT "col1", `col2` FROM "Table3" WHERE x = :name AND y = @p1 AND z = ?'],
    ["SELECT 1 -- secret 'x'\nFROM t /* 42 */ WHERE v = 0x1F", 'SELECT ? \nFROM t   WHERE v = ?'],
    ['SELECT t1.c2, table_3 FROM t1', 'SELECT t1.c2, table_3 FROM t1'],
  ];
  for (const [q, want] of cases) assert.equal(sanitizeSql(q), want, q);
});

test('a query cut short inside a literal keeps none of it', () => {
  assert.equal(sanitizeSql("SELECT * FROM t WHERE name = 'secret-va"), 'SELECT * FROM t WHERE name = ?');
  assert.equal(sanitizeSql('SELECT * FROM t WHERE body = $$secret'), 'SELECT * FROM t WHERE body = ?');
  assert.equal(sanitizeSql('SELECT * FROM t WHERE n = 12345'), 'SELECT * FROM t WHERE n = ?');
});

test('MySQL: double quotes and backslash escapes make strings', () => {
  assert.equal(sanitizeSql('SELECT * FROM t WHERE a = "secret" AND b = \'x\\\'y\' # 7', 'mysql'), 'SELECT * FROM t WHERE a = ? AND b = ? ');
  assert.equal(sanitizeSql('SELECT * FROM t WHERE a = "quoted"'), 'SELECT * FROM t WHERE a = "quoted"', 'elsewhere a quoted identifier');
});

test('operation and table of simple statements; none for several tables or statements', () => {
  const cases: Array<[string, { operation?: string; collection?: string }]> = [
    ["SELECT id FROM items WHERE name = 'x'", { operation: 'SELECT', collection: 'items' }],
    ['select * from public.items', { operation: 'SELECT', collection: 'public.items' }],
    ['INSERT INTO items (id) VALUES (1)', { operation: 'INSERT', collection: 'items' }],
    ['UPDATE items SET a = 1', { operation: 'UPDATE', collection: 'items' }],
    ['DELETE FROM "Items" WHERE id = 1', { operation: 'DELETE', collection: '"Items"' }],
    ['CREATE TABLE IF NOT EXISTS items (id INTEGER)', { operation: 'CREATE', collection: 'items' }],
    ['DROP TABLE IF EXISTS items', { operation: 'DROP', collection: 'items' }],
    ['CREATE INDEX i ON items (id)', { operation: 'CREATE' }],
    ['SELECT * FROM a JOIN b ON a.id = b.id', { operation: 'SELECT' }],
    ['SELECT * FROM a, b', { operation: 'SELECT' }],
    ['SELECT * FROM a WHERE id IN (SELECT id FROM b)', { operation: 'SELECT' }],
    ['WITH x AS (SELECT 1) SELECT * FROM x', { operation: 'WITH' }],
    ['SELECT 1', { operation: 'SELECT' }],
    ['BEGIN', { operation: 'BEGIN' }],
    ['SELECT 1; SELECT 2', {}],
    ["SELEC 'alice' FROM items", {}],
    ['', {}],
  ];
  for (const [q, want] of cases) assert.deepEqual(summarizeSql(q), want, q);
});

test('the driver from its package, the error type from its Error method', () => {
  assert.equal(systemOfFunction('github.com/jackc/pgx/v5/stdlib.(*driverConnector).Connect'), 'postgresql');
  assert.equal(systemOfFunction('github.com/lib/pq.(*Connector).Connect'), 'postgresql');
  assert.equal(systemOfFunction('modernc.org/sqlite.(*Driver).Open'), 'sqlite');
  assert.equal(systemOfFunction('github.com/go-sql-driver/mysql.(*connector).Connect'), 'mysql');
  assert.equal(systemOfFunction('example.com/mydriver.(*Conn).Begin'), 'other_sql');
  assert.equal(systemOfFunction(undefined), 'other_sql');
  assert.equal(receiverType('github.com/jackc/pgx/v5/pgconn.(*PgError).Error'), '*github.com/jackc/pgx/v5/pgconn.PgError');
  assert.equal(receiverType('github.com/lib/pq.Error.Error'), 'github.com/lib/pq.Error');
  assert.equal(receiverType('errors.(*errorString).Error'), '*errors.errorString');
  assert.equal(receiverType('main.main'), undefined);
});
