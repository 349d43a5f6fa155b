/* github.com/segmentio/kafka-go, the Reader: one event per message read.
 *
 *   func (r *Reader) FetchMessage(ctx context.Context) (Message, error)
 *     entry: r RAX; ctx RBX, RCX
 *     every RET: error (itab, data) RAX, RBX; the Message (19 words, more
 *     than the 9 integer registers of the Go register ABI) is returned on
 *     the stack, at the start of the caller's argument area: SP+8 at RET
 *
 * ReadMessage is FetchMessage followed by a commit in a consumer group, so
 * this one function sees every message read either way. The span's parent
 * is, in this order: the message's `traceparent` header (read, never
 * written); the producer's span, when a traced program wrote the message
 * (gt_kafka_links by offset, else gt_kafka_content_links by content while
 * its batch is in flight, kafka.h); the span active on the goroutine; none.
 *
 * While the program handles the message — until its goroutine reads the
 * next one — the consumer's span is that goroutine's active span, so the
 * calls it makes meanwhile (SQL, HTTP, …) are its children: only when the
 * goroutine has no active span of its own (it serves no request), and it is
 * given back only while it is still ours. */
#include "../kafka.h"
#include "ancestry.h"

struct gt_kafka_reader_config {
	__u32 msg_topic;       /* Message.Topic (string) */
	__u32 msg_partition;   /* Message.Partition (int) */
	__u32 msg_offset;      /* Message.Offset (int64) */
	__u32 msg_key;         /* Message.Key ([]byte) */
	__u32 msg_value;       /* Message.Value ([]byte) */
	__u32 msg_headers;     /* Message.Headers ([]Header) */
	__u32 header_key;      /* protocol.Header.Key (string) */
	__u32 header_value;    /* protocol.Header.Value ([]byte) */
	__u32 header_size;     /* sizeof(Header): Header.Value + 24 */
	__u32 reader_config;   /* Reader.config (ReaderConfig) */
	__u32 config_group_id; /* ReaderConfig.GroupID (string) */
	__u32 flags;           /* enum gt_kafka_reader_flags */
	__u64 link_max_age_ns; /* lifetime of a producer's published span */
};

enum gt_kafka_reader_flags {
	GT_KAFKA_READER_ENABLED = 1,
	GT_KAFKA_READER_HEADERS = 2, /* Message.Headers and Header's fields are known */
	GT_KAFKA_READER_GROUP = 4,   /* Reader.config and ReaderConfig.GroupID are known */
	GT_KAFKA_READER_CONTENT = 8, /* Message.Value is known: links by content too */
};

enum gt_hit_site_kafka_reader {
	GT_HIT_KAFKA_FETCH_ENTRY = 84,
	GT_HIT_KAFKA_FETCH_RETURN = 85,
};

enum gt_paired_function_kafka_reader {
	GT_PAIRED_KAFKA_FETCH = 82,
};

struct gt_kafka_fetch_call {
	__u64 start_ns;
	__u64 reader;
};

GT_EXPORT_LAYOUTS(kafka_reader,
	struct gt_kafka_reader_config config;
	enum gt_kafka_reader_flags config_flags;
	enum gt_hit_site_kafka_reader hit_site;
	enum gt_paired_function_kafka_reader paired_function;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_kafka_reader_config);
} gt_kafka_reader_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_KAFKA_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_kafka_fetch_call);
} gt_kafka_fetch_calls SEC(".maps");

/* The consumer span a goroutine handles (its span id), set as its active span. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_KAFKA_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, __u64);
} gt_kafka_handling SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_kafka_event);
} kafka_reader_scratch SEC(".maps");

/* Ends the handling of the previous message: gives the goroutine's active span back if it is still ours. */
static __always_inline void end_handling(const struct gt_goroutine_key *key)
{
	__u64 *mine = bpf_map_lookup_elem(&gt_kafka_handling, key);
	if (!mine)
		return;
	struct gt_span_context *cur = gt_goroutine_span(key);
	__u64 id = 0;
	if (cur) {
		__builtin_memcpy(&id, cur->span_id, 8);
		if (id == *mine)
			bpf_map_delete_elem(&gt_goroutine_spans, key);
	}
	bpf_map_delete_elem(&gt_kafka_handling, key);
}

SEC("uprobe.multi")
int gt_kafka_fetch_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_kafka_reader_config *cfg = gt_probe_enter(ctx, &gt_kafka_reader_config, &key, &bin_id,
							    GT_HIT_KAFKA_FETCH_ENTRY);
	if (!cfg)
		return 0;
	end_handling(&key);
	if (!(cfg->flags & GT_KAFKA_READER_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_KAFKA_FETCH_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct gt_kafka_fetch_call call = { .start_ns = bpf_ktime_get_ns(), .reader = GO_ARG1(ctx) };
	gt_mark_entered(&key, GT_PAIRED_KAFKA_FETCH);
	if (bpf_map_update_elem(&gt_kafka_fetch_calls, &key, &call, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_KAFKA_FETCH);
		gt_debug_hit(ctx, GT_HIT_KAFKA_FETCH_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_KAFKA_FETCH_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	return 0;
}

/* The parent from a `traceparent` header of the message at `msg`; true when one was valid. */
static __always_inline bool header_parent(const struct gt_kafka_reader_config *cfg, __u64 msg,
					  struct gt_kafka_event *ev)
{
	struct go_slice headers = {};
	if (bpf_probe_read_user(&headers, sizeof(headers), (void *)(msg + cfg->msg_headers)) < 0)
		return false;
	for (__u32 i = 0; i < GT_KAFKA_HEADERS_MAX; i++) {
		struct go_string k = {};
		struct go_slice v = {};
		char name[12] = {};
		char value[64] = {};
		if ((__s64)i >= headers.len || !headers.ptr)
			break;
		__u64 h = headers.ptr + (__u64)i * cfg->header_size;
		if (bpf_probe_read_user(&k, sizeof(k), (void *)(h + cfg->header_key)) < 0 || k.len != 11 ||
		    !k.ptr)
			continue;
		if (bpf_probe_read_user(name, 11, (void *)k.ptr) < 0)
			continue;
		__u64 head = 0, tail = 0;
		__builtin_memcpy(&head, name, 8);
		__builtin_memcpy(&tail, name + 8, 4);
		/* "traceparent": "tracepar" and "ent\0" read little-endian */
		if (head != 0x7261706563617274ULL || tail != 0x00746e65ULL)
			continue;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(h + cfg->header_value)) < 0 || v.len < 55 ||
		    v.len > 64 || !v.ptr)
			return false;
		if (bpf_probe_read_user(value, 55, (void *)v.ptr) < 0)
			return false;
		if (v.len > 55)
			bpf_probe_read_user(value, (__u32)v.len & 63, (void *)v.ptr);
		if (!gt_parse_traceparent(value, v.len, &ev->span)) {
			gt_count(GT_COUNTER_TRACEPARENT_INVALID);
			return false;
		}
		return true;
	}
	return false;
}

/* The producer's span from its offset link; 1 found, 0 none, -1 expired (counted, removed). */
static __always_inline int offset_parent(const struct gt_kafka_reader_config *cfg, struct gt_kafka_event *ev)
{
	struct gt_kafka_link_key *lk = gt_kafka_link_key_of(ev->topic, ev->partition, ev->offset);
	struct gt_kafka_link *l = lk ? bpf_map_lookup_elem(&gt_kafka_links, lk) : 0;
	if (!l)
		return 0;
	if (ev->end_ns - l->time_ns > cfg->link_max_age_ns) {
		gt_kafka_count(GT_KAFKA_LINK_EXPIRED, 1);
		bpf_map_delete_elem(&gt_kafka_links, lk);
		return -1;
	}
	gt_kafka_count(GT_KAFKA_LINK_FOUND, 1);
	gt_new_child(&ev->span, &l->span);
	return 1;
}

/*
 * The producer's span of the message at `msg`: by its offset; else, read
 * while its batch is still in the producer's writeBatch, by its content;
 * else by its offset again — writeBatch's return publishes the offset link
 * before it removes the content one, so a return between the two lookups
 * cannot hide both. True when found (every outcome counted).
 */
static __always_inline bool producer_parent(const struct gt_kafka_reader_config *cfg, __u64 msg,
					    struct gt_kafka_event *ev)
{
	int r = offset_parent(cfg, ev);
	if (r == 0 && (cfg->flags & GT_KAFKA_READER_CONTENT)) {
		struct gt_kafka_content_key *ck = gt_kafka_content_key_of(ev->topic, ev->partition, msg,
									  cfg->msg_key, cfg->msg_value);
		struct gt_kafka_content_link *c = ck ? bpf_map_lookup_elem(&gt_kafka_content_links, ck) : 0;
		if (c && c->in_flight > 1) {
			gt_kafka_count(GT_KAFKA_LINK_AMBIGUOUS, 1);
			return false;
		}
		if (c && ev->end_ns - c->time_ns > cfg->link_max_age_ns) {
			gt_kafka_count(GT_KAFKA_CONTENT_EXPIRED, 1);
			bpf_map_delete_elem(&gt_kafka_content_links, ck);
			return false;
		}
		if (c) {
			gt_kafka_count(GT_KAFKA_LINK_FOUND_BY_CONTENT, 1);
			gt_new_child(&ev->span, &c->span);
			r = 1;
		} else {
			r = offset_parent(cfg, ev);
		}
	}
	if (r == 0)
		gt_kafka_count(GT_KAFKA_LINK_NOT_FOUND, 1);
	if (r <= 0)
		return false;
	ev->span.flags |= GT_SPAN_PARENT_REMOTE;
	ev->flags |= GT_KAFKA_EVENT_MAP_LINK;
	return true;
}

SEC("uprobe.multi")
int gt_kafka_fetch_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_kafka_reader_config *cfg = gt_probe_enter(ctx, &gt_kafka_reader_config, &key, &bin_id,
							    GT_HIT_KAFKA_FETCH_RETURN);
	if (!cfg)
		return 0;
	struct gt_kafka_fetch_call *c = bpf_map_lookup_elem(&gt_kafka_fetch_calls, &key);
	gt_debug_hit(ctx, GT_HIT_KAFKA_FETCH_RETURN, c ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	struct gt_kafka_fetch_call call = {};
	if (c) {
		call = *c;
		bpf_map_delete_elem(&gt_kafka_fetch_calls, &key);
	} else {
		/* a call made before the process was traced — a consumer
		 * long-polling from its start returns from it with its first
		 * message: its span is still made (and linked), from the
		 * return on (its start is not known, nor its reader: no group) */
		gt_count_no_entry(&key, GT_PAIRED_KAFKA_FETCH);
	}
	/* no message: the reader was closed or the context ended; no span */
	if (GO_ARG1(ctx))
		return 0;
	struct gt_kafka_event *ev = bpf_map_lookup_elem(&kafka_reader_scratch, &zero);
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	gt_fill_header(&ev->hdr, GT_EVENT_KAFKA_CONSUMER, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->end_ns = bpf_ktime_get_ns();
	ev->start_ns = call.start_ns ? call.start_ns : ev->end_ns;
	ev->key_len = -1;
	ev->group_len = -1;
	__u64 msg = PT_REGS_SP(ctx) + 8;
	ev->topic_len = go_read_string(msg, cfg->msg_topic, ev->topic, GT_KAFKA_TOPIC_MAX);
	if (bpf_probe_read_user(&ev->partition, sizeof(ev->partition), (void *)(msg + cfg->msg_partition)) ==
	    0)
		ev->flags |= GT_KAFKA_EVENT_PARTITION;
	if (bpf_probe_read_user(&ev->offset, sizeof(ev->offset), (void *)(msg + cfg->msg_offset)) == 0)
		ev->flags |= GT_KAFKA_EVENT_OFFSET;
	struct go_slice k = {};
	if (bpf_probe_read_user(&k, sizeof(k), (void *)(msg + cfg->msg_key)) == 0) {
		ev->key_len = k.len < 0 ? 0 : k.len > 0x7fffffff ? 0x7fffffff : (__s32)k.len;
		__u32 n = k.len < GT_KAFKA_KEY_MAX ? (__u32)k.len : GT_KAFKA_KEY_MAX;
		if (k.len > 0 && k.ptr && n > 0)
			bpf_probe_read_user(ev->key, n & (GT_KAFKA_KEY_MAX | (GT_KAFKA_KEY_MAX - 1)),
					    (void *)k.ptr);
	}
	__u64 rcfg = call.reader + cfg->reader_config;
	if ((cfg->flags & GT_KAFKA_READER_GROUP) && call.reader)
		ev->group_len = go_read_string(rcfg, cfg->config_group_id, ev->group, GT_KAFKA_GROUP_MAX);

	bool linked = false;
	if ((cfg->flags & GT_KAFKA_READER_HEADERS) && header_parent(cfg, msg, ev)) {
		ev->flags |= GT_KAFKA_EVENT_HEADER_LINK;
		linked = true;
	}
	if (!linked && (ev->flags & GT_KAFKA_EVENT_OFFSET) && ev->topic_len > 0)
		linked = producer_parent(cfg, msg, ev);
	if (!linked) {
		struct gt_span_context *parent = gt_active_span(&key);
		if (parent)
			gt_new_child(&ev->span, parent);
		else
			gt_new_root(&ev->span);
	}
	/* the handling of this message: calls the goroutine makes until its next read are the span's children */
	if (!gt_goroutine_span(&key)) {
		__u64 id;
		__builtin_memcpy(&id, ev->span.span_id, 8);
		if (bpf_map_update_elem(&gt_goroutine_spans, &key, &ev->span, BPF_ANY) == 0)
			bpf_map_update_elem(&gt_kafka_handling, &key, &id, BPF_ANY);
	}
	if (!(ev->span.flags & GT_SPAN_SAMPLED)) {
		gt_count(GT_COUNTER_NOT_SAMPLED);
		return 0;
	}
	struct gt_kafka_event *out = bpf_ringbuf_reserve(&gt_events, sizeof(*out), 0);
	if (!out) {
		gt_count(GT_COUNTER_RINGBUF_FULL);
		return 0;
	}
	__builtin_memcpy(out, ev, sizeof(*out));
	out->hdr.cpu = bpf_get_smp_processor_id();
	gt_submit(out);
	return 0;
}
