"""CLI tests for `keras-vessel export` (CliRunner): exit codes, stderr, the written SavedModel."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_vessel_cli.main import cli


def _run(args: list):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    shown = f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"
    return result, shown


@pytest.fixture(scope="module")
def model_path(tiny_model_file) -> Path:
    return tiny_model_file(base_filters=2, depth=1, seed=3)


IMAGE = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(model_path, tmp_path_factory) -> dict:
    """One export with the training threshold (threshold.json beside the model, heads=pixel).

    The stored threshold sits between 0.5 and the next pixel-head probability
    of IMAGE above it, so the exported mask differs from a 0.5 threshold.
    """
    from keras_vessel.evaluation import save_threshold, threshold_path
    from keras_vessel.models.inference import load_inference_model, predict_probability

    expected = predict_probability(load_inference_model(model_path, heads="pixel"), IMAGE)
    # Many pixels of an untrained network sit at exactly 0.5 (logit 0); put the threshold just above them.
    threshold = float((0.5 + expected[expected > 0.5].min()) / 2)
    save_threshold(model_path, threshold, heads="pixel")
    out = tmp_path_factory.mktemp("saved_models")
    try:
        result, shown = _run(["export", "--model", model_path, "--name", "vessel", "--version", 2, "--out", out,
                              "--heads", "pixel", "--threshold", "train"])  # fmt: skip
    finally:
        threshold_path(model_path).unlink()
    return {"result": result, "shown": shown, "out": out, "threshold": threshold, "expected": expected}


def test_export_writes_the_tf_serving_layout(exported, model_path):
    result, out = exported["result"], exported["out"]
    assert result.exit_code == 0, exported["shown"]
    target = out / "vessel" / "2"
    assert (target / "saved_model.pb").is_file() and (target / "variables").is_dir()
    assert sorted(p.name for p in (out / "vessel").iterdir()) == ["2"]
    assert f"to {target}" in result.stdout and f"mask threshold {exported['threshold']:g}" in result.stdout


def test_export_uses_heads_and_training_threshold(exported):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported["out"] / "vessel" / "2"))
    buffer = io.BytesIO()
    Image.fromarray(IMAGE).save(buffer, format="PNG")
    result = loaded.signatures["predict_image"](image_bytes=tf.constant([buffer.getvalue()]))
    expected, threshold = exported["expected"], exported["threshold"]  # the pixel head, threshold.json
    prob = result["probability"].numpy()[0]
    assert np.abs(prob - expected).max() <= 1e-5
    mask = tf.io.decode_png(result["mask_png_bytes"].numpy()[0]).numpy()[..., 0] > 0
    clear = np.abs(expected - threshold) > 1e-5
    np.testing.assert_array_equal(mask[clear], expected[clear] >= threshold)
    assert mask.any() and not mask.all() and (mask != (expected >= 0.5)).any()  # not the 0.5 default


def test_refuses_to_overwrite_an_existing_version(exported, model_path):
    target = exported["out"] / "vessel" / "2" / "saved_model.pb"
    before = target.stat().st_mtime_ns
    result, shown = _run(["export", "--model", model_path, "--name", "vessel", "--version", 2,
                          "--out", exported["out"]])  # fmt: skip
    assert result.exit_code == 1, shown
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert str(exported["out"] / "vessel" / "2") in result.stderr
    assert target.stat().st_mtime_ns == before


def test_overwrite_replaces_the_version(model_path, tmp_path):
    stale = tmp_path / "vessel" / "1" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    result, shown = _run(["export", "--model", model_path, "--name", "vessel", "--version", 1, "--out", tmp_path,
                          "--overwrite"])  # fmt: skip
    assert result.exit_code == 0, shown
    assert not stale.exists() and (tmp_path / "vessel" / "1" / "saved_model.pb").is_file()


def test_rejects_a_keras_file_that_is_not_a_keras_vessel_model(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    other = tmp_path / "other.keras"
    keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs), name="not_vessel").save(other)
    result, shown = _run(["export", "--model", other, "--name", "vessel", "--version", 1, "--out", tmp_path / "o"])
    assert result.exit_code == 1, shown
    assert "other.keras" in result.stderr and "is neither a training model" in result.stderr
    assert not (tmp_path / "o" / "vessel" / "1").exists()


def test_rejects_files_keras_cannot_load(tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_text("not a zip archive")
    result, shown = _run(["export", "--model", corrupt, "--name", "v", "--version", 1, "--out", tmp_path / "o"])
    assert result.exit_code == 1, shown
    assert "could not load model" in result.stderr and "corrupt.keras" in result.stderr
    weights = tmp_path / "model.h5"
    weights.write_text("")
    result, shown = _run(["export", "--model", weights, "--name", "v", "--version", 1, "--out", tmp_path / "o"])
    assert result.exit_code == 1, shown
    assert "must be a Keras 3 '.keras' file" in result.stderr and "model.h5" in result.stderr


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--version", "0"], 2, "--version"),
        (["--threshold", "otsu"], 2, "expected a number in (0, 1) or 'train'; got 'otsu'"),
        (["--heads", "both"], 2, "--heads"),
        (["--name", "a/b"], 1, "name must be a non-empty model name"),
        (["--threshold", "train"], 1, "threshold.json"),
        (["--scale", "10px"], 2, "`scale` must be a field-of-view diameter between 64 and 4096 px; got '10px'."),
        (["--scale", "0.5"], 2, "`scale` must be 'auto', 'multi', 'adaptive', 'none' or a field-of-view diameter "
                                "such as '1080px' (not a factor); got '0.5'."),
    ],
)
def test_bad_options(model_path, tmp_path, extra, code, message):
    args = {"--name": "vessel", "--version": "1", "--threshold": "0.5", "--heads": "mean"}
    args.update(dict(zip(extra[::2], extra[1::2])))
    flat = [item for pair in args.items() for item in pair]
    result, shown = _run(["export", "--model", model_path, "--out", tmp_path / "o", *flat])
    assert result.exit_code == code, shown
    assert message in " ".join(result.stderr.split()), shown
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("saved_model.pb"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--weights", "int8", "--input-size", "64"], "--weights applies only to --format tflite, not to --format "
                                                      "savedmodel; drop it or pass --format tflite"),
        (["--weights", "float32"], "--weights applies only to --format tflite"),  # given, even at its default
        (["--input-size", "64"], "--input-size applies only to --format tflite, not to --format savedmodel"),
        (["--format", "tflite", "--keras"], "--keras applies only to --format savedmodel, not to --format tflite"),
    ],
)
def test_options_of_the_other_format_are_bad_usage(model_path, tmp_path, extra, message):
    """An option that does not apply to the chosen --format is refused (exit 2) before anything is written,
    not silently ignored."""
    result, shown = _run(["export", "--model", model_path, "--name", "vessel", "--version", 1,
                          "--out", tmp_path / "o", *extra])  # fmt: skip
    assert result.exit_code == 2, shown
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr, shown
    assert not (tmp_path / "o").exists(), shown


def test_missing_model_is_bad_usage(tmp_path):
    result, shown = _run(["export", "--model", tmp_path / "nope.keras", "--name", "v", "--version", 1,
                          "--out", tmp_path])  # fmt: skip
    assert result.exit_code == 2, shown
    assert "nope.keras" in result.stderr and "does not exist" in result.stderr


def test_export_is_listed_in_help():
    result, shown = _run(["--help"])
    assert result.exit_code == 0, shown
    assert "export" in result.stdout
    result, shown = _run(["export", "--help"])
    assert result.exit_code == 0 and "--overwrite" in result.stdout and "--threshold" in result.stdout


def test_export_with_keras_writes_the_shippable_file(tmp_path):
    import keras

    from keras_vessel.losses import build_losses
    from keras_vessel.models import build_model

    model = build_model("unet", base_filters=2, depth=1)
    model.compile(optimizer="adam", loss=build_losses("joint"))
    model.optimizer.build(model.trainable_variables)
    source = tmp_path / "run" / "model.keras"
    source.parent.mkdir()
    model.save(source)
    args = ["export", "--model", source, "--name", "drive", "--version", 1, "--out", tmp_path / "sm", "--keras"]
    result, shown = _run(args)
    assert result.exit_code == 0, shown
    shipped = tmp_path / "sm" / "drive" / "model.keras"
    assert f"wrote {shipped}" in result.stdout
    assert (tmp_path / "sm" / "drive" / "1" / "saved_model.pb").is_file()
    assert keras.saving.load_model(shipped).count_params() == model.count_params()
    result, shown = _run([*args[:-1], "--version", 2, "--keras"])
    assert result.exit_code == 1 and "model.keras already exists; pass --overwrite" in result.stderr, shown
    assert not (tmp_path / "sm" / "drive" / "2").exists()  # refused before exporting anything


def test_export_at_a_working_diameter_says_so(model_path, tmp_path):
    """--scale 1080px: the SavedModel's graph runs every image at a 1080 px FOV, and the line says the scale;
    with --format tflite, NAME.json records 1080 as the fov_diameter for the app."""
    import json

    result, shown = _run(["export", "--model", model_path, "--name", "vessel", "--version", 1, "--out", tmp_path,
                          "--scale", "1080PX"])  # fmt: skip
    assert result.exit_code == 0, shown
    assert "scale 1080px" in result.stdout and (tmp_path / "vessel" / "1" / "saved_model.pb").is_file(), shown
    result, shown = _run(["export", "--model", model_path, "--name", "lite", "--version", 1, "--out", tmp_path,
                          "--scale", "1080px", "--format", "tflite"])  # fmt: skip
    assert result.exit_code == 0, shown
    contract = json.loads((tmp_path / "lite" / "1" / "lite.json").read_text())
    assert contract["fov_diameter"] == 1080.0 and contract["scale"] == "1080px"


def test_export_at_adaptive_reads_both_training_thresholds(tiny_model_file, tmp_path):
    """--scale adaptive --threshold train: threshold.json and threshold_multi.json, both in the closing line and
    in the export (the SavedModel's mask; NAME.json's threshold and threshold_multi); without threshold_multi.json,
    the own-scale one for both, said on stderr in one sentence."""
    import json
    import shutil

    import tensorflow as tf

    from keras_vessel.evaluation import save_threshold, threshold_path
    from keras_vessel.models.inference import load_inference_model, predict_probability

    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    shutil.copyfile(tiny_model_file(base_filters=2, depth=1, seed=3, fov_diameter=20.0), model)
    expected = predict_probability(load_inference_model(model), IMAGE, scale="adaptive")  # 24x20 px: "auto"
    auto, multi = float(np.quantile(expected, 0.4)), float(np.quantile(expected, 0.8))
    save_threshold(model, auto, heads="mean")
    save_threshold(model, multi, heads="mean", scale="multi")
    base = ["export", "--model", model, "--name", "vessel", "--out", tmp_path / "out", "--scale", "adaptive",
            "--threshold", "train"]
    result, shown = _run([*base, "--version", 1])
    assert result.exit_code == 0, shown
    assert f"mask thresholds {auto:g} (auto), {multi:g} (multi), scale adaptive" in result.stdout, shown
    assert "threshold_multi.json" not in result.stderr, shown
    loaded = tf.saved_model.load(str(tmp_path / "out" / "vessel" / "1"))
    buffer = io.BytesIO()
    Image.fromarray(IMAGE).save(buffer, format="PNG")
    served = loaded.signatures["predict_image"](image_bytes=tf.constant([buffer.getvalue()]))
    mask = tf.io.decode_png(served["mask_png_bytes"].numpy()[0]).numpy()[..., 0] > 0
    clear = np.abs(expected - auto) > 1e-5
    np.testing.assert_array_equal(mask[clear], expected[clear] >= auto)  # run at "auto": masked at auto's
    assert (mask != (expected >= multi)).any()
    from keras_vessel.data.scaling import FUSION_MULTIPLES, MULTI_SCALE_FROM_FOV
    from keras_vessel.io import file_sha256
    from keras_vessel.serving.export import EXPORT_RECORD

    record = json.loads((tmp_path / "out" / "vessel" / "1" / EXPORT_RECORD).read_text())
    assert record["modes"] == {"auto": {"threshold": auto, "fov_diameters": [20.0]},
                               "multi": {"threshold": multi, "fov_diameters": [20.0 * m for m in FUSION_MULTIPLES]}}
    assert (record["scale"], record["multi_from_fov"]) == ("adaptive", MULTI_SCALE_FROM_FOV)
    assert record["model"] == {"path": str(model), "sha256": file_sha256(model)}
    result, shown = _run([*base, "--version", 2, "--format", "tflite"])
    assert result.exit_code == 0, shown
    contract = json.loads((tmp_path / "out" / "vessel" / "2" / "vessel.json").read_text())
    assert (contract["threshold"], contract["threshold_multi"], contract["scale"]) == (auto, multi, "adaptive")

    threshold_path(model, scale="multi").unlink()
    result, shown = _run([*base, "--version", 3])
    assert result.exit_code == 0, shown
    assert f"mask thresholds {auto:g} (auto), {auto:g} (multi), scale adaptive" in result.stdout, shown
    sentence = (f"no threshold_multi.json beside {model}: photographs run at fused resolutions are masked at the "
                f"threshold for the model's own scale too ({auto:.3g}), which marks fewer vessels on fused maps "
                "(choose one with `keras-vessel evaluate --threshold train --training-root ... --scale multi`)")
    assert " ".join(result.stderr.split()) == sentence, shown
    threshold_path(model).unlink()  # the own-scale one is needed whatever the scale
    result, shown = _run([*base, "--version", 4])
    assert result.exit_code == 1 and "threshold.json" in result.stderr, shown
    assert not (tmp_path / "out" / "vessel" / "4").exists()
