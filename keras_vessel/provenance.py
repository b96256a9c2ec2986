"""Where a result came from: git revision and machine, saved next to runs and benchmarks."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def git_revision() -> str | None:
    """`git rev-parse HEAD` of the keras-vessel checkout, with "-dirty" when tracked files changed."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return revision + ("-dirty" if dirty else "")


# the CPU features TensorFlow's speed depends on most here (bf16 and AMX make mixed precision pay off);
# this workplace's machines differ in them from one session to the next
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _processor() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_speed_flags() -> list[str] | None:
    """Which of `SPEED_FLAGS` the CPU has; None where /proc/cpuinfo does not say."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else [flag for flag in SPEED_FLAGS if flag in flags.split()]


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": _processor(), "cpu_flags": cpu_speed_flags(),
            "cpu_count": os.cpu_count(), "load_average": load_average()}


def own_version() -> str:
    """The installed keras-vessel version, or "unknown" for a checkout on sys.path."""
    from importlib import metadata

    try:
        return metadata.version("keras-vessel")
    except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown"


def package_versions() -> dict[str, str]:
    """The versions a run's numbers depend on."""
    import cv2
    import keras
    import numpy as np
    import skimage
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "keras_vessel": own_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "scikit-learn": sklearn.__version__,
        "opencv": cv2.__version__,
    }
