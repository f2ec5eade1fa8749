"""Benchmarks of hyperwall: synthetic fleets and the measurements run on them.

Run them with the wrapper scripts in this folder (`benchmarks/compile`); results are written
to `docs/benchmarks.md`.
"""
