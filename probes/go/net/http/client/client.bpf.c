/* net/http client: one event per request sent through an http.Transport.
 *
 * Probed: func (t *Transport) roundTrip(req *Request) (*Response, error)
 *   t   RAX, req RBX at entry
 *   results at RET: *Response RAX, error (itab, data) RBX, RCX
 * roundTrip (not RoundTrip) is where every Transport request goes, HTTP/1
 * and HTTP/2 alike, and it runs on the caller's goroutine, so the caller's
 * server span (if any) is this span's parent.
 *
 * Linking to a traced server on this node: the span is published in
 * gt_conn_spans under the connection's 4-tuple just before the request goes
 * out, and the server probe looks it up. HTTP/1: at persistConn.roundTrip,
 * on the caller's goroutine. HTTP/2: the request headers are written by
 * another goroutine (`go cs.doRequest`), at clientStream.encodeAndWriteHeaders,
 * where the stream id is known; that goroutine finds the span through the
 * request's *url.URL, which every copy of the request on the way shares
 * (Transport.roundTrip's rewindable copy, HTTP/2's retry copy, Go 1.27's
 * http2.ClientRequest): gt_http_client_h2_reqs, keyed by {tgid, URL},
 * set at roundTrip entry and removed at its return. */
#include "go_abi.h"
#include "ancestry.h"
#include "inject.h"
/* the bpf_probe_write_user injection's layouts (its programs are in
 * probes/write-user/, an object of their own) */
#include "write_user.h"

enum gt_http_client_limits {
	GT_HTTP_CLIENT_METHOD_MAX = 16,
	GT_HTTP_CLIENT_HOST_MAX = 64,
	GT_HTTP_CLIENT_PATH_MAX = 128,
	GT_HTTP_CLIENT_SCHEME_MAX = 8,
	GT_HTTP_CLIENT_INFLIGHT_MAX = 16384,
};

struct gt_http_client_config {
	__u32 req_method;  /* net/http.Request.Method */
	__u32 req_url;     /* net/http.Request.URL */
	__u32 url_scheme;  /* net/url.URL.Scheme */
	__u32 url_host;    /* net/url.URL.Host */
	__u32 url_path;    /* net/url.URL.Path */
	__u32 resp_status; /* net/http.Response.StatusCode */
	__u32 pconn_conn;  /* net/http.persistConn.conn */
	__u32 flags;       /* enum gt_http_client_flags */
	struct gt_tcp_offsets tcp;
	/* HTTP/2 (bundled in net/http as http2* before Go 1.27, then
	 * net/http/internal/http2) */
	__u32 h2_req_url; /* URL of encodeAndWriteHeaders' request: Request.URL, or ClientRequest.URL (1.27) */
	__u32 h2_cs_cc;   /* clientStream.cc */
	__u32 h2_cs_id;   /* clientStream.ID */
	__u32 h2_cc_tconn;   /* ClientConn.tconn (net.Conn) */
	__u32 h2_cc_tls;     /* ClientConn.tlsState (nil: tconn is the bare TCP connection) */
	__u32 tls_conn_conn; /* crypto/tls.Conn.conn */
};

enum gt_http_client_flags {
	GT_HTTP_CLIENT_ENABLED = 1,
	/* connection offsets known: publish the span for the server side */
	GT_HTTP_CLIENT_LINK = 2,
	/* HTTP/2 stream offsets known too: publish HTTP/2 requests per stream */
	GT_HTTP_CLIENT_H2_LINK = 4,
};

enum gt_http_client_event_flags {
	GT_HTTP_CLIENT_EVENT_ERROR = 1,  /* roundTrip returned an error */
	GT_HTTP_CLIENT_EVENT_LINKED = 2, /* the span was published for its connection */
};

struct gt_http_client_event {
	struct gt_event_header hdr;
	__u64 start_ns;
	__u64 end_ns;
	__s32 method_len;
	__s32 scheme_len;
	__s32 host_len;
	__s32 path_len;
	__u32 status; /* 0 when there is no response */
	__u32 flags;  /* enum gt_http_client_event_flags */
	struct gt_span_context span;
	char method[GT_HTTP_CLIENT_METHOD_MAX];
	char scheme[GT_HTTP_CLIENT_SCHEME_MAX];
	char host[GT_HTTP_CLIENT_HOST_MAX];
	char path[GT_HTTP_CLIENT_PATH_MAX];
};

/* This probe's ids in the object-wide families (see enum gt_event_type). */
enum gt_event_type_http_client {
	GT_EVENT_HTTP_CLIENT = 4,
};

enum gt_hit_site_http_client {
	GT_HIT_HTTP_CLIENT_ENTRY = 4,
	GT_HIT_HTTP_CLIENT_CONN = 5,
	GT_HIT_HTTP_CLIENT_RETURN = 6,
	GT_HIT_HTTP_CLIENT_H2_HEADERS = 7,
	GT_HIT_HTTP_CLIENT_DONE = 17,
};

enum gt_paired_function_http_client {
	GT_PAIRED_HTTP_CLIENT = 2,
};

GT_EXPORT_LAYOUTS(http_client,
	enum gt_event_type_http_client event_type;
	enum gt_hit_site_http_client hit_site;
	enum gt_paired_function_http_client paired_function;
	struct gt_http_client_event event;
	struct gt_http_client_config config;
	enum gt_http_client_limits limits;
	enum gt_http_client_flags config_flags;
	enum gt_http_client_event_flags event_flags;
);

struct http_client_inflight {
	__u64 start_ns;
	__u64 req;
	__u64 url; /* the request's *url.URL: its gt_http_client_h2_reqs key (0: none) */
	struct gt_span_context span;
	struct gt_conn_key conn;
	__u32 linked;
	__u32 marked; /* a traceparent is to be injected on `conn` (probes/include/inject.h) */
};

/* A request in flight, as the goroutine that writes its HTTP/2 headers
 * finds it: by process and *url.URL. */
struct http_client_h2_key {
	__u32 tgid;
	__u32 reserved;
	__u64 url;
};

enum http_client_h2_state {
	H2_REQ_PUBLISHED = 1, /* `conn` (with its stream id) is in gt_conn_spans */
	/* two requests in flight share one *url.URL (a request reused
	 * concurrently): which stream is whose is unknown, no further stream is
	 * published for either */
	H2_REQ_AMBIGUOUS = 2,
};

struct http_client_h2_req {
	struct gt_span_context span;
	struct gt_conn_key conn;
	__u64 goid;  /* the goroutine in roundTrip: the entry's owner */
	__u32 state; /* enum http_client_h2_state bits */
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_http_client_config);
} gt_http_client_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_HTTP_CLIENT_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct http_client_inflight);
} gt_http_client_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_HTTP_CLIENT_INFLIGHT_MAX);
	__type(key, struct http_client_h2_key);
	__type(value, struct http_client_h2_req);
} gt_http_client_h2_reqs SEC(".maps");

/* Makes the request in flight on goroutine `key` findable by its URL for
 * the goroutine that will write its HTTP/2 headers. Another request in
 * flight with the same URL makes both unlinkable; an entry whose owner is no
 * longer in flight (its return was never seen) is stale and replaced. */
static __always_inline void h2_expect(const struct gt_goroutine_key *key, struct http_client_inflight *st)
{
	struct http_client_h2_key k = { .tgid = key->tgid, .url = st->url };
	struct http_client_h2_req r = { .span = st->span, .goid = key->goid };
	if (bpf_map_update_elem(&gt_http_client_h2_reqs, &k, &r, BPF_NOEXIST) == 0)
		return;
	struct http_client_h2_req *other = bpf_map_lookup_elem(&gt_http_client_h2_reqs, &k);
	if (!other)
		return;
	struct gt_goroutine_key owner = { .tgid = key->tgid, .goid = other->goid };
	struct http_client_inflight *ost = bpf_map_lookup_elem(&gt_http_client_inflight, &owner);
	if (other->goid != key->goid && ost && ost->url == st->url) {
		other->state |= H2_REQ_AMBIGUOUS;
		st->url = 0;
		return;
	}
	if (other->state & H2_REQ_PUBLISHED) {
		bpf_map_delete_elem(&gt_conn_spans, &other->conn);
		gt_conn_published_add(-1);
	}
	bpf_map_update_elem(&gt_http_client_h2_reqs, &k, &r, BPF_ANY);
}

/* Forgets the URL entry of the request ending on goroutine `key`, and the
 * stream it published; true when a stream was published. */
static __always_inline bool h2_forget(const struct gt_goroutine_key *key, __u64 url)
{
	struct http_client_h2_key k = { .tgid = key->tgid, .url = url };
	struct http_client_h2_req *r = bpf_map_lookup_elem(&gt_http_client_h2_reqs, &k);
	if (!r || r->goid != key->goid)
		return false;
	bool published = r->state & H2_REQ_PUBLISHED;
	if (published) {
		bpf_map_delete_elem(&gt_conn_spans, &r->conn);
		gt_conn_published_add(-1);
	}
	bpf_map_delete_elem(&gt_http_client_h2_reqs, &k);
	return published;
}

SEC("uprobe.multi")
int gt_http_client_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_client_config *cfg = gt_probe_enter(ctx, &gt_http_client_config, &key, &bin_id,
							   GT_HIT_HTTP_CLIENT_ENTRY);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_HTTP_CLIENT_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_HTTP_CLIENT_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct http_client_inflight st = {};
	st.start_ns = bpf_ktime_get_ns();
	st.req = GO_ARG2(ctx);
	struct gt_span_context *parent = gt_active_span(&key);
	if (parent)
		gt_new_child(&st.span, parent);
	else
		gt_new_root(&st.span);
	gt_mark_entered(&key, GT_PAIRED_HTTP_CLIENT);
	/* whether the request goes out over HTTP/2 is decided later: every
	 * request is made findable for an HTTP/2 writer, an unsampled one too
	 * (the server side follows its decision) */
	if ((cfg->flags & GT_HTTP_CLIENT_H2_LINK) && go_read_ptr(st.req, cfg->req_url, &st.url) == 0 &&
	    st.url)
		h2_expect(&key, &st);
	if (bpf_map_update_elem(&gt_http_client_inflight, &key, &st, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_HTTP_CLIENT);
		gt_debug_hit(ctx, GT_HIT_HTTP_CLIENT_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_HTTP_CLIENT_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	return 0;
}

/* func (pc *persistConn) roundTrip(req *transportRequest) (*Response, error)
 *   pc RAX. Runs on the caller's goroutine once the connection is chosen and
 *   before the request is written: the moment to tell the server side which
 *   span is about to arrive on this connection. */
SEC("uprobe.multi")
int gt_http_client_conn(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_client_config *cfg = gt_probe_enter(ctx, &gt_http_client_config, &key, &bin_id,
							   GT_HIT_HTTP_CLIENT_CONN);
	if (!cfg || !(cfg->flags & GT_HTTP_CLIENT_LINK))
		return 0;
	struct http_client_inflight *st = bpf_map_lookup_elem(&gt_http_client_inflight, &key);
	gt_debug_hit(ctx, GT_HIT_HTTP_CLIENT_CONN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st)
		return 0;
	__u64 tcpconn = 0;
	/* persistConn.conn is a net.Conn: {itab, data}; data is the *net.TCPConn */
	if (go_read_ptr(GO_ARG1(ctx), cfg->pconn_conn + 8, &tcpconn) < 0)
		return 0;
	struct gt_conn_key k = {};
	if (gt_conn_key_of(tcpconn, &cfg->tcp, true, &k) < 0)
		return 0;
	if (bpf_map_update_elem(&gt_conn_spans, &k, &st->span, BPF_ANY) == 0) {
		st->linked = 1;
		gt_conn_published_add(1);
	}
	st->conn = k;
	/* the receiver, on this node or another, traced or not, gets a
	 * traceparent header; the destination rules see URL.Host */
	__u64 url = st->url; /* the entry's read of Request.URL, when it made one */
	struct go_string host = {};
	if ((url || go_read_ptr(st->req, cfg->req_url, &url) == 0) && url)
		bpf_probe_read_user(&host, sizeof(host), (void *)(url + cfg->url_host));
	st->marked = gt_inject_mark(&k, &st->span, GT_INJECT_PROTO_HTTP1, host.ptr, host.len);
	return 0;
}

/* The span's request fields are two windows of memory: Request.Method and
 * Request.URL in the first 32 bytes of *http.Request, URL.Scheme, Host and
 * Path in the first 72 of *url.URL (in every Go version known). One read
 * per window replaces a read per field; a field outside its window, or a
 * window that cannot be read, is read on its own. */
#define GT_HTTP_CLIENT_REQ_WINDOW 32
#define GT_HTTP_CLIENT_URL_WINDOW 72

/* A string header at `off`: from window `w` (`wlen` bytes read from
 * `base`, or 0) when it lies inside, else read from `base`. -1: unreadable. */
static __always_inline int client_string(const __u8 *w, __u32 wlen, __u64 base, __u32 off,
					 struct go_string *s)
{
	s->ptr = 0;
	s->len = 0;
	if (w && off <= wlen - sizeof(*s)) {
		__builtin_memcpy(s, w + off, sizeof(*s));
		return 0;
	}
	if (!base || bpf_probe_read_user(s, sizeof(*s), (void *)(base + off)) < 0)
		return -1;
	return 0;
}

/* As go_read_string, from a string header already read. */
static __always_inline __s64 client_copy(int hdr, struct go_string s, char *dst, __u32 cap)
{
	if (hdr < 0)
		return -1;
	return go_copy_string(s, dst, cap);
}

/* Ends the request in flight on the goroutine: its event, with roundTrip's
 * results `resp` (*Response) and `err` (the error's itab, 0 for nil). */
static __always_inline int client_end(struct pt_regs *ctx, struct gt_http_client_config *cfg,
				      const struct gt_goroutine_key *k, __u32 bin_id, __u32 site, __u64 resp,
				      __u64 err)
{
	struct gt_goroutine_key key = *k;
	struct http_client_inflight *st = bpf_map_lookup_elem(&gt_http_client_inflight, &key);
	gt_debug_hit(ctx, site, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
	if (!st) {
		gt_count_no_entry(&key, GT_PAIRED_HTTP_CLIENT);
		return 0;
	}
	/* the request is over: the server side has found its span by now */
	bool linked = st->linked;
	if (st->linked) {
		bpf_map_delete_elem(&gt_conn_spans, &st->conn);
		gt_conn_published_add(-1);
	}
	if (st->marked)
		gt_inject_unmark(&st->conn, &st->span);
	if (st->url && h2_forget(&key, st->url))
		linked = true;
	/* a child of an unsampled request is not sampled either: no span */
	bool sampled = st->span.flags & GT_SPAN_SAMPLED;
	struct gt_http_client_event *ev = sampled ? bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0) : 0;
	if (!ev) {
		sampled ? gt_count(GT_COUNTER_RINGBUF_FULL) : gt_count_not_sampled(&st->span);
		bpf_map_delete_elem(&gt_http_client_inflight, &key);
		return 0;
	}
	gt_fill_header(&ev->hdr, GT_EVENT_HTTP_CLIENT, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->start_ns = st->start_ns;
	ev->end_ns = bpf_ktime_get_ns();
	ev->span = st->span;
	ev->flags = (err ? GT_HTTP_CLIENT_EVENT_ERROR : 0) | (linked ? GT_HTTP_CLIENT_EVENT_LINKED : 0);
	__u64 req = st->req, url = 0, status = 0;
	/* both windows live in ev->path until the headers are taken out */
	_Static_assert(GT_HTTP_CLIENT_PATH_MAX >= GT_HTTP_CLIENT_REQ_WINDOW + GT_HTTP_CLIENT_URL_WINDOW,
		       "the windows fit in path");
	const __u8 *rw = 0, *uw = 0;
	if (req && bpf_probe_read_user(ev->path, GT_HTTP_CLIENT_REQ_WINDOW, (void *)req) == 0)
		rw = (const __u8 *)ev->path;
	struct go_string method, scheme, host, path;
	int method_ok = client_string(rw, GT_HTTP_CLIENT_REQ_WINDOW, req, cfg->req_method, &method);
	if (rw && cfg->req_url <= GT_HTTP_CLIENT_REQ_WINDOW - 8)
		__builtin_memcpy(&url, rw + cfg->req_url, 8);
	else
		go_read_ptr(req, cfg->req_url, &url);
	char *uwbuf = ev->path + GT_HTTP_CLIENT_REQ_WINDOW;
	if (url && bpf_probe_read_user(uwbuf, GT_HTTP_CLIENT_URL_WINDOW, (void *)url) == 0)
		uw = (const __u8 *)uwbuf;
	int scheme_ok = client_string(uw, GT_HTTP_CLIENT_URL_WINDOW, url, cfg->url_scheme, &scheme);
	int host_ok = client_string(uw, GT_HTTP_CLIENT_URL_WINDOW, url, cfg->url_host, &host);
	int path_ok = client_string(uw, GT_HTTP_CLIENT_URL_WINDOW, url, cfg->url_path, &path);
	ev->method_len = client_copy(method_ok, method, ev->method, GT_HTTP_CLIENT_METHOD_MAX);
	ev->scheme_len = client_copy(scheme_ok, scheme, ev->scheme, GT_HTTP_CLIENT_SCHEME_MAX);
	ev->host_len = client_copy(host_ok, host, ev->host, GT_HTTP_CLIENT_HOST_MAX);
	ev->path_len = client_copy(path_ok, path, ev->path, GT_HTTP_CLIENT_PATH_MAX);
	if (resp && !err)
		bpf_probe_read_user(&status, sizeof(status), (void *)(resp + cfg->resp_status));
	ev->status = status < 1000 ? (__u32)status : 0;
	if (ev->method_len < 0)
		gt_count(GT_COUNTER_READ_FAILED);
	bpf_map_delete_elem(&gt_http_client_inflight, &key);
	gt_submit(ev);
	return 0;
}

/* At every RET of roundTrip but those only a success reaches (see
 * gt_http_client_done); at all of them where the binary's code is not the
 * shape that program needs.
 *   results: *Response RAX, error (itab, data) RBX, RCX */
SEC("uprobe.multi")
int gt_http_client_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_client_config *cfg = gt_probe_enter(ctx, &gt_http_client_config, &key, &bin_id,
							   GT_HIT_HTTP_CLIENT_RETURN);
	if (!cfg)
		return 0;
	return client_end(ctx, cfg, &key, bin_id, GT_HIT_HTTP_CLIENT_RETURN, GO_ARG1(ctx), GO_ARG2(ctx));
}

/* In roundTrip, right after a request was sent and answered:
 *     resp, err = pconn.roundTrip(treq)    (HTTP/2: pconn.alt.RoundTrip(req))
 *     if err == nil { ...; return resp, nil }
 * at the branch of `if err == nil` (TEST RBX, RBX; JE/JNE), where RAX and
 * RBX still hold the call's *Response and its error's itab. A nil error
 * ends the request here, and the RETs only that way reaches carry no probe.
 * A non-nil one may be retried (on another connection) or returned, through
 * RETs that gt_http_client_return ends: nothing to do here then. */
SEC("uprobe.multi")
int gt_http_client_done(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_client_config *cfg = gt_probe_enter(ctx, &gt_http_client_config, &key, &bin_id,
							   GT_HIT_HTTP_CLIENT_DONE);
	if (!cfg || GO_ARG2(ctx))
		return 0;
	return client_end(ctx, cfg, &key, bin_id, GT_HIT_HTTP_CLIENT_DONE, GO_ARG1(ctx), 0);
}

/* func (cs *clientStream) encodeAndWriteHeaders(req *Request) error
 *   (net/http.(*http2clientStream) before Go 1.27; req *ClientRequest from 1.27)
 *   cs RAX, req RBX. Runs on the goroutine `go cs.doRequest` started, once
 * the stream has its id (addStreamLocked) and before its HEADERS frame is
 * written: the moment to tell the server side which span is about to arrive
 * on this stream of this connection. */
SEC("uprobe.multi")
int gt_http_client_h2_headers(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_client_config *cfg = gt_probe_enter(ctx, &gt_http_client_config, &key, &bin_id,
							   GT_HIT_HTTP_CLIENT_H2_HEADERS);
	if (!cfg || !(cfg->flags & GT_HTTP_CLIENT_H2_LINK))
		return 0;
	__u64 cs = GO_ARG1(ctx), cc = 0, tconn = 0, tls = 0;
	struct http_client_h2_key rk = { .tgid = key.tgid };
	if (go_read_ptr(GO_ARG2(ctx), cfg->h2_req_url, &rk.url) < 0 || !rk.url)
		return 0;
	struct http_client_h2_req *r = bpf_map_lookup_elem(&gt_http_client_h2_reqs, &rk);
	gt_debug_hit(ctx, GT_HIT_HTTP_CLIENT_H2_HEADERS, r ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid,
		     bin_id, key.goid);
	if (!r || (r->state & H2_REQ_AMBIGUOUS))
		return 0;
	struct gt_conn_key k = {};
	__u32 stream_id = 0;
	if (go_read_ptr(cs, cfg->h2_cs_cc, &cc) < 0 ||
	    bpf_probe_read_user(&stream_id, sizeof(stream_id), (void *)(cs + cfg->h2_cs_id)) < 0 ||
	    !stream_id || go_read_ptr(cc, cfg->h2_cc_tconn + 8, &tconn) < 0 ||
	    go_read_ptr(cc, cfg->h2_cc_tls, &tls) < 0)
		return 0;
	if (gt_conn_key_of(gt_tcp_conn_under(tconn, tls != 0, cfg->tls_conn_conn), &cfg->tcp, true, &k) < 0)
		return 0;
	k.stream_id = stream_id;
	/* a retried request (on a new stream or connection) replaces its stream */
	if (r->state & H2_REQ_PUBLISHED) {
		bpf_map_delete_elem(&gt_conn_spans, &r->conn);
		gt_conn_published_add(-1);
		r->state = 0;
	}
	if (bpf_map_update_elem(&gt_conn_spans, &k, &r->span, BPF_ANY) == 0) {
		r->conn = k;
		r->state = H2_REQ_PUBLISHED;
		gt_conn_published_add(1);
	}
	return 0;
}
