/**
 * github.com/segmentio/kafka-go, the Reader: one CONSUMER span per message
 * read (FetchMessage, which ReadMessage calls), continuing the producer's
 * trace: its parent is the message's `traceparent` header where one is set
 * (read only), else the span of the traced program that wrote it
 * (published by the Writer's probe under its topic, partition and offset,
 * for at most `KAFKA_LINK_MAX_AGE_NS`; a message read while its batch is
 * still awaiting the broker's answer, under its key's and value's content),
 * else the span active on the
 * goroutine. While the goroutine handles the message (until it reads the
 * next) the span is its active span, so the calls it makes are children.
 * Spans: `handleKafkaEvent` (../kafka.ts).
 */
import {
  PairedFunction,
  BpfMaps, BpfPrograms, EventType, KAFKA_EVENT_SIZE, KafkaReaderFlags, encodeKafkaReaderConfig,
} from '../../../../../../generated/layouts.ts';
import { type EventContext, type EventProbe, fieldResolved } from '../../../../../types.ts';
import { KAFKA_GO, handleKafkaEvent } from '../kafka.ts';

/**
 * How long a producer's published span stays usable by consumers (ns): a
 * message read later than this after it was written starts a new trace
 * rather than joining one that has long been exported. 15 minutes.
 */
export const KAFKA_LINK_MAX_AGE_NS = 15n * 60n * 1_000_000_000n;

/** A []byte is three words: Header ends with its Value. */
const SLICE_SIZE = 24;

const F = {
  msgTopic: `${KAFKA_GO}.Message.Topic`,
  msgPartition: `${KAFKA_GO}.Message.Partition`,
  msgOffset: `${KAFKA_GO}.Message.Offset`,
  msgKey: `${KAFKA_GO}.Message.Key`,
  msgValue: `${KAFKA_GO}.Message.Value`,
  msgHeaders: `${KAFKA_GO}.Message.Headers`,
  headerKey: `${KAFKA_GO}/protocol.Header.Key`,
  headerValue: `${KAFKA_GO}/protocol.Header.Value`,
  readerConfig: `${KAFKA_GO}.Reader.config`,
  groupId: `${KAFKA_GO}.ReaderConfig.GroupID`,
} as const;

const NO_HEADERS = 'a message\'s traceparent header is not read: consumers link to traced producers only';
const NO_CONTENT = 'a message read before its producer learnt its offset (a consumer long-polling) is not linked to its producer';
const NO_GROUP = 'messaging.consumer.group.name is not reported';

export const kafkaReaderProbe: EventProbe = {
  id: `${KAFKA_GO}/reader`,
  module: KAFKA_GO,
  goPackage: KAFKA_GO,
  description: 'kafka-go Reader: messages read (CONSUMER spans, one per message)',
  functions: [
    {
      symbol: `${KAFKA_GO}.(*Reader).FetchMessage`, entryProgram: BpfPrograms.gt_kafka_fetch_entry, returnProgram: BpfPrograms.gt_kafka_fetch_return,
      absentMeans: 'this program never reads Kafka messages with a kafka-go Reader',
    },
  ],
  fields: {
    [F.msgTopic]: { reads: 'the message\'s topic (messaging.destination.name)' },
    [F.msgPartition]: { reads: 'the message\'s partition (messaging.destination.partition.id)' },
    [F.msgOffset]: { reads: 'the message\'s offset (messaging.kafka.offset, and the producer\'s link)' },
    [F.msgKey]: { reads: 'the message\'s key, for the opt-in messaging.kafka.message.key' },
    [F.msgValue]: { reads: 'the message\'s value: with the key, names a message read before its offset link is published', optional: NO_CONTENT },
    [F.msgHeaders]: { reads: 'the message\'s headers, for traceparent', optional: NO_HEADERS },
    [F.headerKey]: { reads: 'a header\'s name', optional: NO_HEADERS },
    [F.headerValue]: { reads: 'a header\'s value (traceparent); its end is the Header\'s size', optional: NO_HEADERS },
    [F.readerConfig]: { reads: 'the reader\'s configuration', optional: NO_GROUP },
    [F.groupId]: { reads: 'the consumer group (messaging.consumer.group.name)', optional: NO_GROUP },
  },
  configMap: BpfMaps.gt_kafka_reader_config,
  stateMaps: [BpfMaps.gt_kafka_fetch_calls, BpfMaps.gt_kafka_handling],
  inflightMaps: [{ map: BpfMaps.gt_kafka_fetch_calls, paired: [PairedFunction.GT_PAIRED_KAFKA_FETCH] }],
  encodeConfig(o, missingOptional) {
    const has = fieldResolved(o, missingOptional);
    return encodeKafkaReaderConfig({
      msg_topic: o[F.msgTopic] ?? 0,
      msg_partition: o[F.msgPartition] ?? 0,
      msg_offset: o[F.msgOffset] ?? 0,
      msg_key: o[F.msgKey] ?? 0,
      msg_value: o[F.msgValue] ?? 0,
      msg_headers: o[F.msgHeaders] ?? 0,
      header_key: o[F.headerKey] ?? 0,
      header_value: o[F.headerValue] ?? 0,
      header_size: (o[F.headerValue] ?? 0) + SLICE_SIZE,
      reader_config: o[F.readerConfig] ?? 0,
      config_group_id: o[F.groupId] ?? 0,
      flags: KafkaReaderFlags.GT_KAFKA_READER_ENABLED
        | (has(F.msgHeaders) && has(F.headerKey) && has(F.headerValue) ? KafkaReaderFlags.GT_KAFKA_READER_HEADERS : 0)
        | (has(F.readerConfig) && has(F.groupId) ? KafkaReaderFlags.GT_KAFKA_READER_GROUP : 0)
        | (has(F.msgValue) ? KafkaReaderFlags.GT_KAFKA_READER_CONTENT : 0),
      link_max_age_ns: KAFKA_LINK_MAX_AGE_NS,
    });
  },
  eventType: EventType.GT_EVENT_KAFKA_CONSUMER,
  eventSize: KAFKA_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    handleKafkaEvent(buf, off, ctx, true);
  },
};
