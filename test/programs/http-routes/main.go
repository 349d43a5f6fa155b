// http-routes serves requests through net/http.ServeMux patterns (Go 1.22+),
// for the http.route end-to-end tests.
//
//	http-routes -addr 127.0.0.1:0 [-generated N]
//
// Routes: GET /users/{id}, POST /users/{id}/orders, /static/ (a prefix),
// GET api.example/items/{id} (a host pattern), and with -generated N the N
// exact patterns GET /gen/0 … /gen/N-1. Prints "listening on ADDR"
// once it serves.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	generated := flag.Int("generated", 0, "exact patterns /gen/0 … /gen/N-1")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user %s\n", r.PathValue("id"))
	})
	mux.HandleFunc("POST /users/{id}/orders", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("/static/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "static")
	})
	mux.HandleFunc("GET api.example/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", r.PathValue("id"))
	})
	for i := 0; i < *generated; i++ {
		mux.HandleFunc(fmt.Sprintf("GET /gen/%d", i), func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "generated")
		})
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	if err := http.Serve(ln, mux); err != nil {
		log.Fatal(err)
	}
}
