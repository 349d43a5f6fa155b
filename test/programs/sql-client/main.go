// Command sql-client runs SQL through database/sql on request, for the
// end-to-end tests of the database/sql probe, with three drivers: pgx v5
// through its stdlib package ("pgx"), lib/pq ("postgres") and the pure-Go
// modernc.org/sqlite ("sqlite").
//
// Flags: -pg DSN (a PostgreSQL URL; the pgx and pq drivers use it), -pgkw
// DSN (the same server in keyword form, key=value: drivers pgx-kw and pq-kw),
// -refused DSN (a PostgreSQL URL where nothing listens), -sqlite PATH (the
// SQLite database file). It prints "listening on ADDR".
// HTTP endpoints, each naming its driver with ?driver=pgx|pq|sqlite|pgx-kw|pq-kw:
//
//	/setup          (re)creates the table items and fills it
//	/run?n=         one QueryRowContext on the handler's goroutine, then n
//	                goroutines each running a query (DB.QueryContext), an exec
//	                (DB.ExecContext), prepared statements (Stmt.QueryRowContext,
//	                Stmt.ExecContext) and an exec in a transaction (Tx.ExecContext):
//	                1+5n calls
//	/conn           a query and an exec on a dedicated connection (Conn) and
//	                a query in a transaction (Tx.QueryRowContext): 3 calls
//	/errors         a syntax error (exec) and a missing table (query)
//	/refused        (pgx and pq) a query and an exec on -refused, whose
//	                connection is refused: 2 failed calls
//	/bench?n=       n sequential queries: the median latency in ns
//
// Every query carries string, number and list literals that must never leave
// the node: 'alice', 'bob', 'carol', 'dave', 4242, 777 and (1, 2, 3).
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"
	_ "modernc.org/sqlite"
)

var dbs = map[string]*sql.DB{}

// refusedDbs open connections where nothing listens
var refusedDbs = map[string]*sql.DB{}

func open(pg, pgkw, refused, sqlitePath string) error {
	for name, drv := range map[string]string{"pgx": "pgx", "pq": "postgres"} {
		db, err := sql.Open(drv, pg)
		if err != nil {
			return err
		}
		db.SetMaxOpenConns(8)
		dbs[name] = db
		if pgkw != "" {
			if dbs[name+"-kw"], err = sql.Open(drv, pgkw); err != nil {
				return err
			}
		}
		if refused != "" {
			if refusedDbs[name], err = sql.Open(drv, refused); err != nil {
				return err
			}
		}
	}
	db, err := sql.Open("sqlite", sqlitePath+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return err
	}
	// one writer at a time: SQLite serialises them anyway
	db.SetMaxOpenConns(1)
	dbs["sqlite"] = db
	return nil
}

func param(driver, n string) string {
	if driver == "sqlite" {
		return "?"
	}
	return "$" + n
}

func setup(ctx context.Context, db *sql.DB, table string) error {
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + table,
		"CREATE TABLE " + table + " (id INTEGER, name TEXT)",
		"INSERT INTO " + table + " (id, name) VALUES (1, 'alice'), (2, 'bob'), (4242, 'carol')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func work(ctx context.Context, db *sql.DB, stmt, update *sql.Stmt) error {
	rows, err := db.QueryContext(ctx, "SELECT id, name FROM items WHERE name = 'alice' AND id IN (1, 2, 3)")
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	for rows.Next() {
	}
	rows.Close()
	if _, err := db.ExecContext(ctx, "UPDATE items SET name = 'bob' WHERE id = 4242"); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	var name string
	if err := stmt.QueryRowContext(ctx, 2).Scan(&name); err != nil {
		return fmt.Errorf("stmt: %w", err)
	}
	if _, err := update.ExecContext(ctx, 3); err != nil {
		return fmt.Errorf("stmt exec: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO items (id, name) VALUES (777, 'carol')"); err != nil {
		return fmt.Errorf("tx exec: %w", err)
	}
	return tx.Commit()
}

func handler(w http.ResponseWriter, r *http.Request) {
	driver := r.URL.Query().Get("driver")
	db := dbs[driver]
	if db == nil {
		http.Error(w, "unknown driver", 400)
		return
	}
	ctx := r.Context()
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	switch r.URL.Path {
	case "/setup":
		if err := setup(ctx, db, "items"); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintln(w, "OK")
	case "/run":
		var name string
		if err := db.QueryRowContext(ctx, "SELECT name FROM items WHERE id = 4242").Scan(&name); err != nil {
			http.Error(w, "query row: "+err.Error(), 500)
			return
		}
		stmt, err := db.PrepareContext(ctx, "SELECT name FROM items WHERE id = "+param(driver, "1"))
		if err != nil {
			http.Error(w, "prepare: "+err.Error(), 500)
			return
		}
		defer stmt.Close()
		update, err := db.PrepareContext(ctx, "UPDATE items SET name = 'dave' WHERE id = "+param(driver, "1"))
		if err != nil {
			http.Error(w, "prepare: "+err.Error(), 500)
			return
		}
		defer update.Close()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := work(context.Background(), db, stmt, update); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "OK=%d\n", 1+5*n)
	case "/conn":
		conn, err := db.Conn(ctx)
		if err != nil {
			http.Error(w, "conn: "+err.Error(), 500)
			return
		}
		defer conn.Close()
		var name string
		if err := conn.QueryRowContext(ctx, "SELECT name FROM items WHERE id = 4242").Scan(&name); err != nil {
			http.Error(w, "conn query: "+err.Error(), 500)
			return
		}
		if _, err := conn.ExecContext(ctx, "UPDATE items SET name = 'dave' WHERE id = 777"); err != nil {
			http.Error(w, "conn exec: "+err.Error(), 500)
			return
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			http.Error(w, "begin: "+err.Error(), 500)
			return
		}
		defer tx.Rollback()
		if err := tx.QueryRowContext(ctx, "SELECT name FROM items WHERE id = 4242").Scan(&name); err != nil {
			http.Error(w, "tx query: "+err.Error(), 500)
			return
		}
		fmt.Fprintln(w, "OK")
	case "/refused":
		rdb := refusedDbs[driver]
		if rdb == nil {
			http.Error(w, "no refused database for this driver", 400)
			return
		}
		var name string
		err1 := rdb.QueryRowContext(ctx, "SELECT name FROM refused_items WHERE id = 4242").Scan(&name)
		_, err2 := rdb.ExecContext(ctx, "UPDATE refused_items SET name = 'bob' WHERE id = 4242")
		fmt.Fprintf(w, "%t %t\n", err1 != nil, err2 != nil)
	case "/errors":
		_, err1 := db.ExecContext(ctx, "SELEC 'alice' FROM items")
		_, err2 := db.QueryContext(ctx, "SELECT name FROM no_such_table WHERE id = 4242")
		fmt.Fprintf(w, "%t %t\n", err1 != nil, err2 != nil)
	case "/bench":
		lat := make([]int64, 0, n)
		for i := 0; i < n; i++ {
			start := time.Now()
			var name string
			if err := db.QueryRowContext(context.Background(), "SELECT name FROM items WHERE id = 1").Scan(&name); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			lat = append(lat, time.Since(start).Nanoseconds())
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		fmt.Fprintf(w, "%d\n", lat[len(lat)/2])
	default:
		http.NotFound(w, r)
	}
}

func main() {
	pg := flag.String("pg", "", "PostgreSQL URL")
	pgkw := flag.String("pgkw", "", "PostgreSQL DSN in keyword form")
	refused := flag.String("refused", "", "PostgreSQL URL where nothing listens")
	sqlitePath := flag.String("sqlite", "", "SQLite database file")
	flag.Parse()
	if err := open(*pg, *pgkw, *refused, *sqlitePath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	go http.Serve(ln, http.HandlerFunc(handler))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
