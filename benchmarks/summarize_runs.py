"""Turn benchmarks/results/reproduce.json into the Markdown tables of docs/RESULTS.md.

One row per (dataset, setting): mean +- sample standard deviation over the
seeds that finished (a single seed shows no +-), the seeds, and CPU minutes
per run. Step cost relative to pixel-wise comes from
benchmarks/results/loss_step.json (bench_loss_step.py) when present.

    .venv/bin/python benchmarks/summarize_runs.py [--input benchmarks/results/reproduce.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
COLUMNS = [
    ("Se", "Se"), ("Sp", "Sp"), ("Acc", "Acc"), ("Pr", "precision"), ("F1", "F1"),
    ("AUC pooled", "AUC_pooled"), ("AUC mean/img", "AUC"), ("Se thin", "Se_thin"), ("Se thick", "Se_thick"),
    ("clDice", "clDice"), ("Betti-0 err", "betti0_error"), ("Betti-1 err", "betti1_error"), ("CAL", "CAL"),
]  # fmt: skip
ABLATION = [("AUC pooled", "AUC_pooled"), ("F1", "F1"), ("Se thin", "Se_thin"), ("clDice", "clDice"),
            ("Betti-0 err", "betti0_error"), ("Betti-1 err", "betti1_error")]  # fmt: skip
# choosing a recipe: validation scores (DRIVE 39-40) first; the test columns are only reported
RECIPE = [("val AUC pooled", "validation.AUC_pooled"), ("val Acc", "validation.Acc"),
          ("val Se thin", "validation.Se_thin"), ("test AUC pooled", "AUC_pooled"), ("test Acc", "Acc"),
          ("test Se thin", "Se_thin"), ("test AUC, TTA d4", "tta.d4.AUC_pooled"),
          ("test Acc, TTA d4", "tta.d4.Acc")]  # fmt: skip
# joint vs pixel-wise at the longer budget: the recipe columns plus the test scores the paper reports
LONGER = [*RECIPE[:5], ("test Se", "Se"), ("test Sp", "Sp"), ("test F1", "F1"), *RECIPE[5:],
          ("test clDice", "clDice")]  # fmt: skip


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def score(row: dict, key: str) -> float | None:
    """``row["summary"][key]``; a dotted key reads elsewhere (``validation.AUC``, ``tta.d4.AUC``)."""
    *path, name = key.split(".")
    scores = row["summary"] if not path else row.get(path[0])
    for part in path[1:]:
        scores = (scores or {}).get(part)
    return None if scores is None else scores[name]


def grouped(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["setting"]), []).append(row)
    return groups


def table(groups: dict[tuple[str, str], list[dict]], columns: list[tuple[str, str]], datasets: set[str],
          settings: list[str] | None = None, extra: dict[str, str] | None = None, seed: int | None = None) -> str:
    header = ["dataset", "setting", "seeds", *[label for label, _ in columns], "threshold (train)", "CPU-min/run"]
    if extra is not None:
        header.append("step vs pixel")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, setting), runs in groups.items():
        runs = [r for r in runs if seed is None or r["seed"] == seed]
        if not runs or dataset not in datasets or (settings is not None and setting not in settings):
            continue
        cells = [dataset, setting, ",".join(str(r["seed"]) for r in runs)]
        for _, key in columns:
            digits = 1 if "betti" in key else 4
            values = [score(r, key) for r in runs]
            cells.append("–" if None in values else mean_std(values, digits))
        cells.append(mean_std([r["threshold"] for r in runs], 3))
        cells.append(mean_std([r["cpu_seconds"] / 60 for r in runs], 1))
        if extra is not None:
            cells.append(extra.get(setting, ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRED = [("test AUC pooled", "AUC_pooled"), ("test Acc", "Acc"), ("test Se", "Se"), ("test Se thin", "Se_thin"),
          ("test Se thick", "Se_thick"), ("test clDice", "clDice"), ("validation AUC", "validation.AUC_pooled"),
          ("test AUC, TTA d4", "tta.d4.AUC_pooled")]  # fmt: skip


# the paired comparisons of docs/RESULTS.md 1i and 1k: (dataset, first, second), printed as second minus first
PAIRS = [
    ("drive", "pixel, 3000 steps", "joint, 3000 steps"),
    ("drive", "joint, 3000 steps", "joint, complete reference skeletons, 3000 steps"),
    ("drive", "pixel, 9000 steps, RGB input", "pixel, 9000 steps, RGB input, weight average 0.999"),
    ("drive", "pixel, 9000 steps, RGB input", "joint, 9000 steps, RGB input"),
    ("drive", "pixel, 9000 steps, RGB input", "pixel, 9000 steps, RGB input, base_filters 16"),
    ("chase_db1", "pixel, 3000 steps, RGB input", "joint, 3000 steps, RGB input"),
    ("chase_db1", "pixel, 3000 steps", "joint, 3000 steps"),
    ("chase_db1", "pixel, 3000 steps, RGB input", "pixel, 3000 steps"),
    ("chase_db1", "joint, 3000 steps, RGB input", "joint, 3000 steps"),
    ("chase_db1", "pixel, 9000 steps", "joint, 9000 steps"),
    ("chase_db1", "pixel, 3000 steps", "pixel, 9000 steps"),
    ("chase_db1", "joint, 3000 steps", "joint, 9000 steps"),
]


def paired_table(groups: dict[tuple[str, str], list[dict]], dataset: str, first: str, second: str) -> str:
    """`second` minus `first`, seed by seed, with a paired t-test over the seeds both have."""
    from scipy import stats

    by_seed = [{r["seed"]: r for r in groups.get((dataset, setting), [])} for setting in (first, second)]
    seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
    statistics_columns = ["mean ± sd", "t", "p"] if len(seeds) > 1 else []  # one seed: no spread, no test
    header = [f"seed {seed}" for seed in seeds] + statistics_columns
    lines = [f"{dataset}: {second} minus {first}", "", "| | " + " | ".join(header) + " |",
             "|---|" + "---|" * len(header)]
    for label, key in PAIRED:
        pairs = [(score(by_seed[0][seed], key), score(by_seed[1][seed], key)) for seed in seeds]
        if not pairs or any(None in pair for pair in pairs):
            continue
        differences = [b - a for a, b in pairs]
        cells = [f"{d:+.4f}" for d in differences]
        if len(seeds) > 1:
            test = stats.ttest_rel([b for _, b in pairs], [a for a, _ in pairs])
            cells += [f"{statistics.fmean(differences):+.4f} ± {statistics.stdev(differences):.4f}",
                      f"{test.statistic:.2f}", f"{test.pvalue:.3f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=RESULTS / "reproduce.json")
    parser.add_argument("--step-costs", type=Path, default=RESULTS / "loss_step.json",
                        help="JSON from bench_loss_step.py (step time of each loss relative to pixel-wise)")
    args = parser.parse_args()
    record = json.loads(args.input.read_text())
    rows = record["results"]["runs"]
    groups = grouped(rows)
    print(f"<!-- made by benchmarks/summarize_runs.py from {args.input.name}; "
          f"revisions {sorted({r['git_revision'] for r in rows})} -->\n")
    print(table(groups, COLUMNS, {"drive"}, ["pixel", "joint"]), "\n")
    print(table(groups, COLUMNS, {"chase_db1"}), "\n")
    costs = {}
    if args.step_costs.is_file():
        ratios = json.loads(args.step_costs.read_text())["results"]["ratios"]
        costs = {k.replace("skeleton_recall", "skelrecall"): f"{v:.2f}x" for k, v in ratios.items()}
    losses = ["pixel", "joint", "pixel+cldice", "pixel+skelrecall", "joint+skelrecall"]
    print(table(groups, ABLATION, {"drive"}, losses, costs), "\n")
    variants = sorted({setting for _, setting in groups if ", " in setting})  # the issue-6 recipes
    print(table(groups, RECIPE, {"drive"}, ["pixel", *(v for v in variants if "steps" not in v)], seed=0), "\n")
    print(table(groups, LONGER, {"drive"}, [v for v in variants if "steps" in v]), "\n")
    print(table(groups, LONGER, {"chase_db1"}))
    for dataset, first, second in PAIRS:
        print("\n" + paired_table(groups, dataset, first, second))


if __name__ == "__main__":
    main()
