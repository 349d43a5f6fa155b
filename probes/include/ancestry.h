/* Goroutine ancestry: which request a goroutine works for when it was not
 * the one serving it (errgroup, fan-out, `go func()` per call).
 *
 * probes/go/runtime records, when a goroutine is created, the span its
 * creator was serving (or had itself inherited) in gt_goroutine_origins;
 * outgoing-call probes find a goroutine's parent span with gt_active_span.
 * An inherited span counts only while the goroutine that serves it is still
 * serving that very span: a goroutine that outlives its request (fire and
 * forget, a pool started lazily inside a request) starts new traces rather
 * than joining a finished or, worse, a later request of the same goroutine. */
#pragma once

#include "gotrail.h"

/* Generations through which a serving span is inherited: 1 is a goroutine
 * the serving goroutine started itself, 2 one started by that goroutine, … */
#define GT_GOROUTINE_GENERATIONS_MAX 8

#ifndef GT_GOROUTINE_ORIGINS_MAX
#define GT_GOROUTINE_ORIGINS_MAX 32768
#endif

struct gt_goroutine_origin {
	struct gt_span_context span; /* the span served when the ancestor started it */
	__u64 root_goid;             /* the goroutine serving that span */
	__u32 generation;            /* 1: started by the serving goroutine itself */
	__u32 reserved;
};

/* Created goroutines of traced processes whose creator had a span: an LRU
 * (an entry evicted early makes its goroutine start new traces, never join
 * another's), emptied as goroutines exit (runtime.goexit1) and processes
 * exit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_GOROUTINE_ORIGINS_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_goroutine_origin);
} gt_goroutine_origins SEC(".maps");

/* The inherited span of `o` if its root goroutine still serves it, else 0. */
static __always_inline struct gt_span_context *gt_origin_live(__u32 tgid, struct gt_goroutine_origin *o)
{
	struct gt_goroutine_key rk = { .tgid = tgid, .goid = o->root_goid };
	struct gt_span_context *served = gt_goroutine_span(&rk);
	__u64 a, b;
	if (!served)
		return 0;
	__builtin_memcpy(&a, served->span_id, 8);
	__builtin_memcpy(&b, o->span.span_id, 8);
	return a == b ? &o->span : 0;
}

/* The span an outgoing call made on goroutine `key` is the child of: the
 * one it serves, else the one it inherited from its ancestors while that is
 * still being served; 0 for none (a new trace). */
static __always_inline struct gt_span_context *gt_active_span(const struct gt_goroutine_key *key)
{
	struct gt_span_context *s = gt_goroutine_span(key);
	if (s)
		return s;
	struct gt_goroutine_origin *o = bpf_map_lookup_elem(&gt_goroutine_origins, key);
	return o ? gt_origin_live(key->tgid, o) : 0;
}
