"""Fine-tuning's pure parts: the step budget, the threshold rule (against a NumPy oracle), the photograph
matcher and the checks that run before anything is written."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from keras_vessel.errors import DatasetError
from keras_vessel.evaluation import IMAGES_LEFT_OUT_RULE, leave_one_image_out_threshold
from keras_vessel.training.finetune import (
    BUDGET_SHARE,
    MAX_EPOCHS,
    MIN_STEPS,
    base_model_path,
    check_photographs,
    schedule,
    steps_for_budget,
)
from keras_vessel.training.loop import StepTiming


# --- the budget -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, first, per_step, reserve, expected", [
    (600, 20.0, 0.5, 40.0, int(BUDGET_SHARE * 540 / 0.5)),
    (600, 0.0, 1.0, 0.0, int(BUDGET_SHARE * 600)),
    (30, 10.0, 0.25, 5.0, int(BUDGET_SHARE * 15 / 0.25)),
    (5, 20.0, 0.5, 0.0, MIN_STEPS),  # the budget is spent before training: the minimum, never zero
    (-3, 1.0, 0.5, 0.0, MIN_STEPS),
])
def test_minutes_turn_into_steps(seconds, first, per_step, reserve, expected):
    steps = steps_for_budget(seconds, StepTiming(first, per_step), reserve_seconds=reserve)
    assert steps == expected
    epochs, per_epoch = schedule(steps)
    assert epochs <= MAX_EPOCHS and epochs * per_epoch <= steps  # never more steps than the budget holds
    assert steps - epochs * per_epoch < epochs


def test_budget_rejects_a_timing_of_zero():
    with pytest.raises(ValueError, match="seconds_per_step` must be positive; got 0"):
        steps_for_budget(60, StepTiming(1.0, 0.0))
    with pytest.raises(ValueError, match="`steps` must be a positive int; got 0"):
        schedule(0)


# --- the threshold rule -----------------------------------------------------------------------------

def oracle_best(probs, labels) -> tuple[float, np.ndarray]:
    """Best pooled accuracy over every candidate cut 'p >= t' (t every distinct value, and above the max)."""
    p = np.concatenate([x.ravel() for x in probs])
    y = np.concatenate([x.ravel() for x in labels])
    candidates = np.append(np.unique(p), np.inf)
    accuracy = np.array([np.mean((p >= t) == y) for t in candidates])
    return accuracy.max(), p, y


@pytest.mark.parametrize("count", [3, 4, 5])
def test_the_threshold_is_the_median_of_leave_one_image_out_choices(count):
    rng = np.random.default_rng(count)
    probs, labels, fovs = [], [], []
    for i in range(count):
        label = rng.random((12, 10 + i)) < 0.3
        prob = np.clip(0.55 * label + rng.normal(0.25, 0.2, label.shape), 0, 1).round(2)  # rounded: ties
        fov = rng.random(label.shape) < 0.8
        probs.append(prob), labels.append(label), fovs.append(fov)
    chosen = leave_one_image_out_threshold(probs, labels, fovs)
    assert chosen.rule == IMAGES_LEFT_OUT_RULE.format(n=count)
    assert len(chosen.left_out) == count
    for i, t in enumerate(chosen.left_out):
        others = [j for j in range(count) if j != i]
        best, p, y = oracle_best([probs[j][fovs[j]] for j in others], [labels[j][fovs[j]] for j in others])
        assert np.mean((p >= t) == y) == pytest.approx(best)  # t_i is accuracy-optimal without image i
    assert chosen.value == pytest.approx(np.median(chosen.left_out))


@pytest.mark.parametrize("count", [1, 2])
def test_fewer_than_three_images_choose_on_themselves(count):
    rng = np.random.default_rng(7)
    labels = [rng.random((9, 9)) < 0.4 for _ in range(count)]
    probs = [np.clip(0.5 * label + rng.random(label.shape) * 0.6, 0, 1) for label in labels]
    chosen = leave_one_image_out_threshold(probs, labels, [None] * count)
    best, p, y = oracle_best(probs, labels)
    assert chosen.left_out is None and "themselves" in chosen.rule
    assert np.mean((p >= chosen.value) == y) == pytest.approx(best)


# --- photographs ----------------------------------------------------------------------------------

def write(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def fundus(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on black with a dark vertical 'vessel', and its label."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.45) ** 2
    image = np.zeros((size, size, 3), np.uint8)
    image[disc] = (200, 100, 50)
    label = disc & (np.abs(xx - size // 2) <= 1)
    image[label] = (90, 40, 20)
    return image, (label * 255).astype(np.uint8)


def test_unmatched_names_are_listed_in_one_sentence(tmp_path):
    from keras_vessel.data.datasets import open_labelled

    image, label = fundus()
    for name in ("a.jpg", "b.png", "c.tif"):
        write(tmp_path / "images" / name, image)
    write(tmp_path / "labels" / "a_label.png", label)
    write(tmp_path / "labels" / "z.png", label)
    with pytest.raises(DatasetError, match=r"no label in .*labels for 2 photographs: b, c; no photograph in "
                                           r".*images for 1 label: z.png \(a label or mask is matched"):
        open_labelled(tmp_path / "images", tmp_path / "labels")


def test_the_fov_is_predicts_without_masks_and_the_mask_with_them(tmp_path):
    from keras_vessel.data.datasets import open_labelled
    from keras_vessel.data.scaling import image_fov, prediction_region

    image, label = fundus()
    write(tmp_path / "images" / "a.png", image)
    write(tmp_path / "labels" / "a.png", label)
    [sample] = check_photographs(open_labelled(tmp_path / "images", tmp_path / "labels"))
    geometry = image_fov(image)
    np.testing.assert_array_equal(sample.fov, prediction_region(geometry.mask, geometry.found).numpy())
    write(tmp_path / "masks" / "a_mask.png", np.full((64, 64), 255, np.uint8))
    [sample] = check_photographs(open_labelled(tmp_path / "images", tmp_path / "labels", tmp_path / "masks"))
    assert sample.fov.all()


@pytest.mark.parametrize("role, folder", [("label", "labels"), ("FOV mask", "masks")])
def test_a_grey_level_label_or_mask_is_named_as_such_with_what_to_do(tmp_path, role, folder):
    from keras_vessel.data.datasets import open_labelled

    image, label = fundus()
    write(tmp_path / "images" / "a.png", image)
    write(tmp_path / "labels" / "a.png", label)
    write(tmp_path / "masks" / "a.png", np.full((64, 64), 255, np.uint8))
    write(tmp_path / folder / "a.png", np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))
    with pytest.raises(DatasetError, match=rf"^{role} \S+{folder}/a\.png is not binary: .* found 256: .*; save it "
                                           r"as a black-and-white PNG, 0 and 255 only"):
        check_photographs(open_labelled(tmp_path / "images", tmp_path / "labels", tmp_path / "masks"))


@pytest.mark.parametrize("argument", [{"minutes": math.inf}, {"minutes": math.nan}, {"minutes": 0},
                                      {"learning_rate_factor": math.inf}])
def test_a_budget_or_factor_that_is_not_a_finite_positive_number_is_refused_first(tmp_path, argument):
    """--minutes inf used to end in an OverflowError traceback after the photographs were prepared."""
    from keras_vessel.finetune import finetune

    [(name, value)] = argument.items()
    with pytest.raises(ValueError, match=rf"^`{name}` must be a finite number above 0; got {value!r}\.$"):
        finetune(tmp_path / "nowhere", tmp_path / "nowhere", tmp_path / "run", **argument)
    assert not (tmp_path / "run").exists()


def test_labels_of_another_size_and_without_vessels_are_refused(tmp_path):
    from keras_vessel.data.datasets import open_labelled

    image, label = fundus()
    write(tmp_path / "images" / "a.png", image)
    write(tmp_path / "labels" / "a.png", label[:50])
    with pytest.raises(DatasetError, match=r"size mismatch: .*labels/a.png is 64x50 \(WxH\) but its image .*a.png "
                                           r"is 64x64"):
        check_photographs(open_labelled(tmp_path / "images", tmp_path / "labels"))
    write(tmp_path / "labels" / "a.png", np.zeros_like(label))
    with pytest.raises(DatasetError, match="the label of photograph 'a' marks no vessel inside its field of view"):
        check_photographs(open_labelled(tmp_path / "images", tmp_path / "labels"))


def test_the_base_model_is_predicts_bundled_model_or_a_run_folders(tmp_path):
    from keras_vessel.models.inference import BUNDLED_MODEL

    assert base_model_path(None) == BUNDLED_MODEL
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder without model.keras"):
        base_model_path(tmp_path / "run")
    (tmp_path / "run" / "model.keras").write_bytes(b"")
    assert base_model_path(tmp_path / "run") == tmp_path / "run" / "model.keras"
