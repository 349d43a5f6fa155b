/* github.com/segmentio/kafka-go, the Writer: one event per message written,
 * sent when the broker has answered for the batch the message went in.
 *
 *   func (w *Writer) WriteMessages(ctx context.Context, msgs ...Message) error
 *     entry: w RAX; ctx RBX, RCX; msgs (ptr, len, cap) RDI, RSI, R8
 *     every RET: error (itab, data) RAX, RBX
 *   func (ptw *partitionWriter) writeBatch(batch *writeBatch)
 *     entry: ptw RAX; batch RBX (its own goroutine, per partition)
 *
 * WriteMessages runs on the caller's goroutine: there each message gets its
 * span (a child of the span active on that goroutine), kept in
 * gt_kafka_pending under the message's identity — the addresses of its Key
 * and Value bytes, which the batches share (a batch copies the Message
 * values, not their bytes). writeBatch runs on a goroutine of the writer's
 * own and may carry the messages of many WriteMessages calls; at its return
 * every message of the batch holds the broker's answer (Topic, Partition,
 * Offset = the produce response's base offset + its index; see kafka.h),
 * and batch.err the batch's error: each message's event is sent then, and
 * its (topic, partition, offset) published for the consumer. A
 * WriteMessages that fails before its messages reach a batch (a topic that
 * does not exist fails the partition lookup) sends the events of those
 * messages at its own return, with its error.
 *
 * A consumer may read a message before writeBatch returns (see kafka.h):
 * writeBatch's entry therefore publishes each traced message of the batch
 * by content too (gt_kafka_content_links), and its return removes it once
 * the offset link is there. */
#include "../kafka.h"
#include "ancestry.h"

struct gt_kafka_writer_config {
	__u32 msg_topic;    /* Message.Topic (string) */
	__u32 msg_offset;   /* Message.Offset (int64) */
	__u32 msg_key;      /* Message.Key ([]byte) */
	__u32 msg_value;    /* Message.Value ([]byte) */
	__u32 msg_size;     /* sizeof(Message): Message.Time + 24 */
	__u32 batch_msgs;   /* writeBatch.msgs ([]Message) */
	__u32 batch_err;    /* writeBatch.err (error) */
	__u32 ptw_meta;     /* partitionWriter.meta (topicPartition) */
	__u32 tp_topic;     /* topicPartition.topic (string) */
	__u32 tp_partition; /* topicPartition.partition (int32) */
	__u32 writer_topic; /* Writer.Topic (string) */
	__u32 flags;        /* enum gt_kafka_writer_flags */
};

enum gt_kafka_writer_flags {
	GT_KAFKA_WRITER_ENABLED = 1,
};

/* A message's identity between WriteMessages and writeBatch. */
struct gt_kafka_msg_key {
	__u32 tgid;
	__u32 reserved;
	__u64 key_ptr;
	__u64 value_ptr;
};

struct gt_kafka_pending {
	struct gt_span_context span;
	__u64 start_ns;
	/* set by writeBatch's entry when published by content (hash 0: not; never 0 else) */
	__u64 content_hash;
	__s64 key_len;
	__s64 value_len;
};

/* A WriteMessages call in flight (per goroutine). */
struct gt_kafka_write_call {
	__u64 start_ns;
	__u64 writer;
	__u64 msgs;
	__s64 count;
};

/* A writeBatch in flight (per goroutine). */
struct gt_kafka_batch_call {
	__u64 batch;
	__s64 partition;
	__s32 topic_len;
	__u32 reserved;
	char topic[GT_KAFKA_TOPIC_MAX];
};

enum gt_hit_site_kafka_writer {
	GT_HIT_KAFKA_WRITE_ENTRY = 80,
	GT_HIT_KAFKA_WRITE_RETURN = 81,
	GT_HIT_KAFKA_BATCH_ENTRY = 82,
	GT_HIT_KAFKA_BATCH_RETURN = 83,
};

enum gt_paired_function_kafka_writer {
	GT_PAIRED_KAFKA_WRITE = 80,
	GT_PAIRED_KAFKA_BATCH = 81,
};

GT_EXPORT_LAYOUTS(kafka_writer,
	struct gt_kafka_writer_config config;
	enum gt_kafka_writer_flags config_flags;
	enum gt_hit_site_kafka_writer hit_site;
	enum gt_paired_function_kafka_writer paired_function;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_kafka_writer_config);
} gt_kafka_writer_config SEC(".maps");

/* Keyed by tgid first, as every state map is: removed when the process exits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_KAFKA_PENDING_MAX);
	__type(key, struct gt_kafka_msg_key);
	__type(value, struct gt_kafka_pending);
} gt_kafka_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_KAFKA_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_kafka_write_call);
} gt_kafka_write_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_KAFKA_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_kafka_batch_call);
} gt_kafka_batch_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_kafka_batch_call);
} kafka_batch_scratch SEC(".maps");

/* The identity of the message at `msg`; false when it has none (no key, no value). */
static __always_inline bool msg_identity(const struct gt_kafka_writer_config *cfg, __u32 tgid, __u64 msg,
					 struct gt_kafka_msg_key *k)
{
	k->tgid = tgid;
	k->reserved = 0;
	if (go_read_ptr(msg, cfg->msg_key, &k->key_ptr) < 0 ||
	    go_read_ptr(msg, cfg->msg_value, &k->value_ptr) < 0)
		return false;
	return k->key_ptr || k->value_ptr;
}

/* Reads up to GT_KAFKA_KEY_MAX bytes of the message's key. */
static __always_inline void read_key(const struct gt_kafka_writer_config *cfg, __u64 msg,
				     struct gt_kafka_event *ev)
{
	struct go_slice key = {};
	ev->key_len = -1;
	if (bpf_probe_read_user(&key, sizeof(key), (void *)(msg + cfg->msg_key)) < 0)
		return;
	ev->key_len = key.len < 0 ? 0 : key.len > 0x7fffffff ? 0x7fffffff : (__s32)key.len;
	__u32 n = key.len < GT_KAFKA_KEY_MAX ? (__u32)key.len : GT_KAFKA_KEY_MAX;
	if (key.len > 0 && key.ptr && n > 0)
		bpf_probe_read_user(ev->key, n & (GT_KAFKA_KEY_MAX | (GT_KAFKA_KEY_MAX - 1)),
				    (void *)key.ptr);
}

SEC("uprobe.multi")
int gt_kafka_write_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_kafka_writer_config *cfg = gt_probe_enter(ctx, &gt_kafka_writer_config, &key, &bin_id,
							    GT_HIT_KAFKA_WRITE_ENTRY);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_KAFKA_WRITER_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_KAFKA_WRITE_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct gt_kafka_write_call call = {
		.start_ns = bpf_ktime_get_ns(),
		.writer = GO_ARG1(ctx),
		.msgs = GO_ARG4(ctx),
		.count = (__s64)GO_ARG5(ctx),
	};
	struct gt_span_context *parent = gt_active_span(&key);
	struct gt_kafka_pending p = { .start_ns = call.start_ns };
	for (__u32 i = 0; i < GT_KAFKA_MSGS_MAX; i++) {
		struct gt_kafka_msg_key mk;
		if ((__s64)i >= call.count || !call.msgs)
			break;
		if (!msg_identity(cfg, key.tgid, call.msgs + (__u64)i * cfg->msg_size, &mk)) {
			gt_kafka_count(GT_KAFKA_MSGS_UNTRACED, 1);
			continue;
		}
		if (parent)
			gt_new_child(&p.span, parent);
		else
			gt_new_root(&p.span);
		if (bpf_map_update_elem(&gt_kafka_pending, &mk, &p, BPF_ANY) < 0)
			gt_count(GT_COUNTER_INFLIGHT_FULL);
	}
	if (call.count > GT_KAFKA_MSGS_MAX)
		gt_kafka_count(GT_KAFKA_MSGS_UNTRACED, call.count - GT_KAFKA_MSGS_MAX);
	gt_mark_entered(&key, GT_PAIRED_KAFKA_WRITE);
	if (bpf_map_update_elem(&gt_kafka_write_calls, &key, &call, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_KAFKA_WRITE);
		gt_debug_hit(ctx, GT_HIT_KAFKA_WRITE_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_KAFKA_WRITE_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	return 0;
}

/* Sends the event of one message whose pending span is `p`; the caller fills what it knows. */
static __always_inline struct gt_kafka_event *reserve(const struct gt_kafka_pending *p, __u32 tgid,
						      __u32 bin_id, __u64 goid)
{
	if (!(p->span.flags & GT_SPAN_SAMPLED)) {
		gt_count(GT_COUNTER_NOT_SAMPLED);
		return 0;
	}
	struct gt_kafka_event *ev = bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0);
	if (!ev) {
		gt_count(GT_COUNTER_RINGBUF_FULL);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	gt_fill_header(&ev->hdr, GT_EVENT_KAFKA_PRODUCER, sizeof(*ev), tgid, bin_id, goid);
	ev->hdr.cpu = bpf_get_smp_processor_id();
	ev->start_ns = p->start_ns;
	ev->end_ns = bpf_ktime_get_ns();
	__builtin_memcpy(&ev->span, &p->span, sizeof(ev->span));
	ev->key_len = -1;
	ev->group_len = -1;
	return ev;
}

SEC("uprobe.multi")
int gt_kafka_write_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_kafka_writer_config *cfg = gt_probe_enter(ctx, &gt_kafka_writer_config, &key, &bin_id,
							    GT_HIT_KAFKA_WRITE_RETURN);
	if (!cfg)
		return 0;
	struct gt_kafka_write_call *c = bpf_map_lookup_elem(&gt_kafka_write_calls, &key);
	gt_debug_hit(ctx, GT_HIT_KAFKA_WRITE_RETURN, c ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!c) {
		gt_count_no_entry(&key, GT_PAIRED_KAFKA_WRITE);
		return 0;
	}
	struct gt_kafka_write_call call = *c;
	bpf_map_delete_elem(&gt_kafka_write_calls, &key);
	__u64 err_itab = GO_ARG1(ctx), err_data = GO_ARG2(ctx);
	/* success: every message went through writeBatch (or, with Async, will) */
	if (!err_itab)
		return 0;
	for (__u32 i = 0; i < GT_KAFKA_MSGS_MAX; i++) {
		struct gt_kafka_msg_key mk;
		if ((__s64)i >= call.count || !call.msgs)
			break;
		__u64 msg = call.msgs + (__u64)i * cfg->msg_size;
		if (!msg_identity(cfg, key.tgid, msg, &mk))
			continue;
		struct gt_kafka_pending *p = bpf_map_lookup_elem(&gt_kafka_pending, &mk);
		if (!p)
			continue; /* its batch was sent: writeBatch sent its event */
		struct gt_kafka_event *ev = reserve(p, key.tgid, bin_id, key.goid);
		bpf_map_delete_elem(&gt_kafka_pending, &mk);
		if (!ev)
			continue;
		/* the message's own topic, else the writer's */
		ev->topic_len = go_read_string(msg, cfg->msg_topic, ev->topic, GT_KAFKA_TOPIC_MAX);
		if (ev->topic_len <= 0)
			ev->topic_len = go_read_string(call.writer, cfg->writer_topic, ev->topic,
						       GT_KAFKA_TOPIC_MAX);
		read_key(cfg, msg, ev);
		gt_kafka_error(ev, err_itab, err_data);
		gt_submit(ev);
	}
	return 0;
}

/* Publishes every traced message of the batch by content, before the broker has it. */
static __always_inline void publish_contents(const struct gt_kafka_writer_config *cfg, __u32 tgid,
					     const struct gt_kafka_batch_call *b)
{
	struct go_slice msgs = {};
	if (bpf_probe_read_user(&msgs, sizeof(msgs), (void *)(b->batch + cfg->batch_msgs)) < 0)
		return;
	__u64 now = bpf_ktime_get_ns();
	for (__u32 i = 0; i < GT_KAFKA_MSGS_MAX; i++) {
		struct gt_kafka_msg_key mk;
		if ((__s64)i >= msgs.len || !msgs.ptr)
			break;
		__u64 msg = msgs.ptr + (__u64)i * cfg->msg_size;
		if (!msg_identity(cfg, tgid, msg, &mk))
			continue;
		struct gt_kafka_pending *p = bpf_map_lookup_elem(&gt_kafka_pending, &mk);
		if (!p)
			continue; /* counted unpaired at the return */
		struct gt_kafka_content_key *ck = gt_kafka_content_key_of(b->topic, b->partition, msg,
									  cfg->msg_key, cfg->msg_value);
		if (!ck) {
			gt_kafka_count(GT_KAFKA_CONTENT_STORE_FAILED, 1);
			continue;
		}
		struct gt_kafka_content_link link = { .time_ns = now, .in_flight = 1 };
		__builtin_memcpy(&link.span, &p->span, sizeof(link.span));
		if (bpf_map_update_elem(&gt_kafka_content_links, ck, &link, BPF_NOEXIST) < 0) {
			/* an identical message in flight: neither can be told apart */
			struct gt_kafka_content_link *other = bpf_map_lookup_elem(&gt_kafka_content_links,
										  ck);
			if (!other) {
				gt_kafka_count(GT_KAFKA_CONTENT_STORE_FAILED, 1);
				continue;
			}
			__sync_fetch_and_add(&other->in_flight, 1);
		}
		p->key_len = ck->key_len;
		p->value_len = ck->value_len;
		p->content_hash = ck->hash;
	}
}

/* Removes a message's content link (its offset link is published, or the batch failed). */
static __always_inline void unpublish_content(const struct gt_kafka_batch_call *b,
					      const struct gt_kafka_pending *p)
{
	__u32 zero = 0;
	struct gt_kafka_content_bytes *sc = bpf_map_lookup_elem(&kafka_content_scratch, &zero);
	if (!sc)
		return;
	struct gt_kafka_content_key *ck = &sc->key;
	__builtin_memcpy(ck->topic, b->topic, GT_KAFKA_TOPIC_MAX);
	ck->partition = b->partition;
	ck->hash = p->content_hash;
	ck->key_len = p->key_len;
	ck->value_len = p->value_len;
	struct gt_kafka_content_link *l = bpf_map_lookup_elem(&gt_kafka_content_links, ck);
	if (!l)
		return;
	/* (no fetched value on older BPF targets): whoever decrements last reads 0 */
	__sync_fetch_and_add(&l->in_flight, -1);
	__u32 left = *(volatile __u32 *)&l->in_flight;
	if (left == 0 || left > GT_KAFKA_CONTENT_MAX) /* 0, or wrapped below */
		bpf_map_delete_elem(&gt_kafka_content_links, ck);
}

SEC("uprobe.multi")
int gt_kafka_batch_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_kafka_writer_config *cfg = gt_probe_enter(ctx, &gt_kafka_writer_config, &key, &bin_id,
							    GT_HIT_KAFKA_BATCH_ENTRY);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_KAFKA_WRITER_ENABLED))
		return 0;
	struct gt_kafka_batch_call *b = bpf_map_lookup_elem(&kafka_batch_scratch, &zero);
	if (!b)
		return 0;
	__builtin_memset(b, 0, sizeof(*b));
	__u64 meta = GO_ARG1(ctx) + cfg->ptw_meta;
	__s32 partition = -1;
	b->batch = GO_ARG2(ctx);
	b->topic_len = go_read_string(meta, cfg->tp_topic, b->topic, GT_KAFKA_TOPIC_MAX);
	if (bpf_probe_read_user(&partition, sizeof(partition), (void *)(meta + cfg->tp_partition)) < 0)
		partition = -1;
	b->partition = partition;
	publish_contents(cfg, key.tgid, b);
	gt_mark_entered(&key, GT_PAIRED_KAFKA_BATCH);
	if (bpf_map_update_elem(&gt_kafka_batch_calls, &key, b, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_KAFKA_BATCH);
		gt_debug_hit(ctx, GT_HIT_KAFKA_BATCH_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_KAFKA_BATCH_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	return 0;
}

SEC("uprobe.multi")
int gt_kafka_batch_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_kafka_writer_config *cfg = gt_probe_enter(ctx, &gt_kafka_writer_config, &key, &bin_id,
							    GT_HIT_KAFKA_BATCH_RETURN);
	if (!cfg)
		return 0;
	struct gt_kafka_batch_call *b = bpf_map_lookup_elem(&gt_kafka_batch_calls, &key);
	gt_debug_hit(ctx, GT_HIT_KAFKA_BATCH_RETURN, b ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!b) {
		gt_count_no_entry(&key, GT_PAIRED_KAFKA_BATCH);
		return 0;
	}
	struct go_slice msgs = {};
	struct go_iface {
		__u64 tab;
		__u64 data;
	} err = {};
	if (bpf_probe_read_user(&msgs, sizeof(msgs), (void *)(b->batch + cfg->batch_msgs)) < 0 ||
	    bpf_probe_read_user(&err, sizeof(err), (void *)(b->batch + cfg->batch_err)) < 0) {
		gt_count(GT_COUNTER_READ_FAILED);
		bpf_map_delete_elem(&gt_kafka_batch_calls, &key);
		return 0;
	}
	if (msgs.len > GT_KAFKA_MSGS_MAX)
		gt_kafka_count(GT_KAFKA_MSGS_UNTRACED, msgs.len - GT_KAFKA_MSGS_MAX);
	__u64 now = bpf_ktime_get_ns();
	for (__u32 i = 0; i < GT_KAFKA_MSGS_MAX; i++) {
		struct gt_kafka_msg_key mk;
		if ((__s64)i >= msgs.len || !msgs.ptr)
			break;
		__u64 msg = msgs.ptr + (__u64)i * cfg->msg_size;
		if (!msg_identity(cfg, key.tgid, msg, &mk))
			continue;
		struct gt_kafka_pending *p = bpf_map_lookup_elem(&gt_kafka_pending, &mk);
		if (!p) {
			gt_kafka_count(GT_KAFKA_MSGS_UNPAIRED, 1);
			continue;
		}
		struct gt_kafka_pending pend = *p;
		bpf_map_delete_elem(&gt_kafka_pending, &mk);
		__s64 offset = -1;
		if (!err.tab &&
		    bpf_probe_read_user(&offset, sizeof(offset), (void *)(msg + cfg->msg_offset)) == 0) {
			struct gt_kafka_link_key *lk = gt_kafka_link_key_of(b->topic, b->partition, offset);
			struct gt_kafka_link link = { .time_ns = now };
			__builtin_memcpy(&link.span, &pend.span, sizeof(link.span));
			if (lk && bpf_map_update_elem(&gt_kafka_links, lk, &link, BPF_ANY) == 0)
				gt_kafka_count(GT_KAFKA_LINK_PUBLISHED, 1);
			else
				gt_kafka_count(GT_KAFKA_LINK_STORE_FAILED, 1);
		}
		/* after the offset link: a consumer missing the content finds the offset */
		if (pend.content_hash)
			unpublish_content(b, &pend);
		struct gt_kafka_event *ev = reserve(&pend, key.tgid, bin_id, key.goid);
		if (!ev)
			continue;
		ev->end_ns = now;
		__builtin_memcpy(ev->topic, b->topic, GT_KAFKA_TOPIC_MAX);
		ev->topic_len = b->topic_len;
		ev->partition = b->partition;
		if (b->partition >= 0)
			ev->flags |= GT_KAFKA_EVENT_PARTITION;
		if (!err.tab) {
			ev->offset = offset;
			ev->flags |= GT_KAFKA_EVENT_OFFSET;
		} else {
			gt_kafka_error(ev, err.tab, err.data);
		}
		read_key(cfg, msg, ev);
		gt_submit(ev);
	}
	bpf_map_delete_elem(&gt_kafka_batch_calls, &key);
	return 0;
}
