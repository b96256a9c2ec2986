"""`keras-vessel ensemble`: average several trained models into one `.keras` file."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow


@click.command()
@click.argument("models", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The ensemble's .keras file, e.g. runs/ensemble/model.keras (ensemble.json goes beside it).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output.")
def ensemble(models: tuple[Path, ...], output: Path, overwrite: bool) -> None:
    """Average MODELS (e.g. the same config trained with several seeds) into one model.

    The ensemble is evaluated, exported and used by predict like any trained
    model; choose its own threshold with `evaluate --threshold train`.
    """
    quiet_tensorflow()
    from keras_vessel.models.ensemble import save_ensemble

    with library_errors():
        try:
            path = save_ensemble(models, output, overwrite=overwrite)
        except FileExistsError as error:
            raise click.ClickException(str(error)) from error
    click.echo(f"wrote {path}: the mean of {len(models)} models' probabilities")
