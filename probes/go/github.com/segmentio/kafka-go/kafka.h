/* github.com/segmentio/kafka-go: what the Writer's and the Reader's probes
 * share — the event both send, and the node-wide map through which a
 * consumer finds the span of the producer that wrote the message it read.
 *
 * Producer and consumer link without writing the program's memory: a
 * message is named by (topic, partition, offset) on both sides. The producer
 * learns the offset only from the broker's answer: kafka-go's
 * (*partitionWriter).writeBatch sets every message of the batch to
 * `Offset = ProduceResponse.BaseOffset + i` (and Topic, Partition) before it
 * completes the batch, so the writer's probe reads them at writeBatch's
 * return and publishes (topic, partition, offset) → span context here. The
 * map is an LRU with an age limit: an entry older than the configured
 * lifetime is expired when a consumer finds it (counted), and entries
 * pushed out by newer ones are counted by user space. */
#pragma once

#include "go_abi.h"

enum gt_kafka_limits {
	GT_KAFKA_TOPIC_MAX = 128, /* bytes of a topic name kept (Kafka allows 249) */
	GT_KAFKA_KEY_MAX = 64,    /* bytes of a message key kept (opt-in attribute) */
	GT_KAFKA_GROUP_MAX = 64,  /* bytes of a consumer group's name kept */
	GT_KAFKA_MSGS_MAX = 128,  /* messages of one WriteMessages call or one batch that are traced */
	GT_KAFKA_HEADERS_MAX = 8, /* headers of a read message searched for traceparent */
	GT_KAFKA_LINKS_MAX = 65536,
	GT_KAFKA_INFLIGHT_MAX = 16384,
	GT_KAFKA_PENDING_MAX = 65536,
};

enum gt_kafka_event_flags {
	GT_KAFKA_EVENT_ERROR = 1,       /* the write (or read) failed: err_fn, err_code */
	GT_KAFKA_EVENT_OFFSET = 2,      /* offset is the broker-assigned offset */
	GT_KAFKA_EVENT_PARTITION = 4,   /* partition is known */
	GT_KAFKA_EVENT_HEADER_LINK = 8, /* parent from the message's traceparent header */
	GT_KAFKA_EVENT_MAP_LINK = 16,   /* parent: the producer's span, found in gt_kafka_links */
	GT_KAFKA_EVENT_FETCH = 32,      /* consumer: FetchMessage called directly (no commit) */
};

/* One message written (producer) or read (consumer). */
struct gt_kafka_event {
	struct gt_event_header hdr;
	__u64 start_ns;
	__u64 end_ns;
	struct gt_span_context span;
	__s64 partition;
	__s64 offset;
	__u64 err_fn;   /* first method (Error) of the error's itab: names its type */
	__s64 err_code; /* the error's first word: a kafka.Error's code */
	__u32 flags;    /* enum gt_kafka_event_flags */
	__s32 topic_len;
	__s32 key_len;   /* -1: no key read */
	__s32 group_len; /* consumer group (consumer, -1: none) */
	char topic[GT_KAFKA_TOPIC_MAX];
	char key[GT_KAFKA_KEY_MAX];
	char group[GT_KAFKA_GROUP_MAX];
};

enum gt_event_type_kafka {
	GT_EVENT_KAFKA_PRODUCER = 80,
	GT_EVENT_KAFKA_CONSUMER = 81,
};

/* Outcomes of the producer→consumer link, counted per CPU in gt_kafka_counters. */
enum gt_kafka_counter {
	GT_KAFKA_LINK_PUBLISHED = 0, /* a written message's span context published */
	GT_KAFKA_LINK_FOUND = 1,     /* a read message found its producer's span */
	GT_KAFKA_LINK_EXPIRED = 2,   /* found, but older than the lifetime: not used, removed */
	GT_KAFKA_LINK_NOT_FOUND = 3, /* a read message without traceparent nor published producer */
	GT_KAFKA_LINK_STORE_FAILED = 4,
	GT_KAFKA_MSGS_UNTRACED = 5, /* messages beyond GT_KAFKA_MSGS_MAX of a call or batch */
	GT_KAFKA_MSGS_UNPAIRED = 6, /* written messages whose WriteMessages call was not seen */
	GT_KAFKA_COUNTER_MAX = 8,
};

/* A message, named as producer and consumer both see it. */
struct gt_kafka_link_key {
	char topic[GT_KAFKA_TOPIC_MAX]; /* zero-padded */
	__s64 partition;
	__s64 offset;
};

struct gt_kafka_link {
	struct gt_span_context span; /* the producer's span */
	__u64 time_ns;               /* when it was published (bpf_ktime_get_ns) */
};

GT_EXPORT_LAYOUTS(kafka,
	struct gt_kafka_event event;
	struct gt_kafka_link_key link_key;
	struct gt_kafka_link link;
	enum gt_event_type_kafka event_type;
	enum gt_kafka_limits limits;
	enum gt_kafka_event_flags event_flags;
	enum gt_kafka_counter counter;
);

/* Node-wide: producer and consumer are usually different processes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_KAFKA_LINKS_MAX);
	__type(key, struct gt_kafka_link_key);
	__type(value, struct gt_kafka_link);
} gt_kafka_links SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GT_KAFKA_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} gt_kafka_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_kafka_link_key);
} kafka_link_scratch SEC(".maps");

static __always_inline void gt_kafka_count(__u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&gt_kafka_counters, &which);
	if (c)
		*c += n;
}

/* runtime.itab (internal/abi.ITab): inter, _type, hash, pad, then fun[0]. */
#define GT_KAFKA_ITAB_FUN0 24

/* The error (itab, data) into the event: its type (the itab's Error
 * method) and its first word (a kafka.Error is an int). */
static __always_inline void gt_kafka_error(struct gt_kafka_event *ev, __u64 itab, __u64 data)
{
	ev->flags |= GT_KAFKA_EVENT_ERROR;
	if (itab)
		go_read_ptr(itab, GT_KAFKA_ITAB_FUN0, &ev->err_fn);
	if (data)
		bpf_probe_read_user(&ev->err_code, sizeof(ev->err_code), (void *)data);
}

/* The link key of a message, in the per-CPU scratch (0 when unavailable);
 * `topic` is GT_KAFKA_TOPIC_MAX bytes, zero after the name. */
static __always_inline struct gt_kafka_link_key *gt_kafka_link_key_of(const char *topic, __s64 partition,
								      __s64 offset)
{
	__u32 zero = 0;
	struct gt_kafka_link_key *k = bpf_map_lookup_elem(&kafka_link_scratch, &zero);
	if (!k)
		return 0;
	__builtin_memcpy(k->topic, topic, GT_KAFKA_TOPIC_MAX);
	k->partition = partition;
	k->offset = offset;
	return k;
}
