module pam.example/benchmarks/barerelay

go 1.24
