"""`keras-vessel predict`: vessel probability maps and masks for arbitrary fundus images.

A thin shell over `keras_vessel.serving.prediction.predict_files`, with a local
`.keras` model (--model) or a model served by TF Serving (--server).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import click

from keras_vessel_cli.options import (
    HEADS,
    SCALE_HELP,
    TTA_CHOICES,
    TTA_HELP,
    adaptive_thresholds,
    counted,
    scale_option,
    threshold_command,
    threshold_option,
    training_threshold,
)
from keras_vessel_cli.errors import library_errors, quiet_tensorflow, quiet_workers


def _fov_option(value: str) -> str | Path:
    if value.lower() in ("auto", "none"):
        return value.lower()
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"expected 'auto', 'none' or a mask file; {path} does not exist",
                                 param_hint="--fov")
    return path


def _check_source(ctx: click.Context, model_path: Path | None, server: str | None, model_name: str | None,
                  version: int | None, threshold: str) -> None:
    """--model (or the bundled model) for local prediction, or --server with --model-name; never both."""
    if model_path is not None and server is not None:
        raise click.UsageError("give either --model PATH (local prediction) or --server URL --model-name NAME "
                               "(TF Serving), not both")
    if server is None:
        if model_name is not None or version is not None:
            raise click.UsageError("--model-name and --version are only used with --server")
        return
    if model_name is None:
        raise click.UsageError("--server needs --model-name (the name TF Serving serves the model under)")
    for name, flag in (("heads", "--heads"), ("tile_size", "--tile-size"), ("tta", "--tta"), ("scale", "--scale")):
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError(f"{flag} applies to a local --model; the served model fixes it at export")
    if threshold == "train" and ctx.get_parameter_source("threshold") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--threshold train reads threshold.json beside a local --model; with --server "
                               "give the number (e.g. --threshold 0.47)")


def _mask_threshold(ctx: click.Context, threshold: str, model_path: Path | None, heads: str, tta: str,
                    scale: str | float) -> float | str | dict[str, float]:
    """The threshold both engines mask with: a number or 'otsu' as given; 'train' given explicitly, the stored
    one for `tta` and `scale` (a ClickException when the model has none); 'train' by default, the stored one,
    else (said on stderr) the one chosen at the model's own scale for --scale multi, else 0.5; 0.5 for a served
    model (`model_path` None). --scale adaptive: ``{"auto": t, "multi": t}`` (`adaptive_thresholds`), the
    own-scale one read as for --scale auto."""
    if threshold != "train":
        return threshold
    explicit = ctx.get_parameter_source("threshold") is not click.core.ParameterSource.DEFAULT
    if scale == "adaptive" and model_path is not None:
        single = (training_threshold(model_path, heads, tta)[0] if explicit else _stored_threshold(
            model_path, heads, tta, "auto", which="the photographs run at the model's own scale"))
        return adaptive_thresholds(model_path, heads, tta, single)
    if explicit:
        return training_threshold(model_path, heads, tta, scale)[0]
    if model_path is None:
        click.echo("masks at threshold 0.5: a served model's own threshold is applied only by its predict_image "
                   "signature (give it with --threshold; an export records it in its version folder's "
                   "assets.extra/keras_vessel.json)", err=True)
        return 0.5
    return _stored_threshold(model_path, heads, tta, scale)


def _stored_threshold(model_path: Path, heads: str, tta: str, scale: str | float, *,
                      which: str = "every photograph") -> float:
    """The threshold chosen on the model's training images for `tta` and `scale`; for --scale multi without
    one, the model's own-scale threshold (said on stderr: it marks fewer vessels on fused maps); 0.5 (said
    on stderr, for `which` photographs) when it has none; a ClickException when the model's training run
    stopped before choosing it (re-running it chooses it)."""
    from keras_vessel.evaluation import threshold_path, threshold_scale, unfinished_run

    wanted = threshold_path(model_path, tta, scale)
    mode = threshold_scale(scale)
    if not wanted.is_file() and mode != "auto" and threshold_path(model_path, tta).is_file():
        value = training_threshold(model_path, heads, tta)[0]
        click.echo(f"no {wanted.name} beside {model_path}: masks at its threshold for the model's own scale "
                   f"({value:.3g}), which marks fewer vessels on fused maps (choose one with "
                   f"{threshold_command(tta, mode)})", err=True)
        return value
    if not wanted.is_file() and not (tta == "none" and unfinished_run(model_path)):
        click.echo(f"no {wanted.name} beside {model_path}: masks {which} at threshold 0.5 (choose one on training "
                   f"images with {threshold_command(tta, mode)})", err=True)
        return 0.5
    return training_threshold(model_path, heads, tta, scale)[0]


@click.command()
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Trained .keras model file (the training model, with its heads) "
                                 "[default: the bundled model in saved_models/, see its MODEL_CARD.md].")
@click.option("--server", default=None,
              help="Predict with TF Serving's REST API at this URL (e.g. http://localhost:8501) instead of --model.")
@click.option("--model-name", default=None, help="With --server: the served model's name.")
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="With --server: a model version [default: the server's latest].")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for NAME_prob.png (16-bit probability) and NAME_mask.png (0/255).")
@click.option("--fov", "fov_text", default="auto", show_default=True,
              help="'auto' derives the field of view from each image, 'none' uses the whole image, "
                   "or a mask file (same size as every input).")
@click.option("--threshold", default="train", show_default=True,
              help="Mask threshold: 'train' (threshold.json beside the model, chosen on its training images; "
                   "0.5 when it has none or with --server), a number in (0, 1) or 'otsu' (per image, inside "
                   "the FOV).")
@click.option("--heads", type=click.Choice(HEADS), default="mean", show_default=True,
              help="Fuse both heads' probabilities (mean) or use one head (--model only).")
@click.option("--tile-size", type=click.IntRange(min=16), default=None,
              help="Force tiled prediction with tiles of this size [default: whole image when it fits] "
                   "(--model only).")
@click.option("--tta", type=click.Choice(TTA_CHOICES), default="none", show_default=True,
              help=TTA_HELP + " (--model only)")
@click.option("--scale", default="auto", show_default=True, callback=scale_option,
              help=SCALE_HELP + " (--model only; a served model does its own)")
@click.option("--overlay", is_flag=True, help="Also write NAME_overlay.png: the photograph with its vessels painted cyan.")
@click.option("--measure", is_flag=True,
              help="Also write measures.csv: one row of vessel measurements per image (keras-vessel measure's "
                   "columns), its mask inside its FOV, sorted by name; rows of other images already there are kept.")
@click.option("--overwrite", is_flag=True,
              help="Replace the predictions in --output, whatever model, threshold, scale, ... made them, and "
                   "predict every INPUT again: the outputs it records and every NAME_prob/_mask/_overlay.png of "
                   "the INPUTs are removed first, other files never [default: refuse other settings; with the "
                   "same, skip the images already done].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--engine", type=click.Choice(["local", "beam"]), default="local", show_default=True,
              help="'local': one process; 'beam': an Apache Beam pipeline (pip install 'keras-vessel[beam]'), "
                   "INPUTs and --output may be gs:// or s3:// paths. Both write the same files.")
@click.option("--beam-option", "beam_options", multiple=True, metavar="KEY=VALUE",
              help="With --engine beam: a Beam pipeline option, passed through (repeatable), e.g. "
                   "direct_num_workers=2, direct_running_mode=multi_processing, runner=DataflowRunner; "
                   "KEY alone for a flag [default runner: DirectRunner].")
@click.pass_context
def predict(ctx: click.Context, inputs: tuple[str, ...], model_path: Path | None, server: str | None,
            model_name: str | None, version: int | None, output: Path, fov_text: str, threshold: str,
            heads: str, tile_size: int | None, tta: str, scale: str | float, overlay: bool, measure: bool,
            overwrite: bool, quiet: bool, engine: str, beam_options: tuple[str, ...]) -> None:
    """Predict vessels in INPUT images (files, globs or folders of PNG/JPEG/TIFF/BMP/WebP/GIF/PPM).

    A file that cannot be processed is reported on stderr, listed with its reason
    in OUTPUT/failures.csv and skipped; the exit status is then 1 after the other
    files are done. An --output holding predictions
    made with other settings is refused (exit 1) unless --overwrite; with the same
    settings, the images it holds done already are skipped, so a stopped run is
    finished by running it again.
    """
    quiet_tensorflow()
    threshold = threshold_option(threshold)
    fov = _fov_option(fov_text)
    _check_source(ctx, model_path, server, model_name, version, threshold)
    if engine == "beam" and server is not None:
        raise click.UsageError("--engine beam runs a local --model on its workers; --server predicts with "
                               "TF Serving from one process (--engine local)")
    if engine == "local" and beam_options:
        raise click.UsageError("--beam-option is only used with --engine beam")
    if model_path is None and server is None:
        from keras_vessel.models.inference import bundled_model_path

        try:
            model_path = bundled_model_path()
        except FileNotFoundError as error:
            raise click.UsageError(str(error)) from None
        click.echo(f"no --model given: using the bundled model {model_path} "
                   "(see saved_models/MODEL_CARD.md)", err=True)

    if engine == "beam":
        threshold = _mask_threshold(ctx, threshold, model_path, heads, tta, scale)
        return _predict_beam(model_path, inputs, output, beam_options, overwrite, fov=fov, threshold=threshold,
                             heads=heads, tile_size=tile_size, tta=tta, scale=scale, overlay=overlay, measure=measure)

    from keras_vessel.serving.prediction import (
        FAILURES_CSV,
        InputError,
        expand_inputs,
        predict_files,
    )

    try:
        paths = expand_inputs(inputs)
    except InputError as error:
        raise click.BadParameter(str(error), param_hint="INPUT") from None
    threshold = _mask_threshold(ctx, threshold, model_path if server is None else None, heads, tta,
                                scale)  # inputs first

    options = {"fov": fov, "progress": not quiet, "overlay": overlay, "measure": measure, "overwrite": overwrite,
               "threshold": threshold}
    if server is not None:
        from keras_vessel.serving.client import ServingClient

        try:
            client = ServingClient(server, model_name, version=version)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--server/--model-name") from None
        source, options["predictor"] = None, client.predict
        options["predictor_name"] = f"{server} model {model_name} version {version or 'latest'}"
    else:
        source = model_path
        options.update(heads=heads, tile_size=tile_size, tta=tta, scale=scale)

    with library_errors():
        report = predict_files(source, paths, output, **options)  # logs each failure as it happens, once
    done = len(paths) - len(report.failures) - len(report.skipped)
    kinds = "probability maps, masks and overlays" if overlay else "probability maps and masks"
    click.echo(f"wrote {kinds} for {done} of {len(paths)} images to {output}"
               + (f" and their measurements to {output / 'measures.csv'}" if measure and done else "")
               + (f"; {len(report.skipped)} of {len(paths)} already done, skipped" if report.skipped else ""))
    _echo_fov_notes(len(report.wide_fov), len(report.low_resolution), done)
    if report.failures:
        raise click.ClickException(
            f"{len(report.failures)} of {len(paths)} inputs failed: "
            + ", ".join(str(p) for p, _ in report.failures) + f" (each with its reason in {output / FAILURES_CSV})"
        )


def _echo_fov_notes(wide_fov: int, low_resolution: int, total: int, *, where: str = "above") -> None:
    """The lines after a run (either engine) counting the photographs `PhotographWork.notes` noted among the
    `total` predicted in this run."""
    from keras_vessel.data.scaling import MULTI_SCALE_FROM_FOV
    from keras_vessel.serving.prediction import LOW_RESOLUTION_FOV_FRACTION

    if wide_fov:
        click.echo(f"photographs with a field of view at least {MULTI_SCALE_FROM_FOV:g} px across: "
                   f"{wide_fov} of {total}; --scale adaptive keeps more of their thin vessels (fused resolutions "
                   "for these, several times the time; docs/RESULTS.md section 1b)", err=True)
    if low_resolution:
        click.echo(f"photographs of low resolution (a field of view under {LOW_RESOLUTION_FOV_FRACTION:.0%} of the "
                   f"model's training FOV, their thin vessels missed): {low_resolution} of {total}, each named "
                   f"{where}", err=True)


@contextlib.contextmanager
def _without_beam_notices():
    """Beam logs notices through the root logger ("apitools not found" when imported, "Resource module is
    not available ..." per worker), which also gives the root logger a stderr handler: while Beam is
    imported and runs, none of it reaches the terminal, nor its error records (a traceback each): what
    stops the pipeline is reported in one sentence (`keras_vessel.errors.PipelineError`)."""
    root, beam = logging.getLogger(), logging.getLogger("apache_beam")
    handlers, level, beam_level = list(root.handlers), root.level, beam.level
    root.setLevel(logging.ERROR)
    beam.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        beam.setLevel(beam_level)


def _predict_beam(model_path: Path, inputs: tuple[str, ...], output: Path, beam_options: tuple[str, ...],
                  overwrite: bool, **options) -> None:
    """`--engine beam`: the same work as an Apache Beam pipeline; bad options and inputs in one sentence."""
    try:
        with _without_beam_notices():
            from keras_vessel.serving.beam_engine import predict_beam
    except ImportError as error:
        raise click.UsageError(f"--engine beam needs Apache Beam ({error}); install it with "
                               "pip install 'keras-vessel[beam]'") from None
    from keras_vessel.serving.prediction import FAILURES_CSV, InputError, OutputClashError, PhotographWork

    with library_errors():  # other errors, the pipeline's (PipelineError) included, in one sentence (exit 1)
        work = PhotographWork(**options)
        try:
            with _without_beam_notices(), quiet_workers():
                report = predict_beam(model_path, inputs, output, options=beam_options, work=work,
                                      overwrite=overwrite)
        except OutputClashError:
            raise  # inputs that exist but clash in the output folder: exit 1, as with the local engine
        except InputError as error:
            raise click.BadParameter(str(error), param_hint="INPUT") from None
        except ValueError as error:
            if str(error).startswith("--beam-option"):
                raise click.BadParameter(str(error).split(": ", 1)[1], param_hint="--beam-option") from None
            raise
    click.echo(f"beam: {counted(report.done, 'photograph')} done, {report.skipped} skipped (already done), "
               f"{report.failed} failed; outputs in {output}")
    _echo_fov_notes(report.wide_fov, report.low_resolution, report.done, where="in the workers' logs")
    if report.failed:
        raise click.ClickException(f"{counted(report.failed, 'photograph')} failed: see {output}/{FAILURES_CSV} "
                                   "(each with its reason)")
