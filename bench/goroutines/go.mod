module gotrail.bench/goroutines

go 1.19
