"""Prediction at the model's training scale: predict_probability, inference_scale, predict_files, the SavedModel.

The model is a tiny untrained U-Net whose head kernels are enlarged (x40) so that its probability
follows the image (a spread of about 0.06 inside the FOV instead of 0.004), which lets a wrong
scale show.
"""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from keras_vessel.serving.export import export_saved_model
from keras_vessel.models.inference import inference_scale, predict_probability
from keras_vessel.models import build_inference_model, build_model, model_fov_diameter, record_fov_diameter
from keras_vessel.serving.prediction import predict_files
from keras_vessel.data.preprocessing import derive_fov
from keras_vessel.data.scaling import FOV_DILATION, image_fov, resize_to

MODEL_DIAMETER = 126.0
STRIDE = 4  # depth 2


def fundus(height: int, width: int, radius: float, *, line_sigma: float = 2.5) -> np.ndarray:
    """(H, W, 3) uint8: a bright orange disc of `radius` (anti-aliased rim) on black, three dark lines.

    Lengths scale with `radius` (a radius-42 disc is the unit), so two calls with different radii
    draw the same fundus at two scales.
    """
    unit = radius / 42.0
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    distance = np.hypot(yy - cy, xx - cx)
    coverage = np.clip(radius - distance + 0.5, 0.0, 1.0)
    image = np.stack([200 - 0.3 * distance / unit, 110 - 0.4 * distance / unit, np.full_like(distance, 50)], -1)
    for angle, offset in [(0.3, 5), (1.4, -12), (2.5, 20)]:
        across = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle) - offset * unit)
        line = np.exp(-0.5 * (across / (line_sigma * unit)) ** 2)
        image = image * (1 - 0.5 * line[..., None] * np.array([0.3, 1.0, 0.6]))  # darkest in green
    return np.round(image * coverage[..., None]).astype(np.uint8)


def distance_from_centre(height, width):
    yy, xx = np.mgrid[:height, :width]
    return np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(training model, inference model, .keras path): a tiny U-Net trained 'at' a 126 px FOV."""
    keras.utils.set_random_seed(0)
    training = build_model("unet", base_filters=4, depth=2, fov_diameter=MODEL_DIAMETER)
    for head in ("pixel", "segment"):
        kernel = training.get_layer(head).kernel
        kernel.assign(kernel * 40.0)
    path = tmp_path_factory.mktemp("model") / "scaled.keras"
    training.save(path)
    return training, build_inference_model(training), path


def old_behaviour(inference, image):
    """Before scaling: reflect-pad to the stride, run the network, crop back."""
    h, w = image.shape[:2]
    padded = np.pad(image.astype(np.float32), ((0, (-h) % STRIDE), (0, (-w) % STRIDE), (0, 0)), mode="reflect")
    return keras.ops.convert_to_numpy(inference(padded[None]))[0, :h, :w, 0]


def test_scale_none_is_the_old_behaviour(model):
    _, inference, _ = model
    image = fundus(97, 103, 42.0)  # FOV 84 px: auto would resample it 1.5x
    np.testing.assert_allclose(predict_probability(inference, image, scale="none"), old_behaviour(inference, image),
                               atol=1e-6)
    assert inference_scale(inference, image).factor == pytest.approx(1.5, rel=1e-3)


def test_auto_runs_at_the_images_grid_when_its_fov_has_the_models_diameter(model):
    _, inference, _ = model
    image = fundus(136, 136, 63.0)
    assert image_fov(image).diameter == pytest.approx(MODEL_DIAMETER, abs=1.0)
    choice = inference_scale(inference, image)
    assert choice.factor == 1.0 and choice.model_diameter == MODEL_DIAMETER and choice.fov.found
    np.testing.assert_array_equal(predict_probability(inference, image),
                                  predict_probability(inference, image, scale="none"))


def test_auto_on_an_image_upscaled_3x_gives_the_originals_probability(model):
    """The 3x image is run at the model's scale, so back on the original grid it matches the original.

    Left at its own grid (scale="none") the network sees vessels 3x wider, and the result differs 2-3x as much.
    """
    training = build_model("unet", base_filters=4, depth=2)  # a copy that records no diameter ...
    training.set_weights(model[0].get_weights())
    image = fundus(96, 96, 42.0)
    diameter = image_fov(image).diameter
    inference = build_inference_model(record_fov_diameter(training, diameter))  # ... trained at this image's scale
    large = ndimage.zoom(image.astype(np.float32), (3, 3, 1), order=1, grid_mode=True, mode="grid-constant")
    assert image_fov(large).diameter / diameter == pytest.approx(3.0, rel=0.02)
    original = predict_probability(inference, image)
    inner = ndimage.binary_erosion(image_fov(image).mask, iterations=5)  # the rim is drawn differently at 3x

    def back_on_the_original_grid(scale):
        probability = predict_probability(inference, large, scale=scale)
        assert probability.shape == large.shape[:2]
        return resize_to(probability[..., None], [96, 96]).numpy()[..., 0]

    auto, none = back_on_the_original_grid("auto"), back_on_the_original_grid("none")
    spread = original[inner].std()
    assert spread > 0.03
    auto_error, none_error = np.abs(auto - original)[inner].mean(), np.abs(none - original)[inner].mean()
    assert auto_error < 0.2 * spread
    assert np.corrcoef(auto[inner], original[inner])[0, 1] > 0.95
    assert none_error > 2 * auto_error


def test_no_fov_means_factor_one_and_a_warning_naming_the_image(model, caplog):
    _, inference, _ = model
    black = np.zeros((40, 44, 3), np.uint8)
    choice = inference_scale(inference, black)
    assert choice.factor == 1.0 and choice.fov is not None and not choice.fov.found
    with caplog.at_level(logging.WARNING, logger="keras_vessel.models.inference"):
        probability = predict_probability(inference, black, name="dark_frame.png")
    assert probability.shape == (40, 44)
    messages = [r.getMessage() for r in caplog.records if r.name == "keras_vessel.models.inference"]
    assert any(m.startswith("dark_frame.png: no field of view found") for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_vessel.models.inference"):
        predict_probability(inference, fundus(136, 136, 63.0), name="fundus.png")
    assert not [r for r in caplog.records if r.name == "keras_vessel.models.inference"]


# ----------------------------------------------------------------- SavedModel against predict_files

IMAGES = {
    "smaller": (96, 96, 42.0),  # FOV 84 px: 1.5x below the model's 126
    "same": (136, 136, 63.0),  # FOV 126 px
    "larger": (200, 190, 94.5),  # FOV 189 px: 1.5x above, a frame that is not a multiple of the stride
}


@pytest.fixture(scope="module")
def predicted(model, tmp_path_factory):
    """The images as PNG files, predict_files' outputs (defaults: fov and scale auto), the exported model."""
    training, _, path = model
    root = tmp_path_factory.mktemp("scaled-predict")
    files = []
    for name, (height, width, radius) in IMAGES.items():
        Image.fromarray(fundus(height, width, radius)).save(root / f"{name}.png")
        files.append(root / f"{name}.png")
    report = predict_files(path, files, root / "out", progress=False)
    assert not report.failures
    exported = export_saved_model(training, root / "serving", name="vessel", version=1)
    return root, tf.saved_model.load(str(exported))


@pytest.mark.parametrize("name", list(IMAGES))
def test_saved_model_gives_predict_files_probabilities(predicted, model, name):
    root, loaded = predicted
    image = np.asarray(Image.open(root / f"{name}.png"))
    served = loaded.signatures["serving_default"](images=tf.constant(image[None], tf.float32))["probability"]
    served = served.numpy()[0]
    local = np.asarray(Image.open(root / "out" / f"{name}_prob.png")).astype(np.float64) / 65535
    assert served.shape == local.shape == image.shape[:2]
    np.testing.assert_allclose(served, local, rtol=0, atol=2e-3)
    # the three images really run at three different factors (1.5, 1, 2/3)
    expected = 1.0 if name == "same" else MODEL_DIAMETER / (2 * IMAGES[name][2])
    assert inference_scale(model[1], image).factor == pytest.approx(expected, rel=0.02)
    assert model_fov_diameter(model[1]) == MODEL_DIAMETER


@pytest.mark.parametrize("name", list(IMAGES))
def test_predict_files_keeps_the_discs_rim(predicted, name):
    """fov="auto" keeps every pixel the disc touches (its threshold mask grown by FOV_DILATION px)."""
    root, _ = predicted
    height, width, radius = IMAGES[name]
    image = np.asarray(Image.open(root / f"{name}.png"))
    probability = np.asarray(Image.open(root / "out" / f"{name}_prob.png"))
    distance = distance_from_centre(height, width)
    disc = distance <= radius + 0.5  # every pixel with some coverage
    assert (probability[disc] > 0).all()
    assert (probability[distance > radius + FOV_DILATION + 2] == 0).all()
    # an eroded mask (the dataset rule for training and metrics) would have cut the rim away
    assert (disc & ~derive_fov(image)).sum() > 2 * np.pi * radius


# ----------------------------------------------------------------- a working FOV diameter (scale="Npx")


def numpy_factor(target: float, image: np.ndarray) -> float:
    """The oracle: ``target / the diameter image_fov finds``; 1 within SCALE_TOLERANCE (2%) of 1, and 1 outside
    [0.05, 8] (an estimate gone wrong, as for auto: 1080 px on the 84 and 126 px FOVs)."""
    factor = target / image_fov(image).diameter
    return 1.0 if abs(factor - 1.0) <= 0.02 or not 0.05 <= factor <= 8.0 else factor


@pytest.fixture(scope="module")
def unrecorded(model):
    """The same network as `model`'s, saved without a training diameter."""
    training = build_model("unet", base_filters=4, depth=2)
    training.set_weights(model[0].get_weights())
    assert model_fov_diameter(training) is None
    return build_inference_model(training)


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize("target", [64.0, 85.0, 200.0, 1080.0])
def test_npx_factor_is_the_target_over_the_fov_image_fov_finds(model, unrecorded, name, target):
    image = fundus(*IMAGES[name])
    expected = numpy_factor(target, image)
    for inference in (model[1], unrecorded):  # the model's own diameter plays no part
        choice = inference_scale(inference, image, f"{target:g}px")
        assert choice.factor == pytest.approx(expected, rel=1e-5)
        assert choice.fov is not None and choice.fov.found
    assert inference_scale(unrecorded, image, "auto").factor == 1.0  # auto needs a recorded diameter


@pytest.mark.parametrize("name", list(IMAGES))
def test_npx_predicts_what_the_equivalent_factor_predicts(model, name):
    _, inference, _ = model
    image = fundus(*IMAGES[name])
    factor = numpy_factor(200.0, image)
    assert factor > 1.05  # resampled for all three images
    np.testing.assert_allclose(predict_probability(inference, image, scale="200px"),
                               predict_probability(inference, image, scale=factor), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(IMAGES))
def test_auto_is_npx_at_the_models_diameter(model, name):
    _, inference, _ = model
    image = fundus(*IMAGES[name])
    scale = f"{MODEL_DIAMETER:g}px"
    assert inference_scale(inference, image, scale).factor == inference_scale(inference, image).factor
    np.testing.assert_array_equal(predict_probability(inference, image, scale=scale),
                                  predict_probability(inference, image))


def test_npx_without_a_fov_runs_at_the_images_own_size_with_autos_warning(unrecorded, caplog):
    black = np.zeros((40, 44, 3), np.uint8)
    choice = inference_scale(unrecorded, black, "200px")
    assert choice.factor == 1.0 and choice.fov is not None and not choice.fov.found
    with caplog.at_level(logging.WARNING, logger="keras_vessel.models.inference"):
        probability = predict_probability(unrecorded, black, scale="200px", name="dark_frame.png")
    assert probability.shape == (40, 44)
    messages = [r.getMessage() for r in caplog.records if r.name == "keras_vessel.models.inference"]
    assert any(m.startswith("dark_frame.png: no field of view found") for m in messages), messages


@pytest.fixture(scope="module", params=["64px", "200px"])
def predicted_at(request, model, predicted, tmp_path_factory):
    """predict_files and an export at a working diameter: 64 px shrinks all three images (the 189 px one by
    block means), 200 px enlarges them; the FOV and the shrinking run in strips of 1500 pixels (7-15 rows)."""
    from keras_vessel.data import scaling

    training, _, path = model
    root, _ = predicted
    out = tmp_path_factory.mktemp(f"predict-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scaling, "STRIP_PIXELS", 1500)
        report = predict_files(path, [root / f"{name}.png" for name in IMAGES], out, scale=request.param,
                               progress=False)
    assert not report.failures
    exported = export_saved_model(training, out / "serving", name="vessel", version=1, scale=request.param)
    return request.param, out, tf.saved_model.load(str(exported))


def written_probability(path) -> np.ndarray:
    """A ``NAME_prob.png`` predict_files wrote, as float64 in [0, 1]."""
    return np.asarray(Image.open(path)).astype(np.float64) / 65535


def assert_served_as_written(loaded, image_path, written_path) -> np.ndarray:
    """The exported graph's probability of the photograph is within 2e-3 of what predict_files wrote for it,
    which is returned."""
    image = np.asarray(Image.open(image_path))
    served = loaded.signatures["serving_default"](images=tf.constant(image[None], tf.float32))["probability"]
    served = served.numpy()[0]
    local = written_probability(written_path)
    assert served.shape == local.shape == image.shape[:2]
    np.testing.assert_allclose(served, local, rtol=0, atol=2e-3)
    return local


@pytest.mark.parametrize("name", list(IMAGES))
def test_saved_model_at_a_working_diameter_gives_predict_files_probabilities(predicted, predicted_at, name):
    root, _ = predicted
    scale, out, loaded = predicted_at
    local = assert_served_as_written(loaded, root / f"{name}.png", out / f"{name}_prob.png")
    at_auto = written_probability(root / "out" / f"{name}_prob.png")
    assert np.abs(local - at_auto).max() > 0.02  # really another working resolution than auto's 126 px


def test_export_refuses_a_factor(model, tmp_path):
    with pytest.raises(ValueError, match=r"`scale` must be 'auto', 'multi', 'adaptive', 'none' or a field-of-view "
                                         r"diameter such as '1080px' \(not a factor\); got 0\.5\."):
        export_saved_model(model[0], tmp_path, name="vessel", version=1, scale=0.5)
    assert not (tmp_path / "vessel").exists()


# ----------------------------------------------------------------- several working diameters (scale="multi")


def mean_of_single_scales(inference, image, multiples, **options):
    """The oracle: the NumPy mean of one single-scale prediction per multiple, at ``m x MODEL_DIAMETER`` px each."""
    maps = [predict_probability(inference, image, scale=f"{m * MODEL_DIAMETER:g}px", **options) for m in multiples]
    return np.mean(np.stack(maps), axis=0)


@pytest.mark.parametrize("name, multiples, options", [
    ("smaller", None, {}),  # FUSION_MULTIPLES as defined (1, 1.5, 2: the 84 px FOV runs at 126, 189, 252 px)
    ("larger", (1.0, 1.5), {"tile_size": 64, "overlap": 16, "tta": "flip"}),  # another constant; tiled, flipped
])
def test_multi_is_the_mean_of_single_scale_predictions_at_the_multiples(model, monkeypatch, name, multiples,
                                                                         options):
    from keras_vessel.data import scaling

    if multiples is not None:  # nothing else holds the multiples or their count
        monkeypatch.setattr(scaling, "FUSION_MULTIPLES", multiples)
    multiples = scaling.FUSION_MULTIPLES
    _, inference, _ = model
    image = fundus(*IMAGES[name])
    choice = inference_scale(inference, image, "multi")
    assert len(choice.factors) == len(set(choice.factors)) == len(multiples)
    multi = predict_probability(inference, image, scale="multi", **options)
    assert multi.dtype == np.float32 and multi.shape == image.shape[:2]
    np.testing.assert_allclose(multi, mean_of_single_scales(inference, image, multiples, **options), rtol=0, atol=1e-5)
    assert np.abs(multi - predict_probability(inference, image, **options)).max() > 0.01  # not auto's map


def test_multi_measures_the_fov_once(model, predicted, monkeypatch, tmp_path):
    from keras_vessel.data import scaling
    from keras_vessel.models import inference as inference_module

    measure, calls = scaling.image_fov, []

    def counted(image):
        calls.append(image.shape)
        return measure(image)

    monkeypatch.setattr(scaling, "image_fov", counted)
    monkeypatch.setattr(inference_module, "image_fov", counted)
    training, inference, path = model
    predict_probability(inference, fundus(*IMAGES["larger"]), scale="multi")
    assert len(calls) == 1
    calls.clear()
    root, _ = predicted  # predict_files: `locate` measures it, the three scales reuse it
    report = predict_files(path, [root / "larger.png"], tmp_path / "out", scale="multi", progress=False)
    assert not report.failures and len(calls) == 1


def test_multi_without_a_fov_runs_once_at_the_images_own_grid_with_autos_warning(model, caplog):
    _, inference, _ = model
    black = np.zeros((40, 44, 3), np.uint8)
    choice = inference_scale(inference, black, "multi")
    assert choice.factors == (1.0,) and choice.fov is not None and not choice.fov.found
    with caplog.at_level(logging.WARNING, logger="keras_vessel.models.inference"):
        probability = predict_probability(inference, black, scale="multi", name="dark_frame.png")
    np.testing.assert_array_equal(probability, predict_probability(inference, black, scale="none"))
    messages = [r.getMessage() for r in caplog.records if r.name == "keras_vessel.models.inference"]
    assert len(messages) == 1 and messages[0].startswith("dark_frame.png: no field of view found"), messages


def test_multi_refuses_a_model_without_a_training_diameter_in_one_sentence(unrecorded, predicted, tiny_model_file,
                                                                          tmp_path):
    sentence = (r"records no training field-of-view diameter, so `scale='multi'` has no multiples of it to run at; "
                r"pass a working diameter such as '1080px' instead, or 'auto' \(which runs such a model at each "
                r"photograph's own grid\)$")
    with pytest.raises(ValueError, match=rf"^model {unrecorded.name} " + sentence):
        predict_probability(unrecorded, fundus(*IMAGES["same"]), scale="multi")
    path = tiny_model_file()  # records no diameter: refused, naming the file, before any output
    root, _ = predicted
    with pytest.raises(ValueError, match=rf"^model {path} " + sentence):
        predict_files(path, [root / "same.png"], tmp_path / "out", scale="multi", progress=False)
    with pytest.raises(ValueError, match=rf"^model {path} " + sentence):
        export_saved_model(path, tmp_path, name="vessel", version=1, scale="multi")
    assert not (tmp_path / "out").exists() and not (tmp_path / "vessel").exists()


def test_evaluate_records_multi_its_multiples_and_each_images_factors(model, tmp_path):
    import json

    from keras_vessel.data.datasets import Sample
    from keras_vessel.data.scaling import FUSION_MULTIPLES
    from keras_vessel.evaluation import evaluate

    _, inference, _ = model
    image = fundus(*IMAGES["smaller"])
    fov = image_fov(image).mask
    sample = Sample(name="eye", image=image, label=ndimage.binary_erosion(fov, iterations=30), fov=fov)
    report = evaluate(inference, [sample], output_dir=tmp_path, progress=False, overlays=False,
                      predict_options={"scale": "multi"})
    assert report["protocol"]["scale"] == "multi" and report["protocol"]["multiples"] == list(FUSION_MULTIPLES)
    factors = inference_scale(inference, image, "multi").factors
    assert report["per_image"][0]["scale"] == pytest.approx(list(factors))
    assert json.loads((tmp_path / "metrics.json").read_text())["protocol"]["multiples"] == list(FUSION_MULTIPLES)
    assert (tmp_path / "per_image.csv").read_text().splitlines()[1].split(",")[2] == " ".join(
        f"{f:.6g}" for f in factors)
    widths = ", ".join(f"{m:g}x" for m in FUSION_MULTIPLES)
    assert f"Scale: each image run at fields of view {widths} as wide" in (tmp_path / "metrics.md").read_text()
    probability = predict_probability(inference, image, fov=fov, scale="multi")
    assert report["per_image"][0]["AUC"] == pytest.approx(evaluation_auc(probability, sample), abs=1e-5)  # binned


def evaluation_auc(probability, sample):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(sample.label[sample.fov], probability[sample.fov])


@pytest.fixture(scope="module")
def predicted_multi(model, predicted, tmp_path_factory):
    """predict_files and an export at scale="multi", on the three photographs and a black frame (no FOV)."""
    training, _, path = model
    root, _ = predicted
    Image.fromarray(np.zeros((40, 44, 3), np.uint8)).save(root / "black.png")
    out = tmp_path_factory.mktemp("predict-multi")
    report = predict_files(path, [root / f"{name}.png" for name in [*IMAGES, "black"]], out, scale="multi",
                           progress=False)
    assert not report.failures
    exported = export_saved_model(training, out / "serving", name="vessel", version=1, scale="multi")
    return out, tf.saved_model.load(str(exported))


@pytest.mark.parametrize("name", [*IMAGES, "black"])
def test_saved_model_at_multi_gives_predict_files_probabilities(predicted, predicted_multi, name):
    root, _ = predicted
    out, loaded = predicted_multi
    local = assert_served_as_written(loaded, root / f"{name}.png", out / f"{name}_prob.png")
    if name != "black":
        at_auto = written_probability(root / "out" / f"{name}_prob.png")
        assert np.abs(local - at_auto).max() > 0.01  # really the mean over other working resolutions too


# ----------------------------------------------------------------- per photograph (scale="adaptive")


@pytest.mark.parametrize("name", ["smaller", "larger"])
def test_adaptive_is_multi_from_the_bar_on_and_auto_below_it(model, monkeypatch, name):
    from keras_vessel.data import scaling

    _, inference, _ = model
    image = fundus(*IMAGES[name])
    diameter = image_fov(image).diameter
    for bar, expected in ((diameter, "multi"), (diameter + 0.5, "auto")):  # the bar itself fuses
        monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", bar)
        choice = inference_scale(inference, image, "adaptive")
        assert choice.mode == expected and choice.factors == inference_scale(inference, image, expected).factors
        np.testing.assert_array_equal(predict_probability(inference, image, scale="adaptive"),
                                      predict_probability(inference, image, scale=expected))
    assert inference_scale(inference, image, "multi").mode == "multi"
    assert {inference_scale(inference, image, scale).mode for scale in ("auto", "none", "200px", 0.5)} == {"auto"}


def test_adaptive_without_a_fov_or_a_training_diameter_is_auto(model, unrecorded, monkeypatch, caplog):
    from keras_vessel.data import scaling

    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", 1.0)  # every photograph whose FOV is found would fuse
    _, inference, _ = model
    black = np.zeros((40, 44, 3), np.uint8)
    choice = inference_scale(inference, black, "adaptive")
    assert choice.mode == "auto" and choice.factors == (1.0,) and not choice.fov.found
    with caplog.at_level(logging.WARNING, logger="keras_vessel.models.inference"):
        probability = predict_probability(inference, black, scale="adaptive", name="dark_frame.png")
    np.testing.assert_array_equal(probability, predict_probability(inference, black, scale="none"))
    assert [r.getMessage() for r in caplog.records][0].startswith("dark_frame.png: no field of view found")
    image = fundus(*IMAGES["larger"])  # a model recording no diameter: auto, at the photograph's own grid
    assert inference_scale(unrecorded, image, "adaptive") == inference_scale(unrecorded, image, "auto")
    np.testing.assert_array_equal(predict_probability(unrecorded, image, scale="adaptive"),
                                  predict_probability(unrecorded, image, scale="none"))


# A bar between the "same" (126 px) and "larger" (189 px) FOVs: "larger" fuses, "smaller", "same" and the black
# frame (no FOV found) run at "auto".
ADAPTIVE_BAR = 150.0
# Each mode's mask threshold: both inside the probabilities' range (about 0.49-0.94), each marking another part.
ADAPTIVE_THRESHOLDS = {"auto": 0.51, "multi": 0.6}


@pytest.fixture(scope="module")
def predicted_adaptive(model, predicted, tmp_path_factory):
    """predict_files and an export at scale="adaptive" with `ADAPTIVE_BAR` as `MULTI_SCALE_FROM_FOV` (set back to
    its value afterwards: the export keeps the one it read), on the three photographs and a black frame."""
    from keras_vessel.data import scaling

    training, _, path = model
    root, _ = predicted
    Image.fromarray(np.zeros((40, 44, 3), np.uint8)).save(root / "black.png")
    out = tmp_path_factory.mktemp("predict-adaptive")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scaling, "MULTI_SCALE_FROM_FOV", ADAPTIVE_BAR)
        report = predict_files(path, [root / f"{name}.png" for name in [*IMAGES, "black"]], out, scale="adaptive",
                               threshold=ADAPTIVE_THRESHOLDS, progress=False)
        exported = export_saved_model(training, out / "serving", name="vessel", version=1, scale="adaptive",
                                      threshold=ADAPTIVE_THRESHOLDS)
    assert not report.failures
    return out, tf.saved_model.load(str(exported))


def served_image(loaded, image_path) -> tuple[np.ndarray, np.ndarray]:
    """predict_image's (probability, mask) of one photograph file."""
    result = loaded.signatures["predict_image"](image_bytes=tf.constant([image_path.read_bytes()]))
    mask = tf.io.decode_png(result["mask_png_bytes"].numpy()[0]).numpy()[..., 0]
    return result["probability"].numpy()[0], mask == 255


def test_adaptive_test_photographs_run_at_both_modes(model, monkeypatch):
    from keras_vessel.data import scaling

    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", ADAPTIVE_BAR)
    images = {name: fundus(*IMAGES[name]) for name in IMAGES} | {"black": np.zeros((40, 44, 3), np.uint8)}
    modes = {name: inference_scale(model[1], image, "adaptive").mode for name, image in images.items()}
    assert modes == {"smaller": "auto", "same": "auto", "larger": "multi", "black": "auto"}


@pytest.mark.parametrize("name, mode", [("smaller", "auto"), ("same", "auto"), ("larger", "multi"),
                                        ("black", "auto")])
def test_saved_model_at_adaptive_gives_predict_files_probabilities_and_masks(predicted, predicted_adaptive, name,
                                                                             mode):
    root, _ = predicted
    out, loaded = predicted_adaptive
    local = assert_served_as_written(loaded, root / f"{name}.png", out / f"{name}_prob.png")
    if name != "black":  # the fused photograph really fused, the others ran at auto
        at_auto = written_probability(root / "out" / f"{name}_prob.png")
        assert (np.abs(local - at_auto).max() > 0.01) == (mode == "multi")
    probability, mask = served_image(loaded, root / f"{name}.png")
    threshold, other = ADAPTIVE_THRESHOLDS[mode], ADAPTIVE_THRESHOLDS["auto" if mode == "multi" else "multi"]
    clear = np.abs(probability - threshold) > 1e-5
    np.testing.assert_array_equal(mask[clear], probability[clear] >= threshold)
    assert (mask != (probability >= other)).sum() > 0.05 * mask.size  # not the other mode's threshold
    written = np.asarray(Image.open(out / f"{name}_mask.png")) > 0  # predict_files masked it at the same one
    away = np.abs(local - threshold) > 3e-3
    np.testing.assert_array_equal(mask[away], written[away])


def test_saved_model_at_adaptive_of_a_model_without_a_training_diameter_is_auto(unrecorded, predicted, monkeypatch,
                                                                              tmp_path):
    """Nothing to take multiples of: every image runs at its own grid (as predict_probability does) and is masked
    at the "auto" threshold, however wide its field of view."""
    from keras_vessel.data import scaling

    monkeypatch.setattr(scaling, "MULTI_SCALE_FROM_FOV", 1.0)
    root, _ = predicted
    exported = export_saved_model(unrecorded, tmp_path, name="vessel", version=1, scale="adaptive",
                                  threshold=ADAPTIVE_THRESHOLDS)
    probability, mask = served_image(tf.saved_model.load(str(exported)), root / "larger.png")
    image = np.asarray(Image.open(root / "larger.png"))
    expected = predict_probability(unrecorded, image, scale="adaptive")
    inside = ndimage.binary_erosion(image_fov(image).mask, iterations=FOV_DILATION + 1)
    np.testing.assert_allclose(probability[inside], expected[inside], rtol=0, atol=1e-5)
    threshold = ADAPTIVE_THRESHOLDS["auto"]
    clear = np.abs(probability - threshold) > 1e-5
    np.testing.assert_array_equal(mask[clear], probability[clear] >= threshold)
    assert (mask != (probability >= ADAPTIVE_THRESHOLDS["multi"])).any()


@pytest.mark.parametrize("threshold, shown", [({"auto": 0.5}, r"\{'auto': 0.5\}"),
                                              ({"auto": 0.5, "multi": 1.5}, r"\{'auto': 0.5, 'multi': 1.5\}"),
                                              ({"auto": 0.5, "multi": 0.6, "fused": 0.7}, "'fused': 0.7")])
def test_export_refuses_a_threshold_per_mode_without_exactly_both_modes_in_0_1(model, tmp_path, threshold, shown):
    with pytest.raises(ValueError, match=r"^threshold must be a number in \(0, 1\) or one per mode, "
                                         rf"\{{'auto': t, 'multi': t\}}, got .*{shown}"):
        export_saved_model(model[0], tmp_path, name="vessel", version=1, scale="adaptive", threshold=threshold)
    assert not (tmp_path / "vessel").exists()
