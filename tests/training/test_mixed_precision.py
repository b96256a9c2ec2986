"""mixed_float16 training (issue 23): dynamic loss scaling in the shared custom step, on a CPU for correctness."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vessel.config import RunConfig, TrainConfig
from keras_vessel.losses import build_losses
from keras_vessel.models import build_model
from keras_vessel.training import build_steps
from keras_vessel.training.components import make_optimizer
from keras_vessel.training.strategy import precision_policy


@pytest.fixture
def policy():
    """Set a global dtype policy for one test and always restore float32."""
    def use(name: str) -> None:
        keras.config.set_dtype_policy(name)

    yield use
    keras.config.set_dtype_policy("float32")


def batch(seed: int = 0):
    from keras_vessel.data.targets import pack_targets

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    label = (rng.random((2, 16, 16)) > 0.7).astype("float32")
    target = pack_targets(label, np.ones_like(label), np.zeros_like(label), label)
    return images, {"pixel": target}


def one_step(precision, weights=None, optimizer="adam", learning_rate=0.01):
    keras.config.set_dtype_policy(precision_policy(precision))
    keras.utils.set_random_seed(3)
    model = build_model("unet", base_filters=4, depth=1, heads=("pixel",))
    if weights is not None:
        model.set_weights(weights)
    optimizer = make_optimizer(RunConfig(train=TrainConfig(mixed_precision=precision, optimizer=optimizer,
                                                           learning_rate=learning_rate)))
    losses = build_losses("pixel")
    optimizer.build(model.trainable_variables)
    train_step, _ = build_steps(model, optimizer, losses, tf.distribute.get_strategy())
    values = train_step(batch())
    return model, optimizer, {k: float(v) for k, v in values.items()}, train_step


def test_the_policies_of_the_option():
    assert [precision_policy(v) for v in (False, True, "bfloat16", "float16")] == [
        "float32", "mixed_bfloat16", "mixed_bfloat16", "mixed_float16"]


def test_a_float16_step_with_loss_scaling_equals_a_float32_step(policy):
    # SGD: the update is the unscaled gradient times the rate, so this compares gradients. (Adam's first
    # step is the rate times the gradient's sign for every weight, which flips on near-zero gradients where
    # float16 and float32 legitimately differ, e.g. on CPUs with native float16 arithmetic.)
    sgd = {"optimizer": "sgd", "learning_rate": 0.1}
    reference, _, values32, _ = one_step(False, **sgd)
    start = [w.copy() for w in reference.get_weights()]
    reference, _, values32, _ = one_step(False, start, **sgd)
    policy("mixed_float16")
    model, optimizer, values16, _ = one_step("float16", start, **sgd)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(optimizer.dynamic_scale) == 2.0**15  # the step was applied, not skipped
    assert values16["loss"] == pytest.approx(values32["loss"], rel=2e-2)
    for w16, w32, w0 in zip(model.get_weights(), reference.get_weights(), start):
        moved32 = np.abs(w32 - w0).max()
        assert np.abs(w16.astype(np.float32) - w32).max() <= 0.1 * moved32 + 1e-5  # the same update, in float16
    assert model.get_layer("pixel").compute_dtype == "float32"  # logits and losses stay float32


def test_an_overflowing_step_is_skipped_and_lowers_the_scale(policy):
    policy("mixed_float16")
    model, optimizer, _, train_step = one_step("float16")
    before = [w.copy() for w in model.get_weights()]
    optimizer.dynamic_scale.assign(1e30)  # the scaled loss overflows float16: every gradient is inf
    train_step(batch(1))
    assert float(optimizer.dynamic_scale) == pytest.approx(5e29)
    for after, was in zip(model.get_weights(), before):
        np.testing.assert_array_equal(after, was)  # the update was skipped


def test_the_loss_scale_is_kept_in_checkpoints(policy, tmp_path):
    policy("mixed_float16")
    model, optimizer, _, _ = one_step("float16")
    optimizer.dynamic_scale.assign(1024.0)
    tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    fresh_model, fresh, _, _ = one_step("float16")
    tf.train.Checkpoint(model=fresh_model, optimizer=fresh).restore(tf.train.latest_checkpoint(tmp_path))
    assert float(fresh.dynamic_scale) == 1024.0


@pytest.mark.parametrize("name", ["unet", "wnet"])
def test_a_model_trained_under_a_mixed_policy_is_saved_in_float32(policy, tmp_path, name):
    """model.keras must not carry bfloat16 into inference (20x slower on AVX2 CPUs, coarser maps)."""
    from keras_vessel.models.layers import nested_layers
    from keras_vessel.models.saving import float32_model, load_model_file, save_model_atomic

    options = {"base_filters": 4, "depth": 1} if name == "unet" else {}
    policy("mixed_bfloat16")
    keras.utils.set_random_seed(5)
    mixed = build_model(name, **options)
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in nested_layers(mixed)}
    save_model_atomic(mixed, tmp_path / "model.keras")
    policy("float32")
    saved = load_model_file(tmp_path / "model.keras")
    assert {layer.dtype_policy.name for layer in nested_layers(saved)} == {"float32"}
    assert float32_model(saved) is saved  # a float32 model is saved as it is
    for got, want in zip(saved.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)  # mixed policies keep float32 variables: nothing rounded
    reference = build_model(name, **options)  # the same network built in float32, the same weights
    reference.set_weights(mixed.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    got, want = saved.predict(images, verbose=0), reference.predict(images, verbose=0)
    assert sorted(got) == sorted(want)
    for head in want:
        np.testing.assert_allclose(got[head], want[head], rtol=0, atol=1e-6)
