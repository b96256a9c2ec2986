"""The bundled model as a user meets it: other sizes, the SavedModel, the defaults of `predict`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from keras_vessel.data.datasets import open_dataset
from keras_vessel.evaluation import load_threshold, metrics
from keras_vessel.models import model_fov_diameter
from keras_vessel.models.inference import BUNDLED_MODEL, bundled_model_path, load_inference_model, predict_probability

SAVED = BUNDLED_MODEL.parent


def latest_version():
    versions = sorted((int(p.name) for p in SAVED.iterdir() if p.name.isdigit()), reverse=True)
    return SAVED / str(versions[0])


def test_the_bundled_model_records_its_scale_and_threshold_and_has_a_served_version():
    model = load_inference_model(bundled_model_path())
    assert 400 <= model_fov_diameter(model) <= 1000
    stored = load_threshold(bundled_model_path(), heads="mean")
    assert 0 < stored["threshold"] < 1 and stored.get("scale") == "auto"
    fused = load_threshold(bundled_model_path(), heads="mean", scale="multi")  # chosen on the same 40 images
    assert 0 < fused["threshold"] < 1 and fused["scale"] == "multi" and fused["images"] == stored["images"]
    assert (latest_version() / "saved_model.pb").is_file()
    card = (SAVED.parent / "MODEL_CARD.md").read_text()
    assert SAVED.name in card and f"{model_fov_diameter(model):.0f}" in card


def test_the_bundled_model_was_trained_by_the_general_config():
    """`keras-vessel train --config configs/general.yaml` with the model card's three `--set`s remakes it:
    the five cameras' records, every photograph trained on, 450 epochs; nothing else differs."""
    from keras_vessel.config import config_to_dict, load_config

    trained = config_to_dict(load_config([SAVED / "training_config.yaml"]))
    general = config_to_dict(load_config([SAVED.parents[1] / "configs" / "general.yaml"]))
    assert [Path(folder).name for folder in trained["data"].pop("train_records")] == [
        "drive", "chase_db1", "pool_hrf", "orvs", "pool_les_av"]
    assert (trained["data"].pop("validation_images"), trained["train"].pop("epochs")) == (0, 450)
    for section, key in (("data", "train_records"), ("data", "validation_images"), ("train", "epochs")):
        general[section].pop(key)
    assert trained == general
    card = (SAVED.parent / "MODEL_CARD.md").read_text()
    assert "--set data.validation_images=0 --set train.seed=0 --set train.epochs=450" in card


@pytest.mark.data
@pytest.mark.slow
def test_a_drive_image_enlarged_4x_scores_like_the_original(drive_root):
    """`--scale auto`: the same photograph at 4x the resolution gives the same AUC within 0.005."""
    model = load_inference_model(bundled_model_path())
    sample = open_dataset("drive", drive_root, "test")[0].load()
    height, width = sample.label.shape
    original = predict_probability(model, sample.image)
    enlarged = cv2.resize(sample.image, (4 * width, 4 * height), interpolation=cv2.INTER_CUBIC)
    back = cv2.resize(predict_probability(model, enlarged), (width, height), interpolation=cv2.INTER_AREA)
    auc, auc_enlarged = (metrics.roc_auc(p, sample.label, sample.fov) for p in (original, back))
    assert auc > 0.95
    assert abs(auc_enlarged - auc) <= 0.005, (auc, auc_enlarged)
    native = cv2.resize(predict_probability(model, enlarged, scale="none"), (width, height),
                        interpolation=cv2.INTER_AREA)
    assert metrics.roc_auc(native, sample.label, sample.fov) < auc_enlarged - 0.02  # what --scale none costs


@pytest.mark.data
@pytest.mark.slow
def test_local_predict_and_the_savedmodel_agree_on_every_pixel(drive_root, tmp_path):
    """`keras-vessel predict` (defaults) and TF Serving's serving_default: within 2e-3 everywhere."""
    import tensorflow as tf

    from keras_vessel.serving.prediction import predict_files

    sample = open_dataset("drive", drive_root, "test")[1].load()
    path = tmp_path / "photo.png"
    Image.fromarray(sample.image).save(path)
    predict_files(bundled_model_path(), [path], tmp_path / "out", threshold=0.5, progress=False)
    local = np.asarray(Image.open(tmp_path / "out" / "photo_prob.png"), dtype=np.float64) / 65535
    served = tf.saved_model.load(str(latest_version())).signatures["serving_default"]
    remote = served(images=tf.constant(sample.image[None], tf.float32))["probability"].numpy()[0]
    assert np.abs(local - remote).max() <= 2e-3
    inside = sample.fov
    assert np.abs(local[inside] - remote[inside]).mean() <= 1e-4
    assert json.loads((SAVED / "threshold.json").read_text())["threshold"] == load_threshold(
        bundled_model_path(), heads="mean")["threshold"]
