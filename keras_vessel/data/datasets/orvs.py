"""ORVS reader (Sarhan et al., ICPR 2020; Zeiss Visucam 200, 30°), in its published layout.

::

    <root>/Train/Original/Images/2012.jpg   <root>/Train/Original/Labels/2012.jpg   (41 images)
    <root>/Test/Original/Images/2014.jpg    <root>/Test/Original/Labels/2014.jpg    (8 images)

"training" is the ``Train`` folder, "test" the ``Test`` folder. The release's
oddities (its SOURCE.md), each handled by one stated rule:

- The labels are lossy JPEGs, so not binary (82-255 grey levels along the
  traced lines): a pixel is vessel when its grey level is above
  `LABEL_CUT` (127), the authors' own rule; `read_graded_mask`.
- One label (``Train/.../Labels/2063.jpg``) is one column short of its image.
  A label at most `MAX_SHORTFALL` pixels narrower or shorter than its image
  is aligned at the top-left corner (on 2063 the traced vessels lie darkest
  on the image's green channel at that alignment, not one column over) and
  padded with background on the right or bottom; any larger mismatch is an
  error naming both files.
- No FOV masks: they are derived with
  `keras_vessel.data.preprocessing.derive_fov`, like CHASE_DB1's.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from keras_vessel.data.datasets.base import (
    Sample,
    SampleSpec,
    check_fov_options,
    check_split,
    find_images,
    fov_measure,
    require_dir,
    require_file,
)
from keras_vessel.data.preprocessing import FovCut, derive_fov, read_graded_mask, read_image
from keras_vessel.errors import DatasetError

LABEL_CUT = 127
MAX_SHORTFALL = 1
FOLDERS = {"training": "Train", "test": "Test"}
EXPECTED = "<root>/Train/Original/Images/NNNN.jpg with <root>/Train/Original/Labels/NNNN.jpg (the ORVS layout)"


def pad_to(label: np.ndarray, shape: tuple[int, int], *, label_path: Path, image_path: Path) -> np.ndarray:
    """``label`` (H', W') bool padded with False at the right/bottom to ``shape``, if at most
    `MAX_SHORTFALL` px short on each side; otherwise DatasetError naming both files."""
    short_rows, short_cols = shape[0] - label.shape[0], shape[1] - label.shape[1]
    if not (0 <= short_rows <= MAX_SHORTFALL and 0 <= short_cols <= MAX_SHORTFALL):
        raise DatasetError(
            f"size mismatch: {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
            f"{image_path} is {shape[1]}x{shape[0]}; only a label up to {MAX_SHORTFALL} px short is padded"
        )
    return np.pad(label, ((0, short_rows), (0, short_cols)), constant_values=False)


def load_orvs(name: str, image_path: Path, label_path: Path, *, fov_threshold: float | None = None,
              fov_erosion: int = 3, measured: FovCut | None = None) -> Sample:
    """Read one ORVS sample by the rules of this module (module-level, so its partial pickles); ``measured``:
    `keras_vessel.data.datasets.base.measure_fov` of the image, computed elsewhere (no TensorFlow here)."""
    image = read_image(image_path)
    label = read_graded_mask(label_path, cut=LABEL_CUT)
    label = pad_to(label, image.shape[:2], label_path=label_path, image_path=image_path)
    fov = derive_fov(image, threshold=fov_threshold, erosion=fov_erosion, cut=measured)
    return Sample(name=name, image=image, label=label, fov=fov)


def open_orvs(
    root: str | Path,
    split: str = "all",
    *,
    fov_threshold: float | None = None,
    fov_erosion: int = 3,
) -> list[SampleSpec]:
    """The ORVS samples of ``split`` ("training": Train/, "test": Test/, "all": both)."""
    check_split(split, dataset="orvs")
    fov_options = check_fov_options(fov_threshold, fov_erosion, dataset="orvs")
    root = require_dir(Path(root), EXPECTED)
    parts = tuple(FOLDERS) if split == "all" else (split,)
    specs = []
    for part in parts:
        folder = root / FOLDERS[part] / "Original"
        found = find_images(folder / "Images", r"(\d+)\.jpe?g", dataset="ORVS", expected=EXPECTED)
        for image_path, match in found:
            stem = match.group(1)
            label = require_file(folder / "Labels" / image_path.name, "ORVS label")
            specs.append(SampleSpec(stem, functools.partial(load_orvs, stem, image_path, label, **fov_options),
                                    fov_measure(image_path, fov_threshold=fov_threshold)))
    return specs
