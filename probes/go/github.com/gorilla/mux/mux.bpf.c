/* github.com/gorilla/mux: the path template of the route a Router matched,
 * as the request's http.route (probes/include/http_route.h).
 *
 * Probed: func requestWithRoute(r *http.Request, route *Route) *http.Request
 *   r RAX, route RBX. Router.ServeHTTP calls it on the serving goroutine
 *   once a route matched, before the handler runs. The template is the
 *   route's path regexp's (Route.GetPathTemplate): a sub-router's routes
 *   carry the full path, prefix included. One probe hit per routed request,
 *   no return probe. */
#include "http_route.h"

struct gt_gorilla_mux_config {
	__u32 route_regexp;    /* mux.Route.routeConf + routeConf.regexp (a routeRegexpGroup, by value) */
	__u32 group_path;      /* mux.routeRegexpGroup.path (*routeRegexp) */
	__u32 regexp_template; /* mux.routeRegexp.template */
	__u32 flags;           /* enum gt_gorilla_mux_flags */
};

enum gt_gorilla_mux_flags {
	GT_GORILLA_MUX_ENABLED = 1,
};

enum gt_hit_site_gorilla_mux {
	GT_HIT_GORILLA_MUX_ROUTE = 40,
};

GT_EXPORT_LAYOUTS(gorilla_mux,
	struct gt_gorilla_mux_config config;
	enum gt_gorilla_mux_flags config_flags;
	enum gt_hit_site_gorilla_mux hit_site;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_gorilla_mux_config);
} gt_gorilla_mux_config SEC(".maps");

SEC("uprobe.multi")
int gt_gorilla_mux_route(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_gorilla_mux_config *cfg = gt_probe_enter(ctx, &gt_gorilla_mux_config, &key, &bin_id,
							   GT_HIT_GORILLA_MUX_ROUTE);
	if (!cfg || !(cfg->flags & GT_GORILLA_MUX_ENABLED))
		return 0;
	__u64 path = 0;
	/* a route without a path matcher (host or method only) has no template */
	if (go_read_ptr(GO_ARG2(ctx), cfg->route_regexp + cfg->group_path, &path) < 0 || !path) {
		gt_debug_hit(ctx, GT_HIT_GORILLA_MUX_ROUTE, GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
		return 0;
	}
	gt_http_route_from_string(&key, GT_HTTP_ROUTE_GORILLA, path, cfg->regexp_template);
	gt_debug_hit(ctx, GT_HIT_GORILLA_MUX_ROUTE, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	return 0;
}
