"""Benchmarks (`make bench`): throughput ratios against a baseline measured in the same run."""
