module gotrail.test/httpserver

go 1.19
