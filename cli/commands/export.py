"""`keras-vessel export`: write a trained model as a TF Serving SavedModel version."""

from __future__ import annotations

from pathlib import Path

import click

from keras_vessel_cli.options import (
    HEADS,
    adaptive_thresholds,
    export_scale_option,
    threshold_option,
    training_threshold,
)
from keras_vessel_cli.errors import library_errors, quiet_tensorflow

# The options that apply to one --format only (by parameter name): given with the other, they are refused.
FORMAT_OPTIONS = {"weights": "tflite", "input_size": "tflite", "with_keras": "savedmodel"}


@click.command()
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Trained keras-vessel .keras model file.")
@click.option("--name", required=True, help="Model name: the folder under --out that TF Serving serves.")
@click.option("--version", type=click.IntRange(min=1), required=True,
              help="Version number (a folder under NAME); TF Serving serves the highest by default.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Base folder, e.g. saved_models/; the SavedModel goes to OUT/NAME/VERSION.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT/NAME/VERSION.")
@click.option("--heads", type=click.Choice(HEADS), default="mean", show_default=True,
              help="Fuse both heads' probabilities (mean) or export one head.")
@click.option("--threshold", default="0.5", show_default=True,
              help="Threshold of the predict_image signature's PNG mask: a number in (0, 1) or 'train' "
                   "(threshold.json beside the model; threshold_multi.json with --scale multi; with --scale "
                   "adaptive each image at the one of the resolutions it ran at).")
@click.option("--scale", default="auto", show_default=True, callback=export_scale_option,
              help="'auto': the served graph resamples each image so its field of view is as wide as the "
                   "model's training images; '1080px': 1080 px across instead; 'multi': at several multiples "
                   "of the training width, the probabilities averaged; 'adaptive': 'multi' for an image whose "
                   "field of view is at least keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV px across, else "
                   "'auto'; 'none': it runs images at their own size. With --format tflite: the fov_diameter (for "
                   "'multi' and 'adaptive': fov_diameters) recorded in NAME.json.")
@click.option("--format", "export_format", type=click.Choice(["savedmodel", "tflite"]), default="savedmodel",
              show_default=True, help="savedmodel: TF Serving layout; tflite: OUT/NAME/VERSION/NAME.tflite "
                                      "and NAME.json (phones and edge devices; see keras_vessel.serving.tflite).")
@click.option("--weights", type=click.Choice(["float32", "float16", "int8"]), default="float32", show_default=True,
              help="With --format tflite: the weights' type (int8: dynamic-range quantisation).")
@click.option("--input-size", type=click.IntRange(min=16), default=None,
              help="With --format tflite: a fixed square input size (a multiple of the stride) "
                   "[default: resizable].")
@click.option("--keras", "with_keras", is_flag=True,
              help="With --format savedmodel: also write OUT/NAME/model.keras without optimizer state (a third "
                   "of the size) and its threshold files: what to ship for Keras reuse and `keras-vessel predict`.")
def export(model_path: Path, name: str, version: int, out: Path, overwrite: bool, heads: str,
           threshold: str, scale: str, export_format: str, weights: str, input_size: int | None,
           with_keras: bool) -> None:
    """Export a model for TF Serving: OUT/NAME/VERSION/saved_model.pb with signatures
    serving_default (images -> probability) and predict_image (PNG/JPEG bytes ->
    probability, mask_png_bytes); or, with --format tflite, for LiteRT."""
    _check_format_options(click.get_current_context(), export_format)
    quiet_tensorflow()
    value = threshold_option(threshold, otsu=False)
    from keras_vessel.locks import folder_lock

    with library_errors(), folder_lock(out / name, what="the model folder"):  # one export at a time into OUT/NAME
        if export_format == "tflite":
            _export_tflite(model_path, out / name / str(version), name, weights, input_size, heads, value,
                           overwrite, scale)
        else:
            _export_saved_model(model_path, out, name, version, overwrite, heads, value, scale, with_keras)


def _check_format_options(ctx: click.Context, export_format: str) -> None:
    """A usage error (exit status 2) for an option of `FORMAT_OPTIONS` given for a format it does not apply to."""
    from click.core import ParameterSource

    for param in ctx.command.params:
        applies_to = FORMAT_OPTIONS.get(param.name)
        if applies_to not in (None, export_format) and ctx.get_parameter_source(param.name) not in (
                ParameterSource.DEFAULT, None):
            raise click.UsageError(f"{param.opts[0]} applies only to --format {applies_to}, not to --format "
                                   f"{export_format}; drop it or pass --format {applies_to}", ctx=ctx)


def _export_saved_model(model_path: Path, out: Path, name: str, version: int, overwrite: bool, heads: str,
                        threshold: str, scale: str, with_keras: bool) -> None:
    from keras_vessel.serving.export import export_keras_model, export_saved_model, version_folder_state

    target = out / name / str(version)
    if version_folder_state(target) in ("complete", "other") and not overwrite:  # an incomplete one is redone
        raise click.ClickException(f"{target} already exists; pass --overwrite to replace it or choose "
                                   f"another --version")
    keras_path = out / name / "model.keras"
    if with_keras and keras_path.exists() and not overwrite:
        raise click.ClickException(f"{keras_path} already exists; pass --overwrite to replace it")
    value = _training_thresholds(model_path, heads, scale) if threshold == "train" else float(threshold)

    with library_errors():
        try:
            path = export_saved_model(model_path, out, name=name, version=version, overwrite=overwrite,
                                      threshold=value, heads=heads, scale=scale)
        except FileExistsError as error:  # created by someone else since the check above
            raise click.ClickException(f"{error}; use --overwrite") from error
    shown = (f"mask threshold {value:g}" if not isinstance(value, dict) else
             "mask thresholds " + ", ".join(f"{threshold:g} ({mode})" for mode, threshold in value.items()))
    click.echo(f"exported {model_path} (heads {heads}, {shown}, scale {scale}) to {path}")
    if with_keras:
        with library_errors():
            export_keras_model(model_path, keras_path)
        click.echo(f"wrote {keras_path} (no optimizer state)")


def _export_tflite(model_path: Path, folder: Path, name: str, weights: str, input_size: int | None, heads: str,
                   threshold: str, overwrite: bool, scale: str) -> None:
    target = folder / f"{name}.tflite"
    written = [path for path in (target, target.with_suffix(".json")) if path.exists()]
    if len(written) == 2 and not overwrite:
        raise click.ClickException(f"{target} already exists; pass --overwrite to replace it or choose another "
                                   "--version")
    if len(written) == 1:
        click.echo(f"{written[0]} is left from an export that stopped; exporting again", err=True)
    value = _training_thresholds(model_path, heads, scale) if threshold == "train" else float(threshold)
    from keras_vessel.serving.tflite import export_tflite

    with library_errors():
        path = export_tflite(model_path, folder, name=name, weights=weights, input_size=input_size, heads=heads,
                             threshold=value, scale=scale)
    click.echo(f"exported {model_path} ({weights} weights, heads {heads}) to {path} and {path.with_suffix('.json')}")


def _training_thresholds(model_path: Path, heads: str, scale: str) -> float | dict[str, float]:
    """--threshold train: the threshold stored beside the model for `scale` (a ClickException when absent); for
    --scale adaptive one per mode (`adaptive_thresholds`), the own-scale one required."""
    if scale == "adaptive":
        return adaptive_thresholds(model_path, heads, "none", training_threshold(model_path, heads)[0])
    return training_threshold(model_path, heads, scale=scale)[0]
