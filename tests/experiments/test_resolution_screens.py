"""The screens of rules h4-h6 (notebook entry k): their label-free choices, against NumPy oracles."""

import numpy as np
import pytest

from experiments import multi_resolution as mr
from experiments import per_photograph_resolution as ppr


def test_fraction_threshold_marks_that_fraction_of_the_fov():
    rng = np.random.default_rng(0)
    prob = rng.random((60, 80)).astype(np.float32)
    fov = np.zeros((60, 80), bool)
    fov[5:55, 10:70] = True
    threshold = mr.fraction_threshold(prob, fov, 0.12)
    marked = (prob >= threshold)[fov].mean()
    assert marked == pytest.approx(0.12, abs=1.0 / fov.sum())


def test_confident_takes_the_most_decided_map_and_fusions_are_means():
    fov = np.ones((4, 4), bool)
    maps = {"540px": np.full((4, 4), 0.6, np.float32), "810px": np.full((4, 4), 0.95, np.float32),
            "1080px": np.full((4, 4), 0.3, np.float32)}
    combined, chosen = mr.combine(maps, fov)
    assert np.array_equal(combined["confident"], maps["810px"]) and chosen == "810px"  # |2p-1|: 0.2, 0.9, 0.4
    np.testing.assert_allclose(combined["fuse2"], 0.775)
    np.testing.assert_allclose(combined["fuse3"], (0.6 + 0.95 + 0.3) / 3)


def test_h4_runs_each_photograph_at_the_largest_diameter_as_sharp_as_the_reference():
    rows = [{"camera": "drive", "name": f"d{i}", "training": "True", "r540": str(r), "r810": "0", "r1080": "0"}
            for i, r in enumerate((1.0, 1.2, 1.4))]  # the reference: median 1.2
    rows += [{"camera": "hrf", "name": "sharp", "training": "True", "r540": "1.3", "r810": "1.25", "r1080": "1.21"},
             {"camera": "hrf", "name": "middle", "training": "True", "r540": "1.3", "r810": "1.2", "r1080": "1.1"},
             {"camera": "hrf", "name": "soft", "training": "True", "r540": "1.1", "r810": "0.9", "r1080": "0.8"}]
    reference, choices = ppr.choose(rows, "hrf")
    assert reference == 1.2
    assert choices == {"sharp": 1080, "middle": 810, "soft": 540}


def test_sharpness_falls_when_a_photograph_is_enlarged_past_its_detail():
    rng = np.random.default_rng(1)
    image = np.zeros((400, 400, 3), np.uint8)
    image[..., 1] = np.clip(128 + 40 * rng.standard_normal((400, 400)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:400, :400]
    fov = (yy - 200) ** 2 + (xx - 200) ** 2 < 190 ** 2
    at_own_size = ppr.sharpness(image, fov, 380.0, 380.0)
    enlarged = ppr.sharpness(image, fov, 380.0, 760.0)
    assert enlarged < 0.8 * at_own_size


def test_h7_store_gives_a_model_its_fused_threshold_only_from_its_own_training_images(tiny_model_file,
                                                                                      synthetic_records, tmp_path):
    import shutil

    from experiments import fused_threshold as ft
    from keras_vessel.data.tfrecords import read_samples
    from keras_vessel.evaluation import choose_training_threshold, load_threshold, save_threshold
    from keras_vessel.models.inference import load_inference_model

    model_path = tmp_path / "model.keras"
    shutil.copyfile(tiny_model_file(fov_diameter=80.0, head_gain=3.0), model_path)
    records = synthetic_records(count=4, size=96, seed=2)
    model, samples = load_inference_model(model_path), read_samples([records])
    own = choose_training_threshold(model, samples, progress=False, predict_options={"scale": "auto"})
    save_threshold(model_path, own + 0.01, heads="mean", images=len(samples))  # not chosen on these images
    with pytest.raises(SystemExit, match="not its training images"):
        ft.store_fused_threshold(model_path, [records])
    assert not (tmp_path / "threshold_multi.json").exists()
    save_threshold(model_path, own, heads="mean", images=len(samples))
    stored = ft.store_fused_threshold(model_path, [records])
    fused = choose_training_threshold(model, samples, progress=False, predict_options={"scale": "multi"})
    assert stored["fused"] == fused == load_threshold(model_path, scale="multi")["threshold"]
    assert load_threshold(model_path)["threshold"] == own  # the own-scale threshold is left as it was
