/* github.com/redis/go-redis/v9: one event per command and per pipeline or
 * transaction, sent through a client's baseClient (Client, Conn, and the
 * nodes of ClusterClient and Ring, which are Clients). The hooks chain ends
 * in these methods on the caller's goroutine, once per call, retries
 * included:
 *
 *   func (c *baseClient) process(ctx context.Context, cmd Cmder) error
 *     entry: c RAX; ctx RBX, RCX; cmd (itab, data) RDI, RSI
 *   func (c *baseClient) processPipeline(ctx context.Context, cmds []Cmder) error
 *   func (c *baseClient) processTxPipeline(ctx context.Context, cmds []Cmder) error
 *     entry: c RAX; ctx RBX, RCX; cmds (ptr, len, cap) RDI, RSI, R8
 *     (a transaction's cmds are already wrapped in MULTI ... EXEC)
 *   every RET: err (itab, data) RAX, RBX
 *
 * A connection's set-up (HELLO, SELECT, …) runs through process or
 * processPipeline of the connection's own baseClient, nested in the call
 * that needed the connection on the same goroutine: in-flight state is a
 * stack per goroutine (depth in the key), and a nested call is the child of
 * the call it runs in.
 *
 * Every concrete Cmder (StringCmd, StatusCmd, …) embeds baseCmd as its first
 * field, so an interface's data word points at a baseCmd. Only the command's
 * name (args[0]) and the number of its arguments are read: never an
 * argument's value. */
#include "go_abi.h"

/* A Go interface value: type word (itab or type) and data word. */
struct redis_go_iface {
	__u64 tab;
	__u64 data;
};

enum gt_redis_limits {
	GT_REDIS_NAME_MAX = 16,  /* bytes of a command name kept */
	GT_REDIS_CMDS_MAX = 8,   /* commands of a pipeline whose names are read */
	GT_REDIS_ADDR_MAX = 64,  /* bytes of Options.Addr kept */
	GT_REDIS_ERROR_MAX = 32, /* bytes of an error's message kept (its prefix) */
	GT_REDIS_DEPTH_MAX = 4,  /* nested calls per goroutine that are traced */
	GT_REDIS_INFLIGHT_MAX = 16384,
};

struct gt_redis_config {
	__u32 client_opt; /* baseClient.opt (*Options) */
	__u32 opt_addr;   /* Options.Addr (string) */
	__u32 opt_db;     /* Options.DB (int) */
	__u32 cmd_args;   /* baseCmd.args ([]interface{}) */
	__u32 flags;      /* enum gt_redis_flags */
	__u32 reserved;
};

enum gt_redis_flags {
	GT_REDIS_ENABLED = 1,
	GT_REDIS_ADDR = 2, /* baseClient.opt and Options.Addr are known */
	GT_REDIS_DB = 4,   /* baseClient.opt and Options.DB are known */
};

enum gt_redis_event_flags {
	GT_REDIS_EVENT_PIPELINE = 1, /* processPipeline */
	GT_REDIS_EVENT_TX = 2,       /* processTxPipeline (MULTI/EXEC) */
	GT_REDIS_EVENT_ERROR = 4,    /* the call returned an error (maybe redis.Nil: see err) */
	GT_REDIS_EVENT_DB = 8,       /* db is the client's database index */
};

struct gt_redis_event {
	struct gt_event_header hdr;
	__u64 start_ns;
	__u64 end_ns;
	struct gt_span_context span;
	__s64 db;
	__u32 flags;     /* enum gt_redis_event_flags */
	__u32 cmd_count; /* commands of the call (1, or the pipeline's length) */
	__s32 addr_len;
	__s32 err_len; /* the error message's length; -1 unreadable */
	/* per command (the first GT_REDIS_CMDS_MAX): arguments, its name
	 * included, at most 255; its name's length, 0 when args[0] is no
	 * readable string; its name, GT_REDIS_NAME_MAX bytes each */
	__u8 argc[GT_REDIS_CMDS_MAX];
	__u8 name_len[GT_REDIS_CMDS_MAX];
	char names[GT_REDIS_CMDS_MAX * GT_REDIS_NAME_MAX];
	char addr[GT_REDIS_ADDR_MAX];
	char err[GT_REDIS_ERROR_MAX];
};

enum gt_event_type_redis {
	GT_EVENT_REDIS = 20,
};

enum gt_hit_site_redis {
	GT_HIT_REDIS_PROCESS_ENTRY = 50,
	GT_HIT_REDIS_PIPELINE_ENTRY = 51,
	GT_HIT_REDIS_TX_ENTRY = 52,
	GT_HIT_REDIS_RETURN = 53,
};

enum gt_paired_function_redis {
	GT_PAIRED_REDIS = 20,
};

GT_EXPORT_LAYOUTS(redis,
	enum gt_event_type_redis event_type;
	enum gt_hit_site_redis hit_site;
	enum gt_paired_function_redis paired_function;
	struct gt_redis_event event;
	struct gt_redis_config config;
	enum gt_redis_limits limits;
	enum gt_redis_flags config_flags;
	enum gt_redis_event_flags event_flags;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_redis_config);
} gt_redis_config SEC(".maps");

/* Calls in flight, keyed by goroutine with the nesting depth in `reserved`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_REDIS_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_redis_event);
} gt_redis_inflight SEC(".maps");

/* Calls of a goroutine under way (the depth of the next call). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_REDIS_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, __u32);
} gt_redis_depth SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_redis_event);
} redis_scratch SEC(".maps");

/* Name and argument count of the command whose baseCmd is at `cmd`. */
static __always_inline void read_cmd(struct gt_redis_config *cfg, __u64 cmd, struct gt_redis_event *ev,
				     __u32 i)
{
	struct go_slice args = {};
	struct redis_go_iface a0 = {};
	struct go_string s = {};
	if (i >= GT_REDIS_CMDS_MAX)
		return;
	if (!cmd || bpf_probe_read_user(&args, sizeof(args), (void *)(cmd + cfg->cmd_args)) < 0)
		return;
	ev->argc[i] = args.len < 0 ? 0 : args.len > 0xff ? 0xff : (__u8)args.len;
	if (args.len <= 0 || !args.ptr || bpf_probe_read_user(&a0, sizeof(a0), (void *)args.ptr) < 0 ||
	    !a0.data)
		return;
	/* args[0] is the name, a string (go-redis builds it so); the interface's
	 * data word points at the string header */
	if (bpf_probe_read_user(&s, sizeof(s), (void *)a0.data) < 0 || s.len <= 0 || s.len > 64 || !s.ptr)
		return;
	__u32 n = s.len < GT_REDIS_NAME_MAX ? (__u32)s.len : GT_REDIS_NAME_MAX;
	if (bpf_probe_read_user(&ev->names[(i & (GT_REDIS_CMDS_MAX - 1)) * GT_REDIS_NAME_MAX],
				n & (2 * GT_REDIS_NAME_MAX - 1), (void *)s.ptr) < 0)
		return;
	ev->name_len[i] = (__u8)s.len;
}

static __always_inline int enter(struct pt_regs *ctx, __u32 site, __u32 kind)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_redis_config *cfg = gt_probe_enter(ctx, &gt_redis_config, &key, &bin_id, site);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_REDIS_ENABLED)) {
		gt_debug_hit(ctx, site, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	__u32 *d = bpf_map_lookup_elem(&gt_redis_depth, &key);
	__u32 depth = d ? *d : 0;
	__u32 next = depth + 1;
	/* the depth counts every call, traced or not, so that returns pair up */
	if (bpf_map_update_elem(&gt_redis_depth, &key, &next, BPF_ANY) < 0) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
		gt_debug_hit(ctx, site, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
		return 0;
	}
	if (depth >= GT_REDIS_DEPTH_MAX) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
		return 0;
	}
	struct gt_redis_event *ev = bpf_map_lookup_elem(&redis_scratch, &zero);
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	gt_fill_header(&ev->hdr, GT_EVENT_REDIS, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->start_ns = bpf_ktime_get_ns();
	ev->flags = kind;
	/* the outer call's span is used inside the null check: taken out as a
	 * pointer, clang may compute &o->span before the check, which the
	 * verifier refuses */
	bool nested = false;
	if (depth > 0) {
		struct gt_goroutine_key outer = key;
		outer.reserved = depth - 1;
		struct gt_redis_event *o = bpf_map_lookup_elem(&gt_redis_inflight, &outer);
		if (o) {
			gt_new_child(&ev->span, &o->span);
			nested = true;
		}
	}
	if (!nested) {
		struct gt_span_context *parent = gt_goroutine_span(&key);
		if (parent)
			gt_new_child(&ev->span, parent);
		else
			gt_new_root(&ev->span);
	}

	__u64 c = GO_ARG1(ctx), opt = 0;
	if ((cfg->flags & (GT_REDIS_ADDR | GT_REDIS_DB)) && go_read_ptr(c, cfg->client_opt, &opt) == 0 &&
	    opt) {
		if (cfg->flags & GT_REDIS_ADDR)
			ev->addr_len = go_read_string(opt, cfg->opt_addr, ev->addr, GT_REDIS_ADDR_MAX);
		if ((cfg->flags & GT_REDIS_DB) &&
		    bpf_probe_read_user(&ev->db, sizeof(ev->db), (void *)(opt + cfg->opt_db)) == 0)
			ev->flags |= GT_REDIS_EVENT_DB;
	}
	if (kind == 0) {
		ev->cmd_count = 1;
		read_cmd(cfg, GO_ARG5(ctx), ev, 0);
	} else {
		__u64 p = GO_ARG4(ctx);
		__s64 n = (__s64)GO_ARG5(ctx);
		ev->cmd_count = n < 0 ? 0 : n > 0x7fffffff ? 0x7fffffff : (__u32)n;
		for (__u32 i = 0; i < GT_REDIS_CMDS_MAX; i++) {
			struct redis_go_iface cmd = {};
			if (i >= ev->cmd_count || !p)
				break;
			if (bpf_probe_read_user(&cmd, sizeof(cmd), (void *)(p + i * sizeof(cmd))) < 0)
				break;
			read_cmd(cfg, cmd.data, ev, i);
		}
	}
	key.reserved = depth;
	gt_mark_entered(&key, GT_PAIRED_REDIS);
	if (bpf_map_update_elem(&gt_redis_inflight, &key, ev, BPF_ANY) < 0) {
		gt_count(GT_COUNTER_INFLIGHT_FULL);
		gt_debug_hit(ctx, site, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, site, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	return 0;
}

SEC("uprobe.multi")
int gt_redis_process_entry(struct pt_regs *ctx)
{
	return enter(ctx, GT_HIT_REDIS_PROCESS_ENTRY, 0);
}

SEC("uprobe.multi")
int gt_redis_pipeline_entry(struct pt_regs *ctx)
{
	return enter(ctx, GT_HIT_REDIS_PIPELINE_ENTRY, GT_REDIS_EVENT_PIPELINE);
}

SEC("uprobe.multi")
int gt_redis_tx_entry(struct pt_regs *ctx)
{
	return enter(ctx, GT_HIT_REDIS_TX_ENTRY, GT_REDIS_EVENT_PIPELINE | GT_REDIS_EVENT_TX);
}

SEC("uprobe.multi")
int gt_redis_return(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_redis_config *cfg = gt_probe_enter(ctx, &gt_redis_config, &key, &bin_id,
						     GT_HIT_REDIS_RETURN);
	if (!cfg)
		return 0;
	__u32 *d = bpf_map_lookup_elem(&gt_redis_depth, &key);
	if (!d || *d == 0) {
		gt_debug_hit(ctx, GT_HIT_REDIS_RETURN, GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
		struct gt_goroutine_key k0 = key;
		gt_count_no_entry(&k0, GT_PAIRED_REDIS);
		return 0;
	}
	__u32 depth = *d - 1;
	if (depth == 0)
		bpf_map_delete_elem(&gt_redis_depth, &key);
	else
		*d = depth;
	struct gt_goroutine_key k = key;
	k.reserved = depth;
	struct gt_redis_event *st = bpf_map_lookup_elem(&gt_redis_inflight, &k);
	gt_debug_hit(ctx, GT_HIT_REDIS_RETURN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st) {
		/* deeper than GT_REDIS_DEPTH_MAX (counted at entry), or lost */
		return 0;
	}
	bool sampled = st->span.flags & GT_SPAN_SAMPLED;
	struct gt_redis_event *ev = sampled ? bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0) : 0;
	if (!ev) {
		sampled ? gt_count(GT_COUNTER_RINGBUF_FULL) : gt_count_not_sampled(&st->span);
		bpf_map_delete_elem(&gt_redis_inflight, &k);
		return 0;
	}
	__builtin_memcpy(ev, st, sizeof(*ev));
	bpf_map_delete_elem(&gt_redis_inflight, &k);
	ev->hdr.cpu = bpf_get_smp_processor_id();
	ev->end_ns = bpf_ktime_get_ns();
	__u64 err = GO_ARG2(ctx);
	if (GO_ARG1(ctx)) {
		/* the message's head, from the error's data word read as a string
		 * header: right for proto.RedisError (a string type, as redis.Nil
		 * and every error reply are) and *errors.errorString; user space
		 * keeps only an upper-case prefix or the exact text of redis.Nil */
		ev->flags |= GT_REDIS_EVENT_ERROR;
		ev->err_len = go_read_string(err, 0, ev->err, GT_REDIS_ERROR_MAX);
	}
	gt_submit(ev);
	return 0;
}
