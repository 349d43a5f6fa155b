// Command inspect-grpc serves gRPC and calls nothing.
package main

import (
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
	fmt.Println(grpc.NewServer().Serve(ln))
}
