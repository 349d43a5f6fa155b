// h2-append checks, with a real Go HTTP/2 client and server, the
// lockdown-safe HTTP/2 injection design of docs/cross-node-propagation.md
// ("HTTP/2 and gRPC"): a relay between them appends a literal header field
// without indexing (0x00, name length, "traceparent", value length, value)
// at the end of every client HEADERS frame that has END_HEADERS and no
// PADDED flag, and fixes the frame's 24-bit length — what an sk_msg program
// would do to the bytes being sent. The server counts the traceparent fields
// each request arrives with. N concurrent requests share one h2c connection
// (the HPACK dynamic table is in use throughout: the client indexes its
// fields). Prints one JSON line: {"requests":N,"ok":K,"withOne":W,"frames":F,"skipped":S}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// field is the HPACK literal header field without indexing, new name.
func field() []byte {
	b := []byte{0x00, byte(len("traceparent"))}
	b = append(b, "traceparent"...)
	b = append(b, byte(len(traceparent)))
	return append(b, traceparent...)
}

// relay copies client→server bytes frame by frame, appending the field to
// each eligible HEADERS frame; server→client bytes are copied unchanged.
func relay(c net.Conn, upstream string, frames, skipped *atomic.Int64) {
	s, err := net.Dial("tcp", upstream)
	if err != nil {
		c.Close()
		return
	}
	go func() { io.Copy(c, s); c.Close() }()
	defer s.Close()
	preface := make([]byte, len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	s.Write(preface)
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		payload := make([]byte, n)
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		const typeHeaders, endHeaders, padded = 0x1, 0x4, 0x8
		if hdr[3] == typeHeaders {
			f := field()
			if hdr[4]&endHeaders != 0 && hdr[4]&padded == 0 && n+len(f) <= 16384 {
				payload = append(payload, f...)
				n += len(f)
				hdr[0], hdr[1], hdr[2] = byte(n>>16), byte(n>>8), byte(n)
				frames.Add(1)
			} else {
				skipped.Add(1)
			}
		}
		out := append(append([]byte{}, hdr...), payload...)
		if _, err := s.Write(out); err != nil {
			return
		}
	}
}

func main() {
	n := flag.Int("n", 100, "concurrent requests on one connection")
	flag.Parse()
	var withOne, frames, skipped atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Values("Traceparent"); len(got) == 1 && got[0] == traceparent && r.ProtoMajor == 2 {
			withOne.Add(1)
		}
		// a few indexed fields on the way back, and a body
		w.Header().Set("X-Echo", strings.Repeat("e", 40))
		io.Copy(w, r.Body)
	})}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv.Protocols = &protos
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go srv.Serve(sl)
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := rl.Accept()
			if err != nil {
				return
			}
			go relay(c, sl.Addr().String(), &frames, &skipped)
		}
	}()
	tr := &http.Transport{Protocols: &protos}
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	var ok atomic.Int64
	var wg sync.WaitGroup
	do := func(i int) {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/item/%d", rl.Addr(), i), strings.NewReader(strings.Repeat("b", i)))
		req.Header.Set("X-Same", "the same value on every request: indexed after the first")
		req.Header.Set("X-Call", fmt.Sprint(i))
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && resp.ProtoMajor == 2 && len(body) == i {
			ok.Add(1)
		}
	}
	do(0) // the connection, and the dynamic table's first entries
	for i := 1; i < *n; i++ {
		wg.Add(1)
		go func(i int) { defer wg.Done(); do(i) }(i)
	}
	wg.Wait()
	out, _ := json.Marshal(map[string]int64{"requests": int64(*n), "ok": ok.Load(), "withOne": withOne.Load(), "frames": frames.Load(), "skipped": skipped.Load()})
	fmt.Println(string(out))
}
