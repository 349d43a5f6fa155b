/* net/http server: one event per request served by net/http.
 *
 * Probed: func (sh serverHandler) ServeHTTP(rw ResponseWriter, req *Request)
 *   sh  (struct{srv *Server})  RAX
 *   rw  (interface: itab, data) RBX, RCX  -- data is *http.response for HTTP/1.x
 *   req (*Request)             RDI
 * Entry: the first instruction after the stack-growth check (the check can
 * jump back to the entry and fire it twice). Exit: a plain uprobe on every
 * RET of the function (uretprobes break Go's stack unwinding). */
#include "go_abi.h"
#include "self.h"

enum gt_http_limits {
	GT_HTTP_METHOD_MAX = 16,
	GT_HTTP_PATH_MAX = 128,
	GT_HTTP_HOST_MAX = 64,
	GT_HTTP_REMOTE_MAX = 64,
	GT_HTTP_TRACEPARENT_MAX = 64,   /* window searched for the value */
	GT_HTTP_HEAD_MAX = 2048,
	GT_HTTP_INFLIGHT_MAX = 16384,
};

/* Struct-field offsets for one binary, filled by user space from DWARF or
 * the offsets database. Indexed by the binary id from the attach cookie. */
struct gt_http_server_config {
	__u32 req_method;       /* net/http.Request.Method */
	__u32 req_url;          /* net/http.Request.URL */
	__u32 req_host;         /* net/http.Request.Host */
	__u32 req_remote_addr;  /* net/http.Request.RemoteAddr */
	__u32 url_path;         /* net/url.URL.Path */
	__u32 resp_status;      /* net/http.response.status */
	__u32 resp_conn;        /* net/http.response.conn */
	__u32 conn_bufr;        /* net/http.conn.bufr */
	__u32 bufr_buf;         /* bufio.Reader.buf */
	__u32 bufr_r;           /* bufio.Reader.r */
	__u32 conn_rwc;         /* net/http.conn.rwc */
	__u32 conn_server;      /* net/http.conn.server */
	__u32 h2_rws;           /* HTTP/2 responseWriter.rws (bundled before Go 1.27, internal/http2 after) */
	__u32 h2_status;        /* HTTP/2 responseWriterState.status */
	__u32 flags;            /* enum gt_http_server_flags */
	struct gt_tcp_offsets tcp;
};

enum gt_http_server_flags {
	GT_HTTP_SERVER_ENABLED = 1,
	/* the response and connection offsets are known, so the request head
	 * can be searched for an incoming traceparent */
	GT_HTTP_SERVER_READ_HEAD = 2,
	/* connection offsets known: look for a traced client on this node */
	GT_HTTP_SERVER_LINK = 4,
	/* conn.server known: tell HTTP/1 responses from HTTP/2 ones */
	GT_HTTP_SERVER_CHECK_HTTP1 = 8,
	/* HTTP/2 writer offsets known: read an HTTP/2 response's status */
	GT_HTTP_SERVER_H2_STATUS = 16,
};

enum gt_http_event_flags {
	GT_HTTP_EVENT_TRACEPARENT = 1,
	GT_HTTP_EVENT_HEAD_UNREADABLE = 2,
	/* the parent is the client span of a traced process on this node */
	GT_HTTP_EVENT_LINKED = 4,
	/* the handler panicked: ServeHTTP never returned */
	GT_HTTP_EVENT_PANIC = 8,
	/* the ResponseWriter is not net/http's HTTP/1 *response (HTTP/2):
	 * its status, connection and read buffer are not where the offsets say */
	GT_HTTP_EVENT_NOT_HTTP1 = 16,
	/* the HTTP/2 writer's status was read (0: the handler wrote nothing) */
	GT_HTTP_EVENT_H2_STATUS = 32,
};

struct gt_http_server_event {
	struct gt_event_header hdr;
	__u64 start_ns;          /* CLOCK_MONOTONIC */
	__u64 end_ns;
	__s32 method_len;        /* full Go string lengths: may exceed the copy */
	__s32 path_len;
	__s32 host_len;
	__s32 remote_len;
	__u32 status;            /* 0: the handler wrote nothing (net/http sends 200) */
	__u32 flags;             /* enum gt_http_event_flags */
	struct gt_span_context span;
	char method[GT_HTTP_METHOD_MAX];
	char path[GT_HTTP_PATH_MAX];
	char host[GT_HTTP_HOST_MAX];
	char remote[GT_HTTP_REMOTE_MAX];
};

GT_EXPORT_LAYOUTS(http_server,
	struct gt_http_server_event event;
	struct gt_http_server_config config;
	enum gt_http_limits limits;
	enum gt_http_server_flags config_flags;
	enum gt_http_event_flags event_flags;
);

struct http_server_inflight {
	__u64 start_ns;
	__u64 req;
	__u64 resp;
	__u32 flags;
	__u32 reserved;
	struct gt_span_context span;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_http_server_config);
} gt_http_server_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_HTTP_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct http_server_inflight);
} gt_http_server_inflight SEC(".maps");

struct http_head_scratch {
	char buf[GT_HTTP_HEAD_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_head_scratch);
} http_head_scratch SEC(".maps");

struct head_search {
	struct http_head_scratch *h;
	__u32 len;
	__s32 found; /* index of the value's first byte, or -1 */
};

static const char traceparent_name[] = "traceparent:";

static __always_inline bool is_traceparent_name(const char *p)
{
#pragma unroll
	for (int k = 0; k < 12; k++) {
		char c = p[k];
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != traceparent_name[k])
			return false;
	}
	return true;
}

/* bpf_loop callback over the head 8 bytes at a time (a bpf_loop iteration
 * costs more than the word test): does a "\ntraceparent:" line start in
 * word i? Header names are case-insensitive. */
static long find_traceparent(__u32 i, struct head_search *s)
{
	struct http_head_scratch *h = s->h;
	if (!h)
		return 1;
	/* clang re-derives bounded indexes from the unbounded loop counter;
	 * the barrier makes it mask the value the verifier sees */
	__u32 base = i * 8;
	asm volatile("" : "+r"(base));
	base &= GT_HTTP_HEAD_MAX - 1;
	if (base >= GT_HTTP_HEAD_MAX - 32 || base >= s->len)
		return 1;
	__u64 w = 0;
	__builtin_memcpy(&w, h->buf + base, 8);
	__u64 x = w ^ 0x0a0a0a0a0a0a0a0aULL; /* zero bytes where w has '\n' */
	if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
		return 0;
#pragma unroll
	for (int b = 0; b < 8; b++) {
		__u32 idx = base + b;
		if (h->buf[idx] != '\n')
			continue;
		if (idx + 13 >= s->len)
			return 1;
		if (!is_traceparent_name(h->buf + idx + 1))
			continue;
		__u32 v = idx + 13;
#pragma unroll
		for (int k = 0; k < 3; k++) {
			if (v < GT_HTTP_HEAD_MAX && h->buf[v] == ' ')
				v++;
		}
		s->found = v;
		return 1;
	}
	return 0;
}

/* Looks for an incoming traceparent in the request head still held by the
 * connection's bufio.Reader: net/http parses headers into a Go map whose
 * layout changed completely in Go 1.24, while the raw head bytes sit at the
 * start of the reader's buffer in every version. */
static __always_inline void read_traceparent(struct gt_http_server_config *cfg, __u64 resp,
					     __u64 req, struct http_server_inflight *st)
{
	__u64 conn = 0, bufr = 0;
	struct go_slice buf = {};
	__s64 r = 0;
	__u32 zero = 0;

	if (go_read_ptr(resp, cfg->resp_conn, &conn) < 0 ||
	    go_read_ptr(conn, cfg->conn_bufr, &bufr) < 0 || !bufr ||
	    bpf_probe_read_user(&buf, sizeof(buf), (void *)(bufr + cfg->bufr_buf)) < 0 ||
	    bpf_probe_read_user(&r, sizeof(r), (void *)(bufr + cfg->bufr_r)) < 0) {
		st->flags |= GT_HTTP_EVENT_HEAD_UNREADABLE;
		return;
	}
	if (!buf.ptr || r <= 0)
		return;
	struct http_head_scratch *h = bpf_map_lookup_elem(&http_head_scratch, &zero);
	if (!h)
		return;
	__s64 avail = r < buf.len ? r : buf.len;
	if (avail > GT_HTTP_HEAD_MAX)
		avail = GT_HTTP_HEAD_MAX;
	if (avail < 16)
		return;
	__u32 n = (__u32)avail;
	asm volatile("" : "+r"(n)); /* bound the register the helper call uses */
	if (n < 16 || n > GT_HTTP_HEAD_MAX)
		return;
	if (bpf_probe_read_user(h->buf, n, (void *)buf.ptr) < 0) {
		st->flags |= GT_HTTP_EVENT_HEAD_UNREADABLE;
		return;
	}
	struct head_search s = { .h = h, .len = n, .found = -1 };
	bpf_loop((n + 7) / 8, find_traceparent, &s, 0);
	if (s.found < 0 || s.found > GT_HTTP_HEAD_MAX - GT_HTTP_TRACEPARENT_MAX)
		return;
	__u32 at = (__u32)s.found;
	asm volatile("" : "+r"(at));
	at &= GT_HTTP_HEAD_MAX - 1;
	if (at > GT_HTTP_HEAD_MAX - GT_HTTP_TRACEPARENT_MAX)
		return;
	if (gt_parse_traceparent(h->buf + at, &st->span))
		st->flags |= GT_HTTP_EVENT_TRACEPARENT;
}

/* The ends of the request's connection, as its client sees them. */
static __always_inline int conn_key_of(struct gt_http_server_config *cfg, __u64 resp, struct gt_conn_key *k)
{
	__u64 conn = 0, tcpconn = 0;
	/* conn.rwc is a net.Conn: {itab, data}; data is the *net.TCPConn */
	if (go_read_ptr(resp, cfg->resp_conn, &conn) < 0 ||
	    go_read_ptr(conn, cfg->conn_rwc + 8, &tcpconn) < 0)
		return -1;
	return gt_conn_key_of(tcpconn, &cfg->tcp, false, k);
}

/* A client on this node may have published its span for this connection
 * (probes/go/net/http/client): then that span is the parent. */
static __always_inline void link_local_client(const struct gt_conn_key *k, struct http_server_inflight *st)
{
	struct gt_span_context *client = bpf_map_lookup_elem(&gt_conn_spans, k);
	if (!client)
		return;
	gt_new_child(&st->span, client);
	st->span.flags |= GT_SPAN_PARENT_REMOTE;
	st->flags |= GT_HTTP_EVENT_LINKED;
}

SEC("uprobe.multi")
int gt_http_server_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_server_config *cfg = gt_probe_enter(ctx, &gt_http_server_config, &key, &bin_id,
							    GT_HIT_HTTP_SERVER_ENTRY);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_HTTP_SERVER_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_HTTP_SERVER_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct http_server_inflight st = {};
	st.start_ns = bpf_ktime_get_ns();
	st.resp = GO_ARG3(ctx);
	st.req = GO_ARG4(ctx);
	/* HTTP/2 requests reach serverHandler.ServeHTTP too, with another
	 * ResponseWriter: an HTTP/1 *response's conn names the server that the
	 * serverHandler (RAX) carries, an HTTP/2 writer's memory does not. */
	if (cfg->flags & GT_HTTP_SERVER_CHECK_HTTP1) {
		__u64 conn = 0, srv = 0;
		if (go_read_ptr(st.resp, cfg->resp_conn, &conn) < 0 || go_read_ptr(conn, cfg->conn_server, &srv) < 0 ||
		    srv != GO_ARG1(ctx))
			st.flags |= GT_HTTP_EVENT_NOT_HTTP1;
	}
	/* A traced client on this node is the most exact parent (it is the very
	 * span that sent this request); else an incoming traceparent; else a
	 * new trace. */
	bool http1 = !(st.flags & GT_HTTP_EVENT_NOT_HTTP1);
	/* The connection's ends tell both whether gotrail itself sent the
	 * request and which local client did; they are walked for once, and
	 * only while either map has entries. */
	bool self_conns = gt_self_any_conn(), published = gt_conn_any_published();
	struct gt_conn_key conn = {};
	if (http1 && (cfg->flags & GT_HTTP_SERVER_LINK) && (self_conns || published) &&
	    conn_key_of(cfg, st.resp, &conn) == 0) {
		if (self_conns && gt_conn_is_own(&conn)) {
			gt_self_skip_mark(&key);
			return 0;
		}
		if (published)
			link_local_client(&conn, &st);
	}
	if (http1 && !(st.flags & GT_HTTP_EVENT_LINKED) && (cfg->flags & GT_HTTP_SERVER_READ_HEAD))
		read_traceparent(cfg, st.resp, st.req, &st);
	if (!(st.flags & (GT_HTTP_EVENT_TRACEPARENT | GT_HTTP_EVENT_LINKED)))
		gt_new_root(&st.span);
	gt_mark_entered(&key, GT_PAIRED_HTTP_SERVER);
	if (bpf_map_update_elem(&gt_http_server_inflight, &key, &st, BPF_ANY) < 0) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
		gt_debug_hit(ctx, GT_HIT_HTTP_SERVER_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_HTTP_SERVER_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	bpf_map_update_elem(&gt_goroutine_spans, &key, &st.span, BPF_ANY);
	return 0;
}

/* Ends the request in flight on this goroutine: one event, state removed. */
static __always_inline void finish_request(struct gt_http_server_config *cfg, struct gt_goroutine_key *key,
					   __u32 bin_id, struct http_server_inflight *st, __u32 extra_flags)
{
	struct gt_http_server_event *ev = bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0);
	if (!ev) {
		gt_count(GT_COUNTER_RINGBUF_FULL);
		bpf_map_delete_elem(&gt_http_server_inflight, key);
		bpf_map_delete_elem(&gt_goroutine_spans, key);
		return;
	}
	gt_fill_header(&ev->hdr, GT_EVENT_HTTP_SERVER, sizeof(*ev), key->tgid, bin_id, key->goid);
	ev->start_ns = st->start_ns;
	ev->end_ns = bpf_ktime_get_ns();
	ev->flags = st->flags | extra_flags;
	ev->span = st->span;

	__u64 req = st->req, url = 0, status = 0;
	ev->method_len = go_read_string(req, cfg->req_method, ev->method, GT_HTTP_METHOD_MAX);
	ev->host_len = go_read_string(req, cfg->req_host, ev->host, GT_HTTP_HOST_MAX);
	ev->remote_len = go_read_string(req, cfg->req_remote_addr, ev->remote, GT_HTTP_REMOTE_MAX);
	go_read_ptr(req, cfg->req_url, &url);
	ev->path_len = go_read_string(url, cfg->url_path, ev->path, GT_HTTP_PATH_MAX);
	if (st->resp && !(st->flags & GT_HTTP_EVENT_NOT_HTTP1)) {
		bpf_probe_read_user(&status, sizeof(status), (void *)(st->resp + cfg->resp_status));
	} else if (st->resp && (cfg->flags & GT_HTTP_SERVER_H2_STATUS)) {
		__u64 rws = 0;
		if (go_read_ptr(st->resp, cfg->h2_rws, &rws) == 0 && rws &&
		    bpf_probe_read_user(&status, sizeof(status), (void *)(rws + cfg->h2_status)) == 0)
			ev->flags |= GT_HTTP_EVENT_H2_STATUS;
	}
	ev->status = status < 1000 ? (__u32)status : 0;
	if (ev->method_len < 0 || ev->path_len < 0)
		gt_count(GT_COUNTER_READ_FAILED);

	bpf_map_delete_elem(&gt_http_server_inflight, key);
	bpf_map_delete_elem(&gt_goroutine_spans, key);
	gt_submit(ev);
}

/* Ends this goroutine's request, if one is in flight; `expected` says
 * whether a missing entry is worth counting. */
static __always_inline int end_inflight(struct pt_regs *ctx, __u32 extra_flags, bool expected, __u32 site)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_server_config *cfg = gt_probe_enter(ctx, &gt_http_server_config, &key, &bin_id, site);
	if (!cfg)
		return 0;
	struct http_server_inflight *st = bpf_map_lookup_elem(&gt_http_server_inflight, &key);
	gt_debug_hit(ctx, site, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
	if (st)
		finish_request(cfg, &key, bin_id, st, extra_flags);
	else if (expected && !gt_self_skip_take(&key))
		gt_count_no_entry(&key, GT_PAIRED_HTTP_SERVER);
	return 0;
}

SEC("uprobe.multi")
int gt_http_server_return(struct pt_regs *ctx)
{
	return end_inflight(ctx, 0, true, GT_HIT_HTTP_SERVER_RETURN);
}

/* The deferred recover of func (c *conn) serve(ctx context.Context), i.e.
 * net/http.(*conn).serve.func1: it runs on the connection's goroutine when
 * the connection ends, and after a handler panicked. A request still in
 * flight here never returned from ServeHTTP: its handler panicked (or
 * aborted with http.ErrAbortHandler), and without this its span would be
 * lost. One hit per connection, not per request. */
SEC("uprobe.multi")
int gt_http_server_panic(struct pt_regs *ctx)
{
	return end_inflight(ctx, GT_HTTP_EVENT_PANIC, false, GT_HIT_HTTP_SERVER_PANIC);
}
