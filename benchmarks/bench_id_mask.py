"""Time `keras_vessel.data.segments.build_id_mask` on DRIVE and on an HRF-sized label.

Targets: <= 1 s per DRIVE image (584x565) and <= 30 s per HRF-sized image
(2336x3504) on one core. The HRF-sized label is made from DRIVE labels
upscaled x4 with nearest neighbour (HRF itself is not in ../shared/data).

    .venv/bin/python -m benchmarks.bench_id_mask [--hrf-repeats 2] [--output PATH]

Prints a summary and writes benchmarks/results/id_mask.json.
"""

from __future__ import annotations

import os

# One core: pin any threaded BLAS/OpenMP pool before NumPy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import HRF_SHAPE, add_output_argument, begin, data_root, finish  # noqa: E402
from keras_vessel.data.segments import build_id_mask, segment_count  # noqa: E402


def read_binary(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def drive_training(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    folder = root / "DRIVE" / "training"
    labels = sorted((folder / "1st_manual").glob("*_manual1.gif"))
    if not labels:
        raise SystemExit(f"no DRIVE training labels under {folder}; set KERAS_VESSEL_DATA")
    out = []
    for path in labels:
        number = path.name.split("_")[0]
        fov = read_binary(folder / "mask" / f"{number}_training_mask.gif")
        out.append((f"{number}_training", read_binary(path), fov))
    return out


def hrf_sized(drive: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """A 2336x3504 label/FOV: two DRIVE images upscaled x4 side by side, cropped."""
    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, 4, axis=0), 4, axis=1)

    (_, label_a, fov_a), (_, label_b, fov_b) = drive[0], drive[1]
    label = np.concatenate([up(label_a), up(label_b)], axis=1)[: HRF_SHAPE[0], : HRF_SHAPE[1]]
    fov = np.concatenate([up(fov_a), up(fov_b)], axis=1)[: HRF_SHAPE[0], : HRF_SHAPE[1]]
    assert label.shape == HRF_SHAPE, label.shape
    return label, fov


def timed(label: np.ndarray, fov: np.ndarray) -> tuple[float, float, int]:
    """Wall and process-CPU seconds (the machine may be shared) and the segment count."""
    wall, cpu = time.perf_counter(), time.process_time()
    mask = build_id_mask(label, fov)
    return time.perf_counter() - wall, time.process_time() - cpu, segment_count(mask)


def summary(seconds: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(seconds)), "max": float(np.max(seconds)), "n": len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hrf-repeats", type=int, default=2, help="runs on the HRF-sized label")
    add_output_argument(parser, "id_mask")
    args = parser.parse_args()
    record = begin("build_id_mask", args, extra_versions=("scipy", "scikit-image"))

    drive = drive_training(data_root())
    timed(drive[0][1], drive[0][2])  # warm-up: imports, caches
    per_image = {}
    for name, label, fov in drive:
        seconds, cpu, k = timed(label, fov)
        per_image[name] = {
            "seconds": seconds, "cpu_seconds": cpu, "segments": k, "shape": list(label.shape)
        }
        print(f"DRIVE {name}: {seconds:.3f} s (cpu {cpu:.3f} s), {k} segments")

    label, fov = hrf_sized(drive)
    hrf_runs = []
    for run in range(args.hrf_repeats):
        seconds, cpu, k = timed(label, fov)
        hrf_runs.append({"seconds": seconds, "cpu_seconds": cpu, "segments": k})
        print(f"HRF-sized run {run + 1}: {seconds:.3f} s (cpu {cpu:.3f} s), {k} segments")

    drive_seconds = [v["seconds"] for v in per_image.values()]
    result = {
        "drive": {
            "per_image": per_image,
            "seconds": summary(drive_seconds),
            "cpu_seconds": summary([v["cpu_seconds"] for v in per_image.values()]),
            "target_s": 1.0,
        },
        "hrf_sized": {
            "shape": list(HRF_SHAPE),
            "source": "DRIVE 21+22 labels upscaled x4 (nearest), side by side, cropped",
            "runs": hrf_runs,
            "seconds": summary([r["seconds"] for r in hrf_runs]),
            "cpu_seconds": summary([r["cpu_seconds"] for r in hrf_runs]),
            "target_s": 30.0,
        },
    }
    d, h = result["drive"]["seconds"], result["hrf_sized"]["seconds"]
    print(f"DRIVE: mean {d['mean']:.3f} s, max {d['max']:.3f} s over {d['n']} images (target 1 s)")
    print(f"HRF-sized: mean {h['mean']:.3f} s, max {h['max']:.3f} s (target 30 s)")
    finish(record, result, args.output)


if __name__ == "__main__":
    main()
