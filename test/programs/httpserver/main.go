// httpserver is the net/http server that the end-to-end tests trace.
// It prints "listening on ADDR" once it accepts connections.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.String("tag", "", "ignored: lets tests tell processes of one binary apart by command line")
	exitAfter := flag.Duration("exit-after", 0, "exit after this long (0: serve forever)")
	useTLS := flag.Bool("tls", false, "serve HTTPS (HTTP/2 and HTTP/1.1) with a self-signed certificate")
	h2c := flag.Bool("h2c", false, "also serve unencrypted HTTP/2 with prior knowledge (Go 1.24 and later)")
	get := flag.String("get", "", "send one GET to this URL with net/http's client, print the status and exit (a short-lived client)")
	flag.Parse()
	if *get != "" {
		resp, err := http.Get(*get)
		if err != nil {
			fmt.Fprintln(os.Stderr, "get:", err)
			os.Exit(1)
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
		return
	}
	if *exitAfter > 0 {
		time.AfterFunc(*exitAfter, func() { os.Exit(0) })
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	// /status/NNN answers with that status code
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil || code < 100 || code > 599 {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
	})
	// /sleep?ms=N answers after N milliseconds
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintln(w, "slept", ms)
	})
	// /hold answers once the process receives SIGUSR1, which releases every
	// call held until then; it prints "held" when a call starts waiting, so
	// that a test can keep many calls open at once, and know it, without
	// sending other requests
	var holdMu sync.Mutex
	hold := make(chan struct{})
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			holdMu.Lock()
			close(hold)
			hold = make(chan struct{})
			holdMu.Unlock()
		}
	}()
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		holdMu.Lock()
		ch := hold
		holdMu.Unlock()
		fmt.Println("held")
		<-ch
		fmt.Fprintln(w, "released")
	})
	// /echo reads the whole body, so the connection's read buffer is reused
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32*1024)
		n := 0
		for {
			k, err := r.Body.Read(buf)
			n += k
			if err != nil {
				break
			}
		}
		fmt.Fprintln(w, n)
	})

	// /early-hints answers 103 Early Hints, then 201: the 1xx is informational
	mux.HandleFunc("/early-hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusCreated)
	})
	// /upgrade hijacks the connection and answers 101 itself, as WebSocket
	// servers do, around the ResponseWriter
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: example\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
	})

	// /panic panics in the handler (net/http recovers and drops the connection)
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		panic("handler panicked on purpose")
	})

	// /proxy?to=URL[&traceparent=V][&pad=N][&drain=1] fetches URL with
	// net/http's client (with a Traceparent header of its own, and an X-Pad
	// header of N bytes, when given) and answers with its status; drain=1
	// reads the response body before closing it, which keeps the connection
	// for the next request (a body closed unread closes its connection)
	client := &http.Client{Timeout: 5 * time.Second}
	mux.HandleFunc("/proxy", func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequest("GET", r.URL.Query().Get("to"), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if tp := r.URL.Query().Get("traceparent"); tp != "" {
			req.Header.Set("Traceparent", tp)
		}
		if pad, _ := strconv.Atoi(r.URL.Query().Get("pad")); pad > 0 {
			req.Header.Set("X-Pad", strings.Repeat("p", pad))
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if r.URL.Query().Get("drain") == "1" {
			io.Copy(io.Discard, resp.Body)
		}
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	})

	// /item/NAME answers 200 after 20 ms: a request that stays in flight a while
	mux.HandleFunc("/item/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		fmt.Fprintln(w, "item", strings.TrimPrefix(r.URL.Path, "/item/"), r.Proto)
	})
	// /proxy2?to=BASE&n=N[&h2c=1] sends, with an HTTP/2 client on a fresh
	// connection (TLS without certificate check, or h2c), one GET of
	// BASE/item/warmup, then N concurrent GETs of BASE/item/0..N-1 over the
	// same connection; it answers 200 with "conns=C proto=P ok=K" when all
	// of them answered 200, else 502
	mux.HandleFunc("/proxy2", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		base := q.Get("to")
		n, _ := strconv.Atoi(q.Get("n"))
		tr, err := http2Transport(q.Get("h2c") == "1")
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotImplemented)
			return
		}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var mu sync.Mutex
		conns := map[string]bool{}
		protos := map[string]bool{}
		get := func(path string) error {
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
				mu.Lock()
				conns[info.Conn.LocalAddr().String()] = true
				mu.Unlock()
			}}
			req, err := http.NewRequestWithContext(httptrace.WithClientTrace(r.Context(), trace), "GET", base+path, nil)
			if err != nil {
				return err
			}
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			protos[resp.Proto] = true
			mu.Unlock()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: status %d", path, resp.StatusCode)
			}
			return nil
		}
		if err := get("/item/warmup"); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func(i int) { errs <- get("/item/" + strconv.Itoa(i)) }(i)
		}
		ok := 0
		var failed error
		for i := 0; i < n; i++ {
			if err := <-errs; err != nil {
				failed = err
			} else {
				ok++
			}
		}
		if failed != nil {
			http.Error(w, failed.Error(), http.StatusBadGateway)
			return
		}
		ps := []string{}
		for p := range protos {
			ps = append(ps, p)
		}
		fmt.Fprintf(w, "conns=%d proto=%s ok=%d\n", len(conns), strings.Join(ps, ","), ok)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: mux}
	if *h2c {
		if err := serveH2C(srv); err != nil {
			fmt.Fprintln(os.Stderr, "h2c:", err)
			os.Exit(1)
		}
	}
	if *useTLS {
		// ServeTLS turns HTTP/2 on (ALPN h2) next to HTTP/1.1
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned()}}
		if err := srv.ServeTLS(ln, "", ""); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
	}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

// selfSigned makes a throwaway certificate for 127.0.0.1.
func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
