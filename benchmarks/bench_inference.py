"""Time `keras_vessel.models.inference.predict_probability` per DRIVE test image and measure peak memory.

Targets: <= 0.3 s per DRIVE test image (565x584) with the compact U-Net
(base 12, depth 4, both heads fused by their mean); an HRF-sized image
(3504x2336) within 4 GB; a 3504x2336 photograph (a DRIVE image enlarged to an
HRF-like 3300 px field of view, clipped at the frame) in <= 2 s with the
defaults (``scale="auto"``: with a model that records its training scale, the
photograph is run at that scale). The model is built, saved to a temporary `.keras`
file and loaded with `load_inference_model` (weights are untrained: the cost
does not depend on them), then warmed up on one image before timing.
`--model` times a saved model instead (the shipped one:
`--model saved_models/drive_unet/model.keras`), `--tta d4` the 8-view
test-time augmentation.

Peak memory is `resource.getrusage(RUSAGE_SELF).ru_maxrss` of a fresh
subprocess per case (this script re-run with `--child CASE`), so one case's
peak cannot hide another's. The HRF-sized image is two DRIVE test images
upscaled x4 side by side (HRF is not in ../shared/data). Cases:
`drive` (one DRIVE image) and `hrf_tiled` (what `predict_probability` does
by default for HRF: tiles of 512, overlap 128); opt-in `hrf_whole` forces the
image through in one piece to show what tiling saves (it peaked at 12 GB
here, so it is not run by default on this shared machine).

`--megapixels 100` adds the case `photo_mp` (issue 30: a 100 MP photograph within 4 GB): what
`keras-vessel predict` does with its defaults (`predict_files`: decode, FOV, shrink, network,
resampling back, PNGs) on a `synthetic_photograph` of that size (10:7, FOV 0.72 of the width),
saved as a JPEG by this process before the child starts; with `--model` or else the bundled model (a
model that records its training scale). The child also reports the growth of its peak over its RSS
before predicting (VmHWM reset through /proc/self/clear_refs after a warm-up on a small photograph).

    .venv/bin/python -m benchmarks.bench_inference [--images 20] [--repeats 1] [--cases drive hrf_tiled [hrf_whole]]
        [--model PATH.keras] [--tta d4] [--megapixels 100 [--memory-only]]

Prints a summary and writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_output_argument,
    begin,
    drive_test_samples,
    finish,
    hrf_sized_sample,
    RESULTS,
    synthetic_photograph,
)

TARGET_DRIVE_S = 0.3
TARGET_HRF_GB = 4.0
TARGET_PHOTO_S = 2.0  # issue 21: one 3504x2336 photograph with the defaults
PHOTO_SHAPE = (2336, 3504)
PHOTO_FOV = 3300  # px: an HRF-like field of view, clipped at the top and bottom of the frame
TARGET_PHOTO_GB = 4.0  # issue 30: a 100 MP photograph with the defaults
CASES = ("drive", "hrf_tiled", "hrf_whole", "photo_mp")


def load_model(args: argparse.Namespace, folder: Path):
    """`--model`, or the compact U-Net built, saved and loaded back, as the inference model."""
    import keras

    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.models import build_model

    if args.model:
        return load_inference_model(args.model, heads="mean")
    keras.utils.set_random_seed(0)
    path = folder / "compact_unet.keras"
    build_model("unet", base_filters=args.base_filters, depth=args.depth).save(path)
    return load_inference_model(path, heads="mean")


def time_drive(args: argparse.Namespace) -> dict:
    from keras_vessel.models.inference import predict_probability

    samples = drive_test_samples(args.images)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as temp:
        model = load_model(args, Path(temp))
    started = time.perf_counter()
    predict_probability(model, samples[0].image, fov=samples[0].fov, tta=args.tta)  # warm-up
    warmup = time.perf_counter() - started
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    for _ in range(args.repeats):
        for sample in samples:
            started, cpu = time.perf_counter(), time.process_time()
            predict_probability(model, sample.image, fov=sample.fov, tta=args.tta)
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu)
    return {
        "image_shape": list(samples[0].image.shape[:2]),
        "images": len(samples),
        "repeats": args.repeats,
        "warmup_seconds": warmup,
        "seconds_median": statistics.median(seconds),
        "seconds_mean": statistics.fmean(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "cpu_seconds_median": statistics.median(cpu_seconds),
        "target_seconds": TARGET_DRIVE_S,
        "meets_target": statistics.median(seconds) <= TARGET_DRIVE_S,
    }


def photograph(sample):
    """A 3504x2336 photograph like HRF's: a DRIVE image enlarged so its FOV is ~3300 px, centred, cropped."""
    import cv2
    import numpy as np

    from keras_vessel.data.scaling import image_fov

    factor = PHOTO_FOV / image_fov(sample.image).diameter
    big = cv2.resize(sample.image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros(PHOTO_SHAPE + (3,), np.uint8)
    top, left = (big.shape[0] - PHOTO_SHAPE[0]) // 2, (big.shape[1] - PHOTO_SHAPE[1]) // 2
    rows, cols = slice(max(top, 0), max(top, 0) + PHOTO_SHAPE[0]), slice(max(left, 0), max(left, 0) + PHOTO_SHAPE[1])
    crop = big[rows, cols]
    y, x = max(-top, 0), max(-left, 0)
    canvas[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    return canvas


def time_photo(args: argparse.Namespace) -> dict:
    """`predict_probability` with its defaults (scale auto) on a 3504x2336 photograph, median of 3 after a warm-up."""
    from keras_vessel.models.inference import inference_scale, predict_probability

    image = photograph(drive_test_samples(1)[0])
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as temp:
        model = load_model(args, Path(temp))
    predict_probability(model, image, tta=args.tta)  # warm-up (traces the graph for this size)
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        predict_probability(model, image, tta=args.tta)
        seconds.append(time.perf_counter() - started)
    choice = inference_scale(model, image)
    return {"image_shape": list(image.shape[:2]), "scale_factor": choice.factor,
            "fov_diameter": choice.fov.diameter if choice.fov else None,
            "seconds_median": statistics.median(seconds), "seconds": seconds,
            "target_seconds": TARGET_PHOTO_S, "meets_target": statistics.median(seconds) <= TARGET_PHOTO_S}


def _status_kib(key: str) -> int | None:
    """A KiB figure of /proc/self/status (``VmRSS``, ``VmHWM``), or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_kib() -> int | None:
    """Resident set size now (VmRSS, KiB), to tell the prediction's share of the peak."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int | None:
    """Peak resident set size since the start or the last `reset_peak` (VmHWM, KiB)."""
    return _status_kib("VmHWM")


def reset_peak() -> bool:
    """Start VmHWM again from the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def photo_shape(megapixels: float) -> tuple[int, int]:
    """(height, width) of a 10:7 photograph of `megapixels` (100 -> 8400x12000)."""
    width = round((megapixels * 1e6 * 10 / 7) ** 0.5 / 10) * 10
    return round(width * 0.7), width


def photo_child(path: Path, args: argparse.Namespace) -> dict:
    """`predict_files` (what `keras-vessel predict` runs) with its defaults on one photograph file."""
    from PIL import Image

    from keras_vessel.models.inference import BUNDLED_MODEL
    from keras_vessel.serving.prediction import predict_files

    model = args.model or BUNDLED_MODEL
    with tempfile.TemporaryDirectory(prefix="bench-photo-") as temp:
        folder = Path(temp)
        Image.fromarray(synthetic_photograph(420, 600)).save(folder / "warm.png")
        predict_files(model, [folder / "warm.png"], folder / "warm", progress=False)  # traces every function
        rss_before = current_rss_kib()
        reset = reset_peak()
        started = time.perf_counter()
        report = predict_files(model, [path], folder / "out", progress=False, overlay=args.overlay)
        seconds = time.perf_counter() - started
        assert not report.failures, report.failures
        hwm = peak_rss_kib()
    with Image.open(path) as image:
        width, height = image.size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; includes the warm-up
    return {
        "case": "photo_mp",
        "image_shape": [height, width],
        "megapixels": height * width / 1e6,
        "decoded_gb": 3 * height * width / 2**30,
        "overlay": args.overlay,
        "seconds_first_call": seconds,
        "peak_rss_gb": peak / 2**20,
        "rss_before_prediction_gb": rss_before / 2**20 if rss_before else None,
        "growth_gb": (hwm - rss_before) / 2**20 if reset and hwm and rss_before else None,
    }


def child(case: str, args: argparse.Namespace) -> dict:
    """One case in this (fresh) process; returns seconds and peak RSS."""
    if case == "photo_mp":
        return photo_child(args.photo, args)
    import numpy as np

    from keras_vessel.models.inference import predict_probability

    samples = drive_test_samples(2)
    sample = samples[0] if case == "drive" else hrf_sized_sample(samples[0], samples[1])
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as temp:
        model = load_model(args, Path(temp))
    options = {"max_whole_pixels": 10**9} if case == "hrf_whole" else {}
    rss_loaded = current_rss_kib()
    started = time.perf_counter()
    probability = predict_probability(model, sample.image, fov=sample.fov, tta=args.tta, **options)
    seconds = time.perf_counter() - started
    assert probability.shape == sample.image.shape[:2] and np.isfinite(probability).all()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "case": case,
        "image_shape": list(sample.image.shape[:2]),
        "seconds_first_call": seconds,
        "peak_rss_gb": rss_peak / 2**20,
        "rss_before_prediction_gb": rss_loaded / 2**20 if rss_loaded else None,
    }


def measure_memory(case: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_inference", "--child", case,
               "--base-filters", str(args.base_filters), "--depth", str(args.depth), "--tta", args.tta]
    command += ["--model", str(args.model)] if args.model else []
    command += ["--overlay"] if args.overlay else []
    with tempfile.TemporaryDirectory(prefix="bench-photo-") as temp:
        if case == "photo_mp":  # made here, so that the child's peak is predict's alone
            from PIL import Image

            args.photo = Path(temp) / "photo.jpg"
            Image.fromarray(synthetic_photograph(*photo_shape(args.megapixels))).save(args.photo, quality=92)
            command += ["--photo", str(args.photo)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        return {"case": case, "error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    if case.startswith("hrf") or case == "photo_mp":
        row["target_gb"] = TARGET_HRF_GB if case.startswith("hrf") else TARGET_PHOTO_GB
        row["meets_target"] = row["peak_rss_gb"] <= row["target_gb"]
    return row


def main(argv: list[str] | None = None) -> int:
    from keras_vessel.models.inference import TTA_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="DRIVE test images timed")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the images")
    parser.add_argument("--base-filters", type=int, default=12, help="U-Net filters at full resolution")
    parser.add_argument("--depth", type=int, default=4, help="U-Net poolings")
    parser.add_argument("--model", type=Path, help="time this .keras file instead of an untrained compact U-Net")
    parser.add_argument("--tta", choices=list(TTA_MODES), default="none", help="test-time augmentation")
    parser.add_argument("--cases", nargs="*", choices=CASES, default=["drive", "hrf_tiled"],
                        help="peak-memory cases, each in its own subprocess (hrf_whole peaks near "
                             "12 GB: opt in only on a machine with room)")
    parser.add_argument("--megapixels", type=float, help="also measure `predict` on a photograph of this size "
                        "(case photo_mp; 100 needs about 2.5 GB free)")
    parser.add_argument("--overlay", action="store_true", help="photo_mp: write the overlay too")
    parser.add_argument("--memory-only", action="store_true", help="skip the timings, measure the memory cases")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--photo", type=Path, help=argparse.SUPPRESS)
    add_output_argument(parser, "inference")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    if args.megapixels:
        args.cases = [*args.cases, "photo_mp"]
    if args.memory_only and args.output == RESULTS / "inference.json":
        args.output = RESULTS / "inference_memory.json"  # not over the timings

    record = begin("inference.predict_probability", args)
    network = str(args.model) if args.model else f"unet base_filters={args.base_filters} depth={args.depth}"
    results: dict = {"model": f"{network}, heads mean, tta {args.tta}"}
    if not args.memory_only:
        print_timings(args, results)
    results["memory"] = {}
    for case in args.cases:
        row = measure_memory(case, args)
        results["memory"][case] = row
        if "error" in row:
            print(f"{case}: FAILED {row['error']}")
            continue
        verdict = (f", target {row['target_gb']} GB: {'met' if row['meets_target'] else 'NOT met'}"
                   if "meets_target" in row else "")
        growth = (f", growth {row['growth_gb']:.2f} GB = {row['growth_gb'] / row['decoded_gb']:.1f}x the decoded "
                  "image" if row.get("growth_gb") else "")
        print(f"{case:9s} {tuple(row['image_shape'])}: peak RSS {row['peak_rss_gb']:.2f} GB "
              f"(RSS before predicting {row['rss_before_prediction_gb']:.2f} GB{growth}), first call "
              f"{row['seconds_first_call']:.1f} s{verdict}")
    finish(record, results, args.output)
    return 0


def print_timings(args: argparse.Namespace, results: dict) -> None:
    results["drive_time"] = time_drive(args)
    d = results["drive_time"]
    print(f"DRIVE test {tuple(d['image_shape'])}: median {d['seconds_median']:.3f} s per image "
          f"(mean {d['seconds_mean']:.3f}, min {d['seconds_min']:.3f}, max {d['seconds_max']:.3f}; "
          f"{d['images']} images x {d['repeats']}; CPU {d['cpu_seconds_median']:.3f} s), target {TARGET_DRIVE_S} s: "
          f"{'met' if d['meets_target'] else 'NOT met'}")
    results["photo_time"] = p = time_photo(args)
    print(f"photograph {tuple(p['image_shape'])} (FOV {p['fov_diameter'] or 0:.0f} px, resampled by "
          f"{p['scale_factor']:.3f}): median {p['seconds_median']:.2f} s, target {TARGET_PHOTO_S} s: "
          f"{'met' if p['meets_target'] else 'NOT met'}")


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    raise SystemExit(main())
