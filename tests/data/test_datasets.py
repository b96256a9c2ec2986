"""Tests for the dataset readers: real DRIVE/CHASE_DB1, and tiny layouts written to tmp_path."""

import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import fundus_disc

from keras_vessel.data.datasets import DATASETS, DatasetError, Sample, SampleSpec, open_dataset
from keras_vessel.data.preprocessing import derive_fov

H, W = 40, 48


# --- helpers writing tiny images in the published formats -----------------------------------



def _fundus(seed: int, shape=(H, W)) -> np.ndarray:
    return fundus_disc(seed, shape)


def _label(seed: int, shape=(H, W)) -> np.ndarray:
    label = np.zeros(shape, bool)
    label[shape[0] // 2 - 1 : shape[0] // 2 + 1, 8:-8] = True
    label[8:-8, 10 + seed % 20] = True
    return label


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    Image.fromarray(array).save(path, **kwargs)
    return path


def _save_palette_gif(path: Path, mask: np.ndarray) -> Path:
    """A mask like DRIVE's manual GIFs: palette indices 0/1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.save(path)
    return path


def _save_ppm_gz(path: Path, array: np.ndarray) -> Path:
    plain = path.with_suffix("")  # drop .gz
    _save(plain, array)
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return path


def _make_drive(root: Path, numbers=(("training", (21, 22)), ("test", (1, 2)))) -> Path:
    for split, nums in numbers:
        for n in nums:
            _save(root / split / "images" / f"{n:02d}_{split}.tif", _fundus(n))
            _save_palette_gif(root / split / "1st_manual" / f"{n:02d}_manual1.gif", _label(n))
            _save(root / split / "mask" / f"{n:02d}_{split}_mask.gif", np.ones((H, W), bool))
            if split == "test":
                _save_palette_gif(root / split / "2nd_manual" / f"{n:02d}_manual2.gif", _label(n + 1))
    return root


def _make_stare(root: Path, stems=("im0001", "im0002", "im0003"), gz=(True, False, True)) -> Path:
    for i, (stem, zipped) in enumerate(zip(stems, gz)):
        if zipped:
            _save_ppm_gz(root / "stare-images" / f"{stem}.ppm.gz", _fundus(i))
            _save_ppm_gz(root / "labels-ah" / f"{stem}.ah.ppm.gz", np.repeat(_label(i)[..., None] * np.uint8(255), 3, 2))
            _save_ppm_gz(root / "labels-vk" / f"{stem}.vk.ppm.gz", np.repeat(_label(i + 1)[..., None] * np.uint8(255), 3, 2))
        else:
            _save(root / "stare-images" / f"{stem}.ppm", _fundus(i))
            _save(root / "labels-ah" / f"{stem}.ah.ppm", np.repeat(_label(i)[..., None] * np.uint8(255), 3, 2))
            _save(root / "labels-vk" / f"{stem}.vk.ppm", np.repeat(_label(i + 1)[..., None] * np.uint8(255), 3, 2))
    return root


def _rgb_mask(mask: np.ndarray) -> np.ndarray:
    rgb = np.zeros(mask.shape + (3,), np.uint8)
    rgb[mask, 1] = 255  # only the green channel set: "any channel > 0" must catch it
    return rgb


def _make_hrf(root: Path, numbers=(1, 5, 6), categories=("dr", "g", "h")) -> Path:
    extensions = {"dr": "JPG", "g": "jpg", "h": "jpg"}
    for n in numbers:
        for category in categories:
            stem = f"{n:02d}_{category}"
            _save(root / "images" / f"{stem}.{extensions[category]}", _fundus(n), format="JPEG", quality=95)
            _save(root / "manual1" / f"{stem}.tif", _label(n))
            _save(root / "mask" / f"{stem}_mask.tif", _rgb_mask(np.ones((H, W), bool)))
    return root


def _make_folder(root: Path, stems=("a", "b"), label_suffix="_label", masks=True) -> Path:
    for i, stem in enumerate(stems):
        _save(root / "images" / f"{stem}.png", _fundus(i))
        _save(root / "labels" / f"{stem}{label_suffix}.png", _label(i))
        if masks:
            _save(root / "masks" / f"{stem}_mask.png", np.ones((H, W), bool))
    return root


def _load_all(specs):
    return [spec.load() for spec in specs]


def _check_sample(sample: Sample, shape) -> None:
    assert sample.image.shape == shape + (3,) and sample.image.dtype == np.uint8
    for mask in (sample.label, sample.fov) + ((sample.second_label,) if sample.second_label is not None else ()):
        assert mask.shape == shape and mask.dtype == bool


# --- real DRIVE ----------------------------------------------------------------------------


@pytest.mark.data
def test_drive_real_layout(drive_root):
    training = open_dataset("drive", drive_root, "training")
    test = open_dataset("drive", drive_root, "test")
    everything = open_dataset("drive", drive_root)
    assert [s.name for s in training] == [f"{n}_training" for n in range(21, 41)]
    assert [s.name for s in test] == [f"{n:02d}_test" for n in range(1, 21)]
    assert [s.name for s in everything] == [s.name for s in training + test]
    for spec in everything:
        sample = spec.load()
        assert sample.name == spec.name
        _check_sample(sample, (584, 565))
        assert (sample.second_label is not None) == spec.name.endswith("_test")
        assert 0.65 < sample.fov.mean() < 0.75
        assert 0.05 < sample.label.mean() < 0.2
        assert (sample.label & ~sample.fov).sum() < 0.01 * sample.label.sum()
        if sample.second_label is not None:
            agreement = (sample.label == sample.second_label)[sample.fov].mean()
            assert 0.9 < agreement < 1.0  # two observers agree on most, not all, pixels


# --- real CHASE_DB1 ------------------------------------------------------------------------


@pytest.mark.data
def test_chase_db1_real_layout_split_and_derived_fov(chase_root):
    training = open_dataset("chase_db1", chase_root, "training")
    test = open_dataset("chase_db1", chase_root, "test")
    assert len(open_dataset("chase_db1", chase_root)) == 28
    expected = [f"Image_{n:02d}{side}" for n in range(1, 15) for side in "LR"]
    assert [s.name for s in training] == expected[:20]
    assert [s.name for s in test] == expected[20:]
    for spec in training[::5] + test[::3]:
        sample = spec.load()
        _check_sample(sample, (960, 999))
        assert sample.second_label is not None
        fov = sample.fov
        assert 0.55 < fov.mean() < 0.8
        assert fov[430:530, 450:550].all()  # the centre of the image is inside
        for corner in (fov[:60, :60], fov[:60, -60:], fov[-60:, :60], fov[-60:, -60:]):
            assert not corner.any()
        assert (sample.label & ~fov).sum() < 0.02 * sample.label.sum()


# --- DRIVE layout written here: every bad input -----------------------------------------------


def test_drive_tiny_layout_reads_palette_labels(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    specs = open_dataset("drive", root)
    assert [s.name for s in specs] == ["21_training", "22_training", "01_test", "02_test"]
    samples = _load_all(specs)
    for sample, n in zip(samples, (21, 22, 1, 2)):
        _check_sample(sample, (H, W))
        np.testing.assert_array_equal(sample.label, _label(n))
        np.testing.assert_array_equal(sample.image, _fundus(n))
        assert sample.fov.all()
    np.testing.assert_array_equal(samples[2].second_label, _label(2))
    assert samples[0].second_label is None


def test_specs_are_picklable(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    spec = open_dataset("drive", root, "test")[0]
    clone = pickle.loads(pickle.dumps(spec))
    assert isinstance(clone, SampleSpec) and clone.name == spec.name
    np.testing.assert_array_equal(clone.load().label, spec.load().label)


def _specs_of_each_fov_rule(root: Path) -> dict[str, list[SampleSpec]]:
    from keras_vessel.data.datasets import open_labelled

    folder = _make_folder(root / "folder", masks=False)
    return {
        "chase_db1": open_dataset("chase_db1", _make_chase(root / "chase", subjects=(1,))),
        "stare": open_dataset("stare", _make_stare(root / "stare", stems=("im0001",), gz=(True,))),
        "folder": open_dataset("folder", folder),
        "labelled": open_labelled(folder / "images", folder / "labels"),  # the region predict keeps
        "chase_db1 with a threshold": open_dataset("chase_db1", root / "chase", fov_threshold=20),
        "folder with masks": open_dataset("folder", _make_folder(root / "masked")),
        "drive": open_dataset("drive", _make_drive(root / "drive", numbers=(("training", (21,)),)), "training"),
    }


def test_what_loading_needs_of_tensorflow_is_measured_apart(tmp_path):
    """`SampleSpec.measure`: what a derived FOV needs of TensorFlow, so that prepare computes it in its main
    process and its workers load without TensorFlow; the same sample either way, and a measure that pickles."""
    for reader, specs in _specs_of_each_fov_rule(tmp_path).items():
        needs_tensorflow = reader in ("chase_db1", "stare", "folder", "labelled")
        for spec in specs:
            assert (spec.measure is not None) == needs_tensorflow, reader
            if spec.measure is None:
                continue
            measured = pickle.loads(pickle.dumps(spec.measure()))
            apart, here = spec.load(measured=measured), spec.load()
            for field in ("image", "label", "fov"):
                np.testing.assert_array_equal(getattr(apart, field), getattr(here, field), err_msg=reader)
            assert not here.fov.all() and here.fov.any(), reader


def test_a_fingerprint_is_of_the_name_the_files_whole_and_the_options(tmp_path):
    """What prepared records keep of a sample's inputs (`SampleSpec.fingerprint`), read in blocks
    (`keras_vessel.io.update_digest`): a file of several blocks counts whole, as read at once here."""
    import hashlib

    from keras_vessel.data.datasets.base import file_spec

    image, label = tmp_path / "big.png", tmp_path / "big_label.png"  # never decoded: only read
    image.write_bytes(np.random.default_rng(0).bytes(2 * (1 << 20) + 12345))
    label.write_bytes(b"label")
    spec = file_spec("big", image, label, None, None, fov_threshold=20)
    expected = hashlib.sha256(b"big")
    for part in (b"'big'", b"big.png", image.read_bytes(), b"big_label.png", b"label", b"None", b"None",
                 b"('fov_threshold', 20)"):
        expected.update(part)
    assert spec.fingerprint() == expected.hexdigest()


def test_drive_wrong_layout_says_what_was_expected(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match=re.escape("expected <root>/training/images/*_training.tif")):
        open_dataset("drive", tmp_path / "flat", "training")


def test_drive_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere is not a folder; expected the DRIVE root"):
        open_dataset("drive", tmp_path / "nowhere")


def test_drive_missing_label_names_expected_path(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    (root / "training" / "1st_manual" / "22_manual1.gif").unlink()
    with pytest.raises(DatasetError, match=r"missing DRIVE label: expected .*training/1st_manual/22_manual1\.gif"):
        open_dataset("drive", root, "training")


def test_drive_missing_mask_names_expected_path(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    (root / "test" / "mask" / "01_test_mask.gif").unlink()
    with pytest.raises(DatasetError, match=r"missing DRIVE FOV mask: expected .*test/mask/01_test_mask\.gif"):
        open_dataset("drive", root, "test")


def test_drive_missing_second_label(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    (root / "test" / "2nd_manual" / "02_manual2.gif").unlink()
    with pytest.raises(DatasetError, match=r"second-observer label: expected .*02_manual2\.gif"):
        open_dataset("drive", root, "test")


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    _save_palette_gif(root / "training" / "1st_manual" / "21_manual1.gif", np.zeros((H, W + 2), bool))
    spec = open_dataset("drive", root, "training")[0]
    with pytest.raises(DatasetError, match=r"21_manual1\.gif is 50x40 \(WxH\) but its image .*21_training\.tif is 48x40"):
        spec.load()


def test_mask_size_mismatch(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    _save(root / "test" / "mask" / "02_test_mask.gif", np.ones((H - 4, W), bool))
    spec = open_dataset("drive", root, "test")[1]
    with pytest.raises(DatasetError, match=r"02_test_mask\.gif is 48x36 \(WxH\) but its image .*02_test\.tif is 48x40"):
        spec.load()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_corrupt_image_names_the_file(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    (root / "training" / "images" / "22_training.tif").write_bytes(b"II*\x00 truncated")
    spec = open_dataset("drive", root, "training")[1]
    with pytest.raises(DatasetError, match=r"cannot decode image file .*22_training\.tif"):
        spec.load()


def test_label_with_three_values_lists_them(tmp_path):
    root = _make_drive(tmp_path / "DRIVE")
    values = _label(21).astype(np.uint8) * 255
    values[0, :5] = 100
    path = root / "training" / "1st_manual" / "21_manual1.gif"
    _save(path, values)
    with pytest.raises(DatasetError, match=r"^label \S+21_manual1\.gif is not binary.*found 3: \[0, 100, 255\]; save it "
                                          r"as a black-and-white PNG"):
        open_dataset("drive", root, "training")[0].load()


# --- open_dataset ----------------------------------------------------------------------------


def test_datasets_dict_is_explicit():
    assert set(DATASETS) == {"drive", "chase_db1", "stare", "hrf", "orvs", "les_av", "folder", "synthetic"}


def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match=r"unknown dataset 'drives'; valid datasets: drive, chase_db1, stare, hrf, orvs, les_av, folder, synthetic"):
        open_dataset("drives", tmp_path)


def test_unknown_split_lists_the_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match=r"unknown split 'train' .*valid splits: training, test, all"):
        open_dataset("drive", tmp_path, "train")


def test_unknown_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match=r"unknown option\(s\) folds for dataset 'stare'; valid options: fold, fov_threshold, fov_erosion"):
        open_dataset("stare", tmp_path, folds=1)


def test_root_none_only_for_synthetic():
    with pytest.raises(DatasetError, match=r"dataset 'drive' needs a root folder, got root=None"):
        open_dataset("drive", None)
    assert len(open_dataset("synthetic", None, count=2, test_count=1)) == 3


# --- CHASE_DB1 layout written here -----------------------------------------------------------


def _make_chase(root: Path, subjects=(1, 10, 11)) -> Path:
    for n in subjects:
        for side in "LR":
            stem = f"Image_{n:02d}{side}"
            _save(root / f"{stem}.jpg", _fundus(n), format="JPEG", quality=95)
            _save(root / f"{stem}_1stHO.png", _label(n))
            _save(root / f"{stem}_2ndHO.png", _label(n + 1))
    return root


def test_chase_db1_tiny_split_by_subject_number(tmp_path):
    root = _make_chase(tmp_path)
    assert [s.name for s in open_dataset("chase_db1", root, "training")] == ["Image_01L", "Image_01R", "Image_10L", "Image_10R"]
    assert [s.name for s in open_dataset("chase_db1", root, "test")] == ["Image_11L", "Image_11R"]
    sample = open_dataset("chase_db1", root, "test", fov_erosion=0)[0].load()
    np.testing.assert_array_equal(sample.fov, derive_fov(sample.image, erosion=0))
    np.testing.assert_array_equal(sample.second_label, _label(12))


def test_chase_db1_missing_label_and_bad_option(tmp_path):
    root = _make_chase(tmp_path, subjects=(3,))
    with pytest.raises(DatasetError, match=r"fov_erosion .* non-negative int, got -1"):
        open_dataset("chase_db1", root, fov_erosion=-1)
    (root / "Image_03R_1stHO.png").unlink()
    with pytest.raises(DatasetError, match=r"missing CHASE_DB1 label: expected .*Image_03R_1stHO\.png"):
        open_dataset("chase_db1", root)


def test_chase_db1_wrong_layout(tmp_path):
    _make_drive(tmp_path)
    with pytest.raises(DatasetError, match=r"no CHASE_DB1 images .*expected <root>/Image_NNX\.jpg"):
        open_dataset("chase_db1", tmp_path)


# --- STARE -----------------------------------------------------------------------------------


def test_stare_reads_gzipped_and_plain(tmp_path):
    root = _make_stare(tmp_path)
    specs = open_dataset("stare", root)
    assert [s.name for s in specs] == ["im0001", "im0002", "im0003"]
    for i, sample in enumerate(_load_all(specs)):
        _check_sample(sample, (H, W))
        np.testing.assert_array_equal(sample.image, _fundus(i))
        np.testing.assert_array_equal(sample.label, _label(i))
        np.testing.assert_array_equal(sample.second_label, _label(i + 1))
        np.testing.assert_array_equal(sample.fov, derive_fov(sample.image))


def test_stare_leave_one_out_folds(tmp_path):
    root = _make_stare(tmp_path)
    for fold in range(3):
        test = [s.name for s in open_dataset("stare", root, "test", fold=fold)]
        training = [s.name for s in open_dataset("stare", root, "training", fold=fold)]
        assert test == [f"im000{fold + 1}"]
        assert sorted(training + test) == ["im0001", "im0002", "im0003"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, r"split='test' needs the leave-one-out option fold=<int>"),
        ({"split": "training", "fold": 3}, r"fold .* must be in \[0, 2\] \(3 images in .*stare-images\), got 3"),
        ({"split": "test", "fold": "1"}, r"fold for dataset 'stare' must be an int or None, got '1'"),
    ],
)
def test_stare_bad_fold(tmp_path, kwargs, match):
    root = _make_stare(tmp_path)
    with pytest.raises(DatasetError, match=match):
        open_dataset("stare", root, **kwargs)


def test_stare_missing_label_and_wrong_layout(tmp_path):
    root = _make_stare(tmp_path / "stare")
    (root / "labels-ah" / "im0002.ah.ppm").unlink()
    with pytest.raises(DatasetError, match=r"missing STARE label: expected .*labels-ah/im0002\.ah\.ppm \(or \.ppm\.gz\)"):
        open_dataset("stare", root)
    with pytest.raises(DatasetError, match=r"expected <root>/stare-images/imNNNN\.ppm\[\.gz\]"):
        open_dataset("stare", tmp_path)


def test_stare_label_size_mismatch(tmp_path):
    root = _make_stare(tmp_path, stems=("im0001",), gz=(False,))
    _save(root / "labels-ah" / "im0001.ah.ppm", np.zeros((H, W - 8, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"im0001\.ah\.ppm is 40x40 \(WxH\) but its image .*im0001\.ppm is 48x40"):
        open_dataset("stare", root)[0].load()


# --- HRF -------------------------------------------------------------------------------------


def test_hrf_mixed_case_split_and_rgb_masks(tmp_path):
    root = _make_hrf(tmp_path)
    training = open_dataset("hrf", root, "training")
    test = open_dataset("hrf", root, "test")
    assert [s.name for s in training] == ["01_dr", "01_g", "01_h", "05_dr", "05_g", "05_h"]
    assert [s.name for s in test] == ["06_dr", "06_g", "06_h"]
    sample = training[0].load()  # 01_dr.JPG, upper-case extension
    _check_sample(sample, (H, W))
    assert sample.fov.all()
    np.testing.assert_array_equal(sample.label, _label(1))
    assert np.abs(sample.image.astype(int) - _fundus(1)).mean() < 8  # JPEG


def test_hrf_missing_label_is_skipped_with_a_warning(tmp_path, caplog):
    """The warning is one logged line naming the file (not a Python warning with a source line)."""
    root = _make_hrf(tmp_path)
    (root / "manual1" / "05_g.tif").unlink()
    with caplog.at_level("WARNING", logger="keras_vessel.data.datasets.hrf"):
        names = [s.name for s in open_dataset("hrf", root, "training")]
    assert names == ["01_dr", "01_g", "01_h", "05_dr", "05_h"]
    [record] = caplog.records
    assert re.fullmatch(r"HRF image .*05_g\.jpg skipped: its label .*manual1/05_g\.tif is missing", record.getMessage())


def test_hrf_missing_mask_is_an_error(tmp_path):
    root = _make_hrf(tmp_path, numbers=(2,))
    (root / "mask" / "02_h_mask.tif").unlink()
    with pytest.raises(DatasetError, match=r"missing HRF FOV mask: expected .*mask/02_h_mask\.tif"):
        open_dataset("hrf", root)


def test_hrf_wrong_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"images is not a folder; expected <root>/images/NN_\{dr,g,h\}\.jpg"):
        open_dataset("hrf", tmp_path)


# --- generic folder --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "_label", "_mask", "_manual1"])
def test_folder_matches_labels_by_stem_and_suffix(tmp_path, suffix):
    root = _make_folder(tmp_path, label_suffix=suffix)
    samples = _load_all(open_dataset("folder", root))
    assert [s.name for s in samples] == ["a", "b"]
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample.label, _label(i))
        assert sample.fov.all()  # from masks/


def test_folder_derives_fov_without_masks_and_takes_custom_folders(tmp_path):
    root = tmp_path
    _save(root / "img" / "x.tif", _fundus(3))
    _save(root / "gt" / "x_gt.gif", _label(3))
    sample = open_dataset("folder", root, images="img", labels="gt", label_suffixes=("_gt",))[0].load()
    np.testing.assert_array_equal(sample.fov, derive_fov(_fundus(3)))
    assert not sample.fov.all() and sample.fov[H // 2, W // 2]


def test_folder_with_split_subfolders(tmp_path):
    _make_folder(tmp_path / "training", stems=("a", "b"))
    _make_folder(tmp_path / "test", stems=("c",))
    assert [s.name for s in open_dataset("folder", tmp_path, "training")] == ["a", "b"]
    assert [s.name for s in open_dataset("folder", tmp_path, "test")] == ["c"]
    assert [s.name for s in open_dataset("folder", tmp_path)] == ["a", "b", "c"]


def test_folder_flat_has_no_split(tmp_path):
    root = _make_folder(tmp_path)
    with pytest.raises(DatasetError, match=r"split 'test' needs <root>/training/images/ and <root>/test/images/"):
        open_dataset("folder", root, "test")


def test_folder_missing_and_ambiguous_labels(tmp_path):
    root = _make_folder(tmp_path)
    _save(root / "labels" / "a.png", _label(0))
    with pytest.raises(DatasetError, match=r"ambiguous label for image 'a' .*a\.png, a_label\.png"):
        open_dataset("folder", root)
    (root / "labels" / "a.png").unlink()
    (root / "labels" / "b_label.png").unlink()
    with pytest.raises(DatasetError, match=r"missing label for image 'b': expected one of b\.\*, b_label\.\*"):
        open_dataset("folder", root)


def test_folder_missing_mask_when_masks_folder_exists(tmp_path):
    root = _make_folder(tmp_path)
    (root / "masks" / "b_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"missing FOV mask for image 'b': expected one of b\.\*, b_mask\.\*"):
        open_dataset("folder", root)


def test_folder_wrong_layout_and_bad_options(tmp_path):
    with pytest.raises(DatasetError, match=r"images is not a folder; expected <root>/images/ with image files"):
        open_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match=r"label_suffixes .* must be a sequence of strings, got '_gt'"):
        open_dataset("folder", tmp_path, label_suffixes="_gt")


def test_folder_size_mismatch(tmp_path):
    root = _make_folder(tmp_path, stems=("a",))
    _save(root / "masks" / "a_mask.png", np.ones((H, W * 2), bool))
    with pytest.raises(DatasetError, match=r"a_mask\.png is 96x40 \(WxH\) but its image .*a\.png is 48x40"):
        open_dataset("folder", root)[0].load()
