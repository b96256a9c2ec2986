"""The main job end to end: prepare, train, evaluate, export and predict.

On the built-in synthetic fundus set by default, so a newcomer can run it with
nothing downloaded (`make demo`); with `root=` pointing at DRIVE it runs the
same flow on DRIVE. Every step is resumable: prepared shards, finished epochs
and the exported version are kept when the demo is re-run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from keras_vessel.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig

#: The demo run: small enough for a 2-core laptop in a few minutes (configs/demo.yaml is the same).
DEMO_CONFIG = RunConfig(
    name="demo",
    data=DataConfig(train_records="records/training", validation_images=2, patch_size=64, batch_size=8),
    model=ModelConfig(name="unet", options={"base_filters": 8, "depth": 3}),
    loss=LossConfig(kind="joint"),
    train=TrainConfig(epochs=6, steps_per_epoch=100, optimizer="adam", learning_rate=2e-3, seed=0),
)


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    report_dir: Path
    export_dir: Path
    predictions_dir: Path
    metrics: dict


def run_demo(
    output_dir: str | Path,
    *,
    root: str | Path | None = None,
    epochs: int | None = None,
    workers: int = 2,
    quiet: bool = False,
) -> DemoResult:
    """Run the whole flow into `output_dir`; DRIVE when `root` is given, else synthetic data."""
    from keras_vessel.datasets import open_dataset
    from keras_vessel.evaluation import evaluate, load_threshold
    from keras_vessel.export import export_saved_model
    from keras_vessel.inference import load_inference_model
    from keras_vessel.prediction import predict_files
    from keras_vessel.tfrecords import write_dataset
    from keras_vessel.training import train

    output_dir = Path(output_dir)
    dataset = "drive" if root is not None else "synthetic"
    records = output_dir / "records"
    for split in ("training", "test"):
        specs = open_dataset(dataset, root, split)
        write_dataset(specs, records / split, dataset=dataset, split=split, workers=workers,
                      show_progress=not quiet)

    config = replace(DEMO_CONFIG, data=replace(DEMO_CONFIG.data, train_records=str(records / "training")))
    if dataset == "drive":  # DRIVE images are larger: bigger patches and network
        config = replace(config, data=replace(config.data, patch_size=128),
                         model=ModelConfig(name="unet", options={"base_filters": 12, "depth": 4}))
    if epochs is not None:
        config = replace(config, train=replace(config.train, epochs=epochs))
    result = train(config, output_dir / "run", verbose=0 if quiet else 1)

    threshold = load_threshold(result.model_path, heads=config.train.heads)
    test_specs = open_dataset(dataset, root, "test")
    report_dir = output_dir / "report"
    metrics = evaluate(
        load_inference_model(result.model_path, heads=config.train.heads), test_specs,
        output_dir=report_dir, threshold=threshold["threshold"],
        threshold_rule=threshold["rule"], dataset=dataset, split="test",
        model_path=result.model_path, heads=config.train.heads, progress=not quiet,
    )

    export_dir = export_saved_model(result.model_path, output_dir / "saved_models", name="demo", version=1,
                                    overwrite=True, threshold=threshold["threshold"],
                                    heads=config.train.heads)

    images_dir = output_dir / "inputs"
    images_dir.mkdir(parents=True, exist_ok=True)
    if dataset == "synthetic":  # predict reads image files, so give it a few
        _write_synthetic_inputs(test_specs[:3], images_dir)
        inputs = sorted(images_dir.glob("*.png"))
    else:
        inputs = sorted((Path(root) / "test" / "images").glob("*.tif"))[:3]
    predictions_dir = output_dir / "predictions"
    report = predict_files(result.model_path, inputs, predictions_dir, threshold=threshold["threshold"],
                           heads=config.train.heads, progress=not quiet)
    if report.failures:
        raise RuntimeError(f"predict failed on {len(report.failures)} demo images: {report.failures}")
    return DemoResult(result.output_dir, report_dir, export_dir, predictions_dir, metrics)


def _write_synthetic_inputs(specs, folder: Path) -> None:
    from PIL import Image

    from keras_vessel.io import atomic_path

    for spec in specs:
        target = folder / f"{spec.name}.png"
        if not target.exists():
            with atomic_path(target) as temp:
                Image.fromarray(spec.load().image).save(temp, format="PNG")


def clean(output_dir: str | Path) -> None:
    """Remove a demo folder (used by `keras-vessel demo --fresh`)."""
    shutil.rmtree(output_dir, ignore_errors=True)
