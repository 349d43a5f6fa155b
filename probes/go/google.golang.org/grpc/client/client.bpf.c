/* google.golang.org/grpc client: one event per RPC, unary (ClientConn.Invoke)
 * or streaming (ClientConn.NewStream): both open their stream through
 * newClientStream, on the caller's goroutine, and end it through
 * clientStream.finish, exactly once, on whichever goroutine ends it.
 *
 * Probed:
 *   func newClientStream(ctx context.Context, desc *StreamDesc, cc *ClientConn, method string,
 *                        opts ...CallOption) (_ ClientStream, err error)
 *     entry: ctx RAX, RBX; desc RCX; cc RDI; method RSI (pointer), R8 (length)
 *   func newClientStreamWithParams(ctx, desc, cc, method, ...) (_ ClientStream, err error)
 *     called by newClientStream on the same goroutine; its result is the
 *     *clientStream itself (newClientStream may wrap it: v1.85 does)
 *     RET: ClientStream (itab, data) RAX, RBX; err RCX, RDI
 *     A call that fails before it (a config selector's error) has no span.
 *   func (cs *clientStream) finish(err error)
 *     cs RAX, err (itab, data) RBX, RCX: nil or io.EOF for a call that
 *     succeeded, else the status error the caller gets.
 * The span is the child of the span the calling goroutine is serving.
 *
 * Node-local linking (a traced gRPC server on this node finds the call's
 * span by the connection's 4-tuple and the HTTP/2 stream id; nothing is
 * written into the program):
 *   func (t *http2Client) createHeaderFields(ctx, callHdr *CallHdr) ([]hpack.HeaderField, error)
 *     RET, on the caller's goroutine while newClientStream runs: the header
 *     fields' array (RAX) becomes the call's token, since the loopy writer
 *     is handed the same slice.
 *   func (l *loopyWriter) clientHeaderHandler(hdr *clientHeaders) error   (v1.82.1 and later)
 *     l RAX, hdr RBX
 *   func (l *loopyWriter) originateStream(str *outStream, hdr *headerFrame) error  (v1.53.0 - v1.82.0)
 *     l RAX, str RBX, hdr RCX
 *   func (l *loopyWriter) originateStream(str *outStream) error           (before v1.53.0)
 *     l RAX, str RBX: the headerFrame is the one item of str.itl
 *     entry, on the connection's writer goroutine, for client streams only
 *     (a server's response headers take other paths). The stream id is
 *     known (the caller took it under the control buffer's lock) and the
 *     HEADERS frame is not written yet, so the span is published before the
 *     server can see the stream. */
#include "go_abi.h"
#include "ancestry.h"

enum gt_grpc_client_limits {
	GT_GRPC_CLIENT_METHOD_MAX = 128,
	GT_GRPC_CLIENT_TARGET_MAX = 64,
	GT_GRPC_CLIENT_INFLIGHT_MAX = 16384,
};

struct gt_grpc_client_config {
	__u32 cc_target;      /* grpc.ClientConn.target */
	__u32 error_s;        /* internal/status.Error.s (*Status) */
	__u32 status_s;       /* internal/status.Status.s (*spb.Status) */
	__u32 status_code;    /* genproto rpc/status.Status.Code (int32) */
	__u32 flags;          /* enum gt_grpc_client_flags */
	__u32 hdr_stream_id;  /* transport.clientHeaders.streamID (headerFrame.streamID before v1.82.1) */
	__u32 hdr_hf;         /* transport.clientHeaders.hf (headerFrame.hf before v1.82.1) */
	__u32 loopy_framer;   /* transport.loopyWriter.framer */
	__u32 framer_writer;  /* transport.framer.writer */
	__u32 bufwriter_conn; /* transport.bufWriter.conn (net.Conn, io.Writer from v1.82) */
	struct gt_tcp_offsets tcp;
	__u32 str_itl;   /* transport.outStream.itl (before v1.53.0) */
	__u32 itl_head;  /* transport.itemList.head */
	__u32 node_it;   /* transport.itemNode.it (an interface: its data word is the *headerFrame) */
	__u32 hdr_where; /* enum gt_grpc_client_hdr_where */
};

/* Where the probed writer function is given the request's headers. */
enum gt_grpc_client_hdr_where {
	GT_GRPC_CLIENT_HDR_ARG2 = 0,     /* clientHeaderHandler(hdr) */
	GT_GRPC_CLIENT_HDR_ARG3 = 1,     /* originateStream(str, hdr) */
	GT_GRPC_CLIENT_HDR_STR_ITEM = 2, /* originateStream(str): str.itl.head.it */
};

enum gt_grpc_client_flags {
	GT_GRPC_CLIENT_ENABLED = 1,
	GT_GRPC_CLIENT_STATUS = 2, /* the status offsets are known */
	GT_GRPC_CLIENT_TARGET = 4, /* ClientConn.target is known */
	/* the headers, stream id and connection offsets are known: publish the
	 * call's span for a traced server on this node */
	GT_GRPC_CLIENT_LINK = 8,
};

enum gt_grpc_client_event_flags {
	GT_GRPC_CLIENT_EVENT_STATUS = 1, /* status_code is the call's */
	GT_GRPC_CLIENT_EVENT_ERROR = 2,  /* the call failed */
	GT_GRPC_CLIENT_EVENT_LINKED = 4, /* the span was published for its stream */
};

struct gt_grpc_client_event {
	struct gt_event_header hdr;
	__u64 start_ns;
	__u64 end_ns;
	struct gt_span_context span;
	__s32 method_len;
	__s32 target_len;
	__s32 status_code; /* meaningful with GT_GRPC_CLIENT_EVENT_STATUS */
	__u32 flags;       /* enum gt_grpc_client_event_flags */
	char method[GT_GRPC_CLIENT_METHOD_MAX];
	char target[GT_GRPC_CLIENT_TARGET_MAX];
};

/* This probe's ids in the object-wide families (see enum gt_event_type). */
enum gt_event_type_grpc_client {
	GT_EVENT_GRPC_CLIENT = 7,
};

enum gt_hit_site_grpc_client {
	GT_HIT_GRPC_CLIENT_ENTRY = 11,
	GT_HIT_GRPC_CLIENT_RETURN = 12,
	GT_HIT_GRPC_CLIENT_FINISH = 13,
	GT_HIT_GRPC_CLIENT_HEADERS = 14,
	GT_HIT_GRPC_CLIENT_ORIGINATE = 15,
};

enum gt_paired_function_grpc_client {
	GT_PAIRED_GRPC_CLIENT = 4,
};

GT_EXPORT_LAYOUTS(grpc_client,
	enum gt_event_type_grpc_client event_type;
	enum gt_hit_site_grpc_client hit_site;
	enum gt_paired_function_grpc_client paired_function;
	struct gt_grpc_client_event event;
	struct gt_grpc_client_config config;
	enum gt_grpc_client_limits limits;
	enum gt_grpc_client_flags config_flags;
	enum gt_grpc_client_event_flags event_flags;
	enum gt_grpc_client_hdr_where hdr_where;
);

/* A call in flight: keyed by its goroutine while newClientStream runs, then
 * by its *clientStream (a gt_goroutine_key whose goid is the pointer, so the
 * process's state is cleared with its goroutines'). */
struct grpc_client_inflight {
	struct gt_grpc_client_event ev; /* filled as the call goes; sent at its end */
	__u64 hf;                       /* the request's header fields (its link token), 0: none */
};

/* A call's span on its way to the loopy writer, then published: keyed by
 * {tgid, the header fields' array} (a gt_goroutine_key whose goid is the
 * pointer, cleared with the process's goroutines). */
struct grpc_client_link {
	struct gt_span_context span;
	struct gt_conn_key conn; /* meaningful when published */
	__u32 published;         /* conn is in gt_conn_spans */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_grpc_client_config);
} gt_grpc_client_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_GRPC_CLIENT_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct grpc_client_inflight);
} gt_grpc_client_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_GRPC_CLIENT_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct grpc_client_inflight);
} gt_grpc_client_streams SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct grpc_client_inflight);
} grpc_client_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_GRPC_CLIENT_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct grpc_client_link);
} gt_grpc_client_links SEC(".maps");

/* Withdraws a published span from gt_conn_spans. */
static __always_inline void unpublish(struct grpc_client_link *l)
{
	if (!l->published)
		return;
	bpf_map_delete_elem(&gt_conn_spans, &l->conn);
	gt_conn_published_add(-1);
	l->published = 0;
}

/* Ends the link of the call `st` (of process `tgid`): its token's entry,
 * if still its own (a header array freed after it was written may have been
 * reused by a later call, whose entry then holds the key), and its span's
 * publication. */
static __always_inline void unlink_call(__u32 tgid, struct grpc_client_inflight *st)
{
	if (!st->hf)
		return;
	struct gt_goroutine_key k = { .tgid = tgid, .goid = st->hf };
	struct grpc_client_link *l = bpf_map_lookup_elem(&gt_grpc_client_links, &k);
	__u64 mine = 0, theirs = 0;
	if (!l)
		return;
	__builtin_memcpy(&mine, st->ev.span.span_id, 8);
	__builtin_memcpy(&theirs, l->span.span_id, 8);
	if (mine != theirs)
		return;
	unpublish(l);
	bpf_map_delete_elem(&gt_grpc_client_links, &k);
}

/* The status code of `err` (an error interface's data word): 0 for nil and
 * io.EOF (an *errors.errorString "EOF"), the code of a *status.Error, or -1
 * when the error is neither. The error's type is not known here: the EOF
 * string is recognised by its content, a status by a readable chain ending
 * in a valid code. */
static __always_inline __s32 error_code(struct gt_grpc_client_config *cfg, __u64 err)
{
	struct go_string s = {};
	char eof[4] = {};
	__u64 st = 0, sp = 0;
	__s32 code = -1;
	if (!err)
		return 0;
	if (bpf_probe_read_user(&s, sizeof(s), (void *)err) == 0 && s.len == 3 && s.ptr &&
	    bpf_probe_read_user(eof, 3, (void *)s.ptr) == 0 && eof[0] == 'E' && eof[1] == 'O' &&
	    eof[2] == 'F')
		return 0;
	if (go_read_ptr(err, cfg->error_s, &st) < 0 || !st || go_read_ptr(st, cfg->status_s, &sp) < 0)
		return -1;
	if (!sp)
		return 0;
	if (bpf_probe_read_user(&code, sizeof(code), (void *)(sp + cfg->status_code)) < 0 || code < 0 ||
	    code > 16)
		return -1;
	return code;
}

static __always_inline void send(struct gt_grpc_client_event *src, __u32 bin_id, __u64 goid)
{
	bool sampled = src->span.flags & GT_SPAN_SAMPLED;
	struct gt_grpc_client_event *ev = sampled ? bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0) : 0;
	if (!ev) {
		sampled ? gt_count(GT_COUNTER_RINGBUF_FULL) : gt_count_not_sampled(&src->span);
		return;
	}
	__builtin_memcpy(ev, src, sizeof(*ev));
	ev->hdr.binary_id = bin_id;
	ev->hdr.goid = goid;
	ev->hdr.cpu = bpf_get_smp_processor_id();
	ev->end_ns = bpf_ktime_get_ns();
	gt_submit(ev);
}

static __always_inline void set_status(struct gt_grpc_client_config *cfg, struct gt_grpc_client_event *ev,
				       __u64 err)
{
	if (err)
		ev->flags |= GT_GRPC_CLIENT_EVENT_ERROR;
	if (!(cfg->flags & GT_GRPC_CLIENT_STATUS))
		return;
	__s32 code = error_code(cfg, err);
	if (code >= 0) {
		ev->status_code = code;
		ev->flags |= GT_GRPC_CLIENT_EVENT_STATUS;
		if (code == 0)
			ev->flags &= ~GT_GRPC_CLIENT_EVENT_ERROR;
	}
}

SEC("uprobe.multi")
int gt_grpc_client_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_grpc_client_config *cfg = gt_probe_enter(ctx, &gt_grpc_client_config, &key, &bin_id,
							   GT_HIT_GRPC_CLIENT_ENTRY);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_GRPC_CLIENT_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_GRPC_CLIENT_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct grpc_client_inflight *st = bpf_map_lookup_elem(&grpc_client_scratch, &zero);
	if (!st)
		return 0;
	struct gt_grpc_client_event *ev = &st->ev;
	__builtin_memset(ev, 0, sizeof(*ev));
	st->hf = 0;
	gt_fill_header(&ev->hdr, GT_EVENT_GRPC_CLIENT, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->start_ns = bpf_ktime_get_ns();
	struct gt_span_context *parent = gt_active_span(&key);
	if (parent)
		gt_new_child(&ev->span, parent);
	else
		gt_new_root(&ev->span);
	/* the method as a Go string in registers (RSI, R8): copied now, it may
	 * be built per call */
	struct go_string m = { .ptr = GO_ARG5(ctx), .len = (__s64)GO_ARG6(ctx) };
	ev->method_len = m.len > 0x7fffffff ? 0x7fffffff : (__s32)m.len;
	if (m.ptr && m.len > 0) {
		__u32 n = m.len < GT_GRPC_CLIENT_METHOD_MAX ? (__u32)m.len : GT_GRPC_CLIENT_METHOD_MAX;
		if (bpf_probe_read_user(ev->method, n & (2 * GT_GRPC_CLIENT_METHOD_MAX - 1) & 0xff,
					(void *)m.ptr) < 0)
			ev->method_len = -1;
	}
	if (cfg->flags & GT_GRPC_CLIENT_TARGET)
		ev->target_len = go_read_string(GO_ARG4(ctx), cfg->cc_target, ev->target,
						GT_GRPC_CLIENT_TARGET_MAX);
	gt_mark_entered(&key, GT_PAIRED_GRPC_CLIENT);
	if (bpf_map_update_elem(&gt_grpc_client_inflight, &key, st, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_GRPC_CLIENT);
		gt_debug_hit(ctx, GT_HIT_GRPC_CLIENT_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_GRPC_CLIENT_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	return 0;
}

SEC("uprobe.multi")
int gt_grpc_client_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_grpc_client_config *cfg = gt_probe_enter(ctx, &gt_grpc_client_config, &key, &bin_id,
							   GT_HIT_GRPC_CLIENT_RETURN);
	if (!cfg)
		return 0;
	struct grpc_client_inflight *st = bpf_map_lookup_elem(&gt_grpc_client_inflight, &key);
	gt_debug_hit(ctx, GT_HIT_GRPC_CLIENT_RETURN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st) {
		gt_count_no_entry(&key, GT_PAIRED_GRPC_CLIENT);
		return 0;
	}
	__u64 cs = GO_ARG2(ctx), err = GO_ARG4(ctx);
	if (GO_ARG3(ctx) || !cs) {
		/* the stream could not be opened: the call ends here */
		set_status(cfg, &st->ev, err);
		st->ev.flags |= GT_GRPC_CLIENT_EVENT_ERROR;
		unlink_call(key.tgid, st);
		send(&st->ev, bin_id, key.goid);
	} else {
		struct gt_goroutine_key sk = { .tgid = key.tgid, .goid = cs };
		if (bpf_map_update_elem(&gt_grpc_client_streams, &sk, st, BPF_ANY) < 0)
			gt_count(GT_COUNTER_INFLIGHT_FULL);
	}
	bpf_map_delete_elem(&gt_grpc_client_inflight, &key);
	return 0;
}

SEC("uprobe.multi")
int gt_grpc_client_finish(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_grpc_client_config *cfg = gt_probe_enter(ctx, &gt_grpc_client_config, &key, &bin_id,
							   GT_HIT_GRPC_CLIENT_FINISH);
	if (!cfg)
		return 0;
	struct gt_goroutine_key sk = { .tgid = key.tgid, .goid = GO_ARG1(ctx) };
	struct grpc_client_inflight *st = bpf_map_lookup_elem(&gt_grpc_client_streams, &sk);
	gt_debug_hit(ctx, GT_HIT_GRPC_CLIENT_FINISH, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	/* finish runs once per stream; a stream opened before the process was
	 * traced has no state, which is expected */
	if (!st)
		return 0;
	set_status(cfg, &st->ev, GO_ARG3(ctx));
	unlink_call(key.tgid, st);
	send(&st->ev, bin_id, st->ev.hdr.goid);
	bpf_map_delete_elem(&gt_grpc_client_streams, &sk);
	return 0;
}

SEC("uprobe.multi")
int gt_grpc_client_headers(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_grpc_client_config *cfg = gt_probe_enter(ctx, &gt_grpc_client_config, &key, &bin_id,
							   GT_HIT_GRPC_CLIENT_HEADERS);
	if (!cfg || !(cfg->flags & GT_GRPC_CLIENT_LINK))
		return 0;
	/* only the first attempt, on the caller's goroutine inside
	 * newClientStream, has its call here; a transparent retry's stream is
	 * not linked */
	struct grpc_client_inflight *st = bpf_map_lookup_elem(&gt_grpc_client_inflight, &key);
	gt_debug_hit(ctx, GT_HIT_GRPC_CLIENT_HEADERS, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	__u64 hf = GO_ARG1(ctx);
	if (!st || !hf || GO_ARG4(ctx))
		return 0;
	struct gt_goroutine_key k = { .tgid = key.tgid, .goid = hf };
	struct grpc_client_link *old = bpf_map_lookup_elem(&gt_grpc_client_links, &k);
	if (old)
		unpublish(old); /* the array of a finished call's headers, reused */
	struct grpc_client_link l = {};
	l.span = st->ev.span;
	if (bpf_map_update_elem(&gt_grpc_client_links, &k, &l, BPF_ANY) < 0) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
		return 0;
	}
	st->hf = hf;
	return 0;
}

SEC("uprobe.multi")
int gt_grpc_client_originate(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_grpc_client_config *cfg = gt_probe_enter(ctx, &gt_grpc_client_config, &key, &bin_id,
							   GT_HIT_GRPC_CLIENT_ORIGINATE);
	if (!cfg || !(cfg->flags & GT_GRPC_CLIENT_LINK))
		return 0;
	/* both registers read before choosing: a context field at a variable
	 * offset is refused by the verifier */
	__u64 arg2 = GO_ARG2(ctx), arg3 = GO_ARG3(ctx);
	asm volatile("" : "+r"(arg2), "+r"(arg3));
	__u64 hdr = cfg->hdr_where == GT_GRPC_CLIENT_HDR_ARG3 ? arg3 : arg2;
	__u64 hf = 0, framer = 0, writer = 0, tcp = 0;
	if (cfg->hdr_where == GT_GRPC_CLIENT_HDR_STR_ITEM) {
		__u64 itl = 0, head = 0;
		if (go_read_ptr(arg2, cfg->str_itl, &itl) < 0 || go_read_ptr(itl, cfg->itl_head, &head) < 0 ||
		    go_read_ptr(head, cfg->node_it + 8, &hdr) < 0)
			return 0;
	}
	if (go_read_ptr(hdr, cfg->hdr_hf, &hf) < 0 || !hf)
		return 0;
	struct gt_goroutine_key k = { .tgid = key.tgid, .goid = hf };
	struct grpc_client_link *l = bpf_map_lookup_elem(&gt_grpc_client_links, &k);
	gt_debug_hit(ctx, GT_HIT_GRPC_CLIENT_ORIGINATE, l ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!l || l->published)
		return 0;
	struct gt_conn_key conn = {};
	__u32 id = 0;
	/* the connection under the framer's writer: a *net.TCPConn for
	 * connections without transport security */
	if (bpf_probe_read_user(&id, sizeof(id), (void *)(hdr + cfg->hdr_stream_id)) < 0 || !id ||
	    go_read_ptr(GO_ARG1(ctx), cfg->loopy_framer, &framer) < 0 ||
	    go_read_ptr(framer, cfg->framer_writer, &writer) < 0 ||
	    go_read_ptr(writer, cfg->bufwriter_conn + 8, &tcp) < 0 ||
	    gt_conn_key_of(tcp, &cfg->tcp, true, &conn) < 0)
		return 0;
	conn.stream_id = id;
	if (bpf_map_update_elem(&gt_conn_spans, &conn, &l->span, BPF_ANY) == 0) {
		l->conn = conn;
		l->published = 1;
		gt_conn_published_add(1);
	}
	return 0;
}
