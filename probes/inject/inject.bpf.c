/* traceparent injection into outgoing HTTP/1.x requests without writing
 * user memory: a sock_ops program puts the TCP connections that traced
 * processes open into a sockmap, and an sk_msg program on that sockmap adds
 * the header to the request bytes as they are sent (bpf_msg_push_data makes
 * room in the kernel's copy of the data; the program writes there). Client
 * probes say which request carries which span context (probes/include/
 * inject.h: gt_inject_mark). Nothing is written into the process's memory,
 * so this works on kernels in lockdown, where bpf_probe_write_user is
 * refused.
 *
 * sock_ops: TCP_CONNECT_CB runs in the connecting process's context (the
 * connect() system call), before the connection has its source port and
 * before a socket may enter a sockmap: a connection of a traced process is
 * remembered by its socket cookie. ACTIVE_ESTABLISHED_CB (when the SYN-ACK
 * arrives, in any context) adds the remembered socket to gt_inject_socks and
 * gt_inject_conns under its 4-tuple, and asks for STATE_CB, whose move to
 * CLOSE forgets it (the kernel removes a closed socket from the sockmap by
 * itself). Sockets of processes that are not traced never enter the
 * sockmap, so their sends never run the sk_msg program.
 *
 * sk_msg: runs for every send on a socket in the sockmap (sendmsg, writev,
 * sendfile/splice alike), the process's send counted (gt_inject_sends)
 * and one record lookup when nothing is marked. With a
 * mark, the next send is taken as the request's first bytes: the request
 * line is found, the header block must end within the send (Go's
 * net/http writes the request line and headers through a 4 KiB buffer, so
 * it does), a present traceparent leaves the request alone, and
 * "traceparent: 00-<trace-id>-<span-id>-<flags>\r\n" is inserted right
 * after the request line. The header block grows by 70 bytes; the body,
 * Content-Length and chunked framing are untouched, and later requests on
 * a kept-alive connection are marked anew. The verdict is always SK_PASS:
 * a failure leaves the bytes exactly as the program sent them, counted. */
#include "inject.h"
#include <bpf/bpf_endian.h>

/* Open-coded iterators (kernel 6.4): the verifier checks a loop body once
 * per distinct state instead of once per iteration, so byte scans of a few
 * KiB stay within its limits. GT_FOR(it, i, n) runs i = 0 … n-1; call
 * bpf_iter_num_destroy(&it) after the loop. */
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

#define GT_FOR(it, i, n)                                                               \
	for (int *___ip = (bpf_iter_num_new(&(it), 0, (n)), bpf_iter_num_next(&(it))); \
	     ___ip && ((i) = *___ip, (i) >= 0 && (i) < (n)); ___ip = bpf_iter_num_next(&(it)))

#define GT_AF_INET_  2
#define GT_AF_INET6_ 10

enum gt_inject_http1_limits {
	/* bytes of a send searched for the request line and header block:
	 * Go's bufio.Writer for a connection holds 4096 */
	GT_INJECT_SCAN_MAX = 4096,
	GT_INJECT_LINE_MAX = 2048,      /* request line, with the target */
	GT_INJECT_TRACEPARENT_LEN = 70, /* "traceparent: " + 55 + CRLF */
};

GT_EXPORT_LAYOUTS(inject,
	struct gt_inject_pending pending;
	struct gt_inject_settings settings;
	struct gt_inject_host_key host_key;
	struct gt_inject_cidr_key cidr_key;
	enum gt_inject_limits limits;
	enum gt_inject_proto proto;
	enum gt_inject_flags flags;
	enum gt_inject_host_rule host_rule;
	enum gt_inject_outcome outcome;
	enum gt_inject_pending_flags pending_flags;
	enum gt_inject_http1_limits http1_limits;
	enum gt_link_flags link_flags;
);

/* Sockets of traced processes between connect() and ESTABLISHED, by cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} gt_inject_connecting SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, GT_INJECT_CONNS_MAX);
	__type(key, struct gt_conn_key);
	__type(value, __u32);
} gt_inject_socks SEC(".maps");

static __always_inline void mapped4(__u8 ip[16], __u32 a)
{
	__builtin_memset(ip, 0, 16);
	ip[10] = 0xff;
	ip[11] = 0xff;
	__builtin_memcpy(ip + 12, &a, 4);
}

/* The connection's key as the client's gt_conn_key_of sees it: local =
 * client. Ports: local in host order, remote in network order in the
 * upper half of the field (as the kernel converts it for both contexts). */
#define GT_INJECT_KEY_OF(ctx, k)                                                                          \
	({                                                                                                \
		int _r = 0;                                                                               \
		if ((ctx)->family == GT_AF_INET_) {                                                       \
			mapped4((k)->client_ip, (ctx)->local_ip4);                                        \
			mapped4((k)->server_ip, (ctx)->remote_ip4);                                       \
		} else if ((ctx)->family == GT_AF_INET6_) {                                               \
			__u32 _a[4] = { (ctx)->local_ip6[0], (ctx)->local_ip6[1], (ctx)->local_ip6[2],    \
					(ctx)->local_ip6[3] };                                            \
			__u32 _b[4] = { (ctx)->remote_ip6[0], (ctx)->remote_ip6[1], (ctx)->remote_ip6[2], \
					(ctx)->remote_ip6[3] };                                           \
			__builtin_memcpy((k)->client_ip, _a, 16);                                         \
			__builtin_memcpy((k)->server_ip, _b, 16);                                         \
		} else {                                                                                  \
			_r = -1;                                                                          \
		}                                                                                         \
		(k)->client_port = (__u16)(ctx)->local_port;                                              \
		(k)->server_port = (__u16)bpf_ntohl((ctx)->remote_port);                                  \
		(k)->stream_id = 0;                                                                       \
		_r;                                                                                       \
	})

SEC("sockops")
int gt_inject_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		if (!(gt_inject_flags() & GT_INJECT_ENABLED))
			return 1;
		__u32 tgid = gt_tgid();
		struct gt_process_info *proc = bpf_map_lookup_elem(&gt_processes, &tgid);
		if (!proc || (proc->flags & (GT_PROCESS_TRACED | GT_PROCESS_NO_INJECT)) != GT_PROCESS_TRACED)
			return 1;
		__u64 cookie = bpf_get_socket_cookie(skops);
		bpf_map_update_elem(&gt_inject_connecting, &cookie, &tgid, BPF_ANY);
		return 1;
	}
	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		__u64 cookie = bpf_get_socket_cookie(skops);
		if (!bpf_map_lookup_elem(&gt_inject_connecting, &cookie))
			return 1;
		bpf_map_delete_elem(&gt_inject_connecting, &cookie);
		struct gt_conn_key k = {};
		if (GT_INJECT_KEY_OF(skops, &k) < 0)
			return 1;
		if (bpf_sock_hash_update(skops, &gt_inject_socks, &k, BPF_ANY) < 0) {
			gt_inject_count(GT_INJECT_OUT_SOCKMAP_FULL);
			return 1;
		}
		__u32 one = 1;
		bpf_map_update_elem(&gt_inject_conns, &k, &one, BPF_ANY);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == TCP_CLOSE) {
		struct gt_conn_key k = {};
		if (GT_INJECT_KEY_OF(skops, &k) == 0) {
			bpf_map_delete_elem(&gt_inject_conns, &k);
			bpf_map_delete_elem(&gt_inject_pending, &k);
		}
	}
	return 1;
}

/* The host rules naming the marked request's host ("name[:port]", as the
 * client probe copied it), as enum gt_inject_host_rule bits: the exact
 * name's, and the _SUBDOMAINS bits of its parent domains. A name too long to
 * compare counts as denied (a header never leaks through a limit). */
static __always_inline __u32 host_rules(const struct gt_inject_pending *p)
{
	/* twice the compared length: a parent domain is read as the 64 bytes
	 * at its offset, the zeroed tail padding the key */
	char buf[2 * GT_INJECT_HOST_MAX] = {};
	struct gt_inject_host_key key;
	if (p->flags & GT_INJECT_PENDING_HOST_UNREAD)
		return GT_INJECT_HOST_DENY;
	__builtin_memcpy(buf, p->host, GT_INJECT_HOST_MAX);
	if (buf[0] == 0)
		return 0;
	if (buf[0] == '[') /* an IPv6 literal: the CIDR rules apply */
		return 0;
	/* lower case, and the port (or anything after the name) zeroed */
	int len = GT_INJECT_HOST_MAX, i;
	struct bpf_iter_num it0;
	GT_FOR(it0, i, GT_INJECT_HOST_MAX)
	{
		char *c = buf + (i & (GT_INJECT_HOST_MAX - 1));
		if (len == GT_INJECT_HOST_MAX && (*c == 0 || *c == ':'))
			len = i;
		if (len != GT_INJECT_HOST_MAX)
			*c = 0;
		else if (*c >= 'A' && *c <= 'Z')
			*c += 'a' - 'A';
	}
	bpf_iter_num_destroy(&it0);
	/* a name longer than the copy, unless its port was cut within it */
	if (len >= GT_INJECT_HOST_MAX ||
	    ((p->flags & GT_INJECT_PENDING_HOST_LONG) && len == GT_INJECT_HOST_MAX))
		return GT_INJECT_HOST_DENY;
	__u32 bits = 0;
	__builtin_memcpy(key.name, buf, GT_INJECT_HOST_MAX);
	__u32 *v = bpf_map_lookup_elem(&gt_inject_hosts, &key);
	if (v)
		bits |= *v & (GT_INJECT_HOST_ALLOW | GT_INJECT_HOST_DENY);
	/* each parent domain: the name after each dot */
	int labels = 0;
	struct bpf_iter_num it1;
	GT_FOR(it1, i, GT_INJECT_HOST_MAX - 1)
	{
		if (i >= len)
			break;
		if (buf[i & (GT_INJECT_HOST_MAX - 1)] != '.')
			continue;
		if (++labels > GT_INJECT_HOST_LABELS_MAX)
			break;
		if (bpf_probe_read_kernel(key.name, GT_INJECT_HOST_MAX,
					  buf + ((i + 1) & (GT_INJECT_HOST_MAX - 1))) < 0)
			break;
		v = bpf_map_lookup_elem(&gt_inject_hosts, &key);
		if (v)
			bits |= *v & (GT_INJECT_HOST_ALLOW_SUBDOMAINS | GT_INJECT_HOST_DENY_SUBDOMAINS);
	}
	bpf_iter_num_destroy(&it1);
	return bits;
}

static __always_inline char hexdigit(__u8 v)
{
	return v < 10 ? '0' + v : 'a' + v - 10;
}

static __always_inline char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Inserts the traceparent of `span` after the request line of the HTTP/1.x
 * request that `msg` begins. */
static __always_inline void http1_inject(struct sk_msg_md *msg, const struct gt_span_context *span)
{
	__u32 size = msg->size;
	__u32 scan = size < GT_INJECT_SCAN_MAX ? size : GT_INJECT_SCAN_MAX;
	if (scan < 16) {
		gt_inject_count(GT_INJECT_OUT_NOT_A_REQUEST);
		return;
	}
	if (bpf_msg_pull_data(msg, 0, scan, 0) < 0) {
		gt_inject_count(GT_INJECT_OUT_PULL_FAILED);
		return;
	}
	char *d = msg->data, *e = msg->data_end;
	if ((void *)(d + 1) > (void *)e || d[0] < 'A' || d[0] > 'Z') {
		gt_inject_count(GT_INJECT_OUT_NOT_A_REQUEST);
		return;
	}
	/* the request line: METHOD SP target SP HTTP/1.x CRLF */
	int line = 0, i;
	struct bpf_iter_num it0;
	GT_FOR(it0, i, GT_INJECT_LINE_MAX)
	{
		char *c = d + i;
		if ((void *)(c + 1) > (void *)e)
			break;
		if (*c == '\n') {
			line = i + 1;
			break;
		}
	}
	bpf_iter_num_destroy(&it0);
	__u32 eol = line, at = eol - 11; /* " HTTP/1.x\r\n" */
	/* the verifier must see the bound on the very register that is added */
	asm volatile("" : "+r"(at));
	if (eol < 16 || at > GT_INJECT_LINE_MAX) {
		gt_inject_count(GT_INJECT_OUT_NOT_A_REQUEST);
		return;
	}
	char *v = d + at;
	if ((void *)(v + 11) > (void *)e || v[0] != ' ' || v[1] != 'H' || v[2] != 'T' || v[3] != 'T' ||
	    v[4] != 'P' || v[5] != '/' || v[6] != '1' || v[7] != '.' || v[9] != '\r') {
		gt_inject_count(GT_INJECT_OUT_NOT_A_REQUEST);
		return;
	}
	/* the end of the header block (a request without header fields ends
	 * right after the request line), and a traceparent the program set
	 * itself, in any case: that request is left alone */
	int end = 0, present = 0;
	struct bpf_iter_num it1;
	GT_FOR(it1, i, GT_INJECT_SCAN_MAX)
	{
		char *c = d + i;
		if ((void *)(c + 3) > (void *)e)
			break;
		if (c[0] != '\n')
			continue;
		if (c[1] == '\r' && c[2] == '\n') {
			end = i + 3;
			break;
		}
		if ((void *)(c + 13) > (void *)e)
			break;
		if (lower(c[1]) == 't' && lower(c[2]) == 'r' && lower(c[3]) == 'a' && lower(c[4]) == 'c' &&
		    lower(c[5]) == 'e' && lower(c[6]) == 'p' && lower(c[7]) == 'a' && lower(c[8]) == 'r' &&
		    lower(c[9]) == 'e' && lower(c[10]) == 'n' && lower(c[11]) == 't' && c[12] == ':') {
			present = 1;
			break;
		}
	}
	bpf_iter_num_destroy(&it1);
	if (present) {
		gt_inject_count(GT_INJECT_OUT_PRESENT);
		return;
	}
	if (!end) {
		gt_inject_count(GT_INJECT_OUT_HEADER_INCOMPLETE);
		return;
	}
	if (bpf_msg_push_data(msg, eol, GT_INJECT_TRACEPARENT_LEN, 0) < 0) {
		gt_inject_count(GT_INJECT_OUT_PUSH_FAILED);
		return;
	}
	if (bpf_msg_pull_data(msg, eol, eol + GT_INJECT_TRACEPARENT_LEN, 0) < 0) {
		/* the room is made but cannot be written: take it out again */
		bpf_msg_pop_data(msg, eol, GT_INJECT_TRACEPARENT_LEN, 0);
		gt_inject_count(GT_INJECT_OUT_PULL_FAILED);
		return;
	}
	d = msg->data;
	e = msg->data_end;
	if ((void *)(d + GT_INJECT_TRACEPARENT_LEN) > (void *)e) {
		bpf_msg_pop_data(msg, eol, GT_INJECT_TRACEPARENT_LEN, 0);
		gt_inject_count(GT_INJECT_OUT_PULL_FAILED);
		return;
	}
	__builtin_memcpy(d, "traceparent: 00-", 16);
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < 16; i++) {
		d[16 + 2 * i] = hexdigit(span->trace_id[i] >> 4);
		d[17 + 2 * i] = hexdigit(span->trace_id[i] & 15);
	}
	d[48] = '-';
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < 8; i++) {
		d[49 + 2 * i] = hexdigit(span->span_id[i] >> 4);
		d[50 + 2 * i] = hexdigit(span->span_id[i] & 15);
	}
	d[65] = '-';
	d[66] = '0';
	d[67] = (span->flags & GT_SPAN_SAMPLED) ? '1' : '0';
	d[68] = '\r';
	d[69] = '\n';
	/* the room made is a scatterlist element of its own: a message of up to
	 * one page is made one element again, so that it leaves as one write */
	__u32 total = msg->size;
	if (total <= GT_INJECT_SCAN_MAX)
		bpf_msg_pull_data(msg, 0, total, 0);
	gt_inject_count(GT_INJECT_OUT_INJECTED);
}

/* Sends through gt_inject_msg per process (tgid): what the sockmap's send
 * path costs a process is its sends × the per-send cost calibrated at
 * start-up plus the program's own run time (daemon/agent/overhead.ts). The
 * kernel runs sk_msg programs in the sending task's context (tcp_bpf's
 * sendmsg), so the current tgid is the process that pays. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} gt_inject_sends SEC(".maps");

static __always_inline void count_send(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 *v = bpf_map_lookup_elem(&gt_inject_sends, &tgid);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return;
	}
	__u64 one = 1;
	/* two CPUs may race to create the key: the loser adds to the winner's */
	if (bpf_map_update_elem(&gt_inject_sends, &tgid, &one, BPF_NOEXIST) < 0) {
		v = bpf_map_lookup_elem(&gt_inject_sends, &tgid);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
}

SEC("sk_msg")
int gt_inject_msg(struct sk_msg_md *msg)
{
	count_send();
	struct gt_conn_key k = {};
	if (GT_INJECT_KEY_OF(msg, &k) < 0)
		return SK_PASS;
	struct gt_inject_pending *pp = bpf_map_lookup_elem(&gt_inject_pending, &k);
	if (!pp)
		return SK_PASS;
	struct gt_span_context span = pp->span;
	__u32 proto = pp->proto, flags = gt_inject_flags();
	__u32 hosts = (flags & GT_INJECT_HOST_RULES) ? host_rules(pp) : 0;
	bool allowed = (pp->flags & GT_INJECT_PENDING_CIDR_ALLOWED) ||
		       (hosts & (GT_INJECT_HOST_ALLOW | GT_INJECT_HOST_ALLOW_SUBDOMAINS));
	/* the mark is for the next send only, taken whatever becomes of it */
	bpf_map_delete_elem(&gt_inject_pending, &k);
	if (hosts & (GT_INJECT_HOST_DENY | GT_INJECT_HOST_DENY_SUBDOMAINS)) {
		gt_inject_count(GT_INJECT_OUT_DENIED);
		return SK_PASS;
	}
	if ((flags & GT_INJECT_ALLOW_LIST) && !allowed) {
		gt_inject_count(GT_INJECT_OUT_NOT_ALLOWED);
		return SK_PASS;
	}
	if (proto == GT_INJECT_PROTO_HTTP1)
		http1_inject(msg, &span);
	return SK_PASS;
}
