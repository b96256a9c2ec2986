"""Photographs per second of `predict` on a cohort: the local engine and the Beam DirectRunner, in one run.

Both engines predict the same DRIVE test photographs (20 by default) with the bundled model, masks
and measures.csv included (`--measure`), each into its own empty folder; the time is the wall clock of
the whole call (model loading and, for Beam, starting its workers included). Each engine also runs on
the first `--warm` photographs alone: the difference is the time of the others, the rate a cohort sees
once started (``marginal``), from which hours per 100,000 photographs are given. Needs the `beam` extra (`pip install -e '.[beam]'`); exits
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


def _rates(counts: tuple[int, int], seconds: tuple[float, float]) -> dict:
    """The whole run's rate, and the marginal one: (photographs of the long run - of the short one) per
    second of difference, and hours per `COHORT` photographs at each."""
    whole = counts[1] / seconds[1]
    marginal = (counts[1] - counts[0]) / max(seconds[1] - seconds[0], 1e-9)
    return {"seconds": [round(s, 2) for s in seconds], "photographs": list(counts),
            "photographs_per_second": round(whole, 3), "hours_per_100k": round(COHORT / whole / 3600, 1),
            "marginal_photographs_per_second": round(marginal, 3),
            "marginal_hours_per_100k": round(COHORT / marginal / 3600, 1),
            "startup_seconds": round(seconds[1] - counts[1] / marginal, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="DRIVE test photographs (at most 20)")
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    parser.add_argument("--warm", type=int, default=4, help="photographs of the short run (start-up cost)")
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
    beam_options = [f"direct_num_workers={args.workers}", "direct_running_mode=multi_processing"]
    engines = {
        "local": lambda paths, out: len(paths) - len(
            predict_files(model, paths, out, progress=False, **options).failures),
        "beam_direct": lambda paths, out: predict_beam(
            model, [str(p) for p in paths], out, options=beam_options, work=PhotographWork(**options)).done,
    }
    with tempfile.TemporaryDirectory() as folder:
        for engine, run in engines.items():
            counts, seconds = [], []
            for size in (args.warm, len(photographs)):
                start = time.perf_counter()
                counts.append(run(photographs[:size], Path(folder) / f"{engine}_{size}"))
                seconds.append(time.perf_counter() - start)
            results[engine] = _rates(tuple(counts), tuple(seconds))
            print(f"{engine}: {results[engine]}", flush=True)
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
