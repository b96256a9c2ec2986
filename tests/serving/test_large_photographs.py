"""A large photograph with `predict`'s defaults (issue 33 item 6, issue 30's memory target).

The local path works on strips of rows of a full-resolution photograph (`keras_vessel.data.scaling`'s
NumPy faces); these tests hold it to the exported graph, which does the same on whole tensors, and
bound its peak memory by a multiple of the decoded image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from troubled import STARE_LIKE, troubled_photograph

from benchmarks.common import synthetic_photograph
from keras_vessel.data import scaling
from keras_vessel.models.inference import BUNDLED_MODEL
from keras_vessel.serving.prediction import OVERLAY_COLOUR, OVERLAY_OPACITY, predict_files

REPO = Path(__file__).resolve().parents[2]


def test_the_strip_faces_equal_the_graph_ops_on_a_photograph_cut_into_many_strips(monkeypatch):
    """`image_fov`, `image_region`, `shrink_image` of a float image: identical to the graph ops; `shrink_image`
    of a uint8 photograph and `enlarge_to` within 1e-4."""
    import tensorflow as tf

    monkeypatch.setattr(scaling, "STRIP_PIXELS", 7 * 1024)  # 11-row strips of a 641 px wide image
    image = synthetic_photograph(403, 641, 520.0)
    geometry = scaling.image_fov(image)
    mask, diameter, found = scaling.fov_diameter(image)
    assert geometry.found and bool(found) and geometry.diameter == pytest.approx(float(diameter), abs=1e-3)
    assert 500 < geometry.diameter < 540
    np.testing.assert_array_equal(geometry.mask, mask.numpy())
    np.testing.assert_array_equal(scaling.image_region(geometry.mask, True),
                                  scaling.prediction_region(mask, found).numpy())
    assert scaling.image_region(geometry.mask, False).all()
    assert image.dtype == np.uint8
    for factor in (0.09, 0.3, 0.7, 1.4):  # block means of 11, 3 px; a plain resize; an enlargement
        resampled = scaling.resample(tf.constant(image, tf.float32), factor).numpy()
        np.testing.assert_array_equal(scaling.shrink_image(image.astype(np.float32), factor), resampled)
        shrunk = scaling.shrink_image(image, factor)  # uint8: the pooling op, to float32 rounding
        assert shrunk.dtype == np.float32 and shrunk.shape == resampled.shape
        np.testing.assert_allclose(shrunk, resampled, rtol=0, atol=1e-4)
    small = np.random.default_rng(1).random((37, 59), dtype=np.float32)
    for size in ((403, 641), (37, 200), (30, 80)):  # enlarged both ways, one way, shrunk one way
        np.testing.assert_allclose(scaling.enlarge_to(small, size),
                                   scaling.resize_to(small[..., None], list(size)).numpy()[..., 0], atol=1e-4)


@pytest.mark.parametrize("seed, rule", [(0, "surround"), (2, "fixed")])
@pytest.mark.parametrize("enlarged", [False, True], ids=["native", "enlarged"])
def test_the_strip_path_finds_the_whole_image_fov_of_a_stare_like_photograph(monkeypatch, seed, rule, enlarged):
    """`image_fov` in strips (28 rows of the 700x605 photograph; 9 rows of it enlarged to 2101x1816, pooled
    by 3 with a row left over) chooses the rule the whole tensors of `fov_diameter` choose and gives their
    mask bit for bit: the surround rule's fitted disc, not a cut of the strips."""
    import cv2

    photo = troubled_photograph(*STARE_LIKE, seed=seed)
    image = photo.image
    if enlarged:
        image = cv2.resize(image, (3 * image.shape[1] + 1, 3 * image.shape[0] + 1), interpolation=cv2.INTER_LINEAR)
    mask, diameter, found = scaling.fov_diameter(image)
    monkeypatch.setattr(scaling, "STRIP_PIXELS", 20_000)
    geometry = scaling.image_fov(image)
    assert geometry.found and bool(found) and geometry.rule == rule
    assert geometry.diameter == float(diameter)
    np.testing.assert_array_equal(geometry.mask, mask.numpy())
    scale = image.shape[1] / photo.image.shape[1]
    assert geometry.diameter == pytest.approx(photo.diameter * scale, rel=0.02)
    if rule == "surround":  # the disc: no speck of the grainy surround, no notch, no dim crescent cut out
        assert scaling.mask_diameter(geometry.mask) == pytest.approx(geometry.diameter, rel=0.01)
        assert (geometry.mask != scaling.fov_mask(image.astype(np.float32)).numpy()).any()


@pytest.mark.slow
def test_a_6_mp_photograph_gives_the_exported_graphs_probability(tmp_path):
    """`predict` with its defaults on 3000x2000 equals the SavedModel's whole-tensor path within 2e-3,
    and its mask and overlay are those of its probability."""
    import tensorflow as tf

    image = synthetic_photograph(2000, 3000, 2600.0)  # shrunk ~4.8x: blocks of 4
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path, compress_level=1)
    predict_files(BUNDLED_MODEL, [path], tmp_path / "out", threshold=0.5, overlay=True, progress=False)
    levels = np.asarray(Image.open(tmp_path / "out" / "photo_prob.png"), np.int64)  # probability x 65535
    local = levels / 65535
    mask = np.asarray(Image.open(tmp_path / "out" / "photo_mask.png")) > 0
    overlay = np.asarray(Image.open(tmp_path / "out" / "photo_overlay.png"))

    versions = sorted((p for p in BUNDLED_MODEL.parent.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    served = tf.saved_model.load(str(versions[-1])).signatures["serving_default"]
    graph = served(images=tf.constant(image[None], tf.float32))["probability"].numpy()[0]
    assert np.abs(local - graph).max() <= 2e-3
    assert 0.02 < (graph >= 0.5).mean() < 0.3  # the network found vessels: the comparison is not of zeros
    np.testing.assert_array_equal(mask, levels >= 32768)  # round(p x 65535) >= 32768 <=> p >= 0.5
    expected = image.astype(np.float32)
    expected[mask] += OVERLAY_OPACITY * (np.asarray(OVERLAY_COLOUR, np.float32) - expected[mask])
    np.testing.assert_array_equal(overlay, np.clip(np.rint(expected), 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_predicting_a_24_mp_photograph_needs_at_most_6_times_its_decoded_size(tmp_path):
    """Peak RSS growth of `predict_files` (decode, FOV, shrink, network, resample back, PNGs), defaults,
    measured by the benchmark's subprocess (`benchmarks.bench_inference --child photo_mp`).

    What must be held at full size: the uint8 image (3 B/px), FOV mask and region (2), probability (4),
    its 16-bit and the mask's 8-bit PNG pixels (3): 12 B/px, 4x the image. Before the strips it was
    15x (float32 copies of the photograph, of its intensity and of the probability); with TensorFlow's
    float64 intensity in each strip and NumPy's enlargement 7.5-8x; since 4.6x.
    """
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")
    photo = tmp_path / "photo.jpg"
    Image.fromarray(synthetic_photograph(4000, 6000)).save(photo, quality=90)
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_inference", "--child", "photo_mp",
                           "--photo", str(photo)], capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["image_shape"] == [4000, 6000] and row["growth_gb"] is not None
    assert row["growth_gb"] <= 6 * row["decoded_gb"], row["growth_gb"] / row["decoded_gb"]
