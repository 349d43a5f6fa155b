/* Header injection with bpf_probe_write_user: the fallback for kernels that
 * allow the helper (not in lockdown). Built as an object of its own
 * (gotrail-write-user.bpf.o) and loaded after the probes' object, whose maps
 * it shares: a kernel in lockdown refuses this object — the helper is not in
 * a program's helper set there — and nothing else. Its programs are loaded
 * with `autoload` restricted to gt_wu_*: the net/http client probe is
 * included only for its maps and layouts.
 *
 * Built twice: with GT_WU_DRY_RUN the helper call is replaced by a counter
 * (GT_WU_WOULD_INJECT) and the line that would be written is kept in
 * gt_wu_last_line, so that every program is verified, attached and run on
 * a kernel in lockdown up to the write itself.
 *
 * What is written, and where: net/http writes a request's header block into
 * its connection's bufio.Writer (persistConn.bw, 4 KiB by default) and
 * flushes it once the request is written. Right after Request.write's call
 * of the request's own Header.writeSubset (the request line, Host,
 * User-Agent, framing fields and the request's fields are in the buffer; the
 * blank line that ends the block is not), the line
 * "Traceparent: 00-<trace id>-<client span id>-<flags>\r\n" is appended at
 * buf[n] and n is advanced by its length — only when
 *   - the request was marked by the net/http client probe (it has a span)
 *     and is still in flight,
 *   - its process is not excluded from injection (--no-inject-exe) and its
 *     destination is not (the socket-level injection's rules:
 *     --inject-allow, --inject-deny; see wu_dest_allowed),
 *   - it is written through the connection's bufio.Writer and the buffer
 *     was not flushed meanwhile (the request line, "METHOD ", is still where
 *     Request.write began and n did not shrink), so that buf[n0..n) is
 *     exactly its header block so far,
 *   - no line of it is a traceparent field (case-insensitive name),
 *   - GT_WU_LINE_LEN bytes fit in the buffer's spare capacity.
 * Otherwise nothing is written and the reason is counted (gt_wu_results).
 * Over TLS the buffer holds plaintext (tls.Conn is below bufio): this path
 * injects into HTTPS requests too, which a socket-level program cannot.
 *
 * Probed (each program quotes its function): persistConn.roundTrip entry
 * (the site the client probe also uses: one trap for both), Request.write
 * entry, and the instruction after Request.write's call of
 * Header.writeSubset: two traps per request, none for a server's
 * responses (which go through writeSubset too). */
#include "../go/net/http/client/client.bpf.c"
/* for its host-rule matching (host_rules) and maps; its programs are not loaded */
#include "../inject/inject.bpf.c"
#include "write_user.h"

struct wu_req_key {
	__u32 tgid;
	__u32 reserved;
	__u64 req; /* *http.Request */
};

/* A request marked for injection, from its caller's goroutine
 * (persistConn.roundTrip) to the connection's writer goroutine
 * (Request.write). */
struct wu_req {
	struct gt_span_context span;
	__u64 caller; /* the goroutine in roundTrip (its client probe record) */
	__u32 allowed;
	__u32 reserved;
};

enum wu_pending_state {
	WU_WRITING = 1, /* in Request.write, before its fields are written */
};

/* The writer goroutine's request being written. */
struct wu_pending {
	struct gt_span_context span;
	__u64 bw;    /* the *bufio.Writer */
	__s64 n0;    /* bw.n when Request.write began: where its request line starts */
	__u64 line0; /* the request line's first bytes: "METHOD " (up to 8) */
	__u64 mask0; /* which bytes of line0 are compared */
	__u32 state; /* enum wu_pending_state */
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_write_user_config);
} gt_wu_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_WU_PENDING_MAX);
	__type(key, struct wu_req_key);
	__type(value, struct wu_req);
} gt_wu_reqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GT_WU_PENDING_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct wu_pending);
} gt_wu_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GT_WU_RESULT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} gt_wu_results SEC(".maps");

/* The header block searched for a traceparent (per CPU: too big for the stack). */
struct wu_scratch {
	char bytes[GT_WU_SCAN_MAX];
	char line[GT_WU_LINE_LEN + 2];
	struct gt_inject_pending hp; /* a request's host, as host_rules takes it */
	struct wu_req req;
	struct gt_conn_key conn;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wu_scratch);
} gt_wu_scratch SEC(".maps");

#ifdef GT_WU_DRY_RUN
/* The dry run's last line per process, for tests. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, char[GT_WU_LINE_LEN]);
} gt_wu_last_line SEC(".maps");
#endif

static __always_inline void wu_count(__u32 result)
{
	__u64 *v = bpf_map_lookup_elem(&gt_wu_results, &result);
	if (v)
		*v += 1;
}

/* The socket-level injection's destination rules (probes/inject/): deny
 * CIDRs (peer address `ip`, 16 bytes IPv4-mapped; 0 when unknown, which is
 * denied while deny CIDRs exist, so that a header never leaks for want of an
 * address), host rules (URL.Host in `hp`, matched by host_rules), and the
 * allow list. */
static __always_inline bool wu_dest_allowed(__u32 flags, const __u8 *ip, const struct gt_inject_pending *hp)
{
	struct gt_inject_cidr_key ck = { .prefixlen = 128 };
	if (ip)
		__builtin_memcpy(ck.addr, ip, 16);
	if (ip ? bpf_map_lookup_elem(&gt_inject_deny_cidrs, &ck) != 0 : (flags & GT_INJECT_DENY_CIDRS) != 0)
		return false;
	__u32 hosts = (flags & GT_INJECT_HOST_RULES) ? host_rules(hp) : 0;
	if (hosts & (GT_INJECT_HOST_DENY | GT_INJECT_HOST_DENY_SUBDOMAINS))
		return false;
	if ((flags & GT_INJECT_ALLOW_LIST) &&
	    !(hosts & (GT_INJECT_HOST_ALLOW | GT_INJECT_HOST_ALLOW_SUBDOMAINS)) &&
	    !(ip && bpf_map_lookup_elem(&gt_inject_allow_cidrs, &ck)))
		return false;
	return true;
}

static __always_inline char wu_hexdigit(__u8 v)
{
	return v < 10 ? '0' + v : 'a' + v - 10;
}

/* "Traceparent: 00-<trace id>-<span id>-<flags>\r\n" for a request whose
 * client span is `c`: the receiver's span becomes the client span's child. */
static __always_inline void wu_format(char *out, const struct gt_span_context *c)
{
	__builtin_memcpy(out, "Traceparent: 00-", 16);
#pragma unroll
	for (int i = 0; i < 16; i++) {
		out[16 + 2 * i] = wu_hexdigit(c->trace_id[i] >> 4);
		out[17 + 2 * i] = wu_hexdigit(c->trace_id[i] & 0xf);
	}
	out[48] = '-';
#pragma unroll
	for (int i = 0; i < 8; i++) {
		out[49 + 2 * i] = wu_hexdigit(c->span_id[i] >> 4);
		out[50 + 2 * i] = wu_hexdigit(c->span_id[i] & 0xf);
	}
	out[65] = '-';
	out[66] = '0';
	out[67] = (c->flags & GT_SPAN_SAMPLED) ? '1' : '0';
	out[68] = '\r';
	out[69] = '\n';
}

struct wu_scan_ctx {
	const char *s;
	__u32 len;
	__u32 found;
};

/* One position of the scan: a line that starts here and is named
 * traceparent (any case), followed by ':'. Bytes are OR-ed with 0x20, which
 * lower-cases letters and leaves ':' alone (a byte that only matches this
 * way is not valid in a field name; the cost of such a match is a header
 * not injected). */
static long wu_scan_step(__u32 i, void *data)
{
	struct wu_scan_ctx *c = data;
	const __u32 m = GT_WU_SCAN_MAX - 1;
	if (i + 12 > c->len)
		return 1;
	if (i > 0 && c->s[(i - 1) & m] != '\n')
		return 0;
	__u64 w = 0;
	__u32 v = 0;
#pragma unroll
	for (int j = 0; j < 8; j++)
		w |= (__u64)(__u8)c->s[(i + j) & m] << (8 * j);
#pragma unroll
	for (int j = 0; j < 4; j++)
		v |= (__u32)(__u8)c->s[(i + 8 + j) & m] << (8 * j);
	/* "tracepar" and "ent:", little-endian */
	if ((w | 0x2020202020202020ULL) == 0x7261706563617274ULL && (v | 0x20202020U) == 0x3a746e65U) {
		c->found = 1;
		return 1;
	}
	return 0;
}

/* func (pc *persistConn) roundTrip(req *transportRequest) (*Response, error)
 *   pc RAX, req RBX. On the caller's goroutine, after the client probe's
 *   entry made the request's span and before the request is handed to the
 *   connection's writer goroutine: the request and its destination meet. */
SEC("uprobe.multi")
int gt_wu_conn(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_write_user_config *cfg = gt_probe_enter(ctx, &gt_wu_config, &key, &bin_id, GT_HIT_WU_CONN);
	if (!cfg || !(cfg->flags & GT_WU_ENABLED))
		return 0;
	struct http_client_inflight *st = bpf_map_lookup_elem(&gt_http_client_inflight, &key);
	__u32 zero = 0;
	/* the record, the connection and the host are built in per-CPU scratch:
	 * host_rules needs most of the stack */
	struct wu_scratch *s = bpf_map_lookup_elem(&gt_wu_scratch, &zero);
	if (!st || !s)
		return 0;
	struct wu_req_key k = { .tgid = key.tgid };
	if (go_read_ptr(GO_ARG2(ctx), cfg->treq_request, &k.req) < 0 || !k.req)
		return 0;
	s->req.span = st->span;
	s->req.caller = key.goid;
	/* the destination rules of the socket-level injection, with the
	 * connection's peer address (over TLS too) and the URL's host */
	__u64 conn = 0, tls = 0, url = 0;
	struct go_string host = {};
	__u32 flags = gt_inject_flags();
	struct gt_process_info *proc = bpf_map_lookup_elem(&gt_processes, &key.tgid);
	bool known = go_read_ptr(GO_ARG1(ctx), cfg->pconn_conn + 8, &conn) == 0 &&
		     go_read_ptr(GO_ARG1(ctx), cfg->pconn_tls, &tls) == 0 &&
		     gt_conn_key_of(gt_tcp_conn_under(conn, tls != 0, cfg->tls_conn_conn), &cfg->tcp, true,
				    &s->conn) == 0;
	__builtin_memset(&s->hp, 0, sizeof(s->hp));
	if ((flags & GT_INJECT_HOST_RULES) && go_read_ptr(k.req, cfg->req_url, &url) == 0 && url &&
	    bpf_probe_read_user(&host, sizeof(host), (void *)(url + cfg->url_host)) == 0 && host.len > 0) {
		if (host.len > GT_INJECT_HOST_MAX)
			s->hp.flags |= GT_INJECT_PENDING_HOST_LONG;
		__u32 n = host.len > GT_INJECT_HOST_MAX ? GT_INJECT_HOST_MAX : (__u32)host.len;
		if (bpf_probe_read_user(s->hp.host, n & (2 * GT_INJECT_HOST_MAX - 1), (void *)host.ptr) < 0)
			s->hp.flags |= GT_INJECT_PENDING_HOST_UNREAD;
	}
	s->req.allowed = !(proc && (proc->flags & GT_PROCESS_NO_INJECT)) &&
			 wu_dest_allowed(flags, known ? s->conn.server_ip : 0, &s->hp);
	bpf_map_update_elem(&gt_wu_reqs, &k, &s->req, BPF_ANY);
	return 0;
}

/* func (r *Request) write(w io.Writer, usingProxy bool, extraHeaders Header,
 *                         waitForContinue func() bool) (err error)
 *   r RAX, w RBX (itab), RCX (data). On the connection's writer goroutine
 *   (persistConn.writeLoop), w is the connection's *bufio.Writer. */
SEC("uprobe.multi")
int gt_wu_request_write(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_write_user_config *cfg = gt_probe_enter(ctx, &gt_wu_config, &key, &bin_id,
							  GT_HIT_WU_REQUEST_WRITE);
	if (!cfg || !(cfg->flags & GT_WU_ENABLED))
		return 0;
	struct wu_req_key k = { .tgid = key.tgid, .req = GO_ARG1(ctx) };
	struct wu_req *r = bpf_map_lookup_elem(&gt_wu_reqs, &k);
	if (!r)
		return 0;
	struct wu_req req = *r;
	/* a request is written once per attempt; a retry comes through
	 * persistConn.roundTrip again */
	bpf_map_delete_elem(&gt_wu_reqs, &k);
	/* still in flight: a record left by a request that failed before it
	 * was written must not lend its span to a later request that Go
	 * allocated at the same address */
	struct gt_goroutine_key caller = { .tgid = key.tgid, .goid = req.caller };
	struct http_client_inflight *st = bpf_map_lookup_elem(&gt_http_client_inflight, &caller);
	if (!st || *(__u64 *)st->span.span_id != *(__u64 *)req.span.span_id)
		return 0;
	if (!req.allowed) {
		wu_count(GT_WU_EXCLUDED);
		return 0;
	}
	struct wu_pending p = { .span = req.span, .bw = GO_ARG3(ctx), .state = WU_WRITING };
	struct go_slice buf = {};
	struct go_string method = {};
	if (bpf_probe_read_user(&buf, sizeof(buf), (void *)(p.bw + cfg->bufio_buf)) < 0 ||
	    bpf_probe_read_user(&p.n0, sizeof(p.n0), (void *)(p.bw + cfg->bufio_n)) < 0 || !buf.ptr ||
	    buf.len != buf.cap || p.n0 < 0 || p.n0 > buf.len ||
	    bpf_probe_read_user(&method, sizeof(method), (void *)(k.req + cfg->req_method)) < 0) {
		/* Request.write wraps a writer that is not an io.ByteWriter */
		wu_count(GT_WU_NOT_BUFFERED);
		return 0;
	}
	/* the request line starts with the method and a space ("GET" when
	 * empty), compared as one little-endian word of up to 8 bytes */
	__u64 w = 0x20544547; /* "GET " */
	__u32 mlen = 4;
	if (method.len > 0) {
		__u32 m = method.len > 8 ? 8 : (__u32)method.len;
		w = 0;
		if (bpf_probe_read_user(&w, m & 15, (void *)method.ptr) < 0)
			return 0;
		if (m < 8)
			w |= (__u64)' ' << (8 * m);
		mlen = m < 8 ? m + 1 : 8;
	}
	p.mask0 = mlen >= 8 ? ~0ULL : (1ULL << (8 * mlen)) - 1;
	p.line0 = w & p.mask0;
	bpf_map_update_elem(&gt_wu_pending, &key, &p, BPF_ANY);
	return 0;
}

/* The checks and the write for a request whose fields were just written;
 * returns an enum gt_write_user_result, or -1 when nothing is to be counted. */
static __always_inline int wu_inject(const struct gt_write_user_config *cfg, const struct wu_pending *p,
				     struct wu_scratch *s, __u32 tgid)
{
	struct go_slice buf = {};
	__s64 n = 0;
	__u64 head = 0;
	if (bpf_probe_read_user(&buf, sizeof(buf), (void *)(p->bw + cfg->bufio_buf)) < 0 ||
	    bpf_probe_read_user(&n, sizeof(n), (void *)(p->bw + cfg->bufio_n)) < 0 ||
	    bpf_probe_read_user(&head, sizeof(head), (void *)(buf.ptr + p->n0)) < 0)
		return -1;
	if (n < p->n0 + 8 || n > buf.len || (head & p->mask0) != p->line0)
		return GT_WU_FLUSHED;
	__s64 fields = n - p->n0;
	if (fields > GT_WU_SCAN_MAX)
		return GT_WU_TOO_LONG;
	struct wu_scan_ctx sc = { .s = s->bytes, .len = (__u32)fields };
	if (fields > 0) {
		if (bpf_probe_read_user(s->bytes, (__u32)fields & (GT_WU_SCAN_MAX - 1 | GT_WU_SCAN_MAX),
					(void *)(buf.ptr + p->n0)) < 0)
			return -1;
		bpf_loop(GT_WU_SCAN_MAX, wu_scan_step, &sc, 0);
	}
	if (sc.found)
		return GT_WU_HAS_TRACEPARENT;
	if (buf.len - n < GT_WU_LINE_LEN)
		return GT_WU_NO_ROOM;
	wu_format(s->line, &p->span);
#ifdef GT_WU_DRY_RUN
	bpf_map_update_elem(&gt_wu_last_line, &tgid, s->line, BPF_ANY);
	return GT_WU_WOULD_INJECT;
#else
	/* the line, then n: n never covers bytes not yet written (the writer
	 * goroutine owns the buffer; this is for a reader of a core dump) */
	__s64 n1 = n + GT_WU_LINE_LEN;
	if (bpf_probe_write_user((void *)(buf.ptr + n), s->line, GT_WU_LINE_LEN) < 0 ||
	    bpf_probe_write_user((void *)(p->bw + cfg->bufio_n), &n1, sizeof(n1)) < 0)
		return GT_WU_WRITE_FAILED;
	return GT_WU_INJECTED;
#endif
}

/* Request.write, right after its call of r.Header.writeSubset(w, ...)
 * (the call's error in RAX, RBX): the request's fields are in the buffer,
 * the blank line that ends the block is not. */
SEC("uprobe.multi")
int gt_wu_fields_written(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_write_user_config *cfg = gt_probe_enter(ctx, &gt_wu_config, &key, &bin_id,
							  GT_HIT_WU_FIELDS_WRITTEN);
	if (!cfg)
		return 0;
	struct wu_pending *p = bpf_map_lookup_elem(&gt_wu_pending, &key);
	if (!p || p->state != WU_WRITING)
		return 0;
	__u32 zero = 0;
	struct wu_scratch *s = bpf_map_lookup_elem(&gt_wu_scratch, &zero);
	/* a failed writeSubset fails the request: nothing to add to */
	int result = s && !GO_ARG1(ctx) ? wu_inject(cfg, p, s, key.tgid) : -1;
	bpf_map_delete_elem(&gt_wu_pending, &key);
	if (result >= 0)
		wu_count(result);
	return 0;
}
