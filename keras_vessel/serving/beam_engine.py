"""`keras-vessel predict --engine beam`: predict's per-photograph work as an Apache Beam pipeline.

The pipeline runs the steps of `keras_vessel.serving.prediction.PhotographWork`, the same calls the
local engine makes, so the two cannot drift: read the file's bytes through Beam's FileSystems (local,
``gs://``, ``s3://``), decode them as `read_image` does (`decode_image`), `locate` the FOV, apply the
model with RunInference (`VesselModelHandler`: the model loaded once per worker; RunInference, not a
plain DoFn, because its ModelHandler decides how an element is run: one photograph at a time, at its
own size and scale, whole or tiled, with predict's TTA), `finish` the maps, write them and the
photograph's marker (`write_photograph`, as the local engine writes them) and `row` the measurements.
Photographs the output folder holds done already are skipped (`DoneCheck`, the local engine's rule), so a
stopped or killed run is resumed by running it again, by either engine; the folder records the settings
that made them, and a re-run with others is refused before any work (`claim_output`, as the local
engine, which also says what ``--overwrite`` removes); a
photograph that fails is written with its reason to ``failures.csv`` and the others go on (that file and
measures.csv written by the local engine's rule: `record_results`); an error that stops the whole pipeline
is one sentence (`PipelineError`). Counters (`COUNTERS`) say what happened, with the local engine's notes
on photographs too small for the model or wide enough for ``--scale multi`` (`PhotographWork.notes`; each
low-resolution photograph also warned about in the worker's log).

`apache_beam` is imported here only: the base install has no Beam (``pip install keras-vessel[beam]``).
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from keras_vessel.errors import PipelineError
from keras_vessel.io import describe_os_error, png_bytes, stream_sha256, write_bytes_atomic
from keras_vessel.locks import folder_lock
from keras_vessel.serving.prediction import (
    FAILURES_CSV,
    DoneCheck,
    PhotographWork,
    ScaleNotes,
    claim_output,
    expand_inputs,
    failure_reason,
    output_stems,
    prediction_settings,
    record_results,
    stops_the_batch,
    write_photograph,
)

__all__ = ["COUNTERS", "BeamFiles", "BeamReport", "VesselModelHandler", "pipeline_failure",
           "pipeline_options", "predict_beam"]

# What the pipeline counts (Beam metrics, namespace "keras_vessel").
NAMESPACE = "keras_vessel"
COUNTERS = ("done", "skipped", "failed", "wide_fov", "low_resolution")
# How Beam reports an error raised in a step: ``TYPE: MESSAGE [while running 'STEP']``, wrapped in a RuntimeError
# (its text, with the worker's traceback before it, when it comes from another process), and an OSError's text.
_STEP = re.compile(r"\s*\[while running '(?P<step>.*)'\]\s*$")
_WRAPPER = re.compile(r"^RuntimeError: (?=(?:\w+\.)*\w+: )")
_OS_ERROR = re.compile(r"\[Errno (?P<errno>\d+)\] (?P<strerror>[^:]+)(?:: '(?P<filename>[^']*)')?")

log = logging.getLogger(__name__)


class BeamFiles:
    """`keras_vessel.serving.prediction.LocalFiles` through Beam's FileSystems: the same rules for local,
    ``gs://`` and ``s3://`` paths (inputs listed and read, the output folder's files read, written and
    removed). Local paths come back as predict writes them (``str(Path(...))``), so both engines name a
    photograph alike in measures.csv."""

    @staticmethod
    def _local(text: str) -> bool:
        return FileSystems.get_scheme(text) in (None, "file")

    @staticmethod
    def _paths(pattern: str) -> list[str]:
        try:
            found = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        except Exception:  # noqa: BLE001 - Beam's BeamIOError: nothing matched, or the bucket cannot be read
            return []
        return sorted(str(Path(p)) if BeamFiles._local(p) else p for p in found)

    @staticmethod
    def has_magic(text: str) -> bool:
        return any(c in text for c in "*?[")

    @staticmethod
    def glob(pattern: str) -> list[str]:
        return [p for p in BeamFiles._paths(pattern) if not BeamFiles.is_dir(p)]

    @staticmethod
    def is_dir(text: str) -> bool:
        if BeamFiles._local(text):
            return Path(text).is_dir()
        return text.endswith("/") or bool(BeamFiles._paths(text.rstrip("/") + "/*"))

    @staticmethod
    def is_file(text: str) -> bool:
        return FileSystems.exists(text) and not BeamFiles.is_dir(text)

    @staticmethod
    def exists(text: str) -> bool:
        return FileSystems.exists(text)

    @staticmethod
    def list_dir(text: str) -> list[str]:
        return BeamFiles.glob(BeamFiles.join(text, "*"))

    @staticmethod
    def split(text: str) -> tuple[str, str]:
        return FileSystems.split(text) if not BeamFiles._local(text) else (str(Path(text).parent), Path(text).name)

    @staticmethod
    def join(folder: str, name: str) -> str:
        return str(Path(folder) / name) if BeamFiles._local(folder) else FileSystems.join(folder, name)

    @staticmethod
    def read_text(text: str) -> str | None:
        try:
            with FileSystems.open(text) as handle:
                return handle.read().decode("utf-8")
        except Exception:  # noqa: BLE001 - Beam's BeamIOError for a missing file
            return None

    @staticmethod
    def write_text(text: str, content: str) -> None:
        _write(text, content.encode("utf-8"))

    @staticmethod
    def write_png(text: str, pixels: np.ndarray) -> None:
        _write(text, png_bytes(pixels))

    @staticmethod
    def remove(text: str) -> None:
        if FileSystems.exists(text):
            FileSystems.delete([text])

    @staticmethod
    def sha256(text: str) -> str:
        with FileSystems.open(text, compression_type="uncompressed") as handle:
            return stream_sha256(handle)


def _write(path: str, data: bytes) -> None:
    """Write a file of the output folder: atomically on a local disk, through FileSystems elsewhere."""
    if BeamFiles._local(path):
        write_bytes_atomic(path, data)
        return
    with FileSystems.create(path) as handle:
        handle.write(data)


@dataclass
class BeamReport:
    """What `predict_beam` did: the counters (`COUNTERS`: ``wide_fov`` and ``low_resolution`` count the
    photographs done that `PhotographWork.notes` notes so) and ``failures``, ``(path, reason)`` per photograph
    of the run that failed (read back from ``failures.csv`` in the output folder), sorted by name."""

    done: int
    skipped: int
    failed: int
    failures: list[tuple[str, str]]
    wide_fov: int = 0
    low_resolution: int = 0


def pipeline_options(pairs: Sequence[str]) -> PipelineOptions:
    """Beam's PipelineOptions from ``KEY=VALUE`` (or ``KEY`` for a flag such as ``save_main_session``),
    passed through untouched; the DirectRunner unless ``runner`` is given. ValueError, one sentence naming
    the option, for a KEY Beam does not know (with the nearest name) or a VALUE it refuses."""
    known = PipelineOptions([]).get_all_options()
    flags = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            raise ValueError(f"--beam-option {pair!r}: Beam has no pipeline option {key!r}"
                             + (f" (did you mean {near[0]!r}?)" if near else ""))
        flags.append(f"--{key}={value}" if "=" in pair else f"--{key}")
    if not any(pair.partition("=")[0].strip().lstrip("-") == "runner" for pair in pairs):
        flags.append("--runner=DirectRunner")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            options = PipelineOptions(flags)
            options.get_all_options(retain_unknown_options=False)
    except SystemExit:  # argparse's: it printed the usage and its error
        said = [line for line in errors.getvalue().splitlines() if "error:" in line]
        reason = said[-1].split("error:", 1)[1].strip() if said else "refused"
        raise ValueError(f"--beam-option: {reason}") from None
    try:
        beam.Pipeline(options=options)  # resolves the runner
    except ValueError as error:
        raise ValueError(f"--beam-option runner: {str(error).split('. ')[0]}") from None
    return options


class VesselModelHandler(ModelHandler):
    """RunInference's handler of a keras-vessel ``.keras`` model: loaded once per worker (from a local
    path, or copied from gs:// / s3://), applied to one photograph at a time by
    `PhotographWork.probability` (its own size and scale, whole or tiled, TTA). An example is
    ``(image, located)``; its inference a `_Predicted` (the probability map and `PhotographWork.notes`), or a
    `_Failed` reason."""

    def __init__(self, model_path: str, work: PhotographWork) -> None:
        super().__init__(max_batch_size=1)  # photographs differ in size: nothing to stack
        self.model_path, self.work = str(model_path), work

    def load_model(self):
        if BeamFiles._local(self.model_path):
            return self.work.load_model(self.model_path)
        with tempfile.TemporaryDirectory() as folder:
            local = os.path.join(folder, "model.keras")
            with FileSystems.open(self.model_path) as source:
                write_bytes_atomic(local, source.read())
            return self.work.load_model(local)

    def run_inference(self, batch, model, inference_args=None):
        for image, located in batch:
            try:
                inference = _Predicted(self.work.probability(image, located, model=model),
                                       self.work.notes(located, model))
            except Exception as error:  # noqa: BLE001 - one photograph's failure, recorded by _Finish
                inference = _Failed(error)
            yield PredictionResult((image, located), inference)

    def get_num_bytes(self, batch) -> int:
        return sum(image.nbytes for image, _ in batch)

    def get_metrics_namespace(self) -> str:
        return "keras_vessel_inference"


@dataclass
class _Predicted:
    prob: np.ndarray
    notes: ScaleNotes


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _SkipDone(beam.DoFn):
    """Drop the photographs the output folder holds done already (`DoneCheck`, the local engine's rule);
    count them."""

    def __init__(self, done: DoneCheck) -> None:
        self.done = done
        self.skipped = Metrics.counter(NAMESPACE, "skipped")

    def process(self, element):
        _, stem = element
        if self.done(stem):
            self.skipped.inc()
            return
        yield element


class _Locate(beam.DoFn):
    """Read, decode and locate one photograph: ``(path, (image, located))``, or ``(path, reason)`` to
    the "failed" output."""

    def __init__(self, work: PhotographWork) -> None:
        self.work = work
        self.failed = Metrics.counter(NAMESPACE, "failed")

    def process(self, element):
        from keras_vessel.data.preprocessing import decode_image

        path, stem = element
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                data = handle.read()
            image = decode_image(data, path)
            yield (path, stem), (image, self.work.locate(path, image))
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the pipeline
            if stops_the_batch(error):
                raise
            self.failed.inc()
            yield beam.pvalue.TaggedOutput("failed", (path, failure_reason(path, error)))


class _Finish(beam.DoFn):
    """Threshold, write (`write_photograph`: its files, then its marker) and measure one predicted photograph:
    its row (None without ``measure``), or ``(path, reason)`` to the "failed" output."""

    def __init__(self, work: PhotographWork, output: str) -> None:
        self.work, self.output = work, output
        self.done = Metrics.counter(NAMESPACE, "done")
        self.failed = Metrics.counter(NAMESPACE, "failed")
        self.wide_fov = Metrics.counter(NAMESPACE, "wide_fov")
        self.low_resolution = Metrics.counter(NAMESPACE, "low_resolution")

    def process(self, element):
        (path, stem), result = element
        image, located = result.example
        try:
            if isinstance(result.inference, _Failed):
                raise result.inference.error
            maps = self.work.finish(image, result.inference.prob, located, result.inference.notes.mode)
            written = write_photograph(self.output, stem, maps, files=BeamFiles)
            row = self.work.row(stem, written[1], maps, located) if self.work.measure else None
        except Exception as error:  # noqa: BLE001 - one bad photograph must not stop the pipeline
            if stops_the_batch(error):
                raise
            self.failed.inc()
            yield beam.pvalue.TaggedOutput("failed", (path, failure_reason(path, error)))
            return
        self.done.inc()
        notes = result.inference.notes
        if notes.wide_fov:
            self.wide_fov.inc()
        if notes.low_resolution:
            log.warning("%s: %s", path, notes.low_resolution)
            self.low_resolution.inc()
        yield row


def _finalize(_, output: str, rows: list, failures: list, stems: list[str]) -> None:
    """After every photograph (each of `stems` done, skipped or failed): measures.csv and failures.csv by
    the local engine's rule (`record_results`)."""
    record_results(output, rows=[row for row in rows if row is not None], failures=failures, handled=stems,
                   files=BeamFiles)


def _counters(result) -> dict[str, int]:
    counts = dict.fromkeys(COUNTERS, 0)
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counts[counter.key.metric.name] += int(value or 0)
    return counts


def _steps(pipeline, photographs: list[tuple[str, str]], model_path: str, work: PhotographWork, output: str,
           done: DoneCheck) -> None:
    """Add predict's steps to `pipeline` for `photographs`, ``(path, stem)`` each."""
    located = (pipeline
               | "Photographs" >> beam.Create(photographs)
               | "Skip done" >> beam.ParDo(_SkipDone(done))
               | "Spread" >> beam.Reshuffle()
               | "Read and locate" >> beam.ParDo(_Locate(work)).with_outputs("failed", main="located"))
    handler = KeyedModelHandler(VesselModelHandler(model_path, work))
    finished = (located.located
                | "Model" >> RunInference(handler)
                | "Finish and write" >> beam.ParDo(_Finish(work, output)).with_outputs("failed", main="done"))
    failures = ((located.failed, finished.failed) | "Failures" >> beam.Flatten()
                | "All failures" >> beam.combiners.ToList())
    rows = finished.done | "All rows" >> beam.combiners.ToList()
    (pipeline | "Once" >> beam.Create([None])
     | "Measures and failures" >> beam.Map(
         _finalize, output, beam.pvalue.AsSingleton(rows), beam.pvalue.AsSingleton(failures),
         [stem for _, stem in photographs]))


def pipeline_failure(error: BaseException, output: str) -> PipelineError:
    """The `PipelineError` to raise for `error`, which stopped the pipeline writing into `output`: one sentence
    saying in which step (Beam's ``[while running 'STEP']``), what failed and what to do (fix it and run the
    command again, which skips the photographs done).

    What failed is the error's own message without the traceback and Beam's wrapping: the last line of the
    text a worker process sent back, or the message of the error raised here; a file-system error names its
    file as `keras_vessel.io.describe_os_error` does (also when only its text came back from a worker).
    """
    cause = next((e for e in _chain(error) if isinstance(e, OSError)), None)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = (lines[-1] if "Traceback (most recent call last):" in str(error) else " ".join(lines)) if lines else ""
    step = _STEP.search(text)
    text = _WRAPPER.sub("", _STEP.sub("", text)) or type(error).__name__
    if cause is None and (found := _OS_ERROR.search(text)):
        cause = OSError(int(found["errno"]), found["strerror"], found["filename"])
    described = describe_os_error(cause) if cause is not None else None
    todo = "" if described and "; " in described else "; fix that and run the command again"  # it says what to do
    where = f" in step '{step['step']}'" if step else ""
    return PipelineError(f"the Beam pipeline stopped{where}: {described or text.rstrip('.')}{todo} (it skips the "
                         f"photographs already done in {output})")


def _chain(error: BaseException | None):
    """`error` and the errors it was raised from or while handling, once each."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def predict_beam(model_path: str | Path, inputs: Sequence[str | Path], output: str | Path, *,
                 options: Sequence[str] = (), work: PhotographWork, overwrite: bool = False) -> BeamReport:
    """Run `work` on every photograph of `inputs` (files, folders, glob patterns; local, gs:// or s3://,
    as `expand_inputs`) into `output`, as a Beam pipeline with `pipeline_options` (`options`).

    Argument errors (options, inputs, two inputs of one name, a local model that does not load, an output
    folder holding predictions of other settings unless `overwrite`: `keras_vessel.serving.prediction.
    claim_output`, the local engine's rule, which also says what `overwrite` removes; a local `output` another
    process is writing: `keras_vessel.locks.folder_lock`, held while the pipeline runs) raise ValueError
    before the pipeline runs. The photographs `output` holds done already are skipped
    (`keras_vessel.serving.prediction.DoneCheck`, the local engine's rule; none with `overwrite`); each
    other is written as the local engine writes it, its files then its marker
    (`keras_vessel.serving.prediction.write_photograph`). A photograph that fails is listed in ``failures.csv`` in
    `output` and the others go on (that file and measures.csv as the local engine writes them:
    `keras_vessel.serving.prediction.record_results`); an error that stops the pipeline itself (a runner
    that cannot run, a file of the output folder that cannot be written, a full disk) raises `PipelineError`,
    one sentence (`pipeline_failure`; the traceback is logged at DEBUG level). Returns a `BeamReport` once it
    has finished.
    """
    beam_options = pipeline_options(options)
    paths = expand_inputs(inputs, files=BeamFiles)
    output = str(Path(output)) if BeamFiles._local(str(output)) else str(output)
    stems = output_stems(paths, output, files=BeamFiles)
    if BeamFiles._local(str(model_path)):
        work.load_model(model_path)  # a damaged or foreign model fails here in one sentence, not in each worker
    # a local folder has one writing run at a time, as with the local engine (its workers write under this lock)
    with folder_lock(output, what="the output folder") if BeamFiles._local(output) else contextlib.nullcontext():
        claim_output(output, prediction_settings(work, model_path, files=BeamFiles), overwrite=overwrite,
                     stems=stems, files=BeamFiles)
        done = DoneCheck.of(output, work, overwrite=overwrite, files=BeamFiles)
        try:
            with beam.Pipeline(options=beam_options) as pipeline:
                _steps(pipeline, list(zip(paths, stems)), str(model_path), work, output, done)
        except Exception as error:  # noqa: BLE001 - whatever stopped it, the runner's or ours: one sentence
            log.debug("the Beam pipeline stopped", exc_info=True)
            raise pipeline_failure(error, output) from error
        counts = _counters(pipeline.result) if hasattr(pipeline, "result") else dict.fromkeys(COUNTERS, 0)
        ours = set(stems)  # failures.csv also keeps the failures of other runs' photographs
        failed = [(row["path"], row["reason"]) for row in
                  csv.DictReader(io.StringIO(BeamFiles.read_text(BeamFiles.join(output, FAILURES_CSV)) or ""))
                  if row.get("name") in ours]
    return BeamReport(counts["done"], counts["skipped"], counts["failed"], failed, wide_fov=counts["wide_fov"],
                      low_resolution=counts["low_resolution"])
