"""Camera shifts on the test images: how a model holds when the same eyes are photographed differently.

We do not have other cameras' photographs (they are kept from us so that no
choice can be tuned to them), but we can make the differences users report
(issue 21): a dark or an over-exposed photograph, a bright yellow low-contrast
one, another tone curve, defocus, strong JPEG compression, twice or half the
resolution. Each shift is applied to every test image of DRIVE and CHASE_DB1
(the labels and FOV masks are unchanged, or resampled with the image), and
the model is scored as `keras-vessel evaluate` scores it (defaults: scale
auto, its stored training threshold): pooled AUC and mean F1 per shift.

    .venv/bin/python -m experiments.robustness --model saved_models/drive_unet/model.keras [--label general]

Writes experiments/results/robustness.json (one entry per --label, kept across calls).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from experiments.cross_dataset import DATASETS, ROOTS, SHARED

RESULTS = Path(__file__).resolve().parent / "results" / "robustness.json"


def _tone(image: np.ndarray, gains=(1.0, 1.0, 1.0), contrast=1.0, offset=0.0, gamma=1.0) -> np.ndarray:
    x = image.astype(np.float32) / 255.0 * np.asarray(gains, np.float32)
    x = np.clip(x, 0, 1) ** gamma
    mean = x[x.max(axis=2) > 0.06].mean(axis=0) if (x.max(axis=2) > 0.06).any() else 0.0
    x = mean + contrast * (x - mean) + offset / 255.0
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# name -> (what it does to the image, the factor by which it resizes image, label and FOV)
SHIFTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "none": (lambda image: image, 1.0),
    "dark (x0.45)": (lambda image: _tone(image, gains=(0.45, 0.45, 0.45)), 1.0),
    "over-exposed (x1.6)": (lambda image: _tone(image, gains=(1.6, 1.6, 1.6)), 1.0),
    "bright yellow, low contrast": (lambda image: _tone(image, gains=(1.15, 1.05, 0.35), contrast=0.45, offset=45), 1.0),
    "tone curve (gamma 1.8)": (lambda image: _tone(image, gamma=1.8), 1.0),
    "defocus (blur 2 px)": (lambda image: cv2.GaussianBlur(image, (0, 0), 2.0), 1.0),
    "JPEG quality 15": (lambda image: _jpeg(image, 15), 1.0),
    "2x the resolution": (lambda image: image, 2.0),
    "half the resolution": (lambda image: image, 0.5),
}


def shifted(sample, shift: str):
    """`sample` photographed with `shift`: image changed; image, label and FOV resized by its factor."""
    from keras_vessel.data.datasets import Sample

    change, factor = SHIFTS[shift]
    image, label, fov = sample.image, sample.label, sample.fov
    if factor != 1.0:
        size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
        label = cv2.resize(label.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        fov = cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return Sample(name=sample.name, image=change(image), label=label, fov=fov)


def score(model_path: Path, *, data: Path = SHARED, scale: str = "auto") -> dict:
    """Pooled AUC, mean F1 and the worst image's AUC of the model, per dataset and shift."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import Threshold, metrics
    from keras_vessel.models.inference import load_inference_model, predict_probability

    model = load_inference_model(model_path)
    threshold = Threshold.stored(model_path, heads="mean")
    results: dict = {}
    for dataset in DATASETS:
        samples = [spec.load() for spec in open_dataset(dataset, data / ROOTS[dataset], "test")]
        for shift in SHIFTS:
            counts, f1, aucs = metrics.ScoreCounts(), [], []
            for sample in samples:
                case = shifted(sample, shift)
                prob = predict_probability(model, case.image, fov=case.fov, scale=scale, name=case.name)
                counts.add(prob, case.label, case.fov)
                f1.append(metrics.confusion_metrics(prob >= threshold.for_image(prob, case.fov), case.label,
                                                    case.fov)["F1"])
                aucs.append(metrics.roc_auc(prob, case.label, case.fov))
            results.setdefault(dataset, {})[shift] = {"AUC_pooled": counts.auc(), "F1": float(np.mean(f1)),
                                                       "worst_AUC": float(min(aucs))}
            print(f"{dataset:9s} {shift:28s} AUC {counts.auc():.4f} F1 {np.mean(f1):.3f} worst {min(aucs):.4f}",
                  flush=True)
    return results


def table(results: dict, labels: Sequence[str] | None = None) -> str:
    """Pooled AUC (and F1) per shift, one column per model (all, or `labels`, in their order) and dataset."""
    labels = list(results) if labels is None else list(labels)
    header = ["shift", *(f"{label}: {dataset} AUC / F1" for label in labels for dataset in DATASETS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for shift in SHIFTS:
        cells = [shift]
        for label in labels:
            for dataset in DATASETS:
                row = results[label]["scores"].get(dataset, {}).get(shift)
                cells.append("–" if row is None else f"{row['AUC_pooled']:.4f} / {row['F1']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from keras_vessel.io import write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a .keras model with its threshold.json beside it")
    parser.add_argument("--label", help="the model's column in the table [default: its folder's name]")
    parser.add_argument("--scale", default="auto", choices=["auto", "none"])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--summarize", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    if not args.summarize:
        label = args.label or args.model.parent.name
        results[label] = {"model": str(args.model), "scale": args.scale,
                          "scores": score(args.model, data=args.data, scale=args.scale)}
        write_json_atomic(args.results, results)
    print(table(results))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
