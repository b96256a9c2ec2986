"""Image-level operations shared by dataset preparation and inference.

Everything here works on NumPy arrays in the dataset contract: images are
``(H, W, 3)`` uint8 RGB, labels and FOV masks ``(H, W)`` bool. No function
modifies its input in place.

Files are decoded with Pillow rather than OpenCV because OpenCV cannot read
GIF (DRIVE's labels and masks) and silently returns ``None`` on failure;
OpenCV is only used for CLAHE.
"""

from __future__ import annotations

import gzip
import io
import logging
import warnings
import zlib
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from keras_vessel.data.intensity import fov_intensity
from keras_vessel.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetError",
    "FovCut",
    "clahe",
    "contrast_stretch",
    "decode_image",
    "derive_fov",
    "fov_cut",
    "green_channel",
    "read_graded_mask",
    "read_image",
    "read_mask",
]

# File suffixes read as images, by the folder reader and by `predict` (``.gz`` is also accepted on top).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".pbm")

_DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    EOFError,
    zlib.error,
)


def _open_pil(path: str | PathLike) -> Image.Image:
    """Open and fully decode ``path`` (``.gz`` transparently), or raise DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")

    def opener() -> Image.Image:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                return Image.open(io.BytesIO(handle.read()))
        return Image.open(path)

    return _decode_pil(opener, path, lambda: _size_of(path))


def _decode_pil(opener, name: str | PathLike, size) -> Image.Image:
    """``opener()``'s image, fully decoded; DatasetError naming ``name`` when it cannot be (``size()``
    says how large the file is, for a decompression bomb)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            image = opener()
            image.load()  # Image.open is lazy: force decoding so truncation shows up here.
    except Image.DecompressionBombError:
        raise DatasetError(f"image file {name} is too large to decode safely ({size()}); "
                           "resize it first") from None
    except UnidentifiedImageError:
        raise DatasetError(f"cannot decode image file {name}: not a PNG, JPEG, TIFF, BMP, WebP, GIF or PPM image, or "
                           "damaged; convert or remove it") from None
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"cannot decode image file {name}: {exc}") from exc
    if any(issubclass(warning.category, Image.DecompressionBombWarning) for warning in caught):
        logger.warning("%s is a very large image (%dx%d, %.0f megapixels); decoding it anyway", name,
                       image.width, image.height, image.width * image.height / 1e6)
    return image


def _size_of(path: Path) -> str:
    try:
        with Image.open(path) as image:  # the header only
            return f"{image.width}x{image.height}"
    except Exception:  # noqa: BLE001 - only for the message
        return "size unknown"


def _as_uint8(array: np.ndarray) -> np.ndarray:
    """Bring 16/32-bit integer or float pixel data onto 0..255 uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        top = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(np.rint(array / top * 255.0), 0, 255).astype(np.uint8)
    # Integer data: 16-bit images keep their high byte; 8-bit data stored wide
    # (e.g. Pillow's "I" mode for an 8-bit TIFF) is kept as is.
    if array.max(initial=0) > 255:
        return (array.astype(np.uint32) >> 8).astype(np.uint8)
    return array.astype(np.uint8)


def read_image(path: str | PathLike) -> np.ndarray:
    """Read a colour fundus image as ``(H, W, 3)`` uint8 RGB.

    Accepts anything Pillow decodes (PNG, JPEG, TIFF, BMP, WebP, GIF, PPM) and gzip
    files such as STARE's ``im0001.ppm.gz``. Grayscale images are replicated
    to three channels, palette images are expanded through their palette and
    an alpha channel is dropped (not composited), so the pixel grid stays
    exactly that of the file: EXIF orientation is deliberately *not* applied,
    because the published labels are aligned with the stored pixels.

    Raises
    ------
    DatasetError
        If the file is missing or cannot be decoded; the message names it.
    """
    return _rgb_image(_open_pil(path))


def decode_image(data: bytes, name: str) -> np.ndarray:
    """`read_image` of a file's bytes (``name`` ending in ``.gz``: gzipped), read elsewhere (Beam's
    FileSystems: gs://, s3://); the same pixels, and DatasetError naming ``name`` when they do not decode."""
    def opener() -> Image.Image:
        payload = gzip.decompress(data) if str(name).lower().endswith(".gz") else data
        return Image.open(io.BytesIO(payload))

    return _rgb_image(_decode_pil(opener, name, lambda: f"{len(data) / 1e6:.0f} MB"))


def _rgb_image(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGB", "L", "P", "RGBA", "LA", "PA", "1", "CMYK", "YCbCr"):
        return _rgb_array(image if image.mode == "RGB" else image.convert("RGB"))
    # Wide integer / float modes ("I;16", "I", "F"): scale to 8 bits ourselves,
    # since Pillow's convert("RGB") clips them.
    array = _as_uint8(np.asarray(image))
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _rgb_array(image: Image.Image) -> np.ndarray:
    """An RGB Pillow image as ``(H, W, 3)`` uint8, copied in strips of rows: ``np.array(image)`` goes
    through a bytes copy of the whole image, a third copy of a 100 MP photograph (300 MB each)."""
    width, height = image.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, (1 << 22) // max(width, 1))
    for top in range(0, height, rows):
        out[top : top + rows] = np.asarray(image.crop((0, top, width, min(height, top + rows))))
    return out


def read_mask(path: str | PathLike, *, what: str | None = None) -> np.ndarray:
    """Read a binary label or FOV mask as an ``(H, W)`` bool array, True where > 0.

    The rule is "> 0", never "== 255": CHASE_DB1's labels are 1-bit PNGs and
    some masks store 0/1. For colour masks (HRF's RGB TIFFs) a pixel is True
    if any channel is > 0. Palette images (GIFs) are the exception: neither
    the index nor "> 0" is safe there. DRIVE's ``2nd_manual`` GIFs hold
    indices 0/1 whose palette maps 0 to the near-black (4, 2, 4), and Pillow
    writes a 0/255 grey GIF with index 0 meaning *white*. So a palette pixel
    is True when the grey level of its palette colour is > 127.

    `what` is what the file is to the caller ("label", "FOV mask"): a file
    that is not binary is then refused naming it so and saying how to save
    it. None (for callers that say what to do themselves): it is called a
    mask, and the message ends with the values found.

    Raises
    ------
    DatasetError
        If the file is missing or undecodable, or if it holds more than two
        distinct values (a JPEG-compressed or grey-level "mask"); the message
        lists the values found.
    """
    image = _open_pil(path)
    cut = 0
    if image.mode in ("P", "PA"):
        image, cut = image.convert("L"), 127
    elif image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])
    values = np.asarray(image)
    if values.ndim == 3:
        values = values.max(axis=2)
    distinct = np.unique(values)
    if distinct.size > 2:
        shown = ", ".join(str(v) for v in distinct[:10].tolist())
        more = f", ... ({distinct.size} in all)" if distinct.size > 10 else ""
        advice = "; save it as a black-and-white PNG, 0 and 255 only (not grey levels, not a JPEG)" if what else ""
        raise DatasetError(
            f"{what or 'mask'} {path} is not binary: expected at most two distinct values, "
            f"found {distinct.size}: [{shown}{more}]{advice}"
        )
    return np.asarray(values > cut, dtype=bool)


def read_graded_mask(path: str | PathLike, *, cut: int) -> np.ndarray:
    """Read a lossy-compressed label (e.g. a JPEG) as ``(H, W)`` bool: True where the grey level is > ``cut``.

    For labels that are not binary on disk, so `read_mask` refuses them: JPEG
    artefacts spread the two values into many grey levels along every line.
    Colour labels are read as their largest channel, like `read_mask`.
    Raises DatasetError if the file is missing or undecodable.
    """
    image = _open_pil(path)
    if image.mode in ("P", "PA", "RGBA", "LA", "I", "I;16", "F"):
        image = image.convert("L")
    values = np.asarray(image)
    if values.ndim == 3:
        values = values.max(axis=2)
    return np.asarray(values > cut, dtype=bool)


def _check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`{name}` must have shape (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8 RGB, got dtype {image.dtype}")
    return image


def green_channel(image: np.ndarray) -> np.ndarray:
    """Return the green channel ``(H, W)`` uint8 (a copy): it has the best vessel contrast."""
    return _check_rgb(image)[:, :, 1].copy()


@dataclass(frozen=True)
class FovCut:
    """What `derive_fov`'s own rule (``threshold=None``) takes from TensorFlow for one image, made by `fov_cut`.

    ``threshold``: the intensity cut above which a pixel is foreground; ``foreground``: the foreground
    itself, ``(H, W)`` bool, when the image's scale was measured by the surround rule (its fitted disc;
    then the cut is not used), else None. NumPy only, so that it is made where TensorFlow is (prepare's
    main process) and used where it is not (prepare's workers, `keras_vessel.workers`).
    """

    threshold: float
    foreground: np.ndarray | None = None


def fov_cut(image: np.ndarray) -> FovCut:
    """Step 2 of `derive_fov`'s rule with ``threshold=None``, the one that runs TensorFlow
    (`keras_vessel.data.scaling.image_fov`, `keras_vessel.data.scaling.otsu_level`): which pixels of
    ``image``, ``(H, W, 3)`` uint8 RGB, are foreground. ``derive_fov(image, cut=fov_cut(image))`` is
    ``derive_fov(image)``, wherever each half runs."""
    image = _check_rgb(image)
    return _fov_cut(image, fov_intensity(image))


def _fov_cut(image: np.ndarray, intensity: np.ndarray) -> FovCut:
    # TF ops, imported here: prepare's workers (keras_vessel.workers) get the cut from their parent
    from keras_vessel.data.scaling import image_fov, otsu_level

    threshold = max(15.0, 0.06 * float(np.percentile(intensity, 99)))
    geometry = image_fov(image)
    if geometry.rule == "surround":
        return FovCut(threshold, geometry.mask)
    if geometry.rule == "otsu" or (not geometry.found and all(corner > threshold
                                                              for corner in _corner_means(intensity))):
        # levels <= Otsu's level are surround, as in the scale estimate's last rule
        threshold = max(threshold, float(otsu_level(intensity)) + 0.5)
    return FovCut(threshold)


def derive_fov(
    image: np.ndarray,
    *,
    threshold: float | None = None,
    erosion: int = 3,
    cut: FovCut | None = None,
) -> np.ndarray:
    """Derive a field-of-view mask for datasets that ship none (CHASE_DB1, STARE).

    The rule, in order:

    1. ``intensity = max(red, luminance)`` where luminance is ITU-R 601
       ``0.299 R + 0.587 G + 0.114 B``. The red channel is the brightest inside
       any fundus; taking the max keeps it robust to grey or bluish images.
    2. Foreground = ``intensity > threshold``. The default threshold is
       ``max(15, 0.06 * p99)``, with ``p99`` the 99th intensity percentile:
       the surround of a fundus photograph stays below ~12 even after JPEG
       compression (DRIVE's is not pure black), while the dim rim of the
       aperture is above ~20 (a higher cut, e.g. 15 % of p99, loses rim
       vessels on CHASE_DB1).
       When no circle fits that cut, the foreground follows the rule that
       measured the image's scale (`keras_vessel.data.scaling.fov_diameter`),
       so that the mask and the diameter agree: the surround rule's fitted
       disc (a grainy surround, a dim rim, a grey or white surround), or
       Otsu's threshold of the intensity. If no rule finds a circle and all
       four corners of the image are above the fixed cut (a surround brighter
       than the cut), the cut is still raised to Otsu's threshold.
       This step runs TensorFlow (`fov_cut`), unless its result is given as ``cut``.
    3. Keep the largest 8-connected component (drops text, stray JPEG noise).
    4. Fill holes (dark lesions, the fovea or vessels inside the disc).
    5. Erode by ``erosion`` pixels with a disc, so that the blurred, dim rim
       of the aperture is excluded from training and from metrics.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB.
    threshold : intensity cut on 0-255; ``None`` for the rule above.
    erosion : radius in pixels of the final erosion; 0 disables it.
    cut : with ``threshold=None``, `fov_cut` of this image, computed elsewhere (prepare computes it in its
        main process, so that its workers import no TensorFlow); None computes it here.

    Returns
    -------
    (H, W) bool mask. An image that is entirely dark gives an all-False mask.
    """
    image = _check_rgb(image)
    if threshold is not None and not (
        isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 <= threshold < 255
    ):
        raise ValueError(f"`threshold` must be a number in [0, 255) or None, got {threshold!r}")
    if isinstance(erosion, bool) or not isinstance(erosion, (int, np.integer)) or erosion < 0:
        raise ValueError(f"`erosion` must be a non-negative int, got {erosion!r}")
    if cut is not None and (threshold is not None or not isinstance(cut, FovCut)):
        raise ValueError(f"`cut` must be a FovCut (`fov_cut`) and is given only with threshold=None; got "
                         f"cut={cut!r} with threshold={threshold!r}")
    if cut is not None and cut.foreground is not None and cut.foreground.shape != image.shape[:2]:
        raise ValueError(f"`cut` is of an image of shape {cut.foreground.shape}, not {image.shape[:2]}")
    intensity = fov_intensity(image)
    if threshold is None:
        cut = _fov_cut(image, intensity) if cut is None else cut
        threshold = cut.threshold
    foreground = cut.foreground if cut is not None and cut.foreground is not None else intensity > threshold
    components, count = ndimage.label(foreground, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros(image.shape[:2], dtype=bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    fov = components == int(np.argmax(sizes))
    fov = ndimage.binary_fill_holes(fov)
    if erosion > 0:
        radius = int(erosion)
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        disc = xx * xx + yy * yy <= radius * radius
        # Edge padding: where the aperture is cut by the image frame the FOV
        # really continues, so it must not be eroded away from the frame.
        padded = np.pad(fov, radius, mode="edge")
        fov = ndimage.binary_erosion(padded, structure=disc)[radius:-radius, radius:-radius]
    return np.asarray(fov, dtype=bool)


def _corner_means(intensity: np.ndarray, size: int = 5) -> list[float]:
    """Mean intensity of the ``size`` x ``size`` block at each corner of an (H, W) image."""
    return [float(intensity[rows, cols].mean()) for rows in (slice(None, size), slice(-size, None))
            for cols in (slice(None, size), slice(-size, None))]


def clahe(
    image: np.ndarray,
    *,
    clip_limit: float = 2.0,
    tile_grid_size: int = 8,
    channel: str = "green",
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV), as uint8 RGB.

    ``channel="green"`` equalises only the green channel, the one the models
    read, leaving red and blue untouched; ``channel="luminance"`` equalises
    the L channel of CIE Lab and converts back, which keeps the hue. Used as
    one of the paper's six training augmentations and optionally at inference.
    """
    image = _check_rgb(image)
    if channel not in ("green", "luminance"):
        raise ValueError(f"`channel` must be 'green' or 'luminance', got {channel!r}")
    if isinstance(clip_limit, bool) or not isinstance(clip_limit, (int, float)) or clip_limit <= 0:
        raise ValueError(f"`clip_limit` must be a positive number, got {clip_limit!r}")
    if isinstance(tile_grid_size, bool) or not isinstance(tile_grid_size, int) or tile_grid_size < 1:
        raise ValueError(f"`tile_grid_size` must be a positive int, got {tile_grid_size!r}")
    equaliser = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(tile_grid_size, tile_grid_size))
    if channel == "green":
        out = image.copy()
        out[:, :, 1] = equaliser.apply(np.ascontiguousarray(image[:, :, 1]))
        return out
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = equaliser.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def contrast_stretch(
    image: np.ndarray,
    *,
    low: float = 2.0,
    high: float = 98.0,
    fov: np.ndarray | None = None,
) -> np.ndarray:
    """Linear percentile stretch per channel: ``[p_low, p_high] -> [0, 255]``, clipped.

    Percentiles are taken inside ``fov`` when given, so the black surround of
    a fundus image does not pin ``p_low`` at 0. A channel whose two
    percentiles coincide (flat channel) is returned unchanged.
    """
    image = _check_rgb(image)
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(f"need 0 <= `low` < `high` <= 100, got low={low!r}, high={high!r}")
    if fov is not None:
        fov = np.asarray(fov, dtype=bool)
        if fov.shape != image.shape[:2]:
            raise ValueError(f"`fov` must have shape {image.shape[:2]}, got {fov.shape}")
        if not fov.any():
            raise ValueError("`fov` is empty: no pixel to take percentiles from")
    out = image.copy()
    for c in range(3):
        values = image[:, :, c][fov] if fov is not None else image[:, :, c]
        p_low, p_high = np.percentile(values, [low, high])
        if p_high <= p_low:
            continue
        scaled = (image[:, :, c].astype(np.float32) - p_low) * (255.0 / (p_high - p_low))
        out[:, :, c] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out
