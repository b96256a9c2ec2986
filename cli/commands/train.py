"""`keras-vessel train`: one training run from a YAML config."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow
from keras_vessel_cli.options import counted, thresholds_said


@click.command()
@click.option("--config", "config_paths", type=click.Path(dir_okay=False, path_type=Path), required=True,
              multiple=True, help="YAML run config (see configs/); repeat it to compose, later files winning, e.g. "
                                  "--config configs/compact.yaml --config configs/datasets/drive.yaml.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.epochs=5 (repeatable).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<config name>]. An existing run folder is resumed.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_paths: tuple[Path, ...], overrides: tuple[str, ...], output: Path | None, quiet: bool) -> None:
    """Train a model, then choose its threshold on the training images (threshold.json beside it; for a run
    at a fixed data.fov_diameter, threshold_multi.json for --scale multi too). With several prepared
    folders (cameras), it is the mean of each folder's own, so that every camera weighs the same.

    Re-running on the same --output resumes after the last finished epoch (or, when training had
    finished, only chooses the threshold). One process at a time writes a run folder.
    """
    quiet_tensorflow()
    from keras_vessel.config import load_config, records_folders
    from keras_vessel.evaluation.thresholds import choose_run_threshold
    from keras_vessel.training import train as run_training

    with library_errors():
        config = load_config(config_paths, overrides)
        output = output or Path("runs") / config.name
        thresholds = []  # run.json says "completed" only once the threshold is stored too
        result = run_training(config, output, verbose=0 if quiet else 1,
                              finish=lambda run: thresholds.append(choose_run_threshold(run, progress=not quiet)))
        if not result.chief:  # another worker of a multi-worker run: the chief writes the run folder
            click.echo(f"{result.status} after {counted(result.epochs_completed, 'epoch')} "
                       "(worker; the chief saves the model)")
            return
        [chosen] = thresholds
        folders = len(records_folders(config.data))
    how = "on its training images" + (f", the mean of its {folders} folders' own" if folders > 1 else "")
    click.echo(f"{result.status} after {counted(result.epochs_completed, 'epoch')}; model: {result.model_path} "
               f"({thresholds_said(chosen, how)})")
