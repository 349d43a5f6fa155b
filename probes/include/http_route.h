/* The net/http server's record of the request served on a goroutine, and
 * the route an HTTP router matched for it.
 *
 * One record per goroutine that serves HTTP/1 requests, kept in place from
 * request to request: the server probe's entry fills it and marks it active,
 * its return sends the span and marks it idle (the next request on the
 * connection's goroutine reuses it: no delete, no insert), and the
 * connection's end (net/http.(*conn).serve.func1) deletes it. An HTTP/2
 * request runs on a goroutine of its own, whose record is deleted at the
 * return. Fewer distinct maps per hit is what makes a hit cheaper: a hash
 * lookup costs about as much as the rest of the program's own work.
 *
 * A router probe (probes/go/github.com/...) writes the template it matched
 * (`/users/{id}`) into the active record of the goroutine that runs it,
 * which is the goroutine serving the request; the server probe carries it on
 * its event. A router running outside a request the server probe has in
 * flight writes nothing. */
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

/* What the server probe keeps of a request from its entry to its return. */
struct gt_http_server_call {
	__u64 start_ns;
	__u64 req;
	__u64 resp;
	/* resp's *http.conn when the entry read it (0: not read): its
	 * return reads the connection's hijacked flag there */
	__u64 conn;
	__u64 tracestate;   /* the incoming tracestate header's []string: array... */
	__s64 tracestate_n; /* ...and its length (0: none); read when the request ends */
	__u32 flags;        /* enum gt_http_event_flags (probes/go/net/http/server) */
	__u32 reserved;
	struct gt_span_context span;
};

/* The state of a goroutine's record. */
enum gt_http_inflight_state {
	/* the goroutine's last request ended: the record waits for the next
	 * request on its connection (user space's sweep may delete it) */
	GT_HTTP_INFLIGHT_IDLE = 0,
	GT_HTTP_INFLIGHT_ACTIVE = 1, /* a request is in flight */
};

struct gt_http_server_inflight {
	__u32 state; /* enum gt_http_inflight_state */
	__u32 reserved;
	struct gt_http_server_call call;
	struct gt_http_route route; /* set by a router while active (source NONE: none) */
};

GT_EXPORT_LAYOUTS(http_inflight,
	struct gt_http_server_inflight inflight;
	enum gt_http_inflight_state state;
);

/* A plain hash map: a full one refuses a new goroutine's record (counted as
 * inflight_full) instead of evicting another request's, as an LRU map
 * would, silently. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_HTTP_ROUTES_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_http_server_inflight);
} gt_http_server_inflight SEC(".maps");

/* The route slot of the request in flight on the goroutine of `key`, or 0
 * when none is (then a route has nothing to go with). */
static __always_inline struct gt_http_route *gt_http_route_slot(const struct gt_goroutine_key *key)
{
	struct gt_http_server_inflight *r = bpf_map_lookup_elem(&gt_http_server_inflight, key);
	return r && r->state == GT_HTTP_INFLIGHT_ACTIVE ? &r->route : 0;
}

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

/* Records for the request in flight on the goroutine of `key` the route
 * template held by the Go string at base+off. An empty string leaves the
 * route as it was (no route matched); an unreadable one leaves none. */
static __always_inline void gt_http_route_from_string(const struct gt_goroutine_key *key, __u32 source,
						      __u64 base, __u32 off)
{
	struct gt_http_route *r = gt_http_route_slot(key);
	if (!r)
		return;
	__s64 n = go_read_string(base, off, r->route, GT_HTTP_ROUTE_MAX);
	if (n < 0) {
		r->len = 0;
		r->source = GT_HTTP_ROUTE_NONE;
		gt_count(GT_COUNTER_READ_FAILED);
		return;
	}
	if (n == 0)
		return;
	r->len = n > 0x7fffffff ? 0x7fffffff : (__s32)n;
	r->source = source;
}
