"""segment_weights with a length_scale: reference skeleton pixels count 1/s towards ref_len.

The oracle (`helpers.oracle_weights`) is METHOD.md section 2, steps 2-4, per segment in NumPy
(scikit-image's thinning), with ``ref_len = sum over segment i's reference pixels of 1 / length_scale``.
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import oracle_weights

from keras_vessel.data.targets import length_scale, pack_targets
from keras_vessel.losses import SegmentLevelLoss, segment_weights


def one_segment():
    """A horizontal vessel 3 px thick and 16 px long; its region; its 16-pixel reference skeleton."""
    label = np.zeros((24, 24), np.float32)
    label[10:13, 4:20] = 1
    id_mask = np.zeros((24, 24), np.int32)
    id_mask[7:16, 2:22] = 1
    id_mask[11, 4:20] = -1
    return label, id_mask


def two_segments():
    """The same vessel cut into two segments of 8 reference pixels each, and a second vessel."""
    label = np.zeros((24, 32), np.float32)
    label[5:8, 2:30] = 1
    label[14:20, 4:28] = 1  # a wide one
    id_mask = np.zeros((24, 32), np.int32)
    id_mask[2:11, 1:16] = 1
    id_mask[2:11, 16:31] = 2
    id_mask[6, 3:11] = -1
    id_mask[6, 18:26] = -2
    id_mask[12:22, 2:30] = 3
    id_mask[17, 5:27] = -3
    return label, id_mask


def weights(prob, label, id_mask, scale=None):
    valid = np.ones_like(prob)
    given = None if scale is None else tf.constant(scale, tf.float32)
    return segment_weights(prob, label, id_mask, valid, length_scale=given).numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_length_scale_of_one_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    label, id_mask = two_segments()
    labels = np.stack([label] * 3)
    masks = np.stack([id_mask] * 3)
    prob = np.clip(labels * rng.uniform(0.3, 1.0, labels.shape) + rng.normal(0, 0.25, labels.shape), 0, 1)
    prob = prob.astype(np.float32)
    np.testing.assert_array_equal(weights(prob, labels, masks, np.ones_like(prob)), weights(prob, labels, masks))
    assert (weights(prob, labels, masks) != 1).any()  # the case has segments with sim != 1


# (line length in px, scale, w by hand): the prediction is a 1-px line along the reference skeleton,
# so pred_len = pred_area = length and T_pred = 1 when found; T_gt = 48 / (16 / s) = 3 s.
HAND = [
    (16, 1.0, 2 - (1 - 2 / 3)),  # T_gt 3: sim 1/3
    (16, 2.0, 2 - (1 - 5 / 6)),  # T_gt 6: sim 1/6
    (16, 0.5, 2.0),  # ref_len 32: 16 > 0.8 * 32 fails, missed
    (8, 1.0, 2.0),  # 8 > 0.8 * 16 fails, missed
    (8, 2.0, 2 - (1 - 5 / 6)),  # ref_len 8: 8 > 6.4, found, T_gt 6
    (14, 0.95, 1 + 1.85 / 2.85),  # ref_len 16.8: 14 > 13.5, found; T_gt 2.85
    (14, 0.9, 2.0),  # ref_len 17.8: 14 > 14.2 fails, missed
]


@pytest.mark.parametrize(("length", "scale", "by_hand"), HAND)
def test_reference_length_is_the_count_over_the_scale(length, scale, by_hand):
    label, id_mask = one_segment()
    prob = np.zeros_like(label)
    prob[11, 4:4 + length] = 1.0
    scales = np.full(label.shape, scale, np.float32)
    got = weights(prob[None], label[None], id_mask[None], scales[None])[0]
    expected = oracle_weights(prob, label, id_mask, np.ones_like(prob), scales)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    region = id_mask != 0
    np.testing.assert_allclose(got[region], by_hand, rtol=1e-6)
    np.testing.assert_array_equal(got[~region], 1.0)


@pytest.mark.parametrize("scale", [0.5, 0.8, 1.0, 1.7, 3.0])
@pytest.mark.parametrize("kind", ["exact", "thick", "thin", "short"])
def test_segment_weights_with_a_constant_scale_match_the_oracle(scale, kind):
    label, id_mask = two_segments()
    prob = {
        "exact": label,
        "thick": label + np.roll(label, 1, axis=0) + np.roll(label, -1, axis=0),
        "thin": (id_mask < 0) * 1.0,
        "short": label * (np.arange(label.shape[1]) < 20),
    }[kind]
    prob = np.clip(prob, 0, 1).astype(np.float32)
    scales = np.full(label.shape, scale, np.float32)
    got = weights(prob[None], label[None], id_mask[None], scales[None])[0]
    np.testing.assert_allclose(got, oracle_weights(prob, label, id_mask, np.ones_like(prob), scales), rtol=1e-5)


def test_each_image_of_a_batch_uses_its_own_scale():
    label, id_mask = one_segment()
    prob = np.zeros_like(label)
    prob[11, 4:20] = 1.0
    batch = [np.stack([a] * 3) for a in (prob, label, id_mask)]
    scales = np.stack([np.full(label.shape, s, np.float32) for s in (1.0, 2.0, 0.5)])
    got = weights(*batch, scales)
    region = id_mask != 0
    for k, by_hand in enumerate([5 / 3, 11 / 6, 2.0]):
        np.testing.assert_allclose(got[k][region], by_hand, rtol=1e-6)


def test_the_segment_level_loss_reads_the_length_scale_channel():
    label, id_mask = two_segments()
    prob = np.clip(label + np.roll(label, 1, axis=0), 0, 1)
    logits = tf.constant((prob * 8 - 4)[None, ..., None], tf.float32)
    parts = [a[None] for a in (label, np.ones_like(label), id_mask, np.zeros_like(label))]
    loss = SegmentLevelLoss()
    four = loss(pack_targets(*parts), logits)
    ones = loss(pack_targets(*parts, np.ones_like(label)[None]), logits)
    doubled = loss(pack_targets(*parts, np.full_like(label, 2.0)[None]), logits)
    assert float(ones) == pytest.approx(float(four), rel=1e-6)
    assert abs(float(doubled) - float(four)) > 1e-3 * float(four)


def test_length_scale_channel():
    parts = [np.zeros((2, 4, 5), np.float32)] * 4
    four = pack_targets(*parts)
    np.testing.assert_array_equal(length_scale(four).numpy(), np.ones((2, 4, 5)))
    scale = np.arange(40, dtype=np.float32).reshape(2, 4, 5) / 10 + 0.5
    np.testing.assert_array_equal(length_scale(pack_targets(*parts, scale)).numpy(), scale)
    with pytest.raises(ValueError, match=r"`y_true` must have shape \(\.\.\., H, W, 4\) or \(\.\.\., H, W, 5\)"):
        length_scale(np.zeros((2, 4, 5, 3), np.float32))


def test_length_scale_argument_is_checked():
    label, id_mask = one_segment()
    with pytest.raises(ValueError, match=r"`length_scale` must have shape \(B, H, W\) or \(B, H, W, 1\)"):
        segment_weights(label[None], label[None], id_mask[None], label[None], length_scale=np.ones((1, 24, 24, 2)))
