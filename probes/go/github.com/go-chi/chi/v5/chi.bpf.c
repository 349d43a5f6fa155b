/* github.com/go-chi/chi/v5: the route pattern a Mux matched, as the
 * request's http.route (probes/include/http_route.h).
 *
 * Probed: func (n *node) FindRoute(rctx *Context, method methodTyp, path string)
 *           (*node, endpoints, http.Handler)
 *   entry: n RAX, rctx RBX; the *Context is saved for the goroutine.
 *   RET: FindRoute appends the pattern it matched to rctx.RoutePatterns;
 *   every Mux a request passes through (sub-routers, mounts) calls it once,
 *   on the serving goroutine, so at its last return the list holds the
 *   whole route. The patterns are joined here, as chi's
 *   Context.RoutePattern does, and normalised by the agent (the wildcard of a mount
 *   point removed). The Context is still this request's: the Mux puts it
 *   back into its pool only after the handler returned. Two probe hits per
 *   Mux the request passes through. */
#include "http_route.h"

enum gt_chi_limits {
	GT_CHI_PATTERNS_MAX = 4, /* nested routers joined; deeper nesting is reported as too long */
};

struct gt_chi_config {
	__u32 ctx_route_patterns; /* chi.Context.RoutePatterns ([]string) */
	__u32 flags;              /* enum gt_chi_flags */
};

enum gt_chi_flags {
	GT_CHI_ENABLED = 1,
};

enum gt_hit_site_chi {
	GT_HIT_CHI_ENTRY = 43,
	GT_HIT_CHI_RETURN = 44,
};

enum gt_paired_function_chi {
	GT_PAIRED_CHI = 11,
};

GT_EXPORT_LAYOUTS(chi,
	struct gt_chi_config config;
	enum gt_chi_limits limits;
	enum gt_chi_flags config_flags;
	enum gt_hit_site_chi hit_site;
	enum gt_paired_function_chi paired_function;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_chi_config);
} gt_chi_config SEC(".maps");

/* Room for the joined patterns: each copy starts below GT_HTTP_ROUTE_MAX
 * and is shorter than it, which bounds every write for the verifier. */
struct chi_join {
	char buf[2 * GT_HTTP_ROUTE_MAX];
	struct gt_http_route route;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chi_join);
} chi_join SEC(".maps");

SEC("uprobe.multi")
int gt_chi_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_chi_config *cfg = gt_probe_enter(ctx, &gt_chi_config, &key, &bin_id, GT_HIT_CHI_ENTRY);
	if (!cfg || !(cfg->flags & GT_CHI_ENABLED))
		return 0;
	__u64 rctx = GO_ARG2(ctx);
	gt_mark_entered(&key, GT_PAIRED_CHI);
	if (bpf_map_update_elem(&gt_http_router_objects, &key, &rctx, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_CHI);
		gt_debug_hit(ctx, GT_HIT_CHI_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
		return 0;
	}
	gt_debug_hit(ctx, GT_HIT_CHI_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	return 0;
}

SEC("uprobe.multi")
int gt_chi_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_chi_config *cfg = gt_probe_enter(ctx, &gt_chi_config, &key, &bin_id, GT_HIT_CHI_RETURN);
	if (!cfg)
		return 0;
	__u64 *saved = bpf_map_lookup_elem(&gt_http_router_objects, &key);
	gt_debug_hit(ctx, GT_HIT_CHI_RETURN, saved ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!saved) {
		gt_count_no_entry(&key, GT_PAIRED_CHI);
		return 0;
	}
	__u64 rctx = *saved;
	bpf_map_delete_elem(&gt_http_router_objects, &key);
	/* no request in flight on this goroutine: the route would go nowhere */
	struct gt_http_route *slot = gt_http_route_slot(&key);
	struct chi_join *j = bpf_map_lookup_elem(&chi_join, &zero);
	if (!slot || !j)
		return 0;
	struct go_slice patterns = {};
	if (!rctx ||
	    bpf_probe_read_user(&patterns, sizeof(patterns), (void *)(rctx + cfg->ctx_route_patterns)) < 0) {
		gt_count(GT_COUNTER_READ_FAILED);
		return 0;
	}
	/* nothing matched (yet): no route */
	if (patterns.len <= 0 || !patterns.ptr)
		return 0;
	__u32 off = 0;
	__s64 total = 0;
#pragma unroll
	for (int i = 0; i < GT_CHI_PATTERNS_MAX; i++) {
		if (i >= patterns.len)
			break;
		struct go_string s = {};
		if (bpf_probe_read_user(&s, sizeof(s), (void *)(patterns.ptr + (__u64)i * sizeof(s))) < 0 ||
		    s.len < 0) {
			gt_count(GT_COUNTER_READ_FAILED);
			return 0;
		}
		total += s.len;
		if (off >= GT_HTTP_ROUTE_MAX || s.len == 0)
			continue;
		__u32 n = s.len < GT_HTTP_ROUTE_MAX ? (__u32)s.len : GT_HTTP_ROUTE_MAX - 1;
		__u32 at = off;
		/* the masks must reach the verifier: clang would drop them, knowing the bounds */
		asm volatile("" : "+r"(n), "+r"(at));
		n &= GT_HTTP_ROUTE_MAX - 1;
		at &= GT_HTTP_ROUTE_MAX - 1;
		if (bpf_probe_read_user(j->buf + at, n, (void *)s.ptr) < 0) {
			gt_count(GT_COUNTER_READ_FAILED);
			return 0;
		}
		off += n;
	}
	/* deeper than the joined patterns: its whole route is unknown */
	if (patterns.len > GT_CHI_PATTERNS_MAX)
		total = 0x7fffffff;
	__builtin_memcpy(j->route.route, j->buf, GT_HTTP_ROUTE_MAX);
	j->route.len = total > 0x7fffffff ? 0x7fffffff : (__s32)total;
	j->route.source = GT_HTTP_ROUTE_CHI;
	__builtin_memcpy(slot, &j->route, sizeof(*slot));
	return 0;
}
