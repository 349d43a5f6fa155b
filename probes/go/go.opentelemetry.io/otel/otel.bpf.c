/* go.opentelemetry.io/otel: spans a program makes through the OpenTelemetry
 * Go API while no SDK is installed (the global tracer without a delegate,
 * whose spans are no-ops): one event per span, sent when it ends, with its
 * name, status and events. The span is the child of the span active on its
 * goroutine at start, and is that goroutine's active span until it ends
 * (otel_active_span.h), so spans started inside it are its children.
 * Nothing is written into the program.
 *
 * Probed (v1.35.0 and later: newSpan is where the global tracer, having
 * found no delegate, makes its no-op span; with an SDK installed the
 * delegate's Start runs instead and nothing here is hit):
 *   func (t *tracer) newSpan(ctx context.Context, autoSpan *bool, name string,
 *                            opts []trace.SpanStartOption) (context.Context, trace.Span)
 *     entry: t RAX; ctx RBX, RCX; autoSpan RDI; name RSI (pointer), R8 (length)
 *     RET: ctx RAX, RBX; span (itab, data) RCX, RDI — data points to the
 *     nonRecordingSpan copy the span's methods are called with: the span's key
 *   The span's methods, called through the trace.Span interface, run the
 *   pointer-receiver wrappers (receiver: the interface's data word, RAX):
 *   func (*nonRecordingSpan) End(options ...trace.SpanEndOption)
 *   func (*nonRecordingSpan) SetStatus(code codes.Code, description string)
 *     code RBX; description RCX (pointer), RDI (length)
 *   func (*nonRecordingSpan) AddEvent(name string, options ...trace.EventOption)
 *     name RBX (pointer), RCX (length)
 *   func (*nonRecordingSpan) SetAttributes(kv ...attribute.KeyValue)
 *     kv RBX (pointer), RCX (length): attribute.KeyValue{Key string; Value
 *     attribute.Value{vtype Type; numeric uint64; stringly string; slice any}},
 *     offsets from the binary (the element's size: Value's offset + slice's
 *     offset + 16, slice being Value's last field) */
#include "go_abi.h"
#include "otel_active_span.h"

enum gt_otel_limits {
	GT_OTEL_NAME_MAX = 64,
	GT_OTEL_DESCRIPTION_MAX = 64,
	GT_OTEL_EVENT_NAME_MAX = 32,
	GT_OTEL_EVENTS_MAX = 4,
	GT_OTEL_ATTRIBUTES_MAX = 8,
	GT_OTEL_ATTRIBUTE_KEY_MAX = 32,
	GT_OTEL_ATTRIBUTE_STRING_MAX = 64,
	GT_OTEL_SPANS_MAX = 16384,
};

struct gt_otel_config {
	__u32 flags;          /* enum gt_otel_flags */
	__u32 kv_size;        /* sizeof(attribute.KeyValue) */
	__u32 kv_key;         /* attribute.KeyValue.Key (a string) */
	__u32 kv_value;       /* attribute.KeyValue.Value */
	__u32 value_vtype;    /* attribute.Value.vtype */
	__u32 value_numeric;  /* attribute.Value.numeric */
	__u32 value_stringly; /* attribute.Value.stringly */
	__u32 reserved;
};

enum gt_otel_flags {
	GT_OTEL_ENABLED = 1,
	GT_OTEL_ATTRIBUTES = 2, /* the attribute offsets are known */
};

/* attribute.Type: the scalar types, the same in every version */
enum gt_otel_attribute_type {
	GT_OTEL_ATTRIBUTE_BOOL = 1,
	GT_OTEL_ATTRIBUTE_INT64 = 2,
	GT_OTEL_ATTRIBUTE_FLOAT64 = 3,
	GT_OTEL_ATTRIBUTE_STRING = 4,
};

struct gt_otel_attribute {
	__u32 type;    /* enum gt_otel_attribute_type; others are not kept */
	__s32 key_len; /* the Go string's length; -1: unreadable */
	__s32 string_len;
	__u32 reserved;
	__u64 numeric; /* bool (0/1), int64, float64's bits */
	char key[GT_OTEL_ATTRIBUTE_KEY_MAX];
	char string[GT_OTEL_ATTRIBUTE_STRING_MAX];
};

/* codes.Code of go.opentelemetry.io/otel/codes */
enum gt_otel_status_code {
	GT_OTEL_STATUS_UNSET = 0,
	GT_OTEL_STATUS_ERROR = 1,
	GT_OTEL_STATUS_OK = 2,
};

struct gt_otel_span_event_item {
	__u64 time_ns;  /* CLOCK_MONOTONIC */
	__s32 name_len; /* the Go string's length; -1: unreadable */
	__u32 reserved;
	char name[GT_OTEL_EVENT_NAME_MAX];
};

struct gt_otel_span_event {
	struct gt_event_header hdr; /* goid: the goroutine that started the span */
	__u64 start_ns;
	__u64 end_ns;
	struct gt_span_context span;
	__s32 name_len;        /* the Go string's length; -1: unreadable */
	__u32 status_code;     /* enum gt_otel_status_code */
	__s32 description_len; /* of the status description */
	__u32 events;          /* AddEvent calls; those past GT_OTEL_EVENTS_MAX are not kept */
	__u32 attributes;      /* attributes set; those past GT_OTEL_ATTRIBUTES_MAX are not kept */
	__u32 reserved;
	char name[GT_OTEL_NAME_MAX];
	char description[GT_OTEL_DESCRIPTION_MAX];
	/* the first GT_OTEL_EVENTS_MAX events, in order (named fields: the
	 * layout generator takes arrays of bytes only) */
	struct gt_otel_span_event_item event0;
	struct gt_otel_span_event_item event1;
	struct gt_otel_span_event_item event2;
	struct gt_otel_span_event_item event3;
	/* the first GT_OTEL_ATTRIBUTES_MAX attributes set, in order */
	struct gt_otel_attribute attr0;
	struct gt_otel_attribute attr1;
	struct gt_otel_attribute attr2;
	struct gt_otel_attribute attr3;
	struct gt_otel_attribute attr4;
	struct gt_otel_attribute attr5;
	struct gt_otel_attribute attr6;
	struct gt_otel_attribute attr7;
};

_Static_assert(GT_OTEL_EVENTS_MAX == 4, "one eventN field per kept event");
_Static_assert(__builtin_offsetof(struct gt_otel_span_event, event3) ==
		       __builtin_offsetof(struct gt_otel_span_event, event0) +
			       3 * sizeof(struct gt_otel_span_event_item),
	       "eventN fields are consecutive");
_Static_assert(GT_OTEL_ATTRIBUTES_MAX == 8, "one attrN field per kept attribute");
_Static_assert(__builtin_offsetof(struct gt_otel_span_event, attr7) ==
		       __builtin_offsetof(struct gt_otel_span_event, attr0) +
			       7 * sizeof(struct gt_otel_attribute),
	       "attrN fields are consecutive");

enum gt_event_type_otel {
	GT_EVENT_OTEL_SPAN = 25,
};

enum gt_hit_site_otel {
	GT_HIT_OTEL_START = 60,
	GT_HIT_OTEL_START_RETURN = 61,
	GT_HIT_OTEL_END = 62,
	GT_HIT_OTEL_SET_STATUS = 63,
	GT_HIT_OTEL_ADD_EVENT = 64,
	GT_HIT_OTEL_SET_ATTRIBUTES = 65,
};

enum gt_paired_function_otel {
	GT_PAIRED_OTEL_START = 25,
};

GT_EXPORT_LAYOUTS(otel,
	enum gt_event_type_otel event_type;
	enum gt_hit_site_otel hit_site;
	enum gt_paired_function_otel paired_function;
	struct gt_otel_span_event event;
	struct gt_otel_span_event_item event_item;
	struct gt_otel_config config;
	enum gt_otel_limits limits;
	enum gt_otel_flags config_flags;
	enum gt_otel_status_code status_code;
	struct gt_otel_saved_span saved_span;
	struct gt_otel_attribute attribute;
	enum gt_otel_attribute_type attribute_type;
);

/* A span in flight: its event, filled as it goes, and what its goroutine's
 * active span was before it. */
struct otel_span_state {
	struct gt_otel_span_event ev;
	struct gt_otel_saved_span saved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_otel_config);
} gt_otel_config SEC(".maps");

/* Spans being started: keyed by goroutine, from newSpan's entry to its return. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_OTEL_SPANS_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct otel_span_state);
} gt_otel_starting SEC(".maps");

/* Spans started and not ended: keyed by the span's address (a
 * gt_goroutine_key whose goid is the pointer, so the process's state is
 * cleared with its goroutines'). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_OTEL_SPANS_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct otel_span_state);
} gt_otel_spans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct otel_span_state);
} otel_zero SEC(".maps"); /* never written: an all-zero state */

/* Copies the Go string (ptr, len) into dst of `cap` bytes;
 * returns its length, -1 when unreadable. */
static __always_inline __s32 copy_go_string(__u64 ptr, __s64 len, char *dst, __u32 cap)
{
	__s32 n = len > 0x7fffffff ? 0x7fffffff : (__s32)len;
	if (!ptr || len <= 0)
		return len < 0 ? -1 : 0;
	__u32 c = len < cap ? (__u32)len : cap;
	/* keeps the verifier's bound on c after the compiler's rewriting */
	asm volatile("" : "+r"(c));
	if (c > cap)
		return -1;
	if (bpf_probe_read_user(dst, c, (void *)ptr) < 0)
		return -1;
	return n;
}

SEC("uprobe.multi")
int gt_otel_start(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_otel_config *cfg = gt_probe_enter(ctx, &gt_otel_config, &key, &bin_id, GT_HIT_OTEL_START);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_OTEL_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_OTEL_START, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	/* the state is too large to clear on the BPF stack or with memset:
	 * stored from an all-zero value, then filled in place */
	struct otel_span_state *blank = bpf_map_lookup_elem(&otel_zero, &zero);
	if (!blank)
		return 0;
	if (bpf_map_update_elem(&gt_otel_starting, &key, blank, BPF_ANY) < 0) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
		gt_debug_hit(ctx, GT_HIT_OTEL_START, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct otel_span_state *st = bpf_map_lookup_elem(&gt_otel_starting, &key);
	if (!st)
		return 0;
	struct gt_otel_span_event *ev = &st->ev;
	gt_fill_header(&ev->hdr, GT_EVENT_OTEL_SPAN, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->start_ns = bpf_ktime_get_ns();
	struct gt_span_context *parent = gt_goroutine_span(&key);
	if (parent)
		gt_new_child(&ev->span, parent);
	else
		gt_new_root(&ev->span);
	ev->name_len = copy_go_string(GO_ARG5(ctx), (__s64)GO_ARG6(ctx), ev->name, GT_OTEL_NAME_MAX);
	gt_mark_entered(&key, GT_PAIRED_OTEL_START);
	gt_debug_hit(ctx, GT_HIT_OTEL_START, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	return 0;
}

SEC("uprobe.multi")
int gt_otel_start_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_otel_config *cfg = gt_probe_enter(ctx, &gt_otel_config, &key, &bin_id,
						    GT_HIT_OTEL_START_RETURN);
	if (!cfg)
		return 0;
	struct otel_span_state *st = bpf_map_lookup_elem(&gt_otel_starting, &key);
	gt_debug_hit(ctx, GT_HIT_OTEL_START_RETURN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st) {
		gt_count_no_entry(&key, GT_PAIRED_OTEL_START);
		return 0;
	}
	struct gt_goroutine_key sk = { .tgid = key.tgid, .goid = GO_ARG4(ctx) };
	if (sk.goid) {
		gt_otel_push_active(&key, &st->ev.span, &st->saved);
		if (bpf_map_update_elem(&gt_otel_spans, &sk, st, BPF_ANY) < 0) {
			gt_count(GT_COUNTER_INFLIGHT_FULL);
			gt_otel_pop_active(&key, &st->ev.span, &st->saved);
		}
	}
	bpf_map_delete_elem(&gt_otel_starting, &key);
	return 0;
}

SEC("uprobe.multi")
int gt_otel_end(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_otel_config *cfg = gt_probe_enter(ctx, &gt_otel_config, &key, &bin_id, GT_HIT_OTEL_END);
	if (!cfg)
		return 0;
	struct gt_goroutine_key sk = { .tgid = key.tgid, .goid = GO_ARG1(ctx) };
	struct otel_span_state *st = bpf_map_lookup_elem(&gt_otel_spans, &sk);
	gt_debug_hit(ctx, GT_HIT_OTEL_END, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
	/* a span started before the process was traced has no state; so has a
	 * span ended twice (the API allows it; the second End does nothing) */
	if (!st)
		return 0;
	struct gt_goroutine_key starter = { .tgid = key.tgid, .goid = st->ev.hdr.goid };
	gt_otel_pop_active(&starter, &st->ev.span, &st->saved);
	if (!(st->ev.span.flags & GT_SPAN_SAMPLED)) {
		gt_count_not_sampled(&st->ev.span);
	} else {
		st->ev.hdr.binary_id = bin_id;
		st->ev.hdr.cpu = bpf_get_smp_processor_id();
		st->ev.end_ns = bpf_ktime_get_ns();
		/* copied by the helper: the event is too large to copy in BPF */
		if (bpf_ringbuf_output(&gt_events, &st->ev, sizeof(st->ev), gt_wake_flag()) < 0)
			gt_count(GT_COUNTER_RINGBUF_FULL);
	}
	bpf_map_delete_elem(&gt_otel_spans, &sk);
	return 0;
}

SEC("uprobe.multi")
int gt_otel_set_status(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_otel_config *cfg = gt_probe_enter(ctx, &gt_otel_config, &key, &bin_id,
						    GT_HIT_OTEL_SET_STATUS);
	if (!cfg)
		return 0;
	struct gt_goroutine_key sk = { .tgid = key.tgid, .goid = GO_ARG1(ctx) };
	struct otel_span_state *st = bpf_map_lookup_elem(&gt_otel_spans, &sk);
	gt_debug_hit(ctx, GT_HIT_OTEL_SET_STATUS, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st)
		return 0;
	__u32 code = (__u32)GO_ARG2(ctx);
	/* as the SDK does: Unset is no change, Ok is final, a description only
	 * goes with Error */
	if (code == GT_OTEL_STATUS_UNSET || code > GT_OTEL_STATUS_OK ||
	    st->ev.status_code == GT_OTEL_STATUS_OK)
		return 0;
	st->ev.status_code = code;
	st->ev.description_len = 0;
	if (code == GT_OTEL_STATUS_ERROR)
		st->ev.description_len = copy_go_string(GO_ARG3(ctx), (__s64)GO_ARG4(ctx), st->ev.description,
							GT_OTEL_DESCRIPTION_MAX);
	return 0;
}

SEC("uprobe.multi")
int gt_otel_add_event(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_otel_config *cfg = gt_probe_enter(ctx, &gt_otel_config, &key, &bin_id,
						    GT_HIT_OTEL_ADD_EVENT);
	if (!cfg)
		return 0;
	struct gt_goroutine_key sk = { .tgid = key.tgid, .goid = GO_ARG1(ctx) };
	struct otel_span_state *st = bpf_map_lookup_elem(&gt_otel_spans, &sk);
	gt_debug_hit(ctx, GT_HIT_OTEL_ADD_EVENT, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st)
		return 0;
	__u32 i = st->ev.events;
	st->ev.events = i + 1;
	if (i >= GT_OTEL_EVENTS_MAX)
		return 0;
	/* eventN: consecutive, checked above */
	struct gt_otel_span_event_item *e = &st->ev.event0 + (i & (GT_OTEL_EVENTS_MAX - 1));
	e->time_ns = bpf_ktime_get_ns();
	e->name_len = copy_go_string(GO_ARG2(ctx), (__s64)GO_ARG3(ctx), e->name, GT_OTEL_EVENT_NAME_MAX);
	return 0;
}

SEC("uprobe.multi")
int gt_otel_set_attributes(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_otel_config *cfg = gt_probe_enter(ctx, &gt_otel_config, &key, &bin_id,
						    GT_HIT_OTEL_SET_ATTRIBUTES);
	if (!cfg)
		return 0;
	struct gt_goroutine_key sk = { .tgid = key.tgid, .goid = GO_ARG1(ctx) };
	struct otel_span_state *st = bpf_map_lookup_elem(&gt_otel_spans, &sk);
	gt_debug_hit(ctx, GT_HIT_OTEL_SET_ATTRIBUTES, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st || !(cfg->flags & GT_OTEL_ATTRIBUTES))
		return 0;
	__u64 kvs = GO_ARG2(ctx);
	__s64 n = (__s64)GO_ARG3(ctx);
	if (!kvs || n <= 0)
		return 0;
#pragma unroll
	for (int j = 0; j < GT_OTEL_ATTRIBUTES_MAX; j++) {
		if (j >= n)
			break;
		__u32 i = st->ev.attributes;
		st->ev.attributes = i + 1;
		if (i >= GT_OTEL_ATTRIBUTES_MAX)
			continue;
		/* attrN: consecutive, checked above */
		struct gt_otel_attribute *a = &st->ev.attr0 + (i & (GT_OTEL_ATTRIBUTES_MAX - 1));
		__u64 kv = kvs + (__u64)j * cfg->kv_size;
		__u64 val = kv + cfg->kv_value;
		struct go_string k = {}, v = {};
		__s64 vtype = 0;
		a->type = 0;
		a->key_len = -1;
		a->string_len = 0;
		if (bpf_probe_read_user(&k, sizeof(k), (void *)(kv + cfg->kv_key)) == 0)
			a->key_len = copy_go_string(k.ptr, k.len, a->key, GT_OTEL_ATTRIBUTE_KEY_MAX);
		if (bpf_probe_read_user(&vtype, sizeof(vtype), (void *)(val + cfg->value_vtype)) < 0)
			continue;
		if (vtype == GT_OTEL_ATTRIBUTE_STRING) {
			if (bpf_probe_read_user(&v, sizeof(v), (void *)(val + cfg->value_stringly)) < 0)
				continue;
			a->string_len = copy_go_string(v.ptr, v.len, a->string, GT_OTEL_ATTRIBUTE_STRING_MAX);
		} else if (vtype >= GT_OTEL_ATTRIBUTE_BOOL && vtype <= GT_OTEL_ATTRIBUTE_FLOAT64) {
			if (bpf_probe_read_user(&a->numeric, sizeof(a->numeric),
						(void *)(val + cfg->value_numeric)) < 0)
				continue;
		} else {
			continue; /* slices and maps are not kept */
		}
		a->type = (__u32)vtype;
	}
	/* attributes past the loop's bound: counted, not kept */
	if (n > GT_OTEL_ATTRIBUTES_MAX)
		st->ev.attributes += (__u32)(n - GT_OTEL_ATTRIBUTES_MAX);
	return 0;
}
