"""keras_vessel.serving.export: the SavedModel matches the Keras inference model, outside keras_vessel."""

import io
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vessel.serving.export import export_saved_model
from keras_vessel.models import build_inference_model, build_unet

STRIDE = 8
THRESHOLD = 0.5
# (batch, height, width): odd sizes, an exact multiple of the stride, and one smaller than the pad.
SIZES = [(2, 37, 51), (1, 8, 16), (1, 5, 3), (1, 64, 72)]


def _reference(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """NumPy padding (as keras_vessel.models.inference does it) + the Keras inference model + crop."""
    _, h, w, _ = images.shape
    pad_h, pad_w = (-h) % STRIDE, (-w) % STRIDE
    mode = "reflect" if pad_h < h and pad_w < w else "edge"
    padded = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return keras.ops.convert_to_numpy(model(padded))[:, :h, :w, 0]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_unet(base_filters=4, depth=3, batch_norm=True)
    root = tmp_path_factory.mktemp("export")
    path = export_saved_model(model, root / "models", name="vessel", version=1, threshold=THRESHOLD)
    return {"model": model, "inference": build_inference_model(model), "path": path, "root": root}


def test_layout_is_tf_serving(exported):
    path = exported["path"]
    assert path == exported["root"] / "models" / "vessel" / "1"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert sorted(p.name for p in path.parent.iterdir()) == ["1"]  # no staging leftovers


def test_the_version_folder_records_what_its_graph_fixes(exported):
    """A server's deployer could not tell at which threshold and scale an exported model masks: the graph alone
    held them. assets.extra (which TF Serving leaves alone) now records them."""
    import json

    from keras_vessel.provenance import own_version
    from keras_vessel.serving.export import EXPORT_RECORD, version_folder_state

    record = json.loads((exported["path"] / EXPORT_RECORD).read_text())
    assert record["modes"] == {"auto": {"threshold": THRESHOLD, "fov_diameters": None}}  # records no diameter
    assert (record["scale"], record["heads"], record["multi_from_fov"]) == ("auto", "mean", None)
    assert record["model"] == {"path": None, "sha256": None} and record["keras_vessel"] == own_version()
    assert record["signatures"] == ["serving_default", "predict_image"] and record["stride"] == 8
    assert version_folder_state(exported["path"]) == "complete"


def test_each_traced_function_is_saved_once(exported):
    """Both signatures call one traced per-image function; none of the graph is stored twice (concrete
    functions traced outside tf.saved_model.save's context were: 1.27 MB instead of 0.71 for the bundled model)."""
    import collections
    import re

    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((exported["path"] / "saved_model.pb").read_bytes())
    names = [function.signature.name for function in saved.meta_graphs[0].graph_def.library.function]
    traced = collections.Counter(re.sub(r"_\d+$", "", name) for name in names if name.startswith("__inference_"))
    assert {"__inference_serve", "__inference_predict_image", "__inference__one_image"} <= set(traced)
    assert [name for name, count in traced.items() if count > 1] == []


def test_version_folder_is_readable_by_a_server_user(exported):
    from keras_vessel.io import umask

    # tempfile.mkdtemp makes 0700 folders: TF Serving running as another user could not read them
    assert stat.S_IMODE(exported["path"].stat().st_mode) == 0o777 & ~umask()


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf

    saved, inputs, blobs_dir, out = sys.argv[1:5]
    loaded = tf.saved_model.load(saved)
    data = np.load(inputs)
    results = {"signatures": sorted(loaded.signatures)}
    arrays = {}
    for key in data.files:
        if key.startswith("images_"):
            arrays["probability_" + key] = loaded.signatures["serving_default"](
                images=tf.constant(data[key]))["probability"].numpy()
    for key in ("png", "jpeg"):
        blobs = [p.read_bytes() for p in sorted(Path(blobs_dir).glob("*." + key))]
        result = loaded.signatures["predict_image"](image_bytes=tf.constant(blobs))
        arrays["probability_" + key] = result["probability"].numpy()
        arrays["mask_" + key] = np.stack(
            [tf.io.decode_png(m).numpy() for m in result["mask_png_bytes"].numpy()])
    results["keras_vessel_imported"] = any(m.startswith("keras_vessel") for m in sys.modules)
    np.savez(out, **arrays)
    print(json.dumps(results))
    """
)


@pytest.mark.slow  # a fresh TF process / another export: ~20 s each on a shared CPU
def test_signatures_match_keras_in_a_fresh_process(exported, tmp_path):
    rng = np.random.default_rng(3)
    inputs = {f"images_{b}x{h}x{w}": rng.uniform(0, 255, (b, h, w, 3)).astype("float32") for b, h, w in SIZES}
    png_images = rng.integers(0, 256, (2, 37, 51, 3), dtype=np.uint8)
    jpeg_image = rng.integers(0, 256, (29, 41, 3), dtype=np.uint8)
    jpeg_bytes = _jpeg(jpeg_image)
    np.savez(tmp_path / "inputs.npz", **inputs)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for i, image in enumerate(png_images):
        (blobs / f"{i}.png").write_bytes(_png(image))
    (blobs / "0.jpeg").write_bytes(jpeg_bytes)
    script = tmp_path / "run_saved_model.py"
    script.write_text(_SUBPROCESS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(script), str(exported["path"]), str(tmp_path / "inputs.npz"), str(blobs),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"signatures": ["predict_image", "serving_default"], "keras_vessel_imported": False}
    out = np.load(tmp_path / "out.npz", allow_pickle=False)

    model = exported["inference"]
    for key, images in inputs.items():
        got = out["probability_" + key]
        assert got.shape == images.shape[:3] and got.dtype == np.float32
        assert np.abs(got - _reference(model, images)).max() <= 1e-5, key

    # PNG is lossless: the reference sees exactly the encoded pixels.
    expected_png = _reference(model, png_images.astype("float32"))
    assert np.abs(out["probability_png"] - expected_png).max() <= 1e-5
    # JPEG: decode with the same TF decoder, then the Keras model.
    decoded = tf.io.decode_jpeg(jpeg_bytes, channels=3).numpy()[None].astype("float32")
    expected_jpeg = _reference(model, decoded)
    assert np.abs(out["probability_jpeg"] - expected_jpeg).max() <= 1e-5

    for kind, expected in (("png", expected_png), ("jpeg", expected_jpeg)):
        mask = out["mask_" + kind][..., 0]
        assert mask.shape == expected.shape and set(np.unique(mask)) <= {0, 255}
        clear = np.abs(expected - THRESHOLD) > 1e-5  # ignore pixels within float noise of the threshold
        np.testing.assert_array_equal(mask[clear] == 255, expected[clear] >= THRESHOLD)
        assert 0 < (mask == 255).mean() < 1  # the test is not vacuous


@pytest.mark.slow  # a fresh TF process / another export: ~20 s each on a shared CPU
def test_saved_model_cli_lists_both_signatures(exported):
    cli = Path(sys.executable).parent / "saved_model_cli"
    proc = subprocess.run(
        [str(cli), "show", "--dir", str(exported["path"]), "--all"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for signature in ("serving_default", "predict_image"):
        assert f"signature_def['{signature}']" in text
    assert re.search(r"inputs\['images'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, -1, -1, 3\)", text)
    assert re.search(r"inputs\['image_bytes'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", text)
    assert re.search(r"outputs\['probability'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, -1, -1\)", text)
    assert re.search(r"outputs\['mask_png_bytes'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", text)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported["path"]))


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((0, 8, 8, 3), "float32"), r"non-empty \[batch, height, width, 3\] batch"),
        (np.zeros((1, 0, 8, 3), "float32"), r"non-empty \[batch, height, width, 3\] batch"),
        (np.full((1, 8, 8, 3), 300.0, "float32"), r"RGB on 0-255 \(found a value > 255\)"),
        (np.full((1, 8, 8, 3), -1.0, "float32"), r"RGB on 0-255 \(found a value < 0\)"),
        (np.full((1, 8, 8, 3), np.nan, "float32"), r"must not contain NaN or Inf"),
    ],
)
def test_serving_default_rejects_bad_images(loaded, images, match):
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        loaded.signatures["serving_default"](images=tf.constant(images))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((8, 8, 3), r"Shape of tensor images \[8,8,3\] is not compatible with expected shape \[\?,\?,\?,3\]"),
        ((1, 8, 8, 1), r"Shape of tensor images \[1,8,8,1\] is not compatible with expected shape"),
    ],
)
def test_serving_default_rejects_wrong_rank_and_channels(loaded, shape, match):
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        loaded.signatures["serving_default"](images=tf.zeros(shape))


def test_serving_default_rejects_wrong_dtype(loaded):
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match=r"(?i)float32|dtype|int32"):
        loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 3), tf.int32))


def test_predict_image_rejects_bad_bytes(loaded):
    predict = loaded.signatures["predict_image"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must hold encoded PNG or JPEG images"):
        predict(image_bytes=tf.constant([b"not an image"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Shape of tensor image_bytes \[\] is not compatible"):
        predict(image_bytes=tf.constant(_png(np.zeros((8, 8, 3), np.uint8))))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must hold at least one image"):
        predict(image_bytes=tf.constant([], dtype=tf.string))
    small, large = (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must have the same height and width"):
        predict(image_bytes=tf.constant([_png(small), _png(large)]))
    truncated = _png(np.full((32, 32, 3), 7, np.uint8))[:40]
    with pytest.raises(tf.errors.InvalidArgumentError):
        predict(image_bytes=tf.constant([truncated]))


def test_refuses_to_overwrite_an_existing_version(exported):
    path = exported["path"]
    with pytest.raises(FileExistsError, match=re.escape(repr(str(path))) + r".*pass overwrite=True"):
        export_saved_model(exported["model"], path.parent.parent, name="vessel", version=1)
    assert (path / "saved_model.pb").is_file()


@pytest.mark.parametrize("kind", ["savedmodel", "tflite"])
def test_the_library_exports_take_the_folder_lock(tmp_path, kind):
    """`export_saved_model` (OUT/NAME) and `export_tflite` (its folder) called from Python, not through the
    CLI, while another writer's lock is on the folder (here one from another host, which cannot be checked
    and so is never taken over): refused with the holder named, nothing written."""
    from keras_vessel.locks import LOCK_FILENAME, FolderLockedError
    from keras_vessel.serving.tflite import export_tflite

    folder = tmp_path / "vessel" if kind == "savedmodel" else tmp_path / "vessel" / "1"
    folder.mkdir(parents=True)
    (folder / LOCK_FILENAME).write_text(json.dumps({"pid": 4242, "host": "node-17", "command": "keras-vessel export",
                                                    "started": "then"}))
    model = build_unet(base_filters=2, depth=1, heads=("pixel",))
    what = "the model folder" if kind == "savedmodel" else "the TFLite output folder"
    held = f"{what} {re.escape(str(folder))} was locked by PID 4242 on host node-17"
    with pytest.raises(FolderLockedError, match=held):
        if kind == "savedmodel":
            export_saved_model(model, tmp_path, name="vessel", version=1)
        else:
            export_tflite(model, folder, name="vessel")
    assert [path.name for path in folder.iterdir()] == [LOCK_FILENAME]


@pytest.mark.slow  # two exports
def test_overwrite_replaces_the_version(tmp_path):
    model = build_unet(base_filters=2, depth=1, heads=("pixel",))
    first = export_saved_model(model, tmp_path, name="vessel", version=3)
    marker = first / "variables" / "stale"
    marker.write_text("old")
    again = export_saved_model(model, tmp_path, name="vessel", version=3, overwrite=True)
    assert again == first and not marker.exists() and (first / "saved_model.pb").is_file()
    assert sorted(p.name for p in (tmp_path / "vessel").iterdir()) == ["3"]


@pytest.mark.slow  # a fresh TF process / another export: ~20 s each on a shared CPU
def test_exports_a_keras_file_with_a_chosen_head(exported, tmp_path):
    model = exported["model"]
    keras_file = tmp_path / "model.keras"
    model.save(keras_file)
    path = export_saved_model(keras_file, tmp_path / "out", name="vessel", version=2, heads="segment")
    images = np.random.default_rng(5).uniform(0, 255, (1, 16, 24, 3)).astype("float32")
    got = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))
    expected = _reference(build_inference_model(model, heads="segment"), images)
    assert np.abs(got["probability"].numpy() - expected).max() <= 1e-5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": ""}, ValueError, r"name must be a non-empty model name .* got ''"),
        ({"name": "a/b"}, ValueError, r"name must be .* got 'a/b'"),
        ({"version": 0}, ValueError, r"version must be an int >= 1 .* got 0"),
        ({"version": "1"}, ValueError, r"version must be an int >= 1 .* got '1'"),
        ({"threshold": 1.5}, ValueError, r"threshold must be a number in \(0, 1\) or one per mode, .* got 1.5"),
        ({"heads": "both"}, ValueError, r"heads must be one of \['mean', 'segment', 'pixel'\], got 'both'"),
        ({"overwrite": "yes"}, TypeError, r"overwrite must be a bool, got 'yes'"),
    ],
)
def test_rejects_bad_arguments(tmp_path, kwargs, error, match):
    options = {"name": "vessel", "version": 1, **kwargs}
    model = build_unet(base_filters=2, depth=1, heads=("pixel",))
    with pytest.raises(error, match=match):
        export_saved_model(model, tmp_path, **options)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5, 1e-9, -0.1, float("nan"), True, 0.999])
def test_an_exports_threshold_follows_predicts_rule(value):
    """The range of a threshold is one rule: export took 0 and 1 (a mask of everything, of nothing) that predict
    refuses."""
    from keras_vessel.evaluation import parse_threshold
    from keras_vessel.serving.export import mask_thresholds

    try:
        expected = parse_threshold(value)
    except ValueError:
        for given in (value, {"auto": 0.5, "multi": value}):
            with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\) or one per mode"):
                mask_thresholds(given)
    else:
        assert mask_thresholds(value) == {"auto": expected, "multi": expected}
        assert mask_thresholds({"multi": value, "auto": 0.5}) == {"auto": 0.5, "multi": expected}
    for text in ("0.5", "otsu", {"auto": "otsu", "multi": 0.5}, {"auto": 0.5}):  # what only the command line reads
        with pytest.raises(ValueError, match="or one per mode"):
            mask_thresholds(text)


def test_rejects_missing_files_and_missing_heads(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model file .*missing.keras does not exist"):
        export_saved_model(tmp_path / "missing.keras", tmp_path, name="v", version=1)
    with pytest.raises(ValueError, match=r"model file .*model.h5 must be a Keras 3 '.keras' file"):
        export_saved_model(tmp_path / "model.h5", tmp_path, name="v", version=1)
    pixel_only = build_unet(base_filters=2, depth=1, heads=("pixel",))
    with pytest.raises(ValueError, match=r"has \['pixel'\], got 'segment'"):
        export_saved_model(pixel_only, tmp_path, name="v", version=1, heads="segment")
    assert not (tmp_path / "v").exists()


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory) -> Path:
    """A compiled joint model whose Adam moments exist, saved as a run would save it."""
    from keras_vessel.evaluation import save_threshold
    from keras_vessel.losses import build_losses

    keras.utils.set_random_seed(1)
    model = build_unet(base_filters=8, depth=2)
    optimizer = keras.optimizers.Adam(learning_rate=3e-4)
    model.compile(optimizer=optimizer, loss=build_losses("joint"))
    optimizer.build(model.trainable_variables)
    path = tmp_path_factory.mktemp("run") / "model.keras"
    model.save(path)
    save_threshold(path, 0.61, heads="mean")
    save_threshold(path, 0.58, heads="mean", tta="d4")
    return path


def test_export_keras_model_drops_optimizer_state_only(trained_file, tmp_path):
    from keras_vessel.serving.export import export_keras_model

    out = export_keras_model(trained_file, tmp_path / "ship" / "model.keras")
    assert out == tmp_path / "ship" / "model.keras"
    # Adam's two moments doubled the weights; without them the file is well under half.
    assert out.stat().st_size < 0.5 * trained_file.stat().st_size
    for name in ("threshold.json", "threshold_tta_d4.json"):
        assert json.loads((tmp_path / "ship" / name).read_text()) == json.loads(
            trained_file.with_name(name).read_text())
    # no leftovers
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.keras", "threshold.json", "threshold_tta_d4.json"]
    original, shipped = keras.saving.load_model(trained_file), keras.saving.load_model(out, safe_mode=True)
    images = np.random.default_rng(2).uniform(0, 255, (1, 16, 20, 3)).astype("float32")
    for head, value in original(images).items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(shipped(images)[head]), value)
    assert {k: type(v).__name__ for k, v in shipped.loss.items()} == {
        k: type(v).__name__ for k, v in original.loss.items()}
    assert shipped.optimizer.get_config()["learning_rate"] == pytest.approx(3e-4)
    # its members deflated: the same bytes as Keras' own (uncompressed) save of the same model
    import zipfile

    plain = tmp_path / "plain.keras"
    shipped.save(plain)
    with zipfile.ZipFile(out) as deflated, zipfile.ZipFile(plain) as stored:
        assert {m.compress_type for m in deflated.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {m.compress_type for m in stored.infolist()} == {zipfile.ZIP_STORED}
        assert deflated.namelist() == stored.namelist()
        assert deflated.read("config.json") == stored.read("config.json")
    assert out.stat().st_size < plain.stat().st_size


def test_export_keras_model_rejects_what_it_cannot_ship(tmp_path):
    from keras_vessel.serving.export import export_keras_model

    uncompiled = tmp_path / "uncompiled.keras"
    build_unet(base_filters=2, depth=1).save(uncompiled)
    with pytest.raises(ValueError, match=r"uncompiled.keras' is not a compiled training model"):
        export_keras_model(uncompiled, tmp_path / "out.keras")
    with pytest.raises(ValueError, match=r"destination ending in .keras"):
        export_keras_model(uncompiled, tmp_path / "out.h5")
    with pytest.raises(FileNotFoundError, match=r"missing.keras"):
        export_keras_model(tmp_path / "missing.keras", tmp_path / "out.keras")
    assert not (tmp_path / "out.keras").exists()
