"""Vessel measurements of mask files: one CSV row per mask (`keras-vessel measure`, `predict --measure`).

A mask is any binary image (`keras_vessel.data.preprocessing.read_mask`); predict's ``NAME_mask.png``
is read as the mask of ``NAME``. Its field of view comes from, in `measure_files`'s ``fov`` option:

* ``"auto"`` (default): the file beside the mask whose name is the mask's (``NAME_fov.*``, else
  ``NAME.*``): a FOV mask, or the photograph itself, whose FOV is then found as `predict` finds it
  (`keras_vessel.data.scaling.image_fov`), so that ``predict photos/ --output photos/`` is measured
  without more options. A mask with neither fails, saying what to pass. A folder or glob of masks then
  leaves out each ``NAME_fov.*`` beside a ``NAME.*`` mask: it is that mask's FOV (`expand_masks`).
* a folder or a glob pattern: the file of the mask's name there (``NAME_fov.*``, ``NAME_mask.*`` or
  ``NAME.*``), FOV mask or photograph as above;
* one file: the FOV of every mask (as `predict --fov FILE`);
* ``"none"``: the whole image.

The FOV's circle (`keras_vessel.data.scaling.fit_fov_circle`) gives ``fov_diameter_px`` and the rings;
for a FOV that is no disc (``"none"``, a rectangle) the centroid and the radius of a disc of its area.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_vessel.data.preprocessing import IMAGE_SUFFIXES, read_image, read_mask
from keras_vessel.errors import DatasetError
from keras_vessel.io import ensure_writable_dir, write_text_atomic
from keras_vessel.measure.morphology import COLUMNS, measure_vessels

__all__ = ["ID_COLUMNS", "MAX_VESSEL_FRACTION", "MEASURES_CSV", "FovSource", "MeasureReport", "expand_masks",
           "fov_circle", "mask_name", "measure_files", "measure_row", "measures_text", "merge_rows", "read_rows",
           "write_measures"]

# What `predict --measure` writes beside its maps, and the columns naming each row's files.
MEASURES_CSV = "measures.csv"
ID_COLUMNS = ("name", "mask", "fov")
# A mask whose vessels cover more of its FOV than this is refused, as inverted (black vessels on white) or
# all white: retinal vessels cover roughly 5-20% of the FOV, so a mask of more than half is no vessel map.
MAX_VESSEL_FRACTION = 0.5
_MASK_SUFFIX = "_mask"
_FOV_SUFFIX = "_fov"
_FOV_SUFFIXES = (_FOV_SUFFIX, _MASK_SUFFIX, "")  # in the order a FOV file of a mask's name is looked for
_FOV_SUFFIXES_BESIDE = (_FOV_SUFFIX, "")  # the same under --fov auto, beside the mask: NAME_mask is a mask

log = logging.getLogger(__name__)


@dataclass
class MeasureReport:
    """What `measure_files` did: ``rows`` written (one per mask, in input order) and ``failures``,
    ``(mask path, reason)`` for each mask that gave no row; the reason is one sentence naming the file."""

    rows: list[dict] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)


def _stem(path: Path) -> str:
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return (name[:-3] if name.endswith(".gz") else name).endswith(IMAGE_SUFFIXES)


def _by_name(paths: Iterable[Path]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(paths):
        found.setdefault(_stem(path), []).append(path)
    return found


def mask_name(path: str | Path) -> str:
    """The ``NAME`` of a mask file: its stem, without predict's ``_mask`` ending (``21_mask.png`` -> ``21``)."""
    stem = _stem(Path(path))
    return stem[: -len(_MASK_SUFFIX)] if stem.endswith(_MASK_SUFFIX) and len(stem) > len(_MASK_SUFFIX) else stem


def _fov_choice(fov: str | Path) -> str | None:
    """``"auto"`` or ``"none"`` when `fov` is that choice (any case, spaces around), else None (a path)."""
    text = str(fov).strip().lower()
    return text if text in ("auto", "none") else None


def _without_fovs_beside(files: list[Path]) -> list[Path]:
    """`files` less each ``NAME_fov.*`` when a ``NAME.*`` mask is among them: that mask's FOV under ``auto``."""
    names = {mask_name(path) for path in files}
    return [path for path in files
            if not (_stem(path).endswith(_FOV_SUFFIX) and _stem(path)[: -len(_FOV_SUFFIX)] in names)]


def _files(item: str | Path, what: str) -> list[Path]:
    """A glob's matches or a folder's images (sorted); ValueError naming the argument when there are none."""
    text = str(item)
    if glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not found:
            raise ValueError(f"{what} pattern {text!r} matches no file")
        return found
    folder = Path(text)
    found = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))
    if not found:
        raise ValueError(f"{what} folder {folder} holds no image (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def expand_masks(inputs: Iterable[str | Path], *, fov: str | Path = "auto") -> list[Path]:
    """Mask files: files as given, globs expanded, folders listed (sorted, not recursive).

    A folder holding predict's ``NAME_mask.png`` files gives those only (not the ``NAME_prob.png`` maps,
    overlays or photographs beside them); another folder gives every image in it. With `fov` ``"auto"``
    (`measure_files`'s option, whose FOV is the ``NAME_fov.*`` beside the mask), a folder or a pattern
    leaves out each ``NAME_fov.*`` when it also gives a ``NAME.*`` mask; a ``NAME_fov.*`` alone, or named
    as a file, is a mask. Raises ValueError naming the argument when a path does not exist, a pattern
    matches nothing or a folder holds no image, and when two masks have the same name (`mask_name`), whose
    rows could not be told apart.
    """
    if isinstance(inputs, (str, Path)):
        raise TypeError(f"`inputs` must be a sequence of paths, not one path; got {inputs!r}")
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif path.is_dir() or glob.has_magic(str(item)):
            files = _files(item, "mask")
            predicted = [p for p in files if path.is_dir() and p.name.lower().endswith(f"{_MASK_SUFFIX}.png")]
            found += predicted or (_without_fovs_beside(files) if _fov_choice(fov) == "auto" else files)
        else:
            raise ValueError(f"mask {path} does not exist")
    found = list(dict.fromkeys(found))
    names: dict[str, Path] = {}
    for path in found:
        if mask_name(path) in names:
            raise ValueError(f"masks {names[mask_name(path)]} and {path} have the same name {mask_name(path)!r}; "
                             "measure them in separate runs")
        names[mask_name(path)] = path
    return found


def fov_circle(fov: np.ndarray) -> tuple[float, float, float] | None:
    """``(cy, cx, radius)`` in px of the circle through a FOV mask's boundary
    (`keras_vessel.data.scaling.fit_fov_circle`), or None when the mask is no disc."""
    from keras_vessel.data.scaling import fit_fov_circle

    cy, cx, radius, found = fit_fov_circle(np.asarray(fov, dtype=bool))
    return (float(cy), float(cx), float(radius)) if bool(found) else None


def _not_binary(error: DatasetError) -> bool:
    """Whether `read_mask` refused the file as holding more than two values (a grey-level image)."""
    return "not binary" in str(error)


def _read_fov(path: Path) -> tuple[np.ndarray, str]:
    """A FOV file as ``(mask, how)``: a binary image is the FOV; a photograph's FOV is found as predict
    finds it (`keras_vessel.data.scaling.image_fov`; the whole image, said, when none is found)."""
    from keras_vessel.data.scaling import image_fov

    try:
        return read_mask(path), str(path)
    except DatasetError as error:
        if not _not_binary(error):
            raise
    geometry = image_fov(read_image(path))
    if not geometry.found:
        log.warning("%s: no field of view found in this photograph; measuring the whole image", path)
        return np.ones(geometry.mask.shape, dtype=bool), f"whole image (no FOV found in {path})"
    return geometry.mask, f"found in {path}"


class FovSource:
    """Where each mask's field of view comes from (`measure_files`'s ``fov``): ``"auto"``, ``"none"``, one
    file, a folder or a glob pattern. `for_mask(path, shape)` returns ``(fov (H, W) bool, how)``;
    DatasetError (a ValueError) naming the mask when it has none or one of another size."""

    def __init__(self, fov: str | Path = "auto") -> None:
        if not isinstance(fov, (str, Path)):
            raise TypeError(f"`fov` must be 'auto', 'none', a file, a folder or a glob pattern; got {fov!r}")
        text = str(fov)
        self.choice = _fov_choice(fov)
        self.file: Path | None = None
        self.by_name: dict[str, list[Path]] = {}
        self._read: dict[Path, tuple[np.ndarray, str]] = {}
        self._beside: dict[Path, dict[str, list[Path]]] = {}
        if self.choice is None:
            if Path(text).is_file():
                self.file = Path(text)
            elif Path(text).is_dir() or glob.has_magic(text):
                self.by_name = _by_name(_files(text, "FOV"))
            else:
                raise ValueError(f"`fov` must be 'auto', 'none', a file, a folder or a glob pattern; "
                                 f"{text} does not exist")

    def _candidate(self, mask: Path) -> Path | None:
        name = mask_name(mask)
        if self.choice == "auto":  # the photograph or a NAME_fov file beside the mask; NAME_mask is a mask
            if mask.parent not in self._beside:
                self._beside[mask.parent] = _by_name(p for p in mask.parent.iterdir() if p.is_file() and _is_image(p))
            files, suffixes = self._beside[mask.parent], _FOV_SUFFIXES_BESIDE
        else:
            files, suffixes = self.by_name, _FOV_SUFFIXES
        for suffix in suffixes:
            found = [p for p in files.get(name + suffix, []) if p.resolve() != mask.resolve()]
            if found:
                return found[0]
        return None

    def for_mask(self, mask: Path, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
        if self.choice == "none":
            return np.ones(shape, dtype=bool), "whole image"
        path = self.file or self._candidate(mask)
        if path is None:
            where = f"beside it in {mask.parent}" if self.choice == "auto" else "in --fov"
            raise DatasetError(f"no field of view for mask {mask}: no {mask_name(mask)}{_FOV_SUFFIX}.* or "
                               f"{mask_name(mask)}.* (FOV mask or photograph) {where}; give --fov a folder of "
                               "them, one FOV mask for all, or 'none' (the whole image)")
        if path not in self._read:
            self._read[path] = _read_fov(path)
        fov, how = self._read[path]
        if fov.shape != tuple(shape):
            raise DatasetError(f"FOV {path} is {fov.shape[1]}x{fov.shape[0]} (WxH) but mask {mask} is "
                               f"{shape[1]}x{shape[0]}")
        return fov, how


def measure_row(name: str, mask_path: str | Path, mask: np.ndarray, fov: np.ndarray, *, fov_text: str,
                curvature_sigma: float = 3.0) -> dict:
    """One CSV row: `ID_COLUMNS` then `keras_vessel.measure.COLUMNS` of ``mask`` inside ``fov``, measured
    with the FOV's fitted circle (`fov_circle`)."""
    measures = measure_vessels(mask, fov, fov_circle=fov_circle(fov), curvature_sigma=curvature_sigma)
    return {"name": name, "mask": str(mask_path), "fov": fov_text, **measures}


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def measures_text(rows: Sequence[dict]) -> str:
    """Rows (`measure_row`) as CSV text with `ID_COLUMNS` + `COLUMNS`; NaN as an empty cell, floats to 6
    significant digits."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(ID_COLUMNS + COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in ID_COLUMNS + COLUMNS])
    return text.getvalue()


def write_measures(path: str | Path, rows: Sequence[dict]) -> None:
    """Write rows as `measures_text`, atomically."""
    write_text_atomic(path, measures_text(rows))


def read_rows(text: str | None) -> list[dict]:
    """The rows of a measures CSV's text, if it has this module's columns (else none)."""
    reader = csv.DictReader(io.StringIO(text or ""))
    return list(reader) if tuple(reader.fieldnames or ()) == ID_COLUMNS + COLUMNS else []


def merge_rows(path: str | Path | None, rows: Sequence[dict], *, text: str | None = None) -> list[dict]:
    """The rows of the CSV at `path` (or of its `text`, read elsewhere) and `rows`, one per ``name`` (a row
    of `rows` replaces the old row of its name), sorted by ``name``: a second batch predicted into a folder
    keeps the first batch's rows, and the file does not depend on the order in which photographs were
    predicted or on how many runs it took (the order of `predict`'s measures.csv in both engines)."""
    if text is None and path is not None and Path(path).is_file():
        text = Path(path).read_text()
    merged = {row["name"]: row for row in read_rows(text)}
    merged.update((row["name"], row) for row in rows)
    return [merged[name] for name in sorted(merged)]


def _measure_mask(path: Path, source: FovSource, *, curvature_sigma: float) -> dict:
    """`measure_row` of the mask file `path` inside its FOV from `source`. DatasetError (one sentence naming
    the file, with what to do) when the mask is not binary, has no FOV or one of another size, or marks more
    than `MAX_VESSEL_FRACTION` of its FOV as vessel (inverted or all white)."""
    try:
        mask = read_mask(path)
    except DatasetError as error:
        if not _not_binary(error):
            raise
        raise DatasetError(f"{error}; threshold it to 0/255 (of predict's outputs, pass NAME{_MASK_SUFFIX}.png, "
                           "not NAME_prob.png)") from None
    region, how = source.for_mask(path, mask.shape)
    row = measure_row(mask_name(path), path, mask, region, fov_text=how, curvature_sigma=curvature_sigma)
    fraction = row["vessel_area_fraction"]
    if fraction > MAX_VESSEL_FRACTION:  # False for NaN (an empty FOV)
        raise DatasetError(f"mask {path} marks {fraction:.0%} of its field of view as vessel (more than "
                           f"{MAX_VESSEL_FRACTION:.0%}): is it inverted? vessels must be white (255) on black (0)")
    return row


def measure_files(inputs: Sequence[str | Path], output: str | Path, *, fov: str | Path = "auto",
                  curvature_sigma: float = 3.0, progress: bool = True) -> MeasureReport:
    """Measure every mask of `inputs` (`expand_masks`) inside its FOV and write one row per mask to the
    CSV `output` (`write_measures`), atomically.

    Arguments (the masks, ``fov``, the output's folder) are checked before any mask is measured; a mask
    that cannot be measured (unreadable, not binary, no FOV or one of another size, more than
    `MAX_VESSEL_FRACTION` of its FOV marked as vessel) is recorded in ``report.failures`` and logged once
    (a warning ``measure: REASON``), and the others are measured. Nothing is written when no mask gave a row.
    """
    from keras_vessel.progress import progress as progress_bar

    masks = expand_masks(inputs, fov=fov)
    if not masks:
        raise ValueError("`inputs` is empty; expected at least one mask")
    source = FovSource(fov)
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; give the CSV file to write, e.g. {output / 'measures.csv'}")
    ensure_writable_dir(output.parent, what="the folder of the output CSV")
    report = MeasureReport()
    for path in progress_bar(masks, label="measure", enabled=progress):
        try:
            report.rows.append(_measure_mask(path, source, curvature_sigma=curvature_sigma))
        except (ValueError, OSError) as error:  # DatasetError is a ValueError
            reason = str(error) if str(path) in str(error) else f"{path}: {error}"
            report.failures.append((path, reason))
            log.warning("measure: %s", reason)
    if report.rows:
        write_measures(output, report.rows)
    return report
