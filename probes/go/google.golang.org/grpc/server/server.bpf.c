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
 *     itself (an unknown service or method).
 *   func (t *http2Server) operateHeaders(ctx context.Context, frame *http2.MetaHeadersFrame, ...)
 *     (no ctx before v1.60.0: frame RBX; since: frame RDI)
 *     On the transport's reader goroutine, once per stream, before the
 *     stream's handleStream: the call's HEADERS as grpc-go decoded them
 *     (frame.Fields, lower-case names). An incoming traceparent (and
 *     tracestate) is parsed here and kept for the stream by {transport,
 *     stream id}; handleStream takes it. Only read, never written. */
#include "go_abi.h"

enum gt_grpc_server_limits {
	GT_GRPC_METHOD_MAX = 128,
	GT_GRPC_SERVER_INFLIGHT_MAX = 16384,
	GT_GRPC_TRACESTATE_MAX = 512,   /* bytes of tracestate carried (W3C: propagate at least 512) */
	GT_GRPC_HEADER_FIELDS_MAX = 64, /* header fields of a call searched for traceparent */
	GT_GRPC_HEADER_FIELD_SIZE = 40, /* hpack.HeaderField: Name, Value string, Sensitive bool */
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
	__u32 mhf_headers_frame; /* x/net/http2.MetaHeadersFrame.HeadersFrame (*HeadersFrame) */
	__u32 mhf_fields;        /* x/net/http2.MetaHeadersFrame.Fields ([]hpack.HeaderField) */
	__u32 hf_frame_header;   /* x/net/http2.HeadersFrame.FrameHeader */
	__u32 fh_stream_id;      /* x/net/http2.FrameHeader.StreamID */
	__u32 field_name;        /* x/net/http2/hpack.HeaderField.Name */
	__u32 field_value;       /* x/net/http2/hpack.HeaderField.Value */
};

enum gt_grpc_server_flags {
	GT_GRPC_SERVER_ENABLED = 1,
	/* the connection's addresses can be read (client.*, server.*) */
	GT_GRPC_SERVER_CONN = 2,
	/* the stream id too: look for a traced client on this node */
	GT_GRPC_SERVER_LINK = 4,
	/* the written status's code can be read */
	GT_GRPC_SERVER_STATUS = 8,
	/* the call's header fields can be read: an incoming traceparent is the parent */
	GT_GRPC_SERVER_HEADERS = 16,
	/* operateHeaders takes a context first (v1.60.0 and later): frame in RDI, not RBX */
	GT_GRPC_SERVER_HEADERS_CTX = 32,
};

enum gt_grpc_server_event_flags {
	GT_GRPC_SERVER_EVENT_STATUS = 1,      /* status_code was written by the RPC */
	GT_GRPC_SERVER_EVENT_CONN = 2,        /* conn holds the connection's ends */
	GT_GRPC_SERVER_EVENT_LINKED = 4,      /* the parent is a traced client's span on this node */
	GT_GRPC_SERVER_EVENT_TRACEPARENT = 8, /* the parent came in the call's traceparent */
	/* a traceparent came but is not used (malformed, or sent more than once) */
	GT_GRPC_SERVER_EVENT_TRACEPARENT_INVALID = 16,
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
	__s32 tracestate_len; /* the first tracestate field's full length (0: none) */
	char method[GT_GRPC_METHOD_MAX];
	char tracestate[GT_GRPC_TRACESTATE_MAX];
};

/* This probe's ids in the object-wide families (see enum gt_event_type). */
enum gt_event_type_grpc_server {
	GT_EVENT_GRPC_SERVER = 6,
};

enum gt_hit_site_grpc_server {
	GT_HIT_GRPC_SERVER_ENTRY = 8,
	GT_HIT_GRPC_SERVER_RETURN = 9,
	GT_HIT_GRPC_SERVER_STATUS = 10,
	GT_HIT_GRPC_SERVER_HEADERS = 16,
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
	struct go_string tracestate; /* the incoming tracestate's value, read at the end */
};

/* What a call's HEADERS carried, from operateHeaders to handleStream: keyed
 * by {tgid, reserved = stream id, goid = the *http2Server}. */
struct grpc_server_incoming {
	struct gt_span_context span; /* meaningful with GT_GRPC_SERVER_EVENT_TRACEPARENT */
	struct go_string tracestate;
	__u32 flags; /* GT_GRPC_SERVER_EVENT_TRACEPARENT or _TRACEPARENT_INVALID */
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_GRPC_SERVER_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct grpc_server_incoming);
} gt_grpc_server_incoming SEC(".maps");

/* The search of a call's header fields: state in map memory, for bpf_loop. */
struct grpc_header_search {
	__u64 fields; /* the []hpack.HeaderField array */
	__s64 n;
	struct go_string traceparent; /* the first one's value */
	struct go_string tracestate;
	__u32 traceparents; /* how many came */
	__u32 tracestates;
	char value[128]; /* a traceparent value, for parsing */
};

struct grpc_header_walk {
	struct grpc_header_search *s;
	struct gt_grpc_server_config *cfg;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct grpc_header_search);
} grpc_header_scratch SEC(".maps");

/* "traceparent" and "tracestate" as HTTP/2 sends them (lower case), little-endian */
#define GRPC_KEY_TRACEPAR 0x7261706563617274ULL /* "tracepar" */
#define GRPC_KEY_ENT      0x00746e65U           /* "ent" */
#define GRPC_KEY_TRACESTA 0x6174736563617274ULL /* "tracesta" */
#define GRPC_KEY_TE       0x00006574U           /* "te" */

static long search_fields(__u32 i, struct grpc_header_walk *w)
{
	struct grpc_header_search *s = w->s;
	struct gt_grpc_server_config *cfg = w->cfg;
	if (!s || !cfg || i >= s->n)
		return 1;
	__u64 f = s->fields + (__u64)i * GT_GRPC_HEADER_FIELD_SIZE;
	struct go_string name = {}, value = {};
	if (bpf_probe_read_user(&name, sizeof(name), (void *)(f + cfg->field_name)) < 0 ||
	    bpf_probe_read_user(&value, sizeof(value), (void *)(f + cfg->field_value)) < 0)
		return 1;
	if ((name.len != 11 && name.len != 10) || !name.ptr)
		return 0;
	struct {
		__u64 head;
		__u32 tail;
		__u32 pad;
	} k = {};
	if (bpf_probe_read_user(&k, name.len == 11 ? 11 : 10, (void *)name.ptr) < 0)
		return 0;
	if (name.len == 11 && k.head == GRPC_KEY_TRACEPAR && k.tail == GRPC_KEY_ENT) {
		if (!s->traceparents++)
			s->traceparent = value;
	} else if (name.len == 10 && k.head == GRPC_KEY_TRACESTA && k.tail == GRPC_KEY_TE) {
		if (!s->tracestates++)
			s->tracestate = value;
	}
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_grpc_server_config);
} gt_grpc_server_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
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
	__u32 stream_id = 0;
	if (cfg->flags & (GT_GRPC_SERVER_LINK | GT_GRPC_SERVER_HEADERS))
		bpf_probe_read_user(&stream_id, sizeof(stream_id), (void *)(st->stream + cfg->stream_id));
	if (cfg->flags & GT_GRPC_SERVER_CONN) {
		/* http2Server.conn is a net.Conn {itab, data}: the *net.TCPConn
		 * for connections without transport security */
		__u64 tcp = 0;
		if (go_read_ptr(GO_ARG3(ctx), cfg->st_conn + 8, &tcp) == 0 &&
		    gt_conn_key_of(tcp, &cfg->tcp, false, &st->conn) == 0) {
			st->flags |= GT_GRPC_SERVER_EVENT_CONN;
			st->conn.stream_id = stream_id;
		}
	}
	/* what the call's HEADERS carried: taken whether used or not */
	struct grpc_server_incoming in = {};
	if ((cfg->flags & GT_GRPC_SERVER_HEADERS) && stream_id) {
		struct gt_goroutine_key ik = { .tgid = key.tgid,
					       .reserved = stream_id,
					       .goid = GO_ARG3(ctx) };
		struct grpc_server_incoming *found = bpf_map_lookup_elem(&gt_grpc_server_incoming, &ik);
		if (found) {
			in = *found;
			bpf_map_delete_elem(&gt_grpc_server_incoming, &ik);
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
	/* a traced client on this node is the most exact parent (the very span
	 * that made the call); else the call's traceparent; else a new trace */
	if (!(st->flags & GT_GRPC_SERVER_EVENT_LINKED)) {
		st->flags |= in.flags;
		if (in.flags & GT_GRPC_SERVER_EVENT_TRACEPARENT) {
			st->span = in.span;
			st->tracestate = in.tracestate;
		} else {
			gt_new_root(&st->span);
		}
	}
	gt_mark_entered(&key, GT_PAIRED_GRPC_SERVER);
	if (bpf_map_update_elem(&gt_grpc_server_inflight, &key, st, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_GRPC_SERVER);
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
		sampled ? gt_count(GT_COUNTER_RINGBUF_FULL) : gt_count_not_sampled(&st->span);
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
	ev->tracestate_len = 0;
	/* the first tracestate field, up to 512 bytes: the string is the
	 * call's metadata, alive while its handler runs */
	struct go_string ts = st->tracestate;
	if (ts.len > 0 && ts.ptr) {
		__u32 n = ts.len < GT_GRPC_TRACESTATE_MAX ? (__u32)ts.len : GT_GRPC_TRACESTATE_MAX;
		asm volatile("" : "+r"(n));
		if (n >= 1 && n <= GT_GRPC_TRACESTATE_MAX &&
		    bpf_probe_read_user(ev->tracestate, n, (void *)ts.ptr) == 0)
			ev->tracestate_len = ts.len > 0x7fffffff ? 0x7fffffff : (__s32)ts.len;
	}
	ev->method_len = go_read_string(st->stream, cfg->stream_method, ev->method, GT_GRPC_METHOD_MAX);
	if (ev->method_len < 0)
		gt_count(GT_COUNTER_READ_FAILED);
	bpf_map_delete_elem(&gt_grpc_server_inflight, &key);
	bpf_map_delete_elem(&gt_goroutine_spans, &key);
	gt_submit(ev);
	return 0;
}

SEC("uprobe.multi")
int gt_grpc_server_headers(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_grpc_server_config *cfg = gt_probe_enter(ctx, &gt_grpc_server_config, &key, &bin_id,
							   GT_HIT_GRPC_SERVER_HEADERS);
	if (!cfg || !(cfg->flags & GT_GRPC_SERVER_HEADERS))
		return 0;
	gt_debug_hit(ctx, GT_HIT_GRPC_SERVER_HEADERS, GT_HIT_FOUND, key.tgid, bin_id, key.goid);
	/* both registers read before choosing: a context field at a variable
	 * offset is refused by the verifier */
	__u64 arg2 = GO_ARG2(ctx), arg4 = GO_ARG4(ctx);
	asm volatile("" : "+r"(arg2), "+r"(arg4));
	__u64 frame = (cfg->flags & GT_GRPC_SERVER_HEADERS_CTX) ? arg4 : arg2;
	__u64 hf = 0;
	__u32 stream_id = 0;
	struct go_slice fields = {};
	if (go_read_ptr(frame, cfg->mhf_headers_frame, &hf) < 0 || !hf ||
	    bpf_probe_read_user(&stream_id, sizeof(stream_id),
				(void *)(hf + cfg->hf_frame_header + cfg->fh_stream_id)) < 0 ||
	    !stream_id ||
	    bpf_probe_read_user(&fields, sizeof(fields), (void *)(frame + cfg->mhf_fields)) < 0 ||
	    !fields.ptr || fields.len <= 0)
		return 0;
	struct grpc_header_search *s = bpf_map_lookup_elem(&grpc_header_scratch, &zero);
	if (!s)
		return 0;
	__builtin_memset(s, 0, sizeof(*s));
	s->fields = fields.ptr;
	s->n = fields.len;
	struct grpc_header_walk w = { .s = s, .cfg = cfg };
	bpf_loop(GT_GRPC_HEADER_FIELDS_MAX, search_fields, &w, 0);
	if (!s->traceparents)
		return 0;
	struct grpc_server_incoming in = {};
	/* the spec: a traceparent sent more than once is not used. HTTP/2
	 * field values carry no surrounding whitespace (RFC 9113, 8.2.1). */
	__s64 len = s->traceparent.len;
	bool ok = s->traceparents == 1 && len >= 55 && s->traceparent.ptr;
	if (ok) {
		__u32 n = len < (__s64)sizeof(s->value) ? (__u32)len : (__u32)sizeof(s->value);
		asm volatile("" : "+r"(n));
		if (n < 55 || n > sizeof(s->value) ||
		    bpf_probe_read_user(s->value, n, (void *)s->traceparent.ptr) < 0)
			ok = false;
		else
			ok = gt_parse_traceparent(s->value, len, &in.span);
	}
	if (ok) {
		in.flags = GT_GRPC_SERVER_EVENT_TRACEPARENT;
		if (s->tracestates)
			in.tracestate = s->tracestate;
	} else {
		in.flags = GT_GRPC_SERVER_EVENT_TRACEPARENT_INVALID;
		gt_count(GT_COUNTER_TRACEPARENT_INVALID);
	}
	struct gt_goroutine_key ik = { .tgid = key.tgid, .reserved = stream_id, .goid = GO_ARG1(ctx) };
	if (bpf_map_update_elem(&gt_grpc_server_incoming, &ik, &in, BPF_ANY) < 0)
		gt_count(GT_COUNTER_INFLIGHT_FULL);
	return 0;
}
