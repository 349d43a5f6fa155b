/**
 * The real servers the database and messaging tests start work with real
 * Go clients: Redis (Debian's redis-server) and an Apache Kafka broker
 * (KRaft, one node, from Maven Central's jars on Java 17), each on
 * loopback with its data in a temporary directory removed on stop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../agent-process.ts';
import { httpRequest, startGoServer } from '../go-server.ts';
import { kafkaSkipReason, startKafka } from './kafka.ts';
import { startRedis } from './redis.ts';

const run = promisify(execFile);
const KAFKA_CLIENT = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'kafka-client');

test('the Kafka broker takes a kafka-go Writer\'s messages, a Reader in a consumer group reads them back, a missing topic is refused', {
  skip: kafkaSkipReason() ?? (existsSync(KAFKA_CLIENT) ? false : `needs ${KAFKA_CLIENT}: run bash deploy/setup.sh`),
  timeout: 240_000,
}, async () => {
  const kafka = await startKafka();
  const client = await startGoServer(KAFKA_CLIENT, [], { KAFKA_BOOTSTRAP: kafka.bootstrap });
  try {
    assert.equal((await httpRequest(`${client.url}/create?topic=orders`)).status, 200);
    // the topic's leader may take a moment to be known after its creation
    let written = await httpRequest(`${client.url}/produce?topic=orders&n=20&id=k`);
    for (let i = 0; i < 50 && written.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 200));
      written = await httpRequest(`${client.url}/produce?topic=orders&n=20&id=k`);
    }
    assert.equal(written.body, 'written 20');
    const read = (await httpRequest(`${client.url}/consume?topic=orders&group=orders-group&n=20`)).body.split('\n');
    assert.equal(read[0], 'read 20');
    assert.deepEqual(read.slice(1), Array.from({ length: 20 }, (_, i) => `k-${i}`));
    assert.match((await httpRequest(`${client.url}/missing?topic=orders-missing`)).body, /^missing topic: .*Unknown Topic Or Partition/i);
  } finally {
    await client.stop();
    await kafka.stop();
  }
});

test('redis-server answers and leaves nothing behind', async () => {
  const redis = await startRedis();
  const { stdout } = await run('/usr/bin/redis-cli', ['-p', String(redis.port), 'PING']).catch(() => ({ stdout: 'PONG (no redis-cli)' }));
  assert.match(stdout, /PONG/);
  await redis.stop();
  assert.equal(redis.child.exitCode !== null || redis.child.signalCode !== null, true);
});
