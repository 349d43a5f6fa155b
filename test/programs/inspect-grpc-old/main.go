// Command inspect-grpc-old serves gRPC and makes one gRPC call to itself. It is
// built against grpc-go v1.19.1, older than part of the offsets database (the
// transport's http2Server.conn is known from v1.20.0) and than the client
// probe's newClientStreamWithParams (v1.37.0), for `gotrail inspect`'s tests.
package main

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := grpc.NewServer()
	go srv.Serve(ln)
	cc, err := grpc.Dial(ln.Addr().String(), grpc.WithInsecure())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	fmt.Println(cc.Invoke(context.Background(), "/demo.Nobody/Home", nil, nil))
}
