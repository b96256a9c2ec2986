"""Tests for keras_vessel.data.preprocessing: decoding, masks, derived FOV, contrast operations."""

import gzip
import hashlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import exposure
from helpers import fundus_disc
from troubled import STARE_LIKE, TROUBLES, troubled_photograph

from keras_vessel.errors import DatasetError
from keras_vessel.data.preprocessing import (
    FovCut,
    clahe,
    contrast_stretch,
    derive_fov,
    fov_cut,
    green_channel,
    read_image,
    read_mask,
)

RGB = np.random.default_rng(1234).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)


def _disc(shape=(80, 96), centre=(40, 48), radius=30.0) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.hypot(rows - centre[0], cols - centre[1]) <= radius


def _fundus(radius=30.0) -> np.ndarray:
    """A dark surround and an orange disc with some texture, like a fundus photograph: 80x96, the disc
    ``_disc(radius=radius)``; a new array on every call, the same pixels for the same radius (`fundus_disc`)."""
    return fundus_disc(0, (80, 96), radius=radius)


# --- read_image ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif", ".ppm", ".bmp", ".webp"])
def test_read_image_lossless_formats_round_trip(tmp_path, suffix):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(RGB).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (40, 48, 3)
    np.testing.assert_array_equal(image, RGB)


def test_read_image_jpeg_is_close(tmp_path):
    smooth = np.repeat(np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None], 40, axis=0).repeat(3, axis=2)
    path = tmp_path / "image.JPG"
    Image.fromarray(smooth).save(path, format="JPEG", quality=95)
    image = read_image(path)
    assert image.shape == (40, 48, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - smooth).mean() < 3


def test_read_image_gzipped_ppm_equals_plain(tmp_path):
    plain = tmp_path / "im0001.ppm"
    Image.fromarray(RGB).save(plain)
    zipped = tmp_path / "im0001.ppm.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_image(zipped), read_image(plain))


def test_read_image_grayscale_is_replicated(tmp_path):
    gray = RGB[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    image = read_image(tmp_path / "gray.png")
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_read_image_palette_gif_goes_through_the_palette(tmp_path):
    indices = (np.arange(40 * 48).reshape(40, 48) % 3).astype(np.uint8)
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 7]
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(tmp_path / "palette.gif")
    expected = np.array(palette, dtype=np.uint8).reshape(3, 3)[indices]
    np.testing.assert_array_equal(read_image(tmp_path / "palette.gif"), expected)


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([RGB, np.full((40, 48, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), RGB)


def test_read_image_16_bit_keeps_the_high_byte(tmp_path):
    wide = (RGB[..., 1].astype(np.uint16) << 8) | 0x7F
    Image.fromarray(wide).save(tmp_path / "wide.png")
    image = read_image(tmp_path / "wide.png")
    np.testing.assert_array_equal(image[..., 0], RGB[..., 1])
    np.testing.assert_array_equal(image[..., 2], RGB[..., 1])


def test_read_image_does_not_apply_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": labels are aligned with the stored pixels, not the rotated view
    Image.fromarray(RGB).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (40, 48, 3)


def test_read_image_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"not found: .*nowhere\.png"):
        read_image(tmp_path / "nowhere.png")


@pytest.mark.parametrize(
    "name, payload",
    [
        ("garbage.tif", b"this is not an image at all"),
        ("empty.png", b""),
        ("bad.ppm.gz", b"not gzip data"),
    ],
)
def test_read_image_undecodable_file_names_it(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    with pytest.raises(DatasetError, match=rf"cannot decode image file .*{name.replace('.', '[.]')}") as caught:
        read_image(tmp_path / name)
    assert str(caught.value).count(name) == 1  # one sentence naming the file once


def test_read_image_truncated_png_is_an_error(tmp_path):
    path = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(path)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cannot decode image file .*truncated\.png"):
        read_image(truncated)


# --- read_mask ----------------------------------------------------------------------------


def test_read_mask_palette_indices_0_1_like_drive_2nd_manual(tmp_path):
    # DRIVE's 2nd_manual palette maps index 0 to (4, 2, 4): the colour must not be used.
    indices = np.zeros((40, 48), np.uint8)
    indices[10:14, 5:40] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([4, 2, 4, 252, 254, 252] + [0] * 762)
    image.save(tmp_path / "01_manual2.gif")
    reopened = Image.open(tmp_path / "01_manual2.gif")
    assert reopened.mode == "P" and set(np.unique(np.asarray(reopened))) == {0, 1}  # precondition
    mask = read_mask(tmp_path / "01_manual2.gif")
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, indices == 1)


def test_read_mask_palette_uses_colours_not_indices(tmp_path):
    # Pillow writes a 0/255 grey GIF as a palette image whose index 0 may be white,
    # and a palette may put white first: the colour decides, not the index.
    truth = np.random.default_rng(0).random((40, 48)) < 0.3
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "grey.gif")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.gif"), truth)
    inverted = Image.fromarray((~truth).astype(np.uint8), mode="P")
    inverted.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    inverted.save(tmp_path / "inverted.gif")
    np.testing.assert_array_equal(read_mask(tmp_path / "inverted.gif"), truth)


@pytest.mark.parametrize("high", [1, 255])
def test_read_mask_grayscale_thresholds_above_zero(tmp_path, high):
    truth = np.random.default_rng(0).random((40, 48)) < 0.3
    Image.fromarray((truth * high).astype(np.uint8)).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png"), truth)


def test_read_mask_one_bit_png(tmp_path):
    truth = np.random.default_rng(0).random((40, 48)) < 0.3
    Image.fromarray(truth).save(tmp_path / "label.png")  # mode "1", like CHASE_DB1's labels
    np.testing.assert_array_equal(read_mask(tmp_path / "label.png"), truth)


def test_read_mask_rgb_tiff_any_channel(tmp_path):
    truth = np.zeros((40, 48), bool)
    truth[5:20, 5:30] = True
    rgb = np.zeros((40, 48, 3), np.uint8)
    rgb[truth, 0] = 255  # only the red channel is set (HRF's RGB TIFF masks)
    Image.fromarray(rgb).save(tmp_path / "01_dr_mask.tif")
    np.testing.assert_array_equal(read_mask(tmp_path / "01_dr_mask.tif"), truth)


def test_read_mask_rejects_three_values_and_lists_them(tmp_path):
    values = np.zeros((40, 48), np.uint8)
    values[:10] = 128
    values[10:20] = 255
    Image.fromarray(values).save(tmp_path / "grey.png")
    with pytest.raises(DatasetError, match=r"^mask \S+grey\.png is not binary.*found 3: \[0, 128, 255\]$"):
        read_mask(tmp_path / "grey.png")  # callers that say what to do themselves (measure) add it


def test_read_mask_names_what_the_file_is_and_says_how_to_save_it(tmp_path):
    """A grey-level label given to finetune --labels used to be called a mask, without what to do."""
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp_path / "photo_label.png")
    with pytest.raises(DatasetError, match=r"^label \S+photo_label\.png is not binary: expected at most two "
                                           r"distinct values, found 256: \[0, 1, .*\(256 in all\)\]; save it as a "
                                           r"black-and-white PNG, 0 and 255 only \(not grey levels, not a JPEG\)$"):
        read_mask(tmp_path / "photo_label.png", what="label")


def test_read_mask_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"not found: .*absent_mask\.gif"):
        read_mask(tmp_path / "absent_mask.gif")


@pytest.mark.data
def test_read_mask_real_drive_second_observer(drive_root):
    path = drive_root / "test" / "2nd_manual" / "01_manual2.gif"
    raw = np.asarray(Image.open(path))
    mask = read_mask(path)
    assert mask.shape == (584, 565)
    np.testing.assert_array_equal(mask, raw == raw.max())
    assert 0.05 < mask.mean() < 0.2  # vessels are ~12 % of a DRIVE image


# --- derive_fov ---------------------------------------------------------------------------


def test_derive_fov_recovers_the_disc_minus_the_erosion():
    disc = _disc(radius=30.0)
    fov = derive_fov(_fundus(radius=30.0), erosion=3)
    assert fov.dtype == bool and fov.shape == disc.shape
    assert not (fov & ~disc).any()
    np.testing.assert_array_equal(fov, _disc(radius=30.0) & ndimage.binary_erosion(disc, _disc((7, 7), (3, 3), 3.0)))


def test_derive_fov_without_erosion_is_the_disc():
    np.testing.assert_array_equal(derive_fov(_fundus(), erosion=0), _disc())


def test_derive_fov_fills_holes_and_drops_stray_components():
    image = _fundus()
    image[35:45, 40:50] = 0  # a dark lesion inside the disc
    image[1:3, 1:3] = 255  # a bright speck in the corner (e.g. burnt-in text)
    fov = derive_fov(image, erosion=0)
    np.testing.assert_array_equal(fov, _disc())


@pytest.mark.parametrize("surround", [40, 90])
def test_derive_fov_finds_the_disc_in_a_surround_brighter_than_the_fixed_cut(surround):
    """A grey (hazy, over-exposed) surround is above max(15, 6 % of p99): the scale estimate's surround rule
    takes over, and the mask is its fitted disc (the drawn one but for rim pixels)."""
    image = _fundus()
    outside = ~_disc()
    noise = np.random.default_rng(surround).integers(0, 6, size=(int(outside.sum()), 3), dtype=np.uint8)
    image[outside] = surround + noise
    assert (derive_fov(image, threshold=15).mean()) == 1.0  # what the fixed cut alone gives
    derived = derive_fov(image, erosion=0)
    rows, cols = np.mgrid[0:80, 0:96]
    rim = np.abs(np.hypot(rows - 40, cols - 48) - 30.0) <= 1.5
    np.testing.assert_array_equal(derived[~rim], _disc()[~rim])


def test_derive_fov_uses_otsus_cut_when_the_scale_estimate_did():
    """A two-tone frame (20 | 70) defeats the surround rule (the corners disagree); Otsu's cut finds the disc."""
    image = _fundus()
    outside = ~_disc()
    two_tone = np.where(np.arange(96) < 48, 20, 70).astype(np.uint8)
    image[outside] = np.broadcast_to(two_tone[None, :, None], image.shape)[outside]
    np.testing.assert_array_equal(derive_fov(image, erosion=0), _disc())


def test_derive_fov_explicit_threshold_and_dark_image():
    image = _fundus()
    assert not derive_fov(image, threshold=250).any()
    assert not derive_fov(np.zeros((20, 20, 3), np.uint8)).any()


def test_derive_fov_does_not_modify_its_input():
    image = _fundus()
    before = image.copy()
    derive_fov(image)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": -1}, r"`threshold` must be a number in \[0, 255\).*-1"),
        ({"threshold": "auto"}, r"`threshold`.*'auto'"),
        ({"erosion": -2}, r"`erosion` must be a non-negative int, got -2"),
        ({"erosion": 1.5}, r"`erosion`.*1\.5"),
        ({"cut": 20.0}, r"`cut` must be a FovCut \(`fov_cut`\) and is given only with threshold=None; got cut=20\.0"),
        ({"cut": FovCut(20.0), "threshold": 20}, r"`cut` must be a FovCut .* with threshold=20"),
        ({"cut": FovCut(15.0, np.ones((3, 3), bool))}, r"`cut` is of an image of shape \(3, 3\), not \(80, 96\)"),
    ],
)
def test_derive_fov_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        derive_fov(_fundus(), **kwargs)


def test_derive_fov_rejects_non_rgb():
    with pytest.raises(ValueError, match=r"`image` must have shape \(H, W, 3\), got \(80, 96\)"):
        derive_fov(_fundus()[..., 0])


# derive_fov's masks before its TensorFlow step (`fov_cut`) could be computed apart, by the code of main at
# 4ccffdd: per photograph, a digest (`_digest`) of the mask of the default rule and of threshold=30, erosion=2.
# The comments say which rule measured the photograph (`image_fov`): every branch of step 2 is here. A digest
# of a synthetic photograph that changes means derive_fov's mask changed, or the photograph did (the drawing
# in `troubled`, OpenCV's); CHASE_DB1's photographs are files.
BEFORE = {
    "clipped_top_bottom": ("068e76c8d3e15bdd", "535e2739ac68f5f7"),  # fixed
    "clipped_left_right": ("b32fe73c393ec3e6", "ce208556360efcdf"),  # fixed
    "notch": ("0af5d483b1d205ff", "7da9748cc3ad8b25"),  # fixed
    "green_surround": ("63cba8a77ebaa1c9", "35cbcb000c9834b1"),  # fixed
    # grey_surround's and gradient's grey pixels at the cut fell on either side of it by CPU until the
    # intensity was summed in integers (keras_vessel.data.intensity): these are the exact masks
    "grey_surround": ("b455951b0e5d14aa", "c5abb4dc88483c4b"),  # surround
    "bright_surround": ("dc10cb463d3e925f", "c5abb4dc88483c4b"),  # surround
    "exudates": ("51a7e789dea34cf8", "9c9098feea378e12"),  # fixed
    "date_text": ("9b10c5bcbbb5cc24", "c5e3becc67de707c"),  # fixed
    "rim_lesion": ("aaf0b60bf1e57faa", "bf7d2749f44dc00d"),  # fixed
    "soft_rim": ("0f75c7d4cea53dc7", "c31a3d57f7239def"),  # fixed
    "grainy": ("48c0eac942a97123", "19f09d991df4b325"),  # surround
    "stare_like_0": ("9c00cee437f7fad8", "1ae9e65bc827c385"),  # surround
    "stare_like_1": ("36237e624b3274dc", "857e3269f252382e"),  # surround
    "stare_like_2": ("9ff0c689624e3278", "09f02374f6f7eb40"),  # fixed
    "bright+grainy+date": ("ed120f636de93e6a", "c5abb4dc88483c4b"),  # surround
    "gradient": ("96aaaaa5873e9618", "87adaf216c8cc4f7"),  # otsu
    "dark": ("fcf72a9a75898e1c", "fcf72a9a75898e1c"),  # none found
    "grey": ("fcf72a9a75898e1c", "a76f49b5683082e7"),  # none found, bright corners: Otsu's cut
    "synthetic_0000": ("5323a6cdcfd856be", "1f384bf60283c788"),  # fixed
    "synthetic_0001": ("26bab2ec4be86d47", "147076f886fd094d"),  # fixed
    "Image_01L": ("22bf7cf8c1359540", "09de9077bdad8ccf"),  # fixed (CHASE_DB1)
    "Image_05R": ("c02df945be7065f6", "0fc8f35d66df5787"),  # fixed
    "Image_11L": ("5862371e28084a57", "60e22c3762e09d6f"),  # fixed
    "Image_14R": ("3c94ef177fec1dc0", "2ed8136236547f88"),  # fixed
}


def _digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()[:16]


def _photograph(name: str, request) -> np.ndarray:
    """The photograph `BEFORE` names (CHASE_DB1's from its folder: skipped when absent)."""
    if name.startswith("Image_"):
        return read_image(request.getfixturevalue("chase_root") / f"{name}.jpg")
    if name.startswith("synthetic_"):
        from keras_vessel.data.datasets import open_dataset

        specs = open_dataset("synthetic", None, "training", count=2, size=96, seed=3)
        return specs[int(name[-1])].load().image
    if name in TROUBLES:
        return troubled_photograph(name, seed=0).image
    if name.startswith("stare_like_"):
        return troubled_photograph(*STARE_LIKE, seed=int(name[-1])).image
    if name == "bright+grainy+date":
        return troubled_photograph("bright_surround", "grainy", "date_text", seed=1).image
    if name == "gradient":  # a surround brightening from left to right: the surround rule fails, Otsu's fits
        rows, cols = np.mgrid[:300, :360]
        image = np.repeat((cols / 359 * 120).astype(np.uint8)[..., None], 3, axis=2)
        image[(rows - 150) ** 2 + (cols - 180) ** 2 < 120**2] = (230, 120, 60)
        return image
    return np.full((40, 50, 3), {"dark": 0, "grey": 128}[name], np.uint8)


@pytest.mark.parametrize("name", list(BEFORE))
def test_derive_fov_gives_the_masks_it_gave_before_its_cut_could_be_measured_apart(name, request):
    image = _photograph(name, request)
    default, fixed = BEFORE[name]
    assert _digest(derive_fov(image)) == default
    cut = fov_cut(image)  # as prepare's main process measures it for its workers
    assert _digest(derive_fov(image, cut=cut)) == default
    assert _digest(derive_fov(image, threshold=30, erosion=2)) == fixed


@pytest.mark.data
def test_derive_fov_agrees_with_drive_masks(drive_root):
    for number in ("21", "30", "40"):
        image = read_image(drive_root / "training" / "images" / f"{number}_training.tif")
        given = read_mask(drive_root / "training" / "mask" / f"{number}_training_mask.gif")
        derived = derive_fov(image, erosion=0)
        iou = (derived & given).sum() / (derived | given).sum()
        assert iou > 0.97, (number, iou)
        eroded = derive_fov(image)
        assert (eroded & ~given).sum() < 0.005 * given.sum()


# --- green_channel, clahe, contrast_stretch -------------------------------------------------


def test_green_channel_is_a_copy_of_channel_1():
    image = RGB.copy()
    green = green_channel(image)
    np.testing.assert_array_equal(green, RGB[..., 1])
    green[:] = 0
    np.testing.assert_array_equal(image, RGB)


def _low_contrast() -> np.ndarray:
    rows, cols = np.mgrid[0:64, 0:64]
    pattern = 110 + 10 * np.sin(rows / 5.0) * np.cos(cols / 7.0)
    image = np.stack([pattern + 60, pattern, pattern - 60], axis=2)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_clahe_green_only_touches_green_and_raises_contrast():
    image = _low_contrast()
    before = image.copy()
    out = clahe(image)
    np.testing.assert_array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., [0, 2]], image[..., [0, 2]])
    assert out[..., 1].std() > 2 * image[..., 1].std()
    # Independent reference: scikit-image's CLAHE, a different implementation, agrees on the trend.
    reference = exposure.equalize_adapthist(image[..., 1], kernel_size=8, clip_limit=0.02)
    assert np.corrcoef(out[..., 1].ravel(), reference.ravel())[0, 1] > 0.8


def test_clahe_luminance_keeps_shape_and_raises_contrast():
    image = _low_contrast()
    out = clahe(image, channel="luminance")
    assert out.shape == image.shape and out.dtype == np.uint8
    luminance = lambda x: x.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    assert luminance(out).std() > 2 * luminance(image).std()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channel": "red"}, r"`channel` must be 'green' or 'luminance', got 'red'"),
        ({"clip_limit": 0}, r"`clip_limit` must be a positive number, got 0"),
        ({"tile_grid_size": 0}, r"`tile_grid_size` must be a positive int, got 0"),
    ],
)
def test_clahe_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clahe(_low_contrast(), **kwargs)


def test_contrast_stretch_matches_a_numpy_oracle():
    image = _low_contrast()
    out = contrast_stretch(image, low=5, high=95)
    for c in range(3):
        lo, hi = np.percentile(image[..., c], [5, 95])
        expected = np.clip(np.rint((image[..., c] - lo) * 255.0 / (hi - lo)), 0, 255)
        assert np.abs(out[..., c].astype(int) - expected).max() <= 1
    assert out[..., 1].min() == 0 and out[..., 1].max() == 255


def test_contrast_stretch_inside_fov_ignores_the_black_surround():
    image = _fundus()
    fov = _disc()
    out = contrast_stretch(image, fov=fov, low=0, high=100)
    for c in range(3):
        inside = out[..., c][fov]
        assert inside.min() == 0 and inside.max() == 255
    whole = contrast_stretch(image, low=0, high=100)
    assert whole[..., 0][fov].min() > 0  # without the FOV the black surround pins the low end


def test_contrast_stretch_leaves_a_flat_channel_alone():
    image = np.full((10, 10, 3), 77, np.uint8)
    np.testing.assert_array_equal(contrast_stretch(image), image)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"low": 50, "high": 10}, r"need 0 <= `low` < `high` <= 100, got low=50, high=10"),
        ({"fov": np.zeros((3, 3), bool)}, r"`fov` must have shape \(64, 64\), got \(3, 3\)"),
        ({"fov": np.zeros((64, 64), bool)}, r"`fov` is empty"),
    ],
)
def test_contrast_stretch_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        contrast_stretch(_low_contrast(), **kwargs)


def test_the_fov_intensity_is_exact_and_the_same_in_numpy_and_tensorflow():
    """A grey pixel's luminance is its value (a float32 matrix product gave 29.999998 or 30.000002 by CPU,
    and a grey surround fell on either side of a cut at its value); both FOV rules read the same numbers."""
    import tensorflow as tf

    from keras_vessel.data import scaling
    from keras_vessel.data.intensity import fov_intensity

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    image[:8] = np.arange(0, 240, 3, dtype=np.uint8)[None, :, None]  # grey rows: 0, 3, ..., 237
    mine = fov_intensity(image)
    reference = np.maximum(image[..., 0], (image.astype(np.float64) @ [0.299, 0.587, 0.114]))
    assert mine.dtype == np.float32 and np.abs(mine - reference).max() < 1e-4
    assert np.array_equal(mine[:8], image[:8, :, 0].astype(np.float32))  # grey: exactly its value
    assert np.array_equal(scaling._intensity(tf.constant(image)).numpy(), mine)
    fractional = image.astype(np.float32) + np.float32(0.4)  # a float image keeps its fractions
    reference = np.maximum(fractional[..., 0], fractional.astype(np.float64) @ [0.299, 0.587, 0.114])
    for intensity in (fov_intensity(fractional), scaling._intensity(tf.constant(fractional)).numpy()):
        assert np.abs(intensity - reference).max() < 1e-4
