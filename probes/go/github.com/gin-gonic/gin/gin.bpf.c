/* github.com/gin-gonic/gin: the full path of the route an Engine matched
 * (Context.FullPath), as the request's http.route
 * (probes/include/http_route.h).
 *
 * Probed: func (engine *Engine) handleHTTPRequest(c *Context)
 *   entry: engine RAX, c RBX; the *Context is saved for the goroutine.
 *   RET: c.fullPath is set once a route matched (before the handlers run)
 *   and read here, while the Context is still this request's: the Engine
 *   puts it back into its pool after handleHTTPRequest returns. Two probe
 *   hits per request. */
#include "http_route.h"

struct gt_gin_config {
	__u32 ctx_full_path; /* gin.Context.fullPath */
	__u32 flags;         /* enum gt_gin_flags */
};

enum gt_gin_flags {
	GT_GIN_ENABLED = 1,
};

enum gt_hit_site_gin {
	GT_HIT_GIN_ENTRY = 41,
	GT_HIT_GIN_RETURN = 42,
};

enum gt_paired_function_gin {
	GT_PAIRED_GIN = 10,
};

GT_EXPORT_LAYOUTS(gin,
	struct gt_gin_config config;
	enum gt_gin_flags config_flags;
	enum gt_hit_site_gin hit_site;
	enum gt_paired_function_gin paired_function;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_gin_config);
} gt_gin_config SEC(".maps");

SEC("uprobe.multi")
int gt_gin_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_gin_config *cfg = gt_probe_enter(ctx, &gt_gin_config, &key, &bin_id, GT_HIT_GIN_ENTRY);
	if (!cfg || !(cfg->flags & GT_GIN_ENABLED))
		return 0;
	__u64 c = GO_ARG2(ctx);
	gt_mark_entered(&key, GT_PAIRED_GIN);
	if (bpf_map_update_elem(&gt_http_router_objects, &key, &c, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_GIN);
		gt_debug_hit(ctx, GT_HIT_GIN_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
		return 0;
	}
	gt_debug_hit(ctx, GT_HIT_GIN_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	return 0;
}

SEC("uprobe.multi")
int gt_gin_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_gin_config *cfg = gt_probe_enter(ctx, &gt_gin_config, &key, &bin_id, GT_HIT_GIN_RETURN);
	if (!cfg)
		return 0;
	__u64 *c = bpf_map_lookup_elem(&gt_http_router_objects, &key);
	gt_debug_hit(ctx, GT_HIT_GIN_RETURN, c ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
	if (!c) {
		gt_count_no_entry(&key, GT_PAIRED_GIN);
		return 0;
	}
	__u64 obj = *c;
	bpf_map_delete_elem(&gt_http_router_objects, &key);
	/* empty when no route matched (404, 405, a redirect): no route */
	gt_http_route_from_string(&key, GT_HTTP_ROUTE_GIN, obj, cfg->ctx_full_path);
	return 0;
}
