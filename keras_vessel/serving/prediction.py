"""Predict vessel probability maps and masks for a batch of image files.

`predict_files` is what `keras-vessel predict` and the demo run: for each input
it writes ``NAME_prob.png`` (16-bit grey, probability x 65535) and
``NAME_mask.png`` (0/255) atomically, then the photograph's marker (`write_photograph`, which the Beam
engine calls too), and carries on past files it cannot read, so one corrupt image does not cost the rest
of a large batch (it is listed with its reason in ``failures.csv``). The network is either a local `.keras`
model or any callable mapping an RGB image to its ``(H, W)`` probability (``predictor=``), e.g.
`keras_vessel.serving.client.ServingClient.predict`, so a TF Serving server
produces the same files as local prediction.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keras_vessel.models.inference import check_tile_size, check_tta
from keras_vessel.checks import FUSIONS
from keras_vessel.data.preprocessing import IMAGE_SUFFIXES
from keras_vessel.errors import OutputError
from keras_vessel.interrupts import deferred_signals
from keras_vessel.io import file_sha256, write_png_atomic, write_text_atomic
from keras_vessel.locks import folder_lock

__all__ = ["FAILURES_CSV", "FAILURE_COLUMNS", "LOW_RESOLUTION_FOV_FRACTION", "OUTPUT_MARKER", "OUTPUT_SUFFIXES",
           "OVERLAY_COLOUR", "SETTINGS", "DoneCheck", "InputError", "LocalFiles", "Located", "Maps",
           "OutputClashError", "PhotographWork", "PredictReport", "ScaleNotes", "check_mask_threshold", "claim_output",
           "expand_inputs", "failure_reason", "failures_text", "output_stems", "own_outputs", "photograph_marker",
           "photograph_name", "predict_files", "prediction_settings", "record_results", "stops_the_batch",
           "vessel_overlay", "write_photograph"]

# What `predict_files` writes per image; the file in its output folder that records the settings that made
# them (`claim_output`); and, per photograph, the marker written after its files that records it done
# (`photograph_marker`: ``.keras-vessel-predict-NAME``, listing them; `write_photograph`, `DoneCheck`).
OUTPUT_SUFFIXES = ("_prob.png", "_mask.png", "_overlay.png")
OUTPUT_MARKER = ".keras-vessel-predict"
_PHOTOGRAPH_MARKER = OUTPUT_MARKER + "-"  # + NAME; the atomic writers' temporary files start with "..", never this
# The photographs of an output folder that failed, each with its reason (`failures_text`), as both engines write it.
FAILURES_CSV = "failures.csv"
FAILURE_COLUMNS = ("name", "path", "reason")
# The settings that make a photograph's files (`prediction_settings`), and the option that sets each: a
# re-run into the same output folder must have the same (`claim_output`).
SETTINGS = {"model": "model", "heads": "--heads", "tile_size": "--tile-size", "tta": "--tta", "scale": "--scale",
            "fov": "--fov", "threshold": "--threshold"}
# Errors writing an image's outputs that every later image would meet too: they stop the batch.
_STOPS_THE_BATCH = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# Photographs whose field of view is found narrower than this fraction of the model's training FOV hold too
# few pixels for its thin vessels: `--scale auto` enlarges them more than 1 / this, and not at all beyond
# `keras_vessel.data.scaling.MAX_FACTOR`. `predict_files` warns about each (`PhotographWork.notes`);
# what they lose, measured on DRIVE reduced: docs/METHOD_NOTES.md section 7.
LOW_RESOLUTION_FOV_FRACTION = 0.5
# What `vessel_overlay` paints vessels with (RGB), and how much of it: cyan shows on the red-orange fundus.
OVERLAY_COLOUR = (0, 255, 255)
OVERLAY_OPACITY = 0.6

log = logging.getLogger(__name__)


Predictor = Callable[[np.ndarray], np.ndarray]


class InputError(ValueError):
    """An input argument (file, glob or folder) names no usable image; the message says which."""


class OutputClashError(InputError):
    """Inputs that exist but cannot be predicted together into one output folder (`output_stems`): a
    problem of the run as asked, not of one argument; the message names both files."""


@dataclass
class PredictReport:
    """What `predict_files` did.

    written : output files, in input order (``NAME_prob.png``, ``NAME_mask.png`` per image).
    failures : ``(input path, reason)`` for every input that produced no output; the reason is one
        sentence that names the file.
    skipped : inputs not predicted because the output folder holds them done already (`DoneCheck`), in
        input order.
    wide_fov : inputs a local model recording its training FOV diameter predicted at ``scale="auto"`` whose field
        of view was found at least `keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` px across, where
        ``scale="adaptive"`` (fused resolutions for them) keeps more thin vessels (`PhotographWork.notes`).
    low_resolution : inputs whose field of view was found narrower than `LOW_RESOLUTION_FOV_FRACTION` of a local
        model's training FOV (`PhotographWork.notes`; each also warned about as it is predicted).
    """

    written: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    wide_fov: list[Path] = field(default_factory=list)
    low_resolution: list[Path] = field(default_factory=list)

    def fail(self, path: Path, reason: str) -> None:
        """Record (and log, once) that `path` failed: `reason`, prefixed with `path` unless it names it."""
        self.failures.append((path, reason if str(path) in reason else f"{path}: {reason}"))
        log.warning("predict: %s", self.failures[-1][1])


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(IMAGE_SUFFIXES)


class LocalFiles:
    """How `expand_inputs` lists and reads files, and the output folder's files are read, written (each
    atomically: `write_text`, `write_png`) and removed (a missing file is no error): the local file system.
    The Beam engine passes one that goes through Beam's FileSystems (`keras_vessel.serving.beam_engine.
    BeamFiles`), so gs:// and s3:// paths follow the same rules. Paths are strings."""

    @staticmethod
    def has_magic(text: str) -> bool:
        return glob.has_magic(text)

    @staticmethod
    def glob(pattern: str) -> list[str]:
        return [str(m) for m in sorted(Path(m) for m in glob.glob(pattern) if Path(m).is_file())]

    @staticmethod
    def is_dir(text: str) -> bool:
        return Path(text).is_dir()

    @staticmethod
    def is_file(text: str) -> bool:
        return Path(text).is_file()

    @staticmethod
    def exists(text: str) -> bool:
        return Path(text).exists()

    @staticmethod
    def list_dir(text: str) -> list[str]:
        return [str(p) for p in sorted(Path(text).iterdir()) if p.is_file()]

    @staticmethod
    def split(text: str) -> tuple[str, str]:
        return str(Path(text).parent), Path(text).name

    @staticmethod
    def join(folder: str, name: str) -> str:
        return str(Path(folder) / name)

    @staticmethod
    def read_text(text: str) -> str | None:
        try:
            return Path(text).read_text()
        except OSError:
            return None

    @staticmethod
    def write_text(text: str, content: str) -> None:
        write_text_atomic(text, content)

    @staticmethod
    def write_png(text: str, pixels: np.ndarray) -> None:
        write_png_atomic(text, pixels)

    @staticmethod
    def remove(text: str) -> None:
        Path(text).unlink(missing_ok=True)

    @staticmethod
    def sha256(text: str) -> str:
        return file_sha256(text)


def expand_inputs(inputs: Iterable[str | Path], *, files=LocalFiles) -> list[Path]:
    """Files as given, globs expanded, folders listed (images only, sorted, not recursive).

    Duplicates are dropped, keeping the first occurrence. Files that `predict_files` wrote itself
    (`own_outputs`) are left out of folders and globs, with a warning saying how many, so that
    predicting a folder into itself twice does not predict its maps. Raises `InputError`
    (a ValueError) naming the argument when a glob matches nothing, a folder
    holds no image or a path does not exist, so typos fail before any work. `files` lists and reads
    them (`LocalFiles`; with another, the paths are returned as strings: ``gs://`` is no `Path`).
    """
    if isinstance(inputs, (str, Path)):
        raise TypeError(f"`inputs` must be a sequence of paths, not one path; got {inputs!r}.")
    found: list[str] = []
    for item in inputs:
        text = str(item)
        if files.has_magic(text):
            matches = files.glob(text)
            if not matches:
                raise InputError(f"pattern {text!r} matches no file")
            found += _without_own_outputs(matches, f"pattern {text!r}", files)
        elif files.is_dir(text):
            matches = [m for m in files.list_dir(text) if _is_image(Path(files.split(m)[1]))]
            if not matches:
                raise InputError(f"folder {text} holds no image (looked for {', '.join(IMAGE_SUFFIXES)})")
            found += _without_own_outputs(matches, f"folder {text}", files)
        elif files.is_file(text):
            found.append(text if files is not LocalFiles else str(Path(text)))
        else:
            raise InputError(f"{text} does not exist")
    found = list(dict.fromkeys(found))
    return [Path(p) for p in found] if files is LocalFiles else found


def own_outputs(folder: str | Path, *, files=LocalFiles) -> set[str]:
    """Names of the outputs in `folder` that keras-vessel predict wrote (markers not included): those the
    folder records (`_recorded_outputs`), and ``NAME_prob.png``, ``NAME_mask.png``, ``NAME_overlay.png``
    wherever both of the first two are (outputs of a keras-vessel that wrote no marker, or of a photograph
    whose run was killed before its marker)."""
    names = _listed(folder, files)
    own = _recorded_outputs(files.read_text(files.join(str(folder), OUTPUT_MARKER)), names)
    first, second = OUTPUT_SUFFIXES[:2]
    for name in names:
        stem = name[: -len(first)]
        if name.endswith(first) and f"{stem}{second}" in names:
            own.update(f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES)
    return own


def _listed(folder: str | Path, files) -> set[str]:
    """The names of the files in `folder` (none when it is no folder)."""
    folder = str(folder)
    return {files.split(p)[1] for p in files.list_dir(folder)} if files.is_dir(folder) else set()


def _recorded_outputs(marker: str | None, names: Iterable[str]) -> set[str]:
    """The outputs a folder records as keras-vessel predict's: of each photograph with a marker among `names`
    (the folder's file names; `photograph_marker`), every file of predict's naming (`OUTPUT_SUFFIXES`),
    and the files the folder's `OUTPUT_MARKER` (text `marker`) lists, which a keras-vessel before the
    photographs' markers wrote."""
    own = _listed_files(marker)
    own.update(f"{stem}{suffix}" for stem in _marked_stems(names) for suffix in OUTPUT_SUFFIXES)
    return own


def photograph_marker(stem: str) -> str:
    """The name of the marker that records photograph ``NAME`` (`stem`) done in an output folder
    (``.keras-vessel-predict-NAME``): written by `write_photograph` after its files, read by `DoneCheck`."""
    return f"{_PHOTOGRAPH_MARKER}{stem}"


def _marked_stems(names: Iterable[str]) -> set[str]:
    """The photographs whose marker (`photograph_marker`) is among `names`."""
    return {name[len(_PHOTOGRAPH_MARKER):] for name in names
            if name.startswith(_PHOTOGRAPH_MARKER) and len(name) > len(_PHOTOGRAPH_MARKER)}


def _read_marker(text: str | None) -> dict:
    """The marker's JSON object, or {} when there is none or it is damaged."""
    try:
        marker = json.loads(text) if text is not None else {}
    except ValueError:
        return {}
    return marker if isinstance(marker, dict) else {}


def _without_own_outputs(paths: list[str], where: str, files) -> list[str]:
    parents = {path: files.split(path)[0] for path in paths}
    written = {folder: own_outputs(folder, files=files) for folder in set(parents.values())}
    kept = [path for path in paths if files.split(path)[1] not in written[parents[path]]]
    kinds = "NAME" + ", NAME".join(OUTPUT_SUFFIXES)
    if not kept:
        raise InputError(f"{where} holds only files that keras-vessel predict wrote ({kinds}); give the folder "
                         "of the photographs")
    if len(kept) < len(paths):
        log.warning("%s: skipping %d files that keras-vessel predict wrote (%s)", where, len(paths) - len(kept), kinds)
    return kept


def write_photograph(output: str | Path, stem: str, maps: Maps, *, files=LocalFiles) -> list[str]:
    """Write photograph `stem`'s files into `output` and record it done: the one way both engines write one.

    In this order, so that a run killed at any point leaves the photograph either done with its files or
    not done (`DoneCheck`), and either engine redoes it alike: its marker (`photograph_marker`) is removed;
    its files of predict's naming that this run does not write (``NAME_overlay.png`` without an overlay:
    `OUTPUT_SUFFIXES`) are removed, so that its files are all of one run; its files
    (`PhotographWork.output_pixels`) are written, each atomically on a local disk (`files`); last, its
    marker, listing them. A failure while writing removes the files written (never some without the
    others) and is raised. Returns the paths written (``NAME_prob.png``, ``NAME_mask.png``, then
    ``NAME_overlay.png`` with one), as `files` joins them.
    """
    output = str(output)
    marker = files.join(output, photograph_marker(stem))
    files.remove(marker)
    outputs = PhotographWork.output_pixels(stem, maps)
    names = [name for name, _ in outputs]
    for stale in (f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES):
        if stale not in names:
            files.remove(files.join(output, stale))
    written: list[str] = []
    try:
        for name, pixels in outputs:
            path = files.join(output, name)
            files.write_png(path, pixels)
            written.append(path)
    except BaseException:
        for path in written:
            with contextlib.suppress(Exception):  # not instead of the error that stopped it
                files.remove(path)
        raise
    files.write_text(marker, json.dumps({"photograph": stem, "files": names}, indent=2) + "\n")
    return written


def _listed_files(text: str | None) -> set[str]:
    """The files a marker (its `text`; None: there is none) lists: a photograph's (`photograph_marker`), or
    the folder's of a keras-vessel before those; none when it is damaged."""
    listed = _read_marker(text).get("files")
    return {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()


def failures_text(previous: str | None, failures: Iterable[tuple[str | Path, str]],
                  handled: Iterable[str]) -> str | None:
    """The text of `FAILURES_CSV` after a run: one row per photograph whose last attempt failed.

    `previous` is the file's text before the run (None: there was none); `failures` are the run's
    ``(path, reason)`` pairs (`failure_reason`); `handled` are the names (`photograph_name`) of the
    photographs the run predicted, skipped as done or failed. The rows of `previous` whose photograph the run
    did not handle are kept (a run on other photographs into the folder leaves their failures); the run's
    failures replace the rows of their names, and a photograph handled without failing loses its row. Columns
    `FAILURE_COLUMNS`, rows sorted by name, so that a fresh run and a resumed one give the same text; None
    when no row is left (no file: none of the folder's photographs failed).
    """
    handled = set(handled)
    reader = csv.DictReader(io.StringIO(previous or ""))
    old = list(reader) if tuple(reader.fieldnames or ()) == FAILURE_COLUMNS else []
    rows = {row["name"]: row for row in old if row["name"] not in handled}
    for path, reason in failures:
        rows[photograph_name(path)] = {"name": photograph_name(path), "path": str(path), "reason": reason}
    if not rows:
        return None
    text = io.StringIO()
    writer = csv.DictWriter(text, FAILURE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[name] for name in sorted(rows))
    return text.getvalue()


def record_results(output: str | Path, *, rows: Sequence[dict], failures: Iterable[tuple[str | Path, str]],
                   handled: Iterable[str], files=LocalFiles) -> None:
    """Write what both engines write in `output` after their photographs, by one rule.

    ``measures.csv``: the `rows` (`PhotographWork.row`) merged into the rows it holds
    (`keras_vessel.measure.files.merge_rows`: one per photograph, sorted by name), written when there
    are any. `FAILURES_CSV`: `failures_text` of the run's `failures` and the photographs it `handled`,
    removed when no row is left. Each file is written (atomically on a local disk, through `files`) only
    when its text changes, so that a re-run with nothing to do rewrites nothing.
    """
    from keras_vessel.measure.files import MEASURES_CSV, measures_text, merge_rows

    output = str(output)
    if rows:
        path = files.join(output, MEASURES_CSV)
        previous = files.read_text(path)
        _update(files, path, previous, measures_text(merge_rows(None, rows, text=previous)))
    path = files.join(output, FAILURES_CSV)
    previous = files.read_text(path)
    _update(files, path, previous, failures_text(previous, failures, handled))


def _update(files, path: str, previous: str | None, text: str | None) -> None:
    """Make the file at `path` (now `previous`; None: absent) hold `text`; None removes it."""
    if text == previous:
        return
    if text is None:
        files.remove(path)
    else:
        files.write_text(path, text)


def prediction_settings(work: PhotographWork, model_path: str | Path | None = None, *,
                        predictor_name: str | None = None, files=LocalFiles) -> dict:
    """What makes a photograph's files, as `claim_output` records and compares it (keys: `SETTINGS`).

    The model by its file's SHA-256 (its path is informative: the same file elsewhere is the same model), or
    the predictor by `predictor_name` (say which server and model; by default the callable's name); the
    heads, tiling, TTA and scale of a local model (``"multi"`` as `keras_vessel.data.scaling.scale_record`,
    with its multiples: other multiples are another scale); the FOV rule, a FOV file by its SHA-256; the threshold's
    value (a number, also when read from threshold.json, or ``"otsu"``). Not settings: ``overlay`` and
    ``measure`` add files without changing the others (a re-run that asks for them writes them for each
    photograph that lacks them).
    """
    if model_path is not None:
        model = {"path": str(model_path), "sha256": files.sha256(str(model_path))}
    else:
        model = {"predictor": predictor_name or "unnamed"}
    from keras_vessel.data.scaling import scale_record

    fov = work.fov if isinstance(work.fov, str) else {"path": str(work.fov), "sha256": LocalFiles.sha256(work.fov)}
    # single scales as recorded before; fused ones with their multiples (and the FOV from which "adaptive" fuses)
    scale = scale_record(work.scale) if work.scale in ("multi", "adaptive") else work.scale
    return {"model": model, "heads": work.heads, "tile_size": work.tile_size, "tta": work.tta,
            "scale": scale, "fov": fov, "threshold": work.threshold}


def claim_output(output: str | Path, settings: dict, *, overwrite: bool = False, stems: Iterable[str] = (),
                 files=LocalFiles) -> None:
    """Check that `output` holds no predictions of other settings, then record `settings` in it.

    Both engines call it before their first photograph, `settings` from `prediction_settings`, `stems` the
    names of the photographs asked (`output_stems`). The folder's marker (`OUTPUT_MARKER`, written
    atomically) keeps them, so that a re-run into the same folder resumes (both engines skip the
    photographs done: `DoneCheck`) only with the same settings; with another model, threshold, scale, ...
    it raises `OutputError` (a ValueError) naming the first that differs (`SETTINGS`) and what to do, unless
    no photograph was predicted with the recorded ones (every one failed, e.g. on a ``--fov`` file of
    another size): then the folder is taken as with `overwrite`.
    Outputs of a keras-vessel predict that recorded no settings (before it did so; `own_outputs` finds them)
    are refused too: what made them cannot be known, and resuming would keep them silently.

    `overwrite` (``--overwrite``) replaces the folder's predictions instead, whatever their settings: removed
    are every output the folder records as predict's (each photograph with a marker, `photograph_marker`,
    and its files of predict's naming; the files an older keras-vessel's `OUTPUT_MARKER` lists), the
    markers, measures.csv and `FAILURES_CSV`, and every file of predict's naming of the photographs asked
    (``NAME_prob.png``, ``NAME_mask.png``, ``NAME_overlay.png``: also those of a run killed before their
    marker, or of outputs the run does not ask for), so that none of them is left beside the new ones,
    even for a photograph that fails now; then `settings` are recorded, last (a run stopped on the way
    still holds the old ones). Other files are never removed, the user's among them; outputs of photographs
    not asked that nothing records (of a photograph whose run was killed before its marker) are left as
    well, and are never taken as done (`DoneCheck` asks for the marker): predicting them replaces them
    (`write_photograph`).
    """
    from keras_vessel.measure.files import MEASURES_CSV

    output = str(output)
    marker_path = files.join(output, OUTPUT_MARKER)
    previous = files.read_text(marker_path)
    recorded = _read_marker(previous).get("settings")
    again = (f"to keep them, give another --output; to replace them by predictions with these settings, add "
             "--overwrite")
    if not overwrite and isinstance(recorded, dict):
        for key, option in SETTINGS.items():
            old, new = recorded.get(key), json.loads(json.dumps(settings[key]))
            if _identity(old) == _identity(new):
                continue
            if _marked_stems(_listed(output, files)) or own_outputs(output, files=files):
                raise OutputError(f"{output} holds predictions made with another {option} ({_shown(old)}; now "
                                  f"{_shown(new)}); {again}")
            overwrite = True  # no photograph predicted with those settings (all failed): replace their record
            break
        else:
            return
    if not overwrite:
        held = sorted(own_outputs(output, files=files))
        if held:
            raise OutputError(f"{output} holds outputs of keras-vessel predict ({', '.join(held[:3])}"
                              f"{', ...' if len(held) > 3 else ''}) that do not record the settings that made them; "
                              f"{again}")
    else:
        names = _listed(output, files)
        asked = {f"{stem}{suffix}" for stem in stems for suffix in OUTPUT_SUFFIXES}
        markers = {photograph_marker(stem) for stem in _marked_stems(names)}
        stale = ((_recorded_outputs(previous, names) | asked | markers) & names) | {MEASURES_CSV, FAILURES_CSV}
        for name in sorted(stale):
            files.remove(files.join(output, name))
    from keras_vessel.provenance import own_version

    record = {"written_by": "keras-vessel predict", "keras_vessel": own_version(), "settings": settings}
    files.write_text(marker_path, json.dumps(record, indent=2) + "\n")


def _identity(value):
    """What is compared of a setting: a file by its SHA-256, anything else as it is."""
    return value.get("sha256", value) if isinstance(value, dict) else value


def _shown(value) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value.get('path')}, SHA-256 {str(value['sha256'])[:12]}..."
    if isinstance(value, dict) and set(value) == {"auto", "multi"}:  # a threshold per mode (--scale adaptive)
        return ", ".join(f"{mode} {threshold:.6g}" if isinstance(threshold, float) else f"{mode} {threshold}"
                         for mode, threshold in value.items())
    if isinstance(value, dict):
        return ", ".join(str(v) for v in value.values())
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class DoneCheck:
    """Whether a photograph is done in an output folder: the one rule by which both engines skip the
    photographs of a run into a folder that holds them already (with the same settings: `claim_output`).

    A photograph ``STEM`` is done when its marker (`photograph_marker`, which `write_photograph` writes
    after its files) lists each file `PhotographWork` writes of it (``STEM_prob.png``, ``STEM_mask.png``,
    and ``STEM_overlay.png`` with ``overlay``: `PhotographWork.output_suffixes`) and each is in `output`
    (written atomically, so a file there is complete) and, with ``measure``, when ``measures.csv`` has a
    row named ``STEM`` (both engines write it after their photographs: those of a run stopped before that
    are done again, so that no row is missing). Files without a marker (a run killed before it, or a
    keras-vessel before the photographs' markers) are not done, nor is a marker without its files. With
    ``overwrite`` none is done. Made by `DoneCheck.of`; calling it with a ``STEM`` looks at the folder
    through `files`; it pickles, so that the Beam engine checks on its workers.
    """

    output: str
    suffixes: tuple[str, ...]
    measured: frozenset[str] | None  # the names of measures.csv's rows; None: not measured
    files: type = LocalFiles
    overwrite: bool = False

    @classmethod
    def of(cls, output: str | Path, work: PhotographWork, *, overwrite: bool = False, files=LocalFiles) -> DoneCheck:
        """The check of `work`'s photographs in `output`, after `claim_output` (measures.csv is read now)."""
        from keras_vessel.measure.files import MEASURES_CSV, read_rows

        output = str(output)
        measured = None
        if work.measure:
            measured = frozenset(row["name"] for row in read_rows(files.read_text(files.join(output, MEASURES_CSV))))
        return cls(output, work.output_suffixes, measured, files, overwrite)

    def __call__(self, stem: str) -> bool:
        if self.overwrite or (self.measured is not None and stem not in self.measured):
            return False
        listed = _listed_files(self.files.read_text(self.files.join(self.output, photograph_marker(stem))))
        names = [f"{stem}{suffix}" for suffix in self.suffixes]
        return all(name in listed for name in names) and all(
            self.files.exists(self.files.join(self.output, name)) for name in names)


def output_stems(paths: Sequence[str | Path], output_dir: str | Path, *, files=LocalFiles) -> list[str]:
    """The ``NAME`` of each input's ``NAME_prob.png``: its file name without image and ``.gz`` suffixes.

    Raises `OutputClashError` naming both inputs when two would write the same files (``a/img.tif`` and
    ``b/img.tif``, or ``a.png`` and ``a.jpg``): renaming one silently would lose which is which; and
    when an input is in `output_dir` under the name of another's output (``eye_overlay.png`` beside
    ``eye.png``), which predicting that one would replace or remove (`write_photograph`, `claim_output`).
    `files` splits the paths into folder and name (`LocalFiles`; the Beam engine's for gs:// and s3://).
    """
    stems: dict[str, Path] = {}
    for path in paths:
        stem = photograph_name(path)
        if stem in stems:
            raise OutputClashError(
                f"inputs {stems[stem]} and {path} would both be written as {stem}_prob.png and {stem}_mask.png "
                f"in {output_dir}; rename one of them, or predict them into separate output folders")
        stems[stem] = path
    outputs = {f"{stem}{suffix}": (stem, kind) for stem in stems for suffix, kind in zip(OUTPUT_SUFFIXES, _KINDS)}
    folder = _resolved(str(output_dir))
    for path in paths:
        where, name = files.split(str(path))
        if name in outputs and _resolved(where) == folder:
            stem, kind = outputs[name]
            raise OutputClashError(
                f"input {path} has the name of the {kind} of input {stems[stem]} in the output folder {output_dir}, "
                "which predicting it would replace or remove; move or rename it, or give another output folder")
    return list(stems)


_KINDS = ("probability map", "mask", "overlay")  # what each of `OUTPUT_SUFFIXES` names


def _resolved(folder: str) -> str:
    """A folder as compared: resolved on a local disk, as given (without a trailing ``/``) for gs:// and s3://."""
    return folder.rstrip("/") if "://" in folder else os.path.realpath(folder or ".")


def photograph_name(path: str | Path) -> str:
    """The ``NAME`` of a photograph's outputs (``NAME_prob.png``, its row of measures.csv and of `FAILURES_CSV`):
    its file name without image and ``.gz`` suffixes (``a/im0001.ppm.gz`` -> ``im0001``; gs:// paths too)."""
    name = str(path).rsplit("/", 1)[-1]  # a Path's name, or a gs:// path's
    return Path(name[:-3] if name.lower().endswith(".gz") else name).stem


def _check_fov(fov: str | Path) -> str | Path:
    if isinstance(fov, str) and fov.strip().lower() in ("auto", "none"):
        return fov.strip().lower()
    if not isinstance(fov, (str, Path)):
        raise TypeError(f"`fov` must be 'auto', 'none' or a mask file path; got {fov!r} ({type(fov).__name__}).")
    path = Path(fov)
    if not path.is_file():
        raise FileNotFoundError(f"`fov` must be 'auto', 'none' or an existing mask file; {path} does not exist.")
    return path


def _probability(predictor: Predictor, image: np.ndarray, *, trusted: bool = False) -> np.ndarray:
    """Call the predictor and check its answer, so a bad one fails this file, not the PNG writer.

    The predictor gets a copy of the image (it may write into it), or a read-only view when it is
    `trusted` (the local model: a 100 MP photograph is 300 MB); the answer is clipped to [0, 1] in
    place when it is a writeable float32 array already.
    """
    if trusted:
        view = image.view()
        view.flags.writeable = False
    prob = np.asarray(predictor(view if trusted else image.copy()))
    if prob.shape != image.shape[:2]:
        raise ValueError(
            f"the predictor must return an (H, W) probability map of the image's size {image.shape[:2]}; "
            f"got shape {prob.shape}"
        )
    if not np.issubdtype(prob.dtype, np.number) or not (np.isfinite(prob.min()) and np.isfinite(prob.max())):
        raise ValueError(f"the predictor returned non-finite or non-numeric values (dtype {prob.dtype})")
    if prob.dtype != np.float32 or not prob.flags.writeable:
        prob = prob.astype(np.float32)
    return np.clip(prob, 0.0, 1.0, out=prob)


def predict_files(
    model_path: str | Path | None,
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    fov: str | Path = "auto",
    threshold: float | str = 0.5,
    heads: str = "mean",
    tile_size: int | None = None,
    tta: str = "none",
    scale: str | float = "auto",
    progress: bool = True,
    predictor: Predictor | None = None,
    overlay: bool = False,
    measure: bool = False,
    overwrite: bool = False,
    predictor_name: str | None = None,
) -> PredictReport:
    """Write ``NAME_prob.png`` and ``NAME_mask.png`` into `output_dir` for every input image.

    Parameters
    ----------
    model_path : a keras-vessel ``.keras`` training model, or None when `predictor` is given.
    inputs : image files (see `expand_inputs` for globs and folders).
    output_dir : created if missing; existing files of the same name are replaced, and a photograph's files
        of predict's naming that the run does not write are removed (`write_photograph`).
    fov : ``"auto"`` finds the field of view in each image
        (`keras_vessel.data.scaling.image_fov`, grown by a few pixels so the rim
        keeps its vessels; the whole image when none is found), ``"none"``
        uses the whole image, or a mask file of every image's size. Outside
        it the probability is 0 and the mask is off.
    threshold : a number in (0, 1) or ``"otsu"`` (per image, inside the FOV);
        the mask is ``probability >= threshold``. With ``scale="adaptive"``, also
        ``{"auto": t, "multi": t}``: each photograph masked at the one of the
        resolutions it ran at (`check_mask_threshold`).
    heads : head fusion of the local model (``"mean"``, ``"segment"``, ``"pixel"``).
    tile_size : force tiled local prediction with tiles of this size.
    tta : test-time augmentation of the local model (`keras_vessel.models.inference.TTA_MODES`).
    scale : the local model's resampling (`keras_vessel.models.inference.predict_probability`):
        ``"auto"``, ``"multi"`` (the mean over several working diameters; refused before any image for a
        model that records no training diameter), ``"adaptive"`` (``"multi"`` for the photographs whose field
        of view is at least `keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` px across, ``"auto"`` for the
        others), a field-of-view diameter such as ``"1080px"``,
        ``"none"`` or a factor. A served model does its own. The mask is ``probability >= threshold``
        whatever the scale (with a threshold per mode, the one of the mode the photograph ran at).
    progress : draw a progress bar on stderr.
    predictor : instead of `model_path`, a callable taking an ``(H, W, 3)``
        uint8 RGB image and returning its ``(H, W)`` probability in [0, 1].
    overlay : also write ``NAME_overlay.png``, the photograph with the mask painted on it
        (`vessel_overlay`), to check the maps by eye.
    measure : also write one row per image to ``measures.csv`` in `output_dir`: the vessel measurements
        of its mask inside its FOV (`keras_vessel.measure.measure_row`; the FOV found in the image, the
        `fov` file, or the whole image). Rows of other images already in that file are kept; rows are
        sorted by name (`record_results`, as the Beam engine writes it).
    overwrite : replace the predictions in `output_dir`, of whatever settings, instead of refusing other
        settings (`claim_output`: what it removes, what it never does), and predict every input again (else
        those done already are skipped: `DoneCheck`).
    predictor_name : what `predictor` is (e.g. the server and model), recorded and compared by `claim_output`.

    Returns a `PredictReport`. Model and argument errors, two inputs that would write the same
    files (`output_stems`), and an `output_dir` another process is writing (`keras_vessel.locks.folder_lock`:
    FolderLockedError naming it; `measures.csv` and `FAILURES_CSV` have one writer) raise before any file is
    written; per-file errors (unreadable image, FOV of
    another size, a failing predictor) are recorded in ``report.failures``, logged and written with
    their reasons to `FAILURES_CSV` in `output_dir` (`record_results`, as the Beam engine does), but a
    predictor raising ConnectionError (its server cannot be reached:
    `keras_vessel.serving.client.ServerUnreachable`) stops the batch with a ConnectionError, and a full
    disk, quota or read-only file system with its OSError. An `output_dir` holding outputs of other
    settings (`prediction_settings`) is refused with OutputError before any image (`claim_output`), unless
    `overwrite`; with the same, the inputs it holds done already (`DoneCheck`, the Beam engine's rule) are
    skipped (``report.skipped``; their files and rows are left as they are), so that a run stopped half-way
    is finished by running it again. Each photograph's files are written, then its marker
    (`write_photograph`, as the Beam engine writes them), so that a run killed at any point is finished
    alike by either engine; Ctrl-C and SIGTERM act between photographs (a KeyboardInterrupt once the
    current one is written; a second one at once). An
    image without a detectable field of view is predicted whole, at its own
    scale, with a warning naming it.
    """
    from keras_vessel.data.preprocessing import read_image
    from keras_vessel.progress import progress as progress_bar

    if (model_path is None) == (predictor is None):
        raise ValueError(
            "give exactly one of `model_path` (a local .keras model) and `predictor` (a callable); "
            f"got model_path={model_path!r}, predictor={predictor!r}."
        )
    if predictor is not None and not callable(predictor):
        raise TypeError(f"`predictor` must be callable (image -> probability); got {type(predictor).__name__}.")
    if isinstance(inputs, (str, Path)) or not isinstance(inputs, Sequence):
        raise TypeError(f"`inputs` must be a sequence of image paths; got {inputs!r}.")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("`inputs` is empty; expected at least one image path.")
    stems = output_stems(paths, output_dir)
    work = PhotographWork(fov=fov, threshold=threshold, heads=heads, tile_size=tile_size, tta=tta, scale=scale,
                          overlay=overlay, measure=measure, local_model=predictor is None)
    model = work.load_model(model_path) if predictor is None else None
    if predictor is not None and predictor_name is None:
        predictor_name = getattr(predictor, "__qualname__", type(predictor).__qualname__)
    settings = prediction_settings(work, model_path, predictor_name=predictor_name)

    new = not Path(output_dir).exists()
    # one process writes it (its rows and markers); the lock removes the folders it created if left empty,
    # so a run stopped before writing anything leaves no empty folder
    with folder_lock(output_dir, what="the output folder") as output_dir:
        claim_output(output_dir, settings, overwrite=overwrite, stems=stems)
        done = DoneCheck.of(output_dir, work, overwrite=overwrite)
        report = PredictReport()
        rows: list[dict] = []
        handled: list[str] = []  # the photographs done, skipped or failed (`record_results`)
        stopped = True
        try:
            for index, (path, stem) in enumerate(progress_bar(list(zip(paths, stems)), label="predict",
                                                              enabled=progress)):
                if done(stem):
                    report.skipped.append(path)
                    handled.append(stem)
                    continue
                # Ctrl-C acts between photographs, not inside the model's (TensorFlow's) Python code
                with deferred_signals("stopping after this photograph"):
                    try:
                        image = read_image(path)
                        located = work.locate(path, image)
                        notes = work.notes(located, model)
                        if notes.wide_fov:
                            report.wide_fov.append(path)
                        if notes.low_resolution:
                            log.warning("%s: %s", path, notes.low_resolution)
                            report.low_resolution.append(path)
                        maps = work.finish(image, work.probability(image, located, model=model,
                                                                   predictor=predictor), located, notes.mode)
                        written = [Path(p) for p in write_photograph(output_dir, stem, maps)]
                        report.written += written
                        if measure:
                            rows.append(work.row(stem, written[1], maps, located))
                    except ConnectionError as error:  # the predictor's server is gone: so would every later one be
                        stop = f"stopped at image {index + 1} of {len(paths)}, {path}"
                        raise ConnectionError(f"{error} ({stop})") from error
                    except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                        if stops_the_batch(error):
                            raise
                        report.fail(path, failure_reason(path, error))
                    handled.append(stem)
            stopped = False
        finally:
            with contextlib.suppress(*((OSError,) if stopped else ())):  # not instead of why it stopped
                if stopped and new and not report.written:  # the marker alone: no folder left (folder_lock)
                    (output_dir / OUTPUT_MARKER).unlink(missing_ok=True)
                else:
                    record_results(output_dir, rows=rows, failures=report.failures, handled=handled)
        return report


def stops_the_batch(error: BaseException) -> bool:
    """Whether `error`, met on one photograph, would stop every later one too (a full disk, a quota, a
    read-only file system), so that the batch stops rather than failing each photograph."""
    return isinstance(error, OSError) and getattr(error, "errno", None) in _STOPS_THE_BATCH


def failure_reason(path: str | Path, error: BaseException) -> str:
    """One sentence naming `path` and why it failed: the message of a ValueError (`DatasetError`) or
    OSError, ``unexpected TYPE: message`` for anything else."""
    reason = str(error) if isinstance(error, (ValueError, OSError)) else f"unexpected {type(error).__name__}: {error}"
    return reason if str(path) in reason else f"{path}: {reason}"


@dataclass
class Located:
    """Where one photograph's vessels are looked for: ``region`` (H, W) bool, where the probability is
    kept; ``fov`` (H, W) bool, where it is measured, and ``how`` it was obtained (the ``fov`` column of
    measures.csv); ``geometry``, the photograph's `keras_vessel.data.scaling.FovGeometry` when it was
    measured (for ``fov="auto"`` and for the scales that resample by it: "auto", "multi", "Npx")."""

    region: np.ndarray
    fov: np.ndarray
    how: str
    geometry: object | None = None


class ScaleNotes(NamedTuple):
    """How one photograph runs for the model and what `predict` notes about its size (`PhotographWork.notes`):
    ``mode``, the threshold scale it runs at (``"multi"`` at fused resolutions, else ``"auto"``;
    `keras_vessel.models.inference.ScaleChoice.mode`), ``wide_fov`` and ``low_resolution``."""

    mode: str
    wide_fov: bool
    low_resolution: str | None


@dataclass
class Maps:
    """One photograph's outputs: ``prob`` (H, W) float32 (0 outside its region), ``mask`` (H, W) bool and,
    when asked for, ``overlay`` (H, W, 3) uint8."""

    prob: np.ndarray
    mask: np.ndarray
    overlay: np.ndarray | None = None


class PhotographWork:
    """The per-photograph work of `predict_files`, in the steps that both engines run, local and Beam
    (`keras_vessel.serving.beam`): `locate` (FOV and prediction region), `probability` (the model, at
    the photograph's scale), `finish` (threshold, mask, overlay), `row` (measurements); `output_pixels`
    are the files' pixels. Arguments are checked by `predict_files` / the Beam engine before it is made;
    it holds no model (`load_model` loads one), so it pickles to Beam's workers."""

    def __init__(self, *, fov: str | Path = "auto", threshold: float | str | Mapping[str, float | str] = 0.5,
                 heads: str = "mean", tile_size: int | None = None, tta: str = "none", scale: str | float = "auto",
                 overlay: bool = False, measure: bool = False, local_model: bool = True) -> None:
        from keras_vessel.data.preprocessing import read_mask
        from keras_vessel.data.scaling import check_scale

        threshold = check_mask_threshold(threshold)
        if heads not in FUSIONS:
            raise ValueError(f"`heads` must be one of {list(FUSIONS)}; got {heads!r}.")
        check_tile_size(tile_size)
        check_tta(tta)
        scale = check_scale(scale)
        if not local_model and (heads != "mean" or tile_size is not None or tta != "none" or scale != "auto"):
            raise ValueError(
                f"`heads`, `tile_size`, `tta` and `scale` configure the local model; with `predictor` leave them "
                f"at their defaults; got heads={heads!r}, tile_size={tile_size!r}, tta={tta!r}, scale={scale!r}."
            )
        self.fov = _check_fov(fov)
        self.fixed_fov = read_mask(self.fov) if isinstance(self.fov, Path) else None
        self.threshold, self.heads, self.tile_size, self.tta = threshold, heads, tile_size, tta
        self.scale, self.overlay, self.measure, self.local_model = scale, overlay, measure, local_model
        self.thresholds = dict(threshold) if isinstance(threshold, dict) else {"auto": threshold, "multi": threshold}

    def load_model(self, model_path: str | Path):
        """The inference model (`keras_vessel.models.inference.load_inference_model`) with these heads; a
        ValueError naming `model_path` when it cannot run at this scale (``"multi"`` with a model that records
        no training diameter: `keras_vessel.models.inference.model_working_diameters`)."""
        from keras_vessel.models.inference import load_inference_model, model_working_diameters

        model = load_inference_model(model_path, heads=self.heads)
        model_working_diameters(model, self.scale, name=str(model_path))
        return model

    def locate(self, path: str | Path, image: np.ndarray) -> Located:
        """The photograph's region, FOV and geometry (a DatasetError naming it for a FOV file of another size)."""
        from keras_vessel.data.scaling import image_fov, image_region, resamples_by_fov

        measured = self.fov == "auto" or (self.local_model and resamples_by_fov(self.scale))
        geometry = image_fov(image) if measured else None
        if geometry is not None and not geometry.found:
            log.warning("%s: no field of view found (not a fundus photograph with a dark surround?); "
                        "predicting the whole image at its own scale", path)
        if self.fixed_fov is not None:
            self.check_fov_size(path, image.shape[:2])
            return Located(self.fixed_fov, self.fixed_fov, str(self.fov), geometry)
        if self.fov == "auto":
            region = image_region(geometry.mask, geometry.found)
            fov_mask, how = (geometry.mask, f"found in {path}") if geometry.found else (region, "whole image")
            return Located(region, fov_mask, how, geometry)
        region = np.ones(image.shape[:2], dtype=bool)
        return Located(region, region, "whole image", geometry)

    def check_fov_size(self, path: str | Path, shape: tuple[int, int]) -> None:
        """A DatasetError naming both files when a ``--fov`` mask file is given and the photograph at `path`,
        ``(height, width)`` = `shape`, is of another size."""
        from keras_vessel.errors import DatasetError

        if self.fixed_fov is not None and self.fixed_fov.shape != tuple(shape):
            raise DatasetError(
                f"FOV mask {self.fov} is {self.fixed_fov.shape[1]}x{self.fixed_fov.shape[0]} (WxH) but image {path} "
                f"is {shape[1]}x{shape[0]}: a --fov file must have the size of every photograph; predict photographs "
                "of other sizes apart, or with --fov auto"
            )

    def notes(self, located: Located, model) -> ScaleNotes:
        """How this photograph runs for the local `model` (None: a predictor, a server, runs at its own settings:
        ``"auto"``, nothing to note) and what `predict` notes about its size, from its field of view found and the
        model's training FOV diameter (a model recording none: nothing):

        ``mode``: ``"multi"`` at ``scale="multi"``, and at ``scale="adaptive"`` when
        `keras_vessel.data.scaling.adaptive_mode` says so (as `keras_vessel.models.inference.inference_scale`
        decides), else ``"auto"``: which of the thresholds masks it.
        ``wide_fov``: ``scale="adaptive"`` is advised, the photograph runs at ``scale="auto"`` and its field of
        view is at least `keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` px across.
        ``low_resolution``: why it is too small for the model (one sentence without its name), or None: its field
        of view is narrower than `LOW_RESOLUTION_FOV_FRACTION` of the model's training FOV, at any scale (the
        photograph lacks the pixels, however it is resampled).
        """
        from keras_vessel.data import scaling
        from keras_vessel.models import model_fov_diameter

        geometry = located.geometry
        found = geometry.diameter if geometry is not None and geometry.found else None
        trained = None if model is None else model_fov_diameter(model)
        mode = ("multi" if self.scale == "multi" and model is not None
                else scaling.adaptive_mode(found, trained) if self.scale == "adaptive" else "auto")
        if trained is None or found is None:
            return ScaleNotes(mode, False, None)
        wide = self.scale == "auto" and found >= scaling.MULTI_SCALE_FROM_FOV
        if found >= LOW_RESOLUTION_FOV_FRACTION * trained:
            return ScaleNotes(mode, wide, None)
        unscaled = (f" (predicted at its own size: --scale auto does not enlarge more than {scaling.MAX_FACTOR:g}x)"
                    if self.scale in ("auto", "adaptive") and trained / found > scaling.MAX_FACTOR else "")
        return ScaleNotes(mode, wide, f"low resolution: its field of view is {found:.0f} px across, under "
                                      f"{LOW_RESOLUTION_FOV_FRACTION:.0%} of the {trained:.0f} px the model was "
                                      f"trained at, so its thin vessels are missed{unscaled}; use the photograph at "
                                      "its full resolution if you have it")

    def probability(self, image: np.ndarray, located: Located, *, model=None,
                    predictor: Predictor | None = None) -> np.ndarray:
        """The photograph's probability by the local `model` (resampled to its training scale, tiled,
        test-time augmented as configured) or by `predictor`, checked and clipped to [0, 1]."""
        from keras_vessel.models.inference import inference_scale, predict_probability

        if model is None:
            return _probability(predictor, image)
        choice = inference_scale(model, image, self.scale, fov=located.geometry)  # the FOV `locate` measured
        return _probability(lambda rgb: predict_probability(model, rgb, tile_size=self.tile_size, tta=self.tta,
                                                            scale=choice), image, trusted=True)

    def finish(self, image: np.ndarray, prob: np.ndarray, located: Located, mode: str = "auto") -> Maps:
        """Zero the probability outside the region (in place), threshold it inside at the threshold of the
        `mode` it ran at (`notes`), paint the overlay."""
        from keras_vessel.evaluation import metrics

        prob = np.multiply(prob, located.region, out=prob)
        threshold = self.thresholds[mode]
        value = metrics.otsu_threshold(prob, located.region) if threshold == "otsu" else threshold
        mask = np.greater_equal(prob, value)
        mask &= located.region
        return Maps(prob, mask, vessel_overlay(image, mask) if self.overlay else None)

    def row(self, stem: str, mask_path: str | Path, maps: Maps, located: Located) -> dict:
        """The photograph's row of measures.csv (`keras_vessel.measure.measure_row`): its mask in its FOV."""
        from keras_vessel.measure.files import measure_row

        return measure_row(stem, mask_path, maps.mask, located.fov, fov_text=located.how)

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        """How the names of the files `output_pixels` makes of each photograph end: `OUTPUT_SUFFIXES`, without
        ``_overlay.png`` unless `overlay`."""
        return OUTPUT_SUFFIXES if self.overlay else OUTPUT_SUFFIXES[:2]

    @staticmethod
    def output_pixels(stem: str, maps: Maps) -> list[tuple[str, np.ndarray]]:
        """``(file name, pixels)`` of ``STEM_prob.png`` (16-bit), ``STEM_mask.png`` (0/255) and, with an
        overlay, ``STEM_overlay.png``, in that order."""
        outputs = [(f"{stem}_prob.png", _as_uint16(maps.prob)),
                   (f"{stem}_mask.png", np.ascontiguousarray(maps.mask, dtype=bool).view(np.uint8) * np.uint8(255))]
        if maps.overlay is not None:
            outputs.append((f"{stem}_overlay.png", maps.overlay))
        return outputs


def check_mask_threshold(threshold: float | str | Mapping[str, float | str]) -> float | str | dict[str, float | str]:
    """`keras_vessel.evaluation.parse_threshold` of a mask threshold, or of each value of a per-mode one
    (``{"auto": t, "multi": t}``, exactly those keys: ``scale="adaptive"``), else a ValueError."""
    from keras_vessel.evaluation import THRESHOLD_SCALES, parse_threshold

    if not isinstance(threshold, Mapping):
        return parse_threshold(threshold)
    if set(threshold) != set(THRESHOLD_SCALES):
        raise ValueError(f"a threshold per mode must give exactly {list(THRESHOLD_SCALES)}; got {dict(threshold)!r}.")
    return {mode: parse_threshold(threshold[mode]) for mode in THRESHOLD_SCALES}


def vessel_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photograph with its vessel mask painted on: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` bool in,
    ``(H, W, 3)`` uint8 out; vessel pixels are blended `OVERLAY_OPACITY` of the way to `OVERLAY_COLOUR`,
    the others are the photograph's."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    out = np.array(image, dtype=np.uint8)
    vessels = out[mask].astype(np.float32)  # only the vessel pixels in float: not a float copy of the photograph
    vessels += OVERLAY_OPACITY * (np.asarray(OVERLAY_COLOUR, np.float32) - vessels)
    out[mask] = np.clip(np.rint(vessels), 0, 255).astype(np.uint8)
    return out


def _as_uint16(prob: np.ndarray) -> np.ndarray:
    """``round(prob * 65535)`` as uint16, converted in strips of rows (no full-size float temporaries)."""
    out = np.empty(prob.shape, dtype=np.uint16)
    rows = max(1, (1 << 22) // max(prob.shape[1], 1))
    for start in range(0, prob.shape[0], rows):
        out[start : start + rows] = np.rint(prob[start : start + rows] * np.float32(65535))
    return out
