/**
 * End to end: the commands of a real go-redis v9 client
 * (test/programs/redis-client, go-redis v9.7.3 and v9.23.0, every Go
 * toolchain here that builds it, stripped and not) against a real Redis
 * server make exactly one CLIENT span each, and one per pipeline and per
 * transaction, under concurrency: children of the HTTP request that ran
 * them, with the conventions' attributes; redis.Nil is no error, an error
 * reply and a refused connection are; no argument's value is in any span,
 * with `--db-query-text` off or on.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ReceivedSpan } from '../../../../../support/collector.ts';
import { tracedCollector, type TracedCollector } from '../../../../../support/traced-collector.ts';
import { httpRequest, startGoServer } from '../../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../../support/privileges.ts';
import { freePort, startRedis, type RedisServer } from '../../../../../support/servers/redis.ts';
import { BUILD_ROOT, GO_REDIS_VERSIONS, redisClientBinary, toolchains, type GoToolchain } from './build.ts';

const skip = skipUnlessBpf();
const CONCURRENT = 40;
const DB = 3;
/** Literals and keys the program sends: none may appear in any span. */
const SECRETS = ['secret-string-literal', '918273645', 'secret-list-element', 'k:', 'w:'];
/** The redis spans one /ops request makes, in order, as children of its SERVER span. */
const OPS = ['set', 'get', 'get', 'rpush', 'BATCH', 'MULTI'];
const OPS_TEXT = ['set ? ? ? ?', 'get ?', 'get ?', 'rpush ? ? ?', 'incr ?\nincrby ? ?\nget ?', 'multi\nincr ?\nexpire ? ?\nexec'];

let redis: RedisServer | undefined;
before(async () => {
  if (!skip) redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

interface Run {
  spans: ReceivedSpan[];
  servers: ReceivedSpan[];
  refusedPort: number;
}

/** Runs the program's requests: CONCURRENT /ops at once, one /wrongtype, one /refused; returns the process's spans once all arrived. */
async function runClient(traced: TracedCollector, binary: string): Promise<Run> {
  const refusedPort = await freePort();
  const proc = await startGoServer(binary, [], { REDIS_ADDR: redis!.addr, REDIS_DB: String(DB), REDIS_REFUSED_ADDR: `127.0.0.1:${refusedPort}` });
  try {
    await traced.agent.waitTraced(proc.pid);
    const results = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => httpRequest(`${proc.url}/ops?id=${i}`)));
    for (const r of results) assert.equal(r.status, 200, r.body);
    const wrong = await httpRequest(`${proc.url}/wrongtype?id=1`);
    assert.match(wrong.body, /^WRONGTYPE/);
    const refused = await httpRequest(`${proc.url}/refused`);
    assert.match(refused.body, /connection refused/);
    const servers = await traced.spansOf(proc.pid, 'SERVER', CONCURRENT + 2, 'one SERVER span per HTTP request');
    const serverIds = new Set(servers.map((s) => s.spanId));
    // the test's own commands are the children of its requests; the
    // connections' set-up commands are children of those
    const mine = (all: ReceivedSpan[]): ReceivedSpan[] =>
      all.filter((s) => s.resource['process.pid'] === proc.pid && s.kind === 'CLIENT' && serverIds.has(s.parentSpanId));
    const expected = CONCURRENT * OPS.length + 2 + 1; // /wrongtype: set, lpush; /refused: get
    await traced.collector.waitForSpans((all) => mine(all).length >= expected, 20_000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1000));
    const spans = (await traced.collector.spans()).filter((s) => s.resource['process.pid'] === proc.pid && s.kind === 'CLIENT');
    if (mine(spans).length !== expected) {
      const count = (names: string[]): Record<string, number> => Object.fromEntries([...new Set(names)].map((n) => [n, names.filter((x) => x === n).length]));
      const others = spans.filter((s) => !serverIds.has(s.parentSpanId)).map((s) => `${s.name}<-${spans.find((p) => p.spanId === s.parentSpanId)?.name ?? s.parentSpanId}`);
      const counters = (await fetch(await traced.agent.metricsUrl()).then((r) => r.text())).split('\n').filter((l) => /^gotrail_(events|spans)_/.test(l)).join('\n');
      assert.fail(`one CLIENT span per command, pipeline and transaction: expected ${expected}, got ${mine(spans).length}: ` +
        `${JSON.stringify(count(mine(spans).map((s) => s.name)))}; not children of a request: ${JSON.stringify(count(others))}\n${counters}`);
    }
    return { spans, servers, refusedPort };
  } finally {
    await proc.stop();
  }
}

function assertNoSecrets(spans: ReceivedSpan[]): void {
  for (const s of spans) {
    const text = JSON.stringify([s.name, s.attributes, s.events]);
    for (const secret of SECRETS) assert.ok(!text.includes(secret), `${secret} appears in span ${s.name}: ${text}`);
  }
}

describe('github.com/redis/go-redis/v9: one CLIENT span per command and pipeline', { skip }, () => {
  const traced = tracedCollector(['--include-exe', `${BUILD_ROOT}/**`]);

  for (const { version, needsGo } of GO_REDIS_VERSIONS) {
    for (const tc of toolchains()) {
      for (const stripped of [false, true]) {
        test(`go-redis v${version}, ${tc.version}${stripped ? ', stripped' : ''}: ${CONCURRENT} concurrent requests, errors, parents`, async (t) => {
          const b = redisClientBinary(version, needsGo, tc, stripped);
          if ('skip' in b) return t.skip(b.skip);
          const { spans, servers, refusedPort } = await runClient(traced, b.binary);
          const byId = new Map(spans.map((s) => [s.spanId, s]));

          // every /ops request: its six spans, in order, as its children
          const ops = servers.filter((s) => s.attributes['url.path'] === '/ops');
          assert.equal(ops.length, CONCURRENT);
          for (const h of ops) {
            const children = spans.filter((s) => s.parentSpanId === h.spanId).sort((a, b) => Number(a.startTimeUnixNano - b.startTimeUnixNano));
            assert.deepEqual(children.map((s) => s.name), OPS, 'the request\'s commands, each its child');
            for (const s of children) {
              assert.equal(s.traceId, h.traceId);
              assert.equal(s.attributes['db.system.name'], 'redis');
              assert.equal(s.attributes['db.operation.name'], s.name);
              assert.equal(s.attributes['db.namespace'], String(DB));
              assert.equal(s.attributes['server.address'], '127.0.0.1');
              assert.equal(s.attributes['server.port'], redis!.port);
              assert.equal(s.attributes['db.query.text'], undefined, 'no query text unless asked for');
              assert.equal(s.status.code, 'UNSET', `${s.name}: no error (a missing key, redis.Nil, is none)`);
              assert.equal(s.attributes['error.type'], undefined);
              assert.ok(s.endTimeUnixNano >= s.startTimeUnixNano && s.startTimeUnixNano >= h.startTimeUnixNano && s.endTimeUnixNano <= h.endTimeUnixNano);
            }
            assert.equal(children[4]!.attributes['db.operation.batch.size'], 3, 'the pipeline of three commands');
            assert.equal(children[5]!.attributes['db.operation.batch.size'], 2, 'the transaction of two commands');
            assert.equal(children[0]!.attributes['db.operation.batch.size'], undefined);
          }
          // an error reply
          const wrong = servers.find((s) => s.attributes['url.path'] === '/wrongtype')!;
          const lpush = spans.filter((s) => s.parentSpanId === wrong.spanId && s.name === 'lpush');
          assert.equal(lpush.length, 1);
          assert.equal(lpush[0]!.status.code, 'ERROR');
          assert.equal(lpush[0]!.attributes['error.type'], 'WRONGTYPE');
          assert.equal(lpush[0]!.attributes['db.response.status_code'], 'WRONGTYPE');
          // a refused connection
          const refusedReq = servers.find((s) => s.attributes['url.path'] === '/refused')!;
          const refused = spans.filter((s) => s.parentSpanId === refusedReq.spanId);
          assert.deepEqual(refused.map((s) => s.name), ['get']);
          assert.equal(refused[0]!.status.code, 'ERROR');
          assert.equal(refused[0]!.attributes['error.type'], '_OTHER');
          assert.equal(refused[0]!.attributes['server.port'], refusedPort);
          assert.equal(refused[0]!.attributes['db.namespace'], '0');
          // connection set-up (HELLO, SELECT, …): children of the command that dialed
          const setup = spans.filter((s) => !servers.some((h) => h.spanId === s.parentSpanId));
          assert.ok(setup.length > 0, 'new connections send set-up commands');
          for (const s of setup) {
            const parent = byId.get(s.parentSpanId);
            assert.ok(parent && parent.attributes['db.system.name'] === 'redis', `${s.name}: child of the command that needed a connection`);
            assert.equal(s.traceId, parent.traceId);
          }
          assertNoSecrets(spans);
        });
      }
    }
  }
});

describe('github.com/redis/go-redis/v9 with --db-query-text: sanitised commands', { skip }, () => {
  const traced = tracedCollector(['--include-exe', `${BUILD_ROOT}/**`, '--db-query-text']);
  for (const { version, needsGo } of GO_REDIS_VERSIONS) {
    test(`go-redis v${version}: db.query.text has the commands, every argument a ?`, async (t) => {
      const tc = toolchains().find((x: GoToolchain) => x.version.startsWith('go1.26'))!;
      const b = redisClientBinary(version, needsGo, tc, false);
      if ('skip' in b) return t.skip(b.skip);
      const { spans, servers } = await runClient(traced, b.binary);
      for (const h of servers.filter((s) => s.attributes['url.path'] === '/ops')) {
        const children = spans.filter((s) => s.parentSpanId === h.spanId).sort((a, b) => Number(a.startTimeUnixNano - b.startTimeUnixNano));
        assert.deepEqual(children.map((s) => s.attributes['db.query.text']), OPS_TEXT);
      }
      assertNoSecrets(spans);
    });
  }
});
