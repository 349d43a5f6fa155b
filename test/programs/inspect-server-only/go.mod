module example.com/gotrail/inspect-server-only

go 1.19
