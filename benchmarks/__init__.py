"""Benchmarks run by `make bench`; each `bench_*.py` module writes its numbers to results/."""
