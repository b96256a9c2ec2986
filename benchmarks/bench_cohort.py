"""Photographs per second of `predict` on a cohort: the local engine and the Beam DirectRunner, in one run.

Both engines predict the same DRIVE test photographs (20 by default) with the bundled model, masks
and measures.csv included (`--measure`), each into its own empty folder; the time is the wall clock of
the whole call (model loading and, for Beam, starting its workers included). From photographs per
second: hours per 100,000 photographs. Needs the `beam` extra (`pip install -e '.[beam]'`); exits
saying so when DRIVE is not there (`$KERAS_VESSEL_DATA`, else ../shared/data).

    .venv/bin/python -m benchmarks.bench_cohort            # --images 20 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_output_argument, begin, finish, require_drive_root

COHORT = 100_000


def _rate(count: int, seconds: float) -> dict:
    per_second = count / seconds
    return {"seconds": round(seconds, 2), "photographs_per_second": round(per_second, 3),
            "hours_per_100k": round(COHORT / per_second / 3600, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="DRIVE test photographs (at most 20)")
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    add_output_argument(parser, "cohort")
    args = parser.parse_args(argv)
    photographs = sorted((require_drive_root() / "test" / "images").glob("*.tif"))[: args.images]
    record = begin("cohort", args, extra_versions=("apache-beam",))

    from keras_vessel.models.inference import bundled_model_path
    from keras_vessel.serving.beam_engine import predict_beam
    from keras_vessel.serving.prediction import PhotographWork, predict_files

    model = bundled_model_path()
    options = {"threshold": 0.5, "measure": True}
    results = {"images": len(photographs), "model": str(model), "workers": args.workers}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        report = predict_files(model, photographs, Path(folder) / "local", progress=False, **options)
        results["local"] = _rate(len(photographs) - len(report.failures), time.perf_counter() - start)
        print(f"local engine: {results['local']}", flush=True)
        start = time.perf_counter()
        beam = predict_beam(model, [str(p) for p in photographs], Path(folder) / "beam",
                            options=[f"direct_num_workers={args.workers}", "direct_running_mode=multi_processing"],
                            work=PhotographWork(**options))
        results["beam_direct"] = _rate(beam.done, time.perf_counter() - start)
        print(f"Beam DirectRunner, {args.workers} worker processes: {results['beam_direct']}", flush=True)
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
