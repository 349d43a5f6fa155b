/* Go's internal register ABI on amd64 (Go >= 1.17): integer arguments in
 * RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11, in that order; the current
 * goroutine (g) in R14. */
#pragma once

#include "gotrail.h"

#define GO_ARG1(ctx) ((__u64)(ctx)->ax)
#define GO_ARG2(ctx) ((__u64)(ctx)->bx)
#define GO_ARG3(ctx) ((__u64)(ctx)->cx)
#define GO_ARG4(ctx) ((__u64)(ctx)->di)
#define GO_ARG5(ctx) ((__u64)(ctx)->si)
#define GO_ARG6(ctx) ((__u64)(ctx)->r8)
#define GO_ARG7(ctx) ((__u64)(ctx)->r9)
#define GO_ARG8(ctx) ((__u64)(ctx)->r10)
#define GO_ARG9(ctx) ((__u64)(ctx)->r11)
#define GO_G(ctx)    ((__u64)(ctx)->r14)

/* A Go string header: pointer and length. */
struct go_string {
	__u64 ptr;
	__s64 len;
};

/* A Go slice header. */
struct go_slice {
	__u64 ptr;
	__s64 len;
	__s64 cap;
};

static __always_inline __u64 go_goid(struct pt_regs *ctx, struct gt_binary_info *bin)
{
	__u64 goid = 0;
	__u64 g = GO_G(ctx);
	if (!g)
		return 0;
	bpf_probe_read_user(&goid, sizeof(goid), (void *)(g + bin->goid_offset));
	return goid;
}

static __always_inline int go_read_ptr(__u64 base, __u32 off, __u64 *out)
{
	*out = 0;
	if (!base)
		return -1;
	return bpf_probe_read_user(out, sizeof(*out), (void *)(base + off));
}

/* Copies the bytes of a Go string whose header is already read into dst
 * (size cap, a power of two), returning the string's full length (which may
 * exceed what was copied, so user space can mark truncation), or -1 when
 * the bytes are unreadable. */
static __always_inline __s64 go_copy_string(struct go_string s, char *dst, __u32 cap)
{
	if (s.len <= 0 || !s.ptr)
		return 0;
	__u32 n = s.len < cap ? (__u32)s.len : cap;
	n &= (cap - 1) | cap; /* keeps the verifier's bound tight */
	if (n > cap)
		n = cap;
	if (bpf_probe_read_user(dst, n, (void *)s.ptr) < 0)
		return -1;
	return s.len;
}

/* As go_copy_string, for the string field at base+off; -1 also when the
 * header is unreadable. */
static __always_inline __s64 go_read_string(__u64 base, __u32 off, char *dst, __u32 cap)
{
	struct go_string s = {};
	if (!base || bpf_probe_read_user(&s, sizeof(s), (void *)(base + off)) < 0)
		return -1;
	return go_copy_string(s, dst, cap);
}

#define X86_EFLAGS_CF 0x0001
#define X86_EFLAGS_ZF 0x0040

/* The common start of every uprobe program: is this process traced, which
 * binary fired (the attach cookie), that binary's facts and this probe's
 * config for it, and the goroutine's key. Returns the config, or 0 when the
 * event is to be ignored. `site` names the program for the debug record. */
static __always_inline void *gt_probe_enter(struct pt_regs *ctx, void *config_map,
					    struct gt_goroutine_key *key, __u32 *bin_id, __u32 site)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 tgid = gt_tgid();
	__u32 id = (__u32)cookie;
	/* At the stack check's branch, the flags are those of its CMP: JBE
	 * branches to morestack on CF or ZF. That hit is not a call (nor counted
	 * as one): the function is entered again, and probed, on the grown
	 * stack. */
	if (((cookie >> GT_COOKIE_FLAGS_SHIFT) & GT_COOKIE_AT_STACK_CHECK) &&
	    (ctx->flags & (X86_EFLAGS_CF | X86_EFLAGS_ZF)))
		return 0;
	if (!gt_hit_traced(tgid, site)) {
		if (gt_debug_hits()) {
			struct gt_binary_info *b = bpf_map_lookup_elem(&gt_binaries, &id);
			gt_debug_hit(ctx, site, GT_HIT_UNTRACED, tgid, id, b ? go_goid(ctx, b) : 0);
		}
		return 0;
	}
	struct gt_binary_info *bin = gt_binary(id);
	void *cfg = bpf_map_lookup_elem(config_map, &id);
	if (!bin || !cfg) {
		gt_debug_hit(ctx, site, GT_HIT_NO_BINARY, tgid, id, 0);
		return 0;
	}
	key->tgid = tgid;
	key->reserved = 0;
	key->goid = go_goid(ctx, bin);
	*bin_id = id;
	return cfg;
}

/* Both ends of a TCP connection, as the client sees them; the server sees
 * the same connection with local and remote swapped. IPv4 addresses are
 * stored IPv4-mapped, as Go's net.IP does for accepted connections.
 * An HTTP/2 connection carries many requests at once, one per stream: its
 * requests are told apart by their stream id (client-initiated ids are odd
 * and never reused on a connection); 0 stands for the connection itself
 * (HTTP/1, one request at a time). */
struct gt_conn_key {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__u16 client_port;
	__u16 server_port;
	__u32 stream_id;
};

/* Offsets to walk from a *net.TCPConn to its addresses. */
struct gt_tcp_offsets {
	__u32 conn_fd;      /* net.conn.fd */
	__u32 fd_laddr;     /* net.netFD.laddr (net.Addr) */
	__u32 fd_raddr;     /* net.netFD.raddr (net.Addr) */
	__u32 tcpaddr_ip;   /* net.TCPAddr.IP */
	__u32 tcpaddr_port; /* net.TCPAddr.Port */
	__u32 reserved;
};

/* Client span context by connection: set by the client probe just before a
 * request goes out on a connection, read by the server probe when the
 * request arrives. Both ends on one node link without writing anything
 * into the programs' memory (kernels in lockdown refuse that). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gt_conn_key);
	__type(value, struct gt_span_context);
} gt_conn_spans SEC(".maps");

/* How many client spans are published in gt_conn_spans right now: while
 * none are, server probes skip the connection walk (a dozen user-memory
 * reads) entirely. A hint, not an exact count. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} gt_conn_published SEC(".maps");

static __always_inline void gt_conn_published_add(__s64 d)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&gt_conn_published, &zero);
	if (n)
		__sync_fetch_and_add(n, d);
}

/* Node-wide linking switches, set by user space (one slot). */
enum gt_link_flags {
	/* server probes do not look for a client span of this node by
	 * connection: only a received traceparent links (`--no-local-linking`,
	 * used to test header propagation between two network namespaces) */
	GT_LINK_LOCAL_OFF = 1,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} gt_link_flags SEC(".maps");

static __always_inline bool gt_conn_any_published(void)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&gt_conn_published, &zero);
	__u32 *f = bpf_map_lookup_elem(&gt_link_flags, &zero);
	return n && *n > 0 && !(f && (*f & GT_LINK_LOCAL_OFF));
}

/* Reads the address and port of a *net.TCPAddr (`addr`). */
static __always_inline int gt_tcp_addr_at(__u64 addr, const struct gt_tcp_offsets *o, __u8 ip[16],
					  __u16 *port)
{
	struct go_slice s = {};
	__s64 p = 0;
	if (!addr)
		return -1;
	/* TCPAddr is {IP []byte, Port int, Zone string}: the slice and the
	 * port in one read where they are next to each other, as in every Go
	 * version so far */
	if (o->tcpaddr_port == o->tcpaddr_ip + sizeof(struct go_slice)) {
		struct {
			struct go_slice ip;
			__s64 port;
		} ip_port;
		if (bpf_probe_read_user(&ip_port, sizeof(ip_port), (void *)(addr + o->tcpaddr_ip)) < 0)
			return -1;
		s = ip_port.ip;
		p = ip_port.port;
	} else if (bpf_probe_read_user(&s, sizeof(s), (void *)(addr + o->tcpaddr_ip)) < 0 ||
		   bpf_probe_read_user(&p, sizeof(p), (void *)(addr + o->tcpaddr_port)) < 0) {
		return -1;
	}
	if (p <= 0 || p > 65535)
		return -1;
	__builtin_memset(ip, 0, 16);
	if (s.len == 4) {
		ip[10] = 0xff;
		ip[11] = 0xff;
		if (bpf_probe_read_user(ip + 12, 4, (void *)s.ptr) < 0)
			return -1;
	} else if (s.len == 16) {
		if (bpf_probe_read_user(ip, 16, (void *)s.ptr) < 0)
			return -1;
	} else {
		return -1;
	}
	*port = (__u16)p;
	return 0;
}

/* The connection key of a *net.TCPConn (`tcpconn`); `client_side` says
 * which end the process is. */
static __always_inline int gt_conn_key_of(__u64 tcpconn, const struct gt_tcp_offsets *o, bool client_side,
					  struct gt_conn_key *k)
{
	__u64 fd = 0, laddr = 0, raddr = 0;
	if (!tcpconn || bpf_probe_read_user(&fd, sizeof(fd), (void *)(tcpconn + o->conn_fd)) < 0 || !fd)
		return -1;
	/* netFD.laddr and .raddr are net.Addr interfaces {itab, data}, the
	 * *TCPAddr in the second word: both in one read where raddr follows
	 * laddr, as in every Go version so far */
	if (o->fd_raddr == o->fd_laddr + 16) {
		__u64 both[4];
		if (bpf_probe_read_user(both, sizeof(both), (void *)(fd + o->fd_laddr)) < 0)
			return -1;
		laddr = both[1];
		raddr = both[3];
	} else if (bpf_probe_read_user(&laddr, sizeof(laddr), (void *)(fd + o->fd_laddr + 8)) < 0 ||
		   bpf_probe_read_user(&raddr, sizeof(raddr), (void *)(fd + o->fd_raddr + 8)) < 0) {
		return -1;
	}
	__u8 *local_ip = client_side ? k->client_ip : k->server_ip;
	__u8 *remote_ip = client_side ? k->server_ip : k->client_ip;
	__u16 *local_port = client_side ? &k->client_port : &k->server_port;
	__u16 *remote_port = client_side ? &k->server_port : &k->client_port;
	k->stream_id = 0;
	if (gt_tcp_addr_at(laddr, o, local_ip, local_port) < 0 ||
	    gt_tcp_addr_at(raddr, o, remote_ip, remote_port) < 0)
		return -1;
	return 0;
}

/* The *net.TCPConn under a net.Conn `conn_data` (an interface's data word)
 * that is a *crypto/tls.Conn when `is_tls`, else the *net.TCPConn itself.
 * HTTP/2 keeps its connection as a net.Conn: a *tls.Conn for TLS, the bare
 * TCP connection for unencrypted HTTP/2 (h2c); the caller knows which from
 * the HTTP/2 connection's TLS state. `tls_conn_conn`: crypto/tls.Conn.conn,
 * itself a net.Conn {itab, data}. */
static __always_inline __u64 gt_tcp_conn_under(__u64 conn_data, bool is_tls, __u32 tls_conn_conn)
{
	__u64 tcp = 0;
	if (!is_tls)
		return conn_data;
	if (go_read_ptr(conn_data, tls_conn_conn + 8, &tcp) < 0)
		return 0;
	return tcp;
}
