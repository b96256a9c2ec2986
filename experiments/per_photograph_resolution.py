"""Rule h4's screen (issue 30, notebook entry k): a working resolution chosen per photograph from its sharpness.

For every photograph of the five development cameras, `sharpness` at working FOV diameters of 540, 810 and
1080 px; for each left-out camera, the reference is the median sharpness at 540 px of the four other cameras'
training photographs (the ones its leave-one-camera-out model learned from). Each photograph of the left-out
camera runs at the largest diameter whose sharpness reaches the reference (540 px if none). The screen reads
each photograph's score at its chosen diameter from the evaluation reports the leave-one-camera-out driver
wrote (``eval_auto``, ``eval_fov810``, ``eval_fov1080`` of ``today_wnet_without_<camera>_s0``):

    .venv/bin/python -m experiments.per_photograph_resolution --runs /work/lab/runs/loco --out sharpness.csv

The sharpness values are cached in ``--out`` (one row per photograph), so the tables are re-made without
reading the photographs again.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from experiments.cross_dataset import SHARED
from experiments.leave_one_camera_out import CAMERAS

DIAMETERS = (540, 810, 1080)
# diameter -> the evaluation report of the leave-one-camera-out run scored at that working FOV
REPORTS = {540: "eval_auto", 810: "eval_fov810", 1080: "eval_fov1080"}
RIM = 0.04  # of the working diameter: the FOV's rim left out of the sharpness


def sharpness(image: np.ndarray, fov: np.ndarray, fov_diameter: float, diameter: float) -> float:
    """``mean |g - G1 g| / mean |G1 g - G2 g|`` of the green channel resampled to a `diameter` px FOV.

    `image` (H, W, 3) uint8 RGB, `fov` (H, W) bool, `fov_diameter` its diameter in px; Gs is a Gaussian of
    sigma s px; the means run over the FOV eroded by `RIM` of `diameter`. Low when the photograph holds
    no detail at that resolution (enlarged past its own detail, or soft to begin with).
    """
    from keras_vessel.data.scaling import resample, shrink_image

    factor = diameter / fov_diameter
    green = image[..., 1:2]
    scaled = shrink_image(green, factor) if factor < 1 else resample(green.astype(np.float32), factor).numpy()
    green = scaled[..., 0].astype(np.float32)
    mask = cv2.resize(fov.astype(np.uint8), green.shape[::-1], interpolation=cv2.INTER_NEAREST)
    radius = max(1, round(RIM * diameter))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))) > 0
    blur1 = cv2.GaussianBlur(green, (0, 0), 1.0)
    blur2 = cv2.GaussianBlur(green, (0, 0), 2.0)
    fine = np.abs(green - blur1)[mask].mean()
    band = np.abs(blur1 - blur2)[mask].mean()
    return float(fine / band)


def measure_all(data: Path, out: Path) -> list[dict[str, str]]:
    """Sharpness of every photograph of every camera at every diameter; cached in `out`."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.data.scaling import image_fov

    if out.exists():
        with out.open() as handle:
            return list(csv.DictReader(handle))
    rows = []
    for camera, (folder, train_split, test_split) in CAMERAS.items():
        training = {spec.name for spec in open_dataset(camera, data / folder, train_split)}
        for spec in open_dataset(camera, data / folder, test_split):
            sample = spec.load()
            geometry = image_fov(sample.image)
            row = {"camera": camera, "name": spec.name, "training": str(spec.name in training),
                   "fov_diameter": f"{geometry.diameter:.1f}"}
            for diameter in DIAMETERS:
                row[f"r{diameter}"] = f"{sharpness(sample.image, geometry.mask, geometry.diameter, diameter):.5f}"
            rows.append(row)
            print(camera, spec.name, {k: v for k, v in row.items() if k.startswith("r") or k == "fov_diameter"},
                  flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".partial")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(out)
    return rows


def choose(rows: list[dict[str, str]], left_out: str) -> tuple[float, dict[str, int]]:
    """Rule h4: the reference of `left_out`'s fold and each of its photographs' working diameter."""
    reference = statistics.median(float(r["r540"]) for r in rows
                                  if r["camera"] != left_out and r["training"] == "True")
    choices = {}
    for row in rows:
        if row["camera"] == left_out:
            passing = [d for d in DIAMETERS if float(row[f"r{d}"]) >= reference]
            choices[row["name"]] = max(passing, default=DIAMETERS[0])
    return reference, choices


def per_image_scores(run: Path) -> dict[int, dict[str, dict[str, float]]]:
    """diameter -> photograph name -> {"AUC", "F1"} from the run's evaluation reports."""
    scores = {}
    for diameter, report in REPORTS.items():
        with (run / report / "per_image.csv").open() as handle:
            scores[diameter] = {r["name"]: {"AUC": float(r["AUC"]), "F1": float(r["F1"])}
                                for r in csv.DictReader(handle)}
    return scores


def screen(rows: list[dict[str, str]], runs: Path) -> list[str]:
    """The screen's table (markdown lines): per left-out camera, auto, fixed diameters, h4 and the oracle."""
    lines = ["| left out | reference r | choices 540/810/1080 | auto | 810 | 1080 | h4 | oracle |",
             "|---|---|---|---|---|---|---|---|"]
    for camera in CAMERAS:
        reference, choices = choose(rows, camera)
        scores = per_image_scores(runs / f"today_wnet_without_{camera}_s0")

        def mean(metric: str, pick: Mapping[str, int]) -> float:
            return statistics.fmean(scores[pick[name]][name][metric] for name in pick)

        names = list(choices)
        fixed = {d: {name: d for name in names} for d in DIAMETERS}
        oracle = {name: max(DIAMETERS, key=lambda d: scores[d][name]["AUC"]) for name in names}
        counts = "/".join(str(sum(c == d for c in choices.values())) for d in DIAMETERS)
        cells = [f"{mean('AUC', pick):.4f} / {mean('F1', pick):.3f}"
                 for pick in (fixed[540], fixed[810], fixed[1080], choices, oracle)]
        lines.append(f"| {camera} | {reference:.3f} | {counts} | " + " | ".join(cells) + " |")
    lines.append("(mean per-image AUC / mean per-image F1 at the stored threshold)")
    return lines


def screen_parser(description: str, *, runs_required: bool = True) -> argparse.ArgumentParser:
    """The options the resolution screens share: the leave-one-camera-out runs and the datasets."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=Path, required=runs_required, help="The leave-one-camera-out runs folder.")
    parser.add_argument("--data", type=Path, default=SHARED, help="Folder with the five datasets.")
    return parser


def main() -> None:
    parser = screen_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV of every photograph's sharpness (cache).")
    arguments = parser.parse_args()
    rows = measure_all(arguments.data, arguments.out)
    for camera in CAMERAS:
        values = {d: [float(r[f"r{d}"]) for r in rows if r["camera"] == camera] for d in DIAMETERS}
        print(camera, {d: round(statistics.median(v), 3) for d, v in values.items()})
    print("\n".join(screen(rows, arguments.runs)))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
