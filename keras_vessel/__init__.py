"""keras-vessel: joint segment-level and pixel-wise losses for retinal vessel segmentation.

A TensorFlow/Keras 3 implementation of Yan, Yang & Cheng, "Joint Segment-Level
and Pixel-Wise Losses for Deep Learning Based Retinal Vessel Segmentation",
IEEE TBME 65(9), 2018.

Importing the package registers its custom Keras objects (layers and losses),
so `keras.saving.load_model("model.keras")` works in safe mode in any process
that has run `import keras_vessel`. The layers of the library (data -> losses
-> models -> training -> evaluation -> serving) are drawn in docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"

from keras_vessel import losses as _losses  # noqa: E402,F401  (registers the losses)
from keras_vessel.models import layers as _layers  # noqa: E402,F401  (registers the layers)
