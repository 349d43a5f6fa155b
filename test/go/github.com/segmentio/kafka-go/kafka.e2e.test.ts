/**
 * End to end: a real kafka-go program (test/programs/kafka-client, kafka-go
 * v0.4.47, built with every Go toolchain here, stripped and not) against a
 * real Kafka broker: one PRODUCER span per message written under
 * concurrency (messages of concurrent requests share batches), each a child
 * of the HTTP request that wrote it, with the broker's offset; a write to a
 * missing topic an error span; one CONSUMER span per message read, in
 * another process, through ReadMessage and FetchMessage, each continuing
 * the producer's trace — by the message's traceparent header where the
 * program set one, else by the producer's span published by gotrail —,
 * also for a consumer that long-polls the partition while the messages are
 * written (it gets many before their writer has the broker's answer); the
 * calls the consumer makes while handling a message its children; the
 * message key only with --kafka-message-key.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { attributeText, type ReceivedSpan } from '../../../../support/collector.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { freshCopy, tracedCollector, type TracedCollector } from '../../../../support/traced-collector.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { httpRequest, startGoServer, type GoServer } from '../../../../support/go-server.ts';
import { kafkaSkipReason, startKafka, type KafkaBroker } from '../../../../support/servers/kafka.ts';
import { startBusyLoad } from '../../../../support/busy.ts';

const skip = skipUnlessBpf() || kafkaSkipReason() || false;
const TOOLCHAINS = ['go1.19', 'go1.26', 'go1.27'] as const;
const VARIANTS = ['plain', 'stripped'] as const;
/** Concurrent /produce requests, and messages each writes in one WriteMessages call. */
const CONCURRENT = 8;
const PER_REQUEST = 5;
/** Messages written with a traceparent header the program set itself. */
const WITH_HEADER = 3;
/** Messages of a write held (in its Completion) until they have been read. */
const HELD = 4;
const HEADER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const HEADER_SPAN = '00f067aa0ba902b7';
const TRACEPARENT = `00-${HEADER_TRACE}-${HEADER_SPAN}-01`;
const copies = join(repoRoot, 'build', 'e2e-kafka');
const binPath = (tc: string, v: string): string => join(repoRoot, 'build', 'go', tc, v, 'kafka-client');

function useKafka(): () => KafkaBroker {
  let kafka: KafkaBroker | undefined;
  before(async () => {
    for (const tc of TOOLCHAINS) for (const v of VARIANTS) assert.ok(existsSync(binPath(tc, v)), `${binPath(tc, v)} missing: run bash deploy/setup.sh`);
    kafka = await startKafka();
  });
  after(async () => kafka?.stop());
  return () => kafka!;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Creates `topic` and waits until a write to it succeeds (its leader is known); returns the failed attempts (each wrote `n` error spans). */
async function produceUntilReady(p: GoServer, topic: string, id: string, n: number): Promise<number> {
  for (let failed = 0; failed < 50; failed++) {
    const r = await httpRequest(`${p.url}/produce?topic=${topic}&n=${n}&id=${id}`);
    if (r.status === 200) return failed;
    await sleep(200);
  }
  throw new Error(`${topic}: no write succeeded`);
}

interface Spans {
  all: ReceivedSpan[];
  of(pid: number, kind: string): ReceivedSpan[];
}

async function spansNow(traced: TracedCollector): Promise<Spans> {
  const all = await traced.collector.spans();
  return { all, of: (pid, kind) => all.filter((s) => s.resource['process.pid'] === pid && s.kind === kind) };
}

function assertMessaging(s: ReceivedSpan, topic: string, op: 'send' | 'receive'): void {
  assert.equal(s.name, `${op} ${topic}`);
  assert.equal(s.attributes['messaging.system'], 'kafka');
  assert.equal(s.attributes['messaging.operation.type'], op);
  assert.equal(s.attributes['messaging.destination.name'], topic);
  assert.equal(s.attributes['messaging.destination.partition.id'], '0');
  assert.equal(typeof s.attributes['messaging.kafka.offset'], 'number');
  assert.equal(s.scope.name, 'gotrail/github.com/segmentio/kafka-go');
}

describe('github.com/segmentio/kafka-go: a PRODUCER span per message written, a CONSUMER span per message read', { skip }, () => {
  const kafka = useKafka();
  const traced = tracedCollector(['--include-exe', `${copies}/**`]);

  for (const tc of TOOLCHAINS) {
    for (const v of VARIANTS) {
      test(`${tc} ${v}: ${CONCURRENT}×${PER_REQUEST} messages from concurrent requests, a missing topic, ReadMessage and FetchMessage in another process (one long-polling meanwhile) linked to them`, async (t) => {
        const topic = `orders-${tc.replace('.', '')}-${v}`;
        const producer = await startGoServer(freshCopy(copies, tc, v, 'kafka-client'), [], { KAFKA_BOOTSTRAP: kafka().bootstrap });
        const consumer = await startGoServer(freshCopy(copies, tc, v, 'kafka-client'), [], { KAFKA_BOOTSTRAP: kafka().bootstrap });
        // the links must hold on a busy machine, where the race between the
        // consumer's fetch and the producer's answer goes either way
        const busy = startBusyLoad();
        try {
          await traced.agent.waitTraced(producer.pid);
          await traced.agent.waitTraced(consumer.pid);
          assert.equal((await httpRequest(`${producer.url}/create?topic=${topic}`)).status, 200);
          const failedFirst = await produceUntilReady(producer, topic, 'first', PER_REQUEST);
          const links = async (outcome: string): Promise<number> => Number(await traced.metric(new RegExp(`^gotrail_kafka_links_total\\{outcome="${outcome}"\\} (\\d+)`, 'm')) ?? 0);
          const linksBefore = { found: await links('found'), byContent: await links('found_by_content'), notFound: await links('not_found'), ambiguous: await links('ambiguous') };
          const written = PER_REQUEST + CONCURRENT * PER_REQUEST + WITH_HEADER;
          // a consumer reading concurrently: a partition reader (no group to
          // join) that has read the first messages is long-polling when the
          // others are written
          const live = httpRequest(`${consumer.url}/consume?topic=${topic}&group=&n=${written}`);
          await traced.spansOf(consumer.pid, 'CONSUMER', PER_REQUEST, 'the live consumer read the first messages');
          const results = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => httpRequest(`${producer.url}/produce?topic=${topic}&n=${PER_REQUEST}&id=r${i}`)));
          for (const r of results) assert.equal(r.body, `written ${PER_REQUEST}`);
          assert.equal((await httpRequest(`${producer.url}/produce?topic=${topic}&n=${WITH_HEADER}&id=h&traceparent=${TRACEPARENT}`)).status, 200);
          assert.match((await httpRequest(`${producer.url}/missing?topic=${topic}-missing`)).body, /Unknown Topic Or Partition/i);
          assert.match((await live).body, new RegExp(`^read ${written}\n`));
          const read = await httpRequest(`${consumer.url}/consume?topic=${topic}&group=g-read&n=${written}&call=1`);
          assert.match(read.body, new RegExp(`^read ${written}\n`));
          const fetched = await httpRequest(`${consumer.url}/consume?topic=${topic}&group=g-fetch&n=${written}&fetch=1`);
          assert.match(fetched.body, new RegExp(`^read ${written}\n`));

          // exact counts: every message written (failed attempts included), the missing topic's one; every message read, twice
          const producerSpans = await traced.spansOf(producer.pid, 'PRODUCER', (failedFirst + 1) * PER_REQUEST + CONCURRENT * PER_REQUEST + WITH_HEADER + 1, 'one PRODUCER span per message written');
          const consumerSpans = await traced.spansOf(consumer.pid, 'CONSUMER', 3 * written, 'one CONSUMER span per message read');
          const s = await spansNow(traced);
          const requests = s.of(producer.pid, 'SERVER');
          const requestOf = (span: ReceivedSpan): ReceivedSpan | undefined => requests.find((r) => r.spanId === span.parentSpanId);

          // the concurrent requests: each is the parent of its own messages' spans
          const produced = requests.filter((r) => r.attributes['url.path'] === '/produce' && r.status.code !== 'ERROR');
          assert.equal(produced.length, 1 + CONCURRENT + 1, 'the successful /produce requests');
          const ok = producerSpans.filter((p) => p.status.code !== 'ERROR');
          assert.equal(ok.length, written);
          const headerOffsets = new Set<number>();
          for (const r of produced) {
            const children = ok.filter((p) => p.parentSpanId === r.spanId);
            // the request with a traceparent header is the one that wrote WITH_HEADER messages
            assert.ok(children.length === PER_REQUEST || children.length === WITH_HEADER, `a request's messages are its children: ${children.length}`);
            for (const p of children) {
              assert.equal(p.traceId, r.traceId);
              assertMessaging(p, topic, 'send');
              assert.equal(p.attributes['messaging.kafka.message.key'], undefined, 'no key unless asked for');
              // its end is taken when the batch's goroutine returns, which may come after the request's response
              assert.ok(p.startTimeUnixNano >= r.startTimeUnixNano, 'started within its request');
              if (children.length === WITH_HEADER) headerOffsets.add(p.attributes['messaging.kafka.offset'] as number);
            }
          }
          assert.equal(headerOffsets.size, WITH_HEADER);
          const offsets = ok.map((p) => p.attributes['messaging.kafka.offset'] as number).sort((a, b) => a - b);
          assert.deepEqual(offsets, Array.from({ length: written }, (_, i) => i), 'the broker\'s offsets, one per message');

          // the missing topic: an error span, child of its request
          const missingReq = requests.find((r) => r.attributes['url.path'] === '/missing')!;
          const missing = producerSpans.filter((p) => p.parentSpanId === missingReq.spanId);
          assert.equal(missing.length, 1);
          assert.equal(missing[0]!.name, `send ${topic}-missing`);
          assert.equal(missing[0]!.status.code, 'ERROR');
          assert.equal(missing[0]!.attributes['error.type'], 'UNKNOWN_TOPIC_OR_PARTITION');
          assert.equal(missing[0]!.attributes['messaging.kafka.offset'], undefined);
          // the first writes' failed attempts (the topic's leader not known yet) are errors of their requests too
          for (const p of producerSpans.filter((x) => x.status.code === 'ERROR' && x !== missing[0])) assert.equal(requestOf(p)?.status.code, 'ERROR');

          // the consumer: each message read continues the trace of the span that wrote it
          const byOffset = new Map(ok.map((p) => [p.attributes['messaging.kafka.offset'] as number, p]));
          for (const group of [undefined, 'g-read', 'g-fetch']) {
            const mine = consumerSpans.filter((c) => c.attributes['messaging.consumer.group.name'] === group);
            assert.equal(mine.length, written, `${group}: one span per message`);
            for (const c of mine) {
              assertMessaging(c, topic, 'receive');
              const offset = c.attributes['messaging.kafka.offset'] as number;
              const p = byOffset.get(offset);
              assert.ok(p, `offset ${offset} was written`);
              if (headerOffsets.has(offset)) {
                assert.equal(c.traceId, HEADER_TRACE, 'the traceparent header wins');
                assert.equal(c.parentSpanId, HEADER_SPAN);
              } else {
                assert.equal(c.traceId, p.traceId, `offset ${offset}: the producer's trace`);
                assert.equal(c.parentSpanId, p.spanId, `offset ${offset}: the producer's span is the parent`);
              }
            }
          }

          // while handling a message (ReadMessage, call=1) the consumer's calls are its children
          const readIds = new Set(consumerSpans.filter((c) => c.attributes['messaging.consumer.group.name'] === 'g-read').map((c) => c.spanId));
          const calls = s.of(consumer.pid, 'CLIENT').filter((c) => attributeText(c.attributes['url.full']).endsWith('/noop'));
          assert.equal(calls.length, written);
          for (const c of calls) assert.ok(readIds.has(c.parentSpanId), 'a call made while handling a message is its child');
          // every read without a header linked to its producer, by offset or (read before the writer had the offset) by content
          const found = await links('found') - linksBefore.found;
          const byContent = await links('found_by_content') - linksBefore.byContent;
          t.diagnostic(`links: ${found} by offset, ${byContent} by content`);
          assert.equal(found + byContent, 3 * (written - WITH_HEADER), 'links found counted, once per read');
          assert.equal(await links('not_found') - linksBefore.notFound, 0, 'no read without its producer');
          assert.equal(await links('ambiguous') - linksBefore.ambiguous, 0, 'no identical messages in flight');

          // a write held in its batch's goroutine (its Completion waits) until
          // its messages are read: each read before the producer has its
          // offset, linked by content — every time, not by chance
          const heldTopic = `${topic}-held`;
          assert.equal((await httpRequest(`${producer.url}/create?topic=${heldTopic}`)).status, 200);
          const heldFailed = await produceUntilReady(producer, heldTopic, 'ready', 1);
          const heldBefore = { found: await links('found'), byContent: await links('found_by_content') };
          const held = httpRequest(`${producer.url}/held?topic=${heldTopic}&n=${HELD}&id=held`);
          const heldRead = await httpRequest(`${consumer.url}/consume?topic=${heldTopic}&group=&n=${1 + HELD}`);
          assert.match(heldRead.body, new RegExp(`^read ${1 + HELD}\n`));
          assert.equal(await links('found_by_content') - heldBefore.byContent, HELD, 'the held messages: linked by content');
          assert.equal(await links('found') - heldBefore.found, 1, 'the message written before: by offset');
          await httpRequest(`${producer.url}/release`);
          assert.equal((await held).body, `written ${HELD}`);
          const allProduced = await traced.spansOf(producer.pid, 'PRODUCER', producerSpans.length + heldFailed + 1 + HELD, 'one PRODUCER span per message written');
          const heldProduced = allProduced.filter((p) => p.name === `send ${heldTopic}` && p.status.code !== 'ERROR');
          const heldConsumed = (await traced.spansOf(consumer.pid, 'CONSUMER', 3 * written + 1 + HELD, 'one CONSUMER span per message read')).filter((c) => c.name === `receive ${heldTopic}`);
          assert.equal(heldProduced.length, 1 + HELD);
          assert.equal(heldConsumed.length, 1 + HELD);
          for (const c of heldConsumed) {
            const p = heldProduced.find((x) => x.attributes['messaging.kafka.offset'] === c.attributes['messaging.kafka.offset']);
            assert.ok(p, `${heldTopic} offset ${attributeText(c.attributes['messaging.kafka.offset'])} was written`);
            assert.equal(c.traceId, p.traceId, 'the producer\'s trace');
            assert.equal(c.parentSpanId, p.spanId, 'the producer\'s span is the parent');
          }
          assert.equal(await links('not_found') - linksBefore.notFound, 0, 'no read without its producer');
        } finally {
          await busy.stop();
          await producer.stop();
          await consumer.stop();
        }
      });
    }
  }
});

describe('github.com/segmentio/kafka-go: a message whose producer gotrail did not trace', { skip }, () => {
  const kafka = useKafka();
  const traced = tracedCollector(['--include-exe', `${copies}/**`]);

  test('go1.26 plain: its CONSUMER span starts a new trace (no false link), counted as not found', async () => {
    const topic = 'untraced-producer';
    // the producer runs from set-up's build folder, which the agent does not select
    const producer = await startGoServer(binPath('go1.26', 'plain'), [], { KAFKA_BOOTSTRAP: kafka().bootstrap });
    const consumer = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'kafka-client'), [], { KAFKA_BOOTSTRAP: kafka().bootstrap });
    try {
      await traced.agent.waitTraced(consumer.pid);
      assert.equal((await httpRequest(`${producer.url}/create?topic=${topic}`)).status, 200);
      await produceUntilReady(producer, topic, 'u', 4);
      const notFound = async (): Promise<number> => Number(await traced.metric(/^gotrail_kafka_links_total\{outcome="not_found"\} (\d+)/m) ?? 0);
      const before = await notFound();
      assert.match((await httpRequest(`${consumer.url}/consume?topic=${topic}&group=g&n=4`)).body, /^read 4\n/);
      const spans = await traced.spansOf(consumer.pid, 'CONSUMER', 4, 'one CONSUMER span per message read');
      for (const c of spans) {
        assert.equal(c.parentSpanId, '', 'a root: nothing to link it to');
        assertMessaging(c, topic, 'receive');
      }
      assert.equal(new Set(spans.map((c) => c.traceId)).size, 4, 'one trace per message');
      assert.equal((await traced.collector.spans()).filter((x) => x.resource['process.pid'] === producer.pid).length, 0, 'the producer is not traced');
      assert.equal(await notFound() - before, 4);
    } finally {
      await producer.stop();
      await consumer.stop();
    }
  });
});

describe('github.com/segmentio/kafka-go with --kafka-message-key: the key on both spans', { skip }, () => {
  const kafka = useKafka();
  const traced = tracedCollector(['--include-exe', `${copies}/**`, '--kafka-message-key']);

  test('go1.26 plain: messaging.kafka.message.key on PRODUCER and CONSUMER spans', async () => {
    const topic = 'keys';
    const p = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'kafka-client'), [], { KAFKA_BOOTSTRAP: kafka().bootstrap });
    try {
      await traced.agent.waitTraced(p.pid);
      assert.equal((await httpRequest(`${p.url}/create?topic=${topic}`)).status, 200);
      const failed = await produceUntilReady(p, topic, 'k', 2);
      assert.match((await httpRequest(`${p.url}/consume?topic=${topic}&group=g&n=2`)).body, /^read 2\n/);
      const sent = (await traced.spansOf(p.pid, 'PRODUCER', 2 * (failed + 1), 'one PRODUCER span per message')).filter((x) => x.status.code !== 'ERROR');
      const received = await traced.spansOf(p.pid, 'CONSUMER', 2, 'one CONSUMER span per message');
      assert.deepEqual(sent.map((x) => x.attributes['messaging.kafka.message.key']).sort(), ['k-0', 'k-1']);
      assert.deepEqual(received.map((x) => x.attributes['messaging.kafka.message.key']).sort(), ['k-0', 'k-1']);
    } finally {
      await p.stop();
    }
  });
});
