"""Benchmark: TF thinning / segment weights vs the same computation in NumPy + scikit-image.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_thinning [--repeats 15] [--output benchmarks/results/thinning.json]

Both sides run in this one process on the same batch (8 x 128x128 DRIVE crops
with noisy predictions), timed alternately so that load from other processes
on a shared machine hits both alike; medians are reported. The TF side runs
in a `tf.function` after a warm-up call. The thinning worst cases (a fully-on
map, large discs) show how the iteration count grows with blob width.
Prints a table and writes the JSON with machine info and the git revision.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import scipy.ndimage as ndi
import tensorflow as tf
from PIL import Image
from skimage.morphology import disk
from skimage.morphology import thin as sk_thin


from benchmarks.common import add_output_argument, begin, data_root, finish  # noqa: E402

from keras_vessel.losses import segment_weights  # noqa: E402
from keras_vessel.data.segments import build_id_mask  # noqa: E402
from keras_vessel.losses.thinning import thin_with_iterations  # noqa: E402


# ------------------------------------------------------------ NumPy reference


def numpy_segment_weights(prob, label, id_mask, valid, threshold=0.5, ratio=0.8):
    """METHOD.md section 2 in NumPy + scikit-image, vectorised like the TF version (bincount)."""
    binary = prob >= threshold
    skeleton = np.stack([sk_thin(image) for image in binary])
    vessel = label > 0
    region = np.abs(id_mask)
    stride = int(region.max()) + 1
    segment = (np.arange(len(prob))[:, None, None] * stride + region).ravel()
    inside = (region > 0).ravel()
    size = len(prob) * stride
    ref_len = np.bincount(segment, (id_mask < 0).ravel(), size)
    gt_area = np.bincount(segment, (vessel.ravel() & inside), size)
    pred_len = np.bincount(segment, (skeleton.ravel() & inside), size)
    pred_area = np.bincount(segment, (binary.ravel() & inside), size)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_gt = np.where(ref_len > 0, gt_area / ref_len, 0.0)
        t_pred = np.where(pred_len > ratio * ref_len, pred_area / np.maximum(pred_len, 1), 0.0)
        counted = (ref_len > 0) & (t_gt > 0)
        sim_segment = np.where(counted, 1.0 - np.abs(t_pred - t_gt) / np.where(counted, t_gt, 1.0), 1.0)
    sim = sim_segment[segment].reshape(prob.shape)
    sim[binary & (region == 0) & ~vessel & (valid > 0)] = 0.0
    return (2.0 - sim).astype(np.float32)


# ------------------------------------------------------------------- inputs


def drive_batch(data_root: Path, count: int = 8, size: int = 128, seed: int = 0):
    """`count` random crops inside the FOV of DRIVE training images 21.., with noisy predictions."""
    rng = np.random.default_rng(seed)
    training = data_root / "DRIVE" / "training"
    labels, fovs, masks = [], [], []
    numbers = list(range(21, 21 + count // 2))
    for number in numbers:
        label = np.asarray(Image.open(training / "1st_manual" / f"{number}_manual1.gif")) > 0
        fov = np.asarray(Image.open(training / "mask" / f"{number}_training_mask.gif")) > 0
        mask = build_id_mask(label, fov)
        for _ in range(count // len(numbers)):
            while True:
                y = rng.integers(0, label.shape[0] - size)
                x = rng.integers(0, label.shape[1] - size)
                if fov[y : y + size, x : x + size].mean() > 0.7:
                    break
            labels.append(label[y : y + size, x : x + size])
            fovs.append(fov[y : y + size, x : x + size])
            masks.append(mask[y : y + size, x : x + size])
    label, fov, mask = np.stack(labels), np.stack(fovs), np.stack(masks)
    smooth = ndi.gaussian_filter(label.astype(np.float32), sigma=(0, 1.0, 1.0))
    prob = np.clip(smooth + rng.normal(0.0, 0.25, label.shape), 0, 1).astype(np.float32)
    return prob, label, mask, fov


def worst_cases(size: int = 128, count: int = 8) -> dict[str, np.ndarray]:
    radius = size // 2 - 4
    discs = np.zeros((count, size, size), bool)
    for i in range(count):
        shift = i - count // 2
        sub = disk(radius).astype(bool)
        top = (size - sub.shape[0]) // 2 + shift // 2
        discs[i, top : top + sub.shape[0], 4 + i // 2 : 4 + i // 2 + sub.shape[1]] = sub
    return {"fully_on": np.ones((count, size, size), bool), f"discs_r{radius}": discs}


# ------------------------------------------------------------------- timing


def alternate(functions: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per variant (median)")
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding DRIVE/")
    add_output_argument(parser, "thinning")
    args = parser.parse_args(argv)
    root = args.data_root or data_root()
    record = begin("thinning", args, extra_versions=("scikit-image",))

    prob, label, mask, fov = drive_batch(root)
    results: dict = {"batch_shape": list(prob.shape), "repeats": args.repeats}

    # --- segment_weights: TF graph vs NumPy + scikit-image
    tf_weights = tf.function(segment_weights)
    inputs = [tf.constant(np.asarray(a, np.float32)) for a in (prob, label, mask, fov)]
    got = tf_weights(*inputs).numpy()  # warm-up (trace)
    expected = numpy_segment_weights(prob, label, mask, fov)
    max_diff = float(np.abs(got - expected).max())
    timing = alternate(
        {
            "tensorflow": lambda: tf_weights(*inputs).numpy(),
            "numpy_skimage": lambda: numpy_segment_weights(prob, label, mask, fov),
        },
        args.repeats,
    )
    results["segment_weights"] = {
        "ms_tensorflow": timing["tensorflow"] * 1e3,
        "ms_numpy_skimage": timing["numpy_skimage"] * 1e3,
        "speedup": timing["numpy_skimage"] / timing["tensorflow"],
        "max_abs_difference": max_diff,
    }

    # --- thinning alone: vessel-like maps and worst cases
    graph_thin = tf.function(thin_with_iterations)
    xla_thin = tf.function(thin_with_iterations, jit_compile=True)
    maps = {"vessel_like_noisy_predictions": prob >= 0.5, **worst_cases()}
    results["thinning"] = {}
    for name, batch in maps.items():
        tensor = tf.constant(batch)
        skeleton, iterations, converged = graph_thin(tensor)
        reference = np.stack([sk_thin(image) for image in batch])
        xla_thin(tensor)  # warm-up (compile)
        timing = alternate(
            {
                "tensorflow": lambda: graph_thin(tensor)[0].numpy(),
                "tensorflow_xla": lambda: xla_thin(tensor)[0].numpy(),
                "numpy_skimage": lambda: [sk_thin(image) for image in batch],
            },
            max(3, args.repeats // 3) if "vessel" not in name else args.repeats,
        )
        results["thinning"][name] = {
            "iterations": int(iterations),
            "converged": bool(converged),
            "equal_to_skimage": bool(np.array_equal(skeleton.numpy(), reference)),
            "ms_tensorflow": timing["tensorflow"] * 1e3,
            "ms_tensorflow_xla": timing["tensorflow_xla"] * 1e3,
            "ms_numpy_skimage": timing["numpy_skimage"] * 1e3,
            "speedup": timing["numpy_skimage"] / timing["tensorflow"],
        }

    sw = results["segment_weights"]
    print(f"batch {tuple(prob.shape)}, median of {args.repeats} alternating calls")
    print(
        f"segment_weights  TF {sw['ms_tensorflow']:8.1f} ms   NumPy+skimage {sw['ms_numpy_skimage']:8.1f} ms"
        f"   speedup x{sw['speedup']:.2f}   max |diff| {sw['max_abs_difference']:.2e}"
    )
    for name, row in results["thinning"].items():
        print(
            f"thin {name:32s} iters {row['iterations']:3d} equal {row['equal_to_skimage']!s:5s}"
            f"  TF {row['ms_tensorflow']:8.1f} ms  TF-XLA {row['ms_tensorflow_xla']:8.1f} ms"
            f"  skimage {row['ms_numpy_skimage']:8.1f} ms  speedup x{row['speedup']:.2f}"
        )
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
