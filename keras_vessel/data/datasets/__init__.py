"""Dataset readers for the published layouts, and the synthetic generator.

``open_dataset(name, root, split, **options)`` returns a list of
`SampleSpec`s; ``spec.load()`` reads one `Sample`. Readers are chosen through
the explicit `DATASETS` dict (no import-time registration).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from keras_vessel.data.datasets.base import SPLITS, Sample, SampleSpec
from keras_vessel.data.datasets.chase_db1 import open_chase_db1
from keras_vessel.data.datasets.drive import open_drive
from keras_vessel.data.datasets.folder import open_folder, open_labelled
from keras_vessel.data.datasets.hrf import open_hrf
from keras_vessel.data.datasets.les_av import open_les_av
from keras_vessel.data.datasets.orvs import open_orvs
from keras_vessel.data.datasets.stare import open_stare
from keras_vessel.data.datasets.synthetic import SyntheticTruth, generate_sample, open_synthetic
from keras_vessel.errors import DatasetError

__all__ = [
    "DATASETS",
    "DatasetError",
    "SPLITS",
    "Sample",
    "SampleSpec",
    "SyntheticTruth",
    "generate_sample",
    "open_dataset",
    "open_labelled",
    "select_images",
]

DATASETS: dict[str, Callable[..., list[SampleSpec]]] = {
    "drive": open_drive,
    "chase_db1": open_chase_db1,
    "stare": open_stare,
    "hrf": open_hrf,
    "orvs": open_orvs,
    "les_av": open_les_av,
    "folder": open_folder,
    "synthetic": open_synthetic,
}


def _options_of(opener: Callable[..., list[SampleSpec]]) -> list[str]:
    parameters = inspect.signature(opener).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def open_dataset(
    name: str,
    root: str | Path | None,
    split: str = "all",
    **options: object,
) -> list[SampleSpec]:
    """The samples of dataset ``name`` under ``root`` for ``split`` ("training", "test", "all").

    ``options`` are the reader's keyword options (e.g. ``fold`` for STARE,
    ``count``/``size``/``seed`` for synthetic); ``root`` is ignored by
    "synthetic". Unknown names, splits and options raise `DatasetError`
    listing the valid ones; a root in the wrong layout raises one saying which
    layout was expected.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for dataset {name!r}; valid splits: {', '.join(SPLITS)}")
    opener = DATASETS[name]
    valid = _options_of(opener)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DatasetError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; "
            f"valid options: {', '.join(valid) if valid else '(none)'}"
        )
    if root is None and name != "synthetic":
        raise DatasetError(f"dataset {name!r} needs a root folder, got root=None")
    return opener(root, split, **options)


def select_images(specs: list[SampleSpec], names: list[str] | tuple[str, ...], *, where: str) -> list[SampleSpec]:
    """The samples of `specs` named in `names`, in the order of `specs` (a name given twice counts once).

    ``where`` names the set for the error (e.g. "dataset 'hrf', split 'all'"). A name that is not
    there raises `DatasetError` listing the names that are; no names raise one too.
    """
    wanted = set(names)
    if not wanted:
        raise DatasetError(f"no photograph names given to select from {where}")
    held = [spec.name for spec in specs]
    missing = sorted(wanted - set(held))
    if missing:
        raise DatasetError(f"{where} has no photograph named {', '.join(missing)}; its photographs are "
                           f"{', '.join(held)}")
    return [spec for spec in specs if spec.name in wanted]
