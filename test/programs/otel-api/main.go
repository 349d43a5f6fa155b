// A service that makes its own spans through the OpenTelemetry Go API's
// global tracer: with no SDK installed (the API's no-op tracer) unless -sdk
// is given, which installs the SDK's TracerProvider (recording in memory)
// before serving.
//
//	GET /outer          manual "outer-work" (attributes, an event) → http.Get /inner → reply
//	GET /inner          manual "inner-a" → manual "inner-b" (error status) → reply
//	GET /fanout?n=N     N goroutines, each a manual "fan-N" span, waited for
//	GET /sdk-spans      how many spans the SDK recorded (with -sdk)
//	GET /bench?n=N      N manual spans started and ended (the bridge's cost)
//
// It prints "listening on ADDR" once it serves.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// obtained before any provider is installed, as a package-level tracer
// usually is: with -sdk its spans go through the global delegate
var tracer = otel.Tracer("gotrail.test/otel-api")

var base string

func outer(w http.ResponseWriter, r *http.Request) {
	ctx, span := tracer.Start(r.Context(), "outer-work")
	span.SetAttributes(attribute.String("work.kind", "outer"), attribute.Int("work.items", 3))
	span.SetAttributes(attribute.Bool("work.cached", false), attribute.Float64("work.ratio", 0.25),
		attribute.StringSlice("work.tags", []string{"a", "b"}))
	span.AddEvent("fetching inner")
	resp, err := http.Get(base + "/inner")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	_ = ctx
	span.SetStatus(codes.Ok, "")
	span.End()
	io.WriteString(w, "outer\n")
}

func inner(w http.ResponseWriter, r *http.Request) {
	ctx, a := tracer.Start(r.Context(), "inner-a")
	_, b := tracer.Start(ctx, "inner-b", trace.WithAttributes(attribute.Bool("inner.b", true)))
	err := errors.New("inner-b failed")
	b.RecordError(err)
	b.SetStatus(codes.Error, "inner-b failed")
	b.End()
	a.End()
	io.WriteString(w, "inner\n")
}

func fanout(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, s := tracer.Start(context.Background(), "fan-"+strconv.Itoa(i))
			s.End()
		}(i)
	}
	wg.Wait()
	io.WriteString(w, "fanout\n")
}

func bench(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	ctx := context.Background()
	for i := 0; i < n; i++ {
		_, s := tracer.Start(ctx, "bench")
		s.End()
	}
	io.WriteString(w, "bench\n")
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	withSDK := flag.Bool("sdk", false, "install the SDK's TracerProvider")
	flag.Parse()
	var recorded *tracetest.InMemoryExporter
	if *withSDK {
		recorded = tracetest.NewInMemoryExporter()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(recorded)))
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	base = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/outer", outer)
	mux.HandleFunc("/inner", inner)
	mux.HandleFunc("/fanout", fanout)
	mux.HandleFunc("/bench", bench)
	mux.HandleFunc("/sdk-spans", func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if recorded != nil {
			n = len(recorded.GetSpans())
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	fmt.Printf("listening on %s\n", ln.Addr())
	http.Serve(ln, mux)
}
