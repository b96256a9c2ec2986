"""`keras-vessel demo`: the main job (prepare, train, evaluate, export, predict) in one command."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow


@click.command()
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Folder for records, run, report, SavedModel and predictions.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Run on DRIVE in its published layout instead of the built-in synthetic set.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the demo's epochs.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes for preparing records.")
@click.option("--fresh", is_flag=True, help="Delete --output first instead of resuming.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(output: Path, root: Path | None, epochs: int | None, workers: int, fresh: bool, quiet: bool) -> None:
    """Prepare, train, evaluate, export and predict on synthetic data (or DRIVE with --root).

    Re-running resumes where it stopped.
    """
    quiet_tensorflow()
    from keras_vessel.demo import clean, run_demo

    if fresh:
        clean(output)
    with library_errors():
        result = run_demo(output, root=root, epochs=epochs, workers=workers, quiet=quiet)
    summary = result.metrics.get("summary", result.metrics)
    auc = summary.get("AUC_pooled")
    click.echo("")
    click.echo(f"trained model:   {result.run_dir / 'model.keras'}")
    click.echo(f"report:          {result.report_dir / 'metrics.md'}" + (f" (pooled AUC {auc:.4f})" if isinstance(auc, float) else ""))
    click.echo(f"SavedModel:      {result.export_dir}")
    click.echo(f"predictions:     {result.predictions_dir}")
