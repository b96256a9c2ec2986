"""`keras-vessel demo`, the README's main job, end to end on the built-in synthetic set (1 epoch).

It prepares with `--workers 1`: the 28 small synthetic images take about as long as starting prepare's
worker processes. tests/cli/test_failures.py checks that a parallel prepare writes what a serial one does
(test_a_parallel_prepare_shows_no_cuda_probing_and_writes_what_a_serial_one_does).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from keras_vessel_cli.main import cli


def _run(args: list):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    shown = f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"
    return result, shown


@pytest.mark.slow
def test_demo_runs_every_step_and_resumes(tmp_path):
    out = tmp_path / "demo"
    result, shown = _run(["demo", "--output", out, "--epochs", "1", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, shown
    # It ends by saying where the report and the exported model are.
    assert f"report:          {out / 'report' / 'metrics.md'}" in result.stdout, shown
    assert f"SavedModel:      {out / 'saved_models' / 'demo' / '1'}" in result.stdout, shown
    assert (out / "saved_models" / "demo" / "1" / "saved_model.pb").is_file()
    assert (out / "report" / "roc.png").is_file() and any((out / "report" / "overlays").glob("*.png"))
    assert len(list((out / "predictions").glob("*_mask.png"))) == 3
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert "training images" in metrics["protocol"]["threshold_rule"]  # never chosen on the test set
    assert metrics["summary"]["AUC_pooled"] > 0.9  # one epoch on synthetic vessels is already far from chance
    history = (out / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header + 1 epoch

    # Re-running resumes: nothing is retrained, the same model gives the same report.
    result, shown = _run(["demo", "--output", out, "--epochs", "1", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, shown
    assert (out / "run" / "history.csv").read_text().splitlines() == history
    again = json.loads((out / "report" / "metrics.json").read_text())
    assert again["summary"]["AUC_pooled"] == pytest.approx(metrics["summary"]["AUC_pooled"])
