"""Benchmarks on the standard workload."""
