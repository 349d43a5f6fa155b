module gotrail/offsets-db/generator

go 1.19
