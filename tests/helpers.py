"""Round-trip assertions every custom Keras object in keras-vessel must pass.

Use them from any test (``tests/`` is on ``sys.path`` through conftest.py)::

    from helpers import assert_config_roundtrip, assert_layer_roundtrip, assert_loss_roundtrip
    from helpers import assert_model_saves_and_loads
    from helpers import run_cli, show_result

    def test_my_layer_roundtrip(tmp_path):
        assert_layer_roundtrip(MyLayer(k=3), np.ones((2, 16, 16, 3), "float32"), tmp_path)

    def test_my_loss_roundtrip():
        assert_loss_roundtrip(MyLoss(alpha=0.5), y_true, y_pred)

What each checks:

- `assert_config_roundtrip(obj)`: ``get_config`` is JSON-serialisable,
  ``from_config(get_config())`` gives an equal config, and the object goes
  through ``keras.saving.serialize_keras_object`` / ``deserialize_keras_object``
  by its registered name (so it must be registered with
  ``@keras.saving.register_keras_serializable(package="keras_vessel")``).
- `assert_layer_roundtrip(layer, inputs, tmp_path)`: the config round trip,
  a clone from config with copied weights giving the same outputs, and a
  functional model wrapping the layer passing `assert_model_saves_and_loads`.
- `assert_model_saves_and_loads(model, inputs, tmp_path)`: ``.keras``
  save, ``load_model(safe_mode=True)`` without ``custom_objects``, same class,
  same layer configs, same weights and same outputs.
- `assert_loss_roundtrip(loss, y_true, y_pred)`: the config round trip and the
  same loss value from the original, the ``from_config`` clone and the
  deserialised object.

``inputs`` may be one array or any nest (list/tuple/dict) of arrays, exactly
as the layer or model is called. Outputs are compared with ``atol`` (default
1e-6) after casting to float64. Each helper returns the rebuilt object so a
test can assert more on it.

For the command line: `run_cli(*args)` runs ``keras-vessel ARGS`` in a click
``CliRunner`` and `show_result(result)` is what an assertion on it prints
when it fails (exit status, both streams, the exception).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

__all__ = [
    "assert_config_roundtrip",
    "assert_layer_roundtrip",
    "assert_loss_roundtrip",
    "assert_model_saves_and_loads",
    "assert_outputs_close",
    "run_cli",
    "show_result",
]


def assert_outputs_close(actual: Any, expected: Any, *, atol: float = 1e-6, what: str = "outputs") -> None:
    """Same nest structure and values within ``atol`` (dict keys must match)."""
    keras.tree.assert_same_structure(actual, expected)
    for i, (a, e) in enumerate(zip(keras.tree.flatten(actual), keras.tree.flatten(expected))):
        a = np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float64)
        e = np.asarray(keras.ops.convert_to_numpy(e), dtype=np.float64)
        assert a.shape == e.shape, f"{what}[{i}]: shape {a.shape} != expected {e.shape}"
        np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=f"{what}[{i}] differ")


def assert_config_roundtrip(obj: Any) -> Any:
    """Round-trip ``obj`` through its config and Keras (de)serialisation; return the clone."""
    config = obj.get_config()
    json.dumps(config)  # a .keras file stores the config as JSON
    clone = type(obj).from_config(copy.deepcopy(config))
    assert type(clone) is type(obj)
    assert clone.get_config() == config, "from_config(get_config()) changed the config"

    registered = keras.saving.get_registered_name(type(obj))
    if type(obj).__module__.startswith("keras_vessel"):
        assert registered.startswith("keras_vessel>"), (
            f"{type(obj).__name__} is not registered with "
            f"keras.saving.register_keras_serializable(package='keras_vessel'); got {registered!r}"
        )
    serialized = keras.saving.serialize_keras_object(obj)
    json.dumps(serialized)
    restored = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
    assert type(restored) is type(obj)
    assert restored.get_config() == config, "deserialize(serialize(obj)) changed the config"
    return clone


def _as_json(config: Any) -> Any:
    return json.loads(json.dumps(config))


def _symbolic_like(inputs: Any) -> Any:
    def one(x: Any) -> keras.KerasTensor:
        x = np.asarray(x)
        return keras.Input(shape=x.shape[1:], batch_size=None, dtype=str(x.dtype))

    return keras.tree.map_structure(one, inputs)


def assert_model_saves_and_loads(
    model: keras.Model, inputs: Any, tmp_path: Path, *, atol: float = 1e-6
) -> keras.Model:
    """Save ``model`` as ``.keras`` under ``tmp_path``, reload safely, compare; return the reloaded model."""
    expected = model(inputs, training=False)
    path = Path(tmp_path) / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    # Compare as JSON, the form the .keras file stores (tuples come back as lists).
    assert _as_json([layer.get_config() for layer in loaded.layers]) == _as_json(
        [layer.get_config() for layer in model.layers]
    ), "layer configs changed through save/load"
    assert len(loaded.weights) == len(model.weights)
    for saved, original in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(original),
            err_msg=f"weight {original.path} changed through save/load",
        )
    assert_outputs_close(loaded(inputs, training=False), expected, atol=atol, what="reloaded model outputs")
    return loaded


def assert_layer_roundtrip(layer: keras.layers.Layer, inputs: Any, tmp_path: Path, *, atol: float = 1e-6) -> keras.layers.Layer:
    """Config round trip, same outputs from a clone, and `.keras` save/load of a model around it."""
    expected = layer(inputs)
    clone = assert_config_roundtrip(layer)
    clone(inputs)  # build, so the weights exist
    clone.set_weights(layer.get_weights())
    assert_outputs_close(clone(inputs), expected, atol=atol, what="from_config clone outputs")

    symbolic = _symbolic_like(inputs)
    model = keras.Model(symbolic, layer(symbolic), name=f"roundtrip_{layer.name}")
    assert_model_saves_and_loads(model, inputs, tmp_path, atol=atol)
    return clone


def assert_loss_roundtrip(loss: Any, y_true: Any, y_pred: Any, *, atol: float = 1e-6) -> Any:
    """Config round trip and the same loss value from the clone and the deserialised loss."""
    expected = loss(y_true, y_pred)
    clone = assert_config_roundtrip(loss)
    assert_outputs_close(clone(y_true, y_pred), expected, atol=atol, what="from_config clone loss")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert_outputs_close(restored(y_true, y_pred), expected, atol=atol, what="deserialised loss")
    return clone


def oracle_weights(prob, label, id_mask, valid, scale=None, *, threshold=0.5, ratio=0.8):
    """Segment weights by METHOD.md section 2 read literally: one image, plain loops over segments.

    ``scale`` (per pixel, optional) is the patch's resampling factor: each
    reference pixel then counts ``1 / scale`` towards the reference length
    (docs/METHOD_NOTES.md section 7); None counts every pixel once.
    """
    from skimage.morphology import thin

    binary = prob >= threshold
    skeleton = thin(binary)
    vessel = label > 0
    # float32 like the graph: at the found/missed boundary (pred_len == ratio * ref_len) rounding decides
    weight = np.ones(prob.shape, np.float64) if scale is None else 1.0 / np.asarray(scale, np.float32)
    sim = np.ones(prob.shape, np.float64)
    for i in np.unique(np.abs(id_mask)):
        if i == 0:
            continue
        region = np.abs(id_mask) == i
        ref_len = np.sum(weight[id_mask == -i])
        if ref_len == 0:
            continue  # reference skeleton outside the crop: skipped
        t_gt = np.sum(vessel & region) / ref_len
        pred_len = np.sum(skeleton & region)
        t_pred = np.sum(binary & region) / pred_len if pred_len > ratio * ref_len else 0.0
        sim[region] = 1.0 - abs(t_pred - t_gt) / t_gt
    sim[binary & (id_mask == 0) & ~vessel & (valid > 0)] = 0.0
    return 2.0 - sim


def run_config(run: Any, records: Path = Path("records"), out: Path = Path("runs")) -> Any:
    """The config `keras-vessel train` resolves from an experiment run's command (its --config files and
    --set values): for the protocol drivers' runs (`experiments.cross_dataset.Run`, ``...leave_one_camera_out.CameraRun``)."""
    from keras_vessel.config import load_config

    command = run.train_command("keras-vessel", records, out)
    configs = [command[i + 1] for i, part in enumerate(command) if part == "--config"]
    sets = [command[i + 1] for i, part in enumerate(command) if part == "--set"]
    return load_config(configs, sets)


def fundus_disc(seed: int, shape: tuple[int, int], *, radius: float | None = None) -> np.ndarray:
    """A tiny ``(H, W, 3)`` uint8 "fundus photograph": an orange disc centred at ``(H / 2, W / 2)`` (its pixels
    within ``radius``, by default 0.45 of the shorter side) with a little noise on a near-black surround.
    Seeded by ``seed`` alone: the same arguments give the same pixels on every call, in any test order."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    radius = min(shape) * 0.45 if radius is None else radius
    disc = np.hypot(rows - shape[0] / 2, cols - shape[1] / 2) <= radius
    image = rng.integers(0, 5, size=tuple(shape) + (3,)).astype(np.uint8)
    image[disc] = (np.array([190, 95, 45]) + rng.integers(0, 20, size=(disc.sum(), 3))).astype(np.uint8)
    return image


def folder_of_photographs(folder: Path, **synthetic: Any) -> Path:
    """`folder` holding ``images/NAME.png`` and ``labels/NAME.png`` of the synthetic generator's training samples
    (``synthetic``: `open_dataset`'s options, e.g. ``count=2, size=80, seed=4``): a ``--dataset folder`` layout
    without masks/, whose FOVs are derived from the photographs as CHASE_DB1's are."""
    from PIL import Image

    from keras_vessel.data.datasets import open_dataset

    for spec in open_dataset("synthetic", None, "training", **synthetic):
        sample = spec.load()
        for kind, pixels in (("images", sample.image), ("labels", sample.label.astype(np.uint8) * 255)):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / kind / f"{spec.name}.png")
    return folder


def run_cli(*args: Any) -> Any:
    """``keras-vessel ARGS`` in a click ``CliRunner`` (each argument as ``str``): its ``Result``, with
    ``exit_code``, ``stdout``, ``stderr`` and ``exception``."""
    from click.testing import CliRunner

    from keras_vessel_cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def show_result(result: Any) -> str:
    """A `run_cli` result's exit status, stdout, stderr and exception, for an assertion's message."""
    return f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"
