"""The cross-dataset protocol: train on one dataset, test on another (issue 21).

Each run trains one recipe with one loss on the training images of one
source dataset (`keras-vessel train`, fixed budget, early stopping off) and
stores its threshold, chosen on that source's training images. Every run is
then scored on the test split of its own dataset (in-domain) and of the other
one (cross-dataset) at that threshold: pooled AUC, F1, accuracy, thin-vessel
sensitivity, and the worst image's AUC and F1, because users meet the image
that fails, not the mean. Nothing about the target dataset chooses anything.

    .venv/bin/python -m experiments.cross_dataset --out runs/cross_dataset [--only NAME ...] [--jobs 2]
    .venv/bin/python -m experiments.cross_dataset --summarize

Resumable: a finished training or score is not redone. Two trainings run side
by side with one thread each (`--jobs 2`, 1.2x the throughput of one
two-thread run on a 2-core CPU). Results go to
``experiments/results/cross_dataset.json``; `--summarize` prints the tables of
docs/RESULTS.md from it, with the verdicts of the rules written there before
the runs (`recipe_verdict`, `loss_verdict`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERAS_VESSEL_DATA", REPOSITORY.parent / "shared" / "data"))
# The command the drivers train with: this interpreter's keras-vessel.
KERAS_VESSEL = str(Path(sys.executable).with_name("keras-vessel"))
ROOTS = {"drive": "DRIVE", "chase_db1": "CHASE_DB1"}
DATASETS = tuple(ROOTS)
RESULTS = REPOSITORY / "experiments" / "results" / "cross_dataset.json"
STEPS = 3000  # 30 epochs of 100 steps: section 1c's budget

# The recipe of the shipped v3 model, the one issue 21 proposes (configs/transfer.yaml), that one with all
# three colour channels (each standardised locally) instead of green, and that one with old's input (RGB
# standardised with the training set's colour statistics) but the common scale and camera augmentation:
# extra config files and `--set` values on top of configs/compact.yaml and the source's configs/datasets/
# file. All keep the paper's augmentation (flips, quarter turns, CLAHE / contrast stretch / noise variants).
RECIPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "old": ((), ("data.channel=rgb", "data.normalisation=dataset")),
    "new": (("configs/transfer.yaml",), ()),
    "new_rgb": (("configs/transfer.yaml",), ("data.channel=rgb",)),
    "aug": (("configs/transfer.yaml",), ("data.channel=rgb", "data.normalisation=dataset")),
}
# aug with one part of what it shares with new taken out (notebook entry f): no scale jitter; no blur or JPEG;
# no brightness, contrast, gamma or colour balance.
AUG_ABLATIONS = {
    "aug_nojitter": ("data.scale_jitter=0",),
    "aug_sharp": ("data.augment.blur_probability=0", "data.augment.jpeg_probability=0"),
    "aug_nophoto": ("data.augment.brightness=0", "data.augment.contrast=0", "data.augment.gamma=0",
                    "data.augment.colour_balance=0"),
}
RECIPES.update({name: (RECIPES["aug"][0], RECIPES["aug"][1] + sets) for name, sets in AUG_ABLATIONS.items()})
# The recipes judged against "old" by the recipe rule, in the order they were put to it.
CANDIDATES = ("new", "new_rgb", "aug", *AUG_ABLATIONS)
# The recipe the recipe rule adopted (docs/RESULTS.md section 1): configs/general.yaml trains it on both datasets.
GENERAL_RECIPE = "aug_sharp"
GENERAL_LOSS = "joint"  # the loss rule (`loss_verdict`) at GENERAL_RECIPE
# Issue 23's small network (notebook entry e): the W-Net with 8 filters, depth 2, on 2x2 pixel groups, run at a
# recipe as "<recipe>_wnet" and judged against the compact U-Net's runs of that recipe (`network_verdict`).
WNET_OPTIONS = {"base_filters": 8, "depth": 2, "block": 2}
WNET_SETS = ("model.name=wnet", *(f"model.options.{key}={value}" for key, value in WNET_OPTIONS.items()))
WNET_RECIPES = {"aug_sharp_wnet": GENERAL_RECIPE}
RECIPES.update({name: (RECIPES[base][0], RECIPES[base][1] + WNET_SETS) for name, base in WNET_RECIPES.items()})
# The W-Net's budget in epochs of 100 steps: the compact U-Net's 3000 steps in the same wall time on the same
# machine, two runs side by side (entry e's rule; measured and written down in entry f).
# aug_sharp: compact 23.30 s per epoch (median of its four pixel-wise runs), W-Net 8.30 s (median of the
# first three epochs of its two seed-0 runs), on a 2-core Xeon (AVX-512): 30 x 23.30 / 8.30 = 84.
WALL_TIME_EPOCHS: dict[str, int] = {"aug_sharp_wnet": 84}
# What the protocol's runs of the new recipe were given (revision 9f41dc3), before configs/transfer.yaml
# existed; tests/experiments/test_cross_dataset.py checks that the file says the same.
NEW_RECIPE_AS_RUN = (
    "data.channel=green",
    "data.normalisation=local",
    "data.fov_diameter=540",
    "data.scale_jitter=0.2",
    "data.augment.brightness=0.3",
    "data.augment.contrast=0.3",
    "data.augment.gamma=0.4",
    "data.augment.colour_balance=0.15",
    "data.augment.blur_probability=0.25",
    "data.augment.jpeg_probability=0.25",
)
LOSSES = ("pixel", "joint")
SEEDS = (0, 1)


@dataclass(frozen=True)
class Run:
    """One training: a recipe and a loss on one source dataset with one seed."""

    recipe: str
    loss: str
    source: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.recipe}_{self.loss}_{self.source}_s{self.seed}"

    def train_command(self, keras_vessel: str, records: Path, out: Path) -> list[str]:
        extra_configs, recipe_sets = RECIPES[self.recipe]
        sets = [
            f"data.train_records={records / self.source / 'training'}",
            f"train.epochs={WALL_TIME_EPOCHS.get(self.recipe, STEPS // 100)}",
            "train.steps_per_epoch=100",
            "train.early_stopping_patience=0",
            f"train.seed={self.seed}",
            f"loss.kind={self.loss}",
            *recipe_sets,
        ]
        configs = [REPOSITORY / "configs" / "compact.yaml", *(REPOSITORY / c for c in extra_configs),
                   REPOSITORY / "configs" / "datasets" / f"{self.source}.yaml"]
        return [keras_vessel, "train", *(p for c in configs for p in ("--config", str(c))),
                *(p for s in sets for p in ("--set", s)), "--output", str(out / self.name), "--quiet"]


def planned_runs() -> list[Run]:
    """In the order of the rules: the recipes (pixel-wise), the losses at the candidates, then at the old one."""
    order = [("old", "pixel"), *((c, "pixel") for c in CANDIDATES), *((c, "joint") for c in CANDIDATES),
             ("old", "joint"), *((w, "pixel") for w in WNET_RECIPES)]
    return [Run(recipe, loss, source, seed) for recipe, loss in order for seed in SEEDS for source in DATASETS]


# --------------------------------------------------------------------------- scoring


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The protocol's numbers from an evaluation report (`keras_vessel.evaluation.evaluate`)."""
    rows = report["per_image"]
    worst_auc = min(rows, key=lambda row: row["AUC"])
    worst_f1 = min(rows, key=lambda row: row["F1"])
    summary = report["summary"]
    return {
        "images": len(rows),
        "threshold": rows[0]["threshold"],
        "AUC_pooled": summary["AUC_pooled"],
        "AUC_mean": summary["AUC"],
        "F1": summary["F1"],
        "Acc": summary["Acc"],
        "Se": summary["Se"],
        "Sp": summary["Sp"],
        "Se_thin": summary.get("Se_thin"),
        "worst_AUC": worst_auc["AUC"],
        "worst_AUC_image": worst_auc["name"],
        "worst_F1": worst_f1["F1"],
        "worst_F1_image": worst_f1["name"],
        # the factors the images ran at (``--scale multi``: a list of factors per image)
        "scales": sorted({round(factor, 3) for row in rows for factor in _factors(row.get("scale", 1.0))}),
    }


def _factors(scale: float | Sequence[float]) -> Sequence[float]:
    return scale if isinstance(scale, (list, tuple)) else [scale]


def median_fov_diameter(samples: Iterable) -> float:
    """The median FOV diameter (px, `keras_vessel.data.scaling.image_fov`) of a dataset's images."""
    from keras_vessel.data.scaling import image_fov

    return float(statistics.median(image_fov(spec.load().image).diameter for spec in samples))


def score_run(run_dir: Path, source: str, *, scale: str, data: Path = SHARED, targets: Sequence[str] = DATASETS,
              progress: bool = False) -> dict[str, dict[str, Any]]:
    """Score one finished run on the test split of every target; reports go to ``run_dir/eval_{scale}_*``.

    ``scale="none"`` runs every image at its own grid (how v3 was used);
    ``"auto"`` resamples it to the FOV diameter the model records, or, for a
    model that records none, to its source's median training FOV diameter
    (`keras_vessel.models.record_fov_diameter`). The threshold is chosen on
    the source's training images at the same scale, never on a target.
    """
    import keras

    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import choose_training_threshold, evaluate
    from keras_vessel.models import build_inference_model, model_fov_diameter, record_fov_diameter

    if scale not in ("none", "auto"):
        raise ValueError(f"scale must be 'none' or 'auto', got {scale!r}")
    model_path = run_dir / "model.keras"
    network = keras.saving.load_model(model_path, compile=False)
    training = open_dataset(source, data / ROOTS[source], "training")
    if scale == "auto" and model_fov_diameter(network) is None:
        network = record_fov_diameter(network, median_fov_diameter(training))
    model = build_inference_model(network)
    options = {"scale": scale}
    threshold = choose_training_threshold(model, training, progress=progress, predict_options=options)
    rule = f"accuracy-optimal on the {len(training)} {source} training images (scale {scale})"
    scores = {}
    for target in targets:
        report = evaluate(model, open_dataset(target, data / ROOTS[target], "test"),
                          output_dir=run_dir / f"eval_{scale}_{target}", threshold=threshold, threshold_rule=rule,
                          dataset=target, split="test", model_path=model_path, overlays=False, progress=progress,
                          predict_options=options)
        scores[target] = summarise(report)
    return scores


def scales_of(recipe: str) -> tuple[str, ...]:
    """How a recipe's runs are scored: the old one as shipped (native) and with scale auto; the others auto."""
    return ("none", "auto") if recipe == "old" else ("auto",)


# --------------------------------------------------------------------------- rules (docs/RESULTS.md)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def pooled(results: dict[str, Any], recipe: str, loss: str, *, variant: str = "auto") -> dict[str, Any]:
    """One setting over its seeds: in-domain AUC per source, cross-dataset AUC per direction and overall,
    worst cross-dataset image (per seed, averaged), thin-vessel Se."""
    runs = [r for r in results["runs"].values()
            if r["recipe"] == recipe and r["loss"] == loss and variant in r.get("scores", {})]
    out: dict[str, Any] = {"seeds": sorted({r["seed"] for r in runs})}
    for source in DATASETS:
        mine = [r["scores"][variant] for r in runs if r["source"] == source]
        target = next(t for t in DATASETS if t != source)
        out[f"in_{source}"] = _mean(s[source]["AUC_pooled"] for s in mine)
        out[f"cross_{source}_to_{target}"] = _mean(s[target]["AUC_pooled"] for s in mine)
        out[f"cross_{source}_to_{target}_F1"] = _mean(s[target]["F1"] for s in mine)
        out[f"thin_in_{source}"] = _mean(s[source]["Se_thin"] for s in mine)
    cross = [(r["seed"], r["scores"][variant][t]) for r in runs for t in DATASETS if t != r["source"]]
    out["cross_mean"] = _mean(score["AUC_pooled"] for _, score in cross)
    seeds = out["seeds"]
    out["worst_AUC"] = _mean(min(score["worst_AUC"] for seed, score in cross if seed == s) for s in seeds)
    out["worst_F1"] = _mean(min(score["worst_F1"] for seed, score in cross if seed == s) for s in seeds)
    return out


def recipe_verdict(old: dict[str, Any], new: dict[str, Any], *, in_domain_tolerance: float = 0.002) -> dict[str, Any]:
    """Issue 21's rule: adopt `new` only if its in-domain AUC drops by at most 0.002 on each source
    and both the mean cross-dataset AUC and the worst cross-dataset image's AUC improve."""
    checks = {f"in_{s}": new[f"in_{s}"] >= old[f"in_{s}"] - in_domain_tolerance for s in DATASETS}
    checks["cross_mean"] = new["cross_mean"] > old["cross_mean"]
    checks["worst_AUC"] = new["worst_AUC"] > old["worst_AUC"]
    return {"adopt": all(checks.values()), "checks": checks}


def network_verdict(compact: dict[str, Any], small: dict[str, Any], *, in_domain_tolerance: float = 0.002
                    ) -> dict[str, Any]:
    """Issue 23's accuracy rule: the small network's in-domain AUC at most 0.002 below the compact U-Net's on
    each source and its mean cross-dataset AUC not lower (its speed is judged by `benchmarks.bench_networks`)."""
    checks = {f"in_{s}": small[f"in_{s}"] >= compact[f"in_{s}"] - in_domain_tolerance for s in DATASETS}
    checks["cross_mean"] = small["cross_mean"] >= compact["cross_mean"]
    return {"holds": all(checks.values()), "checks": checks}


def loss_verdict(results: dict[str, Any], recipe: str, *, variant: str = "auto") -> dict[str, Any]:
    """The joint loss helps transfer if its cross-dataset AUC is higher in at least 3 of the 4
    (seed, direction) pairs and on the mean of them."""
    by_key = {}
    for run in results["runs"].values():
        if run["recipe"] == recipe and variant in run.get("scores", {}):
            target = next(t for t in DATASETS if t != run["source"])
            by_key[(run["loss"], run["source"], run["seed"])] = run["scores"][variant][target]["AUC_pooled"]
    pairs = [(by_key[("joint", s, seed)], by_key[("pixel", s, seed)]) for (loss, s, seed) in by_key
             if loss == "joint" and ("pixel", s, seed) in by_key]
    differences = [joint - pixel for joint, pixel in pairs]
    higher = sum(d > 0 for d in differences)
    return {"pairs": len(pairs), "higher": higher, "mean_difference": _mean(differences),
            "ahead": len(pairs) >= 4 and higher >= 3 and _mean(differences) > 0}


# --------------------------------------------------------------------------- driver


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def save_results(path: Path, results: dict[str, Any]) -> None:
    from keras_vessel.io import write_json_atomic

    write_json_atomic(path, results)


def finished_run(run_dir: Path) -> bool:
    from keras_vessel.training.run_folder import FINISHED_STATUSES

    info = run_dir / "run.json"
    return info.is_file() and json.loads(info.read_text()).get("status") in FINISHED_STATUSES


def train_all(runs: Sequence[Run], out: Path, records: Path, *, jobs: int, keras_vessel: str) -> None:
    """Train every unfinished run, `jobs` at a time with one thread each, logging beside each folder."""
    todo = [run for run in runs if not finished_run(out / run.name)]
    environment = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1") if jobs > 1 else None
    running: list[tuple[Run, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < jobs:
            run = todo.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            log = (out / f"{run.name}.log").open("a")
            print(f"train {run.name}", file=sys.stderr, flush=True)
            process = subprocess.Popen(run.train_command(keras_vessel, records, out), stdout=log,
                                       stderr=subprocess.STDOUT, env=environment)
            running.append((run, process, time.monotonic()))
        time.sleep(5)
        for item in list(running):
            run, process, started = item
            if process.poll() is not None:
                running.remove(item)
                minutes = (time.monotonic() - started) / 60
                state = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
                print(f"{state}: {run.name} after {minutes:.1f} min", file=sys.stderr, flush=True)


def score_all(runs: Sequence[Run], out: Path, results_path: Path, *, data: Path) -> dict[str, Any]:
    results = load_results(results_path)
    for run in runs:
        run_dir = out / run.name
        if not finished_run(run_dir):
            continue
        entry = results["runs"].setdefault(run.name, {"recipe": run.recipe, "loss": run.loss,
                                                       "source": run.source, "seed": run.seed, "scores": {}})
        info = json.loads((run_dir / "run.json").read_text())
        entry["git_revision"], entry["machine"] = info.get("git_revision"), info.get("machine")
        for variant in scales_of(run.recipe):
            if variant not in entry["scores"]:
                print(f"score {run.name} ({variant})", file=sys.stderr, flush=True)
                entry["scores"][variant] = score_run(run_dir, run.source, scale=variant, data=data)
                save_results(results_path, results)
    return results


def _cell(value: float, digits: int) -> str:
    """A table number, or "-" where a setting has no run of that source yet."""
    return "-" if value != value else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The markdown tables of docs/RESULTS.md, with the rules' verdicts."""
    header = ("| recipe | loss | seeds | in-domain DRIVE | in-domain CHASE_DB1 | DRIVE -> CHASE_DB1 | "
              "CHASE_DB1 -> DRIVE | cross mean | worst image AUC | worst image F1 | F1 D->C / C->D | "
              "Se thin in D / C |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    settings = [("old", "pixel", "none", "old (v3's, native scale)"), ("old", "pixel", "auto", "old + scale auto"),
                ("old", "joint", "none", "old (v3's, native scale)"), ("old", "joint", "auto", "old + scale auto"),
                *((c, loss, "auto", c) for c in CANDIDATES for loss in LOSSES),
                *((w, "pixel", "auto", f"{w} (W-Net, 2x2 blocks)") for w in WNET_RECIPES)]
    pooled_settings = {}
    for recipe, loss, variant, label in settings:
        row = pooled(results, recipe, loss, variant=variant)
        if not row["seeds"]:
            continue
        pooled_settings[(recipe, loss, variant)] = row
        cells = [label, loss, ",".join(map(str, row["seeds"])),
                 *(_cell(row[key], 4) for key in ("in_drive", "in_chase_db1", "cross_drive_to_chase_db1",
                                                  "cross_chase_db1_to_drive", "cross_mean", "worst_AUC")),
                 _cell(row["worst_F1"], 3),
                 f"{_cell(row['cross_drive_to_chase_db1_F1'], 3)} / {_cell(row['cross_chase_db1_to_drive_F1'], 3)}",
                 f"{_cell(row['thin_in_drive'], 3)} / {_cell(row['thin_in_chase_db1'], 3)}"]
        lines.append("| " + " | ".join(cells) + " |")
    old = pooled_settings.get(("old", "pixel", "none"))
    lines.append("")
    for candidate in CANDIDATES:
        new = pooled_settings.get((candidate, "pixel", "auto"))
        if old and new and new["seeds"] != list(SEEDS):
            lines.append(f"Recipe rule (pixel-wise): {candidate} has seeds {new['seeds']} of {list(SEEDS)}: no verdict")
        elif old and new:
            verdict = recipe_verdict(old, new)
            lines.append(f"Recipe rule (pixel-wise): adopt {candidate} = {verdict['adopt']} ({verdict['checks']})")
    for small, base in WNET_RECIPES.items():
        compact, row = pooled_settings.get((base, "pixel", "auto")), pooled_settings.get((small, "pixel", "auto"))
        if compact and row and row["seeds"] != list(SEEDS):
            lines.append(f"Network rule: {small} has seeds {row['seeds']} of {list(SEEDS)}: no verdict")
        elif compact and row:
            verdict = network_verdict(compact, row)
            lines.append(f"Network rule (accuracy, against the compact U-Net at {base}): holds = "
                         f"{verdict['holds']} ({verdict['checks']})")
    for recipe in RECIPES:
        verdict = loss_verdict(results, recipe, variant="auto")
        if verdict["pairs"]:
            lines.append(f"Loss rule ({recipe} recipe): joint ahead = {verdict['ahead']} (higher in "
                         f"{verdict['higher']} of {verdict['pairs']} pairs, mean {verdict['mean_difference']:+.4f})")
    return "\n".join(lines)


def protocol_parser(description: str, *, out: str, records: str | None, records_help: str = "", data_help: str,
                    results: Path, only_help: str = "Run names to train and score.",
                    jobs: bool = True) -> argparse.ArgumentParser:
    """The command-line options a protocol driver shares (runs, records, data, selection, results).

    A driver that prepares no records (`records=None`) or trains one run at a time (`jobs=False`) has no
    ``--records`` or ``--jobs``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(out), help="Folder of the runs.")
    if records is not None:
        parser.add_argument("--records", type=Path, default=Path(records), help=records_help)
    parser.add_argument("--data", type=Path, default=SHARED, help=data_help)
    parser.add_argument("--only", nargs="*", default=None, help=only_help)
    if jobs:
        parser.add_argument("--jobs", type=int, default=2, help="Trainings side by side (one thread each if > 1).")
    parser.add_argument("--results", type=Path, default=results, help="Results JSON.")
    parser.add_argument("--summarize", action="store_true", help="Only print the tables from the results.")
    parser.add_argument("--no-train", action="store_true", help="Only score the runs already trained.")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = protocol_parser(__doc__.split("\n\n")[0], out="runs/cross_dataset", records="data",
                             records_help="Folder holding drive/training and chase_db1/training (prepared if missing).",
                             data_help="Folder with DRIVE/ and CHASE_DB1/.", results=RESULTS)
    args = parser.parse_args(argv)
    if args.summarize:
        print(table(load_results(args.results)))
        return
    runs = [run for run in planned_runs() if args.only is None or run.name in args.only]
    if not args.no_train:  # scoring reads the datasets themselves, not the records
        for source in DATASETS:
            folder = args.records / source / "training"
            if not (folder / "manifest.json").is_file():
                subprocess.run([KERAS_VESSEL, "prepare", "--dataset", source, "--root",
                                str(args.data / ROOTS[source]), "--split", "training", "--out", str(folder),
                                "--workers", "2", "--quiet"], check=True)
        train_all(runs, args.out, args.records, jobs=args.jobs, keras_vessel=KERAS_VESSEL)
    results = score_all(runs, args.out, args.results, data=args.data)
    print(table(results))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
