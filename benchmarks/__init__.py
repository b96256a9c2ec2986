"""Timing scripts (`bench_*.py`), run from the repository root as modules, e.g.
``.venv/bin/python -m benchmarks.bench_inference``; results go to ``benchmarks/results/``."""
