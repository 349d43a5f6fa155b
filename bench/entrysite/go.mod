module gotrail.dev/bench/entrysite

go 1.19
