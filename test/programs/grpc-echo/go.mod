module example.com/gotrail/grpc-echo

go 1.19

require google.golang.org/grpc v1.64.1
