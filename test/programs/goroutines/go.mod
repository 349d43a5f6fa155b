module gotrail.test/goroutines

go 1.19

require golang.org/x/sync v0.3.0
