"""Troubled fundus photographs with a known field of view, for the FOV estimator's tests.

``troubled_photograph(*troubles, seed=...)`` draws one photograph: an orange-red fundus with a
vignetted illumination, a bright optic disc and dark vessels inside a circular aperture of known
centre and radius, on a dark surround, then adds each named trouble. Everything is a pure function of
the troubles and the seed (NumPy and OpenCV only: it must not share code with the estimator it tests).

Troubles (`TROUBLES`):

- ``clipped_top_bottom``: a 700x605 frame (STARE's camera) cutting a FOV about 650 px across at the top
  and bottom; ``clipped_left_right``: a 560x640 frame cutting a 600 px FOV at the left and right. Without
  either, the whole disc (about 520 px) sits in a 700x560 frame.
- ``notch``: a small square notch in the aperture on the upper right rim (STARE's camera mark).
- ``green_surround``: a dark greenish surround around RGB (5, 0, 10) instead of a near-black grey one;
  ``grey_surround``: a grey surround around 75 (brighter than the fixed cut of 15);
  ``bright_surround``: a near-white surround around 235 (brighter than the fundus itself).
- ``exudates``: a cluster of bright yellow exudates inside the FOV.
- ``date_text``: a burnt-in white date and time in the lower left corner.
- ``rim_lesion``: a dark haemorrhage straddling the inner rim of the aperture.
- ``grainy``: the grain of a scanned film photograph, 4-6 grey levels everywhere and correlated over
  a pixel or two, so specks of the dark surround cross any cut close to it.
- ``soft_rim``: a soft, dim, vignetted rim: the fundus fades over the outer 12% of the radius to a
  few grey levels above the surround, dimmest on one side (uneven illumination), so any fixed cut
  between surround and fundus traces a lopsided curve inside the aperture.

`STARE_LIKE` is the combination seen in the photographs of issue 30's 700x605 camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TROUBLES = (
    "clipped_top_bottom",
    "clipped_left_right",
    "notch",
    "green_surround",
    "grey_surround",
    "bright_surround",
    "exudates",
    "date_text",
    "rim_lesion",
    "soft_rim",
    "grainy",
)
STARE_LIKE = ("clipped_top_bottom", "notch", "green_surround", "exudates", "soft_rim", "grainy")


@dataclass(frozen=True)
class TroubledPhotograph:
    """``image`` (H, W, 3) uint8 RGB; ``label`` (H, W) bool vessels; ``fov`` (H, W) bool, the aperture
    inside the frame (notch excluded); ``cy, cx, radius``: the aperture circle, in pixel-centre units."""

    image: np.ndarray
    label: np.ndarray
    fov: np.ndarray
    cy: float
    cx: float
    radius: float

    @property
    def diameter(self) -> float:
        return 2.0 * self.radius


def _frame(troubles: set[str], rng: np.random.Generator) -> tuple[int, int, float, float, float]:
    """height, width, cy, cx, radius."""
    if "clipped_top_bottom" in troubles:
        height, width, diameter = 605, 700, rng.uniform(640.0, 660.0)
    elif "clipped_left_right" in troubles:
        height, width, diameter = 640, 560, rng.uniform(590.0, 610.0)
    else:
        height, width, diameter = 560, 700, rng.uniform(505.0, 535.0)
    cy = (height - 1) / 2 + rng.uniform(-4.0, 4.0)
    cx = (width - 1) / 2 + rng.uniform(-4.0, 4.0)
    return height, width, cy, cx, diameter / 2.0


def _vessels(rng: np.random.Generator, shape: tuple[int, int], disc: tuple[float, float],
             radius: float) -> np.ndarray:
    """(H, W) float32 vessel darkness 0..1: smooth random branches leaving the optic disc."""
    darkness = np.zeros(shape, np.float32)
    for _ in range(6):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        bend = rng.normal(0.0, 0.004)
        width = int(rng.integers(3, 8))
        point = np.array(disc, np.float64)
        points = [point.copy()]
        for _ in range(int(1.6 * radius / 6)):
            angle += bend * 6 + rng.normal(0.0, 0.05)
            point += 6.0 * np.array([np.sin(angle), np.cos(angle)])
            points.append(point.copy())
        polyline = np.rint(np.array(points)[:, ::-1]).astype(np.int32)  # (x, y) for OpenCV
        cv2.polylines(darkness, [polyline], False, 0.5 + 0.04 * width, thickness=width)
    return darkness


def troubled_photograph(*troubles: str, seed: int = 0) -> TroubledPhotograph:
    """A photograph with the given troubles (names from `TROUBLES`), deterministic in ``seed``."""
    unknown = set(troubles) - set(TROUBLES)
    if unknown:
        raise ValueError(f"unknown troubles {sorted(unknown)}; known: {TROUBLES}")
    wanted = set(troubles)
    rng = np.random.default_rng([seed, *sorted(TROUBLES.index(t) for t in wanted)])
    height, width, cy, cx, radius = _frame(wanted, rng)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    r = np.hypot(yy - cy, xx - cx) / radius
    theta = np.arctan2(yy - cy, xx - cx)

    # the fundus: vignetted, unevenly lit, textured, with an optic disc, a darker macula and vessels
    base = np.array([rng.uniform(165, 205), rng.uniform(70, 100), rng.uniform(20, 45)], np.float32)
    dim_side = rng.uniform(-np.pi, np.pi)
    light = np.clip(1.0 - 0.35 * r**2, 0.3, 1.0) * (1.0 - 0.12 * r * np.cos(theta - dim_side))
    texture = cv2.resize(rng.normal(0.0, 1.0, (12, 14)).astype(np.float32), (width, height),
                         interpolation=cv2.INTER_CUBIC)
    light *= 1.0 + 0.05 * texture
    side = rng.choice([-1.0, 1.0])
    disc = (cy + rng.normal(0.0, 0.03) * radius, cx + side * 0.55 * radius)
    disc_profile = np.exp(-((np.hypot(yy - disc[0], xx - disc[1]) / (0.12 * radius)) ** 4))
    macula = np.exp(-((np.hypot(yy - cy, xx - (cx - side * 0.1 * radius)) / (0.2 * radius)) ** 2))
    fundus = base * (light * (1.0 - 0.3 * macula))[..., None]
    fundus += disc_profile[..., None] * np.array([50.0, 100.0, 70.0], np.float32)
    darkness = _vessels(rng, (height, width), disc, radius)
    label = darkness > 0
    fundus *= 1.0 - darkness[..., None] * np.array([0.3, 0.6, 0.45], np.float32)

    if "soft_rim" in wanted:
        # the fundus fades towards the rim to 15% of its light: over 5% of the radius on the bright
        # side, over a quarter of it on the dim side (a dark crescent)
        dimness = (1.0 + np.cos(theta - dim_side)) / 2.0  # 1 on the dim side
        fade = np.clip((1.0 - r) / (0.05 + 0.2 * dimness**2), 0.0, 1.0) ** 1.5
        fundus *= (0.15 + 0.85 * fade)[..., None]
    if "exudates" in wanted:
        centre = np.array([cy, cx]) + rng.uniform(-0.3, 0.3, 2) * radius
        for _ in range(40):
            y, x = centre + rng.normal(0.0, 0.12 * radius, 2)
            cv2.circle(fundus, (int(x), int(y)), int(rng.integers(2, 7)), (255.0, 235.0, 95.0), -1)
    if "rim_lesion" in wanted:
        angle = rng.uniform(-np.pi, np.pi)
        spot = (cy + 0.96 * radius * np.sin(angle), cx + 0.96 * radius * np.cos(angle))
        blob = np.hypot(yy - spot[0], xx - spot[1]) < 0.07 * radius
        fundus[blob] *= np.array([0.12, 0.05, 0.05], np.float32)

    # the aperture: a 1-px anti-aliased edge, minus the notch
    coverage = np.clip((radius - np.hypot(yy - cy, xx - cx)) + 0.5, 0.0, 1.0)
    if "soft_rim" in wanted:  # and a blurred aperture edge
        coverage = 0.5 * (1.0 - np.tanh((np.hypot(yy - cy, xx - cx) - radius) / 3.0))  # a logistic, 1.5 px
    if "notch" in wanted:
        corner = (cy - radius * np.sin(np.pi / 4), cx + radius * np.cos(np.pi / 4))  # upper right
        size = 0.03 * radius
        coverage[int(corner[0] - size):int(corner[0] + size), int(corner[1] - size):int(corner[1] + size)] = 0.0
    if "bright_surround" in wanted:
        surround = np.array([235.0, 235.0, 235.0], np.float32)
    elif "grey_surround" in wanted:
        surround = np.array([75.0, 75.0, 75.0], np.float32)
    elif "green_surround" in wanted:
        surround = np.array([5.0, 0.0, 10.0], np.float32)
    else:
        surround = np.array([3.0, 3.0, 3.0], np.float32)
    image = fundus * coverage[..., None] + surround * (1.0 - coverage[..., None])
    if "grainy" in wanted:  # scanned film: grain of 4-6 grey levels, correlated over a pixel or two
        grain = cv2.GaussianBlur(rng.normal(0.0, 1.0, image.shape).astype(np.float32), (0, 0), 0.8)
        image += grain * (rng.uniform(4.0, 6.0) / grain.std())
    else:
        image += rng.normal(0.0, 2.0, image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if "date_text" in wanted:
        cv2.putText(image, "2003/11/27 14:02", (8, height - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                    (255, 255, 255), 2, cv2.LINE_AA)
    fov = coverage >= 0.5
    return TroubledPhotograph(image=image, label=label & fov, fov=fov, cy=float(cy), cx=float(cx),
                              radius=float(radius))
