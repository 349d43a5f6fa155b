module example.com/gotrail/analysis-replace

go 1.19

require example.com/localdep v1.2.3

replace example.com/localdep => ./localdep
