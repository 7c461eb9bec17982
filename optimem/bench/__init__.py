"""Benchmarks run by `optimem bench NAME` (never as timed tests). One module per benchmark."""
