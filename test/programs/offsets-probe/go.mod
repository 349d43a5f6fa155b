module gotrail/test/programs/offsets-probe

go 1.19
