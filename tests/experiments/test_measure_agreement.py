"""The measure-agreement experiment's statistics and table (experiments/measure_agreement.py)."""

import math

import pytest

from experiments.measure_agreement import agreement, pearson, table


def test_pearson_against_known_values():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(pearson([1, 2], [1, 2])) and math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert pearson([1, 2, 3, math.nan], [1, 3, 2, 5]) == pytest.approx(0.5)


def test_agreement_bias_relative_bias_and_correlation():
    images = {f"im{i}": {"manual": {"vessel_length_px": m, "mean_width_px": math.nan},
                         "predicted": {"vessel_length_px": p, "mean_width_px": 3.0}}
              for i, (m, p) in enumerate([(100.0, 90.0), (200.0, 190.0), (300.0, 290.0)])}
    result = agreement(images, ["vessel_length_px", "mean_width_px"])
    length = result["vessel_length_px"]
    assert (length["n"], length["bias"], length["manual_mean"], length["predicted_mean"]) == (3, -10.0, 200.0, 190.0)
    assert length["relative_bias"] == pytest.approx(-0.05) and length["pearson_r"] == pytest.approx(1.0)
    assert result["mean_width_px"] == {"n": 0}
    text = table({"runs": {"bundled:drive": {"threshold": 0.5, "images": images, "agreement": result}}},
                 columns=["vessel_length_px", "mean_width_px"])
    assert "### bundled:drive (3 images, threshold 0.5)" in text
    assert "| `vessel_length_px` | 200 | 190 | -10 | -5% | 1 |" in text
    assert "| `mean_width_px` | - | - | - | - | - |" in text


def test_images_measured_with_another_model_file_are_measured_again(monkeypatch, tmp_path):
    """A resumed entry is kept only for the same model file (SHA-256) and threshold: the bundled model replaced
    since, its old images are dropped, not mixed with the new model's."""
    import numpy as np

    from experiments import measure_agreement as ma
    from keras_vessel.data.datasets import Sample

    class Spec:
        def __init__(self, name):
            self.name = name

        def load(self):
            image = np.zeros((8, 8, 3), np.uint8)
            return Sample(self.name, image, np.ones((8, 8), bool), np.ones((8, 8), bool))

    measured = []
    monkeypatch.setattr("keras_vessel.data.datasets.open_dataset", lambda *a: [Spec("01"), Spec("02")])
    monkeypatch.setattr("keras_vessel.evaluation.thresholds.load_threshold", lambda *a, **k: {"threshold": 0.5})
    monkeypatch.setattr("keras_vessel.models.inference.load_inference_model", lambda path: "model")
    monkeypatch.setattr("keras_vessel.models.inference.predict_probability", lambda m, image: np.ones(image.shape[:2]))
    monkeypatch.setattr("keras_vessel.measure.files.fov_circle", lambda fov: None)
    monkeypatch.setattr("keras_vessel.measure.measure_vessels",
                        lambda mask, fov, fov_circle: measured.append(1) or {"vessel_area_fraction": 1.0})
    model = tmp_path / "model.keras"
    model.write_bytes(b"version 1")
    done = {"images": {}}
    ma.measure_dataset(model, "drive", data=tmp_path, done=done, save=lambda: None)
    assert sorted(done["images"]) == ["01", "02"] and len(measured) == 4
    ma.measure_dataset(model, "drive", data=tmp_path, done=done, save=lambda: None)  # resumed: nothing new
    assert len(measured) == 4
    model.write_bytes(b"version 2")
    done["images"].pop("02")
    done["agreement"] = {"stale": True}
    ma.measure_dataset(model, "drive", data=tmp_path, done=done, save=lambda: None)
    assert len(measured) == 8 and sorted(done["images"]) == ["01", "02"] and "agreement" not in done
