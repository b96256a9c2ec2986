"""Research drivers: the runs behind docs/RESULTS.md, as declarative tables with importable, tested scoring.

Run them as modules from the repository root, e.g. ``python -m experiments.cross_dataset``.
"""
