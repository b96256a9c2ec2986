"""CHASE_DB1 reader (Owen et al. 2009), in its published flat layout.

::

    <root>/Image_01L.jpg   Image_01L_1stHO.png (label)   Image_01L_2ndHO.png (second_label)

The release has no FOV masks: they are derived with
`keras_vessel.data.preprocessing.derive_fov`. Split (the paper's and the common
convention): subjects 01-10 (the first 20 images, 01L..10R) are "training",
subjects 11-14 (the last 8, 11L..14R) are "test". The split goes by the
subject number in the name, not by position, so a partial copy splits the same.
"""

from __future__ import annotations

from pathlib import Path

from keras_vessel.data.datasets.base import (
    SampleSpec,
    check_fov_options,
    check_split,
    file_spec,
    find_images,
    require_file,
)

LAST_TRAINING_SUBJECT = 10
EXPECTED = "<root>/Image_NNX.jpg with Image_NNX_1stHO.png beside it (the flat CHASE_DB1 layout)"


def open_chase_db1(
    root: str | Path,
    split: str = "all",
    *,
    fov_threshold: float | None = None,
    fov_erosion: int = 3,
) -> list[SampleSpec]:
    """The CHASE_DB1 samples of ``split`` ("training": 01L-10R, "test": 11L-14R, "all")."""
    check_split(split, dataset="chase_db1")
    fov_options = check_fov_options(fov_threshold, fov_erosion, dataset="chase_db1")
    root = Path(root)
    found = find_images(root, r"(Image_(\d+)[LR])\.jpe?g", dataset="CHASE_DB1", expected=EXPECTED)
    found.sort(key=lambda item: item[1].group(1).upper())
    specs = []
    for image_path, match in found:
        stem = match.group(1)
        label = require_file(root / f"{stem}_1stHO.png", "CHASE_DB1 label")
        second = require_file(root / f"{stem}_2ndHO.png", "CHASE_DB1 second-observer label")
        is_training = int(match.group(2)) <= LAST_TRAINING_SUBJECT
        if split == "all" or (split == "training") == is_training:
            specs.append(file_spec(stem, image_path, label, None, second, **fov_options))
    return specs
