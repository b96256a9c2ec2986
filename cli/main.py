"""Entry point of the `keras-vessel` command.

Each command lives in its own module under `keras_vessel_cli.commands` and is
added here explicitly, so the command list is readable in one place.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from importlib.metadata import version

import click

from keras_vessel_cli.errors import VesselGroup


@click.group(cls=VesselGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("keras-vessel"), prog_name="keras-vessel")  # no TF import for --help
def cli() -> None:
    """Retinal vessel segmentation with joint segment-level and pixel-wise losses."""


def _add_commands() -> None:
    from keras_vessel_cli.commands import demo, ensemble, evaluate, export, finetune, measure, predict, prepare, train

    cli.add_command(prepare.prepare)
    cli.add_command(train.train)
    cli.add_command(finetune.finetune)
    cli.add_command(evaluate.evaluate)
    cli.add_command(predict.predict)
    cli.add_command(measure.measure)
    cli.add_command(ensemble.ensemble)
    cli.add_command(export.export)
    cli.add_command(demo.demo)


_add_commands()
