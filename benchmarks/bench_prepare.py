"""Time `keras_vessel.data.tfrecords.prepare_sample` per DRIVE training image and per HRF-sized image.

The full per-image cost of `prepare`: load (image, label, FOV from disk),
CLAHE, ID mask and skeleton tube; `encode` and `serialize` (PNG encoding,
statistics, the record) are timed separately. Each image is prepared on one core (threaded BLAS/OpenMP
and OpenCV pinned to one thread), since `prepare --workers N` parallelises
over images. A breakdown of the stages is timed on every image too.
The HRF-sized sample (3504x2336) is two DRIVE training samples upscaled x4
side by side (bilinear image, nearest-neighbour label/FOV; HRF itself is not
in ../shared/data), wrapped in an object with `.name` and `.load()`.

    .venv/bin/python -m benchmarks.bench_prepare [--images 20] [--hrf-repeats 1] [--output PATH]

Prints a summary and writes benchmarks/results/prepare.json.
"""

from __future__ import annotations

import os

# One core: pin any threaded BLAS/OpenMP pool before NumPy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import add_output_argument, begin, finish, hrf_sized_sample, require_drive_root  # noqa: E402
from keras_vessel.data.datasets import Sample, open_dataset  # noqa: E402
from keras_vessel.data.preprocessing import clahe  # noqa: E402
from keras_vessel.data.segments import build_id_mask, skeleton_tube  # noqa: E402
from keras_vessel.data.tfrecords import encode, prepare_sample, serialize  # noqa: E402

TARGET_ID_MASK_DRIVE_S = 1.0  # from bench_id_mask: the dominant stage
TARGET_ID_MASK_HRF_S = 30.0


@dataclass(frozen=True)
class InMemorySpec:
    """A `SampleSpec` look-alike for a sample built in memory."""

    name: str
    sample: Sample

    def load(self) -> Sample:
        return self.sample


def timed(function: Callable[[], Any]) -> tuple[Any, float, float]:
    """Result, wall seconds and process-CPU seconds (the machine may be shared)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(spec: Any) -> dict[str, Any]:
    prepared, seconds, cpu = timed(lambda: prepare_sample(spec))
    record, serialize_s, _ = timed(lambda: serialize(encode(prepared)))
    # the same stages one by one, for the breakdown
    sample, load_s, _ = timed(spec.load)
    label, fov = sample.label & sample.fov, sample.fov
    _, clahe_s, _ = timed(lambda: clahe(sample.image))
    _, id_mask_s, _ = timed(lambda: build_id_mask(label, fov))
    _, tube_s, _ = timed(lambda: skeleton_tube(label))
    return {
        "shape": list(prepared.label.shape),
        "segments": int(np.abs(prepared.id_mask).max(initial=0)),
        "prepare_seconds": seconds,
        "prepare_cpu_seconds": cpu,
        "serialize_seconds": serialize_s,
        "record_megabytes": len(record) / 1e6,
        "stages_seconds": {"load": load_s, "clahe": clahe_s, "id_mask": id_mask_s, "tube": tube_s},
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "mean": statistics.fmean(values), "max": max(values)}

    return {
        "n": len(rows),
        "prepare_seconds": stats([r["prepare_seconds"] for r in rows]),
        "prepare_cpu_seconds": stats([r["prepare_cpu_seconds"] for r in rows]),
        "serialize_seconds": stats([r["serialize_seconds"] for r in rows]),
        "stages_seconds_median": {
            stage: statistics.median(r["stages_seconds"][stage] for r in rows)
            for stage in rows[0]["stages_seconds"]
        },
    }


def describe(label: str, summary: dict[str, Any]) -> str:
    p, stages = summary["prepare_seconds"], summary["stages_seconds_median"]
    return (
        f"{label}: prepare_sample median {p['median']:.3f} s (mean {p['mean']:.3f}, max {p['max']:.3f}, "
        f"n={summary['n']}); serialize median {summary['serialize_seconds']['median']:.3f} s; stages "
        + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="DRIVE training images timed")
    parser.add_argument("--hrf-repeats", type=int, default=1, help="runs on the HRF-sized sample")
    add_output_argument(parser, "prepare")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    root = require_drive_root()
    record = begin("tfrecords.prepare_sample", args, extra_versions=("scipy", "scikit-image", "opencv-python-headless"))
    record["opencv_threads"] = cv2.getNumThreads()
    specs = open_dataset("drive", root, "training")[: args.images]
    serialize(encode(prepare_sample(specs[0])))  # warm-up: imports (TensorFlow in serialize), caches
    per_image = {}
    for spec in specs:
        per_image[spec.name] = measure(spec)
        row = per_image[spec.name]
        print(f"DRIVE {spec.name}: {row['prepare_seconds']:.3f} s (cpu {row['prepare_cpu_seconds']:.3f} s), "
              f"{row['segments']} segments")
    results: dict[str, Any] = {"drive": {"per_image": per_image, **summarise(list(per_image.values()))}}

    hrf = InMemorySpec("hrf_sized", hrf_sized_sample(specs[0].load(), specs[1].load()))
    hrf_runs = []
    for run in range(args.hrf_repeats):
        hrf_runs.append(measure(hrf))
        row = hrf_runs[-1]
        print(f"HRF-sized run {run + 1} {tuple(row['shape'])}: {row['prepare_seconds']:.2f} s "
              f"(cpu {row['prepare_cpu_seconds']:.2f} s), {row['segments']} segments")
    results["hrf_sized"] = {
        "source": f"DRIVE {specs[0].name} + {specs[1].name} upscaled x4 (bilinear image, "
                  "nearest label/FOV), side by side, cropped to 2336x3504",
        "runs": hrf_runs,
        **summarise(hrf_runs),
    }
    results["id_mask_targets_seconds"] = {"drive": TARGET_ID_MASK_DRIVE_S, "hrf_sized": TARGET_ID_MASK_HRF_S}
    print(describe("DRIVE", results["drive"]))
    print(describe("HRF-sized", results["hrf_sized"]))
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    raise SystemExit(main())
