"""The W-Net against the compact U-Net (issue 23): FLOPs, inference and training-step time, side by side.

In one process, interleaved rounds (timings on a shared machine drift by
10-25% between runs, so only ratios measured together mean much):

- FLOPs per DRIVE test image (padded to the stride), counted from the
  convolutions' output shapes and kernels (2 x MACs; ReLU, pooling and
  normalisation are not counted);
- inference: `predict_probability` per DRIVE test image (whole image, scale
  as the model records, here none);
- a training step: the shared distributed step (`keras_vessel.training.build_steps`)
  with the pixel-wise loss on 8 crops of 128x128.

    .venv/bin/python -m benchmarks.bench_networks [--images 5] [--rounds 3] [--steps 10]

Prints the table and writes benchmarks/results/networks.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import add_output_argument, begin, drive_test_samples, finish

NETWORKS = {
    "compact U-Net (base 12, depth 4)": ("unet", {"base_filters": 12, "depth": 4}),
    "W-Net (base 8, depth 2)": ("wnet", {"base_filters": 8, "depth": 2}),
    "W-Net (base 4, depth 3)": ("wnet", {"base_filters": 4, "depth": 3}),
    "W-Net (base 8, depth 2, 2x2 blocks)": ("wnet", {"base_filters": 8, "depth": 2, "block": 2}),
    "W-Net (base 16, depth 2, 2x2 blocks)": ("wnet", {"base_filters": 16, "depth": 2, "block": 2}),
}


def conv_flops(model, shape: tuple[int, int]) -> int:
    """2 x multiply-accumulates of every Conv2D / Conv2DTranspose for one image of `shape`."""
    import keras

    probe = keras.Model(model.inputs, [layer.output for layer in _convs(model)])
    outputs = probe([np.zeros((1, *shape, 3), "float32")])
    total = 0
    for layer, out in zip(_convs(model), outputs):
        kernel = layer.kernel.shape  # (kh, kw, in, out) or, transposed, (kh, kw, out, in)
        positions = out.shape[1] * out.shape[2]
        if isinstance(layer, keras.layers.Conv2DTranspose):
            positions = (out.shape[1] // layer.strides[0]) * (out.shape[2] // layer.strides[1])
        total += 2 * positions * int(np.prod(kernel))
    return total


def _convs(model):
    import keras

    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]


def main(argv: list[str] | None = None) -> int:
    import keras
    import tensorflow as tf

    from keras_vessel.data.targets import pack_targets
    from keras_vessel.losses import build_losses
    from keras_vessel.models import as_inference_model, build_model, model_stride
    from keras_vessel.models.inference import predict_probability
    from keras_vessel.training import build_steps

    tf.get_logger().setLevel("ERROR")  # one trace per network is the point, not a retracing problem

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5, help="DRIVE test images per inference round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    add_output_argument(parser, "networks")
    args = parser.parse_args(argv)
    record = begin("networks", args)
    samples = drive_test_samples(args.images)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 128, 128, 3)).astype("float32")
    label = (rng.random((8, 128, 128)) > 0.85).astype("float32")
    batch = (tf.constant(images), {"pixel": pack_targets(label, np.ones_like(label), np.zeros_like(label), label)})

    setups = {}
    for title, (name, options) in NETWORKS.items():
        keras.utils.set_random_seed(0)
        network = build_model(name, heads=("pixel",), **options)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(network.trainable_variables)
        step, _ = build_steps(network, optimizer, build_losses("pixel"), tf.distribute.get_strategy())
        stride = model_stride(network)
        height, width = (-(-side // stride) * stride for side in samples[0].image.shape[:2])
        setups[title] = {"model": as_inference_model(network), "step": step, "parameters": network.count_params(),
                         "flops": conv_flops(network, (height, width)), "infer": [], "train": []}
        predict_probability(setups[title]["model"], samples[0].image, scale="none")  # warm-up traces
        step(batch)
    for _ in range(args.rounds):
        for setup in setups.values():
            started = time.perf_counter()
            for sample in samples:
                predict_probability(setup["model"], sample.image, scale="none")
            setup["infer"].append((time.perf_counter() - started) / len(samples))
            started = time.perf_counter()
            for _ in range(args.steps):
                float(setup["step"](batch)["loss"])
            setup["train"].append((time.perf_counter() - started) / args.steps)

    base = next(iter(setups.values()))
    rows = {}
    for title, setup in setups.items():
        infer, train = statistics.median(setup["infer"]), statistics.median(setup["train"])
        rows[title] = {"parameters": setup["parameters"], "gflops_per_drive_image": setup["flops"] / 1e9,
                       "inference_ms": 1000 * infer, "train_step_ms": 1000 * train,
                       "flops_ratio": setup["flops"] / base["flops"],
                       "inference_ratio": infer / statistics.median(base["infer"]),
                       "train_step_ratio": train / statistics.median(base["train"])}
    print(table(rows))
    finish(record, {"networks": rows}, args.output)
    return 0


def table(rows: dict[str, dict]) -> str:
    """The markdown table of `rows` ({network title: the numbers `main` measures}), first row the reference."""
    lines = ["| network | parameters | GFLOP / DRIVE image | ms / DRIVE image | ms / training step | FLOPs ratio | "
             "inference ratio | step ratio |", "|---|---|---|---|---|---|---|---|"]
    for title, row in rows.items():
        lines.append(f"| {title} | {row['parameters']:,} | {row['gflops_per_drive_image']:.1f} | "
                     f"{row['inference_ms']:.0f} | {row['train_step_ms']:.0f} | {row['flops_ratio']:.3f} | "
                     f"{row['inference_ratio']:.2f} | {row['train_step_ratio']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    raise SystemExit(main())
