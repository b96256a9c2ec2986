"""LiteRT (TFLite) export (issue 23): the flat buffer predicts what the Keras model predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_vessel.models import build_inference_model, build_model
from keras_vessel.serving.tflite import export_tflite
from keras_vessel_cli.main import cli


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    network = build_model("unet", base_filters=4, depth=2, normalisation="local", fov_diameter=540.0)
    for head in ("segment", "pixel"):  # an untrained net barely responds to the image: make it respond
        layer = network.get_layer(head)
        layer.set_weights([w * 20 for w in layer.get_weights()])
    return network


def run(path, image):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(image.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


# stated tolerances: float32 is the same arithmetic; float16 and int8 weights round every weight
@pytest.mark.parametrize("weights, tolerance", [("float32", 1e-5), ("float16", 5e-3), ("int8", 3e-2)])
def test_the_flat_buffer_predicts_what_keras_predicts(tmp_path, model, weights, tolerance):
    path = export_tflite(model, tmp_path, name="vessel", weights=weights, threshold=0.6)
    rng = np.random.default_rng(1)
    for shape in ((1, 64, 64, 3), (1, 96, 128, 3)):  # resizable: any multiple of the stride
        image = rng.uniform(0, 255, shape).astype("float32")
        expected = build_inference_model(model)(image).numpy()[..., 0]
        got = run(path, image)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= tolerance
        assert np.std(expected) > 2 * tolerance  # the comparison is not between two constants
    contract = json.loads((tmp_path / "vessel.json").read_text())
    assert contract["fov_diameter"] == 540.0 and contract["threshold"] == 0.6 and contract["input"]["stride"] == 4
    sizes = {w: path.stat().st_size for w in [weights]}
    assert sizes[weights] > 1000


def test_a_fixed_size_and_the_smaller_weights(tmp_path, model):
    full = export_tflite(model, tmp_path / "a", name="v", weights="float32", input_size=64)
    half = export_tflite(model, tmp_path / "b", name="v", weights="float16", input_size=64)
    assert half.stat().st_size < full.stat().st_size
    assert json.loads((tmp_path / "a" / "v.json").read_text())["input"]["shape"] == [1, 64, 64, 3]
    with pytest.raises(ValueError, match="input_size must be a positive multiple of the model's stride 4, got 30"):
        export_tflite(model, tmp_path, name="v", input_size=30)
    with pytest.raises(ValueError, match=r"weights must be one of \[.float32., .float16., .int8.\], got .int4."):
        export_tflite(model, tmp_path, name="v", weights="int4")


def test_the_command_writes_the_flat_buffer_and_its_contract(tmp_path, model):
    source = tmp_path / "model.keras"
    model.save(source)
    result = CliRunner().invoke(cli, ["export", "--model", str(source), "--name", "vessel", "--version", "2",
                                      "--out", str(tmp_path / "out"), "--format", "tflite", "--weights", "float16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "vessel" / "2" / "vessel.tflite").is_file()
    assert json.loads((tmp_path / "out" / "vessel" / "2" / "vessel.json").read_text())["weights"] == "float16"


def test_a_blocked_wnet_converts_and_predicts_what_keras_predicts(tmp_path):
    """SpaceToDepth / DepthToSpace are LiteRT built-ins: the small network of issue 23 runs on devices."""
    import keras

    keras.utils.set_random_seed(0)
    network = build_model("wnet", base_filters=4, depth=1, block=2, heads=("pixel",))
    layer = network.get_layer("pixel_blocks")
    layer.set_weights([w * 20 for w in layer.get_weights()])
    path = export_tflite(network, tmp_path, name="wnet", weights="float32", threshold=0.5)
    image = np.random.default_rng(2).uniform(0, 255, (1, 32, 48, 3)).astype("float32")
    expected = build_inference_model(network)(image).numpy()[..., 0]
    got = run(path, image)
    assert got.shape == expected.shape == (1, 32, 48)
    assert np.abs(got - expected).max() <= 1e-5 and np.std(expected) > 2e-5


def test_adaptive_records_both_modes_for_the_app(tmp_path, model, monkeypatch):
    """scale="adaptive": NAME.json gives the fused diameters (as for "multi"), the training diameter below the
    bar, the bar as read when exporting, and a threshold per mode; no fov_diameter (an app reading only that one
    fails rather than running every photograph at one scale); a model recording no diameter is "auto"'s."""
    from keras_vessel.data import scaling

    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", 1234.0)
    export_tflite(model, tmp_path, name="v", scale="adaptive", threshold={"auto": 0.45, "multi": 0.55})
    contract = json.loads((tmp_path / "v.json").read_text())
    assert contract["fov_diameters"] == [m * 540.0 for m in scaling.FUSION_MULTIPLES]
    assert contract["multiples"] == list(scaling.FUSION_MULTIPLES) and contract["multi_from_fov"] == 1234.0
    assert contract["fov_diameter_auto"] == 540.0 and "fov_diameter" not in contract
    assert (contract["scale"], contract["threshold"], contract["threshold_multi"]) == ("adaptive", 0.45, 0.55)
    assert "multi_from_fov" in contract["resample"] and "threshold_multi" in contract["resample"]
    export_tflite(model, tmp_path, name="w", scale="adaptive", threshold=0.5)  # a number: both modes
    contract = json.loads((tmp_path / "w.json").read_text())
    assert (contract["threshold"], contract["threshold_multi"]) == (0.5, 0.5)
    plain = build_model("unet", base_filters=4, depth=2, normalisation="local")
    export_tflite(plain, tmp_path, name="x", scale="adaptive", threshold={"auto": 0.45, "multi": 0.55})
    contract = json.loads((tmp_path / "x.json").read_text())  # never fuses: the contract of "auto", nothing else
    assert contract["fov_diameter"] is None and "fov_diameters" not in contract and contract["scale"] == "auto"
    assert contract["threshold"] == 0.45 and not {"threshold_multi", "multi_from_fov", "multiples"} & set(contract)
    for name, threshold in (("y", {"auto": 0.45}), ("z", 1.0)):  # a number as the SavedModel's: in (0, 1)
        with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\) or one per mode"):
            export_tflite(model, tmp_path, name=name, scale="adaptive", threshold=threshold)
        assert not (tmp_path / f"{name}.json").exists()
