"""The benchmark scripts' results files are committed; re-running a script must not lose earlier rows."""

import importlib.util
import json
import sys
from pathlib import Path

REPRODUCE = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", REPRODUCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fresh_rows_replace_earlier_ones_and_the_rest_are_kept_in_order():
    reproduce = load_reproduce()
    earlier = [{"name": "a", "auc": 1}, {"name": "b", "auc": 2}, {"name": "c", "auc": 3}]
    fresh = [{"name": "d", "auc": 40}, {"name": "b", "auc": 20}]
    merged = reproduce.merged_rows(earlier, fresh)
    assert merged == [{"name": "a", "auc": 1}, {"name": "b", "auc": 20}, {"name": "c", "auc": 3},
                      {"name": "d", "auc": 40}]


def test_earlier_rows_come_from_the_results_file_when_there_is_one(tmp_path):
    reproduce = load_reproduce()
    output = tmp_path / "reproduce.json"
    assert reproduce.earlier_rows(output) == []
    output.write_text(json.dumps({"benchmark": "reproduce", "results": {"runs": [{"name": "a"}]}}))
    assert reproduce.earlier_rows(output) == [{"name": "a"}]


def test_choices_between_runs_read_the_committed_results_when_the_run_folders_are_missing(tmp_path, monkeypatch):
    reproduce = load_reproduce()
    recorded = tmp_path / "reproduce.json"
    recorded.write_text(json.dumps({"results": {"runs": [
        {"name": "a", "validation": {"AUC_pooled": 0.97}}, {"name": "b", "validation": {"AUC_pooled": 0.98}}]}}))
    monkeypatch.setattr(reproduce, "RECORDED", recorded)
    a, b, c = (reproduce.Run(name, "configs/x.yaml", "drive", 0, name) for name in "abc")
    out = tmp_path / "runs"
    assert reproduce.best_by_validation([a, b], out) is b
    assert reproduce.best_by_validation([a, c], out) is None  # c is in neither place
    folder = out / "a" / "eval_validation"  # a run folder, where there is one, wins over the record
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"summary": {"AUC_pooled": 0.99}}))
    assert reproduce.best_by_validation([a, b], out) is a
