/* net/http client: one event per request sent through an http.Transport.
 *
 * Probed: func (t *Transport) roundTrip(req *Request) (*Response, error)
 *   t   RAX, req RBX at entry
 *   results at RET: *Response RAX, error (itab, data) RBX, RCX
 * roundTrip (not RoundTrip) is where every Transport request goes, HTTP/1
 * and HTTP/2 alike, and it runs on the caller's goroutine, so the caller's
 * server span (if any) is this span's parent. */
#include "go_abi.h"

enum gt_http_client_limits {
	GT_HTTP_CLIENT_METHOD_MAX = 16,
	GT_HTTP_CLIENT_HOST_MAX = 64,
	GT_HTTP_CLIENT_PATH_MAX = 128,
	GT_HTTP_CLIENT_SCHEME_MAX = 8,
	GT_HTTP_CLIENT_INFLIGHT_MAX = 16384,
};

struct gt_http_client_config {
	__u32 req_method;      /* net/http.Request.Method */
	__u32 req_url;         /* net/http.Request.URL */
	__u32 url_scheme;      /* net/url.URL.Scheme */
	__u32 url_host;        /* net/url.URL.Host */
	__u32 url_path;        /* net/url.URL.Path */
	__u32 resp_status;     /* net/http.Response.StatusCode */
	__u32 pconn_conn;      /* net/http.persistConn.conn */
	__u32 flags;           /* enum gt_http_client_flags */
	struct gt_tcp_offsets tcp;
};

enum gt_http_client_flags {
	GT_HTTP_CLIENT_ENABLED = 1,
	/* connection offsets known: publish the span for the server side */
	GT_HTTP_CLIENT_LINK = 2,
};

enum gt_http_client_event_flags {
	GT_HTTP_CLIENT_EVENT_ERROR = 1,   /* roundTrip returned an error */
	GT_HTTP_CLIENT_EVENT_LINKED = 2,  /* the span was published for its connection */
};

struct gt_http_client_event {
	struct gt_event_header hdr;
	__u64 start_ns;
	__u64 end_ns;
	__s32 method_len;
	__s32 scheme_len;
	__s32 host_len;
	__s32 path_len;
	__u32 status;            /* 0 when there is no response */
	__u32 flags;             /* enum gt_http_client_event_flags */
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
	struct gt_span_context span;
	struct gt_conn_key conn;
	__u32 linked;
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_http_client_config);
} gt_http_client_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_HTTP_CLIENT_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct http_client_inflight);
} gt_http_client_inflight SEC(".maps");

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
	struct gt_span_context *parent = bpf_map_lookup_elem(&gt_goroutine_spans, &key);
	if (parent)
		gt_new_child(&st.span, parent);
	else
		gt_new_root(&st.span);
	gt_mark_entered(&key, GT_PAIRED_HTTP_CLIENT);
	if (bpf_map_update_elem(&gt_http_client_inflight, &key, &st, BPF_ANY) < 0) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
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
	gt_debug_hit(ctx, GT_HIT_HTTP_CLIENT_CONN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
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
		st->conn = k;
		st->linked = 1;
		gt_conn_published_add(1);
	}
	return 0;
}

SEC("uprobe.multi")
int gt_http_client_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_client_config *cfg = gt_probe_enter(ctx, &gt_http_client_config, &key, &bin_id,
							    GT_HIT_HTTP_CLIENT_RETURN);
	if (!cfg)
		return 0;
	struct http_client_inflight *st = bpf_map_lookup_elem(&gt_http_client_inflight, &key);
	gt_debug_hit(ctx, GT_HIT_HTTP_CLIENT_RETURN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
	if (!st) {
		gt_count_no_entry(&key, GT_PAIRED_HTTP_CLIENT);
		return 0;
	}
	__u64 resp = GO_ARG1(ctx), err = GO_ARG2(ctx);
	/* a child of an unsampled request is not sampled either: no span */
	bool sampled = st->span.flags & GT_SPAN_SAMPLED;
	struct gt_http_client_event *ev = sampled ? bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0) : 0;
	if (!ev) {
		gt_count(sampled ? GT_COUNTER_RINGBUF_FULL : GT_COUNTER_NOT_SAMPLED);
		if (st->linked) {
			bpf_map_delete_elem(&gt_conn_spans, &st->conn);
			gt_conn_published_add(-1);
		}
		bpf_map_delete_elem(&gt_http_client_inflight, &key);
		return 0;
	}
	gt_fill_header(&ev->hdr, GT_EVENT_HTTP_CLIENT, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->start_ns = st->start_ns;
	ev->end_ns = bpf_ktime_get_ns();
	ev->span = st->span;
	ev->flags = (err ? GT_HTTP_CLIENT_EVENT_ERROR : 0) | (st->linked ? GT_HTTP_CLIENT_EVENT_LINKED : 0);
	if (st->linked) {
		bpf_map_delete_elem(&gt_conn_spans, &st->conn);
		gt_conn_published_add(-1);
	}
	__u64 req = st->req, url = 0, status = 0;
	ev->method_len = go_read_string(req, cfg->req_method, ev->method, GT_HTTP_CLIENT_METHOD_MAX);
	go_read_ptr(req, cfg->req_url, &url);
	ev->scheme_len = go_read_string(url, cfg->url_scheme, ev->scheme, GT_HTTP_CLIENT_SCHEME_MAX);
	ev->host_len = go_read_string(url, cfg->url_host, ev->host, GT_HTTP_CLIENT_HOST_MAX);
	ev->path_len = go_read_string(url, cfg->url_path, ev->path, GT_HTTP_CLIENT_PATH_MAX);
	if (resp && !err)
		bpf_probe_read_user(&status, sizeof(status), (void *)(resp + cfg->resp_status));
	ev->status = status < 1000 ? (__u32)status : 0;
	if (ev->method_len < 0)
		gt_count(GT_COUNTER_READ_FAILED);
	bpf_map_delete_elem(&gt_http_client_inflight, &key);
	gt_submit(ev);
	return 0;
}
