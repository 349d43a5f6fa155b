/**
 * What the Writer's and the Reader's probes of github.com/segmentio/kafka-go
 * share: the span of one message event (`struct gt_kafka_event`, kafka.h),
 * per the OpenTelemetry messaging conventions for Kafka.
 *
 * - Producer: a PRODUCER span `send {topic}` per message written
 *   (`messaging.operation.type=send`), from the WriteMessages call that took
 *   it to the broker's answer for its batch.
 * - Consumer: a CONSUMER span `receive {topic}` per message read
 *   (`messaging.operation.type=receive`), the FetchMessage call (ReadMessage
 *   included) that returned it.
 *
 * Both carry `messaging.system=kafka`, `messaging.destination.name`,
 * `messaging.destination.partition.id`, `messaging.kafka.offset` (the
 * producer's once the broker assigned it), the consumer's
 * `messaging.consumer.group.name`, and `messaging.kafka.message.key` only
 * when the user opted in (`--kafka-message-key`): a key is the program's data.
 */
import {
  ATTR_ERROR_TYPE, ERROR_TYPE_VALUE_OTHER,
} from '@opentelemetry/semantic-conventions';
import {
  ATTR_MESSAGING_CONSUMER_GROUP_NAME, ATTR_MESSAGING_DESTINATION_NAME, ATTR_MESSAGING_DESTINATION_PARTITION_ID,
  ATTR_MESSAGING_KAFKA_MESSAGE_KEY, ATTR_MESSAGING_KAFKA_OFFSET, ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE, ATTR_MESSAGING_SYSTEM, MESSAGING_OPERATION_TYPE_VALUE_RECEIVE,
  MESSAGING_OPERATION_TYPE_VALUE_SEND, MESSAGING_SYSTEM_VALUE_KAFKA,
} from '../../../../../spans/semconv.ts';
import { SpanKind, type Attributes } from '@opentelemetry/api';
import { KafkaEventFlags, decodeKafkaEvent } from '../../../../../generated/layouts.ts';
import { emitProbeSpan, type EventContext } from '../../../../types.ts';
import { goString } from '../../../../../spans/go-values.ts';
import { CodeNames, receiverType } from '../../../database/sql/drivers.ts';

export const KAFKA_GO = 'github.com/segmentio/kafka-go';

const codeNames = new CodeNames();

/**
 * Names of the Kafka protocol's error codes most often met by clients (the
 * names the protocol gives them); a kafka-go `Error` of another code is
 * reported by its code, `KAFKA_ERROR_<code>`.
 */
const KAFKA_ERRORS: Readonly<Record<number, string>> = {
  [-1]: 'UNKNOWN_SERVER_ERROR',
  1: 'OFFSET_OUT_OF_RANGE',
  2: 'CORRUPT_MESSAGE',
  3: 'UNKNOWN_TOPIC_OR_PARTITION',
  5: 'LEADER_NOT_AVAILABLE',
  6: 'NOT_LEADER_OR_FOLLOWER',
  7: 'REQUEST_TIMED_OUT',
  10: 'MESSAGE_TOO_LARGE',
  13: 'NETWORK_EXCEPTION',
  19: 'NOT_ENOUGH_REPLICAS',
  20: 'NOT_ENOUGH_REPLICAS_AFTER_APPEND',
  25: 'UNKNOWN_MEMBER_ID',
  27: 'REBALANCE_IN_PROGRESS',
  29: 'TOPIC_AUTHORIZATION_FAILED',
  30: 'GROUP_AUTHORIZATION_FAILED',
  31: 'CLUSTER_AUTHORIZATION_FAILED',
};

/**
 * error.type of a failed write: the Kafka error's name for a kafka-go
 * `Error` (a broker's error code), else the error's Go type as `%T` prints
 * it, else `_OTHER`. `fn` is the function at the error itab's first method.
 */
export function kafkaErrorType(fn: string | undefined, code: bigint): string {
  const type = fn !== undefined ? receiverType(fn) : undefined;
  if (type === undefined) return ERROR_TYPE_VALUE_OTHER;
  if (type.replace(/^\*/, '') === `${KAFKA_GO}.Error`) {
    const n = Number(BigInt.asIntN(64, code));
    return KAFKA_ERRORS[n] ?? `KAFKA_ERROR_${n}`;
  }
  return type;
}

/** Turns one Kafka message event into its span; never throws (a bad event is a counted problem). */
export function handleKafkaEvent(buf: Buffer, off: number, ctx: EventContext, consumer: boolean): void {
  const ev = decodeKafkaEvent(buf, off);
  const resource = ctx.resourceOf(ev.hdr.tgid);
  if (!resource) {
    ctx.problem('kafka event from an unknown process');
    return;
  }
  const topic = goString(ev.topic, ev.topic_len);
  const op = consumer ? MESSAGING_OPERATION_TYPE_VALUE_RECEIVE : MESSAGING_OPERATION_TYPE_VALUE_SEND;
  const attributes: Attributes = {
    [ATTR_MESSAGING_SYSTEM]: MESSAGING_SYSTEM_VALUE_KAFKA,
    [ATTR_MESSAGING_OPERATION_TYPE]: op,
    [ATTR_MESSAGING_OPERATION_NAME]: op,
  };
  if (topic) attributes[ATTR_MESSAGING_DESTINATION_NAME] = topic;
  else ctx.problem('kafka event without a readable topic');
  if (ev.flags & KafkaEventFlags.GT_KAFKA_EVENT_PARTITION) attributes[ATTR_MESSAGING_DESTINATION_PARTITION_ID] = String(ev.partition);
  if (ev.flags & KafkaEventFlags.GT_KAFKA_EVENT_OFFSET) attributes[ATTR_MESSAGING_KAFKA_OFFSET] = Number(ev.offset);
  if (consumer && ev.group_len > 0) attributes[ATTR_MESSAGING_CONSUMER_GROUP_NAME] = goString(ev.group, ev.group_len);
  if (ctx.kafkaMessageKey === true && ev.key_len > 0) attributes[ATTR_MESSAGING_KAFKA_MESSAGE_KEY] = goString(ev.key, ev.key_len);
  const error = (ev.flags & KafkaEventFlags.GT_KAFKA_EVENT_ERROR) !== 0;
  if (error) attributes[ATTR_ERROR_TYPE] = kafkaErrorType(codeNames.nameAt(ev.hdr.tgid, ev.err_fn), ev.err_code);
  emitProbeSpan(ctx, {
    // {messaging.operation.name} {destination}: a topic names a destination of bounded cardinality
    name: topic ? `${op} ${topic}` : op,
    kind: consumer ? SpanKind.CONSUMER : SpanKind.PRODUCER,
    span: ev.span,
    start_ns: ev.start_ns,
    end_ns: ev.end_ns,
    attributes,
    error,
    resource,
    scope: KAFKA_GO,
  });
}
