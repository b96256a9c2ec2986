"""LES-AV reader (Orlando et al., MICCAI 2018; Leuven Eye Study), in the layout of ``LES-AV.zip``.

::

    <root>/images/12.png   <root>/vessel-segmentations/12.png   <root>/masks/12_mask.gif

22 photographs, 21 of 1620x1444 (30°) and one of 2196x1958 (image 34, 45°).
The vessel label is ``vessel-segmentations/`` (which also holds the vessels
left out of the artery and vein maps); ``arteries/``, ``veins/`` and
``arteries-and-veins/`` are not read. The FOV masks ship with the set
(palette GIFs, index 1 = inside). There is no published split: only "all"
is offered, and "training"/"test" are an error saying so (a camera left out
is tested on all its photographs, and trained on with all of them).
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
from keras_vessel.errors import DatasetError

EXPECTED = (
    "<root>/images/NN.png with <root>/vessel-segmentations/NN.png and <root>/masks/NN_mask.gif "
    "(the LES-AV layout)"
)


def open_les_av(root: str | Path, split: str = "all") -> list[SampleSpec]:
    """The 22 LES-AV samples, name-sorted by number; ``split`` must be "all" (no published split)."""
    check_split(split, dataset="les_av")
    if split != "all":
        raise DatasetError(
            f"LES-AV has no published split: split={split!r} is not offered; use split 'all' (--split all) "
            "(every photograph)"
        )
    root = Path(root)
    found = find_images(root / "images", r"(\d+)\.png", dataset="LES-AV", expected=EXPECTED)
    found.sort(key=lambda item: int(item[1].group(1)))
    labels = require_dir(root / "vessel-segmentations", EXPECTED)
    masks = require_dir(root / "masks", EXPECTED)
    return [
        file_spec(
            match.group(1),
            image_path,
            require_file(labels / f"{match.group(1)}.png", "LES-AV vessel label"),
            require_file(masks / f"{match.group(1)}_mask.gif", "LES-AV FOV mask"),
        )
        for image_path, match in found
    ]
