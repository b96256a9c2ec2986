"""Segment weights against a NumPy oracle of METHOD.md section 2; the losses of section 3."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf
from helpers import assert_config_roundtrip, assert_loss_roundtrip, oracle_weights
from PIL import Image

from keras_vessel.data import targets
from keras_vessel.data.targets import TARGET_CHANNELS, pack_targets, unpack_targets
from keras_vessel.losses import PixelWiseLoss, SegmentLevelLoss, build_losses, segment_weights

PY_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "NumpyFunction"}


# ------------------------------------------------------------------ the oracle


def oracle_batch(prob, label, id_mask, valid, **kwargs):
    return np.stack([oracle_weights(*parts, **kwargs) for parts in zip(prob, label, id_mask, valid)])


# ---------------------------------------------------------------- fixtures


def bar_case():
    """One horizontal vessel, 3 px thick, split in two segments by hand (ids 1 and 2)."""
    label = np.zeros((16, 24), bool)
    label[6:9, 2:22] = True
    id_mask = np.zeros((16, 24), np.int32)
    id_mask[3:12, 1:12] = 1
    id_mask[3:12, 12:23] = 2
    id_mask[7, 3:11] = -1  # 8 skeleton pixels each
    id_mask[7, 13:21] = -2
    return label, id_mask


@pytest.fixture(scope="module")
def drive_crops(drive_root: Path):
    """128x128 crops of two DRIVE training images with their full-image ID masks, FOV and labels."""
    from keras_vessel.data.segments import build_id_mask

    labels, fovs, masks = [], [], []
    for number in (21, 22):
        label = np.asarray(Image.open(drive_root / "training" / "1st_manual" / f"{number}_manual1.gif")) > 0
        fov = np.asarray(Image.open(drive_root / "training" / "mask" / f"{number}_training_mask.gif")) > 0
        mask = build_id_mask(label, fov)
        for y, x in ((0, 0), (100, 200), (230, 300), (400, 60), (456, 437)):
            labels.append(label[y : y + 128, x : x + 128])
            fovs.append(fov[y : y + 128, x : x + 128])
            masks.append(mask[y : y + 128, x : x + 128])
        masks[-5] = np.zeros_like(masks[-5])  # a crop with no segment at all
    return np.stack(labels), np.stack(fovs), np.stack(masks)


def predictions(label: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = label.astype(bool)
    if kind == "exact":
        return label.astype(np.float32)
    if kind == "noisy":
        smooth = ndi.gaussian_filter(label.astype(np.float32), sigma=(0, 1.0, 1.0))
        return np.clip(smooth + rng.normal(0.0, 0.25, label.shape), 0.0, 1.0).astype(np.float32)
    if kind == "missing":  # thin vessels vanish, half of each crop is blank
        kept = ndi.binary_opening(label, structure=np.ones((1, 3, 3)))
        kept[:, :, 64:] = False
        return kept.astype(np.float32) * 0.9
    if kind == "thick":
        return ndi.binary_dilation(label, structure=np.ones((1, 3, 3)), iterations=3).astype(np.float32)
    if kind == "everything":
        return np.ones(label.shape, np.float32)
    raise AssertionError(kind)


# ----------------------------------------------------------- segment_weights


def test_oracle_itself_on_hand_built_bar():
    """The oracle's numbers worked out by hand for a perfect prediction of the bar.

    Region 1 holds 30 vessel pixels and 8 reference skeleton pixels (T_gt =
    30/8); the thinned prediction (row 7, columns 3-20) puts 9 skeleton pixels
    in it (T_pred = 30/9), 9 in region 2 as well.
    """
    label, id_mask = bar_case()
    weights = oracle_weights(label.astype(float), label, id_mask, np.ones_like(label))
    expected = 2.0 - (1.0 - abs(30 / 9 - 30 / 8) / (30 / 8))
    assert np.allclose(weights[id_mask != 0], expected)
    assert np.all(weights[id_mask == 0] == 1.0)


@pytest.mark.parametrize("channel", [False, True])
def test_hand_built_bar_matches_method_values(channel):
    label, id_mask = bar_case()
    valid = np.ones_like(label, np.float32)
    valid[:, :2] = 0
    prob = np.zeros((5, 16, 24), np.float32)
    prob[0] = label  # same thickness
    prob[1, 5:11, 2:22] = 1  # twice too thick: sim 0 -> w 2 in thickness terms
    prob[2, 4:11, 2:22] = 1  # 7 px for 3: more than twice too thick, w > 2
    prob[3, 7, 2:12] = 1  # left segment thin (1 px), right one missed
    prob[4, 0, 0] = prob[4, 0, 5] = prob[4, 14, 23] = 1  # (0, 0) outside V: not an outlier
    labels, masks, valids = (np.broadcast_to(a, prob.shape) for a in (label, id_mask, valid))
    expected = oracle_batch(prob, labels, masks, valids)
    given = [a[..., None] if channel else a for a in (prob, labels, masks, valids)]
    got = segment_weights(*given).numpy()
    assert got.shape == given[0].shape and got.dtype == np.float32
    got = got[..., 0] if channel else got
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got[2][id_mask != 0] > 2).all()  # over-thick
    assert np.allclose(got[3][np.abs(id_mask) == 2], 2.0)  # missed segment
    assert got[4][0, 5] == 2.0 and got[4][14, 23] == 2.0 and got[4][0, 0] == 1.0  # outliers vs outside V
    assert np.allclose(got[4][(id_mask == 0) & (prob[4] == 0)], 1.0)


def test_reference_skeleton_outside_crop_keeps_weight_one():
    label, id_mask = bar_case()
    id_mask = id_mask.copy()
    id_mask[id_mask == -2] = 2  # segment 2's skeleton lies outside the crop
    prob = np.zeros((1, 16, 24), np.float32)  # everything missed
    got = segment_weights(prob, label[None], id_mask[None], np.ones((1, 16, 24))).numpy()[0]
    assert np.allclose(got[id_mask == 2], 1.0)
    assert np.allclose(got[np.abs(id_mask) == 1], 2.0)


def test_no_segment_in_crop():
    prob = np.zeros((2, 20, 20), np.float32)
    prob[1, 3:6, 3:6] = 1.0
    label = np.zeros((2, 20, 20))
    got = segment_weights(prob, label, np.zeros((2, 20, 20)), np.ones((2, 20, 20))).numpy()
    assert np.all(got[0] == 1.0)
    assert np.all(got[1][3:6, 3:6] == 2.0) and got[1].sum() == 400 + 9


def test_ids_are_per_image():
    """The same id in two images of a batch must not pool their counts."""
    label, id_mask = bar_case()
    prob = np.stack([label, np.zeros_like(label)]).astype(np.float32)
    batch = [np.stack([a, a]) for a in (label, id_mask, np.ones_like(label))]
    got = segment_weights(prob, *batch).numpy()
    np.testing.assert_allclose(got, oracle_batch(prob, *batch), atol=1e-5)
    np.testing.assert_allclose(got[0], segment_weights(prob[:1], *(a[:1] for a in batch)).numpy()[0])


def test_large_crops_use_wide_count_fields():
    """Crops of 2**15 pixels or more take the two-sum (31-bit field) path: same weights."""
    label, id_mask = bar_case()
    pad = ((0, 200 - 16), (0, 200 - 24))
    label, id_mask = np.pad(label, pad), np.pad(id_mask, pad)
    prob = np.stack([label, np.roll(label, 1, axis=0) | np.roll(label, -1, axis=0)]).astype(np.float32)
    batch = [np.stack([a, a]) for a in (label, id_mask, np.ones_like(label))]
    np.testing.assert_allclose(segment_weights(prob, *batch).numpy(), oracle_batch(prob, *batch), atol=1e-5)


@pytest.mark.slow  # XLA compilation: ~5-20 s on a shared 2-core machine
def test_segment_weights_under_xla_equal_oracle_for_any_ids():
    """Under XLA the segment index comes from a sort (a data-independent size): same weights."""
    label, id_mask = bar_case()
    prob = np.zeros((3, 16, 24), np.float32)
    prob[0] = label
    prob[1, 5:11, 2:22] = 1
    prob[2, 7, 2:12] = 1
    labels, valids = np.broadcast_to(label, prob.shape), np.ones(prob.shape, np.float32)
    compiled = tf.function(segment_weights, jit_compile=True)
    for scale in (1, 4000, 3_000_000):  # ids up to 6e6, still exact in float32
        masks = np.stack([id_mask * scale, id_mask, -id_mask * scale]).astype(np.float32)
        expected = oracle_batch(prob, labels, masks.astype(np.int64), valids)
        np.testing.assert_allclose(compiled(prob, labels, masks, valids).numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(segment_weights(prob, labels, masks, valids).numpy(), expected, atol=1e-5)


@pytest.mark.data
@pytest.mark.parametrize("kind", ["exact", "noisy", "missing", "thick", "everything"])
def test_segment_weights_equal_oracle_on_drive_crops(drive_crops, kind):
    labels, fovs, masks = drive_crops
    assert (masks[0] == 0).all() and (masks[5] == 0).all() and (masks[1] != 0).any()
    prob = predictions(labels, kind, seed=3)
    got = tf.function(segment_weights)(prob, labels, masks.astype(np.float32), fovs).numpy()
    expected = oracle_batch(prob, labels, masks, fovs)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    if kind == "thick":
        assert (got > 2).any()
    if kind == "missing":
        assert np.isclose(got, 2.0).sum() > 1000
    if kind == "everything":
        outliers = fovs & (masks == 0) & ~labels
        assert np.all(got[outliers] == 2.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 1.5}, r"`threshold` must be in \(0, 1\), got 1.5"),
        ({"min_length_ratio": -1}, r"`min_length_ratio` must be >= 0.0, got -1"),
    ],
)
def test_segment_weights_rejects_bad_options(kwargs, match):
    zeros = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=match):
        segment_weights(zeros, zeros, zeros, zeros, **kwargs)


def test_segment_weights_rejects_bad_shape():
    match = r"`prob` must have shape \(B, H, W\) or \(B, H, W, 1\), got shape \(4, 4\)"
    with pytest.raises(ValueError, match=match):
        segment_weights(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)))


# --------------------------------------------------------------------- targets


def test_target_channels_and_pack_unpack_round_trip():
    assert TARGET_CHANNELS == ("label", "valid", "id_mask", "tube", "length_scale")
    assert (targets.LABEL, targets.VALID, targets.ID_MASK, targets.TUBE, targets.LENGTH_SCALE) == (0, 1, 2, 3, 4)
    rng = np.random.default_rng(0)
    label, valid, tube = (rng.random((2, 8, 8)) > 0.5 for _ in range(3))
    id_mask = rng.integers(-3000, 3000, (2, 8, 8)).astype(np.int32)
    packed = pack_targets(label, valid, id_mask, tube)
    assert packed.shape == (2, 8, 8, 4) and packed.dtype == tf.float32
    with_channel = pack_targets(*(a[..., None] for a in (label, valid, id_mask, tube)))
    np.testing.assert_array_equal(with_channel.numpy(), packed.numpy())
    out = unpack_targets(packed)
    for got, want in zip(out, (label, valid, id_mask, tube)):
        np.testing.assert_array_equal(got.numpy(), want.astype(got.dtype.as_numpy_dtype))
    assert out[2].dtype == tf.int32


def test_pack_targets_agrees_with_pipeline():
    """One definition of the channel layout: the input pipeline must use this module's."""
    pipeline = pytest.importorskip("keras_vessel.data.pipeline")
    assert pipeline.pack_targets is pack_targets
    assert getattr(pipeline, "TARGET_CHANNELS", TARGET_CHANNELS) == TARGET_CHANNELS


def test_pack_and_unpack_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"`tube` must have the shape of `label`"):
        pack_targets(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"`y_true` must have shape \(\.\.\., H, W, 4\) or \(\.\.\., H, W, 5\)"):
        unpack_targets(np.zeros((2, 4, 4, 3)))


# ---------------------------------------------------------------------- losses


def small_batch(seed: int = 0):
    """Two 16x24 images with the hand-built segments, random logits, an FOV edge."""
    rng = np.random.default_rng(seed)
    label, id_mask = bar_case()
    valid = np.ones((16, 24), np.float32)
    valid[:, :3] = 0
    valid[0] = 0
    labels = np.stack([label, label[:, ::-1]]).astype(np.float32)
    masks = np.stack([id_mask, id_mask[:, ::-1]])
    valids = np.stack([valid, valid])
    y_true = pack_targets(labels, valids, masks, np.zeros_like(labels))
    logits = rng.normal(0.0, 2.0, (2, 16, 24, 1)).astype(np.float32)
    return y_true.numpy(), logits


def numpy_ce(label, logits):
    return np.maximum(logits, 0) - logits * label + np.log1p(np.exp(-np.abs(logits)))


@pytest.mark.parametrize("ignore_outside_fov", [True, False])
def test_pixel_wise_loss_equals_numpy(ignore_outside_fov):
    y_true, logits = small_batch()
    label, valid = y_true[..., 0], y_true[..., 1]
    if not ignore_outside_fov:
        valid = np.ones_like(valid)
    ce = numpy_ce(label, logits[..., 0].astype(np.float64))
    weight = np.where(label > 0, 0.9, 0.1)
    expected = (weight * ce * valid).sum() / valid.sum()
    got = PixelWiseLoss(ignore_outside_fov=ignore_outside_fov)(y_true, logits)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


@pytest.mark.parametrize(("beta", "betas"), [("trained", (0.8, 0.35, 0.2)), ("documented", (0.9, 0.1, 0.1))])
def test_segment_level_loss_value_and_gradient(beta, betas):
    y_true, logits = small_batch(1)
    label, valid, id_mask = y_true[..., 0], y_true[..., 1], y_true[..., 2]
    prob = 1.0 / (1.0 + np.exp(-logits[..., 0].astype(np.float64)))
    w = oracle_batch(prob, label, id_mask, valid)
    b = np.where(label > 0, betas[0], np.where(id_mask != 0, betas[1], betas[2]))
    n_valid = valid.sum()
    expected_loss = (w * b * numpy_ce(label, logits[..., 0].astype(np.float64)) * valid).sum() / n_valid
    expected_grad = (w * b * valid * (prob - label) / n_valid)[..., None]

    loss = SegmentLevelLoss(beta=beta)
    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(y_true, z)
    grad = tape.gradient(value, z).numpy()
    np.testing.assert_allclose(float(value), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7, rtol=1e-4)
    assert np.all(grad[valid == 0] == 0.0)


def test_losses_ignore_pixels_outside_valid_and_stay_finite():
    """Pixels outside V add nothing. Their logits are scaled, keeping the sign, so the
    thresholded map (and hence the segment weights, counted over the whole crop) stays put."""
    y_true, logits = small_batch(2)
    outside = y_true[..., 1:2] == 0
    changed = np.where(outside, logits * 100.0, logits).astype(np.float32)
    extreme = np.where(np.random.default_rng(1).random(logits.shape) > 0.5, 1e4, -1e4).astype(np.float32)
    for loss in (PixelWiseLoss(), SegmentLevelLoss(), SegmentLevelLoss(beta="documented")):
        base = float(loss(y_true, logits))
        assert float(loss(y_true, changed)) == pytest.approx(base, rel=1e-6)
        assert np.isfinite(float(loss(y_true, extreme)))
    empty = y_true.copy()
    empty[..., 1] = 0
    assert float(PixelWiseLoss()(empty, logits)) == 0.0
    assert float(SegmentLevelLoss()(empty, logits)) == 0.0


def test_losses_accept_float16_logits():
    y_true, logits = small_batch(3)
    for loss in (PixelWiseLoss(), SegmentLevelLoss()):
        reference = float(loss(y_true, logits.astype(np.float16).astype(np.float32)))
        got = loss.call(tf.constant(y_true), tf.constant(logits, tf.float16))
        assert got.dtype == tf.float32
        assert float(tf.reduce_mean(got)) == pytest.approx(reference, rel=1e-6)


def test_loss_graph_has_no_python_ops():
    y_true, logits = small_batch()
    loss = SegmentLevelLoss()
    graph = tf.function(lambda t, p: loss(t, p) + PixelWiseLoss()(t, p)).get_concrete_function(
        tf.TensorSpec([None, 16, 24, 4], tf.float32), tf.TensorSpec([None, 16, 24, 1], tf.float32)
    ).graph
    graph_def = graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops |= {node.op for node in function.node_def}
    assert not ops & PY_OPS
    assert "UnsortedSegmentSum" in ops


@pytest.mark.parametrize(
    "loss",
    [
        PixelWiseLoss(),
        PixelWiseLoss(vessel_weight=0.7, background_weight=0.3, ignore_outside_fov=False, name="p"),
        SegmentLevelLoss(),
        SegmentLevelLoss(beta="documented", ignore_outside_fov=False, threshold=0.4, max_iterations=9),
    ],
    ids=["pixel", "pixel-custom", "segment", "segment-custom"],
)
def test_loss_config_round_trip(loss):
    y_true, logits = small_batch(4)
    assert_loss_roundtrip(loss, y_true, logits)
    config = assert_config_roundtrip(loss).get_config()
    assert config == loss.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()


def testbuild_run_losses():
    joint = build_losses("joint", beta="documented", ignore_outside_fov=False)
    assert set(joint) == {"segment", "pixel"}
    assert isinstance(joint["segment"], SegmentLevelLoss) and joint["segment"].beta == "documented"
    assert isinstance(joint["pixel"], PixelWiseLoss) and not joint["pixel"].ignore_outside_fov
    pixel = build_losses("pixel")
    assert set(pixel) == {"pixel"}
    assert pixel["pixel"].get_config()["vessel_weight"] == 0.9


def test_build_losses_with_unit_class_weights_is_plain_cross_entropy():
    rng = np.random.default_rng(3)
    label = (rng.random((2, 8, 8)) < 0.2).astype(np.float32)
    valid = (rng.random((2, 8, 8)) < 0.7).astype(np.float32)
    logits = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    y_true = pack_targets(label, valid, np.zeros_like(label), np.zeros_like(label))
    loss = build_losses("pixel", vessel_weight=1.0, background_weight=1.0)["pixel"]
    z = logits[..., 0]
    cross_entropy = np.maximum(z, 0) - z * label + np.log1p(np.exp(-np.abs(z)))  # NumPy oracle
    expected = (cross_entropy * valid).sum() / valid.sum()
    np.testing.assert_allclose(float(loss(y_true, logits)), expected, rtol=1e-5)
    weighted = build_losses("pixel")["pixel"]
    assert float(weighted(y_true, logits)) < expected  # 0.9 / 0.1 shrinks every term


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: build_losses("both"), ValueError, r"`kind` must be one of \('joint', 'pixel'\), got 'both'"),
        (lambda: build_losses(beta="paper"), ValueError, r"`beta` must be one of .*got 'paper'"),
        (lambda: SegmentLevelLoss(beta=0.8), ValueError, r"`beta` must be one of .*got 0.8"),
        (lambda: SegmentLevelLoss(threshold=0), ValueError, r"`threshold` must be a number in \(0, 1\), got 0"),
        (lambda: SegmentLevelLoss(max_iterations=0), ValueError, r"`max_iterations` must be a positive int"),
        (lambda: PixelWiseLoss(vessel_weight="0.9"), TypeError, r"`vessel_weight` must be a real number, got '0.9'"),
        (lambda: PixelWiseLoss(background_weight=-1), ValueError, r"`background_weight` must be >= 0.0, got -1"),
        (lambda: PixelWiseLoss(ignore_outside_fov=1), TypeError, r"`ignore_outside_fov` must be a bool, got 1"),
    ],
)
def test_bad_loss_options_are_rejected(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "distributed", [pytest.param(False, id="xla", marks=pytest.mark.slow), pytest.param(True, id="mirrored")]
)
def test_joint_model_fits(distributed):
    """model.fit with the joint losses: XLA-compiled (what jit_compile='auto' picks on a GPU
    machine without a strategy), and inside a MirroredStrategy scope (no XLA)."""
    y_true, _ = small_batch(5)
    images = np.random.default_rng(0).random((2, 16, 24, 1)).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if distributed else tf.distribute.get_strategy()
    with strategy.scope():
        inputs = keras.Input((16, 24, 1))
        hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        model = keras.Model(
            inputs,
            {
                "segment": keras.layers.Conv2D(1, 1, name="segment")(hidden),
                "pixel": keras.layers.Conv2D(1, 1, name="pixel")(hidden),
            },
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.1), loss=build_losses("joint"), jit_compile=not distributed
        )
    assert model.jit_compile is not distributed
    targets = {"segment": y_true, "pixel": y_true}
    history = model.fit(images, targets, epochs=2, batch_size=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    outputs = model(images)
    expected = build_losses("joint")
    total = sum(float(expected[name](y_true, outputs[name])) for name in ("segment", "pixel"))
    evaluated = model.evaluate(images, targets, verbose=0, return_dict=True)["loss"]
    assert float(evaluated) == pytest.approx(total, rel=1e-4)


def test_segment_loss_in_saved_model(tmp_path):
    y_true, logits = small_batch(6)
    loss = SegmentLevelLoss()
    module = tf.Module()
    module.loss = tf.function(
        lambda t, p: loss(t, p),
        input_signature=[tf.TensorSpec([None, None, None, 4]), tf.TensorSpec([None, None, None, 1])],
    )
    tf.saved_model.save(module, str(tmp_path / "loss"))
    loaded = tf.saved_model.load(str(tmp_path / "loss"))
    assert float(loaded.loss(y_true, logits)) == pytest.approx(float(loss(y_true, logits)), rel=1e-6)
