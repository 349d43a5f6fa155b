/* Head sampling decided in BPF (OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG).
 *
 * The decision is made once per trace on this node, where a probe starts a
 * span without a local parent: a new root (gt_new_root) or a span whose
 * parent came in a traceparent (gt_sample_remote_parent, called by
 * gt_parse_traceparent). Every other span follows its parent's
 * GT_SPAN_SAMPLED flag: children on the same goroutine and on goroutines it
 * started (ancestry.h), and server spans linked to a traced client of this
 * node (the connection maps carry the client's whole context). A span that
 * is not sampled is still kept in flight, so that its children inherit the
 * decision and its context (flags 00) still propagates; only its event is
 * not sent, counted by gt_count_not_sampled.
 *
 * Included by gotrail.h (gt_new_root lives here); needs gt_span_context,
 * gt_new_trace_and_span_id and gt_count from it. */
#pragma once

/* The root sampler: what decides a span without a parent (and, with
 * GT_SAMPLER_IGNORE_PARENT, one with a remote parent too). The all-zero
 * value, before user space writes the map, is parentbased_always_on, the
 * specification's default. */
enum gt_sampler_root {
	GT_SAMPLER_ALWAYS_ON = 0,
	GT_SAMPLER_ALWAYS_OFF = 1,
	/* TraceIdRatioBased: sampled when the trace id's 56 rightmost bits,
	 * read as a big-endian integer, are >= the rejection threshold */
	GT_SAMPLER_TRACE_ID_RATIO = 2,
};

enum gt_sampler_flags {
	/* always_on, always_off, traceidratio: the sampler decides spans with a
	 * remote parent too, ignoring its sampled flag (the parentbased_*
	 * samplers honour it: sampled → AlwaysOn, not sampled → AlwaysOff) */
	GT_SAMPLER_IGNORE_PARENT = 1,
};

/* The one entry of gt_sampler, written by user space at start and on each
 * configuration reload. */
struct gt_sampler_config {
	__u32 root;  /* enum gt_sampler_root */
	__u32 flags; /* enum gt_sampler_flags */
	/* GT_SAMPLER_TRACE_ID_RATIO: 2^56 - round(ratio * 2^56); 2^56 samples
	 * nothing, 0 everything */
	__u64 threshold;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_sampler_config);
} gt_sampler SEC(".maps");

GT_EXPORT_LAYOUTS(sampling,
	struct gt_sampler_config sampler;
	enum gt_sampler_root sampler_root;
	enum gt_sampler_flags sampler_flags;
);

/* The root sampler's decision for `trace_id` (16 bytes, W3C order). */
static __always_inline bool gt_sampler_keeps(const struct gt_sampler_config *s, const __u8 *trace_id)
{
	if (s->root == GT_SAMPLER_ALWAYS_OFF)
		return false;
	if (s->root != GT_SAMPLER_TRACE_ID_RATIO)
		return true;
	/* the randomness value: the 7 rightmost bytes (W3C Trace Context
	 * Level 2 makes them random; gotrail's own trace ids are random) */
	__u64 r = 0;
#pragma unroll
	for (int i = 9; i < 16; i++)
		r = r << 8 | trace_id[i];
	return r >= s->threshold;
}

static __always_inline const struct gt_sampler_config *gt_sampler_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&gt_sampler, &zero);
}

/* A new root span: random trace and span ids; sampled as the configured
 * root sampler decides (GT_SPAN_SAMPLER_DECIDED marks the decision as this
 * node's, for the count of spans not made). */
static __always_inline void gt_new_root(struct gt_span_context *c)
{
	gt_new_trace_and_span_id(c->trace_id, c->span_id);
	const struct gt_sampler_config *s = gt_sampler_config();
	bool keep = !s || gt_sampler_keeps(s, c->trace_id);
	c->flags = GT_SPAN_SAMPLER_DECIDED | (keep ? GT_SPAN_SAMPLED : 0);
}

/* A span whose parent came from elsewhere (a traceparent): its sampled flag
 * is the parent's, as parsed, under parentbased_*; the other samplers decide
 * by the trace id and ignore it. */
static __always_inline void gt_sample_remote_parent(struct gt_span_context *c)
{
	const struct gt_sampler_config *s = gt_sampler_config();
	if (!s || !(s->flags & GT_SAMPLER_IGNORE_PARENT))
		return;
	bool keep = gt_sampler_keeps(s, c->trace_id);
	c->flags = (c->flags & ~(__u32)GT_SPAN_SAMPLED) | GT_SPAN_SAMPLER_DECIDED |
		   (keep ? GT_SPAN_SAMPLED : 0);
}

/* Counts a span not made because its trace is not sampled, by where that was
 * decided: this node's sampler, or an incoming parent's flags. */
static __always_inline void gt_count_not_sampled(const struct gt_span_context *c)
{
	gt_count((c->flags & GT_SPAN_SAMPLER_DECIDED) ? GT_COUNTER_NOT_SAMPLED_SAMPLER
						      : GT_COUNTER_NOT_SAMPLED);
}
