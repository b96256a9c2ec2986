"""experiments.record_scale: a model trained before scales were recorded is told its training FOV diameter."""

import json

import keras
import numpy as np
import pytest

from experiments.record_scale import main, record_scale
from keras_vessel.data.datasets import open_dataset
from keras_vessel.evaluation import load_threshold
from keras_vessel.models import build_inference_model, build_model, model_fov_diameter
from keras_vessel.models.inference import predict_probability

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def legacy_model(tmp_path_factory):
    """A tiny compiled U-Net without a FovDiameter, trained one step so its optimizer holds moments."""
    keras.utils.set_random_seed(0)
    model = build_model("unet", base_filters=4, depth=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={"segment": "binary_crossentropy", "pixel": "binary_crossentropy"})
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    targets = (images[..., 1:2] > 128).astype("float32")
    model.fit(images, {"segment": targets, "pixel": targets}, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("legacy") / "model.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def recorded(legacy_model, drive_root, tmp_path_factory):
    _, path = legacy_model
    out = tmp_path_factory.mktemp("recorded")
    summary = record_scale(path, "drive", out, data=drive_root.parent)
    return summary, out


def test_the_diameter_is_the_median_of_drive_s_published_fov_masks(recorded, drive_root):
    summary, out = recorded
    training = open_dataset("drive", drive_root, "training")
    # oracle: the diameter of a disc of the published mask's area (DRIVE's FOV circles are not clipped)
    from_masks = np.median([2 * np.sqrt(spec.load().fov.sum() / np.pi) for spec in training])
    assert summary["fov_diameter"] == pytest.approx(from_masks, rel=0.02)
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert model_fov_diameter(model) == pytest.approx(summary["fov_diameter"])
    assert json.loads((out / "record_scale.json").read_text())["fov_diameter"] == summary["fov_diameter"]


def test_the_weights_are_unchanged_and_the_file_carries_no_optimizer_moments(legacy_model, recorded):
    source, path = legacy_model
    _, out = recorded
    model = keras.saving.load_model(out / "model.keras", compile=True)
    expected = {w.path.split("/", 1)[-1]: w.numpy() for w in source.weights}
    got = {w.path.split("/", 1)[-1]: w.numpy() for w in model.weights if "fov_diameter" not in w.path}
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert isinstance(model.optimizer, keras.optimizers.Adam) and model.loss  # still a training model
    weights_bytes = sum(w.numpy().nbytes for w in source.weights)
    assert (out / "model.keras").stat().st_size < path.stat().st_size - weights_bytes  # Adam's moments gone


def test_the_stored_threshold_is_accuracy_optimal_on_the_training_images_at_scale_auto(recorded, drive_root):
    summary, out = recorded
    stored = load_threshold(out / "model.keras", heads="mean")
    assert stored["scale"] == "auto" and stored["threshold"] == summary["threshold"]
    model = build_inference_model(keras.saving.load_model(out / "model.keras", compile=False))
    probs, labels = [], []
    for spec in open_dataset("drive", drive_root, "training"):
        sample = spec.load()
        prob = predict_probability(model, sample.image, fov=sample.fov, scale="auto")
        probs.append(prob[sample.fov])
        labels.append(sample.label[sample.fov] > 0)
    probs, labels = np.concatenate(probs), np.concatenate(labels)

    def accuracy(t):
        return np.mean((probs >= t) == labels)

    grid = np.quantile(probs, np.linspace(0.0, 1.0, 101))
    assert accuracy(stored["threshold"]) >= max(accuracy(t) for t in grid) - 1e-12


def test_a_model_that_records_a_diameter_is_refused_in_one_sentence(recorded, drive_root, tmp_path, capsys):
    _, out = recorded
    with pytest.raises(SystemExit) as raised:
        main(["--model", str(out / "model.keras"), "--dataset", "drive", "--out", str(tmp_path / "again"),
              "--data", str(drive_root.parent)])
    assert str(raised.value).startswith("Error: ") and "already records a FOV diameter" in str(raised.value)
