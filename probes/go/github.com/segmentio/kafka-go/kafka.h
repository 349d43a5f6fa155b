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
 * pushed out by newer ones are counted by user space.
 *
 * The offset comes late: the broker appends the batch, then answers the
 * producer — and a consumer long-polling the partition may be answered
 * first, reading the message before writeBatch has returned. So writeBatch's
 * ENTRY also publishes each message under what both sides see before the
 * offset is known: (topic, partition, a hash of the first
 * GT_KAFKA_CONTENT_PREFIX bytes of the key and of the value, their lengths)
 * in gt_kafka_content_links, removed again at writeBatch's return, right
 * after the offset link is published. A consumer looks up the offset, then
 * the content, then the offset again: whichever side of the return it reads
 * on, one of the two is there. (Kafka's record time cannot serve: kafka-go
 * leaves Message.Time zero and stamps the record while encoding the
 * request, after writeBatch's entry.) Limits: the content names a message
 * only among those in flight at once in the partition; identical messages
 * (same key and value prefix, same lengths) in flight together are
 * counted and linked to none (`ambiguous`), and an identical message
 * written meanwhile by a program gotrail does not trace would take the
 * traced one's span. */
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
	GT_KAFKA_CONTENT_MAX = 16384,  /* messages in flight (in writeBatch) linked by content */
	GT_KAFKA_CONTENT_PREFIX = 256, /* bytes of the key, and of the value, hashed */
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
	GT_KAFKA_MSGS_UNTRACED = 5,         /* messages beyond GT_KAFKA_MSGS_MAX of a call or batch */
	GT_KAFKA_MSGS_UNPAIRED = 6,         /* written messages whose WriteMessages call was not seen */
	GT_KAFKA_LINK_FOUND_BY_CONTENT = 7, /* read before its offset was known: found by content */
	GT_KAFKA_LINK_AMBIGUOUS = 8, /* found by content, but identical messages were in flight: not used */
	GT_KAFKA_CONTENT_STORE_FAILED = 9, /* a message in flight could not be published by content */
	GT_KAFKA_CONTENT_EXPIRED = 10, /* found by content, but older than the lifetime: not used, removed */
	GT_KAFKA_COUNTER_MAX = 12,
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

/* A message in flight, named by what producer and consumer both see before its offset is known. */
struct gt_kafka_content_key {
	char topic[GT_KAFKA_TOPIC_MAX]; /* zero-padded */
	__s64 partition;
	__u64 hash;      /* gt_kafka_content_hash */
	__s64 key_len;   /* the key's length */
	__s64 value_len; /* the value's length */
};

struct gt_kafka_content_link {
	struct gt_span_context span; /* the producer's span (of the first in flight) */
	__u64 time_ns;               /* when it was published */
	__u32 in_flight;             /* identical messages in flight: more than 1 is ambiguous */
	__u32 reserved;
};

GT_EXPORT_LAYOUTS(kafka,
	struct gt_kafka_event event;
	struct gt_kafka_link_key link_key;
	struct gt_kafka_link link;
	struct gt_kafka_content_key content_key;
	struct gt_kafka_content_link content_link;
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

/* Node-wide, entries live while their batch is in writeBatch (and, should
 * the producer die there, until pushed out or past the lifetime). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_KAFKA_CONTENT_MAX);
	__type(key, struct gt_kafka_content_key);
	__type(value, struct gt_kafka_content_link);
} gt_kafka_content_links SEC(".maps");

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

/* The bytes hashed: a key's prefix then a value's, zero-padded. */
struct gt_kafka_content_bytes {
	struct gt_kafka_content_key key;
	char bytes[2 * GT_KAFKA_CONTENT_PREFIX]; /* at an offset of 8 bytes' alignment */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_kafka_content_bytes);
} kafka_content_scratch SEC(".maps");

/* Up to GT_KAFKA_CONTENT_PREFIX bytes of the []byte `s` into `dst`; its
 * length (nil and empty alike: a consumer may see one for the other). */
static __always_inline __s64 gt_kafka_read_prefix(void *dst, const struct go_slice *s)
{
	if (!s->ptr || s->len <= 0)
		return 0;
	__u64 n = s->len < 0 ? 0 : (__u64)s->len;
	if (n > GT_KAFKA_CONTENT_PREFIX)
		n = GT_KAFKA_CONTENT_PREFIX;
	if (n > 0)
		bpf_probe_read_user(dst, n, (void *)s->ptr);
	return s->len;
}

/*
 * The content key of the message whose Key and Value slices are at `msg +
 * key_off` and `msg + value_off`, in the per-CPU scratch (0 when
 * unreadable). The same function on both sides: the producer's Message
 * and the consumer's hold the same bytes. The hash mixes each 8-byte word
 * (splitmix64-like multiply-xorshift); lengths are in the key as they are.
 */
static __always_inline struct gt_kafka_content_key *
gt_kafka_content_key_of(const char *topic, __s64 partition, __u64 msg, __u32 key_off, __u32 value_off)
{
	__u32 zero = 0;
	struct gt_kafka_content_bytes *b = bpf_map_lookup_elem(&kafka_content_scratch, &zero);
	if (!b)
		return 0;
	struct go_slice k = {}, v = {};
	if (bpf_probe_read_user(&k, sizeof(k), (void *)(msg + key_off)) < 0 ||
	    bpf_probe_read_user(&v, sizeof(v), (void *)(msg + value_off)) < 0)
		return 0;
	__builtin_memset(b->bytes, 0, sizeof(b->bytes));
	b->key.key_len = gt_kafka_read_prefix(b->bytes, &k);
	b->key.value_len = gt_kafka_read_prefix(&b->bytes[GT_KAFKA_CONTENT_PREFIX], &v);
	const __u64 *words = (const __u64 *)b->bytes;
	__u64 h = 0x6a09e667f3bcc908ULL;
	for (__u32 i = 0; i < 2 * GT_KAFKA_CONTENT_PREFIX / 8; i++) {
		h ^= words[i];
		h *= 0xbf58476d1ce4e5b9ULL;
		h ^= h >> 31;
	}
	__builtin_memcpy(b->key.topic, topic, GT_KAFKA_TOPIC_MAX);
	b->key.partition = partition;
	b->key.hash = h | 1; /* never 0: 0 means none */
	return &b->key;
}
