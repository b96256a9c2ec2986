"""Five-fold cross-validation over DRIVE's training images: one recipe against another.

Why: the reproduction runs hold out two training images (39-40) for
validation, too few to tell two recipes 0.001 AUC apart (docs/RESULTS.md 1i).
Here every training image is scored once, by a model that did not see it:
each fold (`data.folds`, `data.fold`) trains on 16 images and scores each
candidate on its 4 held-out images at a threshold chosen on its 16 training
images (never on the held-out or test images; the test split is not
touched). Two comparisons, each with its rule written in docs/RESULTS.md
before its first fold ran:

- ``ema`` (1j): the shipped recipe (pixel-wise, RGB, 9000 steps, seed 0)
  with `train.ema_momentum`; one training gives both candidates,
  `model.keras` (the average, best epoch by its validation loss) and
  `model_raw.keras` (the raw weights, best epoch by theirs).
- ``joint`` (1m): the pixel-wise against the joint loss at section 1c's
  recipe (green, 3000 steps, seed 0), one training each per fold.

The challenger is adopted (or, for the losses, "ahead") if its pooled
held-out AUC is higher in all folds but one and on the mean over folds.

    .venv/bin/python -m experiments.cross_validate --comparison ema [--out runs/cross_validation] [--only 0 3]

A finished fold is skipped and a killed training resumes, so re-running
continues where it stopped. Writes experiments/results/<comparison's name>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import begin, finish
from experiments.reproduce import ROOTS, prepare, records_folder, run_costed

RESULTS = Path(__file__).resolve().parent / "results"
EMA_MOMENTUM = 0.999  # fixed before the first run, not tuned


@dataclass(frozen=True)
class Candidate:
    """A model each fold scores: the file a training leaves, and the history column its epoch minimised."""

    label: str
    sets: tuple[str, ...]  # `--set` values on top of configs/compact.yaml + configs/datasets/drive.yaml
    training: str = ""  # subfolder of --out; candidates of one training share it
    model_file: str = "model.keras"
    selected_by: str = "val_loss"

    def folder(self, out: Path, fold: int) -> Path:
        return out / self.training / f"fold{fold}"


@dataclass(frozen=True)
class Comparison:
    name: str  # of the results file
    baseline: Candidate
    challenger: Candidate
    epochs: int  # of 100 steps
    out: Path  # default folder of the fold runs

    @property
    def candidates(self) -> tuple[Candidate, Candidate]:
        return self.challenger, self.baseline


CONFIGS = ("configs/compact.yaml", "configs/datasets/drive.yaml")
PIXEL, JOINT = ("loss.kind=pixel",), ("loss.kind=joint",)
SHIPPED_WITH_EMA = (*PIXEL, "train.seed=0", "train.early_stopping_patience=0", "data.channel=rgb",
                    f"train.ema_momentum={EMA_MOMENTUM}")
SECTION_1C = ("train.seed=0", "train.early_stopping_patience=0")
COMPARISONS = {
    "ema": Comparison("cross_validation_ema", epochs=90, out=Path("runs/cross_validation"),
                      baseline=Candidate("raw", SHIPPED_WITH_EMA, model_file="model_raw.keras",
                                         selected_by="raw_val_loss"),
                      challenger=Candidate("averaged", SHIPPED_WITH_EMA)),
    "joint": Comparison("cross_validation_joint", epochs=30, out=Path("runs/cross_validation_joint"),
                        baseline=Candidate("pixel", (*PIXEL, *SECTION_1C), training="pixel"),
                        challenger=Candidate("joint", (*JOINT, *SECTION_1C), training="joint")),
}


def train_fold(candidate: Candidate, fold: int, folds: int, epochs: int, out: Path, cli: str) -> None:
    folder = candidate.folder(out, fold)
    if not (folder / "train_cpu.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)  # the log goes beside the fold folders
        sets = [*candidate.sets, f"train.epochs={epochs}", f"data.folds={folds}", f"data.fold={fold}"]
        cost = run_costed([cli, "train", *(part for config in CONFIGS for part in ("--config", config)),
                           *(part for value in sets for part in ("--set", value)), "--output", str(folder), "--quiet"],
                          folder.parent / f"fold{fold}.log")
        (folder / "train_cpu.json").write_text(json.dumps(cost))


def score_fold(comparison: Comparison, out: Path, fold: int) -> dict:
    """Both candidates on the held-out images, each at a threshold chosen on the fold's training images."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import choose_training_threshold, evaluate
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.data.tfrecords import read_samples

    run = json.loads((comparison.baseline.folder(out, fold) / "run.json").read_text())
    folders = {candidate.folder(out, fold) for candidate in comparison.candidates}
    costs = [json.loads((folder / "train_cpu.json").read_text()) for folder in sorted(folders)]
    row = {"fold": fold, "held_out": run["validation_images"], "git_revision": run["git_revision"],
           **{key: sum(cost[key] for cost in costs) for key in costs[0]}}
    held_out, training = None, None  # read only when a candidate is still to be scored
    for candidate in comparison.candidates:
        folder = candidate.folder(out, fold)
        metrics_path = folder / f"eval_{candidate.label}" / "metrics.json"
        if not metrics_path.exists():
            if training is None:
                held_out = [spec for spec in open_dataset("drive", ROOTS["drive"], split="training")
                            if spec.name in run["validation_images"]]
                training = read_samples(records_folder("drive", "authors"), names=run["training_images"])
            model = load_inference_model(folder / candidate.model_file)
            threshold = choose_training_threshold(model, training, progress=False)
            evaluate(model, held_out, output_dir=metrics_path.parent, threshold=threshold,
                     threshold_rule="accuracy-optimal on the fold's training images", dataset="drive",
                     split="validation", model_path=folder / candidate.model_file, overlays=False, progress=False)
        metrics = json.loads(metrics_path.read_text())
        row[candidate.label] = {"threshold": metrics["protocol"]["threshold"], "summary": metrics["summary"],
                                "per_image_auc": {image["name"]: image["AUC"] for image in metrics["per_image"]}}
    row["best_epochs"] = {candidate.label: best_epoch(candidate.folder(out, fold), candidate.selected_by)
                          for candidate in comparison.candidates}
    return row


def best_epoch(folder: Path, column: str) -> int:
    """The epoch a saved model comes from: the lowest `column` of the training's history."""
    with open(folder / "history.csv", newline="") as stream:
        return int(min(csv.DictReader(stream), key=lambda row: float(row[column]))["epoch"])


def higher_in_all_folds_but_one_and_on_the_mean(differences: list[float], folds: int) -> bool | None:
    """The pre-registered rule on challenger-minus-baseline differences; None until every fold is scored."""
    if len(differences) < folds:
        return None
    return sum(difference > 0 for difference in differences) >= folds - 1 and float(np.mean(differences)) > 0


def verdict(rows: list[dict], baseline: str, challenger: str, folds: int) -> dict:
    """The rule on pooled AUC (both comparisons) and on thin-vessel sensitivity (pre-registered for the
    losses only, 1m), and the per-image AUC differences beside them (reported, not part of a rule)."""
    def differences(key: str) -> list[float]:
        return [row[challenger]["summary"][key] - row[baseline]["summary"][key] for row in rows]

    auc, thin = differences("AUC_pooled"), differences("Se_thin")
    per_image = [row[challenger]["per_image_auc"][name] - row[baseline]["per_image_auc"][name]
                 for row in rows for name in row["held_out"]]
    return {
        "baseline": baseline,
        "challenger": challenger,
        "folds_scored": len(rows),
        "pooled_auc_difference_per_fold": auc,
        "mean_pooled_auc_difference": float(np.mean(auc)) if auc else None,
        "folds_where_challenger_is_higher": sum(difference > 0 for difference in auc),
        "adopt_challenger": higher_in_all_folds_but_one_and_on_the_mean(auc, folds),
        "thin_vessel_se_difference_per_fold": thin,
        "challenger_ahead_on_thin_vessels": higher_in_all_folds_but_one_and_on_the_mean(thin, folds),
        "per_image_auc_difference_mean": float(np.mean(per_image)) if per_image else None,
        "images_where_challenger_is_higher": sum(difference > 0 for difference in per_image),
        "images": len(per_image),
    }


def table(rows: list[dict], baseline: str, challenger: str) -> str:
    """The per-fold comparison as the markdown tables of docs/RESULTS.md 1j and 1m."""
    pair = f"{challenger} / {baseline}"
    lines = [f"| fold | held out | best epoch {pair} | AUC pooled {challenger} | AUC pooled {baseline} | difference "
             f"| AUC mean/img {pair} | Acc {pair} | Se thin {pair} | CPU-min |", "|---" * 10 + "|"]
    for row in rows:
        first, second = row[challenger]["summary"], row[baseline]["summary"]
        epochs = row["best_epochs"]
        lines.append(
            f"| {row['fold']} | {row['held_out'][0][:2]}-{row['held_out'][-1][:2]} "
            f"| {epochs[challenger]} / {epochs[baseline]} | {first['AUC_pooled']:.4f} "
            f"| {second['AUC_pooled']:.4f} | {first['AUC_pooled'] - second['AUC_pooled']:+.4f} "
            f"| {first['AUC']:.4f} / {second['AUC']:.4f} | {first['Acc']:.4f} / {second['Acc']:.4f} "
            f"| {first['Se_thin']:.3f} / {second['Se_thin']:.3f} | {row['cpu_seconds'] / 60:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparison", choices=sorted(COMPARISONS), default="ema")
    parser.add_argument("--out", type=Path, help="folder of the fold runs (default: the comparison's)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="epochs of 100 steps (default: the comparison's)")
    parser.add_argument("--only", type=int, nargs="*", help="folds to do (default: all)")
    parser.add_argument("--cli", default="keras-vessel", help="the keras-vessel executable")
    parser.add_argument("--summarize", action="store_true", help="only print the table and verdict of --output")
    parser.add_argument("--output", type=Path, help="results JSON (default: benchmarks/results/<comparison's name>.json)")
    args = parser.parse_args()
    comparison = COMPARISONS[args.comparison]
    out, epochs = args.out or comparison.out, args.epochs or comparison.epochs
    args.output = args.output or RESULTS / f"{comparison.name}.json"
    labels = comparison.baseline.label, comparison.challenger.label
    if args.summarize:
        results = json.loads(args.output.read_text())["results"]
        print(table(results["folds"], *labels))
        print(json.dumps(results["verdict"], indent=2))
        return
    record = begin(comparison.name, args)
    out.mkdir(parents=True, exist_ok=True)
    prepare("drive", args.cli)
    recipe = {candidate.label: [*CONFIGS, *candidate.sets, f"train.epochs={epochs}"]
              for candidate in comparison.candidates}
    rows = []
    for fold in range(args.folds):
        if args.only is None or fold in args.only:
            for candidate in comparison.candidates:
                train_fold(candidate, fold, args.folds, epochs, out, args.cli)
        if all((candidate.folder(out, fold) / "train_cpu.json").exists() for candidate in comparison.candidates):
            rows.append(score_fold(comparison, out, fold))
            print(f"fold {fold} {rows[-1]['held_out'][0]}..{rows[-1]['held_out'][-1]}: pooled AUC "
                  + ", ".join(f"{label} {rows[-1][label]['summary']['AUC_pooled']:.4f}" for label in labels),
                  flush=True)
            finish(record, {"recipe": recipe, "folds": rows, "verdict": verdict(rows, *labels, args.folds)},
                   args.output)
    print(table(rows, *labels))
    print(json.dumps(verdict(rows, *labels, args.folds), indent=2))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
