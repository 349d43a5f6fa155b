/* database/sql: one event per query or exec a program runs through the
 * standard interface, whatever the driver under it, from the call (before
 * the pool hands out a connection, so a call that cannot connect has its
 * span too) to its return.
 *
 * Probed:
 *   func (db *DB) query(ctx context.Context, query string, args []any,
 *                       strategy connReuseStrategy) (*Rows, error)
 *   func (db *DB) exec(ctx context.Context, query string, args []any,
 *                      strategy connReuseStrategy) (Result, error)
 *     entry: db RAX; ctx RBX, RCX; query RDI (pointer), RSI (length)
 *     (DB.QueryContext, QueryRowContext and ExecContext end here, once per
 *     attempt: a connection the driver calls bad is retried)
 *   func (c *Conn) QueryContext(ctx context.Context, query string, args ...any) (*Rows, error)
 *   func (c *Conn) ExecContext(ctx context.Context, query string, args ...any) (Result, error)
 *   func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*Rows, error)
 *   func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (Result, error)
 *     entry: c or tx RAX (its db read through an offset); ctx RBX, RCX; query RDI, RSI
 *     (the QueryRow variants end here too)
 *   func (s *Stmt) QueryContext(ctx context.Context, args ...any) (*Rows, error)
 *   func (s *Stmt) ExecContext(ctx context.Context, args ...any) (Result, error)
 *     entry: s RAX (its db and query read through offsets)
 *   RET of the query functions: *Rows RAX; error (itab, data) RBX, RCX
 *   RET of the exec functions: Result (itab, data) RAX, RBX; error RCX, RDI
 *
 * The driver is told by the code behind DB.connector (and, for a connector
 * sql.Open made, dsnConnector.driver): the first method of each one's itab,
 * whose package user space finds in the binary's function table. The
 * error's type is told the same way (the itab's Error method). Nothing of
 * the query's arguments is read; the query text is sent to user space,
 * which derives names from it and exports it only sanitised and opt-in.
 *
 * The DB and its connector's addresses travel with the event, and with
 * them the offsets of the DSN string in the two connector types that hold
 * one (sql.Open's dsnConnector, pgx stdlib's driverConnector): user space
 * reads the DSN itself, once per DB, for db.namespace and server.address /
 * server.port, so a query costs no extra read here.
 *
 * The span is the child of the span the calling goroutine is serving. */
#include "go_abi.h"

enum gt_sql_limits {
	GT_SQL_QUERY_MAX = 512,
	GT_SQL_INFLIGHT_MAX = 16384,
	/* runtime.itab (internal/abi.ITab): inter, _type, hash, pad, then fun[0];
	 * the same layout in every Go version the project supports */
	GT_SQL_ITAB_FUN0 = 24,
};

struct gt_sql_config {
	__u32 db_connector; /* database/sql.DB.connector (driver.Connector) */
	__u32 stmt_db;      /* database/sql.Stmt.db (*DB) */
	__u32 stmt_query;   /* database/sql.Stmt.query (string) */
	__u32 dsn_driver;   /* database/sql.dsnConnector.driver (driver.Driver) */
	__u32 flags;        /* enum gt_sql_flags */
	__u32 conn_db;      /* database/sql.Conn.db (*DB) */
	__u32 tx_db;        /* database/sql.Tx.db (*DB) */
	/* DSN strings, passed on to user space (-1: unknown) */
	__s32 sql_dsn; /* database/sql.dsnConnector.dsn (string) */
	__s32 pgx_dsn; /* github.com/jackc/pgx/v5/stdlib.driverConnector.name (string) */
};

enum gt_sql_flags {
	GT_SQL_ENABLED = 1,
	GT_SQL_STMT = 2,       /* the Stmt offsets are known: Stmt calls are traced */
	GT_SQL_DRIVER = 4,     /* DB.connector is known */
	GT_SQL_DSN_DRIVER = 8, /* dsnConnector.driver is known */
	GT_SQL_CONN_DB = 16,   /* Conn.db is known (else Conn calls name no driver) */
	GT_SQL_TX_DB = 32,     /* Tx.db is known (else Tx calls name no driver) */
};

enum gt_sql_event_flags {
	GT_SQL_EVENT_ERROR = 1, /* the call returned an error */
	GT_SQL_EVENT_EXEC = 2,  /* an exec (no rows), else a query */
	GT_SQL_EVENT_STMT = 4,  /* through a prepared statement */
	GT_SQL_EVENT_CONN = 8,  /* through a Conn: the receiver is a *Conn */
	GT_SQL_EVENT_TX = 16,   /* through a Tx: the receiver is a *Tx */
};

struct gt_sql_event {
	struct gt_event_header hdr;
	__u64 start_ns;
	__u64 end_ns;
	struct gt_span_context span;
	/* code addresses in the process (0: unknown): the first method of the
	 * connector's, the dsnConnector's driver's and the error's itab */
	__u64 connector_fn;
	__u64 driver_fn;
	__u64 error_fn;
	/* the *sql.DB of the call and its connector's data pointer (0: unknown),
	 * with the binary's DSN offsets (gt_sql_config.sql_dsn, pgx_dsn) */
	__u64 db;
	__u64 connector;
	__s32 sql_dsn;
	__s32 pgx_dsn;
	__s32 query_len;
	__u32 flags; /* enum gt_sql_event_flags */
	char query[GT_SQL_QUERY_MAX];
};

/* This probe's ids in the object-wide families (see enum gt_event_type). */
enum gt_event_type_sql {
	GT_EVENT_SQL = 12,
};

enum gt_hit_site_sql {
	GT_HIT_SQL_ENTRY = 30,
	GT_HIT_SQL_RETURN = 31,
};

enum gt_paired_function_sql {
	GT_PAIRED_SQL = 12,
};

GT_EXPORT_LAYOUTS(sql,
	enum gt_event_type_sql event_type;
	enum gt_hit_site_sql hit_site;
	enum gt_paired_function_sql paired_function;
	struct gt_sql_event event;
	struct gt_sql_config config;
	enum gt_sql_limits limits;
	enum gt_sql_flags config_flags;
	enum gt_sql_event_flags event_flags;
);

struct sql_inflight {
	struct gt_sql_event ev;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GT_MAX_BINARIES);
	__type(key, __u32);
	__type(value, struct gt_sql_config);
} gt_sql_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GT_SQL_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct sql_inflight);
} gt_sql_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sql_inflight);
} sql_scratch SEC(".maps");

/* The first method of the itab `itab` (0 when unreadable). */
static __always_inline __u64 itab_fun0(__u64 itab)
{
	__u64 fn = 0;
	if (itab)
		go_read_ptr(itab, GT_SQL_ITAB_FUN0, &fn);
	return fn;
}

static __always_inline void sql_enter(struct pt_regs *ctx, __u64 db, __u64 qptr, __s64 qlen, __u32 flags)
{
	struct gt_goroutine_key key;
	__u32 bin_id, zero = 0;
	struct gt_sql_config *cfg = gt_probe_enter(ctx, &gt_sql_config, &key, &bin_id, GT_HIT_SQL_ENTRY);
	if (!cfg)
		return;
	if (!(cfg->flags & GT_SQL_ENABLED) || ((flags & GT_SQL_EVENT_STMT) && !(cfg->flags & GT_SQL_STMT))) {
		gt_debug_hit(ctx, GT_HIT_SQL_ENTRY, GT_HIT_DISABLED, key.tgid, bin_id, key.goid);
		return;
	}
	struct sql_inflight *st = bpf_map_lookup_elem(&sql_scratch, &zero);
	if (!st)
		return;
	struct gt_sql_event *ev = &st->ev;
	__builtin_memset(ev, 0, sizeof(*ev));
	gt_fill_header(&ev->hdr, GT_EVENT_SQL, sizeof(*ev), key.tgid, bin_id, key.goid);
	ev->start_ns = bpf_ktime_get_ns();
	ev->flags = flags;
	struct gt_span_context *parent = gt_goroutine_span(&key);
	if (parent)
		gt_new_child(&ev->span, parent);
	else
		gt_new_root(&ev->span);
	if (flags & GT_SQL_EVENT_CONN) {
		__u64 c = db;
		db = 0;
		if (cfg->flags & GT_SQL_CONN_DB)
			go_read_ptr(c, cfg->conn_db, &db);
	} else if (flags & GT_SQL_EVENT_TX) {
		__u64 tx = db;
		db = 0;
		if (cfg->flags & GT_SQL_TX_DB)
			go_read_ptr(tx, cfg->tx_db, &db);
	} else if (flags & GT_SQL_EVENT_STMT) {
		__u64 s = db;
		struct go_string q = {};
		long err;
		db = 0;
		if (cfg->stmt_query == cfg->stmt_db + 8) {
			/* Stmt.db and Stmt.query side by side (every Go version so
			 * far): both in one read */
			struct {
				__u64 db;
				struct go_string q;
			} w = {};
			err = bpf_probe_read_user(&w, sizeof(w), (void *)(s + cfg->stmt_db));
			if (err == 0) {
				db = w.db;
				q = w.q;
			}
		} else {
			go_read_ptr(s, cfg->stmt_db, &db);
			err = bpf_probe_read_user(&q, sizeof(q), (void *)(s + cfg->stmt_query));
		}
		if (err == 0) {
			qptr = q.ptr;
			qlen = q.len;
		} else {
			gt_count(GT_COUNTER_READ_FAILED);
			qptr = 0;
			qlen = -1;
		}
	}
	ev->query_len = qlen > 0x7fffffff ? 0x7fffffff : (__s32)qlen;
	if (qptr && qlen > 0) {
		__u32 n = qlen < GT_SQL_QUERY_MAX ? (__u32)qlen : GT_SQL_QUERY_MAX;
		if (bpf_probe_read_user(ev->query, n & (2 * GT_SQL_QUERY_MAX - 1), (void *)qptr) < 0) {
			gt_count(GT_COUNTER_READ_FAILED);
			ev->query_len = -1;
		}
	}
	if (db && (cfg->flags & GT_SQL_DRIVER)) {
		/* the connector interface's itab and data words in one read */
		struct {
			__u64 itab;
			__u64 data;
		} conn = {};
		if (bpf_probe_read_user(&conn, sizeof(conn), (void *)(db + cfg->db_connector)) == 0) {
			__u64 itab, data = conn.data;
			ev->connector_fn = itab_fun0(conn.itab);
			ev->db = db;
			ev->connector = data;
			ev->sql_dsn = cfg->sql_dsn;
			ev->pgx_dsn = cfg->pgx_dsn;
			/* read as if the connector were sql.Open's dsnConnector: user
			 * space uses it only when connector_fn says it is */
			if (data && (cfg->flags & GT_SQL_DSN_DRIVER) &&
			    go_read_ptr(data, cfg->dsn_driver, &itab) == 0)
				ev->driver_fn = itab_fun0(itab);
		}
	}
	gt_mark_entered(&key, GT_PAIRED_SQL);
	if (bpf_map_update_elem(&gt_sql_inflight, &key, st, BPF_ANY) < 0) {
		gt_count_inflight_full(&key, GT_PAIRED_SQL);
		gt_debug_hit(ctx, GT_HIT_SQL_ENTRY, GT_HIT_STORE_FAILED, key.tgid, bin_id, key.goid);
	} else {
		gt_debug_hit(ctx, GT_HIT_SQL_ENTRY, GT_HIT_STORED, key.tgid, bin_id, key.goid);
	}
}

static __always_inline void sql_return(struct pt_regs *ctx, __u64 err_itab)
{
	struct gt_goroutine_key key;
	__u32 bin_id;
	struct gt_sql_config *cfg = gt_probe_enter(ctx, &gt_sql_config, &key, &bin_id, GT_HIT_SQL_RETURN);
	if (!cfg)
		return;
	struct sql_inflight *st = bpf_map_lookup_elem(&gt_sql_inflight, &key);
	gt_debug_hit(ctx, GT_HIT_SQL_RETURN, st ? GT_HIT_FOUND : GT_HIT_NOT_FOUND, key.tgid, bin_id,
		     key.goid);
	if (!st) {
		gt_count_no_entry(&key, GT_PAIRED_SQL);
		return;
	}
	if (err_itab) {
		st->ev.flags |= GT_SQL_EVENT_ERROR;
		st->ev.error_fn = itab_fun0(err_itab);
	}
	bool sampled = st->ev.span.flags & GT_SPAN_SAMPLED;
	struct gt_sql_event *ev = sampled ? bpf_ringbuf_reserve(&gt_events, sizeof(*ev), 0) : 0;
	if (ev) {
		__builtin_memcpy(ev, &st->ev, sizeof(*ev));
		ev->hdr.cpu = bpf_get_smp_processor_id();
		ev->end_ns = bpf_ktime_get_ns();
		gt_submit(ev);
	} else {
		sampled ? gt_count(GT_COUNTER_RINGBUF_FULL) : gt_count_not_sampled(&st->ev.span);
	}
	bpf_map_delete_elem(&gt_sql_inflight, &key);
}

SEC("uprobe.multi")
int gt_sql_query_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), GO_ARG4(ctx), (__s64)GO_ARG5(ctx), 0);
	return 0;
}

SEC("uprobe.multi")
int gt_sql_exec_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), GO_ARG4(ctx), (__s64)GO_ARG5(ctx), GT_SQL_EVENT_EXEC);
	return 0;
}

SEC("uprobe.multi")
int gt_sql_conn_query_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), GO_ARG4(ctx), (__s64)GO_ARG5(ctx), GT_SQL_EVENT_CONN);
	return 0;
}

SEC("uprobe.multi")
int gt_sql_conn_exec_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), GO_ARG4(ctx), (__s64)GO_ARG5(ctx),
		  GT_SQL_EVENT_CONN | GT_SQL_EVENT_EXEC);
	return 0;
}

SEC("uprobe.multi")
int gt_sql_tx_query_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), GO_ARG4(ctx), (__s64)GO_ARG5(ctx), GT_SQL_EVENT_TX);
	return 0;
}

SEC("uprobe.multi")
int gt_sql_tx_exec_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), GO_ARG4(ctx), (__s64)GO_ARG5(ctx), GT_SQL_EVENT_TX | GT_SQL_EVENT_EXEC);
	return 0;
}

SEC("uprobe.multi")
int gt_sql_stmt_query_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), 0, 0, GT_SQL_EVENT_STMT);
	return 0;
}

SEC("uprobe.multi")
int gt_sql_stmt_exec_entry(struct pt_regs *ctx)
{
	sql_enter(ctx, GO_ARG1(ctx), 0, 0, GT_SQL_EVENT_STMT | GT_SQL_EVENT_EXEC);
	return 0;
}

/* RET of the query functions: (*Rows, error) */
SEC("uprobe.multi")
int gt_sql_query_return(struct pt_regs *ctx)
{
	sql_return(ctx, GO_ARG2(ctx));
	return 0;
}

/* RET of the exec functions: (Result, error) */
SEC("uprobe.multi")
int gt_sql_exec_return(struct pt_regs *ctx)
{
	sql_return(ctx, GO_ARG3(ctx));
	return 0;
}
