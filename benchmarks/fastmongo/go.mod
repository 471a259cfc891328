module pam.example/benchmarks/fastmongo

go 1.24
