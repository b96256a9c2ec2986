"""Data: images in their published layouts -> prepared records -> training patches.

- `keras_vessel.data.datasets`: readers of DRIVE, CHASE_DB1, STARE, HRF, folders and the synthetic set
- `keras_vessel.data.preprocessing`: reading images and masks, FOV derivation, CLAHE, contrast stretch
- `keras_vessel.data.segments`: skeletons, ID masks and skeleton tubes (NumPy / scikit-image)
- `keras_vessel.data.scaling`: the field of view's diameter and resampling (TF ops)
- `keras_vessel.data.tfrecords`: the prepared-record format, its manifest and checks
- `keras_vessel.data.targets`: the target tensor every loss reads
- `keras_vessel.data.pipeline`: the `tf.data` input pipeline
"""
