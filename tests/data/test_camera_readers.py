"""The readers of issue 30's cameras: ORVS, LES-AV and a one-split HRF copy.

Each oddity of a release (its SOURCE.md) has a stated rule in its reader; the
tiny layouts below build that oddity and check the rule, and the real-data
tests (skipped without ../shared/data) check the releases as published.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import fundus_disc

from keras_vessel.data.datasets import DatasetError, open_dataset
from keras_vessel.data.datasets.orvs import LABEL_CUT

SIZE = 64



def _fundus(seed: int, shape=(SIZE, SIZE)) -> np.ndarray:
    return fundus_disc(seed, shape)


def _lines(shape=(SIZE, SIZE)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[shape[0] // 2 - 2 : shape[0] // 2 + 2, 10:-10] = 255
    label[10:-10, shape[1] // 3 - 1 : shape[1] // 3 + 2] = 255
    return label


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _make_orvs(root: Path, *, short_label: tuple[int, int] = (0, 0)) -> Path:
    """Two training and one test photograph; the labels are lossy JPEGs of RGB lines."""
    for folder, stems in (("Train", ("2012", "2063")), ("Test", ("2014",))):
        for number, stem in enumerate(stems):
            _save(root / folder / "Original" / "Images" / f"{stem}.jpg", _fundus(number), quality=95)
            label = _lines()
            if stem == "2063":
                label = label[: SIZE - short_label[0], : SIZE - short_label[1]]
            _save(root / folder / "Original" / "Labels" / f"{stem}.jpg", np.dstack([label] * 3), quality=60)
    return root


def test_orvs_fov_is_measured_apart_from_loading(tmp_path):
    """Its derived FOV's TensorFlow step is the spec's `measure` (prepare's main process runs it, so that its
    workers import no TensorFlow): the same sample either way; none with a fixed threshold."""
    root = _make_orvs(tmp_path / "ORVS")
    spec = open_dataset("orvs", root, "test")[0]
    apart, here = spec.load(measured=spec.measure()), spec.load()
    np.testing.assert_array_equal(apart.fov, here.fov)
    assert here.fov.any() and not here.fov.all()
    assert open_dataset("orvs", root, "test", fov_threshold=20)[0].measure is None


def test_orvs_splits_follow_its_folders(tmp_path):
    root = _make_orvs(tmp_path / "ORVS")
    assert [s.name for s in open_dataset("orvs", root, "training")] == ["2012", "2063"]
    assert [s.name for s in open_dataset("orvs", root, "test")] == ["2014"]
    assert [s.name for s in open_dataset("orvs", root)] == ["2012", "2063", "2014"]


def test_orvs_jpeg_label_is_cut_at_127(tmp_path):
    """The reader's label is the decoded JPEG's grey level > 127, which `read_mask` would refuse."""
    root = _make_orvs(tmp_path / "ORVS")
    sample = open_dataset("orvs", root, "test")[0].load()
    decoded = np.asarray(Image.open(root / "Test" / "Original" / "Labels" / "2014.jpg").convert("RGB"))
    assert len(np.unique(decoded)) > 2  # lossy: not binary on disk
    np.testing.assert_array_equal(sample.label, decoded.max(axis=2) > LABEL_CUT)
    assert (sample.label == (_lines() > 0)).mean() > 0.99
    assert sample.fov.dtype == bool and 0.4 < sample.fov.mean() < 0.7  # derived: no masks in ORVS


@pytest.mark.parametrize("short", [(0, 1), (1, 0), (1, 1)])
def test_orvs_label_one_pixel_short_is_padded_at_right_and_bottom(tmp_path, short):
    root = _make_orvs(tmp_path / "ORVS", short_label=short)
    sample = open_dataset("orvs", root, "training")[1].load()
    assert sample.label.shape == (SIZE, SIZE)
    truth = _lines() > 0
    kept = (slice(0, SIZE - short[0]), slice(0, SIZE - short[1]))
    assert (sample.label[kept] == truth[kept]).mean() > 0.99  # aligned at the top-left, not shifted
    if short[1]:
        assert not sample.label[:, -1].any()
    if short[0]:
        assert not sample.label[-1, :].any()


def test_orvs_label_two_pixels_short_is_an_error(tmp_path):
    root = _make_orvs(tmp_path / "ORVS", short_label=(0, 2))
    spec = open_dataset("orvs", root, "training")[1]
    with pytest.raises(DatasetError, match=r"size mismatch: .*Labels/2063\.jpg is 62x64 \(WxH\) but its image "
                                           r".*Images/2063\.jpg is 64x64; only a label up to 1 px short is padded"):
        spec.load()


def test_orvs_missing_label_and_wrong_layout(tmp_path):
    root = _make_orvs(tmp_path / "ORVS")
    (root / "Test" / "Original" / "Labels" / "2014.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing ORVS label: expected .*Test/Original/Labels/2014\.jpg"):
        open_dataset("orvs", root, "test")
    with pytest.raises(DatasetError, match=r"Original/Images is not a folder; expected <root>/Train/Original"):
        open_dataset("orvs", tmp_path)


def _make_les_av(root: Path, ids=(111, 12, 34)) -> Path:
    for number in ids:
        shape = (SIZE + 8, SIZE + 16) if number == 34 else (SIZE, SIZE + 8)
        _save(root / "images" / f"{number}.png", _fundus(number, shape))
        label = np.zeros(shape, np.uint8)
        label[shape[0] // 2, 5:-5] = 255
        _save(root / "vessel-segmentations" / f"{number}.png", label)
        mask = Image.fromarray((np.arange(shape[1])[None, :] < shape[1] - 4).repeat(shape[0], 0).astype(np.uint8),
                               mode="P")
        mask.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        mask.save(root / "masks" / f"{number}_mask.gif")
    return root


def test_les_av_reads_all_sorted_by_number_with_its_masks(tmp_path):
    root = _make_les_av(tmp_path / "LES-AV")
    specs = open_dataset("les_av", root)
    assert [s.name for s in specs] == ["12", "34", "111"]
    sample = specs[1].load()
    assert sample.image.shape == (SIZE + 8, SIZE + 16, 3)
    assert sample.fov[:, : SIZE + 12].all() and not sample.fov[:, SIZE + 12 :].any()  # palette index 1 = inside
    assert sample.label.sum() == SIZE + 16 - 10


@pytest.mark.parametrize("split", ["training", "test"])
def test_les_av_has_no_split(tmp_path, split):
    root = _make_les_av(tmp_path / "LES-AV")
    with pytest.raises(DatasetError, match=rf"LES-AV has no published split: split='{split}' is not offered"):
        open_dataset("les_av", root, split)


def test_les_av_missing_mask(tmp_path):
    root = _make_les_av(tmp_path / "LES-AV")
    (root / "masks" / "34_mask.gif").unlink()
    with pytest.raises(DatasetError, match=r"missing LES-AV FOV mask: expected .*masks/34_mask\.gif"):
        open_dataset("les_av", root)


def test_hrf_copy_of_one_split_says_which_it_holds(tmp_path):
    """../shared/data/HRF holds images 01-05 only: `--split test` names that instead of preparing nothing."""
    root = tmp_path / "HRF"
    for category in ("dr", "g", "h"):
        _save(root / "images" / f"01_{category}.jpg", _fundus(1))
        _save(root / "manual1" / f"01_{category}.tif", _lines())
        _save(root / "mask" / f"01_{category}_mask.tif", np.full((SIZE, SIZE, 3), 255, np.uint8))
    assert len(open_dataset("hrf", root, "training")) == 3
    with pytest.raises(DatasetError, match=r"no HRF test images \(06-15 of each category\) in .*images: this copy "
                                           r"holds only the training split \(01-05\); use --split training or all"):
        open_dataset("hrf", root, "test")


# --- the releases in ../shared/data -------------------------------------------------------------


@pytest.mark.data
@pytest.mark.slow
def test_orvs_real_release(orvs_root):
    training, test = open_dataset("orvs", orvs_root, "training"), open_dataset("orvs", orvs_root, "test")
    assert (len(training), len(test)) == (41, 8)
    for spec in [s for s in training if s.name == "2063"] + training[::10] + test[::4]:
        sample = spec.load()
        assert sample.image.shape == (1444, 1444, 3) and sample.label.shape == (1444, 1444)
        assert 0.015 < sample.label.mean() < 0.09  # SOURCE.md: 2.0-8.4 % foreground
        assert 0.65 < sample.fov.mean() < 0.8
        assert (sample.label & ~sample.fov).sum() < 0.03 * sample.label.sum()


@pytest.mark.data
def test_les_av_real_release(les_av_root):
    specs = open_dataset("les_av", les_av_root)
    assert len(specs) == 22
    sizes = {}
    for spec in specs[::4] + [s for s in specs if s.name == "34"]:
        sample = spec.load()
        sizes[spec.name] = sample.image.shape[:2]
        assert 0.03 < sample.label.mean() < 0.12
        assert 0.6 < sample.fov.mean() < 0.8
        assert (sample.label & ~sample.fov).sum() < 0.01 * sample.label.sum()
    assert sizes["34"] == (1958, 2196) and sizes["12"] == (1444, 1620)


@pytest.mark.data
def test_hrf_shared_copy_is_the_training_split(hrf_root):
    assert [s.name for s in open_dataset("hrf", hrf_root, "training")] == [
        f"{n:02d}_{c}" for n in range(1, 6) for c in ("dr", "g", "h")]
    with pytest.raises(DatasetError, match="this copy holds only the training split"):
        open_dataset("hrf", hrf_root, "test")
