// goroutines starts goroutines as fast as it can, for bench/goroutine-cost.ts:
// GET /run?n=N&where=request|background starts N goroutines one after the
// other (each exits at once) and answers {"n":N,"ns":total} in JSON.
// where=request starts them on the request's goroutine (which gotrail's
// server probe gives a span: each `go` statement records its ancestry),
// where=background on a goroutine started before any request (the common
// case: a creator serving nothing). GET /call?url=U sends one client
// request: gotrail probes goroutine creation only in programs that make
// client calls. It prints "listening on ADDR".
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

func spawn(n int) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
	}
	wg.Wait()
	return time.Since(start)
}

func main() {
	work := make(chan int)
	took := make(chan time.Duration)
	go func() {
		for n := range work {
			took <- spawn(n)
		}
	}()
	http.HandleFunc("/run", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		var d time.Duration
		if r.URL.Query().Get("where") == "background" {
			work <- n
			d = <-took
		} else {
			d = spawn(n)
		}
		json.NewEncoder(w).Encode(map[string]int64{"n": int64(n), "ns": d.Nanoseconds()})
	})
	http.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	panic(http.Serve(ln, nil))
}
