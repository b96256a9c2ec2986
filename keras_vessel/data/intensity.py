"""The intensity both field-of-view rules read (`keras_vessel.data.preprocessing.derive_fov` in NumPy,
`keras_vessel.data.scaling` in TensorFlow): ``max(red, luminance)``, the luminance ITU-R 601's
``0.299 R + 0.587 G + 0.114 B``.

The luminance is summed in float64 as ``(299 R + 587 G + 114 B)``, divided by 1000 and rounded to float32.
For integer pixel values (any uint8 photograph) every product and sum is an integer held exactly, so
the order of the sum does not matter, and the float32 result is the correctly rounded one of the exact
value (whether the division is done as such or as a product with 1/1000; exact for a grey pixel): the
same on every CPU and in both libraries. A float32 matrix product sums in an order that depends on the
machine's kernels (AVX2 or AVX-512), and a grey pixel whose value equals a cut then fell on either side
of it. Non-integer values (a float image) keep their fractions.

`keras_vessel.data.scaling` computes the same in float32, faster: with the integer weights every product
and sum is still an integer below 2**24, held exactly, and one true float32 division by 1000 rounds as
float64 then float32 do (a product with float32's 1/1000 would not: one ulp off for half the sums).
"""

from __future__ import annotations

import numpy as np

LUMA_PER_MILLE: tuple[int, int, int] = (299, 587, 114)  # ITU-R 601 weights, in thousandths


def fov_intensity(image: np.ndarray) -> np.ndarray:
    """``max(red, luminance)`` of an ``(H, W, 3)`` image on 0-255 (uint8 or float): ``(H, W)`` float32."""
    rgb = np.asarray(image, dtype=np.float64)
    luminance = rgb @ np.array(LUMA_PER_MILLE, dtype=np.float64) / 1000.0
    return np.maximum(rgb[:, :, 0], luminance).astype(np.float32)
