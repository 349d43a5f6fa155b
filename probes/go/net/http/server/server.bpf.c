/* net/http server: one event per request served by net/http.
 *
 * Probed: func (sh serverHandler) ServeHTTP(rw ResponseWriter, req *Request)
 *   sh  (struct{srv *Server})  RAX
 *   rw  (interface: itab, data) RBX, RCX  -- data is *http.response for HTTP/1.x
 *   req (*Request)             RDI
 * Entry: the first instruction after the stack-growth check (the check can
 * jump back to the entry and fire it twice). End (gt_http_server_return),
 * on the request's goroutine once its handler has returned, at a CALL the
 * kernel emulates (one trap; a probed RET is single-stepped out of line, a
 * second trap): HTTP/1, (*conn).serve's CALL of c.hijacked(), right after
 * ServeHTTP and the request context's cancel; HTTP/2, the stream's deferred
 * function's CALL of rw.handlerDone() (after a handler that returned; its
 * CALL of recover(), after one that panicked, runs gt_http_server_panic).
 * Where a binary lacks one of those calls, a plain uprobe on every RET of
 * ServeHTTP (uretprobes break Go's stack unwinding). Both read nothing from
 * registers: the request's record, keyed by goroutine, has what they need. */
#include "go_abi.h"
#include "self.h"
#include "http_route.h"

enum gt_http_limits {
	GT_HTTP_METHOD_MAX = 16,
	GT_HTTP_PATH_MAX = 128,
	GT_HTTP_HOST_MAX = 64,
	GT_HTTP_REMOTE_MAX = 64,
	GT_HTTP_TRACEPARENT_MAX = 128, /* bytes of a traceparent value read */
	GT_HTTP_OWS_MAX = 16,          /* leading whitespace skipped in a value */
	GT_HTTP_TRACESTATE_MAX = 512,  /* bytes of tracestate carried (W3C: propagate at least 512) */
	/* buckets or groups of the request's header map read per request: a
	 * request with more distinct header names (about 1,600) is not searched
	 * to the end, and its span says so */
	GT_HTTP_HEADER_UNITS_MAX = 256,
};

/* Struct-field offsets for one binary, filled by user space from DWARF or
 * the offsets database. Indexed by the binary id from the attach cookie. */
struct gt_http_server_config {
	__u32 req_method;      /* net/http.Request.Method */
	__u32 req_url;         /* net/http.Request.URL */
	__u32 req_host;        /* net/http.Request.Host */
	__u32 req_remote_addr; /* net/http.Request.RemoteAddr */
	__u32 url_path;        /* net/url.URL.Path */
	__u32 resp_status;     /* net/http.response.status */
	__u32 resp_conn;       /* net/http.response.conn */
	__u32 req_header;      /* net/http.Request.Header (a map[string][]string) */
	/* the header map: runtime.hmap before Go 1.24, internal/runtime/maps.Map after */
	__u32 map_count;       /* hmap.count / Map.used */
	__u32 map_flags;       /* hmap.flags */
	__u32 map_b;           /* hmap.B */
	__u32 map_buckets;     /* hmap.buckets / Map.dirPtr */
	__u32 map_oldbuckets;  /* hmap.oldbuckets */
	__u32 map_dir_len;     /* Map.dirLen */
	__u32 table_groups;    /* maps.table.groups + maps.groupsReference.data */
	__u32 table_mask;      /* maps.table.groups + maps.groupsReference.lengthMask */
	__u32 req_tls;         /* net/http.Request.TLS */
	__u32 req_proto_major; /* net/http.Request.ProtoMajor */
	__u32 req_proto_minor; /* net/http.Request.ProtoMinor */
	__u32 conn_hijacked;   /* net/http.conn.hijackedv */
	__u32 conn_rwc;        /* net/http.conn.rwc */
	__u32 conn_server;     /* net/http.conn.server */
	__u32 h2_rws;          /* HTTP/2 responseWriter.rws (bundled before Go 1.27, internal/http2 after) */
	__u32 h2_status;       /* HTTP/2 responseWriterState.status */
	__u32 flags;           /* enum gt_http_server_flags */
	struct gt_tcp_offsets tcp;
	/* an HTTP/2 request's stream and connection, from its responseWriterState */
	__u32 h2_rws_stream; /* responseWriterState.stream */
	__u32 h2_stream_id;  /* stream.id */
	__u32 h2_rws_conn;   /* responseWriterState.conn (the serverConn) */
	__u32 h2_sc_conn;    /* serverConn.conn (net.Conn) */
	__u32 h2_sc_tls;     /* serverConn.tlsState (nil: conn is the bare TCP connection) */
	__u32 tls_conn_conn; /* crypto/tls.Conn.conn */
	/* the ServeMux pattern that matched: Request.Pattern (Go 1.23+), or
	 * Request.pat and pattern.str (Go 1.22) */
	__u32 req_pattern;
	__u32 req_pat;
	__u32 pattern_str;
	/* Written by the probe, not user space (0 until then): the itab of
	 * the ResponseWriter interface (RBX at the entry) of a request that
	 * passed the HTTP/1 check, i.e. that of *http.response. A request with
	 * the same itab is HTTP/1 without the check's two reads of user memory;
	 * another (HTTP/2's writer, or *response in another process of a
	 * position-independent binary) takes the check, which learns it anew. */
	__u64 http1_itab;
};

enum gt_http_server_flags {
	GT_HTTP_SERVER_ENABLED = 1,
	/* the request's header map can be read: Go before 1.24 (runtime.hmap)... */
	GT_HTTP_SERVER_HEADER_HMAP = 2,
	/* connection offsets known: look for a traced client on this node */
	GT_HTTP_SERVER_LINK = 4,
	/* conn.server known: tell HTTP/1 responses from HTTP/2 ones */
	GT_HTTP_SERVER_CHECK_HTTP1 = 8,
	/* HTTP/2 writer offsets known: read an HTTP/2 response's status */
	GT_HTTP_SERVER_H2_STATUS = 16,
	/* ...or Go 1.24 and later (swiss tables, internal/runtime/maps.Map) */
	GT_HTTP_SERVER_HEADER_SWISS = 32,
	GT_HTTP_SERVER_TLS = 64,     /* Request.TLS known */
	GT_HTTP_SERVER_PROTO = 128,  /* Request.ProtoMajor/ProtoMinor known */
	GT_HTTP_SERVER_HIJACK = 256, /* conn.hijackedv known (with conn.server) */
	/* HTTP/2 stream and connection offsets known: look for a traced
	 * client on this node of an HTTP/2 request */
	GT_HTTP_SERVER_H2_LINK = 512,
	GT_HTTP_SERVER_PATTERN = 1024, /* Request.Pattern known (Go 1.23+) */
	GT_HTTP_SERVER_PAT = 2048,     /* Request.pat and pattern.str known (Go 1.22) */
};

enum gt_http_event_flags {
	GT_HTTP_EVENT_TRACEPARENT = 1,
	GT_HTTP_EVENT_HEAD_UNREADABLE = 2,
	/* the parent is the client span of a traced process on this node */
	GT_HTTP_EVENT_LINKED = 4,
	/* the handler panicked: ServeHTTP never returned */
	GT_HTTP_EVENT_PANIC = 8,
	/* the ResponseWriter is not net/http's HTTP/1 *response (HTTP/2):
	 * its status, connection and read buffer are not where the offsets say */
	GT_HTTP_EVENT_NOT_HTTP1 = 16,
	/* the HTTP/2 writer's status was read (0: the handler wrote nothing) */
	GT_HTTP_EVENT_H2_STATUS = 32,
	/* the header map had more buckets than are searched, and no
	 * traceparent was found in those that were */
	GT_HTTP_EVENT_HEADERS_UNSEARCHED = 64,
	/* the traceparent header was present but is not used (malformed,
	 * or sent more than once) */
	GT_HTTP_EVENT_TRACEPARENT_INVALID = 128,
	/* the request came over TLS (Request.TLS set) */
	GT_HTTP_EVENT_TLS = 256,
	/* the handler hijacked the HTTP/1 connection: what it answered there
	 * went around the ResponseWriter */
	GT_HTTP_EVENT_HIJACKED = 512,
	/* the request knew whether it came over TLS */
	GT_HTTP_EVENT_TLS_KNOWN = 1024,
};

struct gt_http_server_event {
	struct gt_event_header hdr;
	__u64 start_ns; /* CLOCK_MONOTONIC */
	__u64 end_ns;
	__s32 method_len; /* full Go string lengths: may exceed the copy */
	__s32 path_len;
	__s32 host_len;
	__s32 remote_len;
	__u32 status; /* 0: the handler wrote nothing (net/http sends 200) */
	__u32 flags;  /* enum gt_http_event_flags */
	struct gt_span_context span;
	char method[GT_HTTP_METHOD_MAX];
	char path[GT_HTTP_PATH_MAX];
	char host[GT_HTTP_HOST_MAX];
	char remote[GT_HTTP_REMOTE_MAX];
	__s32 tracestate_len; /* the first tracestate header's full length (0: none) */
	__u16 proto_major;    /* Request.ProtoMajor/ProtoMinor; 0.0: unknown */
	__u16 proto_minor;
	char tracestate[GT_HTTP_TRACESTATE_MAX];
	struct gt_http_route route; /* the matched route template (source NONE: none) */
};

/* This probe's ids in the object-wide families (see enum gt_event_type). */
enum gt_event_type_http_server {
	GT_EVENT_HTTP_SERVER = 1,
};

enum gt_hit_site_http_server {
	GT_HIT_HTTP_SERVER_ENTRY = 1,
	GT_HIT_HTTP_SERVER_RETURN = 2,
	GT_HIT_HTTP_SERVER_PANIC = 3,
};

enum gt_paired_function_http_server {
	GT_PAIRED_HTTP_SERVER = 1,
};

GT_EXPORT_LAYOUTS(http_server,
	enum gt_event_type_http_server event_type;
	enum gt_hit_site_http_server hit_site;
	enum gt_paired_function_http_server paired_function;
	struct gt_http_server_event event;
	struct gt_http_server_config config;
	enum gt_http_limits limits;
	enum gt_http_server_flags config_flags;
	enum gt_http_event_flags event_flags;
);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_http_server_config);
} gt_http_server_config SEC(".maps");

/* What a goroutine's first request inserts (gt_http_server_inflight, in
 * http_route.h): the entry then fills the record in place, as for every
 * later request on that goroutine. Never written. */
static const struct gt_http_server_inflight gt_http_inflight_blank;

/* The layouts of a map[string][]string (net/http.Header): fixed by the Go
 * compiler's map implementation, not by a struct declared in Go source, so
 * they are constants here; the map header's own fields come from the offsets.
 * Before Go 1.24 (runtime.hmap): buckets of tophash[8], keys[8], elems[8],
 * overflow pointer. From Go 1.24 (swiss tables, internal/runtime/maps): groups
 * of a control word and 8 interleaved {key, elem} slots. */
enum gt_gomap_layout {
	GT_GOMAP_BUCKET_KEYS = 8,
	GT_GOMAP_BUCKET_ELEMS = 8 + 8 * 16,
	GT_GOMAP_BUCKET_OVERFLOW = 8 + 8 * 16 + 8 * 24,
	GT_GOMAP_BUCKET_SIZE = 8 + 8 * 16 + 8 * 24 + 8,
	GT_GOMAP_MIN_TOPHASH = 5,    /* lower tophash values: empty or evacuated */
	GT_GOMAP_SAME_SIZE_GROW = 8, /* hmap.flags: growing to the same size */
	GT_GOMAP_SLOT_SIZE = 16 + 24,
	GT_GOMAP_GROUP_SIZE = 8 + 8 * (16 + 24),
	GT_GOMAP_SCRATCH = 8 + 8 * 16 + 8 * 24 + 8, /* the larger of a bucket and a group */
};

enum header_found {
	HEADER_TRACEPARENT = 1,
	HEADER_TRACESTATE = 2,
};

/* A walk over every live entry of the request's header map: one slot per
 * bpf_loop iteration, plus one to read each bucket (hmap) or group (swiss)
 * and one per table of a swiss directory. Small callbacks keep the
 * verifier's work linear. */
struct header_search {
	__u64 arr;        /* bucket array, or the current table's groups */
	__u64 cur;        /* hmap: the next bucket of an overflow chain */
	__u64 old_arr;    /* hmap: the buckets being evacuated while the map grows */
	__u64 dir;        /* swiss: the directory of tables */
	__u64 prev_table; /* swiss: a table spans consecutive directory entries */
	__u32 idx;        /* next bucket or group of arr */
	__u32 n;          /* buckets or groups in arr */
	__u32 old_n;
	__u32 dir_idx;
	__u32 dir_len;
	__u32 swiss;
	__u32 slot;                  /* next slot of the unit in scratch; 8: read the next unit */
	__u32 found;                 /* enum header_found */
	__s64 left;                  /* live entries not seen yet */
	struct go_slice traceparent; /* the header's []string value */
	struct go_slice tracestate;
	__u32 done; /* the walk saw every entry */
	__u32 reserved;
};

/* The walk's state lives in map memory, not on the stack: the verifier
 * checks a bpf_loop callback until the caller's state converges, and exact
 * values on the stack (slot 0, 1, 2, ...) would never converge. */
struct http_map_scratch {
	__u8 unit[GT_GOMAP_SCRATCH];
	struct header_search s;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_map_scratch);
} http_map_scratch SEC(".maps");

struct header_walk {
	struct http_map_scratch *scr;
	struct gt_http_server_config *cfg;
};

/* "Traceparent" and "Tracestate" (canonical header keys), little-endian */
#define KEY_TRACEPAR 0x7261706563617254ULL /* "Tracepar" */
#define KEY_ENT      0x00746e65U           /* "ent" */
#define KEY_TRACESTA 0x6174736563617254ULL /* "Tracesta" */
#define KEY_TE       0x00006574U           /* "te" */

/* Reads the next bucket or group into scratch; false when the walk ends. */
static __always_inline bool next_unit(struct header_search *s, struct http_map_scratch *scr,
				      struct gt_http_server_config *cfg)
{
	__u64 unit;
	if (s->swiss) {
		if (s->idx >= s->n) {
			/* the next table of the directory */
			__u64 t = 0, data = 0, mask = 0;
			if (s->dir_idx >= s->dir_len) {
				s->done = 1;
				return false;
			}
			if (bpf_probe_read_user(&t, sizeof(t), (void *)(s->dir + (__u64)s->dir_idx * 8)) < 0)
				return false;
			s->dir_idx++;
			if (!t || t == s->prev_table)
				return true;
			s->prev_table = t;
			if (bpf_probe_read_user(&data, sizeof(data), (void *)(t + cfg->table_groups)) < 0 ||
			    bpf_probe_read_user(&mask, sizeof(mask), (void *)(t + cfg->table_mask)) < 0)
				return false;
			s->arr = data;
			s->n = mask < (1 << 20) ? (__u32)mask + 1 : (1 << 20);
			s->idx = 0;
			return true;
		}
		unit = s->arr + (__u64)s->idx * GT_GOMAP_GROUP_SIZE;
		s->idx++;
		if (bpf_probe_read_user(scr->unit, GT_GOMAP_GROUP_SIZE, (void *)unit) < 0)
			return false;
		s->slot = 0;
		return true;
	}
	if (!s->cur) {
		if (s->idx >= s->n) {
			if (!s->old_arr) {
				s->done = 1;
				return false;
			}
			s->arr = s->old_arr;
			s->n = s->old_n;
			s->idx = 0;
			s->old_arr = 0;
			return true;
		}
		s->cur = s->arr + (__u64)s->idx * GT_GOMAP_BUCKET_SIZE;
		s->idx++;
	}
	if (bpf_probe_read_user(scr->unit, GT_GOMAP_BUCKET_SIZE, (void *)s->cur) < 0)
		return false;
	__builtin_memcpy(&s->cur, scr->unit + GT_GOMAP_BUCKET_OVERFLOW, 8);
	s->slot = 0;
	return true;
}

static long search_headers(__u32 i, struct header_walk *w)
{
	struct http_map_scratch *scr = w->scr;
	struct gt_http_server_config *cfg = w->cfg;
	if (!scr || !cfg)
		return 1;
	struct header_search *s = &scr->s;
	if (s->slot >= 8)
		return next_unit(s, scr, cfg) ? 0 : 1;
	__u32 b = s->slot & 7;
	s->slot++;
	__u8 c = scr->unit[b];
	if (s->swiss ? (c & 0x80) : c < GT_GOMAP_MIN_TOPHASH)
		return 0;
	s->left--;
	__u32 koff = s->swiss ? 8 + b * GT_GOMAP_SLOT_SIZE : GT_GOMAP_BUCKET_KEYS + b * 16;
	__u32 eoff = s->swiss ? 8 + b * GT_GOMAP_SLOT_SIZE + 16 : GT_GOMAP_BUCKET_ELEMS + b * 24;
	koff &= 511;
	eoff &= 511;
	if (koff > GT_GOMAP_SCRATCH - 16 || eoff > GT_GOMAP_SCRATCH - 24)
		return 1;
	struct go_string key;
	__builtin_memcpy(&key, scr->unit + koff, sizeof(key));
	if (key.len == 11 || key.len == 10) {
		struct {
			__u64 head;
			__u32 tail;
			__u32 pad;
		} k = {};
		if (bpf_probe_read_user(&k, key.len == 11 ? 11 : 10, (void *)key.ptr) == 0) {
			if (key.len == 11 && k.head == KEY_TRACEPAR && k.tail == KEY_ENT) {
				__builtin_memcpy(&s->traceparent, scr->unit + eoff, sizeof(s->traceparent));
				s->found |= HEADER_TRACEPARENT;
			} else if (key.len == 10 && k.head == KEY_TRACESTA && k.tail == KEY_TE) {
				__builtin_memcpy(&s->tracestate, scr->unit + eoff, sizeof(s->tracestate));
				s->found |= HEADER_TRACESTATE;
			}
		}
	}
	if (s->left <= 0) {
		s->done = 1;
		return 1;
	}
	return 0;
}

/* Optional whitespace around a value, found by bpf_loop callbacks: an
 * unrolled loop would give the verifier one path per whitespace count. */
struct ows_trim {
	struct http_map_scratch *scr;
	__u32 start; /* first byte of the value */
	__u32 end;   /* one past its last byte */
};

static __always_inline bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static long skip_leading_ows(__u32 i, struct ows_trim *t)
{
	if (!t->scr || t->start >= t->end || !is_ows(t->scr->unit[t->start & (GT_HTTP_TRACEPARENT_MAX - 1)]))
		return 1;
	t->start++;
	return 0;
}

static long drop_trailing_ows(__u32 i, struct ows_trim *t)
{
	if (!t->scr || t->end <= t->start ||
	    !is_ows(t->scr->unit[(t->end - 1) & (GT_HTTP_TRACEPARENT_MAX - 1)]))
		return 1;
	t->end--;
	return 0;
}

/* Parses the Go string v as a traceparent value, trimming the optional
 * whitespace (spaces and tabs) the spec allows around it. */
static __always_inline bool parse_traceparent_value(struct http_map_scratch *scr, struct go_string v,
						    struct gt_span_context *span)
{
	__u32 n = v.len < GT_HTTP_TRACEPARENT_MAX ? (__u32)v.len : GT_HTTP_TRACEPARENT_MAX;
	asm volatile("" : "+r"(n));
	if (n < 55 || n > GT_HTTP_TRACEPARENT_MAX)
		return false;
	if (bpf_probe_read_user(scr->unit, n, (void *)v.ptr) < 0)
		return false;
	struct ows_trim t = { .scr = scr, .start = 0, .end = n };
	bpf_loop(GT_HTTP_OWS_MAX, skip_leading_ows, &t, 0);
	/* trailing whitespace is only visible when the whole value was read;
	 * a longer value is valid only for a future version, which needs no
	 * end */
	__s64 len;
	if (v.len <= GT_HTTP_TRACEPARENT_MAX) {
		bpf_loop(GT_HTTP_OWS_MAX, drop_trailing_ows, &t, 0);
		len = (__s64)t.end - (__s64)t.start;
	} else {
		len = v.len - (__s64)t.start;
	}
	__u32 start = t.start;
	if (start >= GT_HTTP_OWS_MAX)
		return false;
	start &= GT_HTTP_OWS_MAX - 1;
	return gt_parse_traceparent((const char *)scr->unit + start, len, span);
}

/* The header map's own fields the walk needs (runtime.hmap's count, flags,
 * B, buckets and oldbuckets; maps.Map's used, dirPtr and dirLen) lie in its
 * first 40 bytes (both are 48 bytes long): one read of that window replaces
 * a read per field; a field outside it is read on its own. */
#define GT_HTTP_MAP_WINDOW 40

static __always_inline int map_u64(const __u8 *w, __u64 m, __u32 off, __u64 *out)
{
	*out = 0;
	if (w && off <= GT_HTTP_MAP_WINDOW - 8) {
		__builtin_memcpy(out, w + off, 8);
		return 0;
	}
	return bpf_probe_read_user(out, sizeof(*out), (void *)(m + off));
}

static __always_inline int map_u8(const __u8 *w, __u64 m, __u32 off, __u8 *out)
{
	*out = 0;
	if (w && off <= GT_HTTP_MAP_WINDOW - 1) {
		*out = w[off];
		return 0;
	}
	return bpf_probe_read_user(out, 1, (void *)(m + off));
}

/* Finds the incoming traceparent (and tracestate) in the header map of the
 * request being served. The map is the request's own: on a connection whose
 * read buffer still holds earlier pipelined requests, or a head larger than
 * that buffer (4 KB, reused while the head is parsed), only the parsed
 * header says what this request carried. */
static __always_inline void read_traceparent(struct gt_http_server_config *cfg, __u64 req,
					     struct gt_http_server_call *st)
{
	__u64 m = 0;
	__u32 zero = 0;
	if (go_read_ptr(req, cfg->req_header, &m) < 0) {
		st->flags |= GT_HTTP_EVENT_HEAD_UNREADABLE;
		return;
	}
	if (!m)
		return;
	struct header_walk w = { .cfg = cfg, .scr = bpf_map_lookup_elem(&http_map_scratch, &zero) };
	if (!w.scr)
		return;
	struct header_search *sp = &w.scr->s;
	__builtin_memset(sp, 0, sizeof(*sp));
	struct header_search s = {};
	s.slot = 8;
	__u64 arr = 0, old = 0, left = 0;
	/* the window goes where the walk puts its first unit, read later */
	_Static_assert(GT_GOMAP_SCRATCH >= GT_HTTP_MAP_WINDOW, "the window fits in scratch");
	const __u8 *mw = bpf_probe_read_user(w.scr->unit, GT_HTTP_MAP_WINDOW, (void *)m) == 0 ? w.scr->unit
											      : 0;
	if (map_u64(mw, m, cfg->map_count, &left) < 0 || map_u64(mw, m, cfg->map_buckets, &arr) < 0) {
		st->flags |= GT_HTTP_EVENT_HEAD_UNREADABLE;
		return;
	}
	s.left = (__s64)left;
	if (s.left <= 0 || !arr)
		return;
	if (cfg->flags & GT_HTTP_SERVER_HEADER_SWISS) {
		__s64 dir_len = 0;
		if (map_u64(mw, m, cfg->map_dir_len, (__u64 *)&dir_len) < 0)
			return;
		s.swiss = 1;
		if (dir_len == 0) {
			/* a small map: dirPtr is its only group */
			s.arr = arr;
			s.n = 1;
		} else {
			s.dir = arr;
			s.dir_len = dir_len > 0 && dir_len < (1 << 20) ? (__u32)dir_len : 0;
		}
	} else {
		__u8 b = 0, mflags = 0;
		if (map_u8(mw, m, cfg->map_b, &b) < 0 || map_u8(mw, m, cfg->map_flags, &mflags) < 0 ||
		    map_u64(mw, m, cfg->map_oldbuckets, &old) < 0)
			return;
		if (b > 20)
			return;
		s.arr = arr;
		s.n = 1u << b;
		s.old_arr = old;
		s.old_n = (mflags & GT_GOMAP_SAME_SIZE_GROW) || b == 0 ? s.n : s.n >> 1;
	}
	*sp = s;
	bpf_loop(GT_HTTP_HEADER_UNITS_MAX * 9, search_headers, &w, 0);
	s = *sp;
	if (!(s.found & HEADER_TRACEPARENT)) {
		if (!s.done)
			st->flags |= GT_HTTP_EVENT_HEADERS_UNSEARCHED;
		return;
	}
	/* the spec: a traceparent sent more than once is not used */
	struct go_string v = {};
	if (s.traceparent.len != 1 || bpf_probe_read_user(&v, sizeof(v), (void *)s.traceparent.ptr) < 0 ||
	    !v.ptr || v.len < 55 || !parse_traceparent_value(w.scr, v, &st->span)) {
		st->flags |= GT_HTTP_EVENT_TRACEPARENT_INVALID;
		gt_count(GT_COUNTER_TRACEPARENT_INVALID);
		return;
	}
	st->flags |= GT_HTTP_EVENT_TRACEPARENT;
	if ((s.found & HEADER_TRACESTATE) && s.tracestate.len > 0) {
		st->tracestate = s.tracestate.ptr;
		st->tracestate_n = s.tracestate.len;
	}
}

/* The *http.conn of an HTTP/1 response: `*conn` when already read (the
 * HTTP/1 check reads it), else read from resp and kept in *conn. */
static __always_inline __u64 response_conn(struct gt_http_server_config *cfg, __u64 resp, __u64 *conn)
{
	if (!*conn && go_read_ptr(resp, cfg->resp_conn, conn) < 0)
		*conn = 0;
	return *conn;
}

/* The ends of the request's connection, as its client sees them; `conn`:
 * the response's *http.conn (0: not read yet). */
static __always_inline int conn_key_of(struct gt_http_server_config *cfg, __u64 resp, __u64 *conn,
				       struct gt_conn_key *k)
{
	__u64 tcpconn = 0;
	/* conn.rwc is a net.Conn: {itab, data}; data is the *net.TCPConn */
	if (go_read_ptr(response_conn(cfg, resp, conn), cfg->conn_rwc + 8, &tcpconn) < 0)
		return -1;
	return gt_conn_key_of(tcpconn, &cfg->tcp, false, k);
}

/* The ends of an HTTP/2 request's connection, as its client sees them, and
 * its stream id: `resp` is the *responseWriter of the HTTP/2 server. */
static __always_inline int h2_conn_key_of(struct gt_http_server_config *cfg, __u64 resp,
					  struct gt_conn_key *k)
{
	__u64 rws = 0, stream = 0, sc = 0, conn = 0, tls = 0;
	__u32 id = 0;
	if (go_read_ptr(resp, cfg->h2_rws, &rws) < 0 || go_read_ptr(rws, cfg->h2_rws_stream, &stream) < 0 ||
	    !stream || bpf_probe_read_user(&id, sizeof(id), (void *)(stream + cfg->h2_stream_id)) < 0 ||
	    !id || go_read_ptr(rws, cfg->h2_rws_conn, &sc) < 0 ||
	    go_read_ptr(sc, cfg->h2_sc_conn + 8, &conn) < 0 || go_read_ptr(sc, cfg->h2_sc_tls, &tls) < 0)
		return -1;
	if (gt_conn_key_of(gt_tcp_conn_under(conn, tls != 0, cfg->tls_conn_conn), &cfg->tcp, false, k) < 0)
		return -1;
	k->stream_id = id;
	return 0;
}

/* A client on this node may have published its span for this connection
 * (probes/go/net/http/client): then that span is the parent. */
static __always_inline void link_local_client(const struct gt_conn_key *k, struct gt_http_server_call *st)
{
	struct gt_span_context *client = bpf_map_lookup_elem(&gt_conn_spans, k);
	if (!client)
		return;
	gt_new_child(&st->span, client);
	st->span.flags |= GT_SPAN_PARENT_REMOTE;
	st->flags |= GT_HTTP_EVENT_LINKED;
}

SEC("uprobe.multi")
int gt_http_server_entry(struct pt_regs *ctx)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_server_config *cfg = gt_probe_enter(ctx, &gt_http_server_config, &key, &bin_id,
							   GT_HIT_HTTP_SERVER_ENTRY);
	if (!cfg)
		return 0;
	if (!(cfg->flags & GT_HTTP_SERVER_ENABLED)) {
		gt_debug_hit(ctx, GT_HIT_HTTP_SERVER_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return 0;
	}
	struct gt_http_server_call st = {};
	st.start_ns = bpf_ktime_get_ns();
	st.resp = GO_ARG3(ctx);
	st.req = GO_ARG4(ctx);
	/* HTTP/2 requests reach serverHandler.ServeHTTP too, with another
	 * ResponseWriter: an HTTP/1 *response's conn names the server that the
	 * serverHandler (RAX) carries, an HTTP/2 writer's memory does not. */
	if (cfg->flags & GT_HTTP_SERVER_CHECK_HTTP1) {
		__u64 itab = GO_ARG2(ctx), srv = 0;
		if (!itab || itab != cfg->http1_itab) {
			if (go_read_ptr(st.resp, cfg->resp_conn, &st.conn) < 0 ||
			    go_read_ptr(st.conn, cfg->conn_server, &srv) < 0 || srv != GO_ARG1(ctx)) {
				st.flags |= GT_HTTP_EVENT_NOT_HTTP1;
				st.conn = 0;
			} else if (itab) {
				cfg->http1_itab = itab;
			}
		}
	}
	/* A traced client on this node is the most exact parent (it is the very
	 * span that sent this request); else an incoming traceparent; else a
	 * new trace. */
	bool http1 = !(st.flags & GT_HTTP_EVENT_NOT_HTTP1);
	/* The connection's ends tell both whether gotrail itself sent the
	 * request and which local client did; they are walked for once, and
	 * only while either map has entries. */
	bool self_conns = gt_self_any_conn(), published = gt_conn_any_published();
	struct gt_conn_key conn = {};
	if (http1 && (cfg->flags & GT_HTTP_SERVER_LINK) && (self_conns || published) &&
	    conn_key_of(cfg, st.resp, &st.conn, &conn) == 0) {
		if (self_conns && gt_conn_is_own(&conn)) {
			gt_self_skip_mark(&key);
			return 0;
		}
		if (published)
			link_local_client(&conn, &st);
	} else if (!http1 && (cfg->flags & GT_HTTP_SERVER_H2_LINK) && published &&
		   h2_conn_key_of(cfg, st.resp, &conn) == 0) {
		link_local_client(&conn, &st);
	}
	if (!(st.flags & GT_HTTP_EVENT_LINKED) &&
	    (cfg->flags & (GT_HTTP_SERVER_HEADER_HMAP | GT_HTTP_SERVER_HEADER_SWISS)))
		read_traceparent(cfg, st.req, &st);
	if (!(st.flags & (GT_HTTP_EVENT_TRACEPARENT | GT_HTTP_EVENT_LINKED)))
		gt_new_root(&st.span);
	/* The goroutine's record, left idle by its previous request (the
	 * usual case: a connection's next request), or else inserted blank.
	 * Only a goroutine that inserts a record is marked as entered: one
	 * that finds its record has entered already (its mark was set with
	 * that insert). A record still active is a request whose return was
	 * missed: it is overwritten, as before. */
	struct gt_http_server_inflight *rec = bpf_map_lookup_elem(&gt_http_server_inflight, &key);
	if (!rec) {
		gt_mark_entered(&key, GT_PAIRED_HTTP_SERVER);
		bpf_map_update_elem(&gt_http_server_inflight, &key, &gt_http_inflight_blank, BPF_NOEXIST);
		rec = bpf_map_lookup_elem(&gt_http_server_inflight, &key);
	}
	if (!rec) {
		gt_count_inflight_full(&key, GT_PAIRED_HTTP_SERVER);
		gt_debug_hit(ctx, GT_HIT_HTTP_SERVER_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		rec->call = st;
		rec->route.len = 0;
		rec->route.source = GT_HTTP_ROUTE_NONE;
		rec->state = GT_HTTP_INFLIGHT_ACTIVE;
		gt_debug_hit(ctx, GT_HIT_HTTP_SERVER_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
	/* in place when the goroutine's previous request left its entry ended */
	struct gt_span_context *cur = bpf_map_lookup_elem(&gt_goroutine_spans, &key);
	if (cur)
		*cur = st.span;
	else
		bpf_map_update_elem(&gt_goroutine_spans, &key, &st.span, BPF_ANY);
	return 0;
}

/* The *http.Request fields a span needs (Method, URL, ProtoMajor/Minor,
 * Host, RemoteAddr, TLS, Pattern or pat) all lie in its first 256 bytes in
 * every Go version gotrail knows (the last, pat, ends at 256 in Go 1.22; a
 * Request is a 256-byte size class or more, so the window stays within the
 * object). One read of that window replaces a read per field; a field
 * outside it, or a window that could not be read, is read on its own. */
#define GT_HTTP_REQ_WINDOW 256

/* net/http.response's conn and status lie in its first 136 bytes (conn at
 * 0, status at 120, 128 from Go 1.27; a response is far larger): the
 * return reads both at once where it needs both. */
#define GT_HTTP_RESP_WINDOW 136

struct req_window {
	__u64 req;
	const __u8 *b; /* the window, or 0: read each field from req */
};

/* `buf` is record memory that is written only after the window's last use
 * (not a per-CPU scratch buffer, which a program preempted on another
 * kernel could share). */
static __always_inline void req_window_read(struct req_window *w, __u64 req, char buf[GT_HTTP_REQ_WINDOW])
{
	w->req = req;
	w->b = 0;
	if (req && bpf_probe_read_user(buf, GT_HTTP_REQ_WINDOW, (void *)req) == 0)
		w->b = (const __u8 *)buf;
}

static __always_inline int req_u64(const struct req_window *w, __u32 off, __u64 *out)
{
	if (w->b && off <= GT_HTTP_REQ_WINDOW - 8) {
		__builtin_memcpy(out, w->b + off, 8);
		return 0;
	}
	return go_read_ptr(w->req, off, out);
}

/* As go_read_string, with the string's header taken from the window. */
static __always_inline __s64 req_string(const struct req_window *w, __u32 off, char *dst, __u32 cap)
{
	struct go_string s = {};
	if (w->b && off <= GT_HTTP_REQ_WINDOW - 16) {
		__builtin_memcpy(&s, w->b + off, sizeof(s));
	} else if (!w->req || bpf_probe_read_user(&s, sizeof(s), (void *)(w->req + off)) < 0) {
		return -1;
	}
	return go_copy_string(s, dst, cap);
}

/* The route the request matched: a router's (probes of routers write it
 * into the goroutine's record while the handler runs), else the ServeMux
 * pattern set on the request net/http handed to the handler. A router
 * inside a ServeMux is the more precise: it matched the rest of the path. */
static __always_inline void read_route(struct gt_http_server_config *cfg, const struct req_window *req,
				       const struct gt_http_route *routed, struct gt_http_route *out)
{
	if (routed->source != GT_HTTP_ROUTE_NONE) {
		__builtin_memcpy(out, routed, sizeof(*out));
		return;
	}
	out->len = 0;
	out->source = GT_HTTP_ROUTE_NONE;
	__s64 n = 0;
	if (cfg->flags & GT_HTTP_SERVER_PATTERN) {
		n = req_string(req, cfg->req_pattern, out->route, GT_HTTP_ROUTE_MAX);
	} else if (cfg->flags & GT_HTTP_SERVER_PAT) {
		__u64 pat = 0;
		if (req_u64(req, cfg->req_pat, &pat) == 0 && pat)
			n = go_read_string(pat, cfg->pattern_str, out->route, GT_HTTP_ROUTE_MAX);
	}
	if (n > 0) {
		out->len = n > 0x7fffffff ? 0x7fffffff : (__s32)n;
		out->source = GT_HTTP_ROUTE_SERVEMUX;
	}
}

/* Ends the request of the goroutine's record (active): one event; the
 * record is left idle for the connection's next request, or deleted when
 * `drop` (the goroutine ends with the request). */
static __always_inline void finish_request(struct gt_http_server_config *cfg, struct gt_goroutine_key *key,
					   __u32 bin_id, struct gt_http_server_inflight *rec,
					   __u32 extra_flags, bool drop)
{
	struct gt_http_server_call *st = &rec->call;
	/* an unsampled incoming parent is honoured: no span (its children on
	 * this goroutine inherit the flag) */
	bool sampled = st->span.flags & GT_SPAN_SAMPLED;
	struct gt_http_server_event *ev = sampled ? bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0) : 0;
	if (!ev) {
		sampled ? gt_count(GT_COUNTER_RINGBUF_FULL) : gt_count_not_sampled(&st->span);
		goto done;
	}
	gt_fill_header(&ev->hdr, GT_EVENT_HTTP_SERVER, sizeof(*ev), key->tgid, bin_id, key->goid);
	ev->start_ns = st->start_ns;
	ev->end_ns = bpf_ktime_get_ns();
	ev->flags = st->flags | extra_flags;
	ev->span = st->span;

	__u64 url = 0, status = 0;
	/* the window lives in ev->tracestate until the route is read: the
	 * tracestate is copied last */
	_Static_assert(GT_HTTP_TRACESTATE_MAX >= GT_HTTP_REQ_WINDOW, "the window fits in tracestate");
	struct req_window req;
	req_window_read(&req, st->req, ev->tracestate);
	ev->method_len = req_string(&req, cfg->req_method, ev->method, GT_HTTP_METHOD_MAX);
	ev->host_len = req_string(&req, cfg->req_host, ev->host, GT_HTTP_HOST_MAX);
	ev->remote_len = req_string(&req, cfg->req_remote_addr, ev->remote, GT_HTTP_REMOTE_MAX);
	req_u64(&req, cfg->req_url, &url);
	ev->path_len = go_read_string(url, cfg->url_path, ev->path, GT_HTTP_PATH_MAX);
	if (st->resp && !(st->flags & GT_HTTP_EVENT_NOT_HTTP1)) {
		/* the hijack check below wants resp.conn too, unless the entry
		 * read it: both in one read of the response's first bytes */
		_Static_assert(GT_HTTP_TRACESTATE_MAX >= GT_HTTP_REQ_WINDOW + GT_HTTP_RESP_WINDOW,
			       "both windows fit in tracestate");
		char *rw = ev->tracestate + GT_HTTP_REQ_WINDOW;
		__u32 soff = cfg->resp_status, coff = cfg->resp_conn;
		if ((cfg->flags & GT_HTTP_SERVER_HIJACK) && !st->conn && soff <= GT_HTTP_RESP_WINDOW - 8 &&
		    coff <= GT_HTTP_RESP_WINDOW - 8 &&
		    bpf_probe_read_user(rw, GT_HTTP_RESP_WINDOW, (void *)st->resp) == 0) {
			__builtin_memcpy(&status, rw + soff, 8);
			__builtin_memcpy(&st->conn, rw + coff, 8);
		} else {
			bpf_probe_read_user(&status, sizeof(status), (void *)(st->resp + cfg->resp_status));
		}
	} else if (st->resp && (cfg->flags & GT_HTTP_SERVER_H2_STATUS)) {
		__u64 rws = 0;
		if (go_read_ptr(st->resp, cfg->h2_rws, &rws) == 0 && rws &&
		    bpf_probe_read_user(&status, sizeof(status), (void *)(rws + cfg->h2_status)) == 0)
			ev->flags |= GT_HTTP_EVENT_H2_STATUS;
	}
	ev->status = status < 1000 ? (__u32)status : 0;
	/* tracestate: the first header line only (dropping the members of
	 * later lines is a truncation the spec allows), up to 512 bytes */
	ev->tracestate_len = 0;
	ev->proto_major = 0;
	ev->proto_minor = 0;
	if (cfg->flags & GT_HTTP_SERVER_PROTO) {
		__s64 major = 0, minor = 0;
		if (req_u64(&req, cfg->req_proto_major, (__u64 *)&major) == 0 &&
		    req_u64(&req, cfg->req_proto_minor, (__u64 *)&minor) == 0 && major >= 0 && major < 10 &&
		    minor >= 0 && minor < 10) {
			ev->proto_major = (__u16)major;
			ev->proto_minor = (__u16)minor;
		}
	}
	if (cfg->flags & GT_HTTP_SERVER_TLS) {
		__u64 tls = 0;
		if (req_u64(&req, cfg->req_tls, &tls) == 0)
			ev->flags |= GT_HTTP_EVENT_TLS_KNOWN | (tls ? GT_HTTP_EVENT_TLS : 0);
	}
	if ((cfg->flags & GT_HTTP_SERVER_HIJACK) && st->resp && !(st->flags & GT_HTTP_EVENT_NOT_HTTP1)) {
		__u64 conn = response_conn(cfg, st->resp, &st->conn);
		__u8 hijacked = 0;
		if (conn && bpf_probe_read_user(&hijacked, 1, (void *)(conn + cfg->conn_hijacked)) == 0 &&
		    hijacked)
			ev->flags |= GT_HTTP_EVENT_HIJACKED;
	}
	read_route(cfg, &req, &rec->route, &ev->route);
	if (st->tracestate_n > 0) {
		__s64 n = go_read_string(st->tracestate, 0, ev->tracestate, GT_HTTP_TRACESTATE_MAX);
		ev->tracestate_len = n > 0x7fffffff ? 0x7fffffff : (__s32)n;
	}
	if (ev->method_len < 0 || ev->path_len < 0)
		gt_count(GT_COUNTER_READ_FAILED);
	gt_submit(ev);
done:
	if (drop) {
		bpf_map_delete_elem(&gt_http_server_inflight, key);
		bpf_map_delete_elem(&gt_goroutine_spans, key);
		return;
	}
	rec->state = GT_HTTP_INFLIGHT_IDLE;
	/* the goroutine's span entry is kept too, ended, for its next request */
	struct gt_span_context *cur = bpf_map_lookup_elem(&gt_goroutine_spans, key);
	if (cur)
		cur->flags |= GT_SPAN_ENDED;
}

/* Ends this goroutine's request, if one is in flight; `expected` says
 * whether a missing one is worth counting; `ending`: the goroutine ends
 * here, and its record (active or idle) goes with it. */
static __always_inline int end_inflight(struct pt_regs *ctx, __u32 extra_flags, bool expected, bool ending,
					__u32 site)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_http_server_config *cfg = gt_probe_enter(ctx, &gt_http_server_config, &key, &bin_id, site);
	if (!cfg)
		return 0;
	struct gt_http_server_inflight *rec = bpf_map_lookup_elem(&gt_http_server_inflight, &key);
	bool active = rec && rec->state == GT_HTTP_INFLIGHT_ACTIVE;
	gt_debug_hit(ctx, site, active ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id, key.goid);
	if (active) {
		/* an HTTP/2 request's goroutine ends with it; so may one that is
		 * not known to be HTTP/1 */
		bool drop = ending || (rec->call.flags & GT_HTTP_EVENT_NOT_HTTP1) ||
			    !(cfg->flags & GT_HTTP_SERVER_CHECK_HTTP1);
		finish_request(cfg, &key, bin_id, rec, extra_flags, drop);
		return 0;
	}
	if (rec && ending) {
		bpf_map_delete_elem(&gt_http_server_inflight, &key);
		bpf_map_delete_elem(&gt_goroutine_spans, &key);
	}
	if (expected && !gt_self_skip_take(&key))
		gt_count_no_entry(&key, GT_PAIRED_HTTP_SERVER);
	return 0;
}

SEC("uprobe.multi")
int gt_http_server_return(struct pt_regs *ctx)
{
	return end_inflight(ctx, 0, true, false, GT_HIT_HTTP_SERVER_RETURN);
}

/* The deferred recover of func (c *conn) serve(ctx context.Context), i.e.
 * net/http.(*conn).serve.func1: it runs on the connection's goroutine when
 * the connection ends, and after a handler panicked. A request still in
 * flight here never returned from ServeHTTP: its handler panicked (or
 * aborted with http.ErrAbortHandler), and without this its span would be
 * lost. One hit per connection, not per request: the goroutine's record,
 * idle or not, is deleted here. For HTTP/2 it is attached to the CALL of
 * recover() in the server's deferred function, (*serverConn).runHandler.func1,
 * made on the stream's goroutine only after its handler panicked (which
 * resets the stream only, the connection serving on); where that call is
 * not found, to the function's entry, one hit per HTTP/2 request, where a
 * record still active is a handler that panicked (one that returned was
 * ended at ServeHTTP's RET). */
SEC("uprobe.multi")
int gt_http_server_panic(struct pt_regs *ctx)
{
	return end_inflight(ctx, GT_HTTP_EVENT_PANIC, false, true, GT_HIT_HTTP_SERVER_PANIC);
}
