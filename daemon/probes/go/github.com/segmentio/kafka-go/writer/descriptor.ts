/**
 * github.com/segmentio/kafka-go, the Writer: one PRODUCER span per message
 * written (not per batch), a child of the span active on the goroutine that
 * called WriteMessages, ended when the broker answered for the message's
 * batch; on success its (topic, partition, offset) is published for the
 * consumer's probe (probes/go/github.com/segmentio/kafka-go/kafka.h).
 * Spans: `handleKafkaEvent` (../kafka.ts).
 */
import {
  PairedFunction,
  BpfMaps, BpfPrograms, EventType, KAFKA_EVENT_SIZE, KafkaWriterFlags, encodeKafkaWriterConfig,
} from '../../../../../../generated/layouts.ts';
import type { EventContext, EventProbe } from '../../../../../types.ts';
import { KAFKA_GO, handleKafkaEvent } from '../kafka.ts';

/** A time.Time is three words (wall, ext, loc) in every Go release: the Message ends with it. */
const TIME_SIZE = 24;

const F = {
  msgTopic: `${KAFKA_GO}.Message.Topic`,
  msgOffset: `${KAFKA_GO}.Message.Offset`,
  msgKey: `${KAFKA_GO}.Message.Key`,
  msgValue: `${KAFKA_GO}.Message.Value`,
  msgTime: `${KAFKA_GO}.Message.Time`,
  batchMsgs: `${KAFKA_GO}.writeBatch.msgs`,
  batchErr: `${KAFKA_GO}.writeBatch.err`,
  ptwMeta: `${KAFKA_GO}.partitionWriter.meta`,
  tpTopic: `${KAFKA_GO}.topicPartition.topic`,
  tpPartition: `${KAFKA_GO}.topicPartition.partition`,
  writerTopic: `${KAFKA_GO}.Writer.Topic`,
} as const;

export const kafkaWriterProbe: EventProbe = {
  id: `${KAFKA_GO}/writer`,
  module: KAFKA_GO,
  goPackage: KAFKA_GO,
  description: 'kafka-go Writer: messages written (PRODUCER spans, one per message)',
  functions: [
    {
      symbol: `${KAFKA_GO}.(*Writer).WriteMessages`, entryProgram: BpfPrograms.gt_kafka_write_entry, returnProgram: BpfPrograms.gt_kafka_write_return,
      absentMeans: 'this program never writes Kafka messages with a kafka-go Writer',
    },
    {
      symbol: `${KAFKA_GO}.(*partitionWriter).writeBatch`, entryProgram: BpfPrograms.gt_kafka_batch_entry, returnProgram: BpfPrograms.gt_kafka_batch_return,
      absentMeans: 'this program never writes Kafka messages with a kafka-go Writer',
    },
  ],
  fields: {
    [F.msgTopic]: { reads: 'a message\'s topic, for messaging.destination.name of a write that failed before its batch' },
    [F.msgOffset]: { reads: 'the offset the broker gave a message, for messaging.kafka.offset and the consumer\'s link' },
    [F.msgKey]: { reads: 'the message\'s key bytes: the message\'s identity between WriteMessages and its batch, and the opt-in key' },
    [F.msgValue]: { reads: 'the address of the message\'s value: the message\'s identity between WriteMessages and its batch' },
    [F.msgTime]: { reads: 'the size of a Message (its last field, time.Time, ends it), to step through a slice of them' },
    [F.batchMsgs]: { reads: 'the messages of a batch' },
    [F.batchErr]: { reads: 'the batch\'s error (error.type)' },
    [F.ptwMeta]: { reads: 'the topic and partition a partition writer writes to' },
    [F.tpTopic]: { reads: 'the batch\'s topic (messaging.destination.name)' },
    [F.tpPartition]: { reads: 'the batch\'s partition (messaging.destination.partition.id)' },
    [F.writerTopic]: { reads: 'the writer\'s topic, for a write that failed before its batch', optional: 'a write that fails before its batch is sent (a missing topic) has no messaging.destination.name unless its messages name their topic' },
  },
  configMap: BpfMaps.gt_kafka_writer_config,
  stateMaps: [BpfMaps.gt_kafka_pending, BpfMaps.gt_kafka_write_calls, BpfMaps.gt_kafka_batch_calls],
  inflightMaps: [
    { map: BpfMaps.gt_kafka_write_calls, paired: [PairedFunction.GT_PAIRED_KAFKA_WRITE] },
    { map: BpfMaps.gt_kafka_batch_calls, paired: [PairedFunction.GT_PAIRED_KAFKA_BATCH] },
    { map: BpfMaps.gt_kafka_pending, paired: [] },
  ],
  encodeConfig(o) {
    return encodeKafkaWriterConfig({
      msg_topic: o[F.msgTopic] ?? 0,
      msg_offset: o[F.msgOffset] ?? 0,
      msg_key: o[F.msgKey] ?? 0,
      msg_value: o[F.msgValue] ?? 0,
      msg_size: (o[F.msgTime] ?? 0) + TIME_SIZE,
      batch_msgs: o[F.batchMsgs] ?? 0,
      batch_err: o[F.batchErr] ?? 0,
      ptw_meta: o[F.ptwMeta] ?? 0,
      tp_topic: o[F.tpTopic] ?? 0,
      tp_partition: o[F.tpPartition] ?? 0,
      // an unknown writer topic reads the string at offset 0 of the Writer: its Addr, not a topic
      writer_topic: o[F.writerTopic] ?? 0xffff_fff0,
      flags: KafkaWriterFlags.GT_KAFKA_WRITER_ENABLED,
    });
  },
  eventType: EventType.GT_EVENT_KAFKA_PRODUCER,
  eventSize: KAFKA_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    handleKafkaEvent(buf, off, ctx, false);
  },
};
