// demo-service plays either side of gotrail's demo: "shop" answers
// /checkout by asking "inventory" for stock, forwarding the caller's
// traceparent header as a proxy would; "inventory" answers /stock/ITEM.
// Neither program knows anything about tracing.
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	role := flag.String("role", "shop", "shop or inventory")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	inventory := flag.String("inventory", "", "inventory base URL (shop only)")
	flag.Parse()

	mux := http.NewServeMux()
	switch *role {
	case "inventory":
		mux.HandleFunc("/stock/", func(w http.ResponseWriter, r *http.Request) {
			item := strings.TrimPrefix(r.URL.Path, "/stock/")
			time.Sleep(time.Duration(2+rand.Intn(5)) * time.Millisecond)
			if item == "unicorn" {
				http.Error(w, "no such item", http.StatusNotFound)
				return
			}
			fmt.Fprintf(w, "%s: %d in stock\n", item, rand.Intn(40))
		})
	default:
		client := &http.Client{Timeout: 5 * time.Second}
		mux.HandleFunc("/checkout", func(w http.ResponseWriter, r *http.Request) {
			item := r.URL.Query().Get("item")
			req, _ := http.NewRequest("GET", *inventory+"/stock/"+item, nil)
			if tp := r.Header.Get("traceparent"); tp != "" {
				req.Header.Set("traceparent", tp)
			}
			resp, err := client.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				http.Error(w, "inventory said: "+string(body), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "ordered %s (%s)", item, strings.TrimSpace(string(body)))
		})
		mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
