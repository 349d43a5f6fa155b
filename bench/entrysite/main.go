// Calls one probed function in a loop and reports the time per call, for
// bench/entry-site.ts: it waits for a line on stdin (the probe is attached
// by then), makes -n calls and prints {"nsPerCall":…} as JSON.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"time"
)

var sink int

//go:noinline
func leafSink(x int) { sink += x }

// probed: not a leaf, with a frame, so it has the stack check and (before
// Go 1.21) a SUBQ right after it
//
//go:noinline
func probed(a, b int) int {
	var buf [64]byte
	buf[a&63] = byte(b)
	leafSink(int(buf[b&63]))
	return a + int(buf[(a+1)&63])
}

func main() {
	n := flag.Int("n", 20000, "calls per run")
	flag.Parse()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		t0 := time.Now()
		s := 0
		for i := 0; i < *n; i++ {
			s += probed(i, i+1)
		}
		el := time.Since(t0)
		sink += s
		_ = json.NewEncoder(os.Stdout).Encode(map[string]float64{"nsPerCall": float64(el.Nanoseconds()) / float64(*n)})
	}
}
