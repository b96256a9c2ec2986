"""Rules h5 and h6's screen (issue 30, notebook entry k): several working resolutions at once, and a mask rule.

Each left-out camera's photographs, with the leave-one-camera-out model of its fold
(``today_wnet_without_<camera>_s0``), are predicted at 540 px (the model's own scale), 810 and 1080 px, all
back on the labels' grid. Resolution candidates (`RESOLUTION_RULES`): each single resolution, ``fuse2``
(mean of 540 and 810 px), ``fuse3`` (mean of all three) and ``confident`` (per photograph, the resolution
whose probability inside the FOV is the most decided, highest mean ``|2p - 1|``). Mask rules: the stored
threshold, and ``fraction`` (per photograph, the threshold marking as vessel the median vessel fraction
inside the FOV of the fold's four training cameras' training labels). Scores: pooled AUC, per-image mean
F1 and the worst image's AUC, per camera.

    .venv/bin/python -m experiments.multi_resolution --runs /work/lab/runs/loco --results multi_resolution.json

Resumable: each camera's scores are written to ``--results`` as soon as they are computed.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.leave_one_camera_out import CAMERAS
from experiments.per_photograph_resolution import screen_parser

WORKING = ("540px", "810px", "1080px")
RESOLUTION_RULES = ("540px", "810px", "1080px", "fuse2", "fuse3", "confident")
MASK_RULES = ("stored", "fraction")


def decidedness(prob: np.ndarray, fov: np.ndarray) -> float:
    """Mean ``|2p - 1|`` inside the FOV: 1 when every pixel is 0 or 1, 0 when all are 0.5."""
    return float(np.abs(2.0 * prob[fov] - 1.0).mean())


def combine(maps: dict[str, np.ndarray], fov: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """Every resolution rule's probability map from the three working resolutions' maps, and the working
    resolution ``confident`` chose."""
    chosen = max(WORKING, key=lambda working: decidedness(maps[working], fov))
    return {**maps, "fuse2": (maps["540px"] + maps["810px"]) / 2.0,
            "fuse3": (maps["540px"] + maps["810px"] + maps["1080px"]) / 3.0, "confident": maps[chosen]}, chosen


def fraction_threshold(prob: np.ndarray, fov: np.ndarray, fraction: float) -> float:
    """The threshold at which ``prob >= t`` marks `fraction` of the FOV pixels (the (1 - fraction) quantile)."""
    return float(np.quantile(prob[fov], 1.0 - fraction))


def training_vessel_fraction(left_out: str, data: Path) -> float:
    """The median vessel fraction inside the FOV of the training labels of every camera but `left_out`."""
    from keras_vessel.data.datasets import open_dataset

    fractions = []
    for camera, (folder, train_split, _) in CAMERAS.items():
        if camera != left_out:
            for spec in open_dataset(camera, data / folder, train_split):
                sample = spec.load()
                fractions.append(float(sample.label[sample.fov].mean()))
    return statistics.median(fractions)


def score_camera(camera: str, runs: Path, data: Path) -> dict[str, Any]:
    """Every (resolution rule, mask rule)'s pooled AUC, mean per-image F1 and worst image AUC on `camera`."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import metrics
    from keras_vessel.evaluation.thresholds import load_threshold
    from keras_vessel.models.inference import load_inference_model, predict_probability

    run = runs / f"today_wnet_without_{camera}_s0"
    model = load_inference_model(run / "model.keras")
    stored = load_threshold(run / "model.keras")["threshold"]
    fraction = training_vessel_fraction(camera, data)
    folder, _, test_split = CAMERAS[camera]
    counts = {rule: metrics.ScoreCounts() for rule in RESOLUTION_RULES}
    per_image: dict[str, list[dict[str, Any]]] = {rule: [] for rule in RESOLUTION_RULES}
    seconds = dict.fromkeys(WORKING, 0.0)
    for spec in open_dataset(camera, data / folder, test_split):
        sample = spec.load()
        maps = {}
        for working in WORKING:
            start = time.perf_counter()
            maps[working] = predict_probability(model, sample.image, fov=sample.fov, scale=working)
            seconds[working] += time.perf_counter() - start
        combined, chosen = combine(maps, sample.fov)
        for rule, prob in combined.items():
            counts[rule].add(prob, sample.label, sample.fov)
            row = {"name": sample.name, "AUC": metrics.roc_auc(prob, sample.label, sample.fov)}
            for mask_rule in MASK_RULES:
                threshold = stored if mask_rule == "stored" else fraction_threshold(prob, sample.fov, fraction)
                row[f"F1_{mask_rule}"] = metrics.confusion_metrics(prob >= threshold, sample.label, sample.fov)["F1"]
            if rule == "confident":
                row["chosen"] = chosen
            per_image[rule].append(row)
        print(camera, sample.name, {rule: round(rows[-1]["AUC"], 4) for rule, rows in per_image.items()},
              flush=True)
    scores: dict[str, Any] = {"stored_threshold": stored, "vessel_fraction": fraction,
                              "predict_seconds": seconds, "images": len(per_image["540px"])}
    for rule in RESOLUTION_RULES:
        rows = per_image[rule]
        scores[rule] = {"AUC_pooled": counts[rule].auc(),
                        "worst_AUC": min(row["AUC"] for row in rows),
                        **{f"F1_{m}": statistics.fmean(row[f"F1_{m}"] for row in rows) for m in MASK_RULES},
                        "per_image": rows}
    return scores


def table(results: dict[str, Any]) -> list[str]:
    """Markdown: pooled AUC / mean F1 (stored threshold) per camera and rule, then F1 with ``fraction``."""
    cameras = [camera for camera in CAMERAS if camera in results]
    lines = ["| rule | " + " | ".join(cameras) + " | mean |", "|---" * (len(cameras) + 2) + "|"]
    for rule in RESOLUTION_RULES:
        cells = [results[c][rule] for c in cameras]
        mean_auc = statistics.fmean(cell["AUC_pooled"] for cell in cells)
        mean_f1 = statistics.fmean(cell["F1_stored"] for cell in cells)
        lines.append(f"| {rule} | " + " | ".join(f"{cell['AUC_pooled']:.4f} / {cell['F1_stored']:.3f}"
                                                 for cell in cells) + f" | {mean_auc:.4f} / {mean_f1:.3f} |")
    for rule in RESOLUTION_RULES:
        cells = [results[c][rule] for c in cameras]
        lines.append(f"| {rule}, F1 fraction | " + " | ".join(f"{cell['F1_fraction']:.3f}" for cell in cells)
                     + f" | {statistics.fmean(cell['F1_fraction'] for cell in cells):.3f} |")
    return lines


def main() -> None:
    parser = screen_parser(__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="Results JSON (resumable).")
    parser.add_argument("--only", nargs="*", default=list(CAMERAS), help="Cameras to score.")
    arguments = parser.parse_args()
    results = json.loads(arguments.results.read_text()) if arguments.results.exists() else {}
    for camera in arguments.only:
        if camera not in results:
            results[camera] = score_camera(camera, arguments.runs, arguments.data)
            temporary = arguments.results.with_suffix(".partial")
            temporary.write_text(json.dumps(results, indent=1))
            temporary.replace(arguments.results)
    print("\n".join(table(results)))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
