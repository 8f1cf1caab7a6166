module github.com/sipdispatch/sipdispatch

go 1.26
