"""`keras-vessel train`: one training run from a YAML config."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="YAML run config (see configs/).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.epochs=5 (repeatable).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<config name>]. An existing run folder is resumed.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_path: Path, overrides: tuple[str, ...], output: Path | None, quiet: bool) -> None:
    """Train a model; re-running on the same --output resumes after the last finished epoch."""
    quiet_tensorflow()
    from keras_vessel.config import load_config
    from keras_vessel.training import TrainingError, train as run_training

    with library_errors():
        config = load_config(config_path, overrides)
    output = output or Path("runs") / config.name
    try:
        with library_errors():
            result = run_training(config, output, verbose=0 if quiet else 1)
    except TrainingError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{result.status} after {result.epochs_completed} epochs; model: {result.model_path}")
