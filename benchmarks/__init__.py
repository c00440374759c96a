"""agentdata benchmarks: `make bench` (full) and `make bench-quick`; see benchmarks/README.md."""
