"""Serving a trained model: prediction for files on disk, SavedModel export, the TF Serving client.

- `keras_vessel.serving.prediction`: `predict_files` (what `keras-vessel predict` runs)
- `keras_vessel.serving.export`: `export_saved_model` (TF Serving layout), `export_keras_model`
- `keras_vessel.serving.client`: `ServingClient` (REST, with timeouts and retries)
"""
