/* gotrail's own TCP connections (see probes/include/self.h for why and how
 * probes use them).
 *
 * inet_sock_set_state fires on every TCP state change of the node. A
 * connect() moves the socket to SYN_SENT in the connecting process's
 * context, before the source port is chosen: the socket is remembered if
 * that process is gotrail. The move to ESTABLISHED happens when the SYN-ACK
 * arrives (softirq, any process's context), with all four ends known: they
 * are recorded as one of gotrail's connections. CLOSE forgets both. A BTF
 * tracepoint (tp_btf) needs neither kprobes nor a tracefs mount. */
#include "self.h"
#include <bpf/bpf_endian.h>

#define GT_AF_INET  2
#define GT_AF_INET6 10

/* A socket gotrail is connecting or connected with. */
struct gt_self_sock {
	struct gt_conn_key key; /* valid with established */
	__u32 established;
	__u32 tgid; /* the gotrail process that connected */
};

GT_EXPORT_LAYOUTS(self,
	struct gt_self_sock sock;
);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64); /* struct sock * */
	__type(value, struct gt_self_sock);
} gt_self_socks SEC(".maps");

static __always_inline void mapped_v4(__u8 ip[16], __be32 a)
{
	__builtin_memset(ip, 0, 16);
	ip[10] = 0xff;
	ip[11] = 0xff;
	__builtin_memcpy(ip + 12, &a, 4);
}

/* The connection's ends as the Go server's gt_conn_key_of will see them:
 * IPv4 as IPv4-mapped IPv6, ports in host order. */
static __always_inline int conn_key_of_sock(const struct sock *sk, struct gt_conn_key *k)
{
	const struct sock_common *c = &sk->__sk_common;
	__u16 family = BPF_CORE_READ(c, skc_family);
	k->stream_id = 0;
	if (family == GT_AF_INET) {
		mapped_v4(k->client_ip, BPF_CORE_READ(c, skc_rcv_saddr));
		mapped_v4(k->server_ip, BPF_CORE_READ(c, skc_daddr));
	} else if (family == GT_AF_INET6) {
		BPF_CORE_READ_INTO(&k->client_ip, c, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&k->server_ip, c, skc_v6_daddr);
	} else {
		return -1;
	}
	k->client_port = BPF_CORE_READ(c, skc_num);
	k->server_port = bpf_ntohs(BPF_CORE_READ(c, skc_dport));
	return 0;
}

/* TP_PROTO(const struct sock *sk, const int oldstate, const int newstate) */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(gt_self_sock_state, const struct sock *sk, int oldstate, int newstate)
{
	__u64 id = (__u64)sk;
	if (newstate == TCP_SYN_SENT) {
		__u32 tgid = gt_tgid();
		if (!bpf_map_lookup_elem(&gt_self_processes, &tgid))
			return 0;
		if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		struct gt_self_sock s = { .tgid = tgid };
		bpf_map_update_elem(&gt_self_socks, &id, &s, BPF_ANY);
		return 0;
	}
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	struct gt_self_sock *s = bpf_map_lookup_elem(&gt_self_socks, &id);
	if (!s)
		return 0;
	if (newstate == TCP_ESTABLISHED) {
		if (s->established || conn_key_of_sock(sk, &s->key) < 0)
			return 0;
		if (bpf_map_update_elem(&gt_self_conns, &s->key, &s->tgid, BPF_ANY) == 0) {
			s->established = 1;
			gt_self_conn_count_add(1);
		}
		return 0;
	}
	if (s->established && bpf_map_delete_elem(&gt_self_conns, &s->key) == 0)
		gt_self_conn_count_add(-1);
	bpf_map_delete_elem(&gt_self_socks, &id);
	return 0;
}
