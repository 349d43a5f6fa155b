/**
 * The kafka-go event → span mapping, on hand-built events encoded with the
 * generated layout (kafka.e2e.test.ts covers the real probes), and the
 * error type of a failed write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { kafkaWriterProbe } from '../../../../../daemon/probes/go/github.com/segmentio/kafka-go/writer/descriptor.ts';
import { kafkaReaderProbe } from '../../../../../daemon/probes/go/github.com/segmentio/kafka-go/reader/descriptor.ts';
import { kafkaErrorType } from '../../../../../daemon/probes/go/github.com/segmentio/kafka-go/kafka.ts';
import { encodeKafkaEvent, EventType, KAFKA_EVENT_SIZE, KafkaEventFlags, KafkaLimits, SpanFlags } from '../../../../../daemon/generated/layouts.ts';
import { runProbeEvent } from '../../../../support/probe-event.ts';

function event(o: { consumer?: boolean; topic?: string; key?: string; group?: string; flags?: number; offset?: number }): Buffer {
  const topic = o.topic ?? 'orders';
  const buf = Buffer.alloc(KAFKA_EVENT_SIZE + 8);
  encodeKafkaEvent({
    hdr: { type: o.consumer ? EventType.GT_EVENT_KAFKA_CONSUMER : EventType.GT_EVENT_KAFKA_PRODUCER, size: KAFKA_EVENT_SIZE, tgid: 42, binary_id: 1, cpu: 0, goid: 7n },
    start_ns: 1_000_000_000n,
    end_ns: 1_002_000_000n,
    span: {
      trace_id: Buffer.from('4bf92f3577b34da6a3ce929d0e0e4736', 'hex'),
      span_id: Buffer.from('a1b2c3d4e5f60718', 'hex'),
      parent_span_id: Buffer.from('00f067aa0ba902b7', 'hex'),
      flags: SpanFlags.GT_SPAN_SAMPLED | SpanFlags.GT_SPAN_HAS_PARENT,
      reserved: 0,
    },
    partition: 2n,
    offset: BigInt(o.offset ?? 17),
    err_fn: 0n,
    err_code: 0n,
    flags: o.flags ?? (KafkaEventFlags.GT_KAFKA_EVENT_PARTITION | KafkaEventFlags.GT_KAFKA_EVENT_OFFSET),
    topic_len: topic.length,
    key_len: o.key === undefined ? -1 : o.key.length,
    group_len: o.group === undefined ? -1 : o.group.length,
    topic: Buffer.from(topic.padEnd(KafkaLimits.GT_KAFKA_TOPIC_MAX, '\0')),
    key: Buffer.from((o.key ?? '').padEnd(KafkaLimits.GT_KAFKA_KEY_MAX, '\0')),
    group: Buffer.from((o.group ?? '').padEnd(KafkaLimits.GT_KAFKA_GROUP_MAX, '\0')),
  }, buf, 8);
  return buf;
}

function one(probe: typeof kafkaWriterProbe, buf: Buffer, kafkaMessageKey = false): ReadableSpan {
  const { spans, problems } = runProbeEvent(probe, buf, { kafkaMessageKey });
  assert.deepEqual(problems, []);
  assert.equal(spans.length, 1);
  return spans[0]!;
}

test('a message written is a PRODUCER span "send {topic}" with the messaging conventions\' attributes, no key by default', () => {
  const span = one(kafkaWriterProbe, event({ key: 'customer-9' }));
  assert.equal(span.kind, SpanKind.PRODUCER);
  assert.equal(span.name, 'send orders');
  assert.deepEqual(span.attributes, {
    'messaging.system': 'kafka',
    'messaging.operation.type': 'send',
    'messaging.operation.name': 'send',
    'messaging.destination.name': 'orders',
    'messaging.destination.partition.id': '2',
    'messaging.kafka.offset': 17,
  });
  assert.equal(span.status.code, SpanStatusCode.UNSET);
  assert.equal(span.parentSpanContext?.spanId, '00f067aa0ba902b7');
  assert.equal(span.instrumentationScope.name, 'gotrail/github.com/segmentio/kafka-go');
});

test('a message read is a CONSUMER span "receive {topic}" with its consumer group; the key only when opted in', () => {
  const span = one(kafkaReaderProbe, event({ consumer: true, key: 'customer-9', group: 'billing' }), true);
  assert.equal(span.kind, SpanKind.CONSUMER);
  assert.equal(span.name, 'receive orders');
  assert.equal(span.attributes['messaging.operation.type'], 'receive');
  assert.equal(span.attributes['messaging.consumer.group.name'], 'billing');
  assert.equal(span.attributes['messaging.kafka.message.key'], 'customer-9');
  assert.equal(one(kafkaReaderProbe, event({ consumer: true, key: 'customer-9' }), false).attributes['messaging.kafka.message.key'], undefined);
  assert.equal(one(kafkaReaderProbe, event({ consumer: true })).attributes['messaging.consumer.group.name'], undefined, 'no group: none reported');
});

test('a failed write is an error span without offset, its error.type from the error\'s type', () => {
  const span = one(kafkaWriterProbe, event({ flags: KafkaEventFlags.GT_KAFKA_EVENT_ERROR }));
  assert.equal(span.status.code, SpanStatusCode.ERROR);
  assert.equal(span.attributes['messaging.kafka.offset'], undefined);
  assert.equal(span.attributes['messaging.destination.partition.id'], undefined);
  assert.equal(span.attributes['error.type'], '_OTHER', 'an error whose type cannot be placed');
  assert.equal(kafkaErrorType('github.com/segmentio/kafka-go.(*Error).Error', 3n), 'UNKNOWN_TOPIC_OR_PARTITION');
  assert.equal(kafkaErrorType('github.com/segmentio/kafka-go.Error.Error', 0xffff_ffff_ffff_ffffn), 'UNKNOWN_SERVER_ERROR', 'code -1');
  assert.equal(kafkaErrorType('github.com/segmentio/kafka-go.Error.Error', 87n), 'KAFKA_ERROR_87');
  assert.equal(kafkaErrorType('net.(*OpError).Error', 0n), '*net.OpError');
  assert.equal(kafkaErrorType(undefined, 0n), '_OTHER');
});

test('an event without a readable topic is named by its operation and counted as a problem', () => {
  const { spans, problems } = runProbeEvent(kafkaWriterProbe, event({ topic: '' }));
  assert.equal(spans[0]!.name, 'send');
  assert.deepEqual(problems, ['kafka event without a readable topic']);
});
