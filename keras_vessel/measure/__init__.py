"""Measurements of vessel masks (issue 32): a layer above evaluation, below serving; knows nothing of models.

- `morphology`: `measure_vessels(mask, fov)`, one row of named measurements (`COLUMNS`) of one
  photograph's vessel mask inside its field of view, whole and in rings; NumPy/SciPy/scikit-image.
- `files`: masks and their FOVs read from disk, one CSV row per mask (`measure_files`, what
  `keras-vessel measure` runs; `predict --measure` writes `MEASURES_CSV` with `measure_row`).
"""

from keras_vessel.measure.files import MEASURES_CSV, measure_files, measure_row
from keras_vessel.measure.morphology import COLUMNS, MEASURES, NORMALISED, RINGS, measure_vessels

__all__ = ["COLUMNS", "MEASURES", "MEASURES_CSV", "NORMALISED", "RINGS", "measure_files", "measure_row",
           "measure_vessels"]
