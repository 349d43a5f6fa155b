/* The span a goroutine's own code made current through the OpenTelemetry Go
 * API (probes/go/go.opentelemetry.io/otel): it replaces the goroutine's entry
 * in gt_goroutine_spans while it runs, so that spans the probes make on that
 * goroutine (an http.Get's CLIENT span, another API span) become its
 * children, and gives the entry back when it ends. Kept apart from
 * gotrail.h: the server probes set and remove gt_goroutine_spans as before,
 * and know nothing of this. */
#pragma once

#include "gotrail.h"

/* What the goroutine's entry in gt_goroutine_spans was before an API span
 * took it over: restored when that span ends. */
struct gt_otel_saved_span {
	struct gt_span_context span;
	__u32 present; /* 0: the goroutine had no active span */
	__u32 reserved;
};

/* Makes `span` the active span of the goroutine of `key`, keeping the one it
 * replaces in `saved`. */
static __always_inline void gt_otel_push_active(const struct gt_goroutine_key *key,
						const struct gt_span_context *span,
						struct gt_otel_saved_span *saved)
{
	struct gt_span_context *cur = gt_goroutine_span(key);
	saved->present = 0;
	if (cur) {
		__builtin_memcpy(&saved->span, cur, sizeof(saved->span));
		saved->present = 1;
	}
	bpf_map_update_elem(&gt_goroutine_spans, key, span, BPF_ANY);
}

/* Gives the goroutine of `key` back the active span `saved` — only while
 * `span` is still its active span: a span ended out of order (or after the
 * request it ran in ended, which removed the entry) leaves the goroutine's
 * current span alone. */
static __always_inline void gt_otel_pop_active(const struct gt_goroutine_key *key,
					       const struct gt_span_context *span,
					       const struct gt_otel_saved_span *saved)
{
	struct gt_span_context *cur = gt_goroutine_span(key);
	__u64 a, b;
	if (!cur)
		return;
	__builtin_memcpy(&a, cur->span_id, 8);
	__builtin_memcpy(&b, span->span_id, 8);
	if (a != b)
		return;
	if (saved->present)
		bpf_map_update_elem(&gt_goroutine_spans, key, &saved->span, BPF_ANY);
	else
		bpf_map_delete_elem(&gt_goroutine_spans, key);
}
