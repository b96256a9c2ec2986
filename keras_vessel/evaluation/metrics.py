"""FOV-restricted evaluation metrics for vessel maps (NumPy / scikit-image).

Every metric counts only pixels inside the field of view (FOV): results
scored on the whole image are not comparable with the literature (METHOD.md
section 5). Per-image metrics take one `(H, W)` map; pooled metrics take
sequences of maps.

Conventions, used everywhere in this module:

- A probability map `p` becomes a vessel mask with ``p >= threshold`` (the same
  rule as the segment-level loss, ``B = P >= 0.5``). A boolean map is already a
  mask and `threshold` is ignored.
- A ratio whose denominator is 0 (e.g. precision of an empty prediction) is
  0.0, as scikit-learn's ``zero_division=0``; MCC is 0.0 when undefined.
- Thin/thick split: by the ground-truth segment thickness T_gt of METHOD.md
  2.2 (`segments.thickness_map`); vessel pixels no segment covers (junctions,
  pieces shorter than 4 px) take the nearest segment's thickness by default
  (`vessel_thickness(unassigned=...)`), so thin + thick = all vessel pixels.
- Connectivity duality for topology: vessels (foreground) are 8-connected and
  background holes are 4-connected, so that a one-pixel diagonal vessel is one
  component and does not leak a hole through its diagonal gaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

__all__ = [
    "accuracy_optimal_threshold",
    "betti_numbers",
    "binarize",
    "cal_score",
    "camera_balanced_threshold",
    "cldice_score",
    "confusion_metrics",
    "otsu_threshold",
    "pooled_auc",
    "roc_auc",
    "roc_curve_points",
    "SCORE_BINS",
    "ScoreCounts",
    "thin_thick_sensitivity",
    "topology_metrics",
    "vessel_thickness",
]

# ---------------------------------------------------------------------------
# input checking


def _as_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D (H, W) map; got shape {array.shape}.")
    return array


def _as_mask(array: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = _as_2d(array, name)
    if array.shape != shape:
        raise ValueError(
            f"`{name}` must have the same shape as the prediction {shape}; got {array.shape}."
        )
    if array.dtype != bool:
        values = np.unique(array)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(
                f"`{name}` must be binary (bool or 0/1); got values {values[:5].tolist()}..."
            )
        array = array.astype(bool)
    return array


def _fov_or_all(fov: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if fov is None:
        return np.ones(shape, dtype=bool)
    return _as_mask(fov, "fov", shape)


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"`threshold` must be a number; got {threshold!r} ({type(threshold).__name__}).")
    if not math.isfinite(float(threshold)):
        raise ValueError(f"`threshold` must be finite; got {threshold!r}.")
    return float(threshold)


def binarize(prediction: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Vessel mask of a probability map (``p >= threshold``); a bool map is returned as is.

    Kept public so that evaluation, the CLI and the metrics all draw the line
    between vessel and background the same way.
    """
    prediction = _as_2d(prediction, "prediction")
    if prediction.dtype == bool:
        return prediction
    if not np.issubdtype(prediction.dtype, np.number):
        raise TypeError(f"`prediction` must be numeric or bool; got dtype {prediction.dtype}.")
    return prediction >= _check_threshold(threshold)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


# ---------------------------------------------------------------------------
# confusion-matrix metrics


def confusion_metrics(
    prediction: np.ndarray,
    label: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Se, Sp, Acc, precision, F1 and MCC of one image, counted inside the FOV.

    Parameters
    ----------
    prediction : (H, W) float probability map, or bool vessel mask.
    label : (H, W) bool ground truth.
    fov : (H, W) bool field of view; None counts every pixel.
    threshold : vessel if ``prediction >= threshold`` (ignored for bool maps).

    Returns
    -------
    dict with the counts ``TP, FP, TN, FN`` and ``Se, Sp, Acc, precision, F1, MCC``.
    """
    binary = binarize(prediction, threshold)
    label = _as_mask(label, "label", binary.shape)
    fov = _fov_or_all(fov, binary.shape)
    pred_in = binary[fov]
    true_in = label[fov]
    tp = int(np.count_nonzero(pred_in & true_in))
    fp = int(np.count_nonzero(pred_in & ~true_in))
    fn = int(np.count_nonzero(~pred_in & true_in))
    tn = int(pred_in.size - tp - fp - fn)
    se = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    # MCC in floating point: the product of the four sums overflows int64 on big images.
    den = math.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn))
    return {
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
        "Se": se,
        "Sp": _ratio(tn, tn + fp),
        "Acc": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "F1": _ratio(2 * tp, 2 * tp + fp + fn),
        "MCC": _ratio(float(tp) * tn - float(fp) * fn, den),
    }


# ---------------------------------------------------------------------------
# ROC and AUC (counted in score bins, `ScoreCounts`; ties handled as one step of the curve)


def _as_list(maps: np.ndarray | Sequence[np.ndarray] | None, name: str) -> list | None:
    if maps is None:
        return None
    if isinstance(maps, np.ndarray):
        if maps.ndim == 2:
            return [maps]
        if maps.ndim == 3:
            return list(maps)
        raise ValueError(f"`{name}` must be a 2-D map, a 3-D stack or a list of 2-D maps; got shape {maps.shape}.")
    maps = list(maps)
    if not maps:
        raise ValueError(f"`{name}` is empty; expected at least one map.")
    return maps


SCORE_BINS = 2**20
"""How many equal bins over [0, 1] pooled scores are counted in (`ScoreCounts`).

Bin k holds the scores ``k / SCORE_BINS <= p < (k + 1) / SCORE_BINS`` (the last
bin also ``p = 1``). A power of two, so ``p * SCORE_BINS`` is exact in floating
point and ``p >= k / SCORE_BINS`` holds exactly when p lies in bin k or above.
2**20 bins keep two int64 arrays of 8 MiB each; the stored probability PNGs of
`predict` have 2**16 levels.
"""


def _score_bins(score: np.ndarray) -> np.ndarray:
    """The `SCORE_BINS` bin of each score in [0, 1] (ValueError outside it or for NaN)."""
    if score.dtype not in (np.float32, np.float64):
        score = score.astype(np.float64)
    if score.size and not (score.min() >= 0 and score.max() <= 1):
        raise ValueError(
            f"scores must be probabilities in [0, 1]; got values from {score.min()} to {score.max()}."
        )
    bins = np.floor(score * SCORE_BINS).astype(np.intp)
    return np.minimum(bins, SCORE_BINS - 1, out=bins)


class ScoreCounts:
    """Pooled (#vessel, #background) counts of many images' FOV pixels, by score bin.

    Every FOV pixel is counted in its `SCORE_BINS` bin of [0, 1]: memory is two
    int64 arrays of `SCORE_BINS` counts (16 MiB) whatever the number of images
    or pixels, adding an image adds its counts, and the result does not depend
    on the order images are added in. Feeds the pooled ROC/AUC and the
    accuracy-optimal threshold, which are exact for the binned scores
    ``floor(p * SCORE_BINS) / SCORE_BINS``:

    - the ROC has one point per occupied bin, at its lower edge;
    - the AUC differs from the AUC of the unbinned scores only through pairs of
      a vessel and a background pixel with different scores in the same bin,
      which count half: by at most `auc_tolerance` (about 1e-7 to 1e-6 on
      real probability maps, where the measured difference is about 1e-9);
    - the accuracy-optimal threshold is a bin edge (or the middle of a run of
      empty bins), and its pooled accuracy is within one bin's pixels of the
      best over all thresholds.
    """

    def __init__(self) -> None:
        self._vessel = np.zeros(SCORE_BINS, dtype=np.int64)
        self._background = np.zeros(SCORE_BINS, dtype=np.int64)
        self.images = 0

    def add(self, prob: np.ndarray, label: np.ndarray, fov: np.ndarray | None = None) -> None:
        """Count the FOV pixels of one image (`prob` probabilities in [0, 1], or a bool mask)."""
        prob = _as_2d(prob, "prob")
        if prob.dtype == bool:
            prob = prob.astype(np.float32)
        label = _as_mask(label, "label", prob.shape)
        fov = _fov_or_all(fov, prob.shape)
        bins = _score_bins(prob[fov])
        everything = np.bincount(bins, minlength=SCORE_BINS)
        vessel = np.bincount(bins[label[fov]], minlength=SCORE_BINS)
        self._vessel += vessel
        self._background += everything - vessel
        self.images += 1

    def merge(self, other: "ScoreCounts") -> "ScoreCounts":
        """Add the counts of `other` (images counted elsewhere, e.g. another camera's) to these; returns self."""
        self._vessel += other._vessel
        self._background += other._background
        self.images += other.images
        return self

    @property
    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower edges of the occupied bins in decreasing order, #vessel, #background) in each."""
        if self.images == 0:
            raise ValueError("no image was added; call add(prob, label, fov) first.")
        occupied = np.flatnonzero(self._vessel + self._background)[::-1]
        if occupied.size == 0:
            raise ValueError(f"the {self.images} image(s) added have no pixel inside their FOV.")
        return occupied / SCORE_BINS, self._vessel[occupied], self._background[occupied]

    def roc_curve(self, *, max_points: int | None = None):
        """``(fpr, tpr, thresholds)``, as `roc_curve_points`."""
        return _thin_curve(*_roc_from_counts(*self.counts), max_points=max_points)

    def auc(self) -> float:
        """Pooled AUC, as `pooled_auc` (within `auc_tolerance` of the unbinned scores' AUC)."""
        fpr, tpr, _ = _roc_from_counts(*self.counts)
        return float(np.trapezoid(tpr, fpr))

    def auc_tolerance(self) -> float:
        """The most `auc` can differ from the AUC of the unbinned scores.

        Half the share of (vessel, background) pixel pairs that share a bin:
        such a pair counts 1/2 in `auc`, and 0, 1/2 or 1 with the exact scores.
        """
        _, vessel, background = self.counts
        pairs = float(vessel.sum()) * float(background.sum())
        return float(np.dot(vessel.astype(np.float64), background)) / (2 * pairs) if pairs else 0.0

    def accuracy_optimal_threshold(self) -> float:
        """As the function `accuracy_optimal_threshold`."""
        return _best_accuracy_threshold(*self.counts)


def _pooled_counts(probs, labels, fovs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = _as_list(probs, "probs")
    labels = _as_list(labels, "labels")
    fovs = _as_list(fovs, "fovs")
    if len(labels) != len(probs) or (fovs is not None and len(fovs) != len(probs)):
        raise ValueError(
            f"`probs`, `labels` and `fovs` must hold as many maps; got {len(probs)}, "
            f"{len(labels)} and {'None' if fovs is None else len(fovs)}."
        )
    pooled = ScoreCounts()
    for i, prob in enumerate(probs):
        prob = _as_2d(prob, f"probs[{i}]")
        label = _as_mask(labels[i], f"labels[{i}]", prob.shape)
        fov = None if fovs is None else _as_mask(fovs[i], f"fovs[{i}]", prob.shape)
        pooled.add(prob, label, fov)
    return pooled.counts


def _roc_from_counts(values, pos, neg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"ROC/AUC needs both vessel and background pixels inside the FOV; got "
            f"{n_pos} vessel and {n_neg} background pixels."
        )
    tps = np.concatenate([[0], np.cumsum(pos)])
    fps = np.concatenate([[0], np.cumsum(neg)])
    thresholds = np.concatenate([[np.inf], values]).astype(np.float64)
    return fps / n_neg, tps / n_pos, thresholds


def roc_curve_points(
    probs: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    fovs: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    max_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` over the FOV pixels of one or many images.

    Point k predicts vessel where ``p >= thresholds[k]``; the first point is
    ``(0, 0)`` at threshold ``inf``, the others are the lower edges of the
    occupied `SCORE_BINS` bins (`ScoreCounts`). `max_points` thins the curve for
    plotting (end points kept); leave it None when computing an area.
    """
    return _thin_curve(*_roc_from_counts(*_pooled_counts(probs, labels, fovs)), max_points=max_points)


def _thin_curve(fpr, tpr, thresholds, *, max_points: int | None):
    if max_points is not None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"`max_points` must be an int >= 2 or None; got {max_points!r}.")
        if fpr.size > max_points:
            keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(np.int64))
            fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return fpr, tpr, thresholds


def pooled_auc(
    probs: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    fovs: np.ndarray | Sequence[np.ndarray] | None = None,
) -> float:
    """Area under the ROC curve of all FOV pixels of all images taken together.

    This pooled AUC is the protocol that matches the authors' numbers (METHOD.md
    section 5). Ties count half, as in `sklearn.metrics.roc_auc_score`; scores
    are counted in `SCORE_BINS` bins, so two scores in one bin tie: the result is
    within `ScoreCounts.auc_tolerance` of the AUC of the unbinned scores.
    """
    fpr, tpr, _ = _roc_from_counts(*_pooled_counts(probs, labels, fovs))
    return float(np.trapezoid(tpr, fpr))


def roc_auc(prob: np.ndarray, label: np.ndarray, fov: np.ndarray | None = None) -> float:
    """AUC of one image inside its FOV (the per-image AUC that is then averaged)."""
    return pooled_auc([_as_2d(prob, "prob")], [label], None if fov is None else [fov])


# ---------------------------------------------------------------------------
# thresholds


def otsu_threshold(prob: np.ndarray, fov: np.ndarray | None = None, *, nbins: int = 256) -> float:
    """Otsu's threshold of one probability map, from the histogram of its FOV pixels only.

    Outside-FOV pixels (all near 0) would otherwise pull the threshold down.
    Same histogram and bin-centre convention as `skimage.filters.threshold_otsu`.
    """
    prob = _as_2d(prob, "prob")
    if not isinstance(nbins, int) or nbins < 2:
        raise ValueError(f"`nbins` must be an int >= 2; got {nbins!r}.")
    fov = _fov_or_all(fov, prob.shape)
    values = prob[fov].astype(np.float64)
    if values.size == 0:
        raise ValueError("`fov` is empty; Otsu's threshold needs at least one pixel.")
    lo, hi = values.min(), values.max()
    if lo == hi:
        return float(lo)
    hist, edges = np.histogram(values, bins=nbins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = np.cumsum(hist * centres) / w1
        m2 = (np.cumsum((hist * centres)[::-1]) / w2[::-1])[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[int(np.nanargmax(between))])


def accuracy_optimal_threshold(
    probs: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    fovs: np.ndarray | Sequence[np.ndarray] | None = None,
) -> float:
    """The single threshold maximising pooled FOV accuracy over the given images.

    Meant for TRAINING images only (never tune on the test set). The candidates
    are the lower edges of the occupied `SCORE_BINS` bins (`ScoreCounts`), all
    evaluated at once from cumulative counts, so memory does not grow with the
    pixels pooled and the pooled accuracy at the result is within one bin's
    pixels of the best over every threshold. Returns the best candidate, or the
    middle of the empty bins below it when the next lower bin is empty (a margin
    for new images); ``p >= t`` reproduces its accuracy on these images. Ties go
    to the higher threshold; nothing is vessel when that is best (t above every
    score).
    """
    return _best_accuracy_threshold(*_pooled_counts(probs, labels, fovs))


def camera_balanced_threshold(groups: Sequence[ScoreCounts]) -> float:
    """The threshold maximising the mean of the groups' FOV accuracies: each group weighs the same.

    `groups` are the `ScoreCounts` of, e.g., each training camera's images. The pooled
    `accuracy_optimal_threshold` weighs every pixel the same, so the camera with the most pixels sets it;
    here a camera of 20 small photographs counts as much as one of 40 large ones. The candidates and the
    margin are those of `accuracy_optimal_threshold` (edges of the bins occupied in any group); one group
    gives its accuracy-optimal threshold.
    """
    groups = list(groups)
    if not groups:
        raise ValueError("`groups` is empty; need the counts of at least one group of images.")
    for i, group in enumerate(groups):
        if group.images == 0:
            raise ValueError(f"`groups[{i}]` has no image; add its images first.")
    vessel = np.stack([group._vessel for group in groups])
    background = np.stack([group._background for group in groups])
    occupied = np.flatnonzero((vessel + background).sum(axis=0))[::-1]
    if occupied.size == 0:
        raise ValueError("the groups have no pixel inside their FOVs.")
    return _best_accuracy_threshold(occupied / SCORE_BINS, vessel[:, occupied], background[:, occupied])


def _best_accuracy_threshold(edges: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """The threshold of `accuracy_optimal_threshold` from `ScoreCounts.counts`.

    With 2-D `pos` and `neg` (a row of counts per group, columns at `edges`), the threshold maximising the
    mean of the groups' accuracies (`camera_balanced_threshold`).
    """
    pos, neg = np.atleast_2d(pos), np.atleast_2d(neg)
    n_neg = neg.sum(axis=1, keepdims=True)
    # Candidate k: vessel where p >= edges[k]; candidate -1 (above every bin): nothing is vessel.
    correct = np.concatenate([n_neg, np.cumsum(pos, axis=1) + (n_neg - np.cumsum(neg, axis=1))], axis=1)
    totals = n_neg + pos.sum(axis=1, keepdims=True)
    if len(correct) == 1:
        score = correct[0]  # integers: exact, as before
    else:
        score = (correct / np.maximum(totals, 1)).mean(axis=0)
    best = int(np.argmax(score)) - 1
    width = 1.0 / SCORE_BINS
    if best < 0:
        above = edges[0] + width
        return float(above) if above < 1.0 else float(np.nextafter(1.0, np.inf))
    if best == edges.size - 1:
        return float(edges[best])
    # No score lies between the top of the next lower occupied bin and edges[best].
    return float((edges[best] + edges[best + 1] + width) / 2)


# ---------------------------------------------------------------------------
# thin / thick vessels

UnassignedRule = Literal["nearest", "ignore"]


def vessel_thickness(
    label: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    unassigned: UnassignedRule = "nearest",
) -> np.ndarray:
    """Ground-truth segment thickness (mean width in pixels) on every vessel pixel.

    Uses the project's segment definition: `segments.build_id_mask` then
    `segments.thickness_map`. Vessel pixels that no segment covers (junctions,
    pieces shorter than the minimum segment length) are handled by `unassigned`:

    - ``"nearest"`` (default): they take the thickness of the nearest pixel that
      has one (Euclidean), so thin + thick partition all FOV vessel pixels;
    - ``"ignore"``: they stay NaN and count in neither group.

    Returns a float32 (H, W) map, NaN off the vessels (and where unassigned).

    Note: T_gt counts the label area of a segment's whole search region (which
    reaches R = r + 2 past the segment's ends) over its remaining reference
    skeleton, so it overestimates the visual width, most for wide vessels. With
    the default thin limit of 2 px, "thin" is essentially the 1-px-wide vessels
    (about 8 % of the vessel pixels of DRIVE test image 01).
    """
    from keras_vessel.data import segments

    label = _as_mask(label, "label", _as_2d(label, "label").shape)
    fov = _fov_or_all(fov, label.shape)
    if unassigned not in ("nearest", "ignore"):
        raise ValueError(f"`unassigned` must be 'nearest' or 'ignore'; got {unassigned!r}.")
    id_mask = segments.build_id_mask(label, fov, reference="complete")
    raw = np.asarray(segments.thickness_map(label, id_mask), dtype=np.float64)
    if raw.shape != label.shape:
        raise RuntimeError(f"segments.thickness_map returned shape {raw.shape}, expected {label.shape}.")
    known = np.isfinite(raw) & (raw > 0)
    thickness = np.full(label.shape, np.nan, dtype=np.float64)
    thickness[label & known] = raw[label & known]
    missing = label & ~known
    if unassigned == "nearest" and missing.any() and known.any():
        _, (rows, cols) = ndimage.distance_transform_edt(~known, return_indices=True)
        thickness[missing] = raw[rows[missing], cols[missing]]
    return thickness.astype(np.float32)


def thin_thick_sensitivity(
    prediction: np.ndarray,
    label: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    thin_max_width: float = 2.0,
    thickness: np.ndarray | None = None,
    unassigned: UnassignedRule = "nearest",
) -> dict[str, float]:
    """Sensitivity on thin and on thick ground-truth vessels, inside the FOV.

    A vessel pixel is *thin* when its segment's mean width is <= `thin_max_width`
    pixels, *thick* otherwise (see `vessel_thickness` for uncovered pixels).
    Pass a precomputed `thickness` (from `vessel_thickness`) to skip the ID mask.
    Returns ``Se_thin, Se_thick, n_thin, n_thick`` (Se is 0.0 for an empty group).
    """
    binary = binarize(prediction, threshold)
    label = _as_mask(label, "label", binary.shape)
    fov = _fov_or_all(fov, binary.shape)
    if not (isinstance(thin_max_width, (int, float)) and thin_max_width > 0):
        raise ValueError(f"`thin_max_width` must be a positive number; got {thin_max_width!r}.")
    if thickness is None:
        thickness = vessel_thickness(label, fov, unassigned=unassigned)
    thickness = _as_2d(thickness, "thickness")
    if thickness.shape != binary.shape:
        raise ValueError(f"`thickness` must have shape {binary.shape}; got {thickness.shape}.")
    vessel = label & fov & np.isfinite(thickness)
    thin = vessel & (thickness <= thin_max_width)
    thick = vessel & (thickness > thin_max_width)
    n_thin, n_thick = int(thin.sum()), int(thick.sum())
    return {
        "Se_thin": _ratio(np.count_nonzero(binary & thin), n_thin),
        "Se_thick": _ratio(np.count_nonzero(binary & thick), n_thick),
        "n_thin": n_thin,
        "n_thick": n_thick,
    }


# ---------------------------------------------------------------------------
# topology: clDice, Betti numbers, CAL


def _skeleton(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask) if mask.any() else np.zeros_like(mask)


def cldice_score(prediction: np.ndarray, label: np.ndarray, fov: np.ndarray | None = None, *, threshold: float = 0.5) -> float:
    """clDice (Shit et al., CVPR 2021) of hard masks restricted to the FOV.

    Harmonic mean of Tprec = |S(P) & G| / |S(P)| and Tsens = |S(G) & P| / |S(G)|,
    S = `skimage.morphology.skeletonize`. Two empty masks score 1; one empty mask 0.
    """
    binary = binarize(prediction, threshold)
    label = _as_mask(label, "label", binary.shape)
    fov = _fov_or_all(fov, binary.shape)
    pred, true = binary & fov, label & fov
    if not pred.any() and not true.any():
        return 1.0
    skel_p, skel_g = _skeleton(pred), _skeleton(true)
    tprec = _ratio(np.count_nonzero(skel_p & true), np.count_nonzero(skel_p))
    tsens = _ratio(np.count_nonzero(skel_g & pred), np.count_nonzero(skel_g))
    return _ratio(2 * tprec * tsens, tprec + tsens)


def betti_numbers(mask: np.ndarray, fov: np.ndarray | None = None) -> tuple[int, int]:
    """(b0, b1) of a binary mask inside the FOV.

    b0 = 8-connected components of ``mask & fov``; b1 = holes = 4-connected
    background components enclosed by vessels, i.e. not touching the image
    border nor the region outside the FOV (background there is the "outside").
    """
    from skimage.measure import label as cc_label

    mask = _as_mask(mask, "mask", _as_2d(mask, "mask").shape)
    fov = _fov_or_all(fov, mask.shape)
    fg = mask & fov
    b0 = int(cc_label(fg, connectivity=2).max())
    background = np.pad(~fg, 1, constant_values=True)
    outside = np.pad(~fov, 1, constant_values=True)
    bg_labels = cc_label(background, connectivity=1)
    n_bg = int(bg_labels.max())
    touching = np.unique(bg_labels[outside])
    b1 = n_bg - int(np.count_nonzero(touching))
    return b0, b1


def cal_score(
    prediction: np.ndarray,
    label: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    alpha: int = 2,
    beta: int = 2,
) -> dict[str, float]:
    """Connectivity-Area-Length (Gegundez-Arias et al., 2012) inside the FOV.

    C = 1 - min(1, |#C_G - #C_S| / #G), components 8-connected, #G = vessel pixels;
    A = |d_a(S) & G  |  S & d_a(G)| / |S | G|, d_a = dilation by a disc of radius alpha;
    L = |phi(S) & d_b(G)  |  d_b(S) & phi(G)| / |phi(S) | phi(G)|, phi = skeleton.
    Returns ``C, A, L, CAL`` (CAL = C * A * L). Identical non-empty maps give 1.
    """
    from skimage.measure import label as cc_label
    from skimage.morphology import disk

    binary = binarize(prediction, threshold)
    label = _as_mask(label, "label", binary.shape)
    fov = _fov_or_all(fov, binary.shape)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative int; got {value!r}.")
    s, g = binary & fov, label & fov
    n_g = int(g.sum())
    if n_g == 0:
        raise ValueError("CAL needs a non-empty ground truth inside the FOV; got no vessel pixel.")
    n_cs = int(cc_label(s, connectivity=2).max())
    n_cg = int(cc_label(g, connectivity=2).max())
    c = 1.0 - min(1.0, abs(n_cg - n_cs) / n_g)

    def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
        return ndimage.binary_dilation(mask, structure=disk(radius)) if radius else mask

    a = _ratio(np.count_nonzero((dilate(s, alpha) & g) | (s & dilate(g, alpha))), np.count_nonzero(s | g))
    phi_s, phi_g = _skeleton(s), _skeleton(g)
    length = _ratio(
        np.count_nonzero((phi_s & dilate(g, beta)) | (dilate(s, beta) & phi_g)),
        np.count_nonzero(phi_s | phi_g),
    )
    return {"C": c, "A": a, "L": length, "CAL": c * a * length}


def topology_metrics(
    prediction: np.ndarray,
    label: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
) -> dict[str, float]:
    """clDice, Betti-0/Betti-1 errors and CAL of one image, all inside the FOV."""
    binary = binarize(prediction, threshold)
    label = _as_mask(label, "label", binary.shape)
    fov = _fov_or_all(fov, binary.shape)
    b0_p, b1_p = betti_numbers(binary, fov)
    b0_g, b1_g = betti_numbers(label, fov)
    out = {
        "clDice": cldice_score(binary, label, fov),
        "betti0_error": float(abs(b0_p - b0_g)),
        "betti1_error": float(abs(b1_p - b1_g)),
    }
    out.update(cal_score(binary, label, fov))
    return out
