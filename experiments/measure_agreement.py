"""How far can a user trust each measurement of a predicted mask? Predicted against manual masks (issue 32).

For one model (default: the bundled one) and the test split of DRIVE and CHASE_DB1, every column of
`keras_vessel.measure` is computed on the predicted mask (probability at the model's training threshold,
as `predict` writes it) and on the manual mask (first observer), both inside the dataset's FOV and with
its fitted circle. Per dataset and measure: the manual and predicted means, the bias (mean of predicted
minus manual), the bias relative to the manual mean, and Pearson's correlation over the images.

    .venv/bin/python -m experiments.measure_agreement [--model PATH] [--datasets drive chase_db1]
    .venv/bin/python -m experiments.measure_agreement --summarize

Resumable: images already measured for the model are not measured again. Results go to
``experiments/results/measure_agreement.json`` (per image, both rows; per measure, the agreement);
`--summarize` prints the whole-FOV table from it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERAS_VESSEL_DATA", REPOSITORY.parent / "shared" / "data"))
ROOTS = {"drive": "DRIVE", "chase_db1": "CHASE_DB1"}
RESULTS = REPOSITORY / "experiments" / "results" / "measure_agreement.json"
# The FOV's own size is the same in both masks: no agreement to measure.
SAME_IN_BOTH = ("fov_diameter_px", "fov_area_px")


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation of paired values, NaN pairs left out; NaN with fewer than 3 pairs or no spread."""
    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:
        return math.nan
    mean_x = sum(a for a, _ in pairs) / len(pairs)
    mean_y = sum(b for _, b in pairs) / len(pairs)
    sxy = sum((a - mean_x) * (b - mean_y) for a, b in pairs)
    sxx = sum((a - mean_x) ** 2 for a, _ in pairs)
    syy = sum((b - mean_y) ** 2 for _, b in pairs)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def agreement(images: dict[str, dict[str, dict[str, float]]], columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per column: ``n``, ``manual_mean``, ``predicted_mean``, ``bias`` (mean of predicted - manual),
    ``relative_bias`` (bias / manual mean) and ``pearson_r``, over the images whose both values are numbers.

    `images` maps an image name to ``{"manual": row, "predicted": row}`` (rows of `measure_vessels`).
    """
    out = {}
    for column in columns:
        pairs = [(float(entry["manual"][column]), float(entry["predicted"][column])) for entry in images.values()]
        pairs = [(m, p) for m, p in pairs if not (math.isnan(m) or math.isnan(p))]
        if not pairs:
            out[column] = {"n": 0}
            continue
        manual = sum(m for m, _ in pairs) / len(pairs)
        predicted = sum(p for _, p in pairs) / len(pairs)
        out[column] = {"n": len(pairs), "manual_mean": manual, "predicted_mean": predicted,
                       "bias": predicted - manual, "relative_bias": (predicted - manual) / manual if manual else math.nan,
                       "pearson_r": pearson([m for m, _ in pairs], [p for _, p in pairs])}
    return out


def _number(value: float, digits: int = 4) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}g}"


def table(results: dict[str, Any], *, columns: Sequence[str] | None = None) -> str:
    """Markdown: per dataset, the whole-FOV measures' manual and predicted means, bias, relative bias and r."""
    from keras_vessel.measure import MEASURES, NORMALISED

    columns = columns or [c for c in (*MEASURES, *NORMALISED) if c not in SAME_IN_BOTH]
    lines = []
    for key, entry in results.get("runs", {}).items():
        lines += [f"### {key} ({len(entry['images'])} images, threshold {entry['threshold']:.4g})", "",
                  "| measure | manual mean | predicted mean | bias | relative bias | Pearson r |",
                  "|---|---|---|---|---|---|"]
        for column in columns:
            a = entry["agreement"].get(column, {"n": 0})
            if a["n"] == 0:
                lines.append(f"| `{column}` | - | - | - | - | - |")
                continue
            lines.append(f"| `{column}` | {_number(a['manual_mean'])} | {_number(a['predicted_mean'])} | "
                         f"{_number(a['bias'], 3)} | {_number(100 * a['relative_bias'], 3)}% | "
                         f"{_number(a['pearson_r'], 3)} |")
        lines.append("")
    return "\n".join(lines) if lines else "no results yet"


def compact_table(results: dict[str, Any], *, columns: Sequence[str]) -> str:
    """Markdown for docs/RESULTS.md: a row per measure, per run (model:dataset) its relative bias and Pearson r."""
    runs = results.get("runs", {})
    if not runs:
        return "no results yet"
    lines = ["| measure | " + " | ".join(f"{key.split(':')[-1]} ({len(e['images'])}): bias / r" for key, e in runs.items())
             + " |", "|---" * (len(runs) + 1) + "|"]
    for column in columns:
        cells = []
        for entry in runs.values():
            a = entry["agreement"].get(column, {"n": 0})
            cells.append("-" if a["n"] == 0 else f"{100 * a['relative_bias']:+.0f}% / {a['pearson_r']:.2f}")
        lines.append(f"| `{column}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure_dataset(model_path: Path, dataset: str, *, data: Path, done: dict[str, Any],
                    save: Callable[[], None]) -> dict[str, Any]:
    """Measure every test image of `dataset` (not already in `done`), calling `save()` after each.

    Images measured with another model file or threshold (the bundled model replaced since, say) are not
    reused: `done` is emptied and records the file's SHA-256 and the threshold before anything is measured.
    """
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation.thresholds import load_threshold
    from keras_vessel.io import file_sha256
    from keras_vessel.measure import measure_vessels
    from keras_vessel.measure.files import fov_circle
    from keras_vessel.models.inference import load_inference_model, predict_probability

    threshold = float(load_threshold(model_path, heads="mean")["threshold"])
    sha256 = file_sha256(model_path)
    if (done.get("sha256"), done.get("threshold")) != (sha256, threshold):
        if done.get("images"):
            print(f"{dataset}: {len(done['images'])} images were measured with another model or threshold; "
                  "measuring again", file=sys.stderr, flush=True)
        done.update(model=str(model_path), sha256=sha256, threshold=threshold, images={})
        done.pop("agreement", None)
    model = None
    specs = open_dataset(dataset, data / ROOTS[dataset], "test")
    for number, spec in enumerate(specs, 1):
        if spec.name in done["images"]:
            continue
        model = model or load_inference_model(model_path)
        started = time.monotonic()
        sample = spec.load()
        circle = fov_circle(sample.fov)
        predicted = (predict_probability(model, sample.image) >= threshold) & sample.fov
        done["images"][spec.name] = {
            "manual": measure_vessels(sample.label, sample.fov, fov_circle=circle),
            "predicted": measure_vessels(predicted, sample.fov, fov_circle=circle)}
        save()
        print(f"{dataset} {number}/{len(specs)} {spec.name}: {time.monotonic() - started:.1f} s", file=sys.stderr,
              flush=True)
    return done


def main(argv: Sequence[str] | None = None) -> None:
    from experiments.cross_dataset import load_results, save_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="A .keras model [default: the bundled one].")
    parser.add_argument("--datasets", nargs="+", choices=list(ROOTS), default=list(ROOTS), help="Test splits.")
    parser.add_argument("--data", type=Path, default=SHARED, help="Folder with DRIVE/ and CHASE_DB1/.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Results JSON.")
    parser.add_argument("--summarize", action="store_true", help="Only print the table from the results.")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if args.summarize:
        print(table(results))
        return
    from keras_vessel.measure import COLUMNS
    from keras_vessel.models.inference import bundled_model_path

    model_path = args.model or bundled_model_path()
    for dataset in args.datasets:
        key = f"{args.model or 'bundled'}:{dataset}"
        entry = results["runs"].setdefault(key, {"model": str(model_path), "dataset": dataset, "images": {}})
        measure_dataset(model_path, dataset, data=args.data, done=entry,
                        save=lambda: save_results(args.results, results))
        entry["agreement"] = agreement(entry["images"], [c for c in COLUMNS if not c.endswith(SAME_IN_BOTH)])
        save_results(args.results, results)
    print(table(results))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()
    main()
