"""What runs record about the machine: benchmark figures are only comparable with it."""

import re
from pathlib import Path

import pytest

from keras_vessel.provenance import SPEED_FLAGS, machine_info

CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(not CPUINFO.exists(), reason="no /proc/cpuinfo on this system")
def test_machine_info_names_the_speed_relevant_cpu_flags_the_cpu_has():
    flags = set(re.search(r"^flags\s*:(.*)$", CPUINFO.read_text(), re.MULTILINE).group(1).split())
    info = machine_info()
    assert info["cpu_flags"] == [flag for flag in SPEED_FLAGS if flag in flags]
    assert info["processor"] and info["cpu_count"] >= 1
