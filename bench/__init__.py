"""Benchmarks: ``python -m bench [--quick] [--json FILE] [--only NAME]`` (see bench/README.md)."""
