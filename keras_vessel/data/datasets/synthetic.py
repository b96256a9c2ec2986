"""Synthetic fundus images with exactly known vessels: the embedded default dataset.

Why: the real datasets cannot ship with the package, tests and the demo must
run without them, and the thickness/skeleton code needs a ground truth that
no human annotation gives (each vessel pixel's nominal width and the exact
centreline).

What an image looks like: a dark surround outside a circular FOV; inside, an
orange-red fundus with vignetting, low-frequency texture, a dark macula and a
bright optic disc, from which four vessel trees (two temporal arcades, two
nasal) branch out. A vessel branch is a random smooth curve made of *pieces*;
each piece has one integer width, and the width drops after every
bifurcation, so vessels are about 8 px wide at the disc and 1 px at the tips.
Vessels are darker than the background, most in the green channel, and thick
vessels more than thin ones. Gaussian noise is added last.

The label is drawn binary (no anti-aliasing): a pixel centre is a vessel
pixel if it lies within ``width / 2`` of a piece's centre polyline, or on the
rasterised polyline itself (so 1-px vessels never break). Only the image is
blurred. Everything is a pure function of ``(index, size, seed)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from keras_vessel.data.datasets.base import Sample, SampleSpec, check_split
from keras_vessel.errors import DatasetError

MAX_WIDTH = 8
MIN_SIZE = 64
_STEP = 1.5  # px between polyline vertices


@dataclass(frozen=True)
class SyntheticTruth:
    """Exact geometry behind one synthetic sample (all ``(H, W)``, inside the FOV only).

    ``width_map``: float32, the nominal width in pixels of the vessel piece
    that drew each label pixel (the widest one where pieces overlap), 0 off
    vessels. ``centreline``: bool, the drawn centre polylines thinned to one
    pixel (8-connected); a subset of the label.
    """

    width_map: np.ndarray
    centreline: np.ndarray


def _check_index_size_seed(index: object, size: object, seed: object) -> None:
    for option, value, minimum in (("index", index, 0), ("size", size, MIN_SIZE), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise DatasetError(f"synthetic `{option}` must be an int >= {minimum}, got {value!r}")


def _grow(
    rng: np.random.Generator,
    start: np.ndarray,
    angle: float,
    width: int,
    bend: float,
    scale: float,
    pieces: list[tuple[np.ndarray, int]],
    centre: np.ndarray,
    radius: float,
) -> None:
    """Append the pieces of one branch (and, recursively, its children) to ``pieces``."""
    position = start.astype(np.float64)
    while True:
        length = rng.uniform(14.0, 30.0) * scale * (0.6 + 0.1 * width)
        steps = max(2, int(length / _STEP))
        points = [position]
        for _ in range(steps):
            angle += bend * _STEP + rng.normal(0.0, 0.04)
            position = position + _STEP * np.array([np.sin(angle), np.cos(angle)])
            points.append(position)
        pieces.append((np.array(points), width))
        if np.hypot(*(position - centre)) > radius or width == 1 or len(pieces) > 400:
            return
        # Bifurcation: a narrower child leaves at 30-60 degrees, curving the other way.
        child_width = max(1, int(round(width * rng.uniform(0.45, 0.75))))
        side = rng.choice([-1.0, 1.0])
        child_angle = angle + side * rng.uniform(0.5, 1.0)
        child_bend = -side * abs(bend) * 0.5 + rng.normal(0.0, 0.004)
        _grow(rng, position, child_angle, child_width, child_bend, scale, pieces, centre, radius)
        angle -= side * rng.uniform(0.05, 0.2)  # the parent veers away from its child
        if rng.random() < 0.75:
            width -= 1


def _vessel_pieces(
    rng: np.random.Generator, size: int, centre: np.ndarray, radius: float, disc: np.ndarray
) -> list[tuple[np.ndarray, int]]:
    """Four trees rooted at the optic disc: temporal arcades wide, nasal trees narrower."""
    scale = size / 256.0
    # Angles in (row, col) coordinates for a disc left of the macula (a positive
    # bend turns clockwise on screen); a disc on the right mirrors them.
    roots = [
        (-1.1, MAX_WIDTH, 1.0),  # upper temporal arcade, curving towards the macula
        (1.1, MAX_WIDTH - 1, -1.0),  # lower temporal arcade
        (np.pi + 0.7, MAX_WIDTH - 2, -1.0),  # upper nasal tree
        (np.pi - 0.7, MAX_WIDTH - 3, 1.0),  # lower nasal tree
    ]
    mirrored = disc[1] > centre[1]
    pieces: list[tuple[np.ndarray, int]] = []
    for angle, width, sign in roots:
        bend = sign * rng.uniform(0.006, 0.012) / scale
        if mirrored:
            angle, bend = np.pi - angle, -bend
        _grow(rng, disc, angle + rng.normal(0, 0.1), width, bend, scale, pieces, centre, radius)
    return pieces


def _rasterise(pieces: list[tuple[np.ndarray, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Width map (max nominal width of the capsules covering each pixel) and raw centreline."""
    width_map = np.zeros((size, size), dtype=np.float32)
    centreline = np.zeros((size, size), dtype=bool)
    for points, width in pieces:
        half = width / 2.0
        top = max(int(np.floor(points[:, 0].min() - half)), 0)
        bottom = min(int(np.ceil(points[:, 0].max() + half)) + 1, size)
        left = max(int(np.floor(points[:, 1].min() - half)), 0)
        right = min(int(np.ceil(points[:, 1].max() + half)) + 1, size)
        if top >= bottom or left >= right:
            continue
        rows, cols = np.mgrid[top:bottom, left:right]
        pixels = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)  # (B, 2)
        starts, deltas = points[:-1], np.diff(points, axis=0)  # (n, 2)
        lengths2 = np.maximum(np.einsum("ij,ij->i", deltas, deltas), 1e-12)
        offsets = pixels[:, None, :] - starts[None, :, :]  # (B, n, 2)
        t = np.clip(np.einsum("bnk,nk->bn", offsets, deltas) / lengths2, 0.0, 1.0)
        gaps = offsets - t[:, :, None] * deltas[None, :, :]
        distance = np.sqrt(np.einsum("bnk,bnk->bn", gaps, gaps).min(axis=1)).reshape(rows.shape)
        window = width_map[top:bottom, left:right]
        np.maximum(window, np.where(distance <= half, np.float32(width), np.float32(0.0)), out=window)
        # The centreline: the polyline sampled every <= 0.5 px and rounded to pixels
        # (so it is 8-connected); it is part of the label even where a 1-px capsule
        # misses a rounded pixel.
        fractions = np.linspace(0.0, 1.0, 4, endpoint=False)[None, :, None]
        samples = (starts[:, None, :] + fractions * deltas[:, None, :]).reshape(-1, 2)
        cells = np.rint(np.concatenate([samples, points[-1:]])).astype(int)
        cells = cells[np.all((cells >= 0) & (cells < size), axis=1)]
        centreline[cells[:, 0], cells[:, 1]] = True
        np.maximum.at(width_map, (cells[:, 0], cells[:, 1]), np.float32(width))
    return width_map, centreline


def _render(
    rng: np.random.Generator,
    size: int,
    fov: np.ndarray,
    centre: np.ndarray,
    radius: float,
    disc: np.ndarray,
    width_map: np.ndarray,
) -> np.ndarray:
    """The RGB image: fundus background, optic disc, macula, darkened vessels, noise."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(rows - centre[0], cols - centre[1]) / radius
    base = np.array([rng.uniform(170, 215), rng.uniform(75, 105), rng.uniform(30, 55)], dtype=np.float32)
    vignetting = np.clip(1.0 - 0.4 * r**2, 0.3, 1.0)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (size, size)), size / 20.0)
    texture = 1.0 + 0.08 * texture / max(float(np.abs(texture).max()), 1e-6)
    image = base[None, None, :] * (vignetting * texture)[:, :, None]
    macula = centre + (centre - disc) * 0.15
    macula_profile = np.exp(-(np.hypot(rows - macula[0], cols - macula[1]) / (0.12 * size)) ** 2)
    image *= (1.0 - 0.25 * macula_profile)[:, :, None]
    disc_radius = 0.065 * size
    disc_distance = np.hypot(rows - disc[0], cols - disc[1])
    disc_profile = 1.0 / (1.0 + np.exp((disc_distance - disc_radius) / (0.15 * disc_radius)))
    image += disc_profile[:, :, None] * np.array([45.0, 110.0, 80.0], dtype=np.float32)
    # Vessels: darker in green most, contrast growing with width, edges blurred.
    contrast = ndimage.gaussian_filter(np.where(width_map > 0, 0.3 + 0.04 * width_map, 0.0), 0.7)
    image *= 1.0 - contrast[:, :, None] * np.array([0.35, 1.0, 0.6], dtype=np.float32)
    soft_fov = ndimage.gaussian_filter(fov.astype(np.float32), 1.0)
    image = image * soft_fov[:, :, None] + 3.0 * (1.0 - soft_fov[:, :, None])
    image += rng.normal(0.0, 3.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _generate(index: int, size: int, seed: int) -> tuple[Sample, SyntheticTruth]:
    rng = np.random.default_rng([seed, index, size])
    centre = np.array([size / 2.0 + rng.normal(0, size * 0.01), size / 2.0 + rng.normal(0, size * 0.01)])
    radius = size * rng.uniform(0.44, 0.47)
    rows, cols = np.mgrid[0:size, 0:size]
    fov = np.hypot(rows - centre[0], cols - centre[1]) <= radius
    side = rng.choice([-1.0, 1.0])  # left or right eye
    disc = centre + np.array([rng.normal(0, 0.04), side * rng.uniform(0.22, 0.3)]) * size
    pieces = _vessel_pieces(rng, size, centre, radius, disc)
    width_map, centreline = _rasterise(pieces, size)
    width_map = np.where(fov, width_map, np.float32(0.0))
    label = width_map > 0
    centreline = skeletonize(centreline & fov) & label
    image = _render(rng, size, fov, centre, radius, disc, width_map)
    sample = Sample(name=f"synthetic_{index:04d}", image=image, label=label, fov=fov)
    return sample, SyntheticTruth(width_map=width_map, centreline=centreline)


def generate_sample(
    index: int,
    *,
    size: int = 256,
    seed: int = 0,
    return_widths: bool = False,
) -> Sample | tuple[Sample, SyntheticTruth]:
    """The synthetic sample ``index`` of the set ``seed``: deterministic, ``size x size``.

    With ``return_widths=True`` returns ``(sample, truth)`` where ``truth`` is
    the `SyntheticTruth` (per-pixel nominal widths and the centreline).
    """
    _check_index_size_seed(index, size, seed)
    sample, truth = _generate(int(index), int(size), int(seed))
    return (sample, truth) if return_widths else sample


def _load(index: int, size: int, seed: int) -> Sample:
    return generate_sample(index, size=size, seed=seed)  # type: ignore[return-value]


def open_synthetic(
    root: str | Path | None = None,
    split: str = "all",
    *,
    count: int = 20,
    test_count: int = 8,
    size: int = 256,
    seed: int = 0,
) -> list[SampleSpec]:
    """``count`` training samples (indices 0..count-1) then ``test_count`` test samples.

    ``root`` is ignored (nothing is read from disk); it exists so that every
    dataset opens with the same call.
    """
    check_split(split, dataset="synthetic")
    for option, value, minimum in (("count", count, 1), ("test_count", test_count, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise DatasetError(
                f"option {option} for dataset 'synthetic' must be an int >= {minimum}, got {value!r}"
            )
    _check_index_size_seed(0, size, seed)
    indices = {
        "training": range(count),
        "test": range(count, count + test_count),
        "all": range(count + test_count),
    }[split]
    return [
        SampleSpec(name=f"synthetic_{i:04d}", load=functools.partial(_load, i, size, seed))
        for i in indices
    ]
