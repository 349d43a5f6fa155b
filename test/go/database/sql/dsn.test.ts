/**
 * PostgreSQL DSNs → db.namespace, server.address, server.port: the URL and
 * keyword forms pgx and lib/pq accept, Unix sockets, what is left out, and
 * the reading of a Go string from a live process's memory (this process's).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePostgresDsn, withGoString, DSN_MAX } from '../../../../daemon/probes/go/database/sql/dsn.ts';

const parse = (dsn: string): ReturnType<typeof parsePostgresDsn> => parsePostgresDsn(Buffer.from(dsn));

test('URL form: host, port and database; user and password skipped', () => {
  assert.deepEqual(parse('postgres://alice:s3cret@db.example.com:6543/orders?sslmode=disable'), { namespace: 'orders', address: 'db.example.com', port: 6543 });
  assert.deepEqual(parse('postgresql://127.0.0.1/orders'), { namespace: 'orders', address: '127.0.0.1' }, 'no port: the default, left out');
  assert.deepEqual(parse('POSTGRES://u:p%40ss@h:5432/my%20db'), { namespace: 'my db', address: 'h', port: 5432 });
  assert.deepEqual(parse('postgres://u:p@[::1]:5433/d'), { namespace: 'd', address: '::1', port: 5433 });
  assert.deepEqual(parse('postgres://u:a@b@h:1/d'), { namespace: 'd', address: 'h', port: 1 }, 'the user information ends at the last @');
});

test('URL form: query parameters override; a Unix socket directory gives the socket path and no port', () => {
  assert.deepEqual(parse('postgres:///orders?host=/var/run/postgresql&port=5433'), { namespace: 'orders', address: '/var/run/postgresql/.s.PGSQL.5433' });
  assert.deepEqual(parse('postgres://%2Ftmp%2F/orders'), { namespace: 'orders', address: '/tmp/.s.PGSQL.5432' });
  assert.deepEqual(parse('postgres://h/a?dbname=b&password=x&port=7'), { namespace: 'b', address: 'h', port: 7 });
});

test('keyword form, quoted and escaped values', () => {
  assert.deepEqual(parse('host=10.0.0.5 port=5439 dbname=orders user=alice password=s3cret sslmode=disable'), { namespace: 'orders', address: '10.0.0.5', port: 5439 });
  assert.deepEqual(parse("  password = 'a b\\' c'  dbname='my \\'db\\'' host = h  "), { namespace: "my 'db'", address: 'h' });
  assert.deepEqual(parse('host=/run/postgresql dbname=x'), { namespace: 'x', address: '/run/postgresql/.s.PGSQL.5432' });
  assert.deepEqual(parse('dbname=x'), { namespace: 'x' }, 'no host: the driver\'s default, left out');
});

test('search_path: db.namespace {database}|{schema}, its first schema, not $user', () => {
  assert.deepEqual(parse('postgres://h/orders?search_path=sales,public'), { namespace: 'orders|sales', address: 'h' });
  assert.deepEqual(parse("dbname=orders search_path='\"Sales\", public'"), { namespace: 'orders|Sales' });
  assert.deepEqual(parse('dbname=orders search_path=$user,public'), { namespace: 'orders' });
  assert.deepEqual(parse('search_path=sales'), {}, 'a schema without its database names nothing');
});

test('several hosts: the first configured one, the port only when all share it', () => {
  assert.deepEqual(parse('postgres://u@h1:5432,h2:5433/d'), { namespace: 'd', address: 'h1' });
  assert.deepEqual(parse('postgres://u@h1:6000,h2:6000/d'), { namespace: 'd', address: 'h1', port: 6000 });
  assert.deepEqual(parse('host=h1,h2 port=6000 dbname=d'), { namespace: 'd', address: 'h1', port: 6000 });
  assert.deepEqual(parse('host=h1,h2 port=6000,6001 dbname=d'), { namespace: 'd', address: 'h1' });
});

test('bad ports and other strings: only what is certain', () => {
  assert.deepEqual(parse('host=h port=99999 dbname=d'), { namespace: 'd', address: 'h' });
  assert.deepEqual(parse('host=h port=x'), { address: 'h' });
  assert.deepEqual(parse('host=/run/pg port=x'), {}, 'a socket whose name cannot be told');
  assert.deepEqual(parse('registeredConnConfig0'), {}, 'pgx\'s name of a registered ConnConfig');
  assert.deepEqual(parse("host='unterminated"), {});
  assert.deepEqual(parse('user:pass@tcp(127.0.0.1:3306)/db'), {}, 'a MySQL DSN');
  assert.deepEqual(parse(''), {});
});

test('withGoString: a failure for memory it cannot read, never a throw', () => {
  assert.equal(withGoString(process.pid, 0n, () => 1), 'unreadable');
  assert.equal(withGoString(0x7ffffff0, 0x1000n, () => 1), 'unreadable', 'no such process');
  assert.ok(DSN_MAX >= 1024);
});
