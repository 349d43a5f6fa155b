module gotrail.test/http-routes

go 1.22
