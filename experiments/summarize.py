"""The tables of docs/RESULTS.md, made from the committed results files (never copied by hand).

Each table has a name; in a Markdown document it sits between

    <!-- table: NAME (python -m experiments.summarize --write docs/RESULTS.md) -->
    ...
    <!-- end of table -->

`--write` refreshes every such block from the results files, `--check` exits
1 when one is out of date (a test runs it), and a NAME argument prints that
table. The long per-run tables of the lab notebook come from the same rows:
`--notebook` prints them all.

    .venv/bin/python -m experiments.summarize --write docs/RESULTS.md
    .venv/bin/python -m experiments.summarize paper
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "experiments" / "results"
BENCHMARKS = REPOSITORY / "benchmarks" / "results"
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

# The authors' results (../shared/docs/METHOD.md section 5): Se, Sp, Acc, Pr, AUC.
PAPER = {
    ("drive", "pixel"): (0.7562, 0.9797, 0.9513, 0.8448, 0.9720),
    ("drive", "joint"): (0.7653, 0.9818, 0.9542, 0.8595, 0.9752),
    ("chase_db1", "pixel"): (0.7419, 0.9807, 0.9588, 0.7946, 0.9750),
    ("chase_db1", "joint"): (0.7633, 0.9809, 0.9610, 0.8012, 0.9781),
}
DATASET_NAMES = {"drive": "DRIVE", "chase_db1": "CHASE_DB1"}


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


# --------------------------------------------------------------------------- the named tables


def _reproduce_rows() -> list[dict]:
    return json.loads((RESULTS / "reproduce.json").read_text())["results"]["runs"]


# (dataset, our setting, the paper's row it is compared with, budget shown)
HEADLINE = [
    ("drive", "pixel, 3000 steps", "pixel", "3000 steps, green"),
    ("drive", "joint, 3000 steps", "joint", "3000 steps, green"),
    ("drive", "pixel, 9000 steps, RGB input", "pixel", "9000 steps, RGB (v3's recipe)"),
    ("drive", "joint, 9000 steps, RGB input", "joint", "9000 steps, RGB"),
    ("chase_db1", "pixel, 3000 steps", "pixel", "3000 steps, green"),
    ("chase_db1", "joint, 3000 steps", "joint", "3000 steps, green"),
    ("chase_db1", "pixel, 9000 steps", "pixel", "9000 steps, green"),
    ("chase_db1", "joint, 9000 steps", "joint", "9000 steps, green"),
]


def paper_table() -> str:
    """Each dataset's own test split against the paper: our runs (mean ± sd over seeds) beside the authors' rows."""
    groups = grouped(_reproduce_rows())
    header = ["dataset", "loss", "training", "seeds", "Se", "Sp", "Acc", "Pr", "AUC", "AUC, TTA d4", "Se thin"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in DATASET_NAMES:
        for loss in ("pixel", "joint"):
            se, sp, acc, pr, auc = PAPER[(dataset, loss)]
            lines.append(f"| {DATASET_NAMES[dataset]} | {loss} | the paper | | {se:.4f} | {sp:.4f} | {acc:.4f} | "
                         f"{pr:.4f} | {auc:.4f} | | |")
        for name, setting, loss, budget in HEADLINE:
            if name != dataset or (dataset, setting) not in groups:
                continue
            runs = groups[(dataset, setting)]
            cells = [DATASET_NAMES[dataset], loss, budget, ",".join(str(r["seed"]) for r in runs)]
            for key in ("Se", "Sp", "Acc", "precision", "AUC_pooled", "tta.d4.AUC_pooled", "Se_thin"):
                values = [score(r, key) for r in runs]
                cells.append("–" if None in values else mean_std(values, 3 if key == "Se_thin" else 4))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# joint minus pixel-wise, paired by seed: (dataset, pixel setting, joint setting, label)
JOINT_PAIRS = [
    ("drive", "pixel", "joint", "1000 steps, green"),
    ("drive", "pixel, 3000 steps", "joint, 3000 steps", "3000 steps, green"),
    ("drive", "pixel, 9000 steps, RGB input", "joint, 9000 steps, RGB input", "9000 steps, RGB"),
    ("chase_db1", "pixel, 3000 steps, RGB input", "joint, 3000 steps, RGB input", "3000 steps, RGB"),
    ("chase_db1", "pixel, 3000 steps", "joint, 3000 steps", "3000 steps, green"),
    ("chase_db1", "pixel, 9000 steps", "joint, 9000 steps", "9000 steps, green"),
]


def joint_table() -> str:
    """Does the joint loss help? Its test AUC and thin-vessel Se minus the pixel-wise loss's, seed by seed."""
    from scipy import stats

    groups = grouped(_reproduce_rows())
    header = ["dataset", "training", "seed pairs", "AUC: joint higher in", "AUC difference (mean ± sd)", "p (paired t)",
              "Se thin difference"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, pixel, joint, label in JOINT_PAIRS:
        first = {r["seed"]: r for r in groups.get((dataset, pixel), [])}
        second = {r["seed"]: r for r in groups.get((dataset, joint), [])}
        seeds = sorted(set(first) & set(second))
        if not seeds:
            continue
        auc = [score(second[s], "AUC_pooled") - score(first[s], "AUC_pooled") for s in seeds]
        thin = [score(second[s], "Se_thin") - score(first[s], "Se_thin") for s in seeds]
        p = stats.ttest_rel([score(second[s], "AUC_pooled") for s in seeds],
                            [score(first[s], "AUC_pooled") for s in seeds]).pvalue if len(seeds) > 1 else None
        spread = f" ± {statistics.stdev(auc):.4f}" if len(seeds) > 1 else ""
        lines.append(f"| {DATASET_NAMES[dataset]} | {label} | {len(seeds)} | {sum(d > 0 for d in auc)} of {len(seeds)} | "
                     f"{statistics.fmean(auc):+.4f}{spread} | {'–' if p is None else f'{p:.2f}'} | "
                     f"{statistics.fmean(thin):+.3f} |")
    return "\n".join(lines)


def ablation_table() -> str:
    """Beyond the paper (issue 7): clDice and Skeleton Recall added to the losses, DRIVE, 1000 steps, 3 seeds."""
    groups = grouped(_reproduce_rows())
    return table(groups, ABLATION, {"drive"}, ["pixel", "joint", "pixel+cldice", "pixel+skelrecall",
                                               "joint+skelrecall"])


def cross_dataset_table() -> str:
    """The cross-dataset protocol (issue 21): `experiments.cross_dataset.table`."""
    from experiments.cross_dataset import RESULTS as CROSS, table as cross_table

    return cross_table(json.loads(CROSS.read_text())) if CROSS.is_file() else "(not run yet)"


def driver_table(module: str, results: str = "RESULTS") -> str:
    """The table of the experiment driver `module` (``experiments.<module>``) from its results file (the path
    the module calls `results`), by its own `table` function; "(not run yet)" without one."""
    import importlib

    driver = importlib.import_module(f"experiments.{module}")
    path = getattr(driver, results)
    return driver.table(json.loads(path.read_text())) if path.is_file() else "(not run yet)"


def leave_one_camera_out_table() -> str:
    """The leave-one-camera-out protocol (issue 30)."""
    return driver_table("leave_one_camera_out")


def leave_one_camera_out_full_table() -> str:
    """The shipped recipe at full length on the leave-one-camera-out protocol (issue 30's bar)."""
    return driver_table("leave_one_camera_out", "FULL_LENGTH_RESULTS")


def finetune_protocol_table() -> str:
    """The fine-tuning protocol (issue 31)."""
    return driver_table("finetune_protocol")


def five_cameras_table() -> str:
    """The five-camera W-Net beside the bundled model (issues 30, 32)."""
    return driver_table("five_cameras")


def robustness_table() -> str:
    """Camera shifts made on the test images (issue 21): `experiments.robustness.table`, the shipped model's
    columns only (`python -m experiments.robustness --summarize` prints every model's)."""
    from experiments.robustness import RESULTS as SHIFTED, table as shift_table
    from keras_vessel.models.inference import BUNDLED_MODEL

    if not SHIFTED.is_file():
        return "(not run yet)"
    results = json.loads(SHIFTED.read_text())
    shipped = f"bundled {BUNDLED_MODEL.parent.name}"
    return shift_table(results, labels=[label for label in results if label.startswith(shipped)])


def networks_table() -> str:
    """Issue 23 side by side: the W-Net against the compact U-Net, speed (`benchmarks.bench_networks`, run
    alone) and accuracy (the cross-dataset protocol at the same recipe and wall time), with the network rule."""
    from benchmarks.bench_networks import NETWORKS
    from benchmarks.common import RESULTS as BENCHMARKS
    from experiments.cross_dataset import RESULTS as CROSS, WNET_OPTIONS, WNET_RECIPES, network_verdict, pooled

    speed_file = BENCHMARKS / "networks.json"
    if not (speed_file.is_file() and CROSS.is_file()):
        return "(not run yet)"
    speed = json.loads(speed_file.read_text())
    cross = json.loads(CROSS.read_text())
    compact_title = next(iter(NETWORKS))
    wnet_title = next(title for title, (name, options) in NETWORKS.items()
                      if name == "wnet" and options == WNET_OPTIONS)
    header = ("| network | recipe | seeds | parameters | GFLOP / DRIVE image | ms / DRIVE image | ms / training step | "
              "inference ratio | step ratio | in-domain DRIVE | in-domain CHASE_DB1 | cross mean | Se thin in D / C |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    verdicts = []
    for small, base in WNET_RECIPES.items():
        rows = {}
        for title, recipe in ((compact_title, base), (wnet_title, small)):
            bench, accuracy = speed["results"]["networks"][title], pooled(cross, recipe, "pixel")
            rows[title] = accuracy
            lines.append(f"| {title} | {recipe} | {','.join(map(str, accuracy['seeds']))} | {bench['parameters']:,} | "
                         f"{bench['gflops_per_drive_image']:.1f} | {bench['inference_ms']:.0f} | "
                         f"{bench['train_step_ms']:.0f} | {bench['inference_ratio']:.2f} | "
                         f"{bench['train_step_ratio']:.2f} | {accuracy['in_drive']:.4f} | "
                         f"{accuracy['in_chase_db1']:.4f} | {accuracy['cross_mean']:.4f} | "
                         f"{accuracy['thin_in_drive']:.3f} / {accuracy['thin_in_chase_db1']:.3f} |")
        accuracy_rule = network_verdict(rows[compact_title], rows[wnet_title])
        ratio = speed["results"]["networks"][wnet_title]["inference_ratio"]
        verdicts.append(f"Network rule ({small}): accuracy holds = {accuracy_rule['holds']} "
                        f"({accuracy_rule['checks']}); inference at most a third = {ratio <= 1 / 3} "
                        f"(ratio {ratio:.2f}); adopt = {accuracy_rule['holds'] and ratio <= 1 / 3}")
    machine = speed["machine"]
    return "\n".join([*lines, "", *verdicts, "",
                      f"Speed measured on {machine['processor']}, {machine['cpu_count']} cores "
                      f"({', '.join(machine['cpu_flags'])}), load average {speed['load_average_start'][0]:.2f} "
                      f"at start: `{speed['command']}`"])


def measure_agreement_table() -> str:
    """Issue 32: each vessel measure of the bundled model's masks against the manual masks (relative bias, r)."""
    from experiments.measure_agreement import RESULTS as AGREEMENT, compact_table

    if not AGREEMENT.is_file():
        return "(not run yet)"
    return compact_table(json.loads(AGREEMENT.read_text()), columns=(
        "vessel_area_fraction", "vessel_length_px", "mean_width_px", "median_width_px", "tortuosity_arc_chord",
        "tortuosity_curvature", "fractal_dimension", "branch_points", "end_points", "segments"))


TABLES: dict[str, Callable[[], str]] = {
    "paper": paper_table,
    "joint": joint_table,
    "ablation": ablation_table,
    "cross_dataset": cross_dataset_table,
    "leave_one_camera_out": leave_one_camera_out_table,
    "leave_one_camera_out_full": leave_one_camera_out_full_table,
    "finetune_protocol": finetune_protocol_table,
    "five_cameras": five_cameras_table,
    "robustness": robustness_table,
    "networks": networks_table,
    "measure_agreement": measure_agreement_table,
}
BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z_]+) [^>]*-->\n)(?P<body>.*?)(<!-- end of table -->)", re.S)


def render(document: str) -> str:
    """`document` with every table block refreshed from the results files."""
    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"unknown table {name!r} in the document; known: {sorted(TABLES)}")
        return f"{match.group(1)}{TABLES[name]()}\n{match.group(4)}"

    return BLOCK.sub(fill, document)


def notebook() -> str:
    """Every per-run table of the lab notebook (docs/notebook/), from reproduce.json."""
    rows = _reproduce_rows()
    groups = grouped(rows)
    parts = [table(groups, COLUMNS, {"drive"}, ["pixel", "joint"]), table(groups, COLUMNS, {"chase_db1"})]
    variants = sorted({setting for _, setting in groups if ", " in setting})
    parts.append(table(groups, RECIPE, {"drive"}, ["pixel", *(v for v in variants if "steps" not in v)], seed=0))
    parts.append(table(groups, LONGER, {"drive"}, [v for v in variants if "steps" in v]))
    parts.append(table(groups, LONGER, {"chase_db1"}))
    parts += [paired_table(groups, dataset, first, second) for dataset, first, second in PAIRS]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"tables to print: {', '.join(TABLES)}")
    parser.add_argument("--write", type=Path, help="refresh the table blocks of this Markdown file")
    parser.add_argument("--check", type=Path, help="exit 1 if this file's table blocks are out of date")
    parser.add_argument("--notebook", action="store_true", help="print the notebook's per-run tables")
    args = parser.parse_args(argv)
    if args.write:
        args.write.write_text(render(args.write.read_text()))
    if args.check:
        text = args.check.read_text()
        if render(text) != text:
            print(f"{args.check}: tables out of date; run python -m experiments.summarize --write {args.check}",
                  file=sys.stderr)
            raise SystemExit(1)
    if args.notebook:
        print(notebook())
    for name in args.names:
        print(TABLES[name]())


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # the tables, not TensorFlow's CUDA probing
    main()
