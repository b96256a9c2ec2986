"""The sample contract shared by every dataset reader, and the helpers they share.

A reader turns a folder in a published layout into a list of `SampleSpec`s.
Specs are cheap (paths only) and picklable: ``load`` is a `functools.partial`
of the module-level `load_files`, so a `multiprocessing` pool can load
samples in workers. What loading needs of TensorFlow (a field of view derived
from the photograph) is its ``measure``, run by the caller where TensorFlow is
(`keras_vessel.data.tfrecords`: prepare's main process), so that the workers
import none (`keras_vessel.workers`).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from keras_vessel.errors import DatasetError
from keras_vessel.io import update_digest
from keras_vessel.data.preprocessing import derive_fov, fov_cut, read_image, read_mask

SPLITS = ("training", "test", "all")


@dataclass(frozen=True)
class Sample:
    """One fundus image with its annotations, all on the same pixel grid."""

    name: str  # e.g. "21_training", "Image_01L", "im0001", "synthetic_0003"
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) bool, first observer
    fov: np.ndarray  # (H, W) bool, given or derived
    second_label: np.ndarray | None = None  # (H, W) bool, second observer


@dataclass(frozen=True)
class SampleSpec:
    """A sample not yet read: its ``name`` and a picklable ``load() -> Sample``.

    ``measure``, when not None, is a picklable call computing what ``load`` needs of TensorFlow (a field
    of view derived from the photograph: `measure_fov`): ``load(measured=measure())`` returns what
    ``load()`` returns, and imports no TensorFlow when given it.
    """

    name: str
    load: Callable[..., Sample]
    measure: Callable[[], object] | None = None

    def fingerprint(self) -> str:
        """A hex digest of what `load` would read: its files' names, sizes and contents, and its options.

        Prepared records keep it, so that preparing a different image (or the
        same name from another file) into the same folder is noticed.
        """
        digest = hashlib.sha256(self.name.encode())
        arguments = list(getattr(self.load, "args", ())) + sorted(getattr(self.load, "keywords", {}).items())
        for argument in arguments:
            if isinstance(argument, Path):
                digest.update(argument.name.encode())
                with argument.open("rb") as handle:
                    update_digest(digest, handle)
            else:
                digest.update(repr(argument).encode())
        return digest.hexdigest()


def check_split(split: str, allowed: Sequence[str] = SPLITS, *, dataset: str) -> str:
    """Return ``split`` if it is one of ``allowed``, else raise DatasetError listing them."""
    if split not in allowed:
        raise DatasetError(
            f"unknown split {split!r} for dataset {dataset!r}; valid splits: {', '.join(allowed)}"
        )
    return split


def require_dir(path: Path, expected: str) -> Path:
    """Raise DatasetError saying which layout was expected when ``path`` is no folder."""
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder; expected {expected}")
    return path


def require_file(path: Path, what: str) -> Path:
    """Raise DatasetError naming the expected path of a missing label/mask."""
    if not path.is_file():
        raise DatasetError(f"missing {what}: expected {path}")
    return path


def find_ignoring_case(folder: Path, filename: str) -> Path | None:
    """The file in ``folder`` whose name equals ``filename`` up to case (HRF mixes cases)."""
    exact = folder / filename
    if exact.is_file():
        return exact
    wanted = filename.lower()
    if folder.is_dir():
        for candidate in folder.iterdir():
            if candidate.name.lower() == wanted and candidate.is_file():
                return candidate
    return None


def list_matching(folder: Path, pattern: str) -> list[tuple[Path, re.Match[str]]]:
    """Files in ``folder`` whose whole name matches the regex ``pattern``, sorted by name."""
    regex = re.compile(pattern, re.IGNORECASE)
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        match = regex.fullmatch(path.name)
        if match and path.is_file():
            found.append((path, match))
    return found


def find_images(folder: Path, pattern: str, *, dataset: str, expected: str) -> list[tuple[Path, re.Match[str]]]:
    """`list_matching` in a folder that must exist and hold at least one match; else DatasetError saying which
    layout was expected (``"no {dataset} images in {folder}; expected {expected}"``)."""
    found = list_matching(require_dir(folder, expected), pattern)
    if not found:
        raise DatasetError(f"no {dataset} images in {folder}; expected {expected}")
    return found


def _check_same_size(image_path: Path, image: np.ndarray, other_path: Path, other: np.ndarray) -> None:
    if other.shape != image.shape[:2]:
        raise DatasetError(
            f"size mismatch: {other_path} is {other.shape[1]}x{other.shape[0]} (WxH) "
            f"but its image {image_path} is {image.shape[1]}x{image.shape[0]}"
        )


def load_files(
    name: str,
    image_path: Path,
    label_path: Path,
    fov_path: Path | None = None,
    second_label_path: Path | None = None,
    *,
    fov_threshold: float | None = None,
    fov_erosion: int = 3,
    fov_rule: str = "derive",
    measured: object | None = None,
) -> Sample:
    """Read one sample from its files; derive the FOV when ``fov_path`` is None.

    ``fov_rule="derive"`` derives it with `derive_fov` (the published datasets' readers);
    ``"predict"`` uses the region `keras-vessel predict` keeps (`image_fov` grown by
    `keras_vessel.data.scaling.FOV_DILATION` px, the whole image when no FOV is found), so a
    threshold chosen on the sample counts the pixels prediction keeps. ``measured`` is
    ``measure_fov(image_path, fov_rule=fov_rule)`` computed elsewhere (then no TensorFlow is
    imported here), or None to compute it here when needed.
    Module-level (not a closure) so that ``functools.partial(load_files, ...)``
    pickles.
    """
    image = read_image(image_path)
    label = read_mask(label_path, what="label")
    _check_same_size(image_path, image, label_path, label)
    if fov_path is None and fov_rule == "predict":
        fov = _predict_region(image) if measured is None else measured
    elif fov_path is None:
        fov = derive_fov(image, threshold=fov_threshold, erosion=fov_erosion, cut=measured)
    else:
        fov = read_mask(fov_path, what="FOV mask")
        _check_same_size(image_path, image, fov_path, fov)
    second = None
    if second_label_path is not None:
        second = read_mask(second_label_path, what="second label")
        _check_same_size(image_path, image, second_label_path, second)
    return Sample(name=name, image=image, label=label, fov=fov, second_label=second)


def _predict_region(image: np.ndarray) -> np.ndarray:
    """The region `keras-vessel predict` keeps of ``image`` (TensorFlow ops): ``load_files``'s "predict" FOV."""
    from keras_vessel.data.scaling import image_fov, prediction_region

    geometry = image_fov(image)
    return prediction_region(geometry.mask, geometry.found).numpy()


def measure_fov(image_path: Path, *, fov_rule: str = "derive") -> object:
    """What deriving the FOV of the photograph at ``image_path`` by ``fov_rule`` needs of TensorFlow, to give
    a loader as ``measured`` (`SampleSpec.measure`): `fov_cut` for "derive" (the default `derive_fov`
    rule), the FOV itself for "predict" (`load_files`)."""
    image = read_image(image_path)
    return _predict_region(image) if fov_rule == "predict" else fov_cut(image)


def fov_measure(image_path: Path, fov_path: Path | None = None, *, fov_threshold: float | None = None,
                fov_rule: str = "derive") -> Callable[[], object] | None:
    """``SampleSpec.measure`` of a sample whose FOV is ``fov_path``, or derived from ``image_path`` by
    ``fov_rule`` (with ``fov_threshold``: `derive_fov`'s options) when None: None when no TensorFlow is
    needed (a FOV file, or a fixed threshold), else `measure_fov` of the photograph."""
    if fov_path is not None or (fov_rule == "derive" and fov_threshold is not None):
        return None
    return functools.partial(measure_fov, image_path, fov_rule=fov_rule)


def file_spec(
    name: str,
    image_path: Path,
    label_path: Path,
    fov_path: Path | None = None,
    second_label_path: Path | None = None,
    **fov_options: object,
) -> SampleSpec:
    """A SampleSpec whose ``load`` reads the given files with `load_files` (and whose ``measure`` is
    `fov_measure`'s)."""
    measure = fov_measure(image_path, fov_path, fov_threshold=fov_options.get("fov_threshold"),
                          fov_rule=fov_options.get("fov_rule", "derive"))
    return SampleSpec(
        name=name,
        load=functools.partial(
            load_files, name, image_path, label_path, fov_path, second_label_path, **fov_options
        ),
        measure=measure,
    )


def check_fov_options(fov_threshold: object, fov_erosion: object, *, dataset: str) -> dict[str, object]:
    """Validate the derived-FOV options up front (not lazily inside ``load``)."""
    if fov_threshold is not None and (
        isinstance(fov_threshold, bool)
        or not isinstance(fov_threshold, (int, float))
        or not 0 <= fov_threshold < 255
    ):
        raise DatasetError(
            f"option fov_threshold for dataset {dataset!r} must be a number in [0, 255) or None, "
            f"got {fov_threshold!r}"
        )
    if isinstance(fov_erosion, bool) or not isinstance(fov_erosion, int) or fov_erosion < 0:
        raise DatasetError(
            f"option fov_erosion for dataset {dataset!r} must be a non-negative int, got {fov_erosion!r}"
        )
    return {"fov_threshold": fov_threshold, "fov_erosion": fov_erosion}

