// Command grpc-echo serves gRPC and makes gRPC calls on request, for the
// end-to-end tests of the gRPC probes. It is built against several grpc-go
// versions (the tests write its go.mod), so it uses only API that every
// tested version has, and hand-written service descriptions (no generated
// code): requests and replies are google.protobuf.StringValue.
//
// It prints "grpc on ADDR" and "listening on ADDR" (its HTTP control port);
// -grpc-addr and -http-addr choose them (default: any free loopback port).
// HTTP endpoints, each dialling one client connection to ?to=ADDR:
//
//	/unary?to=&n=&what=   n concurrent Invoke calls of /demo.Echo/Unary, request value `what`
//	                      (ok, notfound, internal, deadline, cancel, panic, or an http:// URL
//	                      that the handler GETs with net/http, answering the response's
//	                      status: a call into a further service); with &tp= the calls
//	                      carry that traceparent (and &ts= tracestate) in their metadata
//	/items?to=&n=         n concurrent Invoke calls of /demo.Items/Get<i> (one method each)
//	/stream?to=&n=&msgs=  n concurrent bidirectional streams of /demo.Echo/Chat, msgs messages each
//	/missing?to=          one call of a method nobody serves (Unimplemented)
//	/addr                 the gRPC server's address
//	/bench?to=&n=         n sequential unary calls on one connection: median and p99 latency
//
// Before the concurrent calls, one call is made on the handler's own goroutine
// (its CLIENT span is the child of the HTTP request's SERVER span).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type echoServer interface{}

func unary(srv interface{}, ctx context.Context, dec func(interface{}) error, ic grpc.UnaryServerInterceptor) (interface{}, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	h := func(ctx context.Context, req interface{}) (interface{}, error) {
		v := req.(*wrapperspb.StringValue).Value
		switch v {
		case "notfound":
			return nil, status.Error(codes.NotFound, "no such item")
		case "internal":
			return nil, status.Error(codes.Internal, "broken")
		case "deadline":
			// the client's deadline or its reset stream, whichever the
			// server sees first: the handler says what happened
			<-ctx.Done()
			return nil, status.Error(codes.DeadlineExceeded, "too slow")
		case "cancel":
			<-ctx.Done()
			return nil, status.Error(codes.Canceled, "cancelled")
		case "panic":
			panic("handler panic")
		}
		if strings.HasPrefix(v, "http://") {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, v, nil)
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, status.Error(codes.Unavailable, err.Error())
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return wrapperspb.String(res.Status), nil
		}
		return wrapperspb.String(v), nil
	}
	if ic == nil {
		return h(ctx, in)
	}
	return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/demo.Echo/Unary"}, h)
}

func chat(srv interface{}, stream grpc.ServerStream) error {
	for {
		in := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := stream.SendMsg(in); err != nil {
			return err
		}
	}
}

// items answers every method nobody registered under /demo.Items/.
func items(srv interface{}, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	if !strings.HasPrefix(method, "/demo.Items/") {
		return status.Error(codes.Unimplemented, "unknown method "+method)
	}
	in := new(wrapperspb.StringValue)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	return stream.SendMsg(wrapperspb.String(method))
}

var chatDesc = grpc.StreamDesc{StreamName: "Chat", Handler: chat, ServerStreams: true, ClientStreams: true}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "demo.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: unary}},
	Streams:     []grpc.StreamDesc{chatDesc},
}

func recovery(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp interface{}, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(codes.Internal, "panic: %v", r)
		}
	}()
	return handler(ctx, req)
}

type result struct {
	mu    sync.Mutex
	codes map[string]int
}

func (r *result) add(err error) {
	r.mu.Lock()
	r.codes[status.Code(err).String()]++
	r.mu.Unlock()
}

func (r *result) String() string {
	var out []string
	for c, n := range r.codes {
		out = append(out, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func dial(to string) (*grpc.ClientConn, error) {
	return grpc.Dial(to, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// concurrently runs f(i) for i in [0, n) on goroutines of their own, after one
// call f(-1) on the caller's goroutine.
func concurrently(n int, f func(i int) error) *result {
	res := &result{codes: map[string]int{}}
	res.add(f(-1))
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res.add(f(i))
		}(i)
	}
	wg.Wait()
	return res
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil {
		return v
	}
	return def
}

func main() {
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:0", "gRPC listen address")
	httpAddr := flag.String("http-addr", "127.0.0.1:0", "HTTP (control) listen address")
	flag.Parse()
	lis, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(recovery), grpc.UnknownServiceHandler(items))
	srv.RegisterService(&serviceDesc, nil)
	go srv.Serve(lis)

	mux := http.NewServeMux()
	mux.HandleFunc("/unary", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		cc, err := dial(q.Get("to"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer cc.Close()
		what := q.Get("what")
		res := concurrently(intParam(r, "n", 0), func(i int) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			switch what {
			case "deadline":
				ctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
			case "cancel":
				time.AfterFunc(200*time.Millisecond, cancel)
			}
			if tp := q.Get("tp"); tp != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", tp)
				if ts := q.Get("ts"); ts != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "tracestate", ts)
				}
			}
			return cc.Invoke(ctx, "/demo.Echo/Unary", wrapperspb.String(what), new(wrapperspb.StringValue))
		})
		fmt.Fprintln(w, res)
	})
	mux.HandleFunc("/items", func(w http.ResponseWriter, r *http.Request) {
		cc, err := dial(r.URL.Query().Get("to"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer cc.Close()
		res := concurrently(intParam(r, "n", 0), func(i int) error {
			method := "/demo.Items/Warmup"
			if i >= 0 {
				method = fmt.Sprintf("/demo.Items/Get%d", i)
			}
			out := new(wrapperspb.StringValue)
			if err := cc.Invoke(context.Background(), method, wrapperspb.String("x"), out); err != nil {
				return err
			}
			if out.Value != method {
				return status.Error(codes.DataLoss, "answered "+out.Value)
			}
			return nil
		})
		fmt.Fprintln(w, res)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		cc, err := dial(r.URL.Query().Get("to"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer cc.Close()
		msgs := intParam(r, "msgs", 3)
		res := concurrently(intParam(r, "n", 0), func(i int) error {
			s, err := cc.NewStream(context.Background(), &chatDesc, "/demo.Echo/Chat")
			if err != nil {
				return err
			}
			for j := 0; j < msgs; j++ {
				if err := s.SendMsg(wrapperspb.String(strconv.Itoa(j))); err != nil {
					return err
				}
				if err := s.RecvMsg(new(wrapperspb.StringValue)); err != nil {
					return err
				}
			}
			if err := s.CloseSend(); err != nil {
				return err
			}
			if err := s.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
				return err
			}
			return nil
		})
		fmt.Fprintln(w, res)
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) {
		cc, err := dial(r.URL.Query().Get("to"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer cc.Close()
		err = cc.Invoke(context.Background(), "/demo.Nobody/Home", wrapperspb.String("x"), new(wrapperspb.StringValue))
		fmt.Fprintln(w, status.Code(err))
	})
	mux.HandleFunc("/bench", func(w http.ResponseWriter, r *http.Request) {
		cc, err := dial(r.URL.Query().Get("to"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer cc.Close()
		n := intParam(r, "n", 1000)
		took := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			t0 := time.Now()
			if err := cc.Invoke(context.Background(), "/demo.Echo/Unary", wrapperspb.String("ok"), new(wrapperspb.StringValue)); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			took = append(took, time.Since(t0))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		fmt.Fprintf(w, "p50_us=%.1f p99_us=%.1f\n", float64(took[n/2].Nanoseconds())/1e3, float64(took[n*99/100].Nanoseconds())/1e3)
	})
	mux.HandleFunc("/addr", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, lis.Addr())
	})
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("grpc on %s\nlistening on %s\n", lis.Addr(), hl.Addr())
	go http.Serve(hl, mux)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Stop()
}
