"""Peak memory and time of pooling many photographs' probabilities in `metrics.ScoreCounts`.

What `keras-vessel train` does after training (`choose_run_threshold`: every training photograph's FOV
pixels pooled, then the accuracy-optimal threshold) and `evaluate` does for the pooled AUC, without the
network: `--maps` synthetic HRF-sized (2336x3504, 8.2 MP) probability maps whose FOV scores are almost
all distinct float32 values (log-uniform over [6e-6, 1], as a network's are), each made, added and
dropped in turn. Target: the growth of the peak RSS over the RSS before pooling does not depend on the
number of maps (one map's temporaries plus the counts' 16 MiB). The former exact counts (one entry per
distinct score) grew by about 0.4 GB per map here.

    .venv/bin/python -m benchmarks.bench_pooled_counts [--maps 30]

Prints a summary and writes benchmarks/results/pooled_counts.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.bench_inference import current_rss_kib, peak_rss_kib, reset_peak
from benchmarks.common import HRF_SHAPE, add_output_argument, begin, finish
from keras_vessel.evaluation import metrics

TARGET_GROWTH_GB = 1.0  # whatever the number of maps


def synthetic_map(seed: int, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An HRF-sized float32 probability map with almost every score distinct, and a label drawn from it."""
    rng = np.random.default_rng(seed)
    prob = np.exp(-12 * rng.random(fov.shape)).astype(np.float32)  # float64 draws: scores differ across maps too
    return prob, rng.random(fov.shape, dtype=np.float32) < prob


def pool(maps: int) -> dict:
    """Pool `maps` synthetic maps, choose the threshold and the AUC; figures in MiB and seconds."""
    height, width = HRF_SHAPE
    yy, xx = np.ogrid[:height, :width]
    fov = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (0.72 * width / 2) ** 2  # clipped by the frame
    reset_peak()
    before = current_rss_kib()
    start = time.perf_counter()
    counts = metrics.ScoreCounts()
    for seed in range(maps):
        counts.add(*synthetic_map(seed, fov), fov)
    threshold = counts.accuracy_optimal_threshold()
    auc = counts.auc()
    seconds = time.perf_counter() - start
    peak = peak_rss_kib()
    growth = None if before is None or peak is None else (peak - before) / 1024
    return {"maps": maps, "fov_pixels": int(fov.sum()) * maps, "threshold": threshold, "auc": auc,
            "auc_tolerance": counts.auc_tolerance(), "rss_before_mib": None if before is None else before / 1024,
            "peak_growth_mib": growth, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=30, help="HRF-sized probability maps pooled (default 30)")
    add_output_argument(parser, "pooled_counts")
    args = parser.parse_args(argv)
    record = begin("pooled_counts", args)
    results = {"small": pool(2), "large": pool(args.maps), "target_growth_gb": TARGET_GROWTH_GB}
    for key in ("small", "large"):
        row = results[key]
        print(f"{row['maps']:3d} maps ({row['fov_pixels'] / 1e6:.0f} M FOV pixels): peak RSS growth "
              f"{row['peak_growth_mib']:.0f} MiB, {row['seconds']:.1f} s, threshold {row['threshold']:.6f}, "
              f"AUC {row['auc']:.6f} (tolerance {row['auc_tolerance']:.1e})")
    finish(record, results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
