"""Benchmarks: each script prints a table and writes JSON + PNG under benchmarks/results/<machine>/."""
