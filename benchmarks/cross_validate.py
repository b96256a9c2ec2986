"""Five-fold cross-validation over DRIVE's training images: the weight average against the raw weights.

Why: the reproduction runs hold out two training images (39-40) for
validation, too few to tell two recipes 0.001 AUC apart (docs/RESULTS.md 1i:
the weight-averaged runs scored higher on the test images in both seeds,
but not on those two). Here every training image is scored once, by a model
that did not see it. Each fold trains the shipped recipe (pixel-wise loss,
RGB, 9000 steps, seed 0) with `train.ema_momentum`, which keeps both
candidates of one training: `model.keras` (the average, best epoch by its
validation loss) and `model_raw.keras` (the raw weights, best epoch by
theirs), what the run would ship with and without the average. The raw
weights do not depend on the average, so the pair differs only in that.

Each is scored on the fold's held-out images at a threshold chosen on the
fold's training images (never on the held-out or test images). The test
split is not touched. The decision rule was written in docs/RESULTS.md
(section 1j) before the first fold ran: the average is adopted if its pooled
held-out AUC is higher in at least 4 of the 5 folds and on the mean over
folds.

    .venv/bin/python benchmarks/cross_validate.py --out runs/cross_validation [--folds 5] [--only 0 3]

A finished fold is skipped and a killed training resumes, so re-running
continues where it stopped. Writes benchmarks/results/cross_validation_ema.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_output_argument, begin, finish  # noqa: E402
from reproduce import EMA_MOMENTUM, ROOTS, prepare, records_folder, run_costed  # noqa: E402

CONFIG = "configs/drive_compact_pixel.yaml"
RECIPE = ("train.seed=0", "train.early_stopping_patience=0", "data.channel=rgb", f"train.ema_momentum={EMA_MOMENTUM}")
CANDIDATES = {"averaged": "model.keras", "raw": "model_raw.keras"}


def train_fold(fold: int, folds: int, epochs: int, out: Path, cli: str) -> Path:
    folder = out / f"fold{fold}"
    cost_path = folder / "train_cpu.json"
    if not cost_path.exists():
        sets = [*RECIPE, f"train.epochs={epochs}", f"data.folds={folds}", f"data.fold={fold}"]
        cost = run_costed([cli, "train", "--config", CONFIG, *(part for value in sets for part in ("--set", value)),
                           "--output", str(folder), "--quiet"], out / f"fold{fold}.log")
        cost_path.write_text(json.dumps(cost))
    return folder


def score_fold(folder: Path) -> dict:
    """Both candidates on the held-out images, each at a threshold chosen on the fold's training images."""
    from keras_vessel.datasets import open_dataset
    from keras_vessel.evaluation import choose_training_threshold, evaluate
    from keras_vessel.inference import load_inference_model
    from keras_vessel.tfrecords import read_samples

    run = json.loads((folder / "run.json").read_text())
    row = {"held_out": run["validation_images"], "git_revision": run["git_revision"],
           **json.loads((folder / "train_cpu.json").read_text())}
    held_out, training = None, None  # read only when a candidate is still to be scored
    for candidate, file in CANDIDATES.items():
        metrics_path = folder / f"eval_{candidate}" / "metrics.json"
        if not metrics_path.exists():
            if training is None:
                held_out = [spec for spec in open_dataset("drive", ROOTS["drive"], split="training")
                            if spec.name in run["validation_images"]]
                training = read_samples(records_folder("drive", "authors"), names=run["training_images"])
            model = load_inference_model(folder / file)
            threshold = choose_training_threshold(model, training, progress=False)
            evaluate(model, held_out, output_dir=folder / f"eval_{candidate}", threshold=threshold,
                     threshold_rule="accuracy-optimal on the fold's training images", dataset="drive",
                     split="validation", model_path=folder / file, overlays=False, progress=False)
        metrics = json.loads(metrics_path.read_text())
        row[candidate] = {"threshold": metrics["protocol"]["threshold"], "summary": metrics["summary"],
                          "per_image_auc": {image["name"]: image["AUC"] for image in metrics["per_image"]}}
    row["best_epochs"] = best_epochs(folder)
    return row


def best_epochs(folder: Path) -> dict[str, int]:
    """The epochs the two saved models come from (lowest validation loss of each)."""
    with open(folder / "history.csv", newline="") as stream:
        history = list(csv.DictReader(stream))
    return {candidate: int(min(history, key=lambda row: float(row[key]))["epoch"])
            for candidate, key in (("averaged", "val_loss"), ("raw", "raw_val_loss"))}


def verdict(rows: list[dict], folds: int) -> dict:
    """The pre-registered rule (higher pooled AUC in all folds but one, and on the mean), and the
    per-image paired differences beside it (reported, not part of the rule)."""
    differences = [row["averaged"]["summary"]["AUC_pooled"] - row["raw"]["summary"]["AUC_pooled"] for row in rows]
    per_image = [row["averaged"]["per_image_auc"][name] - row["raw"]["per_image_auc"][name]
                 for row in rows for name in row["held_out"]]
    higher = sum(difference > 0 for difference in differences)
    complete = len(rows) == folds
    return {
        "folds_scored": len(rows),
        "pooled_auc_difference_per_fold": differences,
        "mean_pooled_auc_difference": float(np.mean(differences)) if differences else None,
        "folds_where_average_is_higher": higher,
        "per_image_auc_difference_mean": float(np.mean(per_image)) if per_image else None,
        "images_where_average_is_higher": sum(difference > 0 for difference in per_image),
        "images": len(per_image),
        "adopt_average": (higher >= folds - 1 and float(np.mean(differences)) > 0) if complete else None,
    }


def table(rows: list[dict]) -> str:
    """The per-fold comparison as the markdown table of docs/RESULTS.md 1j."""
    lines = ["| fold | held out | best epoch avg / raw | AUC pooled avg | AUC pooled raw | difference "
             "| AUC mean/img avg / raw | Acc avg / raw | CPU-min |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        averaged, raw = row["averaged"]["summary"], row["raw"]["summary"]
        lines.append(
            f"| {row['fold']} | {row['held_out'][0][:2]}-{row['held_out'][-1][:2]} "
            f"| {row['best_epochs']['averaged']} / {row['best_epochs']['raw']} | {averaged['AUC_pooled']:.4f} "
            f"| {raw['AUC_pooled']:.4f} | {averaged['AUC_pooled'] - raw['AUC_pooled']:+.4f} "
            f"| {averaged['AUC']:.4f} / {raw['AUC']:.4f} | {averaged['Acc']:.4f} / {raw['Acc']:.4f} "
            f"| {row['cpu_seconds'] / 60:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cross_validation"), help="folder of the fold runs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=90, help="epochs of 100 steps (90: the shipped recipe)")
    parser.add_argument("--only", type=int, nargs="*", help="folds to do (default: all)")
    parser.add_argument("--cli", default="keras-vessel", help="the keras-vessel executable")
    parser.add_argument("--summarize", action="store_true", help="only print the table and verdict of --output")
    add_output_argument(parser, "cross_validation_ema")
    args = parser.parse_args()
    if args.summarize:
        results = json.loads(args.output.read_text())["results"]
        print(table(results["folds"]))
        print(json.dumps(results["verdict"], indent=2))
        return
    record = begin("cross_validation_ema", args)
    args.out.mkdir(parents=True, exist_ok=True)
    prepare("drive", args.cli)
    rows = []
    for fold in range(args.folds):
        folder = args.out / f"fold{fold}"
        if args.only is None or fold in args.only:
            train_fold(fold, args.folds, args.epochs, args.out, args.cli)
        if (folder / "train_cpu.json").exists():
            rows.append({"fold": fold, **score_fold(folder)})
            scored = rows[-1]
            print(f"fold {fold} {scored['held_out'][0]}..{scored['held_out'][-1]}: pooled AUC averaged "
                  f"{scored['averaged']['summary']['AUC_pooled']:.4f}, raw {scored['raw']['summary']['AUC_pooled']:.4f}",
                  flush=True)
            finish(record, {"recipe": [CONFIG, *RECIPE, f"train.epochs={args.epochs}"], "folds": rows, "verdict": verdict(rows, args.folds)},
                   args.output)
    print(table(rows))
    print(json.dumps(verdict(rows, args.folds), indent=2))


if __name__ == "__main__":
    main()
