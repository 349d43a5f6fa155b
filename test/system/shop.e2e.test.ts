/**
 * End to end, a system of three traced processes on one node with real
 * PostgreSQL, Redis and Kafka servers (test/programs/shop, built with every
 * Go toolchain here, stripped and not):
 *
 *   front:    HTTP SERVER → gRPC CLIENT
 *     orders:   gRPC SERVER → SQL CLIENT (pgx), Redis CLIENT (incr), Kafka PRODUCER
 *       consumer: Kafka CONSUMER → Redis CLIENT (set)
 *
 * Each of N concurrent front-end requests, made while other processes keep
 * both cores busy, must make one trace holding every span above once, each
 * the child of the one drawn before it: the gRPC hop is linked on the node
 * by connection and HTTP/2 stream, the Kafka hop by the message's topic,
 * partition and offset, and nothing is written into any program. Concurrent
 * calls share one gRPC connection, one pool of SQL and Redis connections
 * and one Kafka writer, so a crossed link shows as a wrong parent. The
 * consumer reads concurrently, as a real one does: it long-polls the topic
 * from before the first order, so it often gets a message before the writer
 * has the broker's answer (and its offset) — linked then by the message's
 * content while its batch is in flight.
 *
 * The Kafka spans come from the segmentio/kafka-go probes: without them in
 * the registry, the test asserts the rest and says so.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { attributeText, type ReceivedSpan } from '../support/collector.ts';
import { freshCopy, tracedCollector } from '../support/traced-collector.ts';
import { httpRequest, startGoServer, type GoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startBusyLoad } from '../support/busy.ts';
import { postgresBinDir, startPostgres, type PostgresServer } from '../support/servers/postgres.ts';
import { startRedis, type RedisServer } from '../support/servers/redis.ts';
import { kafkaSkipReason, startKafka, type KafkaBroker } from '../support/servers/kafka.ts';
import { probes } from '../../daemon/probes/registry.ts';

const pgBin = postgresBinDir();
const skip = skipUnlessBpf() || (typeof pgBin !== 'string' && pgBin.skip) || kafkaSkipReason() || false;
const REQUESTS = 12;
/**
 * The builds the system runs as: every toolchain here, each with its own
 * runtime and ABI under the probes, plain (every offset from DWARF) and
 * stripped (every offset from the Go type metadata). Go 1.26 and 1.27 build
 * test/programs/shop; Go 1.19 builds the same code with the newest module
 * versions it can (test/programs/shop-go119: grpc v1.64.1, pgx v5.4.3).
 * Servers and agent are shared; each build adds 5–10 s.
 */
const BUILDS = [
  ['go1.19', 'plain', 'shop-go119'],
  ['go1.19', 'stripped', 'shop-go119'],
  ['go1.26', 'plain', 'shop'],
  ['go1.26', 'stripped', 'shop'],
  ['go1.27', 'plain', 'shop'],
  ['go1.27', 'stripped', 'shop'],
] as const;
const COPIES = join(repoRoot, 'build', 'test', 'shop');
/** Whether the registry has the Kafka probes (writer and reader). */
const KAFKA_PROBES = probes.some((p) => p.goPackage.startsWith('github.com/segmentio/kafka-go'));
/** How long a started service may take to set up its table and topic (ms). */
const READY_MS = 60_000;

/** Resolves with the first capture of `re` in the server's standard output. */
function waitForLine(server: GoServer, re: RegExp, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no ${re} in ${ms} ms: ${out}`)), ms);
    server.child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = re.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  });
}

/** Polls `cond` every 100 ms until it holds; fails with `what` after `ms`. */
async function waitFor(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    assert.ok(Date.now() < deadline, `${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a system with databases, a cache and a queue: HTTP → gRPC → SQL, Redis, Kafka → consumer, one trace per request', { skip }, () => {
  let pg: PostgresServer | undefined;
  let redis: RedisServer | undefined;
  let kafka: KafkaBroker | undefined;
  before(async () => {
    [pg, redis, kafka] = await Promise.all([startPostgres(), startRedis(), startKafka()]);
  });
  after(async () => {
    await Promise.all([pg?.stop(), redis?.stop(), kafka?.stop()]);
  });
  const traced = tracedCollector(['--include-exe', `${COPIES}/**`]);

  // the agent's Kafka link counters are cumulative: each build is judged by what it added
  const links = async (outcome: string): Promise<number> => Number(await traced.metric(new RegExp(`^gotrail_kafka_links_total\\{outcome="${outcome}"\\} (\\d+)`, 'm')) ?? 0);
  const LINK_OUTCOMES = ['found', 'found_by_content', 'not_found', 'ambiguous', 'expired'] as const;
  const linkCounts = async (): Promise<Record<string, number>> => Object.fromEntries(await Promise.all(LINK_OUTCOMES.map(async (o) => [o, await links(o)] as const)));

  for (const [toolchain, variant, program] of BUILDS) test(`${program}, ${toolchain} ${variant}: ${REQUESTS} concurrent orders on a busy machine: each one trace with every span and correct parents`, async (t) => {
    if (!KAFKA_PROBES) t.diagnostic('no Kafka probes in the registry: the PRODUCER and CONSUMER spans and the consumer\'s calls are not asserted');
    const bin = freshCopy(COPIES, toolchain, variant, program);
    const topic = `orders-${process.pid}-${toolchain}-${variant}`;
    const linksBefore: Record<string, number> = KAFKA_PROBES ? await linkCounts() : {};
    const common = ['-redis', redis!.addr, '-kafka', kafka!.bootstrap, '-topic', topic];
    const orders = await startGoServer(bin, ['-mode', 'orders', '-pg', pg!.url, ...common]);
    const started: GoServer[] = [orders];
    const busy = startBusyLoad();
    try {
      const grpcAddr = await waitForLine(orders, /grpc on (\S+)/, READY_MS);
      const consumer = await startGoServer(bin, ['-mode', 'consumer', ...common]);
      started.push(consumer);
      const front = await startGoServer(bin, ['-mode', 'front', '-orders', grpcAddr]);
      started.push(front);
      for (const p of started) await traced.agent.waitTraced(p.pid);

      const results = await Promise.all(Array.from({ length: REQUESTS }, (_, i) => httpRequest(`${front.url}/order?id=${i}`)));
      for (const r of results) assert.equal(r.status, 200, r.body);
      const handled = async (): Promise<number> => Number((await httpRequest(consumer.url)).body.trim());
      await waitFor(async () => (await handled()) >= REQUESTS, 30_000, `the consumer handled ${REQUESTS} orders`);
      assert.equal(await handled(), REQUESTS, 'the consumer handled each order once');

      // the front end's request spans name the traces; everything else is found by trace
      const frontServed = await traced.spansOf(front.pid, 'SERVER', REQUESTS, 'one HTTP SERVER span per order');
      const traces = new Set(frontServed.map((s) => s.traceId));
      assert.equal(traces.size, REQUESTS, 'each order has its own trace');
      const perTrace = 2 + 1 + 2 + (KAFKA_PROBES ? 1 + 2 : 0);
      const inTraces = (all: ReceivedSpan[]): ReceivedSpan[] => all.filter((s) => traces.has(s.traceId));
      // redis connection set-up commands (HELLO, …) are extra children of the command that dialed
      const counted = (s: ReceivedSpan): boolean => !(s.attributes['db.system.name'] === 'redis' && !['incr', 'set'].includes(attributeText(s.attributes['db.operation.name'])));
      await traced.collector.waitForSpans((all) => inTraces(all).filter(counted).length >= REQUESTS * perTrace, 30_000).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1000));
      const spans = inTraces(await traced.collector.spans());
      const byId = new Map(spans.map((s) => [s.spanId, s]));
      const of = (pid: number, kind: string, pred: (s: ReceivedSpan) => boolean = () => true): ReceivedSpan[] =>
        spans.filter((s) => s.resource['process.pid'] === pid && s.kind === kind && pred(s));
      const childOf = (s: ReceivedSpan, parents: ReceivedSpan[], what: string): ReceivedSpan => {
        const p = byId.get(s.parentSpanId);
        assert.ok(p && parents.includes(p), `${what}: ${s.name}'s parent is ${p ? `${p.name} (${p.kind}, pid ${attributeText(p.resource['process.pid'])})` : `missing (${s.parentSpanId || 'a root'})`}`);
        assert.equal(p.traceId, s.traceId);
        return p;
      };

      const frontCalls = of(front.pid, 'CLIENT');
      const served = of(orders.pid, 'SERVER');
      const queries = of(orders.pid, 'CLIENT', (s) => s.attributes['db.system.name'] === 'postgresql');
      const incrs = of(orders.pid, 'CLIENT', (s) => s.attributes['db.system.name'] === 'redis' && s.attributes['db.operation.name'] === 'incr');
      const setUp = of(orders.pid, 'CLIENT', (s) => s.attributes['db.system.name'] === 'redis' && !incrs.includes(s));
      const orderCalls = of(orders.pid, 'CLIENT');
      assert.equal(frontCalls.length, REQUESTS, 'one gRPC CLIENT span per order in the front end');
      assert.equal(served.length, REQUESTS, 'one gRPC SERVER span per order in the orders service');
      assert.equal(queries.length, REQUESTS, 'one SQL CLIENT span per order');
      assert.equal(incrs.length, REQUESTS, 'one Redis CLIENT span (incr) per order');
      assert.equal(orderCalls.length, queries.length + incrs.length + setUp.length, 'no other CLIENT span in the orders service');

      for (const c of frontCalls) {
        assert.equal(c.name, 'shop.Orders/Place');
        childOf(c, frontServed, 'the gRPC call');
      }
      for (const s of served) {
        assert.equal(s.name, 'shop.Orders/Place');
        assert.equal(s.attributes['rpc.grpc.status_code'], 0);
        childOf(s, frontCalls, 'the gRPC SERVER span');
      }
      for (const q of queries) {
        assert.equal(q.name, 'SELECT items');
        assert.equal(q.attributes['db.operation.name'], 'SELECT');
        // read from the DSN the orders service opened its *sql.DB with
        assert.equal(q.attributes['db.namespace'], pg!.database);
        assert.equal(q.attributes['server.address'], pg!.host);
        assert.equal(q.attributes['server.port'], pg!.port);
        assert.equal(q.status.code, 'UNSET');
        childOf(q, served, 'the SQL query');
      }
      for (const r of incrs) {
        assert.equal(r.attributes['server.address'], '127.0.0.1');
        assert.equal(r.attributes['server.port'], redis!.port);
        childOf(r, served, 'the Redis incr');
      }
      for (const r of setUp) childOf(r, incrs, 'a Redis connection set-up command');

      if (KAFKA_PROBES) {
        // every read linked to its producer: by offset, or by content when read before the writer had the broker's answer
        const linksAfter = await linkCounts();
        const outcomes = Object.fromEntries(LINK_OUTCOMES.map((o) => [o, linksAfter[o]! - linksBefore[o]!]));
        t.diagnostic(`Kafka links: ${JSON.stringify(outcomes)}`);
        assert.deepEqual({ ...outcomes, linked: outcomes.found! + outcomes.found_by_content! }, { ...outcomes, linked: REQUESTS, not_found: 0, ambiguous: 0, expired: 0 }, 'each order\'s read linked once');
        const produced = of(orders.pid, 'PRODUCER');
        const consumed = of(consumer.pid, 'CONSUMER');
        const marks = of(consumer.pid, 'CLIENT', (s) => s.attributes['db.operation.name'] === 'set');
        const consumerSetUp = of(consumer.pid, 'CLIENT', (s) => !marks.includes(s));
        assert.equal(produced.length, REQUESTS, 'one Kafka PRODUCER span per order');
        assert.equal(consumed.length, REQUESTS, 'one Kafka CONSUMER span per order');
        assert.equal(marks.length, REQUESTS, 'one Redis CLIENT span (set) per order in the consumer');
        for (const p of produced) {
          assert.equal(p.attributes['messaging.system'], 'kafka');
          assert.equal(p.attributes['messaging.destination.name'], topic);
          childOf(p, served, 'the Kafka write');
        }
        for (const c of consumed) {
          assert.equal(c.attributes['messaging.system'], 'kafka');
          assert.equal(c.attributes['messaging.destination.name'], topic);
          childOf(c, produced, 'the Kafka read');
        }
        for (const m of marks) childOf(m, consumed, "the consumer's Redis set");
        for (const r of consumerSetUp) childOf(r, marks, 'a Redis connection set-up command in the consumer');
      }

      // and, per trace, the whole chain: every span of the trace accounted for
      for (const root of frontServed) {
        assert.equal(root.parentSpanId, '', 'the front end request starts the trace');
        const mine = spans.filter((s) => s.traceId === root.traceId && counted(s));
        assert.equal(mine.length, perTrace, `trace ${root.traceId}: ${mine.map((s) => `${s.kind} ${s.name}`).join(', ')}`);
      }
    } finally {
      await busy.stop();
      for (const p of started.reverse()) await p.stop();
    }
  });
});
