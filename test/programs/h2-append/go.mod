module example.com/gotrail/h2-append

go 1.24
