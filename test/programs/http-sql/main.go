// http-sql is a net/http server whose handler does what a typical service
// handler does: an outgoing HTTP call and a SQL query (modernc.org/sqlite,
// pure Go, through database/sql) before it answers. The benchmarks time it
// untraced, traced and with empty probes (bench/run.ts, scenario http-sql).
//
// Flags: -addr (default 127.0.0.1:0), -sqlite PATH (the database; default an
// in-memory one). It prints "listening on ADDR".
//
//	GET /hello       answers "hello" (a target for the calls below)
//	GET /call?to=URL GETs URL with net/http's client (one shared client; the
//	                 body is read to the end, so its connection is reused) and
//	                 answers "<status>"; 502 when the call fails
//	GET /work?to=URL the same call, then one QueryRowContext (a one-row
//	                 SELECT by primary key), and answers "<status> <name>";
//	                 500 when the query fails
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	_ "modernc.org/sqlite"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	path := flag.String("sqlite", ":memory:", "SQLite database file")
	flag.Parse()

	db, err := sql.Open("sqlite", *path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(1)
	}
	// one connection: an in-memory database lives as long as its connection
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
		"INSERT OR REPLACE INTO items (id, name) VALUES (1, 'teapot'), (2, 'kettle')",
	} {
		if _, err := db.Exec(q); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", q, err)
			os.Exit(1)
		}
	}

	client := &http.Client{}
	// call GETs url and reads its body to the end, so that the connection is reused
	call := func(ctx context.Context, url string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		status, err := call(r.Context(), r.URL.Query().Get("to"))
		if err != nil {
			http.Error(w, "call: "+err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, status)
	})
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		status, err := call(ctx, r.URL.Query().Get("to"))
		if err != nil {
			http.Error(w, "call: "+err.Error(), http.StatusBadGateway)
			return
		}
		var name string
		if err := db.QueryRowContext(ctx, "SELECT name FROM items WHERE id = ?", 1).Scan(&name); err != nil {
			http.Error(w, "query: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, status, name)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Println("listening on", ln.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		db.Close()
		os.Exit(0)
	}()
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
