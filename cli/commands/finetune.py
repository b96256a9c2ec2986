"""`keras-vessel finetune`: adapt a trained model to a camera with a few labelled photographs."""

from __future__ import annotations

import math
from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow
from keras_vessel_cli.options import counted, thresholds_said

FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)


def _finite_positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A number option that must be finite and above 0 (click's FloatRange lets inf and nan through)."""
    if value is not None and not 0 < value < math.inf:
        raise click.BadParameter(f"must be a finite number above 0, got {value:g}")
    return value


@click.command()
@click.argument("images", type=FOLDER)
@click.option("--labels", type=FOLDER, required=True,
              help="Folder of vessel labels (white vessels on black), matched to IMAGES by file stem: "
                   "photo.jpg <- photo.png or photo_label.png.")
@click.option("--masks", type=FOLDER, default=None,
              help="Folder of FOV masks matched the same way [default: the field of view predict finds].")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder to write (model.keras, threshold.json, threshold_multi.json when the model "
                   "records a fixed FOV diameter, report.md); re-running resumes it.")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Model to start from: a .keras file or a run folder [default: the bundled model].")
@click.option("--minutes", type=float, callback=_finite_positive, default=10.0, show_default=True,
              help="Wall-clock budget of the whole command; the training steps are sized to it on this machine.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of patches and augmentation.")
@click.option("--learning-rate-factor", type=float, callback=_finite_positive, default=None,
              help="Learning rate as a fraction of the base model's recipe's [default: the fine-tuning recipe's].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def finetune(images: Path, labels: Path, masks: Path | None, output: Path, model_path: Path | None, minutes: float,
             seed: int, learning_rate_factor: float | None, quiet: bool) -> None:
    """Fine-tune the bundled model (or --model) on labelled photographs in IMAGES, in about --minutes.

    Writes a run folder that predict --model RUN/model.keras, evaluate --threshold train and export
    --threshold train take; its threshold is chosen on the photographs (leave-one-image-out from three
    on), also on maps at --scale multi when the model records a fixed FOV diameter (the bundled one
    does), and report.md compares the base and the fine-tuned model on them.
    """
    quiet_tensorflow()
    from keras_vessel.finetune import finetune as run_finetune

    with library_errors():
        if model_path is None:
            from keras_vessel.models.inference import bundled_model_path

            click.echo(f"starting from the bundled model {bundled_model_path()}", err=True)
        result = run_finetune(images, labels, output, masks=masks, model=model_path, minutes=minutes, seed=seed,
                              learning_rate_factor=learning_rate_factor, progress=not quiet)
    from keras_vessel.evaluation import LEAVE_ONE_OUT_MIN_IMAGES

    mean, budget, count = result.report["mean"], result.report.get("budget") or {}, len(result.report["per_image"])
    how = ("chosen leave-one-image-out on the photographs" if count >= LEAVE_ONE_OUT_MIN_IMAGES
           else "chosen on the photographs themselves")
    steps = counted(budget.get("steps", 0), "step")
    click.echo(f"{result.status}: fine-tuned on {counted(count, 'photograph')} ({steps}); "
               f"model: {result.model_path} ({thresholds_said(result.thresholds, how)})")
    click.echo(f"on these photographs, base -> fine-tuned: AUC {mean['base_AUC']:.4f} -> {mean['AUC']:.4f}, "
               f"mean F1 {mean['base_F1']:.4f} -> {mean['F1']:.4f} (trained on: judge on others); "
               f"report: {result.run_dir / 'report.md'}")
