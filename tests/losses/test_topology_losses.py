"""clDice, Skeleton Recall, soft Dice and CombinedLoss (METHOD.md section 6)."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from helpers import assert_loss_roundtrip
from scipy import ndimage

from keras_vessel.data.targets import pack_targets
from keras_vessel.losses import PixelWiseLoss, SegmentLevelLoss, build_losses
from keras_vessel.losses.topology import ClDiceLoss, CombinedLoss, SkeletonRecallLoss, SoftDiceLoss, soft_skeleton

PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("keras-vessel"))
SIZE = 32
CONFIDENT = 30.0  # |logit| of a "very confident" prediction: sigmoid error ~1e-13


# ------------------------------------------------------------------ oracles


def numpy_soft_skeleton(image: np.ndarray, iterations: int) -> np.ndarray:
    """Algorithm 1 of Shit et al. with SciPy filters; 'nearest' edges = pooling that ignores padding."""

    def erode(x):
        return np.minimum(
            ndimage.minimum_filter(x, size=(1, 3, 1), mode="nearest"),
            ndimage.minimum_filter(x, size=(1, 1, 3), mode="nearest"),
        )

    def opened(x):
        return ndimage.maximum_filter(erode(x), size=(1, 3, 3), mode="nearest")

    image = image.astype(np.float64)
    skeleton = np.maximum(image - opened(image), 0)
    for _ in range(iterations):
        image = erode(image)
        delta = np.maximum(image - opened(image), 0)
        skeleton = skeleton + np.maximum(delta - skeleton * delta, 0)
    return skeleton


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_losses(label, valid, tube, logits, *, smooth=1.0, iterations=10):
    """Per-image (cldice, skeleton recall, dice) written straight from the formulas."""
    p, g, t = sigmoid(logits.astype(np.float64)) * valid, label * valid, tube * valid
    sp, sg = numpy_soft_skeleton(p, iterations) * valid, numpy_soft_skeleton(g, iterations) * valid
    axes = (1, 2)
    tprec = ((sp * g).sum(axes) + smooth) / (sp.sum(axes) + smooth)
    tsens = ((sg * p).sum(axes) + smooth) / (sg.sum(axes) + smooth)
    cldice = 1 - 2 * tprec * tsens / (tprec + tsens)
    recall = 1 - ((p * t).sum(axes) + smooth) / (t.sum(axes) + smooth)
    dice = 1 - (2 * (p * g).sum(axes) + smooth) / (p.sum(axes) + g.sum(axes) + smooth)
    return cldice, recall, dice


# ----------------------------------------------------------------- fixtures


def bar_image(top: int = 10, width: int = 7) -> np.ndarray:
    image = np.zeros((SIZE, SIZE), np.float32)
    image[top : top + width, :] = 1
    return image


def targets(label: np.ndarray, tube: np.ndarray | None = None, valid: np.ndarray | None = None) -> tf.Tensor:
    label = label[None] if label.ndim == 2 else label
    if tube is None:  # the 3-pixel tube around the bar's centre row
        tube = np.zeros_like(label)
        rows = np.nonzero(label.any(axis=2)[0])[0]
        centre = (rows[0] + rows[-1]) // 2
        tube[:, centre - 1 : centre + 2, :] = label[:, centre - 1 : centre + 2, :]
    valid = np.ones_like(label) if valid is None else valid
    return pack_targets(label, valid, np.zeros_like(label), tube)


def confident_logits(prediction: np.ndarray) -> tf.Tensor:
    prediction = prediction[None] if prediction.ndim == 2 else prediction
    return tf.constant(np.where(prediction > 0.5, CONFIDENT, -CONFIDENT)[..., None].astype(np.float32))


def random_batch(seed: int = 0, batch: int = 3):
    rng = np.random.default_rng(seed)
    label = np.stack([bar_image(top=int(rng.integers(3, 20)), width=int(rng.integers(1, 9))) for _ in range(batch)])
    label[-1] = 0  # an image without vessels must stay finite
    valid = np.ones_like(label)
    valid[:, :, :4] = 0  # outside the FOV
    tube = label * (rng.random(label.shape) < 0.7)
    logits = rng.normal(0, 3, label.shape).astype(np.float32)
    return label, valid, tube, logits, pack_targets(label, valid, np.zeros_like(label), tube)


TOPOLOGY_LOSSES = [ClDiceLoss, SkeletonRecallLoss, SoftDiceLoss]


# --------------------------------------------------------------- soft skeleton


@pytest.mark.parametrize("width", [1, 3, 5, 7, 9])
def test_soft_skeleton_of_a_bar_lies_on_its_centre_line(width):
    bar = bar_image(top=8, width=width)
    skeleton = soft_skeleton(bar[None], iterations=10).numpy()[0]
    centre = 8 + width // 2
    np.testing.assert_allclose(skeleton[centre], 1.0, atol=1e-6)  # every column, border columns included
    off_centre = np.delete(skeleton, centre, axis=0)
    assert off_centre.max() < 1e-6


def test_soft_skeleton_matches_a_scipy_oracle_on_probability_maps():
    prob = np.random.default_rng(3).random((2, 24, 20)).astype(np.float32)
    prob = ndimage.uniform_filter(prob, size=(1, 5, 5))  # smooth blobs, so the skeleton is not trivial
    expected = numpy_soft_skeleton(prob, 5)
    actual = soft_skeleton(prob, iterations=5).numpy()
    assert expected.max() > 0.05
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    np.testing.assert_allclose(soft_skeleton(prob[..., None], 5).numpy()[..., 0], actual, atol=0)


def pooling_soft_skeleton(image: tf.Tensor, iterations: int) -> tf.Tensor:
    """The paper's formulation with tf.nn.max_pool2d on (B, H, W, 1), as a gradient reference."""

    def erode(x):
        return tf.minimum(-tf.nn.max_pool2d(-x, (3, 1), 1, "SAME"), -tf.nn.max_pool2d(-x, (1, 3), 1, "SAME"))

    def opened(x):
        return tf.nn.max_pool2d(erode(x), 3, 1, "SAME")

    skeleton = tf.nn.relu(image - opened(image))
    for _ in range(iterations):
        image = erode(image)
        delta = tf.nn.relu(image - opened(image))
        skeleton = skeleton + tf.nn.relu(delta - skeleton * delta)
    return skeleton


def test_soft_skeleton_gradient_matches_the_max_pooling_formulation():
    prob = np.random.default_rng(5).random((2, 20, 24, 1)).astype(np.float32)
    prob = tf.constant(ndimage.uniform_filter(prob, size=(1, 3, 3, 1)))
    weights = tf.constant(np.random.default_rng(6).random((2, 20, 24, 1)).astype(np.float32))
    gradients = []
    for skeleton in (soft_skeleton, pooling_soft_skeleton):
        with tf.GradientTape() as tape:
            tape.watch(prob)
            value = tf.reduce_sum(skeleton(prob, 4) * weights)
        gradients.append(tape.gradient(value, prob).numpy())
    assert np.abs(gradients[1]).max() > 0.1
    np.testing.assert_allclose(gradients[0], gradients[1], atol=1e-5)


def test_soft_skeleton_does_not_modify_its_input_and_rejects_bad_arguments():
    prob = bar_image()[None]
    copy = prob.copy()
    soft_skeleton(prob, 3)
    np.testing.assert_array_equal(prob, copy)
    with pytest.raises(ValueError, match=r"`prob` must have shape \(B, H, W\) or \(B, H, W, 1\), got shape \(32, 32\)"):
        soft_skeleton(prob[0], 3)
    with pytest.raises(ValueError, match="`iterations` must be >= 0, got -1"):
        soft_skeleton(prob, -1)
    with pytest.raises(TypeError, match="`iterations` must be an int, got 2.5 \\(type float\\)"):
        soft_skeleton(prob, 2.5)


# ---------------------------------------------------------------------- losses


def test_losses_match_a_numpy_oracle_per_image_with_the_fov_respected():
    label, valid, tube, logits, y_true = random_batch()
    cldice, recall, dice = numpy_losses(label, valid, tube, logits)
    y_pred = tf.constant(logits[..., None])
    for loss, expected in [(ClDiceLoss(), cldice), (SkeletonRecallLoss(), recall), (SoftDiceLoss(), dice)]:
        per_image = loss.call(y_true, y_pred).numpy()
        assert per_image.shape == (3,)
        np.testing.assert_allclose(per_image, expected, atol=1e-5, err_msg=loss.name)
        np.testing.assert_allclose(float(loss(y_true, y_pred)), expected.mean(), atol=1e-5)
    everywhere = numpy_losses(label, np.ones_like(valid), tube, logits)
    for loss, expected in zip([ClDiceLoss, SkeletonRecallLoss, SoftDiceLoss], everywhere):
        np.testing.assert_allclose(loss(ignore_outside_fov=False).call(y_true, y_pred).numpy(), expected, atol=1e-5)


# A 7-pixel bar over 32 columns with 6 columns cut out; its skeleton is the centre row.
GAP_SENSITIVITY = (26 + 1) / (32 + 1)
BROKEN_BAR_LOSSES = {
    ClDiceLoss: 1 - 2 * GAP_SENSITIVITY / (1 + GAP_SENSITIVITY),  # precision stays 1
    SkeletonRecallLoss: 1 - (3 * 26 + 1) / (3 * 32 + 1),
    SoftDiceLoss: 1 - (2 * 7 * 26 + 1) / (7 * 26 + 7 * 32 + 1),
}


@pytest.mark.parametrize("loss_class", TOPOLOGY_LOSSES)
def test_perfect_prediction_costs_nothing_and_a_broken_vessel_costs_more(loss_class):
    bar = bar_image()
    broken = bar.copy()
    broken[:, 12:18] = 0  # a gap cut across the vessel
    loss = loss_class()
    perfect = float(loss(targets(bar), confident_logits(bar)))
    gap = float(loss(targets(bar), confident_logits(broken)))
    assert perfect < 1e-6
    assert gap == pytest.approx(BROKEN_BAR_LOSSES[loss_class], abs=1e-4)
    assert gap > 0.05


def test_thinned_vessel_costs_skeleton_recall_and_dice_but_not_cldice_alone():
    """clDice is a topology measure: a centred thin prediction keeps the skeleton, so only Dice sees it."""
    bar, thin = bar_image(top=10, width=7), bar_image(top=13, width=1)
    y_true, y_pred = targets(bar), confident_logits(thin)
    assert float(SkeletonRecallLoss()(y_true, y_pred)) == pytest.approx(1 - (32 + 1) / (96 + 1), abs=1e-4)
    assert float(SoftDiceLoss()(y_true, y_pred)) > 0.5
    assert float(ClDiceLoss()(y_true, y_pred)) < 1e-6
    mixed = build_losses("pixel", extra="cldice")["pixel"]
    assert float(mixed(y_true, y_pred)) > float(mixed(y_true, confident_logits(bar))) + 0.3
    shifted = confident_logits(bar_image(top=3, width=7))  # thick enough, but off the vessel
    assert float(ClDiceLoss()(y_true, shifted)) > 0.9


@pytest.mark.parametrize("loss_class", [*TOPOLOGY_LOSSES, "cldice", "skeleton_recall"])
def test_gradients_are_finite_and_reach_the_logits(loss_class):
    _, _, _, logits, y_true = random_batch(seed=1)
    loss = build_losses("joint", extra=loss_class)["segment"] if isinstance(loss_class, str) else loss_class()
    for values in (logits, np.full_like(logits, 40.0), np.full_like(logits, -40.0)):
        y_pred = tf.Variable(values[..., None])
        with tf.GradientTape() as tape:
            value = loss(y_true, y_pred)
        gradient = tape.gradient(value, y_pred).numpy()
        assert np.isfinite(float(value)) and np.isfinite(gradient).all()
    y_pred = tf.Variable(logits[..., None])
    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred)
    gradient = tape.gradient(value, y_pred).numpy()
    assert np.abs(gradient).max() > 1e-6
    assert np.abs(gradient[:, :, :4]).max() == 0  # outside the FOV nothing is learnt


def test_mixed_precision_logits_give_float32_losses():
    _, _, _, logits, y_true = random_batch()
    for loss_class in TOPOLOGY_LOSSES:
        loss = loss_class()
        half = loss.call(y_true, tf.constant(logits[..., None], tf.float16))
        assert half.dtype == tf.float32
        np.testing.assert_allclose(half.numpy(), loss.call(y_true, tf.constant(logits[..., None])).numpy(), atol=2e-3)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: ClDiceLoss(iterations=0.5), TypeError, "`iterations` must be an int, got 0.5 \\(type float\\)"),
        (lambda: ClDiceLoss(smooth=0), ValueError, "`smooth` must be > 0.0, got 0"),
        (lambda: SkeletonRecallLoss(smooth="1"), TypeError, "`smooth` must be a real number, got '1' \\(type str\\)"),
        (lambda: SoftDiceLoss(ignore_outside_fov=1), TypeError, "`ignore_outside_fov` must be a bool, got 1"),
        (lambda: CombinedLoss([]), ValueError, "`losses` must be a non-empty list"),
        (lambda: CombinedLoss(["mse"]), TypeError, r"`losses\[0\]` must be a keras.losses.Loss, got 'mse'"),
        (lambda: CombinedLoss([SoftDiceLoss()], [1, 2]), ValueError, "`weights` must be a list of 1 numbers"),
        (lambda: CombinedLoss([SoftDiceLoss()], [-1]), ValueError, r"`weights\[0\]` must be a number >= 0, got -1"),
        (lambda: build_losses("pixel", extra="topo"), ValueError, "`extra` must be one of .*'cldice'.*got 'topo'"),
        (lambda: build_losses("pixel", extra_weight=-0.5), ValueError, "`extra_weight` must be >= 0.0, got -0.5"),
        (lambda: build_losses("pixel", cldice_alpha=2.0), ValueError, r"`cldice_alpha` must be in \[0, 1\], got 2.0"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ------------------------------------------------------------ build_losses


def test_build_losses_without_extra_is_unchanged():
    for losses in (build_losses("joint"), build_losses("joint", beta="trained", ignore_outside_fov=True, extra="none")):
        assert {name: type(loss) for name, loss in losses.items()} == {
            "segment": SegmentLevelLoss, "pixel": PixelWiseLoss}
    assert list(build_losses("pixel")) == ["pixel"]


@pytest.mark.parametrize("kind", ["joint", "pixel"])
@pytest.mark.parametrize("extra", ["cldice", "skeleton_recall"])
def test_build_losses_adds_the_weighted_term_to_every_head(kind, extra):
    _, _, _, logits, y_true = random_batch(seed=2)
    y_pred = tf.constant(logits[..., None])
    plain = build_losses(kind, ignore_outside_fov=False)
    combined = build_losses(kind, ignore_outside_fov=False, extra=extra, extra_weight=0.3, cldice_alpha=0.25)
    assert list(combined) == list(plain)
    if extra == "cldice":
        term = 0.75 * SoftDiceLoss(ignore_outside_fov=False).call(y_true, y_pred) + 0.25 * ClDiceLoss(
            ignore_outside_fov=False).call(y_true, y_pred)
    else:
        term = SkeletonRecallLoss(ignore_outside_fov=False).call(y_true, y_pred)
    for head, loss in combined.items():
        assert isinstance(loss, CombinedLoss) and loss.losses[0].get_config() == plain[head].get_config()
        assert all(not part.ignore_outside_fov for part in loss.losses)
        expected = plain[head].call(y_true, y_pred) + 0.3 * term
        np.testing.assert_allclose(loss.call(y_true, y_pred).numpy(), expected.numpy(), atol=1e-5)


def test_training_builds_the_losses_the_config_names():
    from keras_vessel.config import load_config
    from keras_vessel.training.components import build_run_losses

    repo = Path(__file__).resolve().parents[2]
    expected = {
        ("pixel", "cldice"): ({"pixel"}, ["PixelWiseLoss", "SoftDiceLoss", "ClDiceLoss"]),
        ("pixel", "skeleton_recall"): ({"pixel"}, ["PixelWiseLoss", "SkeletonRecallLoss"]),
        ("joint", "skeleton_recall"): ({"segment", "pixel"}, ["PixelWiseLoss", "SkeletonRecallLoss"]),
    }
    for (kind, extra), (heads, parts) in expected.items():
        config = load_config([repo / "configs" / "compact.yaml", repo / "configs" / "datasets" / "drive.yaml"],
                             [f"loss.kind={kind}", f"loss.extra={extra}"])
        losses = build_run_losses(config)
        assert set(losses) == heads
        assert [type(part).__name__ for part in losses["pixel"].losses] == parts
        assert losses["pixel"].weights[0] == 1.0 and sum(losses["pixel"].weights[1:]) == config.loss.extra_weight


# ------------------------------------------------------------- serialization


@pytest.mark.parametrize(
    "loss",
    [
        ClDiceLoss(iterations=4, smooth=0.5, ignore_outside_fov=False, name="cl"),
        SkeletonRecallLoss(smooth=2.0),
        SoftDiceLoss(ignore_outside_fov=False),
        CombinedLoss([SoftDiceLoss(), SkeletonRecallLoss(smooth=3.0)], [0.5, 2.0], name="mix"),
        build_losses("joint", extra="cldice", extra_weight=0.7)["segment"],
        build_losses("pixel", extra="skeleton_recall", extra_weight=2.0)["pixel"],
    ],
    ids=lambda loss: loss.name,
)
def test_losses_round_trip_through_config_and_keras_serialization(loss):
    _, _, _, logits, y_true = random_batch(seed=4)
    clone = assert_loss_roundtrip(loss, y_true, tf.constant(logits[..., None]), atol=1e-6)
    if isinstance(loss, CombinedLoss):
        assert [type(part) for part in clone.losses] == [type(part) for part in loss.losses]
        assert clone.weights == loss.weights
        json.dumps(keras.saving.serialize_keras_object(loss))


def test_combined_loss_accepts_serialized_parts():
    parts = [keras.saving.serialize_keras_object(SkeletonRecallLoss(smooth=2.0))]
    loss = CombinedLoss(parts, [1.5])
    assert isinstance(loss.losses[0], SkeletonRecallLoss) and loss.losses[0].smooth == 2.0


# ------------------------------------------------ training in another process


MIRRORED_COMBOS_SCRIPT = r"""
import numpy as np, tensorflow as tf, keras
from keras_vessel.training import build_steps, split_cpu
from keras_vessel.data.targets import pack_targets
from keras_vessel.losses import build_losses
from keras_vessel.models import build_model
split_cpu(2)
single_device = tf.distribute.get_strategy()
# one strategy for all combinations: each new MirroredStrategy restarts the collective keys
mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
label = np.zeros((4, 16, 16), "float32")
for b, (top, width) in enumerate([(3, 3), (6, 5), (1, 1), (8, 2)]):
    label[b, top:top + width, 2:14] = 1
ids = np.where(label > 0, 1, 0).astype("float32")
target = pack_targets(label, np.ones_like(label), ids, label)

def steps(strategy, kind, extra, weights):
    heads = ("segment", "pixel") if kind == "joint" else ("pixel",)
    batch = (tf.constant(images), {head: target for head in heads})
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_model("unet", base_filters=2, depth=1, heads=heads)
        if weights is not None:
            model.set_weights(weights)
        optimizer = keras.optimizers.SGD(0.5)
        optimizer.build(model.trainable_variables)
        losses = build_losses(kind, extra=extra, extra_weight=2.0, cldice_iterations=3)
    start = [w.copy() for w in model.get_weights()]
    train_step, _ = build_steps(model, optimizer, losses, strategy)
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat(3))
    values = [float(train_step(b)["loss"]) for b in data]
    return start, model.get_weights(), values

for kind, extra in COMBINATIONS:
    start, single, single_values = steps(single_device, kind, extra, None)
    _, mirrored, mirrored_values = steps(mirrored_strategy, kind, extra, start)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(single, start))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored))
    loss_diff = max(abs(a - b) for a, b in zip(single_values, mirrored_values))
    print("RESULT", kind, extra, moved, diff, loss_diff, min(single_values + mirrored_values))
"""


@pytest.mark.slow
def test_mirrored_steps_with_each_extra_term_equal_the_single_device_steps():
    """3 steps over two logical CPUs update the weights as one device does, for each extra term and each
    base loss (each once: the extra term's reduction does not depend on the base loss)."""
    combinations = [("pixel", "cldice"), ("joint", "skeleton_recall")]
    script = f"COMBINATIONS = {combinations!r}\n" + MIRRORED_COMBOS_SCRIPT
    done = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert {(kind, extra) for kind, extra, *_ in rows} == set(combinations)
    for kind, extra, moved, diff, loss_diff, smallest in rows:
        moved, diff, loss_diff, smallest = map(float, (moved, diff, loss_diff, smallest))
        assert moved > 1e-4, (kind, extra)
        assert diff < 1e-4 * max(1.0, moved), (kind, extra, diff)
        assert loss_diff < 1e-4 and smallest > 0, (kind, extra, loss_diff)


@pytest.mark.slow
def test_cli_trains_joint_with_skeleton_recall_under_mirrored_strategy(synthetic_records, tmp_path):
    records = synthetic_records(count=4, size=96, seed=2)
    config = {
        "name": "tiny_skelrecall",
        "data": {"train_records": str(records), "validation_images": 1, "patch_size": 32, "batch_size": 4},
        "model": {"name": "unet", "options": {"base_filters": 4, "depth": 2}},
        "loss": {"kind": "joint"},
        "train": {"epochs": 1, "steps_per_epoch": 2, "validation_steps": 1, "seed": 1},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [CLI, "train", "--config", str(path), "--output", str(tmp_path / "run"), "--quiet",
         "--set", "loss.extra=skeleton_recall", "--set", "loss.extra_weight=0.5",
         "--set", "train.strategy=mirrored", "--set", "train.cpu_devices=2"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["strategy_class"] == "MirroredStrategy" and run["replicas"] == 2
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["loss"]["extra"] == "skeleton_recall" and saved["loss"]["extra_weight"] == 0.5
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header, first = history[0].split(","), history[1].split(",")
    row = dict(zip(header, first))
    assert all(np.isfinite(float(row[key])) for key in ("loss", "segment_loss", "pixel_loss"))

    import keras_vessel.models  # noqa: F401  registers the model's custom layers

    model = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    for head in ("segment", "pixel"):
        loss = model.loss[head]
        assert isinstance(loss, CombinedLoss) and isinstance(loss.losses[-1], SkeletonRecallLoss)
        assert loss.weights == [1.0, 0.5]
