"""The intensity both field-of-view rules read (`keras_vessel.data.preprocessing.derive_fov` in NumPy,
`keras_vessel.data.scaling` in TensorFlow): ``max(red, luminance)``, the luminance ITU-R 601's
``0.299 R + 0.587 G + 0.114 B``.

The luminance is summed in integers, ``(299 R + 587 G + 114 B)``, divided by 1000 in float64 and rounded
to float32 (the correctly rounded float32 of the exact value, whether the division is done as such or as a
product with 1/1000; exact for a grey pixel), so that it is the same on every CPU and in both libraries: a float32 matrix product sums in an order that depends on the machine's kernels (AVX2 or
AVX-512), and a grey pixel whose value equals a cut then falls on either side of it.
"""

from __future__ import annotations

import numpy as np

LUMA_PER_MILLE: tuple[int, int, int] = (299, 587, 114)  # ITU-R 601 weights, in thousandths


def fov_intensity(image: np.ndarray) -> np.ndarray:
    """``max(red, luminance)`` of an ``(H, W, 3)`` uint8 image: ``(H, W)`` float32 on 0-255."""
    weighted = image.astype(np.int32) @ np.array(LUMA_PER_MILLE, dtype=np.int32)
    luminance = (weighted.astype(np.float64) / 1000.0).astype(np.float32)
    return np.maximum(image[:, :, 0].astype(np.float32), luminance)
