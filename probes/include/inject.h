/* Header injection without writing user memory: what client probes share
 * with the socket-level programs of probes/inject/inject.bpf.c.
 *
 * A client probe that knows the connection a request is about to be written
 * on calls gt_inject_mark(): the request's span context is recorded as the
 * connection's pending context (gt_inject_pending, keyed by the 4-tuple as
 * gt_conn_key_of derives it). The sk_msg program, run by the kernel on every
 * send of a socket in gt_inject_socks, takes the pending context off on the
 * next send and inserts the header into the bytes being sent. The record is
 * generic (a span context and the protocol it is for), so a protocol handler
 * other than HTTP/1.x can be added to the sk_msg program's dispatch.
 *
 * Only sockets of traced processes are in gt_inject_socks (see the sock_ops
 * program): no other socket of the node pays for an sk_msg run. Every
 * outcome, success or failure, is counted in gt_inject_counters with its
 * reason (enum gt_inject_outcome). */
#pragma once

#include "go_abi.h"

enum gt_inject_limits {
	GT_INJECT_HOST_MAX = 64,       /* bytes of a host name compared to host rules */
	GT_INJECT_HOST_LABELS_MAX = 8, /* parent domains of a host looked up for `*.domain` rules */
	GT_INJECT_CONNS_MAX = 65536,   /* connections of traced processes in the sockmap */
	GT_INJECT_PENDING_MAX = 16384,
	GT_INJECT_RULES_MAX = 1024, /* CIDRs per list; host rules */
};

/* What gt_inject_pending's record is for: the sk_msg program dispatches on
 * it (and on the first bytes of the message). */
enum gt_inject_proto {
	GT_INJECT_PROTO_HTTP1 = 1,
};

struct gt_inject_pending {
	struct gt_span_context span;
	__u64 marked_ns;
	__u32 proto; /* enum gt_inject_proto */
	__u32 flags; /* enum gt_inject_pending_flags */
	/* the request's host as the program named it (URL.Host: "name[:port]"),
	 * zero-padded, for host rules: matched by the sk_msg program, so that
	 * client probes need no loops (kernels without open-coded iterators) */
	char host[GT_INJECT_HOST_MAX];
};

enum gt_inject_pending_flags {
	GT_INJECT_PENDING_CIDR_ALLOWED = 1, /* the peer address is on the allow list */
	GT_INJECT_PENDING_HOST_LONG = 2,    /* URL.Host longer than `host` holds */
	GT_INJECT_PENDING_HOST_UNREAD = 4,  /* URL.Host could not be read: treated as denied */
};

/* Node-wide switches (one slot, set by user space). */
struct gt_inject_settings {
	__u32 flags; /* enum gt_inject_flags */
	__u32 reserved;
};

enum gt_inject_flags {
	GT_INJECT_ENABLED = 1,
	/* an allow list is configured: a destination matching none of its
	 * CIDRs or hosts gets no header */
	GT_INJECT_ALLOW_LIST = 2,
	/* host rules are configured: the request's URL host is looked up */
	GT_INJECT_HOST_RULES = 4,
	/* deny CIDRs are configured: the bpf_probe_write_user injection
	 * (probes/write-user/) denies a destination whose address it cannot read */
	GT_INJECT_DENY_CIDRS = 8,
};

/* gt_inject_hosts values: which lists name the host, exactly or as a parent
 * domain (`*.example.com` is stored as example.com with a _SUBDOMAINS bit and
 * matches every name below it, not example.com itself). */
enum gt_inject_host_rule {
	GT_INJECT_HOST_ALLOW = 1,
	GT_INJECT_HOST_ALLOW_SUBDOMAINS = 2,
	GT_INJECT_HOST_DENY = 4,
	GT_INJECT_HOST_DENY_SUBDOMAINS = 8,
};

struct gt_inject_host_key {
	char name[GT_INJECT_HOST_MAX]; /* lower case, zero-padded, no port */
};

/* LPM trie key: IPv4 as IPv4-mapped IPv6 (prefix length + 96). */
struct gt_inject_cidr_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Outcomes, one counter each (gt_inject_counters, exposed as the metric
 * gotrail_propagation_inject_total{outcome}). */
enum gt_inject_outcome {
	GT_INJECT_OUT_INJECTED = 0,    /* header inserted */
	GT_INJECT_OUT_MARKED = 1,      /* not a loss: a request marked for injection */
	GT_INJECT_OUT_DENIED = 2,      /* not a loss: destination on the deny list */
	GT_INJECT_OUT_NOT_ALLOWED = 3, /* not a loss: destination not on the allow list */
	GT_INJECT_OUT_NOT_IN_SOCKMAP =
		4, /* the connection is not in the sockmap (opened before gotrail, or before its process was traced) */
	GT_INJECT_OUT_STORE_FAILED = 5,  /* pending map full */
	GT_INJECT_OUT_NOT_A_REQUEST = 6, /* the next send was not an HTTP/1.x request line */
	GT_INJECT_OUT_PRESENT = 7,       /* not a loss: the request already carries traceparent */
	GT_INJECT_OUT_HEADER_INCOMPLETE =
		8, /* the header block does not end within the first send (or the scan limit) */
	GT_INJECT_OUT_PULL_FAILED = 9,   /* bpf_msg_pull_data failed */
	GT_INJECT_OUT_PUSH_FAILED = 10,  /* bpf_msg_push_data failed (no room) */
	GT_INJECT_OUT_NOT_SENT = 11,     /* the request ended with its mark never taken by a send */
	GT_INJECT_OUT_SOCKMAP_FULL = 12, /* adding a traced process's connection to the sockmap failed */
	GT_INJECT_OUT_MAX = 16,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_inject_settings);
} gt_inject_settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GT_INJECT_OUT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} gt_inject_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_INJECT_PENDING_MAX);
	__type(key, struct gt_conn_key);
	__type(value, struct gt_inject_pending);
} gt_inject_pending SEC(".maps");

/* Connections in gt_inject_socks, as a plain hash a uprobe can look up
 * (a sockmap lookup hands out a socket reference, which uprobes cannot
 * release): set with the sockmap entry, removed when the socket closes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_INJECT_CONNS_MAX);
	__type(key, struct gt_conn_key);
	__type(value, __u32);
} gt_inject_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GT_INJECT_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gt_inject_cidr_key);
	__type(value, __u32);
} gt_inject_allow_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GT_INJECT_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gt_inject_cidr_key);
	__type(value, __u32);
} gt_inject_deny_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_INJECT_RULES_MAX);
	__type(key, struct gt_inject_host_key);
	__type(value, __u32); /* enum gt_inject_host_rule bits */
} gt_inject_hosts SEC(".maps");

static __always_inline void gt_inject_count(__u32 outcome)
{
	__u64 *v = bpf_map_lookup_elem(&gt_inject_counters, &outcome);
	if (v)
		*v += 1;
}

static __always_inline __u32 gt_inject_flags(void)
{
	__u32 zero = 0;
	struct gt_inject_settings *s = bpf_map_lookup_elem(&gt_inject_settings, &zero);
	return s ? s->flags : 0;
}

/* Marks the next request sent on connection `k` (client side's view) to
 * carry `span` as its traceparent, unless the destination is excluded by its
 * address (`k->server_ip`) or the connection is not in the sockmap. The
 * host name (URL.Host at host_ptr, host_len) is kept for the host rules,
 * which the sk_msg program applies. True when marked. */
static __always_inline bool gt_inject_mark(const struct gt_conn_key *k, const struct gt_span_context *span,
					   __u32 proto, __u64 host_ptr, __s64 host_len)
{
	__u32 flags = gt_inject_flags();
	if (!(flags & GT_INJECT_ENABLED))
		return false;
	struct gt_inject_cidr_key ck = { .prefixlen = 128 };
	__builtin_memcpy(ck.addr, k->server_ip, 16);
	if (bpf_map_lookup_elem(&gt_inject_deny_cidrs, &ck)) {
		gt_inject_count(GT_INJECT_OUT_DENIED);
		return false;
	}
	if (!bpf_map_lookup_elem(&gt_inject_conns, k)) {
		gt_inject_count(GT_INJECT_OUT_NOT_IN_SOCKMAP);
		return false;
	}
	struct gt_inject_pending p = { .span = *span, .marked_ns = bpf_ktime_get_ns(), .proto = proto };
	if ((flags & GT_INJECT_ALLOW_LIST) && bpf_map_lookup_elem(&gt_inject_allow_cidrs, &ck))
		p.flags |= GT_INJECT_PENDING_CIDR_ALLOWED;
	if ((flags & GT_INJECT_HOST_RULES) && host_len > 0) {
		if (host_len > GT_INJECT_HOST_MAX)
			p.flags |= GT_INJECT_PENDING_HOST_LONG;
		__u32 n = host_len > GT_INJECT_HOST_MAX ? GT_INJECT_HOST_MAX : (__u32)host_len;
		if (bpf_probe_read_user(p.host, n, (void *)host_ptr) < 0)
			p.flags |= GT_INJECT_PENDING_HOST_UNREAD;
	}
	if (bpf_map_update_elem(&gt_inject_pending, k, &p, BPF_ANY) < 0) {
		gt_inject_count(GT_INJECT_OUT_STORE_FAILED);
		return false;
	}
	gt_inject_count(GT_INJECT_OUT_MARKED);
	return true;
}

/* The request marked on `k` is over: a mark no send took is counted and
 * removed (a later request on the connection must not take it). */
static __always_inline void gt_inject_unmark(const struct gt_conn_key *k, const struct gt_span_context *span)
{
	struct gt_inject_pending *p = bpf_map_lookup_elem(&gt_inject_pending, k);
	__u64 a, b;
	if (!p)
		return;
	__builtin_memcpy(&a, p->span.span_id, 8);
	__builtin_memcpy(&b, span->span_id, 8);
	if (a != b) /* a later request's mark */
		return;
	bpf_map_delete_elem(&gt_inject_pending, k);
	gt_inject_count(GT_INJECT_OUT_NOT_SENT);
}
