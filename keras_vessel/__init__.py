"""keras-vessel: joint segment-level and pixel-wise losses for retinal vessel segmentation.

A TensorFlow/Keras 3 implementation of Yan, Yang & Cheng, "Joint Segment-Level
and Pixel-Wise Losses for Deep Learning Based Retinal Vessel Segmentation",
IEEE TBME 65(9), 2018. Importing the package is cheap: TensorFlow is only
imported by the modules that need it.
"""

__version__ = "0.1.0"
