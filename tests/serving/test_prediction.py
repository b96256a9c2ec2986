"""keras_vessel.serving.prediction: input expansion and the per-file predict loop.

Most tests use a NumPy predictor (green channel / 255), so the expected
files follow from the input pixels alone; one test runs a tiny saved U-Net
through the `model_path` route and compares with `predict_probability`.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.filters import threshold_otsu

from keras_vessel.serving.prediction import (
    FAILURES_CSV,
    OUTPUT_MARKER,
    OVERLAY_COLOUR,
    DoneCheck,
    InputError,
    LocalFiles,
    Located,
    PhotographWork,
    PredictReport,
    claim_output,
    expand_inputs,
    failures_text,
    photograph_marker,
    predict_files,
    vessel_overlay,
    write_photograph,
)


def _green(image: np.ndarray) -> np.ndarray:
    return image[..., 1].astype(np.float32) / 255.0


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture()
def images(tmp_path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (13, 9, 3), dtype=np.uint8),
    }


# ---------------------------------------------------------------- expand_inputs


def test_expand_inputs_files_globs_folders(tmp_path):
    folder = tmp_path / "in"
    for name in ("b.png", "a.jpg", "c.TIF", "d.ppm.gz", "f.webp"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    (folder / "sub" / "e.png").write_bytes(b"x")
    single = folder / "notes.txt"  # an explicit file is taken as given, whatever its suffix

    found = expand_inputs([folder, str(folder / "*.png"), single, folder / "a.jpg"])
    names = [p.name for p in found]
    # sorted, de-duplicated, not recursive
    assert names == ["a.jpg", "b.png", "c.TIF", "d.ppm.gz", "f.webp", "notes.txt"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: root / "missing.png", r"missing\.png does not exist"),
        (lambda root: str(root / "*.jpeg"), r"pattern '.*\*\.jpeg' matches no file"),
        (lambda root: root, r"folder .* holds no image \(looked for \.png, \.jpg"),
    ],
)
def test_expand_inputs_errors_name_the_argument(tmp_path, make, match):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match=match) as info:
        expand_inputs([make(tmp_path)])
    assert isinstance(info.value, ValueError)


def test_expand_inputs_rejects_a_bare_path(tmp_path):
    with pytest.raises(TypeError, match=r"`inputs` must be a sequence of paths, not one path"):
        expand_inputs(str(tmp_path))


# ---------------------------------------------------------------- predict_files with a predictor


def test_writes_16bit_probability_and_mask(tmp_path, images):
    paths = [_save(tmp_path / "in" / f"{k}.png", v) for k, v in images.items()]
    out = tmp_path / "out"
    report = predict_files(None, paths, out, fov="none", threshold=0.4, predictor=_green, progress=False)

    assert isinstance(report, PredictReport) and report.failures == []
    assert report.written == [out / "a_prob.png", out / "a_mask.png", out / "b_prob.png", out / "b_mask.png"]
    for key, image in images.items():
        prob_image = Image.open(out / f"{key}_prob.png")
        assert prob_image.mode.startswith("I;16")
        # green / 255 * 65535 is exactly green * 257
        np.testing.assert_array_equal(np.asarray(prob_image), image[..., 1].astype(np.int64) * 257)
        mask = _read(out / f"{key}_mask.png")
        np.testing.assert_array_equal(mask, np.where(image[..., 1] / 255.0 >= 0.4, 255, 0))
    # no temp files; the folder's marker (its settings), and each photograph's, written after its files
    assert sorted(p.name for p in out.iterdir()) == sorted([OUTPUT_MARKER, photograph_marker("a"),
                                                           photograph_marker("b"), *(p.name for p in report.written)])


def test_an_output_folder_of_other_settings_is_refused_unless_overwritten(tmp_path, images):
    from keras_vessel.errors import OutputError

    a, b = (_save(tmp_path / "in" / f"{k}.png", v) for k, v in images.items())
    out = tmp_path / "out"
    options = {"fov": "none", "predictor": _green, "progress": False, "measure": True}
    predict_files(None, [a, b], out, threshold=0.4, **options)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert predict_files(None, [a], out, threshold=0.4, **options).skipped == [a]  # the same settings: done
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(OutputError, match=rf"^{out} holds predictions made with another --threshold \(0.4; now 0.5\); "
                                          r"to keep them, give another --output; .* add --overwrite$"):
        predict_files(None, [a], out, threshold=0.5, **options)
    with pytest.raises(OutputError, match=r"another model \(_green; now other\)"):
        predict_files(None, [a], out, threshold=0.4, predictor_name="other", **{**options, "predictor": _green})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # refused before any file
    predict_files(None, [a], out, threshold=0.5, overwrite=True, **options)  # b's maps and row were 0.4's: gone
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, photograph_marker("a"), "a_mask.png",
                                                     "a_prob.png", "measures.csv"]
    assert (out / "measures.csv").read_text().count("\n") == 2
    np.testing.assert_array_equal(_read(out / "a_mask.png"), np.where(images["a"][..., 1] / 255.0 >= 0.5, 255, 0))


def test_a_folder_where_every_photograph_failed_takes_a_corrected_run_with_other_settings(tmp_path, images):
    """A run whose every photograph failed (a --fov file of another size: each named in one sentence) leaves its
    settings and failures.csv but no prediction: a corrected run with other settings is not refused as if the
    folder held predictions; its failures are replaced. Once one photograph is predicted, other settings are."""
    from keras_vessel.errors import OutputError

    a, b = (_save(tmp_path / "in" / f"{k}.png", v) for k, v in images.items())
    small_fov = _save(tmp_path / "fov.png", np.full((5, 7), 255, np.uint8))
    out = tmp_path / "out"
    report = predict_files(None, [a, b], out, fov=small_fov, threshold=0.4, predictor=_green, progress=False)
    height, width = images["a"].shape[:2]
    assert [reason for _, reason in report.failures][0] == (
        f"FOV mask {small_fov} is 7x5 (WxH) but image {a} is {width}x{height}: a --fov file must have the size of "
        "every photograph; predict photographs of other sizes apart, or with --fov auto")
    assert len(report.failures) == 2 and report.written == [] and (out / FAILURES_CSV).is_file()
    report = predict_files(None, [a, b], out, fov="none", threshold=0.5, predictor=_green, progress=False)
    assert report.failures == [] and len(report.written) == 4
    assert not (out / FAILURES_CSV).exists()
    with pytest.raises(OutputError, match=r"holds predictions made with another --threshold \(0.5; now 0.4\)"):
        predict_files(None, [a], out, fov="none", threshold=0.4, predictor=_green, progress=False)


UNTOUCHED_NS = 1_000_000_000 * 10**9  # an mtime no run writes: a file that still has it was not rewritten


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Each file of `folder` by name: its mtime (ns) and bytes."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.iterdir())}


def _counting(calls: list, stop_at: int | None = None):
    """`_green`, counting its calls in `calls`; Ctrl-C at call `stop_at`. One name whatever the arguments, so
    that runs with it record the same predictor (`claim_output`)."""

    def green(image):
        calls.append(image.shape)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return _green(image)

    return green


@pytest.fixture()
def four(tmp_path) -> list[Path]:
    """Four small photographs of three sizes, a.png to d.png."""
    rng = np.random.default_rng(4)
    shapes = [(20, 24), (13, 9), (20, 24), (16, 18)]
    return [_save(tmp_path / "in" / f"{name}.png", rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
            for name, shape in zip("abcd", shapes)]


RESUMED = {"fov": "none", "threshold": 0.4, "progress": False, "measure": True, "overlay": True}


def test_done_means_every_file_of_the_photograph_and_its_row(tmp_path, four):
    import pickle

    out = tmp_path / "out"
    predict_files(None, four[:2], out, predictor=_green, **RESUMED)

    def check(*, overwrite=False, **options):
        return DoneCheck.of(out, PhotographWork(fov="none", local_model=False, **options), overwrite=overwrite)

    assert [check(overlay=True, measure=True)(stem) for stem in "abc"] == [True, True, False]
    (out / "b_overlay.png").unlink()
    assert not check(overlay=True)("b") and check()("b")  # the overlay is one of its files only with --overlay
    rows = (out / "measures.csv").read_text().splitlines(keepends=True)
    (out / "measures.csv").write_text("".join(row for row in rows if not row.startswith("a,")))
    assert not check(measure=True)("a") and check()("a")  # its row is part of it only with --measure
    assert not check(overwrite=True)("b")  # --overwrite: nothing is done
    assert pickle.loads(pickle.dumps(check()))("a")  # the Beam engine's workers call it


def test_a_rerun_skips_the_photographs_done_and_rewrites_nothing(tmp_path, four):
    out, calls = tmp_path / "out", []
    predict_files(None, four, out, predictor=_counting(calls), **RESUMED)
    for path in out.iterdir():
        os.utime(path, ns=(UNTOUCHED_NS, UNTOUCHED_NS))
    before, calls[:] = _tree(out), []

    report = predict_files(None, four, out, predictor=_counting(calls), **RESUMED)
    assert (report.skipped, report.written, report.failures, calls) == (four, [], [], [])
    assert _tree(out) == before  # no file rewritten, added or removed: marker and measures.csv included
    report = predict_files(None, four, out, predictor=_counting(calls), overwrite=True, **RESUMED)
    assert report.skipped == [] and len(report.written) == 12 and len(calls) == 4  # --overwrite redoes all


@pytest.mark.parametrize("stop", ["ctrl-c at the third", "outputs deleted"])
def test_a_stopped_run_run_again_does_the_rest_only_and_ends_as_a_fresh_run(tmp_path, four, stop):
    out, calls = tmp_path / "out", []
    predict_files(None, four, out, predictor=_counting(calls), **RESUMED)
    fresh = {path.name: path.read_bytes() for path in out.iterdir()}
    if stop == "outputs deleted":  # b and d lack a file each; their rows stay
        (out / "b_mask.png").unlink()
        (out / "d_overlay.png").unlink()
        redone = ["b", "d"]
    else:
        shutil.rmtree(out)
        with pytest.raises(KeyboardInterrupt):
            predict_files(None, four, out, predictor=_counting([], stop_at=3), **RESUMED)
        assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{s}_{k}.png" for s in "ab"
                                                                  for k in ("prob", "mask", "overlay"))
        redone = ["c", "d"]

    calls[:] = []
    report = predict_files(None, four, out, predictor=_counting(calls), **RESUMED)
    assert [path.stem for path in report.skipped] == sorted(set("abcd") - set(redone))
    assert sorted({path.name.split("_")[0] for path in report.written}) == redone and len(calls) == 2
    assert {path.name: path.read_bytes() for path in out.iterdir()} == fresh  # measures.csv and marker too


def test_ctrl_c_inside_the_model_acts_once_the_photograph_is_written(tmp_path, four, capfd):
    """Ctrl-C raised its KeyboardInterrupt inside the model's call (TensorFlow's Python code, not written to be
    stopped half-way); now it acts between photographs, and a re-run does the others."""
    import signal

    calls = []

    def interrupted_at_the_second(image):
        calls.append(image.shape)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the model's call
        return _green(image)

    out = tmp_path / "out"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest-xdist workers may ignore it
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_files(None, four, out, predictor=interrupted_at_the_second, predictor_name="green", **RESUMED)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 2 and "stopping after this photograph (Ctrl-C again" in capfd.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{s}_{k}.png" for s in "ab"
                                                              for k in ("prob", "mask", "overlay"))
    assert [row.split(",")[0] for row in (out / "measures.csv").read_text().splitlines()[1:]] == ["a", "b"]
    report = predict_files(None, four, out, predictor=_green, predictor_name="green", **RESUMED)
    assert [path.stem for path in report.skipped] == ["a", "b"]
    assert sorted({path.name.split("_")[0] for path in report.written}) == ["c", "d"]


def _csvs(folder: Path) -> dict[str, str]:
    """measures.csv and failures.csv of `folder` (None when absent), the folder's path as ``OUT``."""
    return {name: (folder / name).read_text().replace(str(folder), "OUT") if (folder / name).exists() else None
            for name in ("measures.csv", FAILURES_CSV)}


def test_failures_csv_lists_each_failed_photograph_until_it_succeeds(tmp_path, four):
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    a, b, c, d = four
    fresh, out = tmp_path / "fresh", tmp_path / "out"
    predict_files(None, [*four, broken], fresh, predictor=_green, **RESUMED)
    assert _csvs(fresh)[FAILURES_CSV] == (f"name,path,reason\nbroken,{broken},\"cannot decode image file {broken}: "
                                          "not a PNG, JPEG, TIFF, BMP, WebP, GIF or PPM image, or damaged; "
                                          "convert or remove it\"\n")

    predict_files(None, [d, broken, a], out, predictor=_green, **RESUMED)  # input order is not the files' order
    report = predict_files(None, [c, b], out, predictor=_green, **RESUMED)  # broken.png's row stays
    assert report.failures == [] and _csvs(out) == _csvs(fresh)  # the files of one run of them all
    rows = (out / "measures.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["name", "a", "b", "c", "d"]

    shutil.copyfile(a, broken)  # fixed
    report = predict_files(None, [*four, broken], out, predictor=_green, **RESUMED)
    assert [p.stem for p in report.skipped] == list("abcd") and report.failures == []
    assert not (out / FAILURES_CSV).exists()  # none of the folder's photographs failed
    assert [row.split(",")[0] for row in (out / "measures.csv").read_text().splitlines()][1:] == [
        "a", "b", "broken", "c", "d"]
    predict_files(None, [a], out, predictor=_green, overwrite=True, **RESUMED)
    assert not (out / FAILURES_CSV).exists()


def _files(folder: Path, *, leaving=()) -> dict[str, bytes]:
    """Every file of `folder` by name (hidden ones included), but those named in `leaving`; the folder's path
    as ``OUT`` (measures.csv names each mask by its path)."""
    return {path.name: path.read_bytes().replace(str(folder).encode(), b"OUT") for path in sorted(folder.iterdir())
            if path.name not in leaving}


def test_overwrite_rewrites_every_output_of_the_photographs_asked_and_keeps_files_not_predicts(tmp_path, four):
    """An earlier run with --overlay killed after writing b_overlay.png but before recording it, then
    `predict a.png b.png broken.png --output out --overwrite` with another threshold: b_overlay.png used to
    survive beside the new maps; broken.png's stale maps too (it fails now). Files that are not predict's
    outputs (notes.txt; e_prob.png and e_mask.png, which no run recorded and no input names) are kept."""
    a, b, c, d = four
    broken = tmp_path / "in" / "broken.png"
    shutil.copyfile(c, broken)
    out, scratch, fresh = tmp_path / "out", tmp_path / "scratch", tmp_path / "fresh"
    options = {"fov": "none", "predictor": _green, "progress": False}
    predict_files(None, four, out, threshold=0.4, **options)
    predict_files(None, [b, broken], scratch, threshold=0.4, overlay=True, **options)
    for name in ("b_overlay.png", "broken_prob.png", "broken_mask.png"):  # written, never recorded
        shutil.copyfile(scratch / name, out / name)
    (out / "notes.txt").write_text("mine")
    for name in ("e_prob.png", "e_mask.png"):
        shutil.copyfile(scratch / "b_mask.png", out / name)
    broken.write_bytes(b"not a png")

    report = predict_files(None, [a, b, broken], out, threshold=0.6, overwrite=True, measure=True, **options)
    assert [path for path, _ in report.failures] == [broken]
    predict_files(None, [a, b, broken], fresh, threshold=0.6, measure=True, **options)
    assert _files(out, leaving=("notes.txt", "e_prob.png", "e_mask.png")) == _files(fresh)
    assert (out / "notes.txt").read_text() == "mine" and (out / "e_prob.png").exists() and (out / "e_mask.png").exists()


class _Logged:
    """`LocalFiles`, logging what `write_photograph` does to the output folder (``(action, name)``), and
    failing the write of the file named `fail_on` with a full disk."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.log, self.fail_on = [], fail_on

    def __getattr__(self, name):
        return getattr(LocalFiles, name)

    def remove(self, path):
        self.log.append(("remove", Path(path).name))
        LocalFiles.remove(path)

    def write_png(self, path, pixels):
        if Path(path).name == self.fail_on:
            raise OSError(28, "No space left on device", path)
        self.log.append(("write", Path(path).name))
        LocalFiles.write_png(path, pixels)

    def write_text(self, path, text):
        self.log.append(("write", Path(path).name))
        LocalFiles.write_text(path, text)


def test_a_photograph_is_written_then_marked_and_done_only_by_its_marker_and_files(tmp_path, images):
    """`write_photograph`, which both engines call: the marker goes first and comes back last, so that a run
    killed at any point leaves no photograph marked without its files; `DoneCheck` needs both."""
    out = tmp_path / "out"
    out.mkdir()
    work = PhotographWork(fov="none", local_model=False)
    image = images["a"]
    region = np.ones(image.shape[:2], dtype=bool)
    maps = work.finish(image, _green(image), Located(region, region, "whole image"))
    (out / "a_overlay.png").write_bytes(b"an overlay of an earlier run")
    files = _Logged()
    written = write_photograph(out, "a", maps, files=files)
    assert written == [str(out / "a_prob.png"), str(out / "a_mask.png")]
    marker = photograph_marker("a")
    assert files.log == [("remove", marker), ("remove", "a_overlay.png"), ("write", "a_prob.png"),
                         ("write", "a_mask.png"), ("write", marker)]
    assert json.loads((out / marker).read_text())["files"] == ["a_prob.png", "a_mask.png"]
    done = DoneCheck.of(out, work)
    assert done("a") and not done("b")
    (out / "a_mask.png").unlink()  # a marker without its files
    assert not done("a")
    write_photograph(out, "a", maps)
    (out / marker).unlink()  # files without their marker: a run killed before it
    assert not done("a")

    full = tmp_path / "full"
    full.mkdir()
    with pytest.raises(OSError, match="No space left"):
        write_photograph(full, "a", maps, files=_Logged(fail_on="a_mask.png"))
    assert list(full.iterdir()) == []  # never some files without the others, nor a marker


def test_an_input_with_the_name_of_another_inputs_output_is_refused(tmp_path, images):
    """`predict photos --output photos --overlay` where photos holds eye.png and the user's eye_overlay.png:
    predicting eye.png would replace eye_overlay.png (or, without --overlay, remove it as stale)."""
    eye, overlay = (_save(tmp_path / "photos" / name, images["a"]) for name in ("eye.png", "eye_overlay.png"))
    with pytest.raises(InputError, match=rf"^input {overlay} has the name of the overlay of input {eye} in the "
                                         rf"output folder {tmp_path / 'photos'}/, which predicting it would"):
        predict_files(None, [eye, overlay], f"{tmp_path / 'photos'}/", predictor=_green, progress=False)
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["eye.png", "eye_overlay.png"]
    predict_files(None, [eye, overlay], tmp_path / "out", predictor=_green, progress=False)  # elsewhere: fine


def test_failures_text_keeps_the_rows_of_photographs_not_handled():
    previous = failures_text(None, [("in/x.png", "x: bad"), ("gs://b/y.ppm.gz", "y: bad")], ["x", "y"])
    assert previous == "name,path,reason\nx,in/x.png,x: bad\ny,gs://b/y.ppm.gz,y: bad\n"
    assert failures_text(previous, [("z.jpg", "z: bad")], ["z"]) == previous + "z,z.jpg,z: bad\n"
    assert failures_text(previous, [("other/x.png", "x: worse")], ["x", "y"]) == \
        "name,path,reason\nx,other/x.png,x: worse\n"  # y succeeded
    assert failures_text(previous, [], ["x", "y"]) is None
    assert failures_text("path,reason\na.png,bad\n", [], []) is None  # not our columns: nothing kept


def test_outputs_that_record_no_settings_are_not_resumed(tmp_path, images):
    from keras_vessel.errors import OutputError

    out = tmp_path / "out"
    for name in ("old_prob.png", "old_mask.png"):  # what a keras-vessel before the record left
        _save(out / name, images["a"][..., 0])
    settings = {"model": {"predictor": "p"}, "heads": "mean", "tile_size": None, "tta": "none", "scale": "auto",
                "fov": "none", "threshold": 0.4}
    with pytest.raises(OutputError, match=r"holds outputs of keras-vessel predict \(old_mask.png, old_overlay.png, "
                                          r"old_prob.png\) that do not record the settings that made them"):
        claim_output(out, settings)
    claim_output(out, settings, overwrite=True)  # files the marker does not list may be the user's: kept
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "old_mask.png", "old_prob.png"]
    claim_output(out, settings)


def test_overlay_paints_the_mask_on_the_photograph(tmp_path, images):
    image = images["a"]
    path = _save(tmp_path / "in" / "a.png", image)
    out = tmp_path / "out"
    report = predict_files(None, [path], out, fov="none", threshold=0.4, predictor=_green, progress=False,
                           overlay=True)  # fmt: skip
    assert [p.name for p in report.written] == ["a_prob.png", "a_mask.png", "a_overlay.png"]
    overlay = _read(out / "a_overlay.png").astype(np.int64)
    mask = image[..., 1] / 255.0 >= 0.4
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(overlay[~mask], image[~mask])  # the photograph where there is no vessel
    expected = np.rint(image[mask] + 0.6 * (np.array(OVERLAY_COLOUR) - image[mask].astype(float)))
    np.testing.assert_array_equal(overlay[mask], expected)  # 60 % of the way to the colour on vessels
    with pytest.raises(ValueError, match=r"differ in size"):
        vessel_overlay(image, mask[:, :-1])


def test_otsu_threshold_inside_fov_file(tmp_path, images):
    image = images["a"]
    path = _save(tmp_path / "a.png", image)
    fov = np.zeros(image.shape[:2], dtype=bool)
    fov[:, :12] = True
    fov_file = _save(tmp_path / "fov.png", fov.astype(np.uint8) * 255)
    predict_files(None, [path], tmp_path / "out", fov=fov_file, threshold="otsu", predictor=_green,
                  progress=False)  # fmt: skip

    prob = _green(image)
    expected = (prob >= threshold_otsu(prob[fov])) & fov  # skimage's Otsu on the FOV pixels only
    np.testing.assert_array_equal(_read(tmp_path / "out" / "a_mask.png") > 0, expected)
    written = _read(tmp_path / "out" / "a_prob.png")
    assert not written[~fov].any() and np.array_equal(written[fov], image[..., 1][fov].astype(np.int64) * 257)
    assert 0 < expected.sum() < fov.sum()  # the threshold split the FOV


def test_auto_fov_zeroes_the_dark_surround(tmp_path):
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 26**2
    image = np.zeros((64, 64, 3), np.uint8)
    image[disc] = (200, 180, 90)
    path = _save(tmp_path / "fundus.png", image)
    predict_files(None, [path], tmp_path / "out", predictor=_green, threshold=0.5, progress=False)
    prob = _read(tmp_path / "out" / "fundus_prob.png")
    mask = _read(tmp_path / "out" / "fundus_mask.png")
    assert prob[0, 0] == 0 and prob[32, 32] == 180 * 257 and mask[32, 32] == 255
    assert not mask[~disc].any()


def test_continues_past_bad_files(tmp_path, images):
    folder = tmp_path / "in"
    good = _save(folder / "a.png", images["a"])
    gz = folder / "b.png.gz"
    gz.write_bytes(gzip.compress(good.read_bytes()))
    broken = folder / "broken.png"
    broken.write_bytes(b"not a png")
    wrong_shape = _save(folder / "wrong.png", images["b"])  # the only 13-row image

    def predictor(image):
        return np.zeros((2, 2)) if image.shape[0] == 13 else _green(image)

    report = predict_files(None, [good, gz, broken, wrong_shape], tmp_path / "out",
                           fov="none", predictor=predictor, progress=False)  # fmt: skip

    failed = dict(report.failures)
    assert list(failed) == [broken, wrong_shape]
    assert "broken.png" in failed[broken]
    assert "predictor must return an (H, W) probability map" in failed[wrong_shape]
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == ["a_mask.png", "a_prob.png", "b_mask.png", "b_prob.png"]
    np.testing.assert_array_equal(_read(tmp_path / "out" / "b_prob.png"), _read(tmp_path / "out" / "a_prob.png"))


def test_a_raising_predictor_fails_only_that_file(tmp_path, images):
    paths = [_save(tmp_path / f"{k}.png", v) for k, v in images.items()]

    def predictor(image):
        if image.shape[0] == 13:
            raise RuntimeError("server exploded")
        return _green(image)

    report = predict_files(None, paths, tmp_path / "out", fov="none", predictor=predictor, progress=False)
    assert report.failures == [(paths[1], f"{paths[1]}: unexpected RuntimeError: server exploded")]
    assert [p.name for p in report.written] == ["a_prob.png", "a_mask.png"]


def test_does_not_modify_the_predictor_input(tmp_path, images):
    path = _save(tmp_path / "a.png", images["a"])
    seen = []

    def vandal(image):
        seen.append(image)
        prob = _green(image)
        image[...] = 0  # must not leak into the FOV or the written files
        return prob

    predict_files(None, [path], tmp_path / "out", threshold=0.5, predictor=vandal, fov="none", progress=False)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "a_prob.png"), images["a"][..., 1].astype(np.int64) * 257)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model_path": "m.keras", "predictor": _green}, ValueError, r"exactly one of `model_path`"),
        ({"model_path": None, "predictor": None}, ValueError, r"exactly one of `model_path` .* predictor=None"),
        ({"predictor": "fast"}, TypeError, r"`predictor` must be callable"),
        ({"threshold": 1.5}, ValueError, r"`threshold` must be a number in \(0, 1\) or 'otsu'; got 1.5"),
        ({"threshold": "train"}, ValueError, r"`threshold` must be .* got 'train'"),
        ({"model_path": "m.keras", "predictor": None, "heads": "both"}, ValueError,
         r"`heads` must be one of \['mean', 'segment', 'pixel'\]; got 'both'"),
        ({"tile_size": 0, "model_path": "m.keras", "predictor": None}, ValueError, r"`tile_size` must be a positive int"),
        ({"tile_size": 64}, ValueError, r"with `predictor` leave them at their defaults; .* tile_size=64"),
        ({"fov": "nowhere.png"}, FileNotFoundError, r"`fov` must be 'auto', 'none' or an existing mask file; nowhere"),
        ({"inputs": []}, ValueError, r"`inputs` is empty"),
        ({"inputs": "a.png"}, TypeError, r"`inputs` must be a sequence of image paths"),
    ],
)  # fmt: skip
def test_rejects_bad_arguments_before_writing(tmp_path, images, kwargs, error, match):
    path = _save(tmp_path / "a.png", images["a"])
    options = {"model_path": None, "inputs": [path], "predictor": _green, **kwargs}
    with pytest.raises(error, match=match):
        predict_files(options.pop("model_path"), options.pop("inputs"), tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- predict_files with a .keras model


@pytest.fixture(scope="module")
def model_path(tiny_model_file) -> Path:
    return tiny_model_file(base_filters=4, depth=2, seed=1)


def test_local_model_matches_predict_probability(model_path, tmp_path, images):
    from keras_vessel.models.inference import load_inference_model, predict_probability

    paths = [_save(tmp_path / f"{k}.png", v) for k, v in images.items()]
    # The call demo.py makes.
    report = predict_files(model_path, paths, tmp_path / "out", threshold=0.5, heads="pixel", progress=False,
                           fov="none")  # fmt: skip
    assert report.failures == []
    model = load_inference_model(model_path, heads="pixel")
    for key, image in images.items():
        prob = predict_probability(model, image)
        written = _read(tmp_path / "out" / f"{key}_prob.png").astype(np.float64) / 65535
        assert np.abs(written - prob).max() <= 0.5 / 65535 + 1e-6
        clear = np.abs(prob - 0.5) > 1e-6
        np.testing.assert_array_equal((_read(tmp_path / "out" / f"{key}_mask.png") > 0)[clear], (prob >= 0.5)[clear])
        assert 0 < (prob > 0).mean()


def test_missing_model_raises_before_writing(tmp_path, images):
    path = _save(tmp_path / "a.png", images["a"])
    with pytest.raises(FileNotFoundError, match=r"model file .*nope\.keras does not exist"):
        predict_files(tmp_path / "nope.keras", [path], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
