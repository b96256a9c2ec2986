"""Atomic writes: nothing half-written under the final name, and the usual file mode."""

from __future__ import annotations

import stat

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vessel.io import PNG_COMPRESSION, atomic_path, png_bytes, umask, write_png_atomic, write_text_atomic


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


@pytest.mark.parametrize("dtype, channels", [(np.uint8, None), (np.uint16, None), (np.uint8, 3)])
def test_png_files_and_png_bytes_are_the_same_lossless_png(tmp_path, dtype, channels):
    """The local engine's files and the Beam engine's bytes: one encoding, read back exactly (Pillow), its
    compressed stream made at `PNG_COMPRESSION` (the level's class is in the zlib header)."""
    shape = (37, 53) if channels is None else (37, 53, channels)
    array = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    write_png_atomic(tmp_path / "a.png", array)
    data = (tmp_path / "a.png").read_bytes()
    assert data == png_bytes(array)
    with Image.open(tmp_path / "a.png") as image:
        np.testing.assert_array_equal(np.array(image), array)
    stream = data[data.index(b"IDAT") + 4 :]  # the zlib stream; its header's FLEVEL: 1 for levels 2-5, 2 for 6
    assert stream[1] >> 6 == {1: 0, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2}[PNG_COMPRESSION]


def test_save_model_atomic_writes_a_loadable_model_others_can_read(tmp_path):
    from keras_vessel.models.saving import save_model_atomic

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "model.keras"
    save_model_atomic(model, path)
    assert _mode(path) == 0o666 & ~umask()
    assert keras.saving.load_model(path).count_params() == model.count_params()
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_a_failed_write_names_the_final_file_not_the_temporary_one(tmp_path):
    """A full disk: write() raises an OSError without a file name, TensorFlow an error naming its temp file."""
    import errno

    import tensorflow as tf

    target = tmp_path / "shard.gz"
    with pytest.raises(OSError) as raised, atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(target))
    with pytest.raises(OSError) as raised, atomic_path(target) as temp:
        raise tf.errors.ResourceExhaustedError(None, None, f"{temp}; No space left on device")
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(target))
    with pytest.raises(FileNotFoundError) as raised, atomic_path(target):  # another file's error: as it is
        open(tmp_path / "missing")
    assert raised.value.filename == str(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error, sentence", [
    (OSError(28, "No space left on device", "/d/x"), "/d/x: No space left on device; free some space on that disk"),
    (OSError(122, "Disk quota exceeded", "/d/x"), "/d/x: Disk quota exceeded; free some of your disk quota"),
    (OSError(30, "Read-only file system", "/d/x"), "/d/x: Read-only file system; that file system is read-only"),
    (OSError(13, "Permission denied", "/d/x"), "/d/x: Permission denied; fix its permissions"),
    (FileExistsError("/d/x already exists"), "/d/x already exists"),
    (ValueError("No space left on device"), None),  # not a file-system error
])
def test_describe_os_error(error, sentence):
    from keras_vessel.io import describe_os_error

    described = describe_os_error(error)
    assert described == sentence if sentence is None else described.startswith(sentence)


def test_describe_os_error_reads_tensorflow_errors():
    import tensorflow as tf

    from keras_vessel.io import describe_os_error

    error = tf.errors.UnknownError(None, None, "/d/.1.partial-x/saved_model.pb.tmp1; Read-only file system")
    assert describe_os_error(error).startswith("/d/.1.partial-x/saved_model.pb.tmp1: Read-only file system; ")
    assert describe_os_error(tf.errors.InvalidArgumentError(None, None, "bad shape")) is None


def test_stale_staging_is_removed_and_live_staging_kept(tmp_path, caplog):
    import os
    import socket
    import subprocess
    import sys
    import time

    from keras_vessel.io import STALE_UNOWNED_SECONDS, remove_stale_staging, staging_dir

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    dead = tmp_path / f".3.partial-{child.pid}@{host}-abcd1234"
    elsewhere = tmp_path / f".3.partial-{child.pid}@another-host.example-abcd1234"  # can't tell: kept
    old, young = tmp_path / ".3.partial-abcd1234", tmp_path / ".3.partial-efgh5678"  # older keras-vessel
    other = tmp_path / f".30.partial-{child.pid}@{host}-abcd1234"  # another version's
    for folder in (dead, elsewhere, old, young, other):
        folder.mkdir()
    ago = time.time() - STALE_UNOWNED_SECONDS - 60
    os.utime(old, (ago, ago))
    mine = staging_dir(tmp_path, "3")
    with caplog.at_level("WARNING"):
        assert remove_stale_staging(tmp_path, "3") == sorted([dead, old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (elsewhere, young, other, mine))
    assert mine.name.startswith(f".3.partial-{os.getpid()}@{host}-")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and f"removed {dead}" in messages[0] and "which is gone" in messages[0]
    assert f"removed {old}" in messages[1] and "an older keras-vessel" in messages[1]


def test_worker_notices_and_beams_error_records_are_filtered_from_stderr_but_other_errors_are_not(capfd):
    """What a Beam worker process prints to the descriptor it inherits (`quiet_workers`): Beam's error records
    and their tracebacks go too (the pipeline's failure is one sentence: `keras_vessel.errors.PipelineError`)."""
    import subprocess
    import sys

    from keras_vessel_cli.errors import quiet_workers

    noise = ["I0000 00:00:1796602327.207362   28860 cudart_stub.cc:31] Could not find cuda drivers",
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "INFO:apache_beam.runners.worker.sdk_worker:Control channel established.",
             "WARNING:root:Resource module is not available for current platform",
             "E0000 00:00:1796602542.874434   29681 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)"]
    beam_error = ["ERROR:apache_beam.runners.worker.sdk_worker:Error processing instruction bundle_9. Original "
                  "traceback is",
                  "Traceback (most recent call last):",
                  '  File "/k/keras_vessel/io.py", line 49, in atomic_path',
                  "    os.replace(temp, path)",
                  "IsADirectoryError: [Errno 21] Is a directory: 'out/.failures.csv.x.tmp' -> 'out/failures.csv'",
                  "",
                  "The above exception was the direct cause of the following exception:",
                  "",
                  "During handling of the above exception, another exception occurred:",
                  "RuntimeError: IsADirectoryError: [Errno 21] Is a directory: 'out/failures.csv' [while running 'X']",
                  ""]
    ours = ["WARNING:keras_vessel.serving.prediction:eye.png: no field of view found"]
    errors = ["E0000 00:00:1.5   1 allocator.cc:9] out of memory",
              "Traceback (most recent call last):",
              '  File "/k/worker.py", line 3, in <module>',
              "ValueError: not Beam's"]
    lines = noise + ours + beam_error + errors
    with quiet_workers():
        subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({chr(10).join(lines) + chr(10)!r})"],
                       check=True)
    assert capfd.readouterr().err.splitlines() == ours + errors
