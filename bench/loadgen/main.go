// loadgen sends HTTP GETs and prints latency percentiles as JSON. Two modes:
//
// Open loop (-rate R -duration D, the default): GETs at a fixed rate, a slow
// answer does not slow the schedule, over up to -conns connections; what a
// server under a given load sees. Exact counts: "responses" requests were
// answered (any status: the server handled them), "transportErrors" got no
// answer (with -timeout 0, the default, a request is never abandoned while the
// server may still handle it), "ok" were answered below 500. Latency is in
// whole µs; at a modest rate it is dominated by the wake-up of idle threads.
//
// Closed loop (-requests N, optionally -warmup W): W unrecorded requests, then
// N sequential ones on one keep-alive connection, each timed in the client
// from sending to the last byte of its body. No queueing and no idle gap:
// the latency a request's own work adds (a few µs) stays visible. Prints
// {"mode":"closed","requests":N,"count":answered below 500,"errors":…,
// "connections":new connections made (1 unless one broke),"p50us","p99us",
// "maxus","meanus"} with fractional µs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"sort"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	rate := flag.Int("rate", 1000, "requests per second")
	dur := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("conns", 32, "max concurrent connections")
	timeout := flag.Duration("timeout", 0, "give up on a request after this long (0: never)")
	requests := flag.Int("requests", 0, "closed loop: send this many sequential requests on one connection and time each (0: open loop)")
	warmup := flag.Int("warmup", 0, "closed loop: unrecorded requests sent first")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	if *requests < 0 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -requests and -warmup must not be negative")
		os.Exit(2)
	}
	if *requests > 0 {
		closedLoop(*url, *requests, *warmup, *timeout)
		return
	}
	tr := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}
	client := &http.Client{Transport: tr, Timeout: *timeout}
	total := int(float64(*rate) * dur.Seconds())
	lat := make([]time.Duration, 0, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := 0
	responses := 0
	transportErrors := 0
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := client.Get(*url)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			d := time.Since(t0)
			mu.Lock()
			if err == nil {
				responses++
			} else {
				transportErrors++
			}
			if err != nil || resp.StatusCode >= 500 {
				errs++
			} else {
				lat = append(lat, d)
			}
			mu.Unlock()
		}()
	}
	// past -duration when the schedule could not be kept (too few CPU cycles)
	sendSeconds := time.Since(start).Seconds()
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds())
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"mode":            "open",
		"sent":            total,
		"ok":              len(lat),
		"errors":          errs,
		"responses":       responses,
		"transportErrors": transportErrors,
		"seconds":         elapsed.Seconds(),
		"sendSeconds":     sendSeconds,
		"achievedRate":    float64(total) / elapsed.Seconds(),
		"p50us":           pct(0.50),
		"p90us":           pct(0.90),
		"p99us":           pct(0.99),
		"maxus":           pct(1.0),
	})
}

// closedLoop sends warmup+n GETs one after another on one keep-alive
// connection and prints the latency of the last n (see the package comment).
func closedLoop(url string, n, warmup int, timeout time.Duration) {
	// one connection, kept alive: a request never waits for a dial or another's answer
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: timeout}
	connections := 0
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			connections++
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	lat := make([]float64, 0, n)
	errs := 0
	for i := 0; i < warmup+n; i++ {
		t0 := time.Now()
		resp, err := client.Do(req)
		ok := err == nil
		if ok {
			// read to the end: the connection is reused only then
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ok = err == nil && resp.StatusCode < 500
		}
		d := time.Since(t0)
		if i < warmup {
			continue
		}
		if ok {
			lat = append(lat, float64(d.Nanoseconds())/1e3)
		} else {
			errs++
		}
	}
	sort.Float64s(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))]
	}
	mean := 0.0
	for _, x := range lat {
		mean += x / float64(len(lat))
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"mode":        "closed",
		"requests":    n,
		"warmup":      warmup,
		"count":       len(lat),
		"errors":      errs,
		"connections": connections,
		"p50us":       pct(0.50),
		"p90us":       pct(0.90),
		"p99us":       pct(0.99),
		"maxus":       pct(1.0),
		"meanus":      mean,
	})
}
