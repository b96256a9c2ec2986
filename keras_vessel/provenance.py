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


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": _processor(), "cpu_count": os.cpu_count(),
            "load_average": load_average()}


def package_versions() -> dict[str, str]:
    """The versions a run's numbers depend on."""
    import cv2
    import keras
    import numpy as np
    import skimage
    import sklearn
    import tensorflow as tf

    import keras_vessel

    return {
        "python": platform.python_version(),
        "keras_vessel": keras_vessel.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "scikit-learn": sklearn.__version__,
        "opencv": cv2.__version__,
    }
