"""What every benchmark records beside its figures, in one place.

A benchmark result is only comparable with another when we know the machine,
how busy it was (this machine is shared: the load average is recorded at the
start and at the end), the package versions, the exact revision and command,
and the parameters. `begin` captures the first half, `finish` adds the end
load and the results and writes the JSON atomically.

Versions are read from the installed package metadata; the revision and
machine come from `keras_vessel.provenance`, shared with training runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from keras_vessel.provenance import git_revision, load_average, machine_info  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
HRF_SHAPE = (2336, 3504)  # HRF images are 3504 wide, 2336 high


def data_root() -> Path:
    """The folder holding DRIVE/ (as in tests/conftest.py): $KERAS_VESSEL_DATA, else ../shared/data."""
    env = os.environ.get("KERAS_VESSEL_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def drive_root() -> Path | None:
    """The DRIVE folder, or None when it is not there."""
    path = data_root() / "DRIVE"
    return path if path.is_dir() else None


def require_drive_root() -> Path:
    """The DRIVE folder, or SystemExit saying how to point to it."""
    root = drive_root()
    if root is None:
        raise SystemExit("DRIVE not found; set KERAS_VESSEL_DATA to the folder holding DRIVE/")
    return root


def drive_test_samples(count: int) -> list[Any]:
    """The first `count` DRIVE test `Sample`s, loaded (SystemExit when DRIVE is not there)."""
    from keras_vessel.data.datasets import open_dataset

    return [spec.load() for spec in open_dataset("drive", require_drive_root(), "test")[:count]]


def hrf_sized_sample(first: Any, second: Any, *, name: str = "hrf_sized") -> Any:
    """An HRF-sized (2336x3504) `Sample` from two DRIVE samples upscaled x4, side by side, cropped.

    HRF itself is not in ../shared/data. The image is upscaled bilinearly, the
    label and FOV with nearest neighbour so that they stay binary.
    """
    import cv2
    import numpy as np

    from keras_vessel.data.datasets import Sample

    def up(array: np.ndarray, interpolation: int) -> np.ndarray:
        height, width = array.shape[:2]
        return cv2.resize(array, (4 * width, 4 * height), interpolation=interpolation)

    def join(key: str, interpolation: int) -> np.ndarray:
        parts = []
        for sample in (first, second):
            array = getattr(sample, key)
            was_bool = array.dtype == bool
            scaled = up(array.astype(np.uint8) if was_bool else array, interpolation)
            parts.append(scaled > 0 if was_bool else scaled)
        joined = np.concatenate(parts, axis=1)[: HRF_SHAPE[0], : HRF_SHAPE[1]]
        if joined.shape[:2] != HRF_SHAPE:
            raise ValueError(f"two samples of shape {first.image.shape[:2]} upscaled x4 do not cover {HRF_SHAPE}")
        return np.ascontiguousarray(joined)

    return Sample(
        name=name,
        image=join("image", cv2.INTER_LINEAR),
        label=join("label", cv2.INTER_NEAREST),
        fov=join("fov", cv2.INTER_NEAREST),
    )


def add_output_argument(parser: argparse.ArgumentParser, name: str, *, default: Path | None = None) -> None:
    default = default or RESULTS / f"{name}.json"
    parser.add_argument(
        "--output", type=Path, default=default,
        help=f"where to write the JSON results (default {default.relative_to(REPO)})",
    )


def versions(*extra: str) -> dict[str, str | None]:
    """Python and installed distribution versions (None when not installed)."""
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    names = ("tensorflow", "keras", "numpy", *extra)
    return {"python": platform.python_version(), **{name: version(name) for name in names}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def begin(name: str, args: argparse.Namespace, *, extra_versions: tuple[str, ...] = ()) -> dict[str, Any]:
    """Start a result record: machine, versions, revision, command, parameters, load now."""
    return {
        "benchmark": name,
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "parameters": {key: _jsonable(value) for key, value in vars(args).items()},
        "git_revision": git_revision(),
        "machine": machine_info(),
        "versions": versions(*extra_versions),
        "threads_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")},
        "load_average_start": load_average(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def finish(record: dict[str, Any], results: dict[str, Any], output: Path) -> dict[str, Any]:
    """Add the results and the load at the end, write the JSON atomically, return the record."""
    from keras_vessel.io import write_json_atomic

    record = {
        **record,
        "load_average_end": load_average(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    write_json_atomic(output, record)
    print(f"load average (1, 5, 15 min) at start {record['load_average_start']}, "
          f"at end {record['load_average_end']}")
    print(f"wrote {output}")
    return record


def synthetic_photograph(height: int, width: int, fov_diameter: float | None = None, *, seed: int = 0) -> Any:
    """``(H, W, 3)`` uint8: a fundus-like photograph of any size, built in strips of rows.

    An orange disc `fov_diameter` px across (default 0.72 x `width`, a typical camera's field of view;
    clipped by the frame when taller), darker towards its rim, on a near-black surround, with a dozen dark
    wavy vessels 0.4-1.2 % of the radius wide and sensor noise. For memory and equivalence checks on
    photographs larger than any in ../shared/data (e.g. 12000x8400, 100 MP).
    """
    import numpy as np

    radius = (fov_diameter or 0.72 * width) / 2
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    xs = np.arange(width, dtype=np.float32)[None]
    for top in range(0, height, 512):
        y = np.arange(top, min(height, top + 512), dtype=np.float32)[:, None]
        d2 = (xs - width / 2) ** 2 + (y - height / 2) ** 2
        shade = 1.0 - 0.4 * d2 / radius**2
        vessel = np.zeros_like(d2)
        for k in range(12):
            path = height / 2 + (k - 6) * radius / 7 + 0.15 * radius * np.sin(xs / radius * (2 + k % 3) + k)
            vessel = np.maximum(vessel, np.exp(-(((y - path) / (0.004 * radius * (1 + k % 3))) ** 2)))
        rgb = np.stack([200 * shade, 90 * shade, 40 * shade], -1) * (1 - 0.5 * vessel[..., None])
        rgb += rng.normal(0, 3, rgb.shape).astype(np.float32)
        image[top : top + 512] = np.where((d2 < radius**2)[..., None], np.clip(rgb, 0, 255), 4)
    return image
