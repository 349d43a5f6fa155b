module gotrail.demo/service

go 1.19
