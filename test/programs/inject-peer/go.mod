module gotrail.test/injectpeer

go 1.26.0
