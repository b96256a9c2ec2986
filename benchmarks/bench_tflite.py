"""A model as LiteRT (TFLite) flat buffers (issue 23): size, CPU latency and agreement with Keras.

For each weight type of `keras_vessel.serving.tflite.export_tflite` (float32,
float16, int8 dynamic range) the model is exported to a temporary folder and
run with the TFLite interpreter (all cores) on DRIVE test images, each padded
to the model's stride by reflection, the network alone (no field-of-view
resampling: DRIVE is already at a 540 px model's scale). The Keras inference
model runs the same inputs in the same process. Per weight type:

- the file's size (MB);
- the median time per DRIVE image (ms);
- the largest difference of probability from Keras inside the FOV;
- the AUC pooled over the images' FOV pixels (Keras's is the first row).

    .venv/bin/python -m benchmarks.bench_tflite [--model saved_models/general_unet/model.keras] [--images 5]

Prints the table and writes benchmarks/results/tflite.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_argument, begin, drive_test_samples, finish


def main(argv: list[str] | None = None) -> int:
    import tensorflow as tf

    from keras_vessel.evaluation import metrics
    from keras_vessel.models import model_stride
    from keras_vessel.models.inference import bundled_model_path, load_inference_model
    from keras_vessel.serving.tflite import WEIGHTS, export_tflite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a .keras model (default: the bundled one)")
    parser.add_argument("--images", type=int, default=5, help="DRIVE test images")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    add_output_argument(parser, "tflite")
    args = parser.parse_args(argv)
    model_path = args.model or bundled_model_path()
    record = begin("tflite", args)
    samples = drive_test_samples(args.images)
    model = load_inference_model(model_path)
    stride = model_stride(model)
    height, width = samples[0].image.shape[:2]
    pad = ((0, -height % stride), (0, -width % stride), (0, 0))
    inputs = [np.pad(s.image.astype("float32"), pad, mode="reflect")[None] for s in samples]
    labels = np.concatenate([s.label for s in samples])
    fovs = np.concatenate([s.fov for s in samples])

    def crop(probability: np.ndarray) -> np.ndarray:
        return np.squeeze(probability)[:height, :width]  # Keras: (1, H, W, 1); LiteRT: (1, H, W)

    def timed(run) -> tuple[list[np.ndarray], float]:
        outputs = [crop(run(x)) for x in inputs]  # also the warm-up
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for x in inputs:
                run(x)
            seconds.append((time.perf_counter() - started) / len(inputs))
        return outputs, statistics.median(seconds)

    graph = tf.function(lambda x: model(x, training=False), reduce_retracing=True)  # as predict_probability runs it
    keras_outputs, keras_seconds = timed(lambda x: graph(tf.constant(x)).numpy())
    rows = {"Keras (.keras)": {"size_mb": model_path.stat().st_size / 1e6, "ms_per_image": 1000 * keras_seconds,
                               "max_difference": 0.0,
                               "auc_pooled": metrics.roc_auc(np.concatenate(keras_outputs), labels, fovs)}}
    with tempfile.TemporaryDirectory() as folder:
        for weights in WEIGHTS:
            path = export_tflite(model_path, folder, name=f"model_{weights}", weights=weights)
            interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=os.cpu_count())
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, list(inputs[0].shape))
            interpreter.allocate_tensors()
            output = interpreter.get_output_details()[0]["index"]

            def run(x, interpreter=interpreter, index=index, output=output):
                interpreter.set_tensor(index, x)
                interpreter.invoke()
                return interpreter.get_tensor(output)

            outputs, seconds = timed(run)
            difference = max(float(np.abs(a - b)[s.fov].max()) for a, b, s in zip(outputs, keras_outputs, samples))
            rows[f"LiteRT, {weights} weights"] = {
                "size_mb": path.stat().st_size / 1e6, "ms_per_image": 1000 * seconds, "max_difference": difference,
                "auc_pooled": metrics.roc_auc(np.concatenate(outputs), labels, fovs)}
    print(table(rows, model_path, len(samples)))
    finish(record, {"model": str(model_path), "images": len(samples), "formats": rows}, args.output)
    return 0


def table(rows: dict[str, dict], model_path: Path, images: int) -> str:
    """The markdown table of `rows` ({format: the numbers `main` measures})."""
    lines = [f"{model_path}, {images} DRIVE test images:", "",
             "| format | size (MB) | ms / DRIVE image | max difference from Keras (FOV) | AUC pooled |",
             "|---|---|---|---|---|"]
    for title, row in rows.items():
        lines.append(f"| {title} | {row['size_mb']:.2f} | {row['ms_per_image']:.0f} | {row['max_difference']:.1e} | "
                     f"{row['auc_pooled']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our figures, not TensorFlow's CUDA probing
    raise SystemExit(main())
