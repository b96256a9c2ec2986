"""Training-step cost of each loss of the issue-7 ablation, relative to the pixel-wise loss.

Same step, data and model as bench_train_step.py (compact U-Net, 8 crops of
128x128 from DRIVE training records, the real `_make_steps` step), one model
per loss in one process, timed in interleaved rounds with the order rotated,
after `--warmup-steps` steps of training each so the predictions (which the
joint loss's thinning depends on) look like vessels. Reported: median over
rounds of (loss step / pixel step).

    .venv/bin/python -m benchmarks.bench_loss_step [--rounds 5] [--steps 3] [--warmup-steps 100]

Prints a summary and writes benchmarks/results/loss_step.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402

from benchmarks.common import add_output_argument, begin, finish  # noqa: E402
from bench_train_step import Trainer, add_step_arguments, fixed_batches, prepare_records  # noqa: E402

SETTINGS = ("pixel", "joint", "pixel+cldice", "pixel+skeleton_recall", "joint+skeleton_recall")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps per loss per round")
    parser.add_argument("--warmup-steps", type=int, default=100, help="training steps of each model first")
    add_output_argument(parser, "loss_step")
    args = parser.parse_args()
    record = begin("train_step.per_loss", args)
    with tempfile.TemporaryDirectory(prefix="bench-loss-step-") as temp:
        source, _ = prepare_records(Path(temp), args.images, args.workers)
        batches = fixed_batches(Path(temp), args)
    keras.utils.set_random_seed(args.seed)
    trainers = {setting: Trainer(setting, args) for setting in SETTINGS}
    for trainer in trainers.values():
        trainer.run(batches, args.warmup_steps)
    times: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
    for round_index in range(args.rounds):
        shift = round_index % len(SETTINGS)
        for setting in SETTINGS[shift:] + SETTINGS[:shift]:
            times[setting].append(trainers[setting].run(batches, args.steps)[0])
    ratio_rounds = {s: [a / b for a, b in zip(times[s], times["pixel"])] for s in SETTINGS}
    ratios = {s: statistics.median(values) for s, values in ratio_rounds.items()}
    results = {
        "data": source,
        "ms_per_step_median": {s: statistics.median(t) * 1e3 for s, t in times.items()},
        "ratios": ratios,
        "ratio_rounds": ratio_rounds,
    }
    for setting in SETTINGS:
        print(f"{setting:24s} {results['ms_per_step_median'][setting]:7.1f} ms/step  {ratios[setting]:.2f}x pixel")
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    raise SystemExit(main())
