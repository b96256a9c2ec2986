"""The command line's error boundary: users see one sentence and an exit status, not a traceback.

- `library_errors()` turns the library's expected failures into `click.ClickException`
  (exit 1): its ValueErrors (DatasetError, ConfigError, PrepareError, OutputError, ...),
  TrainingError and PipelineError, whose messages already say which file or key and what to do, and
  operating-system errors on files (permissions, a full disk, a quota, a read-only file system, also
  when TensorFlow raised them), named by path with what to do (`keras_vessel.io.describe_os_error`).
- `VesselGroup` ends an interrupted command (Ctrl-C) with "interrupted" and exit status 130,
  and a terminated one (SIGTERM: docker stop, SLURM preemption, `timeout`) with "terminated"
  and exit status 143, after the same clean-up (`sigterm_as_interrupt`).
- `quiet_tensorflow()` imports TensorFlow with its start-up logging (CUDA probing on
  machines without a GPU) sent to /dev/null, so the terminal shows our messages only;
  `quiet_workers()` keeps TensorFlow's and Beam's notices of worker processes (`library_noise`)
  and Beam's error records (the pipeline's failure is one sentence instead) off it while other errors
  still reach it.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click


@contextmanager
def library_errors() -> Iterator[None]:
    """Report the library's expected failures as `click.ClickException` (exit status 1)."""
    from keras_vessel.errors import PipelineError, TrainingError

    try:
        yield
    except (ValueError, TrainingError, PipelineError) as error:
        raise click.ClickException(str(error)) from error
    except Exception as error:  # OSError, or TensorFlow's wrapping one (a full disk during export or prepare)
        from keras_vessel.io import describe_os_error

        message = describe_os_error(error)
        if message is None:
            raise
        raise click.ClickException(message) from error


class VesselGroup(click.Group):
    """A click group whose commands exit with status 130 and one line when interrupted."""

    def invoke(self, ctx: click.Context):  # noqa: D102 - click's API
        try:
            with sigterm_as_interrupt():
                return super().invoke(ctx)
        except Terminated:
            click.echo("terminated", err=True)
            ctx.exit(128 + signal.SIGTERM)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python is: a KeyboardInterrupt, so whatever cleans up after Ctrl-C
    (run.json's "interrupted", staging folders, locks) cleans up after it too."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise `Terminated` on SIGTERM for the block (main thread only), then restore the handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ start-up lines (``Could not find cuda drivers``, ``failed
    call to cuInit``) are written before its log level applies. Python errors
    raised by the import still reach the terminal: they are printed after
    the descriptor is restored.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# What TensorFlow and Beam print that is not an error: C++ (absl/glog) info and warning lines, absl's
# notice before it is initialised, CUDA's "failed call to cuInit" on a machine without a GPU (an E line),
# and Python logging's default format below ERROR from any logger but ours.
_NOISE = re.compile(r"[IW]\d{4} [\d:]+\.\d+ +\d+ |E\d{4} [\d:]+\.\d+ +\d+ cuda\w*\.cc:\d+\] failed call to cuInit"
                    r"|WARNING: All log messages before absl::InitializeLog|(DEBUG|INFO|WARNING):(?!keras_vessel)[\w.]*:")


# A record Beam logs at ERROR (Python logging's default format), and the lines of the traceback under it.
_BEAM_ERROR = re.compile(r"(ERROR|CRITICAL):apache_beam[\w.]*:")
_TRACEBACK = re.compile(r"\s|$|Traceback \(most recent call last\):|The above exception was the direct cause"
                        r"|During handling of the above exception|(\w+\.)*\w*(Error|Exception|Exit|Interrupt)\b")


def library_noise(line: str) -> bool:
    """Whether a line of stderr is one of TensorFlow's or Beam's notices (`_NOISE`), not an error or ours."""
    return _NOISE.match(line) is not None


class _WorkerLines:
    """`quiet_workers`' filter, called line by line in order: False for `library_noise`, and for Beam's error
    records with the traceback under them (`_BEAM_ERROR`, `_TRACEBACK`)."""

    def __init__(self) -> None:
        self.in_beam_error = False

    def __call__(self, line: str) -> bool:
        if _BEAM_ERROR.match(line):
            self.in_beam_error = True
        elif not (self.in_beam_error and _TRACEBACK.match(line)):
            self.in_beam_error = False
            return not library_noise(line)
        return False


@contextmanager
def quiet_workers() -> Iterator[None]:
    """Keep `library_noise` of the worker processes started in the block (Beam's DirectRunner in
    multi_processing mode: each imports Beam and TensorFlow and logs at INFO to its stderr, before any code
    of ours runs in it) off the terminal, and Beam's error records with their tracebacks: the failure they
    report stops the pipeline, which the Beam engine reports in one sentence
    (`keras_vessel.errors.PipelineError`). Other errors and tracebacks still reach it, as they come."""
    from keras_vessel.io import stderr_filtered

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # inherited by the workers
    with stderr_filtered(_WorkerLines()):
        yield
