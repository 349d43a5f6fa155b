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

/* Open-coded iterators (kernel 6.4): the verifier checks a loop body once
 * per distinct state instead of once per iteration, so byte scans of a few
 * KiB stay within its limits. GT_FOR(it, i, n) runs i = 0 … n-1; call
 * bpf_iter_num_destroy(&it) after the loop. */
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

#define GT_FOR(it, i, n)                                                           \
	for (int *___ip = (bpf_iter_num_new(&(it), 0, (n)), bpf_iter_num_next(&(it))); \
	     ___ip && ((i) = *___ip, (i) >= 0 && (i) < (n)); ___ip = bpf_iter_num_next(&(it)))

enum gt_inject_limits {
	GT_INJECT_HOST_MAX = 64,      /* bytes of a host name compared to host rules */
	GT_INJECT_HOST_LABELS_MAX = 8, /* parent domains of a host looked up for `*.domain` rules */
	GT_INJECT_CONNS_MAX = 65536,   /* connections of traced processes in the sockmap */
	GT_INJECT_PENDING_MAX = 16384,
	GT_INJECT_RULES_MAX = 1024,   /* CIDRs per list; host rules */
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
	__u32 reserved;
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
	/* deny CIDRs are configured (a destination whose address is unknown is
	 * then denied) */
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
	GT_INJECT_OUT_INJECTED = 0,      /* header inserted */
	GT_INJECT_OUT_MARKED = 1,        /* not a loss: a request marked for injection */
	GT_INJECT_OUT_DENIED = 2,        /* not a loss: destination on the deny list */
	GT_INJECT_OUT_NOT_ALLOWED = 3,   /* not a loss: destination not on the allow list */
	GT_INJECT_OUT_NOT_IN_SOCKMAP = 4, /* the connection is not in the sockmap (opened before gotrail, or before its process was traced) */
	GT_INJECT_OUT_STORE_FAILED = 5,  /* pending map full */
	GT_INJECT_OUT_NOT_A_REQUEST = 6, /* the next send was not an HTTP/1.x request line */
	GT_INJECT_OUT_PRESENT = 7,       /* not a loss: the request already carries traceparent */
	GT_INJECT_OUT_HEADER_INCOMPLETE = 8, /* the header block does not end within the first send (or the scan limit) */
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

/* The host rules naming `host` (a Go string: URL.Host, "name[:port]"), as
 * enum gt_inject_host_rule bits: the exact name's, and the _SUBDOMAINS bits
 * of its parent domains. A name too long to compare counts as denied (a
 * header never leaks through a limit). */
static __always_inline __u32 gt_inject_host_rules(__u64 host_ptr, __s64 host_len)
{
	/* twice the compared length: a parent domain is read as the 64 bytes
	 * at its offset, the zeroed tail padding the key */
	char buf[2 * GT_INJECT_HOST_MAX] = {};
	struct gt_inject_host_key key;
	if (host_len <= 0)
		return 0;
	/* a longer name may still be short enough once its port is cut */
	__u32 n = host_len > GT_INJECT_HOST_MAX ? GT_INJECT_HOST_MAX : (__u32)host_len;
	if (bpf_probe_read_user(buf, n, (void *)host_ptr) < 0)
		return GT_INJECT_HOST_DENY;
	if (buf[0] == '[') /* an IPv6 literal: the CIDR rules apply */
		return 0;
	/* lower case, and the port (or anything after the name) zeroed */
	int len = GT_INJECT_HOST_MAX, i;
	struct bpf_iter_num it0;
	GT_FOR(it0, i, GT_INJECT_HOST_MAX) {
		char *c = buf + (i & (GT_INJECT_HOST_MAX - 1));
		if (len == GT_INJECT_HOST_MAX && (*c == 0 || *c == ':'))
			len = i;
		if (len != GT_INJECT_HOST_MAX)
			*c = 0;
		else if (*c >= 'A' && *c <= 'Z')
			*c += 'a' - 'A';
	}
	bpf_iter_num_destroy(&it0);
	if (len >= GT_INJECT_HOST_MAX)
		return GT_INJECT_HOST_DENY;
	__u32 bits = 0;
	__builtin_memcpy(key.name, buf, GT_INJECT_HOST_MAX);
	__u32 *v = bpf_map_lookup_elem(&gt_inject_hosts, &key);
	if (v)
		bits |= *v & (GT_INJECT_HOST_ALLOW | GT_INJECT_HOST_DENY);
	/* each parent domain: the name after each dot */
	int labels = 0;
	struct bpf_iter_num it1;
	GT_FOR(it1, i, GT_INJECT_HOST_MAX - 1) {
		if (i >= len)
			break;
		if (buf[i & (GT_INJECT_HOST_MAX - 1)] != '.')
			continue;
		if (++labels > GT_INJECT_HOST_LABELS_MAX)
			break;
		if (bpf_probe_read_kernel(key.name, GT_INJECT_HOST_MAX, buf + ((i + 1) & (GT_INJECT_HOST_MAX - 1))) < 0)
			break;
		v = bpf_map_lookup_elem(&gt_inject_hosts, &key);
		if (v)
			bits |= *v & (GT_INJECT_HOST_ALLOW_SUBDOMAINS | GT_INJECT_HOST_DENY_SUBDOMAINS);
	}
	bpf_iter_num_destroy(&it1);
	return bits;
}

/* The destination rules for a request to address `server_ip` (16 bytes,
 * IPv4-mapped; 0: unknown) and URL host `host_ptr`/`host_len`: 0 when it may
 * carry the header, else the outcome that excludes it (DENIED,
 * NOT_ALLOWED). An unknown address matches no CIDR: it is excluded when any
 * CIDR could deny it, so that a header never leaks for want of an address.
 * Shared with the bpf_probe_write_user injection (probes/write-user/).
 * Counts nothing. */
static __always_inline __u32 gt_inject_excluded(__u32 flags, const __u8 *server_ip, __u64 host_ptr,
						__s64 host_len)
{
	struct gt_inject_cidr_key ck = { .prefixlen = 128 };
	if (server_ip)
		__builtin_memcpy(ck.addr, server_ip, 16);
	__u32 hosts = (flags & GT_INJECT_HOST_RULES) ? gt_inject_host_rules(host_ptr, host_len) : 0;
	if ((server_ip ? bpf_map_lookup_elem(&gt_inject_deny_cidrs, &ck) != 0
		       : (flags & GT_INJECT_DENY_CIDRS) != 0) ||
	    (hosts & (GT_INJECT_HOST_DENY | GT_INJECT_HOST_DENY_SUBDOMAINS)))
		return GT_INJECT_OUT_DENIED;
	if ((flags & GT_INJECT_ALLOW_LIST) &&
	    !(hosts & (GT_INJECT_HOST_ALLOW | GT_INJECT_HOST_ALLOW_SUBDOMAINS)) &&
	    !(server_ip && bpf_map_lookup_elem(&gt_inject_allow_cidrs, &ck)))
		return GT_INJECT_OUT_NOT_ALLOWED;
	return 0;
}

/* Marks the next request sent on connection `k` (client side's view) to
 * carry `span` as its traceparent, unless the destination is excluded (by
 * its address `k->server_ip`, or its host name: URL.Host at host_ptr,
 * host_len) or the connection is not in the sockmap. True when marked. */
static __always_inline bool gt_inject_mark(const struct gt_conn_key *k, const struct gt_span_context *span,
					   __u32 proto, __u64 host_ptr, __s64 host_len)
{
	__u32 flags = gt_inject_flags();
	if (!(flags & GT_INJECT_ENABLED))
		return false;
	__u32 excluded = gt_inject_excluded(flags, k->server_ip, host_ptr, host_len);
	if (excluded) {
		gt_inject_count(excluded);
		return false;
	}
	if (!bpf_map_lookup_elem(&gt_inject_conns, k)) {
		gt_inject_count(GT_INJECT_OUT_NOT_IN_SOCKMAP);
		return false;
	}
	struct gt_inject_pending p = { .span = *span, .marked_ns = bpf_ktime_get_ns(), .proto = proto };
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
