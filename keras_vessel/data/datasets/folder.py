"""A generic reader for "a folder of images and a folder of labels".

Layout (folder names are options)::

    <root>/images/<stem>.<ext>            e.g. 0001.png
    <root>/labels/<stem><suffix>.<ext>    e.g. 0001.png, 0001_label.png, 0001_manual1.gif
    <root>/masks/<stem><suffix>.<ext>     optional FOV masks, e.g. 0001_mask.png

or the same three folders under ``<root>/training/`` and ``<root>/test/``.
With split folders, "training"/"test" read one of them and "all" both; a flat
root has no split, so only "all" is allowed.

Matching rule: an image's *stem* is its file name without the extension
(``.ppm.gz`` counts as one extension). Its label is the file in the labels
folder whose stem is the image stem followed by one of ``label_suffixes``
(default: none, ``_label``, ``_mask``, ``_manual1``), in any supported image
format; likewise for masks with ``mask_suffixes``. No candidate is an error
naming the expected path; two candidates (``0001.png`` and ``0001_label.png``)
are an error too, never a silent pick. When the masks folder does not exist
the FOV is derived with `keras_vessel.data.preprocessing.derive_fov`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from keras_vessel.data.datasets.base import (
    SampleSpec,
    check_fov_options,
    check_split,
    file_spec,
    require_dir,
)
from keras_vessel.data.preprocessing import IMAGE_SUFFIXES
from keras_vessel.errors import DatasetError



def split_stem(path: Path) -> tuple[str, str] | None:
    """``(stem, extension)`` of a supported image file (``.ppm.gz`` handled), else None."""
    name = path.name
    lower = name.lower()
    for extension in IMAGE_SUFFIXES:
        for full in (extension, extension + ".gz"):
            if lower.endswith(full) and len(name) > len(full):
                return name[: -len(full)], name[-len(full) :]
    return None


def _index(folder: Path) -> dict[str, list[Path]]:
    """Supported image files of ``folder`` grouped by stem."""
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        parts = split_stem(path) if path.is_file() else None
        if parts is not None:
            by_stem.setdefault(parts[0], []).append(path)
    return by_stem


def _image_index(folder: Path, *, noun: str, expected: str) -> dict[str, list[Path]]:
    """`_index` of a folder of images, which must hold some, one per stem; else DatasetError naming `noun`."""
    index = _index(folder)
    if not index:
        raise DatasetError(f"no {noun} in {folder}; expected {expected}")
    clashes = sorted(stem for stem, paths in index.items() if len(paths) > 1)
    if clashes:
        raise DatasetError(f"several {noun} share a stem in {folder}: {', '.join(clashes)}")
    return index


def _match(
    by_stem: dict[str, list[Path]], stem: str, suffixes: Sequence[str], folder: Path, what: str
) -> Path:
    """The one file of ``by_stem`` named ``stem + suffix`` for some suffix, else DatasetError."""
    candidates = [path for suffix in suffixes for path in by_stem.get(stem + suffix, [])]
    if not candidates:
        tried = ", ".join(f"{stem}{suffix}.*" for suffix in suffixes)
        raise DatasetError(f"missing {what} for image {stem!r}: expected one of {tried} in {folder}")
    if len(candidates) > 1:
        listed = ", ".join(path.name for path in candidates)
        raise DatasetError(f"ambiguous {what} for image {stem!r} in {folder}: {listed}")
    return candidates[0]


def _check_suffixes(value: object, option: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):  # type: ignore[union-attr]
        raise DatasetError(
            f"option {option} for dataset 'folder' must be a sequence of strings, got {value!r}"
        )
    return tuple(value)  # type: ignore[arg-type]


def _open_flat(
    root: Path,
    prefix: str,
    images: str,
    labels: str,
    masks: str | None,
    label_suffixes: tuple[str, ...],
    mask_suffixes: tuple[str, ...],
    fov_options: dict[str, object],
) -> list[SampleSpec]:
    expected = (
        f"<root>/{prefix}{images}/ with image files ({', '.join(IMAGE_SUFFIXES)}) "
        f"and <root>/{prefix}{labels}/"
    )
    image_dir = require_dir(root / images, expected)
    image_index = _image_index(image_dir, noun="images", expected=expected)
    label_dir = require_dir(root / labels, expected)
    label_index = _index(label_dir)
    mask_dir = root / masks if masks is not None else None
    mask_index = _index(mask_dir) if mask_dir is not None and mask_dir.is_dir() else None
    specs = []
    for stem, (image_path,) in image_index.items():
        label = _match(label_index, stem, label_suffixes, label_dir, "label")
        fov = None
        if mask_index is not None:
            fov = _match(mask_index, stem, mask_suffixes, mask_dir, "FOV mask")  # type: ignore[arg-type]
        specs.append(file_spec(stem, image_path, label, fov, None, **fov_options))
    return specs


def open_folder(
    root: str | Path,
    split: str = "all",
    *,
    images: str = "images",
    labels: str = "labels",
    masks: str | None = "masks",
    label_suffixes: Sequence[str] = ("", "_label", "_mask", "_manual1"),
    mask_suffixes: Sequence[str] = ("", "_mask", "_fov"),
    fov_threshold: float | None = None,
    fov_erosion: int = 3,
) -> list[SampleSpec]:
    """Samples from a generic images/labels[/masks] folder; see the module docstring."""
    check_split(split, dataset="folder")
    fov_options = check_fov_options(fov_threshold, fov_erosion, dataset="folder")
    for option, value in (("images", images), ("labels", labels)):
        if not isinstance(value, str) or not value:
            raise DatasetError(f"option {option} for dataset 'folder' must be a folder name, got {value!r}")
    if masks is not None and (not isinstance(masks, str) or not masks):
        raise DatasetError(f"option masks for dataset 'folder' must be a folder name or None, got {masks!r}")
    options = (
        images,
        labels,
        masks,
        _check_suffixes(label_suffixes, "label_suffixes"),
        _check_suffixes(mask_suffixes, "mask_suffixes"),
        fov_options,
    )
    root = require_dir(Path(root), f"a folder holding {images}/ and {labels}/")
    has_splits = (root / "training" / images).is_dir() or (root / "test" / images).is_dir()
    if not has_splits:
        if split != "all":
            raise DatasetError(
                f"split {split!r} needs <root>/training/{images}/ and <root>/test/{images}/, "
                f"but {root} is a flat folder; use split 'all' (--split all)"
            )
        return _open_flat(root, "", *options)
    parts = ("training", "test") if split == "all" else (split,)
    return [spec for part in parts for spec in _open_flat(root / part, f"{part}/", *options)]


def open_labelled(
    images: str | Path,
    labels: str | Path,
    masks: str | Path | None = None,
    *,
    label_suffixes: Sequence[str] = ("", "_label", "_mask", "_manual1"),
    mask_suffixes: Sequence[str] = ("", "_mask", "_fov"),
) -> list[SampleSpec]:
    """Samples from three separate folders: photographs, their labels and (optionally) FOV masks.

    Files are matched by stem as in `open_folder` (a label is ``<image stem><suffix>.<ext>`` in any
    supported format). Unlike `open_folder`, every name that finds no partner is listed in one
    DatasetError (photographs without a label or mask, labels and masks without a photograph), so a
    user fixes them all at once. Without `masks` the FOV is the region `keras-vessel predict` keeps
    (``fov_rule="predict"`` of `keras_vessel.data.datasets.base.load_files`).

    >>> open_labelled("/nonexistent", "/nonexistent")
    Traceback (most recent call last):
    keras_vessel.errors.DatasetError: /nonexistent is not a folder; expected a folder of photographs
    """
    label_suffixes = _check_suffixes(label_suffixes, "label_suffixes")
    mask_suffixes = _check_suffixes(mask_suffixes, "mask_suffixes")
    image_dir = require_dir(Path(images), "a folder of photographs")
    label_dir = require_dir(Path(labels), "a folder of labels")
    mask_dir = require_dir(Path(masks), "a folder of FOV masks") if masks is not None else None
    image_index = _image_index(image_dir, noun="photographs",
                               expected=f"image files ({', '.join(IMAGE_SUFFIXES)})")
    folders = [("label", label_dir, _index(label_dir), label_suffixes)]
    if mask_dir is not None:
        folders.append(("FOV mask", mask_dir, _index(mask_dir), mask_suffixes))
    problems, matched = [], {}
    for what, folder, index, suffixes in folders:
        lonely = [stem for stem in image_index if not any(stem + suffix in index for suffix in suffixes)]
        used = {stem + suffix for stem in image_index for suffix in suffixes}
        orphans = [path.name for stem, paths in index.items() if stem not in used for path in paths]
        if lonely:
            problems.append(f"no {what} in {folder} for {_listed(lonely, 'photograph')}")
        if orphans:
            problems.append(f"no photograph in {image_dir} for {_listed(orphans, what)}")
        matched[what] = {stem: _match(index, stem, suffixes, folder, what) for stem in image_index
                         if stem not in lonely}
    if problems:
        raise DatasetError("; ".join(problems) + " (a label or mask is matched to its photograph by file stem: "
                           f"photo.jpg <- photo.png or photo{label_suffixes[-1]}.png)")
    fov_rule = {} if mask_dir is not None else {"fov_rule": "predict"}
    return [file_spec(stem, image_path, matched["label"][stem], matched.get("FOV mask", {}).get(stem), **fov_rule)
            for stem, (image_path,) in image_index.items()]


def _listed(names: Sequence[str], noun: str) -> str:
    """``"2 photographs: a.png, b.png"``."""
    return f"{len(names)} {noun}{'' if len(names) == 1 else 's'}: {', '.join(names)}"
