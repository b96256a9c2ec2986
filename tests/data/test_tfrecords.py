"""Prepared records: round trip, the same bytes in any process, resumable shards, manifest, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_vessel.data.datasets import open_dataset
from keras_vessel.data.segments import build_id_mask, skeleton_tube
from keras_vessel.data.tfrecords import PrepareError, read_manifest, read_records, write_dataset
from keras_vessel.io import file_sha256

SYNTHETIC = {"count": 3, "size": 96, "seed": 5}
# `prepared` again, in another process: python -c PREPARE OUT WORKERS
PREPARE = f"""
import sys
from keras_vessel.data.datasets import open_dataset
from keras_vessel.data.tfrecords import write_dataset
specs = open_dataset("synthetic", None, "training", **{SYNTHETIC!r})
write_dataset(specs, sys.argv[1], dataset="synthetic", split="training", images_per_shard=2,
              workers=int(sys.argv[2]), show_progress=False)
"""


@pytest.fixture(scope="module")
def specs():
    return open_dataset("synthetic", None, "training", **SYNTHETIC)


@pytest.fixture(scope="module")
def prepared(specs, tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    manifest = write_dataset(specs, out, dataset="synthetic", split="training", images_per_shard=2,
                             show_progress=False)
    return out, manifest


def test_round_trip_equals_the_sources(specs, prepared):
    out, _ = prepared
    records = {r["name"].numpy().decode(): r for r in read_records(out)}
    assert sorted(records) == [spec.name for spec in specs]
    for spec in specs:
        sample, record = spec.load(), records[spec.name]
        np.testing.assert_array_equal(record["image"].numpy(), sample.image)
        np.testing.assert_array_equal(record["label"].numpy() > 0, sample.label & sample.fov)
        np.testing.assert_array_equal(record["fov"].numpy() > 0, sample.fov)
        np.testing.assert_array_equal(record["id_mask"].numpy(), build_id_mask(sample.label & sample.fov, sample.fov))
        np.testing.assert_array_equal(record["tube"].numpy() > 0, skeleton_tube(sample.label & sample.fov))
        assert record["clahe"].numpy().shape == sample.image.shape
        assert record["id_mask"].dtype.name == "int32"


@pytest.mark.slow
def test_the_same_images_are_the_same_bytes_in_any_process_with_any_workers(prepared, tmp_path):
    """Preparing the same input in two processes gave shards of different SHA-256s: protobuf wrote the features
    (a map) in an order that differs between processes (whatever PYTHONHASHSEED). Here the fixture's folder
    (this process, one worker) and the same images prepared in two other processes with other hash seeds, one
    with 1 worker, one with 2, must hold the same files, byte for byte."""
    folders = {workers: tmp_path / f"workers-{workers}" for workers in (1, 2)}
    processes = [subprocess.Popen([sys.executable, "-c", PREPARE, str(folder), str(workers)], text=True,
                                  env=dict(os.environ, PYTHONHASHSEED=str(10 + workers)), stderr=subprocess.PIPE)
                 for workers, folder in folders.items()]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    out, _ = prepared
    expected = _checksums(out)
    assert len(expected) == 5  # 2 shards, their sidecars, the manifest
    for workers, folder in folders.items():
        assert _checksums(folder) == expected, f"prepared with {workers} worker(s)"


def test_a_derived_fov_is_prepared_the_same_by_workers_and_in_this_process(tmp_path):
    """The folder reader without masks derives each FOV (as CHASE_DB1's, STARE's, ORVS's readers): its TensorFlow
    step is measured in this process and the rest done in the workers, with the same bytes as one worker."""
    from helpers import folder_of_photographs

    from keras_vessel.data.preprocessing import derive_fov

    specs = open_dataset("folder", folder_of_photographs(tmp_path / "photos", **SYNTHETIC))
    for workers in (1, 2):
        write_dataset(specs, tmp_path / f"workers-{workers}", dataset="folder", split="all", images_per_shard=2,
                      workers=workers, show_progress=False)
    assert _checksums(tmp_path / "workers-2") == _checksums(tmp_path / "workers-1")
    for record in read_records(tmp_path / "workers-2"):
        image = record["image"].numpy()
        np.testing.assert_array_equal(record["fov"].numpy() > 0, derive_fov(image))


def test_with_workers_this_process_encodes_no_png_and_writes_the_same_bytes(specs, prepared, tmp_path, monkeypatch):
    """`prepare --workers 2` was barely faster than 1: this process PNG-encoded every image the workers had
    prepared. The workers encode them now (`encode`); this process only measures each FOV diameter and writes
    the records, byte for byte those of one worker in this process (the `prepared` fixture)."""
    import cv2

    def no_encoding_here(*args, **kwargs):
        raise AssertionError("the writing process PNG-encoded an image")

    monkeypatch.setattr(cv2, "imencode", no_encoding_here)  # here only: the spawned workers import their own cv2
    write_dataset(specs, tmp_path, dataset="synthetic", split="training", images_per_shard=2, workers=2,
                  show_progress=False)
    out, _ = prepared
    assert _checksums(tmp_path) == _checksums(out)


def _checksums(folder) -> dict[str, str]:
    return {path.name: file_sha256(path) for path in sorted(folder.glob("*")) if path.suffix in (".gz", ".json")}


def test_manifest_describes_the_images(specs, prepared):
    out, manifest = prepared
    assert read_manifest(out) == manifest
    assert manifest["dataset"] == "synthetic" and manifest["split"] == "training"
    assert [image["name"] for image in manifest["images"]] == [spec.name for spec in specs]
    assert len(manifest["shards"]) == 2
    samples = [spec.load() for spec in specs]
    green = np.concatenate([s.image[..., 1][s.fov] for s in samples]).astype(np.float64)
    assert manifest["statistics"]["green_mean"] == pytest.approx(green.mean())
    assert manifest["statistics"]["green_std"] == pytest.approx(green.std(), rel=1e-6)
    rgb = np.concatenate([s.image[s.fov] for s in samples]).astype(np.float64)
    np.testing.assert_allclose(manifest["statistics"]["rgb_mean"], rgb.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(manifest["statistics"]["rgb_std"], rgb.std(axis=0), rtol=1e-6)
    assert manifest["statistics"]["rgb_mean"][1] == manifest["statistics"]["green_mean"]
    for image, sample in zip(manifest["images"], samples):
        ids = build_id_mask(sample.label & sample.fov, sample.fov)
        assert image["segments"] == np.abs(ids).max()
        assert (image["height"], image["width"]) == sample.label.shape


def test_rerun_skips_complete_shards_and_redoes_missing_ones(specs, tmp_path):
    write_dataset(specs, tmp_path, dataset="synthetic", split="training", images_per_shard=2, show_progress=False)
    shards = sorted(tmp_path.glob("*.tfrecord.gz"))
    first_mtime = shards[0].stat().st_mtime_ns
    shards[1].unlink()  # as if the run had been killed before the last shard was renamed
    calls = []

    class Counting:
        def __init__(self, spec):
            self.name, self._spec = spec.name, spec

        def load(self):
            calls.append(self.name)
            return self._spec.load()

        def fingerprint(self):
            return self._spec.fingerprint()

    write_dataset([Counting(s) for s in specs], tmp_path, dataset="synthetic", split="training",
                  images_per_shard=2, show_progress=False)
    assert calls == [specs[2].name]
    assert shards[0].stat().st_mtime_ns == first_mtime
    assert shards[1].exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_rerun_redoes_shards_whose_sidecar_lacks_a_statistic(specs, tmp_path):
    """Records prepared before per-channel sums existed gain them by running prepare again."""
    write_dataset(specs, tmp_path, dataset="synthetic", split="training", images_per_shard=2, show_progress=False)
    expected = read_manifest(tmp_path)["statistics"]
    shards = sorted(tmp_path.glob("*.tfrecord.gz"))
    second_mtime = shards[1].stat().st_mtime_ns
    sidecar = shards[0].with_name(shards[0].name + ".json")
    old = json.loads(sidecar.read_text())
    for image in old["images"]:
        del image["rgb_sum"], image["rgb_sq_sum"]
    sidecar.write_text(json.dumps(old))

    manifest = write_dataset(specs, tmp_path, dataset="synthetic", split="training", images_per_shard=2,
                             show_progress=False)
    assert manifest["statistics"] == expected
    assert shards[1].stat().st_mtime_ns == second_mtime
    assert all("rgb_sum" in image for image in json.loads(sidecar.read_text())["images"])


def test_failures_name_the_image_and_leave_no_finished_looking_file(tmp_path):
    class Broken:
        name = "broken_0001"

        def load(self):
            raise OSError("disk on fire")

        def fingerprint(self):
            return "0" * 64

    with pytest.raises(PrepareError, match="preparing 'broken_0001' failed: OSError: disk on fire"):
        write_dataset([Broken()], tmp_path, dataset="synthetic", split="training", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_read_manifest_errors(tmp_path, prepared):
    with pytest.raises(PrepareError, match="manifest.json not found.*run `keras-vessel prepare"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(PrepareError, match="is not valid JSON"):
        read_manifest(tmp_path)
    out, manifest = prepared
    broken = dict(manifest, shards=manifest["shards"] + ["gone.tfrecord.gz"])
    (tmp_path / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(PrepareError, match="shards listed in the manifest are missing: .*gone.tfrecord.gz"):
        read_manifest(tmp_path)
    with pytest.raises(PrepareError, match="no images to prepare"):
        write_dataset([], tmp_path / "empty", dataset="synthetic", split="test")


def test_labels_marking_no_vessel_are_named_in_one_warning_also_when_their_shards_are_reused(tmp_path, caplog):
    """A label without a vessel inside its FOV (a blank or mislabelled file) is prepared, as a test split may hold
    one, but named in one warning, counted against the images; a re-run that reuses the shards warns again."""
    import logging

    from helpers import folder_of_photographs
    from PIL import Image

    photos = folder_of_photographs(tmp_path / "photos", **SYNTHETIC)
    blank = sorted((photos / "labels").iterdir())[1]
    Image.fromarray(np.zeros_like(np.asarray(Image.open(blank)))).save(blank)
    specs = open_dataset("folder", photos)
    for run in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="keras_vessel.data.tfrecords"):
            manifest = write_dataset(specs, tmp_path / "records", dataset="folder", split="all", images_per_shard=2,
                                     show_progress=False)
        warnings = [r.getMessage() for r in caplog.records if "mark no vessel" in r.getMessage()]
        assert warnings == [f"1 of 3 labels mark no vessel inside their field of view ({blank.stem}): trained on, "
                            "they teach that there are none; check that their vessels are white on black, or "
                            "leave them out"], (run, warnings)
    fractions = {image["name"]: image["vessel_fraction"] for image in manifest["images"]}
    assert fractions[blank.stem] == 0.0 and all(v > 0 for name, v in fractions.items() if name != blank.stem)
