// goroutines is the program the goroutine-ancestry tests trace: request
// handlers that hand their outgoing calls to other goroutines in the ways Go
// programs do. Every outgoing call is a GET of this very server's
// /leaf/<id>, over HTTP/1.1, so that the client and server spans of one
// call link too. It prints "listening on ADDR" once it accepts connections.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

var (
	base   string
	client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
)

func get(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", path, resp.StatusCode)
	}
	return nil
}

// routes adds the handlers that need a newer Go than the module's (files
// with a build constraint register them).
var routes []func(*http.ServeMux)

// job is one call handed to the worker pool, answered on done.
type job struct {
	path string
	done chan error
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	workers := flag.Int("workers", 4, "goroutines of the worker pool, started before any request")
	flag.Parse()

	jobs := make(chan job)
	for i := 0; i < *workers; i++ {
		go func() {
			for j := range jobs {
				j.done <- get(context.Background(), j.path)
			}
		}()
	}

	mux := http.NewServeMux()
	// /leaf/<id>: the downstream every call goes to
	mux.HandleFunc("/leaf/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "leaf")
	})
	// /fanout/<id>: errgroup three levels deep, two goroutines per level;
	// each goroutine of the third level calls /leaf/<id>-<a><b><c> (8 calls)
	mux.HandleFunc("/fanout/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/fanout/")
		g1, ctx := errgroup.WithContext(r.Context())
		for a := 0; a < 2; a++ {
			a := a
			g1.Go(func() error {
				g2, ctx := errgroup.WithContext(ctx)
				for b := 0; b < 2; b++ {
					b := b
					g2.Go(func() error {
						g3, ctx := errgroup.WithContext(ctx)
						for c := 0; c < 2; c++ {
							c := c
							g3.Go(func() error { return get(ctx, fmt.Sprintf("/leaf/%s-%d%d%d", id, a, b, c)) })
						}
						return g3.Wait()
					})
				}
				return g2.Wait()
			})
		}
		if err := g1.Wait(); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// /chain/<id>?depth=N: a chain of N goroutines, each started by the
	// previous one (the first by the handler); the last calls /leaf/<id>
	mux.HandleFunc("/chain/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/chain/")
		depth, _ := strconv.Atoi(r.URL.Query().Get("depth"))
		done := make(chan error, 1)
		var step func(n int)
		step = func(n int) {
			if n == depth {
				done <- get(r.Context(), "/leaf/"+id)
				return
			}
			go step(n + 1)
		}
		go step(1)
		if err := <-done; err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// /spawn/<id>?n=N: N goroutines, each calling /leaf/<id>-<i>
	mux.HandleFunc("/spawn/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/spawn/")
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			i := i
			go func() { errs <- get(r.Context(), fmt.Sprintf("/leaf/%s-%d", id, i)) }()
		}
		for i := 0; i < n; i++ {
			if err := <-errs; err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	// /pool/<id>: the call is handed to the worker pool through a channel
	mux.HandleFunc("/pool/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/pool/")
		j := job{path: "/leaf/" + id, done: make(chan error, 1)}
		jobs <- j
		if err := <-j.done; err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// /detached/<id>: a goroutine that outlives the request calls
	// /leaf/<id> once the request has been answered
	mux.HandleFunc("/detached/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/detached/")
		answered := make(chan struct{})
		go func() {
			<-answered
			time.Sleep(200 * time.Millisecond)
			get(context.Background(), "/leaf/"+id)
		}()
		fmt.Fprintln(w, "ok")
		defer close(answered)
	})

	for _, route := range routes {
		route(mux)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		panic(err)
	}
	base = "http://" + ln.Addr().String()
	fmt.Printf("listening on %s\n", ln.Addr())
	panic(http.Serve(ln, mux))
}
