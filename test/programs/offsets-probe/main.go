// Command offsets-probe links the standard-library code whose struct layouts
// the offsets tests compare (DWARF reader vs. Go's debug/dwarf vs. the
// offsets database). It serves HTTP when given an address, so the same binary
// can double as a target for probe tests.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"os"
)

func main() {
	// "-sql DRIVER" runs a query and a prepared statement: links database/sql's
	// DB, Stmt, Conn, Tx and the connector sql.Open makes (no driver is linked: it fails)
	if len(os.Args) > 2 && os.Args[1] == "-sql" {
		db, err := sql.Open(os.Args[2], "")
		if err == nil {
			_, err = db.Exec("SELECT 1")
			if st, perr := db.Prepare("SELECT 1"); perr == nil {
				_, _ = st.Query()
			}
			// Conn and Tx methods (their db fields)
			if c, cerr := db.Conn(context.Background()); cerr == nil {
				_, _ = c.ExecContext(context.Background(), "SELECT 1")
			}
			if tx, terr := db.Begin(); terr == nil {
				_, _ = tx.Exec("SELECT 1")
			}
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// "-get URL" fetches URL: links the client side (persistConn, net.conn)
	if len(os.Args) > 2 && os.Args[1] == "-get" {
		resp, err := http.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
		return
	}
	if len(os.Args) < 2 {
		u, _ := url.Parse("http://example.invalid/path?q=1")
		r := bufio.NewReader(os.Stdin)
		fmt.Println(u.Path, u.RawQuery, r.Size())
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", r.Method, r.URL.Path)
	})
	if err := http.ListenAndServe(os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
