"""Atomic writes: nothing half-written under the final name, and the usual file mode."""

from __future__ import annotations

import stat

import keras
import pytest

from keras_vessel.io import atomic_path, umask, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_path_renames_on_success_with_the_usual_mode(tmp_path):
    target = tmp_path / "sub" / "report.txt"
    with atomic_path(target, suffix=".txt") as temp:
        assert temp.parent == target.parent and temp.suffix == ".txt" and temp != target
        temp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert _mode(target) == 0o666 & ~umask()  # not mkstemp's 0600
    assert [p.name for p in target.parent.iterdir()] == ["report.txt"]


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "report.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


def test_save_model_atomic_writes_a_loadable_model_others_can_read(tmp_path):
    from keras_vessel.models.saving import save_model_atomic

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "model.keras"
    save_model_atomic(model, path)
    assert _mode(path) == 0o666 & ~umask()
    assert keras.saving.load_model(path).count_params() == model.count_params()
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
