// Command analysis-http is the target of the binary-analysis tests: an HTTP
// server (so net/http.serverHandler.ServeHTTP is linked in), one module
// dependency (so module versions can be read back), and functions whose
// prologues take each shape the Go compiler emits.
package main

import (
	"fmt"
	"net/http"
	"os"

	"github.com/google/uuid"
)

// handler has several return paths so that it compiles to several RETs.
//
//go:noinline
func handler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/fail" {
		http.Error(w, "fail", http.StatusInternalServerError)
		return
	}
	id := uuid.New()
	if r.Method == http.MethodHead {
		w.Header().Set("X-Request-Id", id.String())
		return
	}
	fmt.Fprintf(w, "hello %s\n", id)
}

// leaf has no stack-growth check: it is marked nosplit.
//
//go:noinline
//go:nosplit
func leaf(a, b int) int {
	return a*31 + b
}

// bigFrame's frame exceeds the small-stack limit, so its prologue compares
// SP-framesize (computed with LEA) rather than SP itself.
//
//go:noinline
func bigFrame(n int) int {
	var buf [256]int
	for i := range buf {
		buf[i] = i * n
	}
	return buf[n%len(buf)] + leaf(n, len(os.Args))
}

// hugeFrame's frame exceeds the big-stack limit, so its prologue also checks
// for wrap-around before comparing.
//
//go:noinline
func hugeFrame(n int) int {
	var buf [4096]int
	for i := range buf {
		buf[i] = i + n
	}
	return buf[n%len(buf)]
}

func main() {
	addr := "127.0.0.1:8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	if len(os.Args) > 2 {
		fmt.Println(bigFrame(len(os.Args)), hugeFrame(len(os.Args)))
	}
	http.HandleFunc("/", handler)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
