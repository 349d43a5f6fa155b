/* Layouts of the bpf_probe_write_user header injection
 * (probes/write-user/write_user.bpf.c), the fallback for kernels that allow the helper. The
 * programs live in an object of their own, loaded after the probes' object
 * and sharing its maps: a kernel in lockdown refuses that object and
 * nothing else. The layouts are declared here, in the probes' object too,
 * so that they are generated for TypeScript with every other layout. */
#pragma once

#include "go_abi.h"

enum gt_write_user_limits {
	/* "Traceparent: 00-<32 hex>-<16 hex>-<2 hex>\r\n" */
	GT_WU_LINE_LEN = 70,
	/* header block bytes of one request (request line included) searched
	 * for a traceparent of its own; a longer block is not injected into */
	GT_WU_SCAN_MAX = 2048,
	GT_WU_PENDING_MAX = 16384,
};

/* Per-binary offsets (array indexed by the attach cookie's binary id). */
struct gt_write_user_config {
	__u32 flags;         /* enum gt_write_user_flags */
	__u32 treq_request;  /* net/http.transportRequest.Request (the embedded *Request) */
	__u32 req_method;    /* net/http.Request.Method */
	__u32 req_url;       /* net/http.Request.URL */
	__u32 url_host;      /* net/url.URL.Host */
	__u32 pconn_conn;    /* net/http.persistConn.conn (net.Conn) */
	__u32 pconn_tls;     /* net/http.persistConn.tlsState (nil: conn is the TCP connection) */
	__u32 tls_conn_conn; /* crypto/tls.Conn.conn */
	__u32 bufio_buf;     /* bufio.Writer.buf ([]byte) */
	__u32 bufio_n;       /* bufio.Writer.n (int) */
	struct gt_tcp_offsets tcp;
};

enum gt_write_user_flags {
	GT_WU_ENABLED = 1,
};

/* What happened to one request the net/http client probe marked; one
 * counter each (gt_wu_results), exported as
 * gotrail_propagation_write_user_total{outcome}. */
enum gt_write_user_result {
	GT_WU_INJECTED = 0,
	/* the dry-run build (no helper call): everything checked, nothing written */
	GT_WU_WOULD_INJECT = 1,
	GT_WU_HAS_TRACEPARENT = 2, /* the request carries its own traceparent */
	GT_WU_NO_ROOM = 3,         /* the buffer has fewer than GT_WU_LINE_LEN spare bytes */
	/* the destination rules exclude it (--inject-allow, --inject-deny), or
	 * its process (--no-inject-exe) */
	GT_WU_EXCLUDED = 4,
	/* the buffer was flushed while the headers were written: what it holds
	 * is not this request's header block, which cannot be checked */
	GT_WU_FLUSHED = 5,
	GT_WU_TOO_LONG = 6,     /* header block longer than GT_WU_SCAN_MAX */
	GT_WU_NOT_BUFFERED = 7, /* not written through the connection's bufio.Writer */
	GT_WU_WRITE_FAILED = 8, /* bpf_probe_write_user failed (page not writable/present) */
	GT_WU_RESULT_MAX = 16,
};

enum gt_hit_site_write_user {
	GT_HIT_WU_CONN = 75,
	GT_HIT_WU_REQUEST_WRITE = 76,
	GT_HIT_WU_FIELDS_WRITTEN = 77,
};

GT_EXPORT_LAYOUTS(write_user,
	enum gt_write_user_limits limits;
	struct gt_write_user_config config;
	enum gt_write_user_flags config_flags;
	enum gt_write_user_result result;
	enum gt_hit_site_write_user hit_site;
);
