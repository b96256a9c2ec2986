"""`keras-vessel predict`: vessel probability maps and masks for arbitrary fundus images."""

from __future__ import annotations

import glob
from pathlib import Path

import click

from keras_vessel_cli.commands.evaluate import HEADS, threshold_option, training_threshold
from keras_vessel_cli.errors import library_errors

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm")


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(IMAGE_SUFFIXES) or name.endswith(tuple(s + ".gz" for s in IMAGE_SUFFIXES))


def expand_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """Files as given, globs expanded, folders listed (images only, sorted, not recursive)."""
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text) if Path(m).is_file())
            if not matches:
                raise click.BadParameter(f"pattern {text!r} matches no file", param_hint="INPUT")
            found += matches
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p))
            if not matches:
                raise click.BadParameter(
                    f"folder {path} holds no image (looked for {', '.join(IMAGE_SUFFIXES)})",
                    param_hint="INPUT",
                )
            found += matches
        elif path.is_file():
            found.append(path)
        else:
            raise click.BadParameter(f"{path} does not exist", param_hint="INPUT")
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path, None)
    return list(unique)


def _output_stem(path: Path, used: set[str]) -> str:
    """File stem without image/.gz suffixes, made unique ("a.png" and "a.jpg" both occur)."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem = Path(name).stem
    candidate, suffix = stem, Path(name).suffix.lstrip(".").lower()
    if candidate in used:
        candidate = f"{stem}_{suffix}" if suffix else stem
    counter = 2
    while candidate in used:
        candidate, counter = f"{stem}_{counter}", counter + 1
    used.add(candidate)
    return candidate


def _fov_option(value: str) -> str | Path:
    if value.lower() in ("auto", "none"):
        return value.lower()
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"expected 'auto', 'none' or a mask file; {path} does not exist",
                                 param_hint="--fov")
    return path


@click.command()
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Trained .keras model file (the training model, with its heads).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for NAME_prob.png (16-bit probability) and NAME_mask.png (0/255).")
@click.option("--fov", "fov_text", default="auto", show_default=True,
              help="'auto' derives the field of view from each image, 'none' uses the whole image, "
                   "or a mask file (same size as every input).")
@click.option("--threshold", default="0.5", show_default=True,
              help="Mask threshold: a number in (0, 1), 'otsu' (per image, inside the FOV) or 'train' "
                   "(threshold.json beside the model).")
@click.option("--heads", type=click.Choice(HEADS), default="mean", show_default=True,
              help="Fuse both heads' probabilities (mean) or use one head.")
@click.option("--tile-size", type=click.IntRange(min=16), default=None,
              help="Force tiled prediction with tiles of this size [default: whole image when it fits].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(inputs: tuple[str, ...], model_path: Path, output: Path, fov_text: str, threshold: str,
            heads: str, tile_size: int | None, quiet: bool) -> None:
    """Predict vessels in INPUT images (files, globs or folders of PNG/JPEG/TIFF/GIF/PPM).

    A file that cannot be processed is reported on stderr and skipped; the exit
    status is then 1 after the other files are done.
    """
    threshold = threshold_option(threshold)
    fov_choice = _fov_option(fov_text)
    paths = expand_inputs(inputs)

    import numpy as np

    from keras_vessel import metrics
    from keras_vessel.errors import DatasetError
    from keras_vessel.inference import load_inference_model, predict_probability
    from keras_vessel.io import atomic_path
    from keras_vessel.preprocessing import derive_fov, read_image, read_mask
    from keras_vessel.progress import progress
    from PIL import Image

    with library_errors():
        fixed_fov = read_mask(fov_choice) if isinstance(fov_choice, Path) else None
        model = load_inference_model(model_path, heads=heads)
    if threshold == "train":
        value, _ = training_threshold(model_path, heads)
    elif threshold == "otsu":
        value = "otsu"
    else:
        value = float(threshold)

    predict_options = {"tile_size": tile_size} if tile_size else {}
    used: set[str] = set()
    failures: list[tuple[Path, str]] = []
    for path in progress(paths, label="predict", enabled=not quiet):
        try:
            image = read_image(path)
            if fixed_fov is not None:
                if fixed_fov.shape != image.shape[:2]:
                    raise DatasetError(
                        f"FOV mask {fov_choice} is {fixed_fov.shape[1]}x{fixed_fov.shape[0]} (WxH) but "
                        f"image {path} is {image.shape[1]}x{image.shape[0]}"
                    )
                fov = fixed_fov
            elif fov_choice == "auto":
                fov = derive_fov(image)
                if not fov.any():
                    raise DatasetError(f"could not derive a FOV for {path}: the image is entirely dark")
            else:
                fov = np.ones(image.shape[:2], dtype=bool)
            prob = predict_probability(model, image, fov=fov, **predict_options)
            t = metrics.otsu_threshold(prob, fov) if value == "otsu" else value
            mask = (prob >= t) & fov
            stem = _output_stem(path, used)
            with atomic_path(output / f"{stem}_prob.png") as temp:
                Image.fromarray(np.round(prob * 65535).astype(np.uint16)).save(temp, format="PNG")
            with atomic_path(output / f"{stem}_mask.png") as temp:
                Image.fromarray(mask.astype(np.uint8) * 255).save(temp, format="PNG")
        except (ValueError, OSError) as error:  # DatasetError is a ValueError
            failures.append((path, str(error)))
            click.echo(f"error: {path}: {error}", err=True)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
            failures.append((path, f"{type(error).__name__}: {error}"))
            click.echo(f"error: {path}: unexpected {type(error).__name__}: {error}", err=True)
    done = len(paths) - len(failures)
    click.echo(f"wrote probability maps and masks for {done} of {len(paths)} images to {output}")
    if failures:
        raise click.ClickException(
            f"{len(failures)} of {len(paths)} inputs failed: " + ", ".join(str(p) for p, _ in failures)
        )
