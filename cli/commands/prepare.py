"""`keras-vessel prepare`: datasets in their published layouts -> TFRecord shards."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.options import DATASET_NAMES, counted
from keras_vessel_cli.errors import library_errors, quiet_tensorflow


@click.command()
@click.option("--dataset", type=click.Choice(DATASET_NAMES), required=True, help="Which reader to use.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Dataset folder in its original published layout (not needed for synthetic).",
)
@click.option(
    "--split", type=click.Choice(["training", "test", "all"]), default="training", show_default=True,
    help="Which images to prepare.",
)
@click.option("--fold", type=int, default=None, help="STARE leave-one-out fold (index of the test image).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder for the shards and manifest.json.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes preparing images in parallel (ID masks, PNG encoding).")
@click.option("--reference", type=click.Choice(["authors", "complete"]), default="authors", show_default=True,
              help="Reference skeletons of the ID mask: the authors' (later search regions overwrite "
                   "earlier skeletons) or complete ones (see docs/METHOD_NOTES.md).")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Prepare only this photograph of the split, by its name (e.g. 01_dr for HRF's 01_dr.jpg); "
                   "repeat for more. Default: every photograph of the split.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(dataset: str, root: Path | None, split: str, fold: int | None, out_dir: Path,
            workers: int, reference: str, only: tuple[str, ...], quiet: bool) -> None:
    """Precompute ID masks, skeleton tubes and CLAHE images into GZIP TFRecords.

    Re-running skips shards that are already complete.
    """
    quiet_tensorflow()
    from keras_vessel.data.datasets import open_dataset, select_images
    from keras_vessel.data.tfrecords import write_dataset

    if dataset not in ("synthetic",) and root is None:
        raise click.UsageError(f"--root is required for --dataset {dataset}")
    options = {"fold": fold} if fold is not None else {}
    with library_errors():
        specs = open_dataset(dataset, root, split, **options)
        if only:
            specs = select_images(specs, only, where=f"dataset {dataset!r}, split {split!r}")
        manifest = write_dataset(specs, out_dir, dataset=dataset, split=split, workers=workers,
                                 reference=reference, show_progress=not quiet)
    segments = sum(image["segments"] for image in manifest["images"])
    images = counted(len(manifest["images"]), "image")
    click.echo(f"prepared {images} ({counted(segments, 'segment')}) into {out_dir}")
