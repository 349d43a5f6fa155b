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
 * The span is the child of the span the calling goroutine is serving. */
#include "go_abi.h"
#include "ancestry.h"

enum gt_grpc_client_limits {
	GT_GRPC_CLIENT_METHOD_MAX = 128,
	GT_GRPC_CLIENT_TARGET_MAX = 64,
	GT_GRPC_CLIENT_INFLIGHT_MAX = 16384,
};

struct gt_grpc_client_config {
	__u32 cc_target;   /* grpc.ClientConn.target */
	__u32 error_s;     /* internal/status.Error.s (*Status) */
	__u32 status_s;    /* internal/status.Status.s (*spb.Status) */
	__u32 status_code; /* genproto rpc/status.Status.Code (int32) */
	__u32 flags;       /* enum gt_grpc_client_flags */
	__u32 reserved;
};

enum gt_grpc_client_flags {
	GT_GRPC_CLIENT_ENABLED = 1,
	GT_GRPC_CLIENT_STATUS = 2, /* the status offsets are known */
	GT_GRPC_CLIENT_TARGET = 4, /* ClientConn.target is known */
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
);

/* A call in flight: keyed by its goroutine while newClientStream runs, then
 * by its *clientStream (a gt_goroutine_key whose goid is the pointer, so the
 * process's state is cleared with its goroutines'). */
struct grpc_client_inflight {
	struct gt_grpc_client_event ev; /* filled as the call goes; sent at its end */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_grpc_client_config);
} gt_grpc_client_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_GRPC_CLIENT_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct grpc_client_inflight);
} gt_grpc_client_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
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
		gt_count(sampled ? GT_COUNTER_RINGBUF_FULL : GT_COUNTER_NOT_SAMPLED);
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
		gt_count(GT_COUNTER_INFLIGHT_FULL);
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
	send(&st->ev, bin_id, st->ev.hdr.goid);
	bpf_map_delete_elem(&gt_grpc_client_streams, &sk);
	return 0;
}
