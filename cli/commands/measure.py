"""`keras-vessel measure`: vessel morphology of binary masks, one CSV row per mask.

A thin shell over `keras_vessel.measure.files.measure_files`.
"""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow
from keras_vessel_cli.options import counted


@click.command()
@click.argument("masks", metavar="MASKS...", nargs=-1, required=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The CSV to write (e.g. measures.csv): one row per mask, columns in docs/METHOD_NOTES.md "
                   "section 9.")
@click.option("--fov", "fov", default="auto", show_default=True,
              help="Field of view of each mask: 'auto' (the photograph or NAME_fov file beside the mask, its FOV "
                   "found as predict finds it), a folder or glob of FOV masks or photographs matched by name, "
                   "one FOV mask for every mask, or 'none' (the whole image).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def measure(masks: tuple[str, ...], output: Path, fov: str, quiet: bool) -> None:
    """Measure the vessels of binary MASKS (files, globs or folders; predict's NAME_mask.png are read as NAME).

    A mask that cannot be measured is reported on stderr with its reason, once,
    and skipped; the exit status is then 1 after the other masks are written, and
    the last line names the masks that failed.
    """
    quiet_tensorflow()
    from keras_vessel.measure.files import FovSource, expand_masks, measure_files

    try:
        paths = expand_masks(masks, fov=fov)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="MASKS") from None
    try:
        FovSource(fov)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--fov") from None
    with library_errors():
        report = measure_files(paths, output, fov=fov, progress=not quiet)  # logs each failure as it happens, once
    if report.rows:
        click.echo(f"wrote {counted(len(report.rows), 'row')} of measurements to {output}")
    if report.failures:
        raise click.ClickException(f"{len(report.failures)} of {counted(len(paths), 'mask')} could not be measured: "
                                   + ", ".join(str(path) for path, _ in report.failures)
                                   + " (each with its reason above)")
