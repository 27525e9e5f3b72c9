"""Benchmarks: scripts that measure speed and memory and print numbers (never timed tests)."""
