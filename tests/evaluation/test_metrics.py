"""Tests for keras_vessel.evaluation.metrics against scikit-learn, scikit-image and NumPy oracles."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk as draw_disk
from skimage.filters import threshold_otsu
from skimage.measure import euler_number
from skimage.measure import label as cc_label
from sklearn.metrics import matthews_corrcoef, roc_auc_score, roc_curve

from keras_vessel.evaluation import metrics


def _random_case(seed: int, shape=(40, 50), levels: int | None = None):
    rng = np.random.default_rng(seed)
    label = rng.random(shape) < 0.3
    prob = np.clip(0.35 * label + rng.random(shape) * 0.7, 0, 1).astype(np.float32)
    if levels:  # quantised probabilities: many ties
        prob = (np.round(prob * levels) / levels).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fov = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 2.2) ** 2
    return prob, label, fov


def _binned(prob: np.ndarray) -> np.ndarray:
    """NumPy oracle of the counted scores: each probability at the lower edge of its bin."""
    bins = metrics.SCORE_BINS
    return np.minimum(np.floor(np.asarray(prob, np.float64) * bins), bins - 1) / bins


# ---------------------------------------------------------------- confusion metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_metrics_match_numpy_and_sklearn(seed):
    prob, label, fov = _random_case(seed)
    out = metrics.confusion_metrics(prob, label, fov, threshold=0.5)
    p, g = prob[fov] >= 0.5, label[fov]
    tp, fp = np.sum(p & g), np.sum(p & ~g)
    fn, tn = np.sum(~p & g), np.sum(~p & ~g)
    assert (out["TP"], out["FP"], out["FN"], out["TN"]) == (tp, fp, fn, tn)
    assert out["Se"] == pytest.approx(tp / (tp + fn))
    assert out["Sp"] == pytest.approx(tn / (tn + fp))
    assert out["Acc"] == pytest.approx((tp + tn) / fov.sum())
    assert out["precision"] == pytest.approx(tp / (tp + fp))
    assert out["F1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert out["MCC"] == pytest.approx(matthews_corrcoef(g, p))


def test_confusion_metrics_fov_really_excludes():
    prob, label, fov = _random_case(3)
    base = metrics.confusion_metrics(prob, label, fov)
    # Scramble everything outside the FOV: nothing may change.
    prob2, label2 = prob.copy(), label.copy()
    prob2[~fov] = 1.0
    label2[~fov] = False
    assert metrics.confusion_metrics(prob2, label2, fov) == base
    assert base["TP"] + base["FP"] + base["TN"] + base["FN"] == fov.sum()
    # ... and without the FOV it does change.
    assert metrics.confusion_metrics(prob2, label2) != base


def test_confusion_metrics_bool_prediction_ignores_threshold_and_inputs_unchanged():
    prob, label, fov = _random_case(4)
    binary = prob >= 0.7
    before = binary.copy()
    assert metrics.confusion_metrics(binary, label, fov, threshold=0.1) == metrics.confusion_metrics(
        prob, label, fov, threshold=0.7
    )
    np.testing.assert_array_equal(binary, before)


def test_confusion_metrics_empty_prediction_gives_zero_not_nan():
    label = np.zeros((8, 8), bool)
    label[2:4, 2:6] = True
    out = metrics.confusion_metrics(np.zeros((8, 8), np.float32), label)
    assert out["precision"] == 0.0 and out["F1"] == 0.0 and out["MCC"] == 0.0
    assert out["Sp"] == 1.0 and out["Se"] == 0.0


def test_confusion_metrics_rejects_bad_input():
    prob, label, fov = _random_case(0)
    with pytest.raises(ValueError, match="`label` must have the same shape"):
        metrics.confusion_metrics(prob, label[:-1], fov)
    with pytest.raises(ValueError, match="`fov` must be binary"):
        metrics.confusion_metrics(prob, label, fov * 3)
    with pytest.raises(TypeError, match="`threshold` must be a number"):
        metrics.confusion_metrics(prob, label, fov, threshold="0.5")
    with pytest.raises(ValueError, match="2-D"):
        metrics.confusion_metrics(prob[None], label, fov)


# ---------------------------------------------------------------- ROC / AUC


@pytest.mark.parametrize("levels", [None, 10, 3])
def test_per_image_auc_matches_sklearn_with_and_without_ties(levels):
    prob, label, fov = _random_case(5, levels=levels)
    expected = roc_auc_score(label[fov], _binned(prob[fov]))
    assert metrics.roc_auc(prob, label, fov) == pytest.approx(expected, abs=1e-12)


def test_pooled_auc_matches_sklearn_on_concatenated_fov_pixels():
    cases = [_random_case(s, shape=(30 + s, 45), levels=20 if s % 2 else None) for s in range(4)]
    probs, labels, fovs = zip(*cases)
    expected = roc_auc_score(
        np.concatenate([g[f] for g, f in zip(labels, fovs)]),
        np.concatenate([_binned(p[f]) for p, f in zip(probs, fovs)]),
    )
    assert metrics.pooled_auc(probs, labels, fovs) == pytest.approx(expected, abs=1e-12)
    # pooled differs from the mean of per-image AUCs in general, but both are valid AUCs
    per_image = np.mean([metrics.roc_auc(p, g, f) for p, g, f in cases])
    assert 0.5 < per_image < 1.0


def test_auc_ignores_outside_fov():
    prob, label, fov = _random_case(6)
    prob2 = prob.copy()
    prob2[~fov & ~label] = 1.0  # would wreck the AUC if counted
    assert metrics.roc_auc(prob2, label, fov) == metrics.roc_auc(prob, label, fov)
    assert metrics.roc_auc(prob2, label) < metrics.roc_auc(prob, label, fov)


def test_roc_curve_points_match_sklearn():
    prob, label, fov = _random_case(7, levels=50)
    fpr, tpr, thr = metrics.roc_curve_points(prob, label, fov)
    ref_fpr, ref_tpr, _ = roc_curve(label[fov], prob[fov], drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert thr[0] == np.inf and np.all(np.diff(thr) < 0)
    small = metrics.roc_curve_points(prob, label, fov, max_points=10)
    assert len(small[0]) <= 10 and small[0][0] == 0 and small[0][-1] == 1


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both vessel and background"):
        metrics.roc_auc(np.ones((4, 4)), np.ones((4, 4), bool))


# ---------------------------------------------------------------- thresholds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_otsu_threshold_matches_skimage_on_fov_pixels(seed):
    prob, _, fov = _random_case(seed)
    prob = prob ** (1 + seed)  # skewed histograms
    assert metrics.otsu_threshold(prob, fov) == pytest.approx(threshold_otsu(prob[fov]), rel=1e-6)
    assert metrics.otsu_threshold(prob) == pytest.approx(threshold_otsu(prob), rel=1e-6)


def test_otsu_threshold_constant_map():
    assert metrics.otsu_threshold(np.full((5, 5), 0.3)) == pytest.approx(0.3)


def _brute_force_best_accuracy(probs, labels, fovs):
    p = _binned(np.concatenate([x[f] for x, f in zip(probs, fovs)]))
    g = np.concatenate([x[f] for x, f in zip(labels, fovs)])
    candidates = np.concatenate([np.unique(p), [p.max() + 1]])
    return max(np.mean((p >= t) == g) for t in candidates), p, g


@pytest.mark.parametrize("levels", [None, 7])
def test_accuracy_optimal_threshold_is_exact_for_the_binned_scores(levels):
    cases = [_random_case(s, shape=(20, 25), levels=levels) for s in range(3)]
    probs, labels, fovs = zip(*cases)
    t = metrics.accuracy_optimal_threshold(probs, labels, fovs)
    best, p, g = _brute_force_best_accuracy(probs, labels, fovs)
    assert np.mean((p >= t) == g) == pytest.approx(best)
    raw = np.concatenate([x[f] for x, f in zip(probs, fovs)])
    np.testing.assert_array_equal(raw >= t, p >= t)  # t splits the raw scores as the binned ones


def test_accuracy_optimal_threshold_separable_case_lies_between_classes():
    label = np.zeros((10, 10), bool)
    label[:, :3] = True
    prob = np.where(label, 0.8, 0.2).astype(np.float32)
    t = metrics.accuracy_optimal_threshold([prob], [label])
    assert 0.2 < t <= 0.8


# ---------------------------------------------------------------- thin / thick


def _two_vessels(shape=(64, 96)):
    """A 1-px wide and a 7-px wide straight vessel, long enough to form segments."""
    label = np.zeros(shape, bool)
    label[16, 8:88] = True  # thin: width 1
    label[40:47, 8:88] = True  # thick: width 7
    return label


def test_thin_thick_split_on_vessels_of_known_width():
    pytest.importorskip("keras_vessel.data.segments", reason="keras_vessel.data.segments not written yet")
    label = _two_vessels()
    fov = np.ones_like(label)
    thickness = metrics.vessel_thickness(label, fov)
    assert np.all(np.isfinite(thickness[label]))  # "nearest" covers every vessel pixel
    assert np.all(np.isnan(thickness[~label]))
    assert np.nanmax(thickness[16]) <= 2.0
    assert np.nanmin(thickness[40:47]) > 2.0
    # Predict only the thick vessel: Se_thick = 1, Se_thin = 0.
    pred = np.zeros_like(label)
    pred[40:47, 8:88] = True
    out = metrics.thin_thick_sensitivity(pred, label, fov, thickness=thickness)
    assert out["Se_thick"] == 1.0 and out["Se_thin"] == 0.0
    assert out["n_thin"] == label[16].sum() and out["n_thick"] == label[40:47].sum()
    # Predict the thin vessel only: the reverse; a wider thin limit moves it to thin.
    out = metrics.thin_thick_sensitivity(label & ~pred, label, fov)
    assert out["Se_thin"] == 1.0 and out["Se_thick"] == 0.0
    assert metrics.thin_thick_sensitivity(pred, label, fov, thin_max_width=100)["n_thick"] == 0


def test_thin_thick_uses_only_fov():
    pytest.importorskip("keras_vessel.data.segments", reason="keras_vessel.data.segments not written yet")
    label = _two_vessels()
    fov = np.ones_like(label)
    fov[:, 48:] = False
    out = metrics.thin_thick_sensitivity(label, label, fov)
    assert out["n_thin"] + out["n_thick"] == (label & fov).sum()


def test_thin_thick_rejects_bad_width():
    label = _two_vessels()
    with pytest.raises(ValueError, match="`thin_max_width` must be a positive number"):
        metrics.thin_thick_sensitivity(label, label, thin_max_width=0, thickness=np.ones(label.shape))


# ---------------------------------------------------------------- topology


def _ring(shape=(40, 40), centre=(20, 20), r_out=10, r_in=6):
    mask = np.zeros(shape, bool)
    mask[draw_disk(centre, r_out, shape=shape)] = True
    mask[draw_disk(centre, r_in, shape=shape)] = False
    return mask


def test_betti_numbers_of_known_shapes():
    ring = _ring()
    assert metrics.betti_numbers(ring) == (1, 1)
    two_rings = np.zeros((40, 80), bool)
    two_rings[:, :40] = ring
    two_rings[:, 40:] = ring
    two_rings[5:7, 50:60] = True  # a separate bar
    assert metrics.betti_numbers(two_rings) == (3, 2)
    # A diagonal one-pixel curve is ONE 8-connected component and encloses no hole.
    diag = np.eye(20, dtype=bool)
    assert metrics.betti_numbers(diag) == (1, 0)
    # A closed diagonal diamond encloses a hole only because holes are 4-connected.
    diamond = np.zeros((21, 21), bool)
    for i in range(11):
        for y, x in ((10 - i, i), (10 + i, i), (i, 10 + i), (20 - i, 10 + i)):
            diamond[y, x] = True
    assert metrics.betti_numbers(diamond) == (1, 1)


@pytest.mark.parametrize("seed", range(4))
def test_betti_numbers_agree_with_euler_number(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((30, 30)) < 0.45
    b0, b1 = metrics.betti_numbers(mask)
    assert b0 == cc_label(mask, connectivity=2).max()
    assert b0 - b1 == euler_number(mask, connectivity=2)


def test_betti_hole_opened_by_fov_is_not_a_hole():
    ring = _ring()
    fov = np.ones_like(ring)
    assert metrics.betti_numbers(ring, fov)[1] == 1
    fov[18:23, :] = False  # cuts the ring in two; the inside now touches the outside
    assert metrics.betti_numbers(ring, fov) == (2, 0)


def test_cldice_against_numpy_oracle_and_identity():
    from skimage.morphology import skeletonize

    ring = _ring()
    assert metrics.cldice_score(ring, ring) == 1.0
    pred = ring.copy()
    pred[:, :20] = False  # half the ring missing
    sp, sg = skeletonize(pred), skeletonize(ring)
    tprec = (sp & ring).sum() / sp.sum()
    tsens = (sg & pred).sum() / sg.sum()
    assert metrics.cldice_score(pred, ring) == pytest.approx(2 * tprec * tsens / (tprec + tsens))
    assert metrics.cldice_score(np.zeros_like(ring), ring) == 0.0


def test_cal_identity_is_one_and_degrades():
    ring = _ring()
    assert metrics.cal_score(ring, ring) == {"C": 1.0, "A": 1.0, "L": 1.0, "CAL": 1.0}
    broken = ring.copy()
    broken[18:23, :] = False
    out = metrics.cal_score(broken, ring)
    assert out["C"] == pytest.approx(1 - 1 / ring.sum())  # 2 components vs 1
    assert out["A"] < 1 and out["CAL"] < 1
    # A one-pixel shift stays inside the alpha/beta = 2 tolerance for A and L.
    shifted = np.roll(ring, 1, axis=1)
    out = metrics.cal_score(shifted, ring)
    assert out["A"] == 1.0 and out["L"] == 1.0


def test_topology_metrics_respects_fov():
    ring = _ring()
    noisy = ring.copy()
    noisy[0:3, 0:3] = True  # spurious blob outside the FOV
    fov = np.zeros_like(ring)
    fov[5:35, 5:35] = True
    out = metrics.topology_metrics(noisy, ring, fov)
    assert out["betti0_error"] == 0 and out["betti1_error"] == 0
    assert out["clDice"] == 1.0 and out["CAL"] == 1.0
    assert metrics.topology_metrics(noisy, ring)["betti0_error"] == 1


def test_score_counts_accumulator_matches_functions():
    cases = [_random_case(s, shape=(25, 30), levels=12 if s else None) for s in range(3)]
    probs, labels, fovs = zip(*cases)
    acc = metrics.ScoreCounts()
    for p, g, f in cases:
        acc.add(p, g, f)
    assert acc.images == 3
    assert acc.auc() == pytest.approx(metrics.pooled_auc(probs, labels, fovs), abs=1e-12)
    assert acc.accuracy_optimal_threshold() == metrics.accuracy_optimal_threshold(probs, labels, fovs)
    np.testing.assert_array_equal(acc.roc_curve()[0], metrics.roc_curve_points(probs, labels, fovs)[0])
    with pytest.raises(ValueError, match="no image was added"):
        metrics.ScoreCounts().auc()


def test_score_counts_pools_many_images_exactly_whenever_read():
    # Images of different sizes and shared tied scores, read between adds and
    # at the end: every reading is the pool of the pixels added so far, against
    # scikit-learn on the concatenated binned pixels (and within the stated
    # tolerance of it on the raw ones).
    rng = np.random.default_rng(7)
    acc = metrics.ScoreCounts()
    scores, truths = [], []
    for i in range(11):
        shape = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
        prob = rng.random(shape).astype(np.float32)
        if i % 3 == 0:
            prob = np.round(prob * 8) / 8  # ties within and across images
        label = rng.random(shape) < 0.3
        fov = rng.random(shape) < 0.9
        label[0, 0], label[0, 1], fov[0, :2] = True, False, True
        acc.add(prob, label, fov)
        scores.append(prob[fov]), truths.append(label[fov])
        if i in (2, 3, 7, 10):
            values, pos, neg = acc.counts
            assert np.all(np.diff(values) < 0)
            assert pos.sum() == sum(t.sum() for t in truths)
            assert neg.sum() == sum((~t).sum() for t in truths)
            binned = _binned(np.concatenate(scores))
            np.testing.assert_array_equal(values, np.unique(binned)[::-1])
            expected = roc_auc_score(np.concatenate(truths), binned)
            assert acc.auc() == pytest.approx(expected, abs=1e-12)
            raw = roc_auc_score(np.concatenate(truths), np.concatenate(scores))
            assert abs(acc.auc() - raw) <= acc.auc_tolerance() + 1e-12
    assert acc.images == 11


def _vessel_like_pool(count: int, shape=(160, 200)):
    """Probability maps with (nearly) every FOV score distinct, as a network's are."""
    rng = np.random.default_rng(11)
    cases = []
    for _ in range(count):
        label = rng.random(shape) < 0.12
        logit = np.where(label, 2.0, -2.5) + rng.normal(0, 1.6, shape)
        prob = (1 / (1 + np.exp(-logit))).astype(np.float32)
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        fov = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 2.1) ** 2
        cases.append((prob, label, fov))
    return cases


def _exact_best_threshold(p: np.ndarray, g: np.ndarray) -> float:
    """NumPy oracle of the unbinned rule: best distinct score, midway to the next lower one."""
    values = np.unique(-p.astype(np.float64))  # the distinct scores, negated: increasing
    order = np.argsort(-p, kind="stable")
    vessel = np.cumsum(g[order])
    background = np.cumsum(~g[order])
    ends = np.searchsorted(-p[order], values, side="right") - 1  # last pixel of each distinct score
    correct = np.r_[(~g).sum(), vessel[ends] + (~g).sum() - background[ends]]
    best = int(np.argmax(correct)) - 1
    distinct = -values
    return float((distinct[best] + distinct[best + 1]) / 2)


def test_score_counts_match_exact_scores_on_maps_with_distinct_scores():
    cases = _vessel_like_pool(4)
    acc = metrics.ScoreCounts()
    for case in cases:
        acc.add(*case)
    p = np.concatenate([prob[fov] for prob, _, fov in cases])
    g = np.concatenate([label[fov] for _, label, fov in cases])
    assert np.unique(p).size > 0.95 * p.size
    exact = roc_auc_score(g, p)
    assert abs(acc.auc() - exact) <= acc.auc_tolerance() <= 1e-6
    t, t_exact = acc.accuracy_optimal_threshold(), _exact_best_threshold(p, g)
    assert abs(t - t_exact) <= 1 / metrics.SCORE_BINS
    assert np.mean((p >= t) == g) == pytest.approx(np.mean((p >= t_exact) == g), abs=1 / p.size)


def test_score_counts_do_not_depend_on_the_order_images_are_added_in():
    cases = _vessel_like_pool(3, shape=(40, 50)) + [_random_case(1, levels=9)]
    forward, backward = metrics.ScoreCounts(), metrics.ScoreCounts()
    for case in cases:
        forward.add(*case)
    for case in reversed(cases):
        backward.add(*case)
    for a, b in zip(forward.counts, backward.counts):
        np.testing.assert_array_equal(a, b)
    assert forward.auc() == backward.auc()
    assert forward.accuracy_optimal_threshold() == backward.accuracy_optimal_threshold()


def test_score_counts_memory_does_not_grow_with_the_pixels_added():
    import tracemalloc

    rng = np.random.default_rng(3)
    shape = (300, 300)
    label = rng.random(shape) < 0.1
    acc = metrics.ScoreCounts()
    acc.add(rng.random(shape), label)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(8):  # 720,000 distinct scores more: 14 MB for (score, count, count) per score
            acc.add(rng.random(shape), label)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000
    assert acc.counts[0].size <= metrics.SCORE_BINS


def test_score_counts_edges_and_bad_scores():
    label = np.array([[True, False, True, False]])
    acc = metrics.ScoreCounts()
    acc.add(np.array([[1.0, 0.0, 1.0, 1.0]]), label)
    edges, vessel, background = acc.counts
    np.testing.assert_array_equal(edges, [1 - 1 / metrics.SCORE_BINS, 0.0])  # p = 1 counts in the last bin
    np.testing.assert_array_equal(vessel, [2, 0]), np.testing.assert_array_equal(background, [1, 1])
    nothing = metrics.ScoreCounts()
    nothing.add(np.array([[1.0, 0.9]]), np.array([[False, False]]))
    assert nothing.accuracy_optimal_threshold() > 1.0  # nothing is vessel: above every score, p = 1 included
    for bad in (1.5, -0.1, np.nan):
        with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
            metrics.ScoreCounts().add(np.array([[bad, 0.5]]), label[:, :2])


def _camera(seed: int, images: int, shift: float, shape=(40, 50)):
    """A camera's images: scores of vessel and background pixels around a camera-specific level."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(images):
        label = rng.random(shape) < 0.15
        logit = np.where(label, 1.5, -1.5) + shift + rng.normal(0, 1.2, shape)
        cases.append(((np.round(1 / (1 + np.exp(-logit)), 3)).astype(np.float32), label, None))
    return cases


def _mean_accuracy_oracle(cameras, threshold: float) -> float:
    """NumPy oracle: each camera's pooled accuracy of ``p >= t`` on its binned scores, averaged."""
    accuracies = []
    for cases in cameras:
        p = np.concatenate([_binned(prob).ravel() for prob, _, _ in cases])
        g = np.concatenate([label.ravel() for _, label, _ in cases])
        accuracies.append(np.mean((p >= threshold) == g))
    return float(np.mean(accuracies))


def test_the_camera_balanced_threshold_maximises_the_mean_of_the_cameras_accuracies():
    # a camera of many images scoring high, two of few images scoring low: pooled pixels follow the first
    cameras = [_camera(1, 12, shift=1.5), _camera(2, 2, shift=-1.0), _camera(3, 3, shift=-0.5)]
    groups = []
    for cases in cameras:
        counts = metrics.ScoreCounts()
        for case in cases:
            counts.add(*case)
        groups.append(counts)
    balanced = metrics.camera_balanced_threshold(groups)
    candidates = np.unique(np.concatenate([_binned(prob).ravel() for cases in cameras for prob, _, _ in cases]))
    best = max(_mean_accuracy_oracle(cameras, t) for t in candidates)
    assert _mean_accuracy_oracle(cameras, balanced) == pytest.approx(best, abs=1e-12)
    pooled = metrics.ScoreCounts()
    for group in groups:
        pooled.merge(group)
    every_case = [case for cases in cameras for case in cases]
    assert pooled.accuracy_optimal_threshold() == metrics.accuracy_optimal_threshold(
        [c[0] for c in every_case], [c[1] for c in every_case])  # merge = adding the images one by one
    assert pooled.images == 17
    assert _mean_accuracy_oracle(cameras, pooled.accuracy_optimal_threshold()) < best - 0.005  # it matters here
    # one camera: its own accuracy-optimal threshold
    assert metrics.camera_balanced_threshold(groups[:1]) == groups[0].accuracy_optimal_threshold()


def test_the_camera_balanced_threshold_needs_images_in_every_camera():
    with pytest.raises(ValueError, match="empty"):
        metrics.camera_balanced_threshold([])
    with pytest.raises(ValueError, match=r"groups\[0\]"):
        metrics.camera_balanced_threshold([metrics.ScoreCounts()])
