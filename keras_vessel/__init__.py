"""keras-vessel: joint segment-level and pixel-wise losses for retinal vessel segmentation.

A TensorFlow/Keras 3 implementation of Yan, Yang & Cheng, "Joint Segment-Level
and Pixel-Wise Losses for Deep Learning Based Retinal Vessel Segmentation",
IEEE TBME 65(9), 2018.

Importing the package registers its custom Keras objects (layers and losses),
so `keras.saving.load_model("model.keras")` works in safe mode in any process
that has run `import keras_vessel`, but for the worker processes of
`keras_vessel.workers` (prepare's), which compute NumPy arrays and are started
without Keras and TensorFlow. The layers of the library (data -> losses ->
models -> training -> evaluation -> serving) are drawn in docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"

from keras_vessel import workers as _workers  # noqa: E402

if not _workers.in_numpy_worker():
    from keras_vessel import losses as _losses  # noqa: E402,F401  (registers the losses)
    from keras_vessel.models import layers as _layers  # noqa: E402,F401  (registers the layers)
