module example.com/gotrail/inspect-no-http

go 1.19
