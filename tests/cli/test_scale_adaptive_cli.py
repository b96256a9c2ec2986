"""`--scale adaptive` on the command line: per photograph, fused resolutions ("multi") from a field of view of
`MULTI_SCALE_FROM_FOV` px, the model's own scale ("auto") below it, each masked at its own stored threshold; by
predict (local and --engine beam) and evaluate. The bar is lowered here so that small photographs cross it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, show_result
from PIL import Image

DIAMETER = 126.0
BAR = 120.0  # between the two photographs' fields of view (about 86 and 144 px)
SIZES = {"small": 96, "wide": 160}
THRESHOLDS = {"auto": 0.3, "multi": 0.7}  # far apart: a mask at the other mode's threshold differs


@pytest.fixture(autouse=True)
def lower_bar(monkeypatch):
    from keras_vessel.data import scaling

    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", BAR)


@pytest.fixture(scope="module")
def photographs(tmp_path_factory) -> Path:
    """Two synthetic fundus photographs (PNG), one on each side of `BAR`."""
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.data.scaling import image_fov

    folder = tmp_path_factory.mktemp("photos")
    for name, size in SIZES.items():
        image = open_dataset("synthetic", None, "training", count=1, size=size, seed=3)[0].load().image
        assert (image_fov(image).diameter >= BAR) == (name == "wide")
        Image.fromarray(image).save(folder / f"{name}.png")
    return folder


@pytest.fixture
def model_path(tiny_model_file, tmp_path) -> Path:
    """A model recording its training diameter, in a folder of its own with both thresholds stored."""
    from keras_vessel.evaluation import save_threshold

    path = tmp_path / "model" / "tiny.keras"
    path.parent.mkdir()
    shutil.copyfile(tiny_model_file(fov_diameter=DIAMETER, head_gain=3.0), path)
    for mode, value in THRESHOLDS.items():
        save_threshold(path, value, heads="mean", scale=mode)
    return path


def _probability(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 65535


@pytest.mark.parametrize("engine", ["local", "beam"])
def test_predict_at_adaptive_fuses_the_wide_photograph_only_and_masks_each_at_its_modes_threshold(
        model_path, photographs, tmp_path, engine):
    if engine == "beam":
        pytest.importorskip("apache_beam", reason="the beam extra is not installed (pip install 'keras-vessel[beam]')")
    from keras_vessel.data.preprocessing import read_image
    from keras_vessel.models.inference import load_inference_model, predict_probability
    from keras_vessel.serving.prediction import OUTPUT_MARKER

    out = tmp_path / engine
    result = run_cli("predict", photographs, "--model", model_path, "--scale", "adaptive", "--fov", "none",
                     "--output", out, "--quiet", "--engine", engine)
    assert result.exit_code == 0 and "no threshold" not in result.stderr, show_result(result)
    model = load_inference_model(model_path)
    for name, mode in (("small", "auto"), ("wide", "multi")):
        image = read_image(photographs / f"{name}.png")
        expected = predict_probability(model, image, scale=mode)
        other = predict_probability(model, image, scale="multi" if mode == "auto" else "auto")
        assert np.abs(expected - other).max() > 1e-3  # the two modes differ on it
        np.testing.assert_allclose(_probability(out / f"{name}_prob.png"), expected, atol=2e-5)
        mask = np.asarray(Image.open(out / f"{name}_mask.png")) > 0
        clear = np.abs(expected - THRESHOLDS[mode]) > 1e-4
        np.testing.assert_array_equal(mask[clear], (expected >= THRESHOLDS[mode])[clear])
        assert (mask != (expected >= THRESHOLDS["auto" if mode == "multi" else "multi"])).any()
    settings = json.loads((out / OUTPUT_MARKER).read_text())["settings"]
    assert settings["scale"]["scale"] == "adaptive" and settings["scale"]["multi_from_fov"] == BAR
    assert settings["threshold"] == THRESHOLDS


def test_predict_at_adaptive_with_a_model_that_records_no_diameter_runs_at_auto(tiny_model_file, photographs,
                                                                                tmp_path):
    from keras_vessel.data.preprocessing import read_image
    from keras_vessel.models.inference import load_inference_model, predict_probability

    path = tiny_model_file()
    result = run_cli("predict", photographs, "--model", path, "--scale", "adaptive", "--fov", "none",
                     "--threshold", "0.5", "--output", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, show_result(result)
    image = read_image(photographs / "wide.png")
    np.testing.assert_allclose(_probability(tmp_path / "o" / "wide_prob.png"),
                               predict_probability(load_inference_model(path), image, scale="auto"), atol=2e-5)


def test_predict_at_adaptive_without_a_fused_threshold_masks_at_the_models_own(model_path, photographs, tmp_path):
    from keras_vessel.serving.prediction import OUTPUT_MARKER

    model_path.with_name("threshold_multi.json").unlink()
    for given in ([], ["--threshold", "train"]):  # the fused one may be missing either way
        out = tmp_path / f"o{len(given)}"
        result = run_cli("predict", photographs, "--model", model_path, "--scale", "adaptive", "--fov", "none",
                         "--output", out, "--quiet", *given)
        said = " ".join(result.stderr.split())
        assert result.exit_code == 0 and "no threshold_multi.json beside" in said, show_result(result)
        assert (f"no threshold_multi.json beside {model_path}: photographs run at fused resolutions are masked at the "
                "threshold for the model's own scale too (0.3)") in said  # the sentence of export's
        assert json.loads((out / OUTPUT_MARKER).read_text())["settings"]["threshold"] == {"auto": 0.3, "multi": 0.3}


def test_evaluate_at_adaptive_chooses_both_thresholds_and_masks_each_image_at_its_own(tiny_model_file, tmp_path):
    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.evaluation import choose_training_threshold
    from keras_vessel.models.inference import inference_scale, load_inference_model

    root = tmp_path / "labelled"  # a `folder` dataset: in each split one photograph on each side of the bar
    for offset, split in enumerate(("training", "test")):
        for index, size in enumerate(SIZES.values()):
            sample = open_dataset("synthetic", None, "training", count=1, size=size, seed=5 + 2 * offset + index)
            sample = sample[0].load()
            for folder, array in (("images", sample.image), ("labels", sample.label.astype(np.uint8) * 255)):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(array)).save(root / split / folder / f"eye{index}.png")
    model_path = tmp_path / "model" / "tiny.keras"
    model_path.parent.mkdir()
    shutil.copyfile(tiny_model_file(fov_diameter=DIAMETER, head_gain=3.0), model_path)
    result = run_cli("evaluate", "--model", model_path, "--dataset", "folder", "--root", root, "--split", "test",
                     "--output", tmp_path / "eval", "--scale", "adaptive", "--threshold", "train",
                     "--training-root", root, "--no-overlays", "--quiet")
    assert result.exit_code == 0, show_result(result)
    assert "chosen at the model's own scale" in result.stderr and "chosen at --scale multi" in result.stderr
    model = load_inference_model(model_path)
    training = open_dataset("folder", root, "training")
    chosen = {mode: choose_training_threshold(model, training, progress=False, predict_options={"scale": mode})
              for mode in ("auto", "multi")}
    for mode, file in (("auto", "threshold.json"), ("multi", "threshold_multi.json")):
        assert json.loads(model_path.with_name(file).read_text())["threshold"] == pytest.approx(chosen[mode])
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    protocol = report["protocol"]
    assert protocol["scale"] == "adaptive" and protocol["multi_from_fov"] == BAR
    assert protocol["threshold"] == pytest.approx(chosen["auto"])
    assert protocol["threshold_multi"] == pytest.approx(chosen["multi"])
    for row, spec in zip(report["per_image"], open_dataset("folder", root, "test")):
        mode = inference_scale(model, spec.load().image, "adaptive").mode
        assert row["threshold"] == pytest.approx(chosen[mode]), (row["name"], mode)
    assert {inference_scale(model, s.load().image, "adaptive").mode for s in open_dataset("folder", root, "test")} \
        == {"auto", "multi"}


def test_the_thresholds_of_adaptive():
    from keras_vessel.evaluation import Threshold, threshold_scale, threshold_scales
    from keras_vessel.serving.prediction import check_mask_threshold

    assert threshold_scales(" Adaptive") == ("auto", "multi") and threshold_scales("multi") == ("multi",)
    with pytest.raises(ValueError, match="read them with `threshold_scales`"):
        threshold_scale("adaptive")
    both = Threshold.per_mode(0.3, 0.7, "one rule", "another rule")
    prob, fov = np.linspace(0, 1, 100).reshape(10, 10), np.ones((10, 10), bool)
    assert (both.for_image(prob, fov), both.for_image(prob, fov, "multi")) == (0.3, 0.7)
    assert "one rule (t = 0.3)" in both.rule and "another rule (t = 0.7)" in both.rule
    assert Threshold.given(0.4).for_image(prob, fov, "multi") == 0.4  # one threshold: every mode
    assert check_mask_threshold({"multi": "0.7", "auto": 0.3}) == THRESHOLDS
    for bad in ({"auto": 0.3}, {"auto": 0.3, "multi": 0.7, "none": 0.5}, {"auto": 0.3, "multi": 1.5}):
        with pytest.raises(ValueError):
            check_mask_threshold(bad)


def test_evaluate_at_adaptive_with_a_model_that_records_no_diameter_needs_only_its_own_threshold(tiny_model_file,
                                                                                                 tmp_path):
    from keras_vessel.evaluation import save_threshold

    model_path = tmp_path / "model" / "tiny.keras"
    model_path.parent.mkdir()
    shutil.copyfile(tiny_model_file(), model_path)  # never fuses: threshold_multi.json has no use
    save_threshold(model_path, 0.45, heads="mean")
    result = run_cli("evaluate", "--model", model_path, "--dataset", "synthetic", "--output", tmp_path / "eval",
                     "--scale", "adaptive", "--threshold", "train", "--no-overlays", "--quiet")
    assert result.exit_code == 0, show_result(result)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {row["threshold"] for row in report["per_image"]} == {0.45} and "threshold_multi" not in report["protocol"]


def test_predict_at_adaptive_with_a_model_that_never_fuses_says_nothing_of_a_fused_threshold(tiny_model_file,
                                                                                             photographs, tmp_path):
    from keras_vessel.evaluation import save_threshold

    path = tmp_path / "model" / "tiny.keras"
    path.parent.mkdir()
    shutil.copyfile(tiny_model_file(), path)  # records no training diameter
    save_threshold(path, 0.45, heads="mean")
    result = run_cli("predict", photographs, "--model", path, "--scale", "adaptive", "--fov", "none",
                     "--output", tmp_path / "o", "--quiet")
    assert result.exit_code == 0 and "threshold_multi" not in result.stderr, show_result(result)


def test_the_missing_threshold_messages_at_adaptive_say_which_photographs_and_how_to_choose_them(model_path,
                                                                                                 photographs,
                                                                                                 tmp_path):
    from keras_vessel.serving.prediction import OUTPUT_MARKER

    model_path.with_name("threshold.json").unlink()  # only the fused one left
    result = run_cli("predict", photographs, "--model", model_path, "--scale", "adaptive", "--fov", "none",
                     "--output", tmp_path / "a", "--quiet")
    said = " ".join(result.stderr.split())
    assert result.exit_code == 0, show_result(result)
    assert "masks the photographs run at the model's own scale at threshold 0.5" in said and said.count("no ") == 1
    assert json.loads((tmp_path / "a" / OUTPUT_MARKER).read_text())["settings"]["threshold"] == {"auto": 0.5,
                                                                                                   "multi": 0.7}
    result = run_cli("predict", photographs, "--model", model_path, "--scale", "adaptive", "--fov", "none",
                     "--output", tmp_path / "b", "--tta", "flip", "--quiet")  # no TTA threshold at all
    said = " ".join(result.stderr.split())
    assert result.exit_code == 0, show_result(result)
    assert "no threshold_tta_flip.json" in said and "--training-root ... --tta flip`" in said
    assert "no threshold_tta_flip_multi.json" in said and "--training-root ... --tta flip --scale multi`" in said
    result = run_cli("predict", photographs, "--model", model_path, "--scale", "adaptive", "--fov", "none",
                     "--output", tmp_path / "a", "--threshold", "0.6", "--quiet")  # another threshold: refused
    assert result.exit_code == 1, show_result(result)
    assert "another --threshold (auto 0.5, multi 0.7; now 0.6)" in " ".join(result.stderr.split())


def test_a_fused_threshold_chosen_at_other_multiples_is_refused(model_path, photographs, tmp_path):
    record = json.loads(model_path.with_name("threshold_multi.json").read_text())
    model_path.with_name("threshold_multi.json").write_text(json.dumps({**record, "multiples": [1.0, 2.0]}))
    result = run_cli("predict", photographs, "--model", model_path, "--scale", "adaptive", "--output", tmp_path / "o",
                     "--quiet")
    said = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "fused at [1.0, 2.0] times the training diameter, not at [1.0, 1.5, 2.0]" \
        in said, show_result(result)
    assert not (tmp_path / "o").exists()


def test_export_at_adaptive_of_a_model_that_never_fuses_says_nothing_of_a_fused_threshold(tiny_model_file, tmp_path):
    from keras_vessel.evaluation import save_threshold

    path = tmp_path / "model" / "tiny.keras"
    path.parent.mkdir()
    shutil.copyfile(tiny_model_file(base_filters=2, depth=1), path)
    save_threshold(path, 0.45, heads="mean")
    result = run_cli("export", "--model", path, "--name", "v", "--version", 1, "--out", tmp_path / "x", "--scale",
                     "adaptive", "--threshold", "train", "--format", "tflite")
    assert result.exit_code == 0 and "threshold_multi" not in result.stderr, show_result(result)


def test_evaluate_report_of_a_model_that_never_fuses_says_it_ran_each_image_at_its_own_grid(tiny_model_file,
                                                                                            tmp_path):
    result = run_cli("evaluate", "--model", tiny_model_file(), "--dataset", "synthetic", "--output", tmp_path / "e",
                     "--scale", "adaptive", "--threshold", "0.5", "--no-overlays", "--quiet")
    assert result.exit_code == 0, show_result(result)
    text = (tmp_path / "e" / "metrics.md").read_text()
    assert "Scale: each image at its own grid (the model records no training field-of-view diameter)" in text
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["protocol"]["model_fov_diameter"] is None
