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
import { kafkaSkipReason, startKafka } from './kafka.ts';
import { startRedis } from './redis.ts';

const run = promisify(execFile);
const KAFKA_CLIENT = join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'kafka-client');

test('the Kafka broker takes a kafka-go Writer\'s messages, a Reader in a consumer group reads them back, a missing topic is refused', {
  skip: kafkaSkipReason() ?? (existsSync(KAFKA_CLIENT) ? false : `needs ${KAFKA_CLIENT}: run bash deploy/setup.sh`),
  timeout: 240_000,
}, async () => {
  const kafka = await startKafka();
  try {
    const { stdout } = await run(KAFKA_CLIENT, [kafka.bootstrap, 'orders', '20'], { timeout: 120_000 });
    const lines = stdout.trim().split('\n');
    assert.equal(lines[0], 'written 20');
    assert.equal(lines[1], 'read 20');
    assert.match(lines[2]!, /^missing topic: .*Unknown Topic Or Partition/i);
  } finally {
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
