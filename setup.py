"""Package layout; the metadata and dependencies are in setup.cfg.

The click app lives in the `cli/` folder but installs as `keras_vessel_cli`,
so nothing installs a top-level module called `cli`.
"""

from setuptools import find_packages, setup

library = find_packages(include=["keras_vessel", "keras_vessel.*"])
command_line = [
    "keras_vessel_cli" + name[len("cli") :] for name in find_packages(include=["cli", "cli.*"])
]

setup(packages=library + command_line, package_dir={"keras_vessel_cli": "cli"})
