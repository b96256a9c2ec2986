"""DRIVE reader (Staal et al. 2004), in its published layout.

::

    <root>/training/images/21_training.tif   1st_manual/21_manual1.gif   mask/21_training_mask.gif
    <root>/test/images/01_test.tif           1st_manual/01_manual1.gif   mask/01_test_mask.gif
                                             2nd_manual/01_manual2.gif   (test only: second observer)

Training = images 21-40, test = 01-20, as in the paper. The FOV masks ship with
the dataset. A split folder with a ``2nd_manual/`` folder must have a second
label for every image; without the folder ``second_label`` is None.
"""

from __future__ import annotations

from pathlib import Path

from keras_vessel.data.datasets.base import (
    SampleSpec,
    check_split,
    file_spec,
    find_images,
    require_dir,
    require_file,
)


def _open_split(root: Path, split: str) -> list[SampleSpec]:
    expected = f"<root>/{split}/images/*_{split}.tif (the DRIVE layout)"
    found = find_images(root / split / "images", rf"(\d+)_{split}\.tiff?", dataset="DRIVE", expected=expected)
    second_dir = root / split / "2nd_manual"
    specs = []
    for image_path, match in found:
        number = match.group(1)
        label = require_file(root / split / "1st_manual" / f"{number}_manual1.gif", "DRIVE label")
        fov = require_file(root / split / "mask" / f"{number}_{split}_mask.gif", "DRIVE FOV mask")
        second = None
        if second_dir.is_dir():
            second = require_file(second_dir / f"{number}_manual2.gif", "DRIVE second-observer label")
        specs.append(file_spec(f"{number}_{split}", image_path, label, fov, second))
    return specs


def open_drive(root: str | Path, split: str = "all") -> list[SampleSpec]:
    """The DRIVE samples of ``split``: "training" (21-40), "test" (01-20) or "all"."""
    check_split(split, dataset="drive")
    root = Path(root)
    require_dir(root, "the DRIVE root holding training/ and test/")
    splits = ("training", "test") if split == "all" else (split,)
    return [spec for part in splits for spec in _open_split(root, part)]
