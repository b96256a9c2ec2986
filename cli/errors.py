"""Turn the library's domain errors into click errors, so users see a message, not a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click


@contextmanager
def library_errors() -> Iterator[None]:
    """Report `ValueError`s and missing files raised by keras_vessel as `click.ClickException`.

    The library raises ValueError subclasses (DatasetError, ConfigError,
    PrepareError, ...) whose messages already say which file and what to do.
    """
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
