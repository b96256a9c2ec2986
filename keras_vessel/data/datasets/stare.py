"""STARE reader (Hoover et al. 2000), in its published layout.

::

    <root>/stare-images/im0001.ppm      (or im0001.ppm.gz, as distributed)
    <root>/labels-ah/im0001.ah.ppm      label (Adam Hoover), .ppm or .ppm.gz
    <root>/labels-vk/im0001.vk.ppm      second_label (Valentina Kouznetsova), optional folder

STARE ships no FOV masks: they are derived with
`keras_vessel.data.preprocessing.derive_fov`. There is no fixed split: the paper
uses leave-one-out. With ``fold=k`` (an index into the name-sorted image list)
"test" is image k alone and "training" the others; without a fold only
"all" is meaningful, and asking for "training"/"test" is an error.
"""

from __future__ import annotations

from pathlib import Path

from keras_vessel.data.datasets.base import (
    SampleSpec,
    check_fov_options,
    check_split,
    file_spec,
    find_images,
    require_dir,
)
from keras_vessel.errors import DatasetError

EXPECTED = "<root>/stare-images/imNNNN.ppm[.gz] with <root>/labels-ah/imNNNN.ah.ppm[.gz] (the STARE layout)"


def _find_label(folder: Path, stem: str, observer: str) -> Path:
    for suffix in (".ppm", ".ppm.gz"):
        path = folder / f"{stem}.{observer}{suffix}"
        if path.is_file():
            return path
    raise DatasetError(f"missing STARE label: expected {folder / f'{stem}.{observer}.ppm'} (or .ppm.gz)")


def open_stare(
    root: str | Path,
    split: str = "all",
    *,
    fold: int | None = None,
    fov_threshold: float | None = None,
    fov_erosion: int = 3,
) -> list[SampleSpec]:
    """The STARE samples of ``split``; "training"/"test" need a leave-one-out ``fold``."""
    check_split(split, dataset="stare")
    fov_options = check_fov_options(fov_threshold, fov_erosion, dataset="stare")
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
        raise DatasetError(f"option fold for dataset 'stare' must be an int or None, got {fold!r}")
    if fold is None and split != "all":
        raise DatasetError(
            f"STARE has no fixed split: split={split!r} needs the leave-one-out option fold=<int> "
            "(the index of the test image); without fold use split 'all' (--split all)"
        )
    root = Path(root)
    images = root / "stare-images"
    found = find_images(images, r"(im\d+)\.ppm(\.gz)?", dataset="STARE", expected=EXPECTED)
    stems = [match.group(1) for _, match in found]
    duplicated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicated:
        raise DatasetError(
            f"STARE images present both as .ppm and .ppm.gz in {images}: {', '.join(duplicated)}"
        )
    if fold is not None and not 0 <= fold < len(found):
        raise DatasetError(
            f"option fold for dataset 'stare' must be in [0, {len(found) - 1}] "
            f"({len(found)} images in {images}), got {fold}"
        )
    labels_ah = require_dir(root / "labels-ah", EXPECTED)
    labels_vk = root / "labels-vk"
    specs = []
    for index, ((image_path, _), stem) in enumerate(zip(found, stems)):
        if split != "all" and (index == fold) != (split == "test"):
            continue
        label = _find_label(labels_ah, stem, "ah")
        second = _find_label(labels_vk, stem, "vk") if labels_vk.is_dir() else None
        specs.append(file_spec(stem, image_path, label, None, second, **fov_options))
    return specs
