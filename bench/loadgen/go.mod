module gotrail.bench/loadgen

go 1.19
