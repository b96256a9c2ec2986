"""Options and checks shared by the commands, in one place.

Names are spelled out (not read from keras_vessel) so that `keras-vessel --help`
does not import TensorFlow; tests/cli/test_prepare_train.py checks they match
the library's (`keras_vessel.data.datasets.DATASETS`, `keras_vessel.checks.FUSIONS`,
`keras_vessel.models.inference.TTA_MODES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click

from keras_vessel_cli.errors import library_errors, quiet_tensorflow

DATASET_NAMES = ["drive", "chase_db1", "stare", "hrf", "orvs", "les_av", "folder", "synthetic"]
HEADS = ["mean", "segment", "pixel"]
TTA_CHOICES = ["none", "flip", "d4"]
SCALE_HELP = ("'auto' resamples each image so its field of view is as wide as the model's training images "
              "(and the probability back); '1080px' makes it 1080 px across instead; 'multi' runs it at "
              "several multiples of the training width (keras_vessel.data.scaling.FUSION_MULTIPLES) and "
              "averages the probabilities, masked at the threshold chosen on fused maps (threshold_multi.json; "
              "several times the work of 'auto'); 'adaptive' is 'multi' for a photograph whose field of view "
              "is at least keras_vessel.data.scaling.MULTI_SCALE_FROM_FOV px across, else 'auto', each masked "
              "at its own threshold; 'none' runs at the image's own size; a number is the factor.")
TTA_HELP = ("Test-time augmentation: average the predictions of the left-right mirror (flip, 2x the time) "
            "or of all 8 flips and quarter turns (d4, 8x).")


def counted(count: int, noun: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``: a count with its noun, plural unless it is one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def thresholds_said(thresholds: Mapping[str, float], how: str) -> str:
    """How a command's last line gives the thresholds it stored, and `how` they were chosen.

    `thresholds` maps threshold scales to values, the model's own scale (``"auto"``) first, as
    `keras_vessel.evaluation.choose_run_threshold` returns them:

    >>> thresholds_said({"auto": 0.59041}, "on its training images")
    'threshold 0.5904 on its training images'
    >>> thresholds_said({"auto": 0.718, "multi": 0.564}, "on its training images")
    'thresholds 0.7180 at its own scale, 0.5640 at --scale multi, on its training images'
    """
    if list(thresholds) == ["auto"]:
        return f"threshold {thresholds['auto']:.4f} {how}"
    at = ", ".join(f"{value:.4f} at {'its own scale' if scale == 'auto' else f'--scale {scale}'}"
                   for scale, value in thresholds.items())
    return f"thresholds {at}, {how}"


def threshold_option(value: str, *, otsu: bool = True) -> str:
    """'train', 'otsu' (unless `otsu` is False) or a number in (0, 1), checked before the model is loaded."""
    from keras_vessel.evaluation.thresholds import parse_threshold

    text = value.strip().lower()
    if text == "train":
        return text
    expected = "a number in (0, 1), 'otsu' or 'train'" if otsu else "a number in (0, 1) or 'train'"
    try:
        parsed = parse_threshold(text)
    except ValueError:
        parsed = None
    if parsed is None or (parsed == "otsu" and not otsu):
        raise click.BadParameter(f"expected {expected}; got {value!r}", param_hint="--threshold")
    return text


def scale_option(ctx: click.Context, param: click.Parameter, value: str, *, factors: bool = True) -> str | float:
    """--scale: the library's rule (`keras_vessel.data.scaling.check_scale`), its ValueError as bad usage.
    Click calls it before the command (also for the default), so TensorFlow is imported quietly here."""
    quiet_tensorflow()
    from keras_vessel.data.scaling import check_scale

    try:
        return check_scale(value, factors=factors)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def export_scale_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--scale of export: `scale_option` without factors (the exported graph resamples by each image's FOV)."""
    return scale_option(ctx, param, value, factors=False)


def model_fuses(model_path: Path) -> bool:
    """Whether the model records its training diameter, so that --scale adaptive may run photographs fused (one
    that records none never does, and needs no threshold_multi.json)."""
    from keras_vessel.models import model_fov_diameter
    from keras_vessel.models.saving import load_model_file

    with library_errors():
        return model_fov_diameter(load_model_file(model_path)) is not None


def threshold_command(tta: str, scale: str) -> str:
    """The command that chooses the stored threshold for `tta` and the threshold scale `scale`."""
    flags = ("" if tta == "none" else f" --tta {tta}") + ("" if scale == "auto" else f" --scale {scale}")
    return f"`keras-vessel evaluate --threshold train --training-root ...{flags}`"


def adaptive_thresholds(model_path: Path, heads: str, tta: str, single: float) -> dict[str, float]:
    """--scale adaptive's thresholds, ``{"auto": single, "multi": t}``: `single` is the model's own-scale one as
    the caller found it, t its threshold_multi.json's; without that file `single` for both, said on stderr in
    one sentence unless the model never runs a photograph fused (`model_fuses`)."""
    from keras_vessel.evaluation import threshold_path

    fused_file = threshold_path(model_path, tta, "multi")
    if fused_file.is_file():
        return {"auto": single, "multi": training_threshold(model_path, heads, tta, "multi")[0]}
    if model_fuses(model_path):
        click.echo(f"no {fused_file.name} beside {model_path}: photographs run at fused resolutions are masked at "
                   f"the threshold for the model's own scale too ({single:.3g}), which marks fewer vessels on fused "
                   f"maps (choose one with {threshold_command(tta, 'multi')})", err=True)
    return {"auto": single, "multi": single}


def training_threshold(model_path: Path, heads: str, tta: str = "none", scale: str | float = "auto"
                       ) -> tuple[float, str]:
    """The threshold stored beside the model for `tta` and `scale`, as (value, rule); a ClickException if absent."""
    from keras_vessel.evaluation.thresholds import load_threshold

    with library_errors():
        stored = load_threshold(model_path, heads=heads, tta=tta, scale=scale)
    return stored["threshold"], stored["rule"]
