/* The route an HTTP router matched for the request served on a goroutine.
 *
 * A router probe (probes/go/github.com/...) writes the template it matched
 * (`/users/{id}`) for the goroutine that runs it, which is the goroutine
 * serving the request; the net/http server probe takes it when the request
 * ends and carries it on its event. Router probes run only inside a request
 * the server probe has in flight on the same goroutine, and the server probe
 * clears the entry when a request starts and ends, so a route never outlives
 * its request. */
#pragma once

#include "go_abi.h"

enum gt_http_route_limits {
	GT_HTTP_ROUTE_MAX = 128, /* bytes of a route template carried */
	GT_HTTP_ROUTES_INFLIGHT_MAX = 16384,
};

/* Where the route came from (the span's http.route is its template). */
enum gt_http_route_source {
	GT_HTTP_ROUTE_NONE = 0,
	GT_HTTP_ROUTE_SERVEMUX =
		1, /* net/http.ServeMux: Request.Pattern (Go 1.23+) or Request.pat (Go 1.22) */
	GT_HTTP_ROUTE_GORILLA = 2, /* github.com/gorilla/mux */
	GT_HTTP_ROUTE_CHI = 3,     /* github.com/go-chi/chi */
	GT_HTTP_ROUTE_GIN = 4,     /* github.com/gin-gonic/gin */
};

struct gt_http_route {
	__s32 len;    /* the template's full length: may exceed the copy (then it is not used) */
	__u32 source; /* enum gt_http_route_source */
	char route[GT_HTTP_ROUTE_MAX];
};

GT_EXPORT_LAYOUTS(http_route,
	struct gt_http_route route;
	enum gt_http_route_limits limits;
	enum gt_http_route_source source;
);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_HTTP_ROUTES_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_http_route);
} gt_http_routes SEC(".maps");

/* A router's object for the request being routed on a goroutine, saved at
 * the entry of the routing function and read at its return (gin's
 * *Context, chi's *Context): the route is known only once routing is done,
 * and the object goes back to the router's pool right after the request,
 * so it is read before that, on the routing goroutine. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_HTTP_ROUTES_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, __u64);
} gt_http_router_objects SEC(".maps");

/* Records for the goroutine of `key` the route template held by the Go
 * string at base+off. */
static __always_inline void gt_http_route_from_string(const struct gt_goroutine_key *key, __u32 source,
						      __u64 base, __u32 off)
{
	struct gt_http_route r = {};
	__s64 n = go_read_string(base, off, r.route, GT_HTTP_ROUTE_MAX);
	if (n < 0) {
		gt_count(GT_COUNTER_READ_FAILED);
		return;
	}
	if (n == 0)
		return;
	r.len = n > 0x7fffffff ? 0x7fffffff : (__s32)n;
	r.source = source;
	bpf_map_update_elem(&gt_http_routes, key, &r, BPF_ANY);
}
