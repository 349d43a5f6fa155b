/* gotrail's own connections, so that no probe makes a span of a request
 * gotrail itself sent (its OTLP exports to a traced collector would
 * otherwise each make a span, which is exported, which makes a span, …).
 *
 * The connection tells: probes/self/self.bpf.c watches TCP state changes,
 * records every connection a gotrail process opens, by its ends as
 * gt_conn_key_of derives them from a Go connection (client = gotrail, the
 * side that connected), and forgets it when it closes. A server probe that
 * has the connection's key of a request asks gt_conn_is_own(); a request
 * that is gotrail's is not traced and is counted as skipped (reason
 * "self"), and gt_self_skip_mark()/gt_self_skip_take() let its return probe
 * tell it from a return without its entry. Any server probe (HTTP, gRPC)
 * can use these three calls.
 *
 * The ends are the ones each socket sees: a NAT between gotrail and the
 * server (a Kubernetes Service, a hostPort) changes the server's end, so
 * such connections are not recognised; the default exclusion of telemetry
 * back-ends in the selection rules covers that case. */
#pragma once

#include "go_abi.h"

/* The processes that are gotrail (its tgid), set by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
} gt_self_processes SEC(".maps");

/* Connections gotrail opened and that are not closed yet, by their ends.
 * LRU: a close that was missed (an entry evicted from gt_self_socks) only
 * leaves a stale entry until it is evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct gt_conn_key);
	__type(value, __u32); /* the gotrail process that opened it */
} gt_self_conns SEC(".maps");

/* How many entries gt_self_conns holds: while none, server probes skip the
 * connection walk the check needs. A hint, not an exact count (an LRU
 * eviction does not decrement it, which only costs the walk). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} gt_self_conn_count SEC(".maps");

/* Goroutines serving a request that was skipped as gotrail's own, so the
 * return probe does not count its return as a return without an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct gt_goroutine_key);
	__type(value, __u8);
} gt_self_skipped SEC(".maps");

static __always_inline bool gt_self_any_conn(void)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&gt_self_conn_count, &zero);
	return n && *n > 0;
}

static __always_inline void gt_self_conn_count_add(__s64 d)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&gt_self_conn_count, &zero);
	if (n)
		__sync_fetch_and_add(n, d);
}

/* Whether the connection `k` (both ends, as the server's gt_conn_key_of
 * gives them) is one gotrail opened. */
static __always_inline bool gt_conn_is_own(const struct gt_conn_key *k)
{
	return bpf_map_lookup_elem(&gt_self_conns, k) != 0;
}

/* Counts a request skipped as gotrail's own and remembers its goroutine
 * until the request returns. */
static __always_inline void gt_self_skip_mark(const struct gt_goroutine_key *g)
{
	__u8 one = 1;
	gt_count(GT_COUNTER_SKIPPED_SELF);
	bpf_map_update_elem(&gt_self_skipped, g, &one, BPF_ANY);
}

/* At a return without an entry: whether the entry was skipped as gotrail's
 * own (and forgets it). */
static __always_inline bool gt_self_skip_take(const struct gt_goroutine_key *g)
{
	return bpf_map_delete_elem(&gt_self_skipped, g) == 0;
}
