/* google.golang.org/grpc server: one event per RPC (unary or streaming).
 *
 * Probed:
 *   func (s *Server) handleStream(t transport.ServerTransport, stream *transport.ServerStream)
 *     (stream *transport.Stream before v1.69; a third argument trInfo before v1.55)
 *     s RAX, t (interface: itab, data) RBX, RCX -- data is the *http2Server --, stream RDI
 *     Runs on a goroutine of its own per RPC (or a server worker's) from the
 *     stream's start to the handler's return and the status written: entry
 *     after the stack-growth check, a plain uprobe on every RET.
 *   func (t *http2Server) writeStatus(s *ServerStream, st *status.Status) error
 *     (exported WriteStatus(s *Stream, ...) before v1.69)
 *     t RAX, s RBX, st RCX: the status the RPC ends with, written on the
 *     handleStream goroutine by processUnaryRPC/processStreamingRPC (the
 *     handler's returned error, as grpc-go converts it: status.Error codes,
 *     context errors, a panic an interceptor recovered) or by handleStream
 *     itself (an unknown service or method). */
#include "go_abi.h"

enum gt_grpc_server_limits {
	GT_GRPC_METHOD_MAX = 128,
	GT_GRPC_SERVER_INFLIGHT_MAX = 16384,
};

struct gt_grpc_server_config {
	__u32 server_stream_stream; /* transport.ServerStream.Stream (v1.69+; 0 before: the argument is the *Stream) */
	__u32 stream_method; /* transport.Stream.method */
	__u32 stream_id;     /* transport.Stream.id */
	__u32 st_conn;       /* transport.http2Server.conn (net.Conn) */
	__u32 status_s;      /* internal/status.Status.s (*spb.Status) */
	__u32 status_code;   /* genproto rpc/status.Status.Code (int32) */
	__u32 flags;         /* enum gt_grpc_server_flags */
	__u32 reserved;
	struct gt_tcp_offsets tcp;
};

enum gt_grpc_server_flags {
	GT_GRPC_SERVER_ENABLED = 1,
	/* the connection's addresses can be read (client.*, server.*) */
	GT_GRPC_SERVER_CONN = 2,
	/* the stream id too: look for a traced client on this node */
	GT_GRPC_SERVER_LINK = 4,
	/* the written status's code can be read */
	GT_GRPC_SERVER_STATUS = 8,
};

enum gt_grpc_server_event_flags {
	GT_GRPC_SERVER_EVENT_STATUS = 1, /* status_code was written by the RPC */
	GT_GRPC_SERVER_EVENT_CONN = 2,   /* conn holds the connection's ends */
	GT_GRPC_SERVER_EVENT_LINKED = 4, /* the parent is a traced client's span on this node */
};

struct gt_grpc_server_event {
	struct gt_event_header hdr;
	__u64 start_ns; /* CLOCK_MONOTONIC */
	__u64 end_ns;
	struct gt_span_context span;
	struct gt_conn_key conn; /* as the client sees it; stream_id: the HTTP/2 stream */
	__s32 method_len;        /* the full method's length ("/pkg.Service/Method"), may exceed the copy */
	__s32 status_code; /* google.golang.org/grpc/codes.Code; meaningful with GT_GRPC_SERVER_EVENT_STATUS */
	__u32 flags;       /* enum gt_grpc_server_event_flags */
	__u32 reserved;
	char method[GT_GRPC_METHOD_MAX];
};

/* This probe's ids in the object-wide families (see enum gt_event_type). */
enum gt_event_type_grpc_server {
	GT_EVENT_GRPC_SERVER = 6,
};

enum gt_hit_site_grpc_server {
	GT_HIT_GRPC_SERVER_ENTRY = 8,
	GT_HIT_GRPC_SERVER_RETURN = 9,
	GT_HIT_GRPC_SERVER_STATUS = 10,
};

enum gt_paired_function_grpc_server {
	GT_PAIRED_GRPC_SERVER = 3,
};

GT_EXPORT_LAYOUTS(grpc_server,
	enum gt_event_type_grpc_server event_type;
	enum gt_hit_site_grpc_server hit_site;
	enum gt_paired_function_grpc_server paired_function;
	struct gt_grpc_server_event event;
	struct gt_grpc_server_config config;
	enum gt_grpc_server_limits limits;
	enum gt_grpc_server_flags config_flags;
	enum gt_grpc_server_event_flags event_flags;
);

struct grpc_server_inflight {
	__u64 start_ns;
	__u64 stream; /* the *transport.Stream */
	struct gt_span_context span;
	struct gt_conn_key conn;
	__s32 status_code;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_grpc_server_config);
} gt_grpc_server_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_GRPC_SERVER_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct grpc_server_inflight);
} gt_grpc_server_inflight SEC(".maps");

/* Per-CPU room for the in-flight record: with the span and connection it is
 * too large to build on the BPF stack next to the callers' frames. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct grpc_server_inflight);
} grpc_server_scratch SEC(".maps");

SEC("uprobe.multi")
int gt_grpc_server_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_grpc_server_config *cfg = gt_probe_enter(ctx, &gt_grpc_server_config, &key, &bin_id,
							   GT_HIT_GRPC_SERVER_ENTRY);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_GRPC_SERVER_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_GRPC_SERVER_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct grpc_server_inflight *st = bpf_map_lookup_elem(&grpc_server_scratch, &zero);
	if (!st)
		return 0;
	__builtin_memset(st, 0, sizeof(*st));
	st->start_ns = bpf_ktime_get_ns();
	st->stream = GO_ARG4(ctx) + cfg->server_stream_stream;
	st->status_code = -1;
	if (cfg->flags & GT_GRPC_SERVER_CONN) {
		/* http2Server.conn is a net.Conn {itab, data}: the *net.TCPConn
		 * for connections without transport security */
		__u64 tcp = 0;
		if (go_read_ptr(GO_ARG3(ctx), cfg->st_conn + 8, &tcp) == 0 &&
		    gt_conn_key_of(tcp, &cfg->tcp, false, &st->conn) == 0) {
			st->flags |= GT_GRPC_SERVER_EVENT_CONN;
			bpf_probe_read_user(&st->conn.stream_id, sizeof(st->conn.stream_id),
					    (void *)(st->stream + cfg->stream_id));
		}
	}
	if ((st->flags & GT_GRPC_SERVER_EVENT_CONN) && (cfg->flags & GT_GRPC_SERVER_LINK) &&
	    st->conn.stream_id && gt_conn_any_published()) {
		struct gt_span_context *client = bpf_map_lookup_elem(&gt_conn_spans, &st->conn);
		if (client) {
			gt_new_child(&st->span, client);
			st->span.flags |= GT_SPAN_PARENT_REMOTE;
			st->flags |= GT_GRPC_SERVER_EVENT_LINKED;
		}
	}
	if (!(st->flags & GT_GRPC_SERVER_EVENT_LINKED))
		gt_new_root(&st->span);
	gt_mark_entered(&key, GT_PAIRED_GRPC_SERVER);
	if (bpf_map_update_elem(&gt_grpc_server_inflight, &key, st, BPF_ANY) < 0) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
		gt_debug_hit(ctx, GT_HIT_GRPC_SERVER_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_GRPC_SERVER_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	bpf_map_update_elem(&gt_goroutine_spans, &key, &st->span, BPF_ANY);
	return 0;
}

SEC("uprobe.multi")
int gt_grpc_server_status(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_grpc_server_config *cfg = gt_probe_enter(ctx, &gt_grpc_server_config, &key, &bin_id,
							   GT_HIT_GRPC_SERVER_STATUS);
	if (!cfg || !(cfg->flags & GT_GRPC_SERVER_STATUS))
		return 0;
	struct grpc_server_inflight *st = bpf_map_lookup_elem(&gt_grpc_server_inflight, &key);
	gt_debug_hit(ctx, GT_HIT_GRPC_SERVER_STATUS, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st)
		return 0;
	__u64 s = 0;
	__s32 code = 0;
	/* a nil *spb.Status is codes.OK */
	if (go_read_ptr(GO_ARG3(ctx), cfg->status_s, &s) < 0)
		return 0;
	if (s && bpf_probe_read_user(&code, sizeof(code), (void *)(s + cfg->status_code)) < 0)
		return 0;
	st->status_code = code;
	st->flags |= GT_GRPC_SERVER_EVENT_STATUS;
	return 0;
}

SEC("uprobe.multi")
int gt_grpc_server_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_grpc_server_config *cfg = gt_probe_enter(ctx, &gt_grpc_server_config, &key, &bin_id,
							   GT_HIT_GRPC_SERVER_RETURN);
	if (!cfg)
		return 0;
	struct grpc_server_inflight *st = bpf_map_lookup_elem(&gt_grpc_server_inflight, &key);
	gt_debug_hit(ctx, GT_HIT_GRPC_SERVER_RETURN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st) {
		gt_count_no_entry(&key, GT_PAIRED_GRPC_SERVER);
		return 0;
	}
	bool sampled = st->span.flags & GT_SPAN_SAMPLED;
	struct gt_grpc_server_event *ev = sampled ? bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0) : 0;
	if (!ev) {
		gt_count(sampled ? GT_COUNTER_RINGBUF_FULL : GT_COUNTER_NOT_SAMPLED);
		bpf_map_delete_elem(&gt_grpc_server_inflight, &key);
		bpf_map_delete_elem(&gt_goroutine_spans, &key);
		return 0;
	}
	gt_fill_header(&ev->hdr, GT_EVENT_GRPC_SERVER, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->start_ns = st->start_ns;
	ev->end_ns = bpf_ktime_get_ns();
	ev->span = st->span;
	ev->conn = st->conn;
	ev->status_code = st->status_code;
	ev->flags = st->flags;
	ev->reserved = 0;
	ev->method_len = go_read_string(st->stream, cfg->stream_method, ev->method, GT_GRPC_METHOD_MAX);
	if (ev->method_len < 0)
		gt_count(GT_COUNTER_READ_FAILED);
	bpf_map_delete_elem(&gt_grpc_server_inflight, &key);
	bpf_map_delete_elem(&gt_goroutine_spans, &key);
	gt_submit(ev);
	return 0;
}
