// demo-service plays any part of gotrail's demo, a small shop:
//
//	shop       HTTP front end: /checkout?item=ITEM asks "orders" over gRPC
//	           (demo.Orders/Place); /health answers at once.
//	orders     gRPC back end: demo.Orders/Place asks "inventory" over HTTP
//	           for stock and answers NotFound for an unknown item.
//	inventory  HTTP service: /stock/ITEM.
//
// It prints "listening on ADDR" once it serves. None of the parts knows
// anything about tracing. The gRPC service is described by hand (no
// generated code); its messages are google.protobuf.StringValue.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const placeMethod = "/demo.Orders/Place"

func main() {
	role := flag.String("role", "shop", "shop, orders or inventory")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	orders := flag.String("orders", "", "orders gRPC address host:port (shop only)")
	inventory := flag.String("inventory", "", "inventory base URL (orders only)")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	switch *role {
	case "orders":
		err = serveOrders(ln, *inventory)
	case "inventory":
		err = http.Serve(ln, inventoryMux())
	default:
		err = serveShop(ln, *orders)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

func inventoryMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/stock/", func(w http.ResponseWriter, r *http.Request) {
		item := strings.TrimPrefix(r.URL.Path, "/stock/")
		time.Sleep(time.Duration(2+rand.Intn(5)) * time.Millisecond)
		if item == "unicorn" {
			http.Error(w, "no such item", http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, "%s: %d in stock\n", item, rand.Intn(40))
	})
	return mux
}

type ordersServer interface{}

func serveOrders(ln net.Listener, inventory string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	place := func(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, "GET", inventory+"/stock/"+in.Value, nil)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		switch resp.StatusCode {
		case http.StatusOK:
			return wrapperspb.String(strings.TrimSpace(string(body))), nil
		case http.StatusNotFound:
			return nil, status.Error(codes.NotFound, "no such item: "+in.Value)
		default:
			return nil, status.Errorf(codes.Internal, "inventory answered %d", resp.StatusCode)
		}
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "demo.Orders",
		HandlerType: (*ordersServer)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Place", Handler: place}},
	}, nil)
	return srv.Serve(ln)
}

func serveShop(ln net.Listener, orders string) error {
	cc, err := grpc.Dial(orders, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/checkout", func(w http.ResponseWriter, r *http.Request) {
		item := r.URL.Query().Get("item")
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(ctx, placeMethod, wrapperspb.String(item), out)
		switch status.Code(err) {
		case codes.OK:
			fmt.Fprintf(w, "ordered %s (%s)\n", item, out.Value)
		case codes.NotFound:
			http.Error(w, status.Convert(err).Message(), http.StatusNotFound)
		default:
			http.Error(w, "orders said: "+err.Error(), http.StatusBadGateway)
		}
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	return http.Serve(ln, mux)
}
