// inject-peer is both ends of the header-injection tests.
//
// -mode client: reads one JSON command per line on stdin, carries it out
// with net/http's client (or a raw TCP connection) and prints one JSON
// result line. It prints "ready" first, so a test can wait until the
// process is traced before any request is sent.
//
// -mode recorder: an untraced HTTP/1.1 server on -addr that answers every
// request with what it received (traceparent values, the body's length and
// SHA-256), and a raw TCP server on -raw-addr that answers a connection's
// bytes with their length and SHA-256 once the client half-closes.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

type command struct {
	Op      string            `json:"op"` // get, post, keepalive, sendfile, buffers
	URL     string            `json:"url"`
	Addr    string            `json:"addr"`
	Size    int               `json:"size"`
	Chunked bool              `json:"chunked"`
	N       int               `json:"n"`
	Headers map[string]string `json:"headers"`
}

type received struct {
	Traceparent []string `json:"traceparent"`
	BodyLen     int      `json:"bodyLen"`
	BodySha256  string   `json:"bodySha256"`
	Status      int      `json:"status"`
}

type result struct {
	OK        bool       `json:"ok"`
	Error     string     `json:"error,omitempty"`
	SentLen   int        `json:"sentLen"`
	SentSha   string     `json:"sentSha256"`
	Responses []received `json:"responses"`
	Raw       string     `json:"raw,omitempty"`
	// bench: per-request latency over N sequential GETs, in microseconds
	MeanUs float64 `json:"meanUs,omitempty"`
	P50Us  float64 `json:"p50Us,omitempty"`
	P90Us  float64 `json:"p90Us,omitempty"`
}

func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		// every byte value, and CR LF sequences that look like framing
		b[i] = byte(i*7 + i/251)
		if i%97 == 0 {
			b[i] = '\r'
		} else if i%97 == 1 {
			b[i] = '\n'
		}
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func do(c *http.Client, cmd command, b []byte) (received, error) {
	var r io.Reader
	method := "GET"
	if b != nil {
		method = "POST"
		r = bytes.NewReader(b)
		if cmd.Chunked {
			r = io.MultiReader(bytes.NewReader(b)) // no length known: chunked
		}
	}
	req, err := http.NewRequest(method, cmd.URL, r)
	if err != nil {
		return received{}, err
	}
	if b != nil && !cmd.Chunked {
		req.ContentLength = int64(len(b))
	}
	for k, v := range cmd.Headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return received{}, err
	}
	defer resp.Body.Close()
	var rec received
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return received{}, err
	}
	if json.Unmarshal(data, &rec) != nil {
		rec = received{}
	}
	rec.Status = resp.StatusCode
	return rec, nil
}

func raw(cmd command, b []byte) (string, error) {
	conn, err := net.Dial("tcp", cmd.Addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	tcp := conn.(*net.TCPConn)
	switch cmd.Op {
	case "sendfile":
		f, err := os.CreateTemp("", "inject-peer-*")
		if err != nil {
			return "", err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := f.Write(b); err != nil {
			return "", err
		}
		if _, err := f.Seek(0, 0); err != nil {
			return "", err
		}
		// TCPConn.ReadFrom an *os.File: sendfile(2)
		if _, err := io.Copy(tcp, f); err != nil {
			return "", err
		}
	case "buffers":
		// net.Buffers on a TCP connection: writev(2)
		var bufs net.Buffers
		for i := 0; i < len(b); i += 1000 {
			bufs = append(bufs, b[i:min(i+1000, len(b))])
		}
		if _, err := bufs.WriteTo(tcp); err != nil {
			return "", err
		}
	}
	tcp.CloseWrite()
	out, err := io.ReadAll(tcp)
	return strings.TrimSpace(string(out)), err
}

func client() {
	c := &http.Client{}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	fmt.Println("ready")
	for in.Scan() {
		var cmd command
		var res result
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			res.Error = err.Error()
			out.Encode(res)
			continue
		}
		var b []byte
		if cmd.Size > 0 || cmd.Op == "post" {
			b = body(cmd.Size)
			res.SentLen, res.SentSha = len(b), sum(b)
		}
		var err error
		switch cmd.Op {
		case "get", "post":
			var rec received
			rec, err = do(c, cmd, b)
			res.Responses = append(res.Responses, rec)
		case "keepalive":
			// one connection, requests one after another: GET, POST, GET, …
			for i := 0; i < cmd.N && err == nil; i++ {
				var rec received
				one := cmd
				if i%2 == 1 {
					rec, err = do(c, one, b)
				} else {
					rec, err = do(c, one, nil)
				}
				res.Responses = append(res.Responses, rec)
			}
		case "bench":
			// N sequential GETs on one kept-alive connection, each timed
			lat := make([]float64, 0, cmd.N)
			for i := 0; i < cmd.N && err == nil; i++ {
				t := time.Now()
				_, err = do(c, cmd, nil)
				lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
			}
			if err == nil && len(lat) > 0 {
				sort.Float64s(lat)
				total := 0.0
				for _, v := range lat {
					total += v
				}
				res.MeanUs, res.P50Us, res.P90Us = total/float64(len(lat)), lat[len(lat)/2], lat[len(lat)*9/10]
			}
		case "sendfile", "buffers":
			res.Raw, err = raw(cmd, b)
		default:
			err = fmt.Errorf("unknown op %q", cmd.Op)
		}
		if err != nil {
			res.Error = err.Error()
		} else {
			res.OK = true
		}
		out.Encode(res)
	}
}

func recorder(addr, rawAddr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rl, err := net.Listen("tcp", rawAddr)
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
			go func() {
				defer c.Close()
				data, _ := io.ReadAll(c)
				fmt.Fprintf(c, "%d %s\n", len(data), sum(data))
			}()
		}
	}()
	fmt.Printf("listening on %s\n", ln.Addr())
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(received{Traceparent: r.Header.Values("Traceparent"), BodyLen: len(data), BodySha256: sum(data)})
	}))
}

func main() {
	mode := flag.String("mode", "client", "client or recorder")
	addr := flag.String("addr", "127.0.0.1:0", "recorder: HTTP listen address")
	rawAddr := flag.String("raw-addr", "127.0.0.1:0", "recorder: raw TCP listen address")
	flag.Parse()
	if *mode == "recorder" {
		recorder(*addr, *rawAddr)
		return
	}
	client()
}
