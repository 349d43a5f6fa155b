/**
 * The go-redis event → span mapping, on hand-built events encoded with the
 * generated layout (redis.e2e.test.ts covers the real probe).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { goRedisProbe, operationName, redisErrorPrefix, sanitisedCommand } from '../../../../../../daemon/probes/go/github.com/redis/go-redis/v9/descriptor.ts';
import { encodeRedisEvent, EventType, REDIS_EVENT_SIZE, RedisEventFlags, RedisLimits, SpanFlags } from '../../../../../../daemon/generated/layouts.ts';
import { runProbeEvent } from '../../../../../support/probe-event.ts';

function event(o: { cmds: Array<[string, number]>; count?: number; flags?: number; db?: number; addr?: string; err?: string }): Buffer {
  const names = Buffer.alloc(RedisLimits.GT_REDIS_CMDS_MAX * RedisLimits.GT_REDIS_NAME_MAX);
  const argc = Buffer.alloc(RedisLimits.GT_REDIS_CMDS_MAX);
  const nameLen = Buffer.alloc(RedisLimits.GT_REDIS_CMDS_MAX);
  o.cmds.slice(0, RedisLimits.GT_REDIS_CMDS_MAX).forEach(([name, n], i) => {
    names.write(name.slice(0, RedisLimits.GT_REDIS_NAME_MAX), i * RedisLimits.GT_REDIS_NAME_MAX);
    argc[i] = n;
    nameLen[i] = name.length;
  });
  const addr = o.addr ?? '127.0.0.1:6379';
  const err = o.err ?? '';
  const buf = Buffer.alloc(REDIS_EVENT_SIZE + 8);
  encodeRedisEvent({
    hdr: { type: EventType.GT_EVENT_REDIS, size: REDIS_EVENT_SIZE, tgid: 42, binary_id: 1, cpu: 0, goid: 7n },
    start_ns: 1_000_000_000n,
    end_ns: 1_000_300_000n,
    span: {
      trace_id: Buffer.from('4bf92f3577b34da6a3ce929d0e0e4736', 'hex'),
      span_id: Buffer.from('a1b2c3d4e5f60718', 'hex'),
      parent_span_id: Buffer.from('00f067aa0ba902b7', 'hex'),
      flags: SpanFlags.GT_SPAN_SAMPLED | SpanFlags.GT_SPAN_HAS_PARENT,
      reserved: 0,
    },
    db: BigInt(o.db ?? 0),
    flags: (o.flags ?? 0) | RedisEventFlags.GT_REDIS_EVENT_DB | (o.err !== undefined ? RedisEventFlags.GT_REDIS_EVENT_ERROR : 0),
    cmd_count: o.count ?? o.cmds.length,
    addr_len: addr.length,
    err_len: err.length,
    argc,
    name_len: nameLen,
    names,
    addr: Buffer.from(addr.padEnd(RedisLimits.GT_REDIS_ADDR_MAX, '\0')),
    err: Buffer.from(err.padEnd(RedisLimits.GT_REDIS_ERROR_MAX, '\0').slice(0, RedisLimits.GT_REDIS_ERROR_MAX)),
  }, buf, 8);
  return buf;
}

function run(buf: Buffer, dbQueryText = false): { span: ReadableSpan; problems: string[] } {
  const { spans, problems } = runProbeEvent(goRedisProbe, buf, { dbQueryText });
  assert.equal(spans.length, 1);
  return { span: spans[0]!, problems };
}

test('a command becomes one CLIENT span with the database conventions\' attributes, no query text by default', () => {
  const { span, problems } = run(event({ cmds: [['get', 2]], db: 3, addr: 'cache.example:6380' }));
  assert.deepEqual(problems, []);
  assert.equal(span.kind, SpanKind.CLIENT);
  assert.equal(span.name, 'get');
  assert.deepEqual(span.attributes, {
    'db.system.name': 'redis', 'db.operation.name': 'get', 'db.namespace': '3', 'server.address': 'cache.example', 'server.port': 6380,
  });
  assert.equal(span.status.code, SpanStatusCode.UNSET);
  assert.equal(span.parentSpanContext?.spanId, '00f067aa0ba902b7');
});

test('with --db-query-text: the command with one ? per argument', () => {
  assert.equal(run(event({ cmds: [['set', 5]] }), true).span.attributes['db.query.text'], 'set ? ? ? ?');
  assert.equal(sanitisedCommand({ name: 'ping', argc: 1 }), 'ping');
  assert.equal(sanitisedCommand({ name: '', argc: 2 }), '? ?');
});

test('redis.Nil is no error; an error reply is, with its prefix; any other error is _OTHER', () => {
  assert.equal(run(event({ cmds: [['get', 2]], err: 'redis: nil' })).span.status.code, SpanStatusCode.UNSET);
  const wrong = run(event({ cmds: [['lpush', 3]], err: 'WRONGTYPE Operation against a key holding the wrong kind of value' })).span;
  assert.equal(wrong.status.code, SpanStatusCode.ERROR);
  assert.equal(wrong.attributes['error.type'], 'WRONGTYPE');
  assert.equal(wrong.attributes['db.response.status_code'], 'WRONGTYPE');
  const dial = run(event({ cmds: [['get', 2]], err: 'dial' })).span;
  assert.equal(dial.status.code, SpanStatusCode.ERROR);
  assert.equal(dial.attributes['error.type'], '_OTHER');
  assert.equal(dial.attributes['db.response.status_code'], undefined);
  // a message that only starts like redis.Nil is an error
  assert.equal(run(event({ cmds: [['get', 2]], err: 'redis: nil pointer' })).span.status.code, SpanStatusCode.ERROR);
  assert.equal(redisErrorPrefix('ERR unknown command'), 'ERR');
  assert.equal(redisErrorPrefix('redis: client is closed'), undefined);
});

test('pipelines: BATCH <command> when all are one command, else BATCH; a transaction is MULTI, its batch what lies between MULTI and EXEC', () => {
  const same = run(event({ cmds: [['get', 2], ['get', 2], ['get', 2]], flags: RedisEventFlags.GT_REDIS_EVENT_PIPELINE }), true).span;
  assert.equal(same.name, 'BATCH get');
  assert.equal(same.attributes['db.operation.batch.size'], 3);
  assert.equal(same.attributes['db.query.text'], 'get ?\nget ?\nget ?');
  const mixed = run(event({ cmds: [['incr', 2], ['get', 2]], flags: RedisEventFlags.GT_REDIS_EVENT_PIPELINE })).span;
  assert.equal(mixed.name, 'BATCH');
  const tx = run(event({ cmds: [['multi', 1], ['incr', 2], ['exec', 1]], flags: RedisEventFlags.GT_REDIS_EVENT_PIPELINE | RedisEventFlags.GT_REDIS_EVENT_TX })).span;
  assert.equal(tx.name, 'MULTI');
  assert.equal(tx.attributes['db.operation.batch.size'], 1);
  // more commands than the probe reads names of: only BATCH, and the text says it is cut
  const long = run(event({ cmds: Array.from({ length: 8 }, () => ['get', 2] as [string, number]), count: 20, flags: RedisEventFlags.GT_REDIS_EVENT_PIPELINE }), true).span;
  assert.equal(long.name, 'BATCH');
  assert.equal(long.attributes['db.operation.batch.size'], 20);
  assert.match(String(long.attributes['db.query.text']), /\n…$/);
  assert.equal(operationName([], 1, false, false), undefined);
});
