// loadgen sends HTTP GETs at a fixed rate (open loop: a slow answer does not
// slow the schedule) and prints latency percentiles as JSON, with exact
// counts: "responses" requests were answered (any status: the server handled
// them), "transportErrors" got no answer (with -timeout 0, the default, a
// request is never abandoned while the server may still handle it), "ok" were
// answered below 500.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
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
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
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
