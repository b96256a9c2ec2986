"""`keras-vessel evaluate`: score a trained model on a dataset split and write reports."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow
from keras_vessel_cli.options import (
    DATASET_NAMES,
    HEADS,
    SCALE_HELP,
    TTA_CHOICES,
    TTA_HELP,
    counted,
    scale_option,
    threshold_option,
)

@click.command()
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Trained .keras model file (the training model, with its heads).")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), required=True, help="Which dataset reader to use.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset folder in its published layout (not needed for synthetic).")
@click.option("--split", type=click.Choice(["training", "test", "all"]), default="test", show_default=True,
              help="Which images to evaluate.")
@click.option("--fold", type=int, default=None, help="STARE leave-one-out fold (index of the test image).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for metrics.json, metrics.md, per_image.csv, roc.png and overlays/.")
@click.option("--threshold", default="0.5", show_default=True,
              help="0.5 (or any number in (0, 1)), 'otsu' (per image) or 'train' (threshold.json "
                   "beside the model, chosen on training images).")
@click.option("--training-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --threshold train and no threshold.json yet: compute the accuracy-optimal "
                   "threshold on this root's training split and save it beside the model [default: for "
                   "the model of a finished train run, on the run's own training images, by train's rule].")
@click.option("--heads", type=click.Choice(HEADS), default="mean", show_default=True,
              help="Fuse both heads' probabilities (mean) or use one head.")
@click.option("--tile-size", type=click.IntRange(min=16), default=None,
              help="Force tiled prediction with tiles of this size [default: whole image when it fits].")
@click.option("--tta", type=click.Choice(TTA_CHOICES), default="none", show_default=True,
              help=TTA_HELP)
@click.option("--scale", default="auto", show_default=True, callback=scale_option, help=SCALE_HELP)
@click.option("--thin-width", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Ground-truth segment thickness (px) at or below which a vessel counts as thin.")
@click.option("--no-overlays", is_flag=True, help="Do not write the per-image overlay PNGs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(model_path: Path, dataset: str, root: Path | None, split: str, fold: int | None,
             output: Path, threshold: str, training_root: Path | None, heads: str,
             tile_size: int | None, tta: str, scale: str | float, thin_width: float, no_overlays: bool,
             quiet: bool) -> None:
    """Evaluate a model on a dataset split; metrics inside the FOV only.

    Writes Se/Sp/Acc/Pr/F1/MCC, pooled and per-image AUC, thin/thick sensitivity,
    clDice, Betti errors and CAL (metrics.json, metrics.md, per_image.csv), a ROC
    curve and per-image overlays; DRIVE test adds the second-observer row.
    """
    quiet_tensorflow()
    threshold = threshold_option(threshold)
    if dataset != "synthetic" and root is None:
        raise click.UsageError(f"--root is required for --dataset {dataset}")
    if training_root is not None and threshold != "train":
        raise click.UsageError("--training-root is only used with --threshold train")

    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import (
        choose_run_threshold,
        choose_training_threshold,
        finished_run_folder,
        evaluate as run_evaluation,
        save_threshold,
        Threshold,
        threshold_path,
        threshold_scales,
    )
    from keras_vessel.models import model_fov_diameter
    from keras_vessel.models.inference import load_inference_model, model_working_diameters

    options = {"fold": fold} if fold is not None else {}
    predict_options = {"tile_size": tile_size, "tta": tta, "scale": scale}
    with library_errors():
        specs = open_dataset(dataset, root, split, **options)
        if not specs:
            raise click.ClickException(f"no {split} images found for dataset {dataset} under {root}")
        model = load_inference_model(model_path, heads=heads)
        model_working_diameters(model, scale, name=str(model_path))  # before a threshold is chosen at it

    # The stored thresholds are the model's: each chosen at its `threshold_scale` ("multi" for --scale multi,
    # the model's own scale for every other --scale; both for --scale adaptive, each photograph masked at the
    # one of the resolutions it ran at, unless the model records no training diameter: then it never fuses),
    # which predict --threshold train reads at that scale.
    stored_at = "auto" if scale == "adaptive" and model_fov_diameter(model) is None else scale
    for chosen_at in threshold_scales(stored_at) if threshold == "train" else ():
        stored = threshold_path(model_path, tta, chosen_at)
        if not stored.is_file() and training_root is not None:
            with library_errors():
                training = open_dataset(dataset, training_root, "training", **options)
                value = choose_training_threshold(model, training, progress=not quiet,
                                                  predict_options={**predict_options, "scale": chosen_at})
                saved = save_threshold(model_path, value, heads=heads, dataset=dataset, images=len(training),
                                       tta=tta, scale=chosen_at)
            where = "the model's own scale" if chosen_at == "auto" else f"--scale {chosen_at}"
            click.echo(f"training threshold {value:.4f} (chosen at {where}) saved to {saved}", err=True)
        elif not stored.is_file() and (run_dir := finished_run_folder(model_path)) is not None:
            # e.g. --tta d4 on a run's model: chosen as train chose its own threshold (several folders: the
            # mean of each folder's own), on the run's training images, and saved beside the model
            with library_errors():
                chosen = choose_run_threshold(run_dir, progress=not quiet, tta=tta, scales=(chosen_at,))
            if chosen_at in chosen:  # else Threshold.stored below says that none is stored at this scale
                click.echo(f"training threshold {chosen[chosen_at]:.4f} chosen on the training images of {run_dir} "
                           f"saved to {stored}", err=True)
        elif training_root is not None:
            click.echo(f"using the existing {stored}; delete it to recompute", err=True)
    if threshold == "train":
        with library_errors():
            value = Threshold.stored(model_path, heads=heads, tta=tta, scale=stored_at)
    else:
        value = threshold

    with library_errors():
        report = run_evaluation(
            model, specs, output_dir=output, threshold=value, dataset=dataset,
            split=split, model_path=model_path, heads=heads, thin_max_width=thin_width,
            overlays=not no_overlays, progress=not quiet, predict_options=predict_options,
        )
    summary = report["summary"]
    click.echo(
        f"{dataset}/{split}: {counted(len(report['per_image']), 'image')}; "
        f"threshold: {report['protocol']['threshold_rule']}\n"
        f"AUC pooled {summary['AUC_pooled']:.4f} (per-image mean {summary['AUC']:.4f}), "
        f"Se {summary['Se']:.4f} Sp {summary['Sp']:.4f} Acc {summary['Acc']:.4f} "
        f"Pr {summary['precision']:.4f} F1 {summary['F1']:.4f}\n"
        f"reports written to {output}"
    )
