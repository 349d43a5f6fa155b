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
 * sendfile/splice alike), one record lookup when nothing is marked. With a
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

enum gt_inject_h2_limits {
	GT_INJECT_H2_FRAMES_MAX = 512, /* frames walked per send (gRPC batches up to 32 KiB) */
	GT_INJECT_H2_FRAME_HEADER = 9,
	GT_INJECT_H2_PREFACE_LEN = 24,  /* "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
	GT_INJECT_H2_FRAME_MAX = 16384, /* SETTINGS_MAX_FRAME_SIZE's initial value: what every peer takes */
	GT_INJECT_H2_FIELD_LEN = 69,    /* 0x00, 11, "traceparent", 55, the value */
	GT_INJECT_H2_HEADERS = 1,       /* frame type */
	GT_INJECT_H2_TYPE_MAX = 9,      /* CONTINUATION: the last type RFC 9113 defines */
	GT_INJECT_H2_END_HEADERS = 4,   /* flags */
	GT_INJECT_H2_PADDED = 8,
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
	enum gt_inject_h2_limits h2_limits;
	struct gt_inject_h2_conn h2_conn;
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
/* host_rules' working memory, off the stack (the sk_msg program's calls
 * share 512 bytes): one per CPU. */
struct host_rules_scratch {
	/* twice the compared length: a parent domain is read as the 64 bytes
	 * at its offset, the zeroed tail padding the key */
	char buf[2 * GT_INJECT_HOST_MAX];
	struct gt_inject_host_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct host_rules_scratch);
} gt_inject_host_scratch SEC(".maps");

static __noinline __u32 host_rules(const struct gt_inject_pending *p)
{
	__u32 zero = 0;
	struct host_rules_scratch *sc = bpf_map_lookup_elem(&gt_inject_host_scratch, &zero);
	if (!sc)
		return GT_INJECT_HOST_DENY;
	char *buf = sc->buf;
	struct gt_inject_host_key *kp = &sc->key;
	if (p->flags & GT_INJECT_PENDING_HOST_UNREAD)
		return GT_INJECT_HOST_DENY;
	__builtin_memset(buf + GT_INJECT_HOST_MAX, 0, GT_INJECT_HOST_MAX);
	__builtin_memcpy(buf, p->host, GT_INJECT_HOST_MAX);
	if (buf[0] == 0)
		return 0;
	if (p->flags & GT_INJECT_PENDING_HOST_TARGET) {
		/* a gRPC target: a name cut short is never compared by its
		 * beginning; the name is what follows the last '/' */
		if (p->flags & GT_INJECT_PENDING_HOST_LONG)
			return GT_INJECT_HOST_DENY;
		int slash = -1, j;
		struct bpf_iter_num its;
		GT_FOR(its, j, GT_INJECT_HOST_MAX)
		{
			char ch = buf[j & (GT_INJECT_HOST_MAX - 1)];
			if (ch == 0)
				break;
			if (ch == '/')
				slash = j;
		}
		bpf_iter_num_destroy(&its);
		if (slash >= 0) {
			if (bpf_probe_read_kernel(kp->name, GT_INJECT_HOST_MAX,
						  buf + ((slash + 1) & (GT_INJECT_HOST_MAX - 1))) < 0)
				return GT_INJECT_HOST_DENY;
			__builtin_memcpy(buf, kp->name, GT_INJECT_HOST_MAX);
		}
		if (buf[0] == 0)
			return 0;
	}
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
	__builtin_memcpy(kp->name, buf, GT_INJECT_HOST_MAX);
	__u32 *v = bpf_map_lookup_elem(&gt_inject_hosts, kp);
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
		if (bpf_probe_read_kernel(kp->name, GT_INJECT_HOST_MAX,
					  buf + ((i + 1) & (GT_INJECT_HOST_MAX - 1))) < 0)
			break;
		v = bpf_map_lookup_elem(&gt_inject_hosts, kp);
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
static __noinline void http1_inject(struct sk_msg_md *msg, const struct gt_span_context *span)
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

/* The destination rules for a marked request whose mark was just taken:
 * true when the header may go. Counted when not. */
static __always_inline bool rules_allow(const struct gt_inject_pending *pp, __u32 flags)
{
	__u32 hosts = (flags & GT_INJECT_HOST_RULES) ? host_rules(pp) : 0;
	bool allowed = (pp->flags & GT_INJECT_PENDING_CIDR_ALLOWED) ||
		       (hosts & (GT_INJECT_HOST_ALLOW | GT_INJECT_HOST_ALLOW_SUBDOMAINS));
	if (hosts & (GT_INJECT_HOST_DENY | GT_INJECT_HOST_DENY_SUBDOMAINS)) {
		gt_inject_count(GT_INJECT_OUT_DENIED);
		return false;
	}
	if ((flags & GT_INJECT_ALLOW_LIST) && !allowed) {
		gt_inject_count(GT_INJECT_OUT_NOT_ALLOWED);
		return false;
	}
	return true;
}

static __always_inline void traceparent_value(char *d, const struct gt_span_context *span)
{
	d[0] = '0';
	d[1] = '0';
	d[2] = '-';
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < 16; i++) {
		d[3 + 2 * i] = hexdigit(span->trace_id[i] >> 4);
		d[4 + 2 * i] = hexdigit(span->trace_id[i] & 15);
	}
	d[35] = '-';
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < 8; i++) {
		d[36 + 2 * i] = hexdigit(span->span_id[i] >> 4);
		d[37 + 2 * i] = hexdigit(span->span_id[i] & 15);
	}
	d[52] = '-';
	d[53] = '0';
	d[54] = (span->flags & GT_SPAN_SAMPLED) ? '1' : '0';
}

/* Appends the traceparent field to the header block of the HEADERS frame
 * at `off` of `msg` (its payload `len` bytes, all in this send) and adds
 * GT_INJECT_H2_FIELD_LEN to its length. True when done; on failure the
 * bytes are as they were. */
static __always_inline bool h2_append(struct sk_msg_md *msg, __u32 off, __u32 len,
				      const struct gt_span_context *span)
{
	__u32 end = off + GT_INJECT_H2_FRAME_HEADER + len;
	if (bpf_msg_push_data(msg, end, GT_INJECT_H2_FIELD_LEN, 0) < 0) {
		gt_inject_count(GT_INJECT_OUT_PUSH_FAILED);
		return false;
	}
	if (bpf_msg_pull_data(msg, end, end + GT_INJECT_H2_FIELD_LEN, 0) < 0)
		goto undo;
	char *d = msg->data, *e = msg->data_end;
	if ((void *)(d + GT_INJECT_H2_FIELD_LEN) > (void *)e)
		goto undo;
	/* literal header field without indexing, new name (RFC 7541 6.2.2):
	 * the dynamic table is left as it is */
	d[0] = 0x00;
	d[1] = 11;
	__builtin_memcpy(d + 2, "traceparent", 11);
	d[13] = 55;
	traceparent_value(d + 14, span);
	if (bpf_msg_pull_data(msg, off, off + GT_INJECT_H2_FRAME_HEADER, 0) < 0)
		goto undo;
	d = msg->data;
	e = msg->data_end;
	if ((void *)(d + GT_INJECT_H2_FRAME_HEADER) > (void *)e)
		goto undo;
	__u32 n = len + GT_INJECT_H2_FIELD_LEN;
	d[0] = n >> 16;
	d[1] = n >> 8;
	d[2] = n;
	return true;
undo:
	bpf_msg_pop_data(msg, end, GT_INJECT_H2_FIELD_LEN, 0);
	gt_inject_count(GT_INJECT_OUT_PULL_FAILED);
	return false;
}

/* Walks the HTTP/2 frames of a send on a connection with marked streams
 * (`c`, its state across sends; `k` its key), and appends the traceparent
 * field to the HEADERS frame of each marked stream. */
static __noinline void h2_walk(struct sk_msg_md *msg, struct gt_conn_key *k, struct gt_inject_h2_conn *c)
{
	__u32 flags = gt_inject_flags();
	struct gt_inject_h2_conn *w = c;
	if (c->lost)
		return;
	w->walk_size = msg->size;
	w->walk_off = c->carry;
	if (c->hdr_have) {
		/* the rest of a frame header the previous send cut: its
		 * length completed, the walk resumes after the frame */
		__u32 have = c->hdr_have, need = GT_INJECT_H2_FRAME_HEADER - have, size = w->walk_size;
		__u32 n = need < size ? need : size;
		if (have >= GT_INJECT_H2_FRAME_HEADER || bpf_msg_pull_data(msg, 0, n, 0) < 0)
			goto lost;
		__u8 *d = msg->data, *e = msg->data_end;
		__u32 len = c->hdr_len;
#pragma unroll
		for (__u32 j = 0; j < GT_INJECT_H2_FRAME_HEADER - 1; j++) {
			if (j >= n)
				break;
			if ((void *)(d + j + 1) > (void *)e)
				goto lost;
			if (have + j < 3)
				len = (len << 8) | d[j];
		}
		if (n < need) {
			c->hdr_have = have + n;
			c->hdr_len = len;
			return;
		}
		c->hdr_have = 0;
		c->hdr_len = 0;
		w->walk_off = need + len;
	}
	if (w->walk_off >= w->walk_size) {
		c->carry = w->walk_off - w->walk_size;
		return;
	}
	int i;
	struct bpf_iter_num it;
	bool done = false;
	GT_FOR(it, i, GT_INJECT_H2_FRAMES_MAX)
	{
		__u32 off = w->walk_off, size = w->walk_size;
		if (off + GT_INJECT_H2_FRAME_HEADER > size) {
			/* a frame header cut by the end of the send: its first
			 * bytes kept (the length is in the first three) */
			__u32 have = size - off, len = 0;
			if (bpf_msg_pull_data(msg, off, size, 0) < 0)
				break;
			__u8 *d = msg->data, *e = msg->data_end;
			if ((void *)(d + 3) <= (void *)e)
				len = ((__u32)d[0] << 16) | ((__u32)d[1] << 8) | d[2];
			else if ((void *)(d + 2) <= (void *)e)
				len = ((__u32)d[0] << 8) | d[1];
			else if ((void *)(d + 1) <= (void *)e)
				len = d[0];
			c->hdr_have = have;
			c->hdr_len = len;
			c->carry = 0;
			done = true;
			break;
		}
		if (bpf_msg_pull_data(msg, off, off + GT_INJECT_H2_FRAME_HEADER, 0) < 0)
			break;
		__u8 *h = msg->data, *e = msg->data_end;
		if ((void *)(h + GT_INJECT_H2_FRAME_HEADER) > (void *)e)
			break;
		if (off == 0 && h[0] == 'P' && h[1] == 'R' && h[2] == 'I' && h[3] == ' ') {
			/* the client connection preface */
			w->walk_off = GT_INJECT_H2_PREFACE_LEN;
			if (w->walk_off >= size) {
				c->carry = w->walk_off - size;
				done = true;
				break;
			}
			continue;
		}
		__u32 len = ((__u32)h[0] << 16) | ((__u32)h[1] << 8) | h[2];
		__u8 type = h[3], fl = h[4];
		__u32 sid = ((__u32)(h[5] & 0x7f) << 24) | ((__u32)h[6] << 16) | ((__u32)h[7] << 8) | h[8];
		if (type > GT_INJECT_H2_TYPE_MAX || (h[5] & 0x80))
			break; /* not a frame header: the boundaries are lost */
		if (type == GT_INJECT_H2_HEADERS && sid && c->marks) {
			k->stream_id = sid;
			struct gt_inject_pending *pp = bpf_map_lookup_elem(&gt_inject_pending, k);
			if (pp && pp->proto == GT_INJECT_PROTO_HTTP2) {
				struct gt_span_context span = pp->span;
				bool go = rules_allow(pp, flags);
				bpf_map_delete_elem(&gt_inject_pending, k);
				if (c->marks)
					__sync_fetch_and_add(&c->marks, -1);
				if (!go) {
				} else if (!(fl & GT_INJECT_H2_END_HEADERS)) {
					gt_inject_count(GT_INJECT_OUT_H2_CONTINUATION);
				} else if (fl & GT_INJECT_H2_PADDED) {
					gt_inject_count(GT_INJECT_OUT_H2_PADDED);
				} else if (len + GT_INJECT_H2_FIELD_LEN > GT_INJECT_H2_FRAME_MAX) {
					gt_inject_count(GT_INJECT_OUT_H2_TOO_LONG);
				} else if (off + GT_INJECT_H2_FRAME_HEADER + len > size) {
					gt_inject_count(GT_INJECT_OUT_H2_SPLIT);
				} else if (h2_append(msg, off, len, &span)) {
					gt_inject_count(GT_INJECT_OUT_INJECTED);
					len += GT_INJECT_H2_FIELD_LEN;
					w->walk_size = size + GT_INJECT_H2_FIELD_LEN;
				}
			}
			k->stream_id = 0;
		}
		w->walk_off = off + GT_INJECT_H2_FRAME_HEADER + len;
		if (w->walk_off >= w->walk_size) {
			c->carry = w->walk_off - w->walk_size;
			done = true;
			break;
		}
	}
	bpf_iter_num_destroy(&it);
	if (done)
		return;
lost:
	c->lost = 1;
	gt_inject_count(GT_INJECT_OUT_H2_UNALIGNED);
}

SEC("sk_msg")
int gt_inject_msg(struct sk_msg_md *msg)
{
	struct gt_conn_key k = {};
	if (GT_INJECT_KEY_OF(msg, &k) < 0)
		return SK_PASS;
	struct gt_inject_pending *pp = bpf_map_lookup_elem(&gt_inject_pending, &k);
	if (!pp) {
		struct gt_inject_h2_conn *c = bpf_map_lookup_elem(&gt_inject_h2_conns, &k);
		if (c)
			h2_walk(msg, &k, c);
		return SK_PASS;
	}
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
