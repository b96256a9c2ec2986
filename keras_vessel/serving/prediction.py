"""Predict vessel probability maps and masks for a batch of image files.

`predict_files` is what `keras-vessel predict` and the demo run: for each input
it writes ``NAME_prob.png`` (16-bit grey, probability x 65535) and
``NAME_mask.png`` (0/255) atomically, and carries on past files it cannot
read, so one corrupt image does not cost the rest of a large batch. The
network is either a local `.keras` model or any callable mapping an RGB image
to its ``(H, W)`` probability (``predictor=``), e.g.
`keras_vessel.serving.client.ServingClient.predict`, so a TF Serving server
produces the same files as local prediction.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_vessel.models.inference import check_tile_size, check_tta
from keras_vessel.checks import FUSIONS
from keras_vessel.data.preprocessing import IMAGE_SUFFIXES
from keras_vessel.io import ensure_writable_dir, removed_if_failed, write_json_atomic, write_png_atomic

__all__ = ["OUTPUT_MARKER", "OUTPUT_SUFFIXES", "OVERLAY_COLOUR", "InputError", "PredictReport", "expand_inputs",
           "output_stems", "own_outputs", "predict_files", "vessel_overlay"]

# What `predict_files` writes per image, and the file in its output folder that lists them (`own_outputs`).
OUTPUT_SUFFIXES = ("_prob.png", "_mask.png", "_overlay.png")
OUTPUT_MARKER = ".keras-vessel-predict"
# Errors writing an image's outputs that every later image would meet too: they stop the batch.
_STOPS_THE_BATCH = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# What `vessel_overlay` paints vessels with (RGB), and how much of it: cyan shows on the red-orange fundus.
OVERLAY_COLOUR = (0, 255, 255)
OVERLAY_OPACITY = 0.6

log = logging.getLogger(__name__)


Predictor = Callable[[np.ndarray], np.ndarray]


class InputError(ValueError):
    """An input argument (file, glob or folder) names no usable image; the message says which."""


@dataclass
class PredictReport:
    """What `predict_files` did.

    written : output files, in input order (``NAME_prob.png``, ``NAME_mask.png`` per image).
    failures : ``(input path, reason)`` for every input that produced no output; the reason is one
        sentence that names the file.
    """

    written: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)

    def fail(self, path: Path, reason: str) -> None:
        """Record (and log, once) that `path` failed: `reason`, prefixed with `path` unless it names it."""
        self.failures.append((path, reason if str(path) in reason else f"{path}: {reason}"))
        log.warning("predict: %s", self.failures[-1][1])


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(IMAGE_SUFFIXES)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, globs expanded, folders listed (images only, sorted, not recursive).

    Duplicates are dropped, keeping the first occurrence. Files that `predict_files` wrote itself
    (`own_outputs`) are left out of folders and globs, with a warning saying how many, so that
    predicting a folder into itself twice does not predict its maps. Raises `InputError`
    (a ValueError) naming the argument when a glob matches nothing, a folder
    holds no image or a path does not exist, so typos fail before any work.
    """
    if isinstance(inputs, (str, Path)):
        raise TypeError(f"`inputs` must be a sequence of paths, not one path; got {inputs!r}.")
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text) if Path(m).is_file())
            if not matches:
                raise InputError(f"pattern {text!r} matches no file")
            found += _without_own_outputs(matches, f"pattern {text!r}")
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p))
            if not matches:
                raise InputError(f"folder {path} holds no image (looked for {', '.join(IMAGE_SUFFIXES)})")
            found += _without_own_outputs(matches, f"folder {path}")
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path} does not exist")
    return list(dict.fromkeys(found))


def own_outputs(folder: str | Path) -> set[str]:
    """Names of the files in `folder` that `predict_files` wrote: those its marker (`OUTPUT_MARKER`) lists,
    and ``NAME_prob.png``, ``NAME_mask.png``, ``NAME_overlay.png`` wherever both of the first two are
    (outputs of a keras-vessel that wrote no marker, or of a run that was stopped)."""
    folder = Path(folder)
    try:
        names = set(json.loads((folder / OUTPUT_MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        names = set()
    first, second = OUTPUT_SUFFIXES[:2]
    for prob in folder.glob(f"*{first}"):
        stem = prob.name[: -len(first)]
        if (folder / f"{stem}{second}").is_file():
            names.update(f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES)
    return names


def _without_own_outputs(paths: list[Path], where: str) -> list[Path]:
    written = {folder: own_outputs(folder) for folder in {path.parent for path in paths}}
    kept = [path for path in paths if path.name not in written[path.parent]]
    kinds = "NAME" + ", NAME".join(OUTPUT_SUFFIXES)
    if not kept:
        raise InputError(f"{where} holds only files that keras-vessel predict wrote ({kinds}); give the folder "
                         "of the photographs")
    if len(kept) < len(paths):
        log.warning("%s: skipping %d files that keras-vessel predict wrote (%s)", where, len(paths) - len(kept), kinds)
    return kept


def _mark(output_dir: Path, written: list[Path]) -> None:
    """List `written` in `output_dir`'s marker, beside what earlier runs wrote there."""
    names = sorted(own_outputs(output_dir) | {path.name for path in written})
    write_json_atomic(output_dir / OUTPUT_MARKER, {"written_by": "keras-vessel predict", "files": names})


def output_stems(paths: Sequence[Path], output_dir: str | Path) -> list[str]:
    """The ``NAME`` of each input's ``NAME_prob.png``: its file name without image and ``.gz`` suffixes.

    Raises `InputError` naming both inputs when two would write the same files (``a/img.tif`` and
    ``b/img.tif``, or ``a.png`` and ``a.jpg``): renaming one silently would lose which is which.
    """
    stems: dict[str, Path] = {}
    for path in paths:
        name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
        stem = Path(name).stem
        if stem in stems:
            raise InputError(
                f"inputs {stems[stem]} and {path} would both be written as {stem}_prob.png and {stem}_mask.png "
                f"in {output_dir}; rename one of them, or predict them into separate output folders")
        stems[stem] = path
    return list(stems)


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
) -> PredictReport:
    """Write ``NAME_prob.png`` and ``NAME_mask.png`` into `output_dir` for every input image.

    Parameters
    ----------
    model_path : a keras-vessel ``.keras`` training model, or None when `predictor` is given.
    inputs : image files (see `expand_inputs` for globs and folders).
    output_dir : created if missing; existing files of the same name are replaced.
    fov : ``"auto"`` finds the field of view in each image
        (`keras_vessel.data.scaling.image_fov`, grown by a few pixels so the rim
        keeps its vessels; the whole image when none is found), ``"none"``
        uses the whole image, or a mask file of every image's size. Outside
        it the probability is 0 and the mask is off.
    threshold : a number in (0, 1) or ``"otsu"`` (per image, inside the FOV);
        the mask is ``probability >= threshold``.
    heads : head fusion of the local model (``"mean"``, ``"segment"``, ``"pixel"``).
    tile_size : force tiled local prediction with tiles of this size.
    tta : test-time augmentation of the local model (`keras_vessel.models.inference.TTA_MODES`).
    scale : the local model's resampling (`keras_vessel.models.inference.predict_probability`):
        ``"auto"``, a field-of-view diameter such as ``"1080px"``, ``"none"`` or a factor. A served
        model does its own.
    progress : draw a progress bar on stderr.
    predictor : instead of `model_path`, a callable taking an ``(H, W, 3)``
        uint8 RGB image and returning its ``(H, W)`` probability in [0, 1].
    overlay : also write ``NAME_overlay.png``, the photograph with the mask painted on it
        (`vessel_overlay`), to check the maps by eye.
    measure : also write one row per image to ``measures.csv`` in `output_dir`: the vessel measurements
        of its mask inside its FOV (`keras_vessel.measure.measure_row`; the FOV found in the image, the
        `fov` file, or the whole image). Rows of other images already in that file are kept.

    Returns a `PredictReport`. Model and argument errors, and two inputs that would write the same
    files (`output_stems`), raise before any file is written; per-file errors (unreadable image, FOV of
    another size, a failing predictor) are recorded in ``report.failures`` and logged, but a
    predictor raising ConnectionError (its server cannot be reached:
    `keras_vessel.serving.client.ServerUnreachable`) stops the batch with a ConnectionError, and a full
    disk, quota or read-only file system with its OSError. The files
    written are listed in `OUTPUT_MARKER` in `output_dir` (`own_outputs`). An
    image without a detectable field of view is predicted whole, at its own
    scale, with a warning naming it.
    """
    from keras_vessel.evaluation import metrics
    from keras_vessel.errors import DatasetError
    from keras_vessel.evaluation import parse_threshold
    from keras_vessel.models.inference import inference_scale, load_inference_model, predict_probability
    from keras_vessel.data.preprocessing import read_image, read_mask
    from keras_vessel.progress import progress as progress_bar
    from keras_vessel.data.scaling import check_scale, image_fov, image_region, resamples_by_fov
    from keras_vessel.measure.files import MEASURES_CSV, measure_row, merge_rows, write_measures

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
    threshold = parse_threshold(threshold)
    if heads not in FUSIONS:
        raise ValueError(f"`heads` must be one of {list(FUSIONS)}; got {heads!r}.")
    check_tile_size(tile_size)
    check_tta(tta)
    scale = check_scale(scale)
    if predictor is not None and (heads != "mean" or tile_size is not None or tta != "none" or scale != "auto"):
        raise ValueError(
            f"`heads`, `tile_size`, `tta` and `scale` configure the local model; with `predictor` leave them at "
            f"their defaults; got heads={heads!r}, tile_size={tile_size!r}, tta={tta!r}, scale={scale!r}."
        )
    fov_choice = _check_fov(fov)
    fixed_fov = read_mask(fov_choice) if isinstance(fov_choice, Path) else None
    model = load_inference_model(model_path, heads=heads) if predictor is None else None

    def probability(path: Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """The image's probability (0 outside its region), the region where it is kept, and its FOV
        (to measure in) with how it was obtained."""
        needs_fov = fov_choice == "auto" or (model is not None and resamples_by_fov(scale))
        geometry = image_fov(image) if needs_fov else None
        if geometry is not None and not geometry.found:
            log.warning("%s: no field of view found (not a fundus photograph with a dark surround?); "
                        "predicting the whole image at its own scale", path)
        if fixed_fov is not None:
            if fixed_fov.shape != image.shape[:2]:
                raise DatasetError(
                    f"FOV mask {fov_choice} is {fixed_fov.shape[1]}x{fixed_fov.shape[0]} (WxH) but "
                    f"image {path} is {image.shape[1]}x{image.shape[0]}"
                )
            region, fov_mask, how = fixed_fov, fixed_fov, str(fov_choice)
        elif fov_choice == "auto":
            region = image_region(geometry.mask, geometry.found)
            fov_mask, how = (geometry.mask, f"found in {path}") if geometry.found else (region, "whole image")
        else:
            region = fov_mask = np.ones(image.shape[:2], dtype=bool)
            how = "whole image"
        run = predictor
        if model is not None:
            factor = inference_scale(model, image, scale, fov=geometry).factor
            run = lambda rgb: predict_probability(model, rgb, tile_size=tile_size, tta=tta, scale=factor)  # noqa: E731
        prob = _probability(run, image, trusted=model is not None)
        return np.multiply(prob, region, out=prob), region, fov_mask, how  # 0 outside the region

    with removed_if_failed(output_dir):  # stopped before writing anything: no empty folder left
        output_dir = ensure_writable_dir(output_dir, what="the output folder")  # before any image is predicted
        report = PredictReport()
        rows: list[dict] = []
        stopped = True
        try:
            for done, (path, stem) in enumerate(progress_bar(list(zip(paths, stems)), label="predict",
                                                             enabled=progress)):
                try:
                    image = read_image(path)
                    prob, region, fov_mask, how = probability(path, image)
                    value = metrics.otsu_threshold(prob, region) if threshold == "otsu" else threshold
                    mask = np.greater_equal(prob, value)
                    mask &= region
                    written = _write_outputs(output_dir, stem, prob, mask,
                                             vessel_overlay(image, mask) if overlay else None)
                    report.written += written
                    if measure:
                        rows.append(measure_row(stem, written[1], mask, fov_mask, fov_text=how))
                except ConnectionError as error:  # the predictor's server is gone: so would every later image be
                    stop = f"stopped at image {done + 1} of {len(paths)}, {path}"
                    raise ConnectionError(f"{error} ({stop})") from error
                except (ValueError, OSError) as error:  # DatasetError is a ValueError
                    if getattr(error, "errno", None) in _STOPS_THE_BATCH:  # so would every later image's outputs
                        raise
                    report.fail(path, str(error))
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                    report.fail(path, f"unexpected {type(error).__name__}: {error}")
            stopped = False
        finally:
            with contextlib.suppress(*((OSError,) if stopped else ())):  # not instead of why it stopped
                if report.written:  # so that predicting this folder later skips them
                    _mark(output_dir, report.written)
                if rows:
                    write_measures(output_dir / MEASURES_CSV, merge_rows(output_dir / MEASURES_CSV, rows))
        return report


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


def _write_outputs(output_dir: Path, stem: str, prob: np.ndarray, mask: np.ndarray,
                   overlay: np.ndarray | None = None) -> list[Path]:
    """``STEM_prob.png`` (16-bit), ``STEM_mask.png`` (0/255) and, if given, ``STEM_overlay.png``, each
    atomically; never some without the others."""
    outputs = [(output_dir / f"{stem}_prob.png", _as_uint16(prob)),
               (output_dir / f"{stem}_mask.png", np.ascontiguousarray(mask, dtype=bool).view(np.uint8) * np.uint8(255))]
    if overlay is not None:
        outputs.append((output_dir / f"{stem}_overlay.png", overlay))
    written: list[Path] = []
    try:
        for path, pixels in outputs:
            write_png_atomic(path, pixels)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
