module example.com/gotrail/xnet-http2

go 1.19

require golang.org/x/net v0.26.0

require golang.org/x/text v0.16.0 // indirect
