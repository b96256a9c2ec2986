"""`keras-vessel ensemble`: average several trained models into one `.keras` file."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow


@click.command()
@click.argument("models", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The ensemble's .keras file in a folder of its own, e.g. runs/ensemble/model.keras "
                   "(ensemble.json and its threshold files go beside it).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --output, and remove the replaced model's threshold files.")
def ensemble(models: tuple[Path, ...], output: Path, overwrite: bool) -> None:
    """Average MODELS (e.g. the same config trained with several seeds) into one model.

    The ensemble is evaluated, exported and used by predict like any trained
    model; choose its own threshold with `evaluate --threshold train`. The
    members must have been trained at one scale (the same recorded FOV diameter).
    """
    quiet_tensorflow()
    from keras_vessel.evaluation.thresholds import threshold_paths
    from keras_vessel.models.ensemble import save_ensemble

    with library_errors():
        try:
            saved = save_ensemble(models, output, overwrite=overwrite, sidecars=threshold_paths(output))
        except FileExistsError as error:
            raise click.ClickException(str(error)) from error
    removed = ""
    if saved.removed:
        removed = (f"; removed the replaced model's {', '.join(p.name for p in saved.removed)} (choose the "
                   "ensemble's own with `evaluate --threshold train`)")
    click.echo(f"wrote {saved.path}: the mean of {len(models)} models' probabilities{removed}")
