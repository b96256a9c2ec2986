"""`--scale multi` on the command line: predict (local and --engine beam), evaluate and export (SavedModel and
TFLite) accept it and record it; a model that records no training diameter is refused in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, show_result
from PIL import Image

DIAMETER = 126.0
NAMES = ("eye_a", "eye_b")
REFUSAL = ("records no training field-of-view diameter, so `scale='multi'` has no multiples of it to run at; pass "
           "a working diameter such as '1080px'")


@pytest.fixture(scope="module")
def model_path(tiny_model_file) -> Path:
    return tiny_model_file(fov_diameter=DIAMETER)


@pytest.fixture(scope="module")
def photographs(tmp_path_factory) -> Path:
    """Two small synthetic fundus photographs (PNG), of two sizes."""
    from keras_vessel.data.datasets import open_dataset

    folder = tmp_path_factory.mktemp("photos")
    for index, (name, spec) in enumerate(zip(NAMES, open_dataset("synthetic", None, "training", count=2, size=96,
                                                                seed=3))):
        image = spec.load().image
        Image.fromarray(np.ascontiguousarray(image[:, 8:] if index else image)).save(folder / f"{name}.png")
    return folder


def _probability(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 65535


def test_predict_at_multi_writes_the_librarys_mean_with_both_engines(model_path, photographs, tmp_path,
                                                                      monkeypatch):
    pytest.importorskip("apache_beam", reason="the beam extra is not installed (pip install 'keras-vessel[beam]')")
    from keras_vessel.data import scaling
    from keras_vessel.data.preprocessing import read_image
    from keras_vessel.models.inference import load_inference_model, predict_probability
    from keras_vessel.serving.prediction import OUTPUT_MARKER

    common = ["--model", model_path, "--scale", " Multi", "--fov", "none", "--threshold", "0.5", "--quiet"]
    result = run_cli("predict", photographs, "--output", tmp_path / "local", *common)
    assert result.exit_code == 0, show_result(result)
    result = run_cli("predict", photographs, "--output", tmp_path / "beam", *common, "--engine", "beam",
                     "--beam-option", "direct_num_workers=1")
    assert result.exit_code == 0 and "2 photographs done" in result.stdout, show_result(result)
    model = load_inference_model(model_path)
    for name in NAMES:
        expected = predict_probability(model, read_image(photographs / f"{name}.png"), scale="multi")
        assert np.abs(expected - predict_probability(model, read_image(photographs / f"{name}.png"))).max() > 1e-3
        for engine in ("local", "beam"):
            np.testing.assert_allclose(_probability(tmp_path / engine / f"{name}_prob.png"), expected, atol=2e-5)
    for engine in ("local", "beam"):  # the folders record the scale with its multiples ...
        settings = json.loads((tmp_path / engine / OUTPUT_MARKER).read_text())["settings"]
        assert settings["scale"] == {"scale": "multi", "multiples": list(scaling.FUSION_MULTIPLES)}
    before, after = list(scaling.FUSION_MULTIPLES), list(scaling.FUSION_MULTIPLES[:-1])
    monkeypatch.setattr(scaling, "FUSION_MULTIPLES", tuple(after))  # ... so other multiples are another scale
    result = run_cli("predict", photographs, "--output", tmp_path / "local", *common)
    assert result.exit_code == 1, show_result(result)
    assert f"holds predictions made with another --scale (multi, {before}; now multi, {after})" in \
        " ".join(result.stderr.split()), show_result(result)


def test_evaluate_at_multi_records_the_multiples(model_path, tmp_path):
    from keras_vessel.data.scaling import FUSION_MULTIPLES

    result = run_cli("evaluate", "--model", model_path, "--dataset", "synthetic", "--output", tmp_path / "eval",
                     "--scale", "multi", "--threshold", "0.5", "--no-overlays", "--quiet")
    assert result.exit_code == 0, show_result(result)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["protocol"]["scale"] == "multi" and report["protocol"]["multiples"] == list(FUSION_MULTIPLES)
    assert all(len(row["scale"]) == len(FUSION_MULTIPLES) for row in report["per_image"])


def test_export_at_multi_says_so_and_tflite_lists_the_diameters(tiny_model_file, tmp_path):
    from keras_vessel.data.scaling import FUSION_MULTIPLES

    model_path = tiny_model_file(base_filters=2, depth=1, fov_diameter=DIAMETER)  # the smallest graph to save
    common = ["export", "--model", model_path, "--version", 1, "--out", tmp_path, "--scale", "multi"]
    result = run_cli(*common, "--name", "vessel")
    assert result.exit_code == 0, show_result(result)
    assert "scale multi" in result.stdout and (tmp_path / "vessel" / "1" / "saved_model.pb").is_file()
    result = run_cli(*common, "--name", "lite", "--format", "tflite")
    assert result.exit_code == 0, show_result(result)
    contract = json.loads((tmp_path / "lite" / "1" / "lite.json").read_text())
    assert contract["fov_diameters"] == [m * DIAMETER for m in FUSION_MULTIPLES] and "fov_diameter" not in contract
    assert contract["scale"] == "multi" and contract["multiples"] == list(FUSION_MULTIPLES)


@pytest.mark.parametrize("command", ["predict", "predict-beam", "evaluate", "export", "export-tflite"])
def test_multi_with_a_model_that_records_no_diameter_is_one_sentence(tiny_model_file, photographs, tmp_path,
                                                                      command):
    path = tiny_model_file()
    if command == "predict-beam":
        pytest.importorskip("apache_beam", reason="the beam extra is not installed")
    if command.startswith("predict"):
        engine = ["--engine", "beam"] if command == "predict-beam" else []
        args = ["predict", photographs, "--model", path, "--output", tmp_path / "o", "--threshold", "0.5", *engine]
    elif command == "evaluate":
        args = ["evaluate", "--model", path, "--dataset", "synthetic", "--output", tmp_path / "o"]
    else:
        form = ["--format", "tflite"] if command == "export-tflite" else []
        args = ["export", "--model", path, "--name", "m", "--version", 1, "--out", tmp_path / "o", *form]
    result = run_cli(*args, "--scale", "multi")
    assert result.exit_code == 1, show_result(result)
    said = " ".join(result.stderr.split())
    assert f"model {path} {REFUSAL}" in said and said.count("records no training") == 1, show_result(result)
    assert not (tmp_path / "o").exists() or not any(p.is_file() for p in (tmp_path / "o").rglob("*")), command


def test_scale_help_names_multi_and_its_threshold():
    for command, threshold in (("predict", "threshold chosen on fused maps (threshold_multi.json"),
                               ("evaluate", "threshold chosen on fused maps (threshold_multi.json"),
                               ("export", "threshold_multi.json with --scale multi")):
        result = run_cli(command, "--help")
        said = " ".join(result.stdout.split())
        assert result.exit_code == 0 and "'multi'" in said and threshold in said, show_result(result)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """A `folder` dataset: training/ and test/, two small synthetic photographs each, with their labels."""
    from keras_vessel.data.datasets import open_dataset

    root = tmp_path_factory.mktemp("labelled")
    specs = open_dataset("synthetic", None, "training", count=4, size=96, seed=5)
    for index, spec in enumerate(specs):
        sample, split = spec.load(), ("training", "test")[index % 2]
        for folder, array in (("images", sample.image), ("labels", sample.label.astype(np.uint8) * 255)):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(array)).save(root / split / folder / f"{sample.name}.png")
    return root


def test_evaluate_chooses_the_fused_threshold_and_predict_at_multi_masks_with_it(tiny_model_file, photographs,
                                                                                 labelled, tmp_path):
    import shutil

    from keras_vessel.data.datasets import open_dataset
    from keras_vessel.data.preprocessing import read_image
    from keras_vessel.evaluation import choose_training_threshold
    from keras_vessel.models.inference import load_inference_model, predict_probability

    model_path = tmp_path / "model" / "tiny.keras"  # its own folder: the thresholds are written beside it
    model_path.parent.mkdir()
    shutil.copyfile(tiny_model_file(fov_diameter=DIAMETER, head_gain=3.0), model_path)
    result = run_cli("evaluate", "--model", model_path, "--dataset", "folder", "--root", labelled, "--split", "test",
                     "--output", tmp_path / "eval", "--scale", "multi", "--threshold", "train", "--training-root",
                     labelled, "--no-overlays", "--quiet")
    assert result.exit_code == 0 and "chosen at --scale multi" in result.stderr, show_result(result)
    model = load_inference_model(model_path)
    expected = choose_training_threshold(model, open_dataset("folder", labelled, "training"), progress=False,
                                         predict_options={"scale": "multi"})
    stored = json.loads(model_path.with_name("threshold_multi.json").read_text())
    assert stored["threshold"] == pytest.approx(expected) and stored["scale"] == "multi"
    assert not model_path.with_name("threshold.json").exists()  # the model's own scale's is another file
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["per_image"][0]["threshold"] == pytest.approx(expected)

    result = run_cli("predict", photographs, "--model", model_path, "--output", tmp_path / "fused", "--scale",
                     "multi", "--fov", "none", "--quiet")
    assert result.exit_code == 0 and "no threshold" not in result.stderr, show_result(result)
    image = read_image(photographs / f"{NAMES[0]}.png")
    probability = predict_probability(model, image, scale="multi")
    mask = np.asarray(Image.open(tmp_path / "fused" / f"{NAMES[0]}_mask.png")) > 0
    np.testing.assert_array_equal(mask, probability >= stored["threshold"])


def test_predict_at_multi_without_a_fused_threshold_says_which_it_uses(tiny_model_file, photographs, tmp_path):
    import shutil

    from keras_vessel.evaluation import save_threshold

    model_path = tmp_path / "model" / "tiny.keras"
    model_path.parent.mkdir()
    shutil.copyfile(tiny_model_file(fov_diameter=DIAMETER, head_gain=3.0), model_path)
    save_threshold(model_path, 0.61, heads="mean")  # chosen at the model's own scale only
    common = ["--model", model_path, "--scale", "multi", "--fov", "none", "--quiet"]
    result = run_cli("predict", photographs, "--output", tmp_path / "o", *common)
    said = " ".join(result.stderr.split())
    assert result.exit_code == 0, show_result(result)
    assert "no threshold_multi.json beside" in said and "own scale (0.61)" in said and "--scale multi" in said
    result = run_cli("predict", photographs, "--output", tmp_path / "explicit", *common, "--threshold", "train")
    assert result.exit_code == 1 and "threshold_multi.json" in result.stderr, show_result(result)
