"""Tell a model trained before keras-vessel recorded scales the FOV diameter it was trained at.

Models trained before issue 21 (the bundled `drive_unet` up to version 3) hold
no `FovDiameter`, so `predict --scale auto` runs every photograph at its own
size. This writes a copy of such a model that records the median FOV diameter
of its training dataset (`keras_vessel.models.record_fov_diameter`; the
weights are unchanged), and chooses its threshold again on those training
images at ``--scale auto``, stored beside it as ``threshold.json``:

    .venv/bin/python -m experiments.record_scale --model saved_models/drive_unet/model.keras \\
        --dataset drive --out runs/drive_unet_scaled

then export it as usual (`keras-vessel export --model runs/drive_unet_scaled/model.keras --threshold train
--keras ...`). A model that already records a diameter is refused.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from experiments.cross_dataset import ROOTS, SHARED, median_fov_diameter


def record_scale(model_path: Path, dataset: str, out: Path, *, data: Path = SHARED) -> dict:
    """Write ``out/model.keras`` (recording the scale) and ``out/threshold.json``; returns what was recorded."""
    from keras_vessel.io import ensure_writable_dir, write_json_atomic
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import choose_training_threshold, save_threshold
    from keras_vessel.models import build_inference_model, record_fov_diameter
    from keras_vessel.models.saving import load_model_file, save_model_atomic

    training = open_dataset(dataset, data / ROOTS[dataset], "training")
    diameter = median_fov_diameter(training)
    # wrap an uncompiled copy: a nested compiled model would carry its optimizer's moments into the file
    recorded = record_fov_diameter(load_model_file(model_path, compile=False), diameter)
    compiled = load_model_file(model_path, compile=True)
    if getattr(compiled, "optimizer", None) is not None and getattr(compiled, "loss", None):
        # still a training model (`keras-vessel export --keras`, fine-tuning): the same losses, a fresh optimizer
        recorded.compile(optimizer=compiled.optimizer.__class__.from_config(compiled.optimizer.get_config()),
                         loss=compiled.loss)
    out = ensure_writable_dir(out)
    target = out / "model.keras"
    save_model_atomic(recorded, target)
    threshold = choose_training_threshold(build_inference_model(recorded), training,
                                          predict_options={"scale": "auto"})
    save_threshold(target, threshold, heads="mean", dataset=dataset, images=len(training), scale="auto")
    summary = {"source_model": str(model_path), "dataset": dataset, "fov_diameter": diameter,
               "threshold": threshold, "training_images": len(training)}
    write_json_atomic(out / "record_scale.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="A .keras model that records no FOV diameter.")
    parser.add_argument("--dataset", choices=sorted(ROOTS), required=True, help="The dataset it was trained on.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for model.keras and threshold.json.")
    parser.add_argument("--data", type=Path, default=SHARED, help="Folder with DRIVE/ and CHASE_DB1/.")
    args = parser.parse_args(argv)
    try:
        summary = record_scale(args.model, args.dataset, args.out, data=args.data)
    except (OSError, ValueError) as error:
        raise SystemExit(f"Error: {error}") from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    from keras_vessel_cli.errors import quiet_tensorflow

    quiet_tensorflow()  # our progress lines, not TensorFlow's CUDA probing
    main()
