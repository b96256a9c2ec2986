"""HRF reader (High-Resolution Fundus, Budai et al. 2013), in its published layout.

::

    <root>/images/01_dr.JPG   01_g.jpg   01_h.jpg      (extension case varies)
    <root>/manual1/01_dr.tif                           label
    <root>/mask/01_dr_mask.tif                         FOV, an RGB TIFF (any channel > 0)

Categories: ``dr`` diabetic retinopathy, ``g`` glaucoma, ``h`` healthy, 15 of
each. Split: images 01-05 of each category are "training", 06-15 "test". An
image without its label is skipped with a warning naming the missing file
(some redistributions lack a few labels); a missing FOV mask is an error.
A copy holding one split only (``../shared/data/HRF`` is the training split,
01-05) reads as it is: asking it for the other split is an error saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path

from keras_vessel.data.datasets.base import (
    SampleSpec,
    check_split,
    file_spec,
    find_ignoring_case,
    find_images,
    require_dir,
)
from keras_vessel.errors import DatasetError

logger = logging.getLogger(__name__)

LAST_TRAINING_NUMBER = 5
EXPECTED = (
    "<root>/images/NN_{dr,g,h}.jpg with <root>/manual1/NN_x.tif and <root>/mask/NN_x_mask.tif "
    "(the HRF layout)"
)


def open_hrf(root: str | Path, split: str = "all") -> list[SampleSpec]:
    """The HRF samples of ``split`` ("training": 01-05 per category, "test": 06-15, "all")."""
    check_split(split, dataset="hrf")
    root = Path(root)
    images = root / "images"
    found = find_images(images, r"((\d+)_(dr|g|h))\.jpe?g", dataset="HRF", expected=EXPECTED)
    labels = require_dir(root / "manual1", EXPECTED)
    masks = require_dir(root / "mask", EXPECTED)
    specs = []
    for image_path, match in found:
        stem = match.group(1)
        is_training = int(match.group(2)) <= LAST_TRAINING_NUMBER
        if split != "all" and is_training != (split == "training"):
            continue
        label = find_ignoring_case(labels, f"{stem}.tif")
        if label is None:
            message = f"HRF image {image_path} skipped: its label {labels / (stem + '.tif')} is missing"
            logger.warning("%s", message)
            continue
        fov = find_ignoring_case(masks, f"{stem}_mask.tif")
        if fov is None:
            raise DatasetError(f"missing HRF FOV mask: expected {masks / (stem + '_mask.tif')}")
        specs.append(file_spec(stem, image_path, label, fov))
    if not specs and split != "all":
        numbers = "06-15" if split == "test" else "01-05"
        raise DatasetError(
            f"no HRF {split} images ({numbers} of each category) in {images}: this copy holds only "
            f"{'the training split (01-05)' if split == 'test' else 'test images'}; "
            f"use --split {'training' if split == 'test' else 'test'} or all"
        )
    return specs
