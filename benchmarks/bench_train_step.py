"""Time one training step with the joint loss against the pixel-wise loss, and training throughput.

Target: joint step <= 1.15x pixel step (compact U-Net, base 16, depth 4,
batch of 8 crops of 128x128). The step is the real one,
`keras_vessel.training.build_steps`, under `tf.distribute.get_strategy()`,
with `keras_vessel.losses.build_losses("joint" / "pixel")`; the crops are
DRIVE training patches with their ID masks from records prepared into a
temporary folder (the synthetic set when DRIVE is absent).

All models live in this one process and are timed in interleaved rounds
(`--steps` steps each, order rotated every round), so load from other
processes hits them alike; the median per-round ratio is reported. Besides
the pixel baseline as training runs it (one head), the joint network is also
trained with the pixel-wise loss on both heads: joint / that isolates the cost
of the segment weights, that / pixel the cost of the second head. The joint
step's cost depends on the predictions (thinning iterates until the widest
predicted blob is one pixel wide), so the ratio is measured twice: on the
untrained network, which predicts blobs, and after `--warmup-steps` training
steps of the joint model on the same data, when predictions look like
vessels. The pixel step does not depend on the predictions, so its model is
not trained. Throughput (megapixels of training patches per second) is
reported for float32 and mixed_bfloat16 on untrained models.

    .venv/bin/python -m benchmarks.bench_train_step [--rounds 5] [--steps 3] [--warmup-steps 200] [--bf16-rounds 2]

Prints a summary and writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import add_output_argument, begin, drive_root, finish  # noqa: E402
from keras_vessel.data.datasets import open_dataset  # noqa: E402
from keras_vessel.losses import PixelWiseLoss, build_losses  # noqa: E402
from keras_vessel.models import build_model  # noqa: E402
from keras_vessel.data.pipeline import get_dataset  # noqa: E402
from keras_vessel.data.tfrecords import write_dataset  # noqa: E402
from keras_vessel.losses.thinning import thin_with_iterations  # noqa: E402
from keras_vessel.training import build_steps  # noqa: E402

TARGET_RATIO = 1.15
# "pixel" is the baseline as training runs it (one head); "pixel_two_heads" is the
# joint network with the pixel-wise loss on both heads, so joint / pixel_two_heads
# is the cost of the segment weights alone and pixel_two_heads / pixel that of the second head.
KINDS = ("joint", "pixel", "pixel_two_heads")


def prepare_records(out_dir: Path, images: int, workers: int) -> tuple[str, float]:
    drive = drive_root()
    name, specs = ("drive", open_dataset("drive", drive, "training")) if drive else (
        "synthetic", open_dataset("synthetic", None, "training"))
    started = time.perf_counter()
    write_dataset(specs[:images], out_dir, dataset=name, split="training", workers=workers,
                  show_progress=False)
    return name, time.perf_counter() - started


def fixed_batches(records: Path, args: argparse.Namespace) -> list[tuple[tf.Tensor, dict]]:
    """`--distinct-batches` augmented batches, materialised so both losses see the same data."""
    dataset = get_dataset(records, patch_size=args.crop, batch_size=args.batch_size,
                          outputs=("segment", "pixel"), min_fov_fraction=0.7, seed=1)
    return [(images, dict(targets)) for images, targets in dataset.take(args.distinct_batches)]


class Trainer:
    """A model, its optimizer and the real distributed train step for one loss kind.

    ``kind`` is a `build_losses` kind, optionally with an extra loss
    (``"pixel+cldice"``, ``"joint+skeleton_recall"``), or ``"pixel_two_heads"``.
    """

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        strategy = tf.distribute.get_strategy()
        base, _, extra = kind.partition("+")
        heads = ("pixel",) if base == "pixel" else ("segment", "pixel")
        with strategy.scope():
            self.model = build_model("unet", base_filters=args.base_filters, depth=args.depth, heads=heads)
            self.optimizer = keras.optimizers.Adam(args.learning_rate)
            if kind == "pixel_two_heads":
                self.losses = {"segment": PixelWiseLoss(), "pixel": PixelWiseLoss()}
            else:
                self.losses = build_losses(base, extra=extra or "none")
            self.optimizer.build(self.model.trainable_variables)
        self.step_fn, _ = build_steps(self.model, self.optimizer, self.losses, strategy)
        self.heads = heads
        self.position = 0

    def step(self, batches: list) -> float:
        images, targets = batches[self.position % len(batches)]
        self.position += 1
        values = self.step_fn((images, {head: targets[head] for head in self.heads}))
        return float(values["loss"])  # waits for the step, as the training loop does

    def run(self, batches: list, steps: int) -> tuple[float, float]:
        """Wall and process-CPU seconds per step over `steps` steps."""
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step(batches)
        return (time.perf_counter() - started) / steps, (time.process_time() - cpu) / steps


def prediction_shape(trainer: Trainer, batches: list) -> dict:
    """How blob-like the segment head's predictions are: positive fraction and thinning passes."""
    images, _ = batches[0]
    logits = trainer.model(images, training=False)["segment"]
    binary = tf.sigmoid(tf.cast(logits[..., 0], tf.float32)) >= 0.5
    _, iterations, converged = thin_with_iterations(binary)
    return {
        "predicted_vessel_fraction": float(tf.reduce_mean(tf.cast(binary, tf.float32))),
        "thinning_iterations": int(iterations),
        "thinning_converged": bool(converged),
    }


def compare(trainers: dict[str, Trainer], batches: list, args: argparse.Namespace,
            rounds: int, steps: int) -> dict:
    """Interleaved rounds of the three steps; median ms and median per-round ratios."""
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for round_index in range(rounds):
        shift = round_index % len(KINDS)  # rotate the order, so no kind always runs first
        for kind in KINDS[shift:] + KINDS[:shift]:
            wall, cpu_seconds = trainers[kind].run(batches, steps)
            times[kind].append(wall)
            cpu[kind].append(cpu_seconds)
    def ratios(numerator: str, denominator: str, source: dict[str, list[float]]) -> list[float]:
        return [a / b for a, b in zip(source[numerator], source[denominator])]

    ratio_rounds = ratios("joint", "pixel", times)
    pixels = args.batch_size * args.crop**2
    return {
        "rounds": rounds,
        "steps_per_round": steps,
        "ms_per_step_rounds": {kind: [t * 1e3 for t in values] for kind, values in times.items()},
        "ms_per_step_median": {kind: statistics.median(values) * 1e3 for kind, values in times.items()},
        "cpu_ms_per_step_median": {kind: statistics.median(values) * 1e3 for kind, values in cpu.items()},
        "cpu_ratio_median": statistics.median(ratios("joint", "pixel", cpu)),
        "segment_weights_ratio_median": statistics.median(ratios("joint", "pixel_two_heads", times)),
        "segment_weights_cpu_ratio_median": statistics.median(ratios("joint", "pixel_two_heads", cpu)),
        "second_head_ratio_median": statistics.median(ratios("pixel_two_heads", "pixel", times)),
        "megapixels_per_second": {kind: pixels / statistics.median(values) / 1e6 for kind, values in times.items()},
        "ratio_rounds": ratio_rounds,
        "ratio_median": statistics.median(ratio_rounds),
        "target_ratio": TARGET_RATIO,
        "meets_target": statistics.median(ratio_rounds) <= TARGET_RATIO,
        "joint_predictions": prediction_shape(trainers["joint"], batches),
    }


def make_trainers(args: argparse.Namespace, batches: list, warm_steps: int = 2) -> dict[str, Trainer]:
    keras.utils.set_random_seed(args.seed)
    trainers = {kind: Trainer(kind, args) for kind in KINDS}
    for trainer in trainers.values():  # trace, and let the first slow steps pass
        trainer.run(batches, warm_steps)
    return trainers


def print_comparison(label: str, row: dict) -> None:
    ms, mpx = row["ms_per_step_median"], row["megapixels_per_second"]
    pred = row["joint_predictions"]
    print(
        f"{label}: joint {ms['joint']:.1f} ms, pixel {ms['pixel']:.1f} ms, pixel on both heads "
        f"{ms['pixel_two_heads']:.1f} ms per step\n"
        f"  joint/pixel median {row['ratio_median']:.3f} (rounds {min(row['ratio_rounds']):.2f}-"
        f"{max(row['ratio_rounds']):.2f}; CPU-time {row['cpu_ratio_median']:.3f}; target <= {TARGET_RATIO}: "
        f"{'met' if row['meets_target'] else 'NOT met'}); segment weights alone "
        f"(joint/pixel on both heads) {row['segment_weights_ratio_median']:.3f} "
        f"(CPU-time {row['segment_weights_cpu_ratio_median']:.3f}); second head {row['second_head_ratio_median']:.3f}\n"
        f"  Mpx/s joint {mpx['joint']:.3f}, pixel {mpx['pixel']:.3f}; segment head "
        f"{pred['predicted_vessel_fraction']:.1%} positive, {pred['thinning_iterations']} thinning passes"
    )


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, data and optimizer options shared with bench_loss_step.py."""
    parser.add_argument("--crop", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per step")
    parser.add_argument("--base-filters", type=int, default=12, help="U-Net filters at full resolution")
    parser.add_argument("--depth", type=int, default=4, help="U-Net poolings")
    parser.add_argument("--images", type=int, default=8, help="training images to prepare")
    parser.add_argument("--distinct-batches", type=int, default=8, help="batches cycled through")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--workers", type=int, default=2, help="processes preparing the records")
    parser.add_argument("--seed", type=int, default=0, help="weights seed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per float32 comparison")
    parser.add_argument("--steps", type=int, default=3, help="steps per model per round (float32)")
    parser.add_argument("--bf16-rounds", type=int, default=2,
                        help="alternating rounds for mixed_bfloat16 (about 10x slower than float32 here)")
    parser.add_argument("--bf16-steps", type=int, default=1, help="steps per model per round (mixed_bfloat16)")
    parser.add_argument("--warmup-steps", type=int, default=200,
                        help="joint-model training steps before the second comparison")
    parser.add_argument("--skip-bfloat16", action="store_true", help="do not measure mixed_bfloat16")
    add_output_argument(parser, "train_step")
    args = parser.parse_args(argv)

    record = begin("train_step.joint_vs_pixel", args)
    results: dict = {}
    keras.mixed_precision.set_global_policy("float32")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-train-step-") as temp:
            source, seconds = prepare_records(Path(temp), args.images, args.workers)
            batches = fixed_batches(Path(temp), args)
        results["data"] = {"source": source, "images": args.images, "prepare_seconds": seconds,
                           "batch_shape": list(batches[0][0].shape)}
        print(f"data: {args.images} {source} training images, {len(batches)} batches of "
              f"{tuple(batches[0][0].shape)}")

        trainers = make_trainers(args, batches)
        results["float32_untrained"] = compare(trainers, batches, args, args.rounds, args.steps)
        print_comparison("float32, untrained", results["float32_untrained"])

        started = time.perf_counter()
        losses = [trainers["joint"].step(batches) for _ in range(args.warmup_steps)]
        results["warmup_training"] = {
            "steps": args.warmup_steps, "seconds": time.perf_counter() - started,
            "joint_loss_first": losses[0] if losses else None, "joint_loss_last": losses[-1] if losses else None,
        }
        print(f"trained the joint model {args.warmup_steps} steps in "
              f"{results['warmup_training']['seconds']:.0f} s (loss {losses[0]:.3f} -> {losses[-1]:.3f})"
              if losses else "no warm-up training")
        results["float32_trained"] = compare(trainers, batches, args, args.rounds, args.steps)
        print_comparison(f"float32, {args.warmup_steps} steps trained", results["float32_trained"])

        if not args.skip_bfloat16:
            del trainers
            keras.backend.clear_session()  # resets the dtype policy: set it after
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
            trainers = make_trainers(args, batches, warm_steps=1)
            results["mixed_bfloat16_untrained"] = compare(
                trainers, batches, args, args.bf16_rounds, args.bf16_steps)
            print_comparison("mixed_bfloat16, untrained", results["mixed_bfloat16_untrained"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    raise SystemExit(main())
