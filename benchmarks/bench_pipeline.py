"""Time the training input pipeline (`keras_vessel.data.pipeline.get_dataset`) in patches per second.

Target (issue): >= 3000 patches/s of 64x64 on the 2-core development machine.
Records are prepared into a temporary folder from the synthetic set and, when
present ($KERAS_VESSEL_DATA or ../shared/data), from the DRIVE training images.
For each, the pipeline is warmed up first (the decoded images are cached after
one pass), then `--batches` batches are pulled `--rounds` times from a Python
loop, as the training loop does; the median round is reported, in wall-clock
patches per second and in patches per second of process CPU time (all
threads), which depends less on what else runs on the machine.

    .venv/bin/python -m benchmarks.bench_pipeline [--batches 200] [--rounds 3] [--output PATH]

Prints a summary and writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import tensorflow as tf  # noqa: E402

from benchmarks.common import add_output_argument, begin, drive_root, finish  # noqa: E402
from keras_vessel.data.datasets import open_dataset  # noqa: E402
from keras_vessel.data.pipeline import get_dataset  # noqa: E402
from keras_vessel.data.tfrecords import write_dataset  # noqa: E402

TARGET = 3000.0


def prepare(name: str, root: Path | None, out_dir: Path, workers: int) -> dict:
    started = time.perf_counter()
    manifest = write_dataset(
        open_dataset(name, root, "training"), out_dir, dataset=name, split="training",
        workers=workers, show_progress=False,
    )
    return {"images": len(manifest["images"]), "prepare_seconds": time.perf_counter() - started}


def measure(records: Path, args: argparse.Namespace) -> dict:
    dataset = get_dataset(records, patch_size=args.patch_size, batch_size=args.batch_size, seed=0)
    iterator = iter(dataset)
    started = time.perf_counter()
    for _ in range(args.warmup_batches):  # decodes every image once and fills the cache
        next(iterator)
    warmup = time.perf_counter() - started
    rates, cpu_rates = [], []
    for _ in range(args.rounds):
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.batches):
            images, targets = next(iterator)
        rates.append(args.batches * args.batch_size / (time.perf_counter() - started))
        # patches per second of process CPU time (all threads): less sensitive to other load
        cpu_rates.append(args.batches * args.batch_size / (time.process_time() - cpu))
    assert images.shape == (args.batch_size, args.patch_size, args.patch_size, 3), images.shape
    return {
        "warmup_seconds": warmup,
        "patches_per_second_rounds": rates,
        "patches_per_second_median": statistics.median(rates),
        "megapixels_per_second_median": statistics.median(rates) * args.patch_size**2 / 1e6,
        "patches_per_cpu_second_median": statistics.median(cpu_rates),
        "target_patches_per_second": TARGET,
        "meets_target": statistics.median(rates) >= TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch-size", type=int, default=64, help="patch side in pixels")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per batch")
    parser.add_argument("--warmup-batches", type=int, default=60, help="batches pulled before timing")
    parser.add_argument("--batches", type=int, default=200, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="processes preparing the records")
    parser.add_argument("--no-drive", action="store_true", help="skip DRIVE even when it is present")
    add_output_argument(parser, "pipeline")
    args = parser.parse_args(argv)

    record = begin("pipeline.get_dataset", args)
    record["tf_threads"] = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    sources: list[tuple[str, Path | None]] = [("synthetic", None)]
    drive = None if args.no_drive else drive_root()
    if drive is not None:
        sources.append(("drive", drive))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as temp:
        for name, root in sources:
            records = Path(temp) / name
            results[name] = prepare(name, root, records, args.workers)
            results[name].update(measure(records, args))
            row = results[name]
            print(
                f"{name:9s} {row['images']:2d} images: median {row['patches_per_second_median']:7.0f} patches/s "
                f"({row['megapixels_per_second_median']:.1f} Mpx/s; rounds "
                + ", ".join(f"{r:.0f}" for r in row["patches_per_second_rounds"])
                + f"; {row['patches_per_cpu_second_median']:.0f} per CPU-second)"
                + f", target {TARGET:.0f}: {'met' if row['meets_target'] else 'NOT met'}"
            )
    if drive is None and not args.no_drive:
        results["drive"] = None
        print("DRIVE not found: only the synthetic set was measured")
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    raise SystemExit(main())
