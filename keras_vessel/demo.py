"""The main job end to end: prepare, train, evaluate, export and predict.

On the built-in synthetic fundus set by default, so a newcomer can run it with
nothing downloaded (`make demo`); with `root=` pointing at DRIVE it runs the
same flow on DRIVE. Re-running it resumes: prepared shards and finished epochs
are kept; the threshold, the report, the export and the predictions are made
again from the run's model (seconds on the demo's data).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from keras_vessel.config import load_config

#: The demo run (small enough for a 2-core laptop in a few minutes); its train_records is set by `run_demo`.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


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
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import Threshold, choose_run_threshold, evaluate
    from keras_vessel.serving.export import export_saved_model
    from keras_vessel.models.inference import load_inference_model
    from keras_vessel.serving.prediction import predict_files
    from keras_vessel.data.tfrecords import write_dataset
    from keras_vessel.training import train

    output_dir = Path(output_dir)
    dataset = "drive" if root is not None else "synthetic"
    records = output_dir / "records"
    for split in ("training", "test"):
        specs = open_dataset(dataset, root, split)
        write_dataset(specs, records / split, dataset=dataset, split=split, workers=workers,
                      show_progress=not quiet)

    overrides = [f"data.train_records={records / 'training'}"]
    if dataset == "drive":  # DRIVE images are larger: bigger patches and network
        overrides += ["data.patch_size=128", "model.options.base_filters=12", "model.options.depth=4"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if not DEMO_CONFIG.is_file():
        raise FileNotFoundError(f"the demo's config {DEMO_CONFIG} is missing: the demo runs from a keras-vessel "
                                "checkout (make demo)")
    config = load_config(DEMO_CONFIG, overrides)
    result = train(config, output_dir / "run", verbose=0 if quiet else 1,
                   finish=lambda run: choose_run_threshold(run, progress=not quiet))

    threshold = Threshold.stored(result.model_path, heads=config.train.heads)
    test_specs = open_dataset(dataset, root, "test")
    report_dir = output_dir / "report"
    metrics = evaluate(
        load_inference_model(result.model_path, heads=config.train.heads), test_specs,
        output_dir=report_dir, threshold=threshold, dataset=dataset, split="test",
        model_path=result.model_path, heads=config.train.heads, progress=not quiet,
    )

    export_dir = export_saved_model(result.model_path, output_dir / "saved_models", name="demo", version=1,
                                    overwrite=True, threshold=threshold.value,
                                    heads=config.train.heads)

    images_dir = output_dir / "inputs"
    images_dir.mkdir(parents=True, exist_ok=True)
    if dataset == "synthetic":  # predict reads image files, so give it a few
        _write_synthetic_inputs(test_specs[:3], images_dir)
        inputs = sorted(images_dir.glob("*.png"))
    else:
        inputs = sorted((Path(root) / "test" / "images").glob("*.tif"))[:3]
    predictions_dir = output_dir / "predictions"
    report = predict_files(result.model_path, inputs, predictions_dir, threshold=threshold.value,
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
