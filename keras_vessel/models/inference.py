"""Whole-image and tiled prediction of a vessel probability map.

An inference model (`keras_vessel.models.build_inference_model`) takes
``(B, H, W, 3)`` float32 RGB on 0-255 with H and W multiples of its stride and
returns ``(B, H, W, 1)`` probabilities. `predict_probability` hides these
constraints: by default (``scale="auto"``) it first resamples the image so
that its field of view is as wide as the model's training images were, or
as wide as asked (``scale="1080px"``; `keras_vessel.data.scaling`; the
probability is resampled back), or does so at several widths and averages
the probabilities (``scale="multi"``: the `FUSION_MULTIPLES` of the training
width), then it pads the image to the stride with reflection (so the network
sees plausible fundus texture at the border rather than a black frame), and
when the image is too large to run in one piece (HRF is 3504x2336) it predicts
overlapping tiles and blends them with a raised-cosine window, so tile seams
do not show and peak memory stays bounded by the tile size. Optionally it
averages the predictions of flipped and rotated copies (test-time
augmentation, `TTA_MODES`).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from keras_vessel.data.scaling import (FovGeometry, adaptive_mode, check_scale, enlarge_to, image_fov, scale_factor,
                                       shrink_image, working_diameters)

__all__ = [
    "BUNDLED_MODEL",
    "ScaleChoice",
    "DEFAULT_MAX_WHOLE_PIXELS",
    "TTA_MODES",
    "as_rgb",
    "bundled_model_path",
    "check_tta",
    "inference_scale",
    "load_inference_model",
    "model_working_diameters",
    "predict_probability",
    "rgb_channels",
    "tile_starts",
]

log = logging.getLogger(__name__)

# Largest padded image (H * W) predicted in one piece. CHASE_DB1 (999x960) fits,
# HRF does not. Peak memory grows with pixels x filters, so wide models may
# want a lower value.
DEFAULT_MAX_WHOLE_PIXELS = 1024 * 1024
DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP = 128

# Test-time augmentation: the views averaged, as (quarter turns, left-right flip).
# Vessels have no preferred orientation, so each view is an equally valid
# question; averaging cancels part of the network's orientation-dependent
# errors (+0.001-0.003 validation AUC on DRIVE, docs/RESULTS.md) at 2x / 8x the time.
TTA_MODES = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "d4": tuple((turns, flip) for turns in range(4) for flip in (False, True)),
}

# The model shipped in the repository (saved_models/MODEL_CARD.md), the one `predict` uses without
# --model; it is not packaged into wheels, so it exists in a checkout or an editable install.
BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "saved_models" / "general_unet" / "model.keras"


def check_tta(tta: str) -> str:
    """`tta` if it names a `TTA_MODES` entry; else a ValueError listing them."""
    if tta not in TTA_MODES:
        raise ValueError(f"`tta` must be one of {list(TTA_MODES)}; got {tta!r}.")
    return tta


def check_tile_size(tile_size: int | None) -> int | None:
    """`tile_size` if it is None or a positive int (NumPy ints too); else a ValueError."""
    if tile_size is not None and (
        isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1
    ):
        raise ValueError(f"`tile_size` must be a positive int or None; got {tile_size!r}.")
    return tile_size


def bundled_model_path() -> Path:
    """The shipped model (`BUNDLED_MODEL`), or FileNotFoundError saying what to pass instead."""
    if not BUNDLED_MODEL.is_file():
        raise FileNotFoundError(
            f"the bundled model {BUNDLED_MODEL} is missing: it ships in the keras-vessel repository "
            f"(saved_models/{BUNDLED_MODEL.parent.name}/), not in an installed wheel; pass --model PATH to a "
            "trained .keras file"
        )
    return BUNDLED_MODEL


def load_inference_model(path: str | Path, *, heads: str = "mean"):
    """Load a `.keras` training model and wrap it into an inference model.

    Raises FileNotFoundError for a missing file and ValueError (naming the
    file) for one that is damaged, one Keras cannot load, or one that is not
    a keras-vessel training model (`keras_vessel.models.saving.load_model_file`).
    """
    from keras_vessel.models import build_inference_model
    from keras_vessel.models.saving import load_model_file

    model = load_model_file(path)
    try:
        return build_inference_model(model, heads=heads)
    except ValueError as error:
        raise ValueError(f"model {path}: {error}") from error


def as_rgb(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Return an ``(H, W, 3)`` float32 0-255 copy of a grey, grey+alpha, RGB or RGBA image.

    Grey is repeated on the three channels and alpha is dropped, so that any
    image a user hands to `predict` reaches the model in the layout it expects.
    """
    return rgb_channels(image, name=name).astype(np.float32)


def rgb_channels(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """`as_rgb` without the conversion to float32: ``(H, W, 3)`` of the image's own dtype (the image
    itself when it is RGB already), so a full-resolution uint8 photograph is not copied."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"`{name}` must be (H, W) grey or (H, W, C) with C in 1..4; got shape {image.shape}."
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"`{name}` must hold numbers; got dtype {image.dtype}.")
    channels = image.shape[-1]
    if channels in (1, 2):
        image = np.repeat(image[..., :1], 3, axis=-1)
    elif channels == 4:
        image = image[..., :3]
    return image


def _pad_to_multiple(image: np.ndarray, stride: int) -> tuple[np.ndarray, int, int]:
    h, w = image.shape[:2]
    pad_h, pad_w = (-h) % stride, (-w) % stride
    if pad_h == 0 and pad_w == 0:
        return image, h, w
    # Reflection needs the pad to be shorter than the side; tiny images fall back to edge.
    mode = "reflect" if pad_h < h and pad_w < w else "edge"
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode), h, w


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length), the last flush with the end.

    `length`, `tile` and `step` are multiples of the stride, so every tile sits
    on the same pooling grid as the whole image.
    """
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(length: int, overlap: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D blending weight of one tile side by side with its neighbours.

    Over the `overlap` pixels at a tapered end, the weight stays near 0 for the
    outer quarter (pixels too close to the tile edge, where zero padding inside
    the network distorts the output), rises as a raised cosine over the middle
    half and is 1 beyond. Ends on the image border are not tapered: no other
    tile covers them, and the whole-image prediction sees the same border.
    """
    weight = np.ones(length, dtype=np.float64)
    n = min(overlap, length // 2)
    if n > 0:
        position = (np.arange(n) + 0.5) / n  # 0..1 across the overlap
        ramp = np.clip((position - 0.25) / 0.5, 0.0, 1.0)
        rise = np.maximum(0.5 - 0.5 * np.cos(np.pi * ramp), 1e-6)
        if taper_start:
            weight[:n] = rise
        if taper_end:
            weight[length - n :] = rise[::-1]
    return weight


_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _graph(model):
    """The model as one `tf.function` traced for any image size (about 1.4x faster than eager).

    Not `model.predict`: it retraces for every new image size.
    """
    graph = _GRAPHS.get(model)
    if graph is None:
        import tensorflow as tf

        reference = weakref.ref(model)
        graph = tf.function(
            lambda images: reference()(images, training=False),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )
        _GRAPHS[model] = graph
    return graph


def _run(model, batch: np.ndarray) -> np.ndarray:
    run = _graph(model) if isinstance(model, keras.Model) else model
    out = keras.ops.convert_to_numpy(run(np.asarray(batch, dtype=np.float32)))
    if out.ndim != 4 or out.shape[:3] != batch.shape[:3] or out.shape[-1] != 1:
        raise ValueError(
            f"the model must map (B, H, W, 3) to (B, H, W, 1) probabilities; for input "
            f"{batch.shape} it returned {out.shape}. Wrap a training model with "
            f"keras_vessel.models.build_inference_model."
        )
    return out[..., 0]


def _tiles(hp: int, wp: int, tile_h: int, tile_w: int, step_h: int, step_w: int) -> Iterator[tuple[int, int]]:
    for y in tile_starts(hp, tile_h, step_h):
        for x in tile_starts(wp, tile_w, step_w):
            yield y, x


def predict_probability(
    model,
    image: np.ndarray,
    *,
    fov: np.ndarray | None = None,
    tile_size: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 2,
    stride: int | None = None,
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
    tta: str = "none",
    scale: str | float | ScaleChoice = "auto",
    name: str | None = None,
) -> np.ndarray:
    """Vessel probability of one image, ``(H, W)`` float32 in [0, 1].

    Parameters
    ----------
    model : an inference model, ``(B, H, W, 3)`` 0-255 -> ``(B, H, W, 1)`` probability.
    image : ``(H, W, 3)`` RGB (uint8 or float on 0-255); grey and RGBA are accepted.
    fov : optional ``(H, W)`` bool; the probability is set to 0 outside it.
    tile_size : force tiled prediction with square tiles of this size (rounded
        up to the stride). None predicts the whole image when its padded size
        is at most `max_whole_pixels`, else uses tiles of 512.
    overlap : pixels shared by neighbouring tiles, blended with a raised cosine.
        Keep it above the network's receptive-field radius for seamless output.
    batch_size : tiles per model call.
    stride : what H and W must be multiples of; read from the model's
        `StrideCheck` layer (`keras_vessel.models.model_stride`) when None.
    max_whole_pixels : largest padded H * W predicted in one piece.
    tta : ``"none"``, ``"flip"`` (mean with the left-right mirror, 2 passes) or
        ``"d4"`` (mean over the 8 flips and quarter turns, 8 passes).
    scale : ``"auto"`` resamples the image so that its field of view has the
        diameter the model was trained at (`inference_scale`), runs the
        network there and resamples the probability back; ``"Npx"`` (e.g.
        ``"1080px"``, N in 64-4096) does the same with a field of view N px
        across, whatever the model records; ``"multi"`` does it at each of the
        `keras_vessel.data.scaling.FUSION_MULTIPLES` of the training diameter
        (the field of view measured once; tiling and `tta` at each) and returns
        the mean of the probabilities resampled back, summed in place in one
        full-size float32 map (a ValueError for a model that records no training
        diameter: `model_working_diameters`); ``"adaptive"`` is ``"multi"`` for an
        image whose field of view is at least
        `keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV` px across, else
        ``"auto"`` (`inference_scale`); ``"none"`` runs at the image's own
        grid; a number is the resampling factor itself; a `ScaleChoice` that
        `inference_scale` made for this image is used as it is (its caller warns
        about a field of view not found).
    name : how log messages name the image (e.g. its file), when ``scale="auto"``,
        ``"multi"`` or ``"Npx"`` finds no field of view and falls back to one run
        at the image's own grid.
    """
    rgb = rgb_channels(image)  # its own dtype: a uint8 photograph is shrunk before any float32 copy
    h, w = rgb.shape[:2]
    if fov is not None:
        fov = np.asarray(fov)
        if fov.shape != (h, w):
            raise ValueError(f"`fov` must have the image's shape {(h, w)}; got {fov.shape}.")
        fov = fov.astype(bool)
    if stride is None:
        from keras_vessel.models import model_stride

        stride = model_stride(model)
    for arg, value, minimum in (
        ("stride", stride, 1),
        ("overlap", overlap, 0),
        ("batch_size", batch_size, 1),
        ("max_whole_pixels", max_whole_pixels, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"`{arg}` must be an int >= {minimum}; got {value!r}.")
    check_tile_size(tile_size)
    check_tta(tta)
    if isinstance(scale, ScaleChoice):
        choice = scale
    else:
        choice = inference_scale(model, rgb, scale)
        if choice.fov is not None and not choice.fov.found:
            log.warning("%s: no field of view found (not a fundus photograph with a dark surround?); predicting "
                        "at the image's own scale", name or "image")

    def network_at(factor: float) -> np.ndarray:
        work = rgb.astype(np.float32) if factor == 1.0 else shrink_image(rgb, factor)
        return _predict_views(model, work, tile_size=tile_size, overlap=overlap, stride=stride,
                              batch_size=batch_size, max_whole_pixels=max_whole_pixels, tta=tta)

    if len(choice.factors) == 1:
        prob = network_at(choice.factors[0])
        if prob.shape != (h, w):
            prob = enlarge_to(prob, (h, w))  # in strips of rows when enlarging: no full-size temporaries
    else:
        prob = np.zeros((h, w), dtype=np.float32)  # the one full-size map: each scale is added into it
        for factor, repeats in Counter(choice.factors).items():  # a factor met twice (clamped) runs once
            part = network_at(factor)
            for _ in range(repeats):
                if part.shape == (h, w):
                    np.add(prob, part, out=prob)
                else:
                    enlarge_to(part, (h, w), add_to=prob)
            del part
        np.multiply(prob, np.float32(1.0 / len(choice.factors)), out=prob)
    prob = np.asarray(prob, dtype=np.float32)
    np.clip(prob, 0.0, 1.0, out=prob)
    if fov is not None:
        np.multiply(prob, fov, out=prob)  # 0 outside (probabilities are >= 0 here)
    return prob


class ScaleChoice(NamedTuple):
    """How `inference_scale` decided for one image: the ``factors`` the network runs at, and what it measured.

    ``factors`` holds one factor for a single scale and one per `keras_vessel.data.scaling.FUSION_MULTIPLES`
    for ``"multi"`` (whose probabilities are averaged; one, 1, when the image's FOV is not found);
    ``factor`` is the only one. ``model_diameter`` is None for models that record no training scale;
    ``fov`` is the image's `FovGeometry` when it was measured (``"auto"``, ``"multi"``, ``"adaptive"`` or
    ``"Npx"``). ``mode`` is the threshold scale of the choice (`keras_vessel.evaluation.threshold_scale`):
    ``"multi"`` for fused resolutions (asked for, or chosen by ``"adaptive"``), else ``"auto"``.
    """

    factors: tuple[float, ...]
    model_diameter: float | None
    fov: FovGeometry | None
    mode: str = "auto"

    @property
    def factor(self) -> float:
        """The factor of a single-scale choice; a ValueError for a fused one (read ``factors``)."""
        if len(self.factors) != 1:
            raise ValueError(f"this choice runs at {len(self.factors)} factors {self.factors}; read `factors`")
        return self.factors[0]


def model_working_diameters(model, scale: str | float, *, name: str | None = None) -> tuple[float, ...] | None:
    """The field-of-view diameters in px that `model` runs images at under the `check_scale` choice `scale`
    (`keras_vessel.data.scaling.working_diameters` of the model's training diameter); None when it needs no
    field of view (``"none"``, a factor, ``"auto"`` with a model that records no training diameter).

    ``"multi"`` with a model that records no training diameter is a ValueError of one sentence naming the
    model (`name`, e.g. its file, else its Keras name): "auto" runs such a model at each photograph's own
    grid, but multiples of an unknown diameter have no meaning. Callers check it before any photograph.
    ``"adaptive"``: the diameters it may run an image at, ``"multi"``'s (which include ``"auto"``'s), or None
    for a model that records none (``"auto"`` then).
    """
    from keras_vessel.models import model_fov_diameter

    scale = check_scale(scale)
    diameter = model_fov_diameter(model) if isinstance(model, keras.Model) else None
    if scale == "adaptive":
        scale = "auto" if diameter is None else "multi"
    if scale == "multi" and diameter is None:
        shown = name if name is not None else getattr(model, "name", type(model).__name__)
        raise ValueError(f"model {shown} records no training field-of-view diameter, so `scale='multi'` has no "
                         "multiples of it to run at; pass a working diameter such as '1080px' instead, or "
                         "'auto' (which runs such a model at each photograph's own grid)")
    return None if isinstance(scale, float) else working_diameters(scale, diameter)


def inference_scale(model, image: np.ndarray, scale: str | float = "auto", *,
                    fov: FovGeometry | None = None) -> ScaleChoice:
    """The resampling factors for `image`: ``target / image FOV diameter`` (both in px), where the target
    is the model's training diameter for ``"auto"``, N for ``"Npx"`` and each multiple of the training
    diameter for ``"multi"`` (`model_working_diameters`: a ValueError for ``"multi"`` with a model that
    records none); a factor is returned as it is.

    ``"adaptive"`` is ``"multi"`` or ``"auto"`` by the image's FOV (`keras_vessel.data.scaling.adaptive_mode`),
    said by ``choice.mode``.

    One factor, 1, for ``"none"``, for ``"auto"`` with a model that records no training scale and for an
    image whose FOV is not found (with ``"multi"`` too: one run at its own grid; check ``choice.fov.found``
    to warn about it); a factor is 1 within `keras_vessel.data.scaling.SCALE_TOLERANCE` of 1 and
    outside [`MIN_FACTOR`, `MAX_FACTOR`] (0.05-8: an estimate gone wrong; `scale_factor`).
    `fov` is the image's `keras_vessel.data.scaling.image_fov`, if already measured; else it is measured
    here, once for all the factors.
    """
    from keras_vessel.models import model_fov_diameter

    scale = check_scale(scale)
    if isinstance(scale, float):
        return ScaleChoice((scale,), None, None)
    diameter = model_fov_diameter(model) if isinstance(model, keras.Model) else None
    if scale == "adaptive":
        if diameter is None:  # nothing to take multiples of: "auto", at the image's own grid
            return ScaleChoice((1.0,), None, None)
        fov = fov or image_fov(image)
        scale = adaptive_mode(fov.diameter if fov.found else None, diameter)
    mode = "multi" if scale == "multi" else "auto"
    targets = model_working_diameters(model, scale)
    if targets is None:
        return ScaleChoice((1.0,), diameter, None, mode)
    fov = fov or image_fov(image)
    if not fov.found:
        return ScaleChoice((1.0,), diameter, fov, mode)
    return ScaleChoice(tuple(float(scale_factor(target, fov.diameter, fov.found).numpy()) for target in targets),
                       diameter, fov, mode)


def _predict_views(model, rgb: np.ndarray, *, tile_size, overlap, stride, batch_size, max_whole_pixels,
                   tta) -> np.ndarray:
    """The mean probability over the `tta` views of `rgb` (float32 (H, W, 3)), whole or tiled."""
    h, w = rgb.shape[:2]
    total = np.zeros((h, w), dtype=np.float32)
    for turns, flip in TTA_MODES[tta]:
        view = np.rot90(rgb, turns)
        view = np.ascontiguousarray(view[:, ::-1] if flip else view)
        padded, _, _ = _pad_to_multiple(view, stride)
        vh, vw = view.shape[:2]
        if tile_size is None and padded.shape[0] * padded.shape[1] <= max_whole_pixels:
            prob = _run(model, padded[None])[0][:vh, :vw]
        else:
            prob = _predict_tiled(
                model,
                padded,
                tile=tile_size or DEFAULT_TILE_SIZE,
                overlap=overlap,
                stride=stride,
                batch_size=batch_size,
            )[:vh, :vw]
        total += np.rot90(prob[:, ::-1] if flip else prob, -turns)
    return total / len(TTA_MODES[tta])


def _predict_tiled(
    model, padded: np.ndarray, *, tile: int, overlap: int, stride: int, batch_size: int
) -> np.ndarray:
    hp, wp = padded.shape[:2]
    tile = math.ceil(tile / stride) * stride
    tile_h, tile_w = min(tile, hp), min(tile, wp)
    # Steps on the stride grid, so tiles share the whole image's pooling grid.
    step_h = max(stride, (tile_h - overlap) // stride * stride)
    step_w = max(stride, (tile_w - overlap) // stride * stride)
    total = np.zeros((hp, wp), dtype=np.float32)
    weights = np.zeros((hp, wp), dtype=np.float32)
    positions = list(_tiles(hp, wp, tile_h, tile_w, step_h, step_w))
    log.debug("tiled prediction: %d tiles of %dx%d on %dx%d", len(positions), tile_h, tile_w, hp, wp)
    for first in range(0, len(positions), batch_size):
        chunk = positions[first : first + batch_size]
        batch = np.stack([padded[y : y + tile_h, x : x + tile_w] for y, x in chunk])
        for (y, x), out in zip(chunk, _run(model, batch)):
            wy = _ramp(tile_h, overlap, y > 0, y + tile_h < hp)
            wx = _ramp(tile_w, overlap, x > 0, x + tile_w < wp)
            window = np.outer(wy, wx).astype(np.float32)
            total[y : y + tile_h, x : x + tile_w] += out * window
            weights[y : y + tile_h, x : x + tile_w] += window
    return total / weights
