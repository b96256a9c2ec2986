"""docs/RESULTS.md is one page for users whose tables are generated from the committed results files."""

import json
from pathlib import Path

import benchmarks.common
from experiments.summarize import BLOCK, TABLES, networks_table, render

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md"


def test_the_results_page_is_one_page():
    assert RESULTS.stat().st_size <= 20_000


def test_every_table_of_the_results_page_is_generated_and_up_to_date():
    text = RESULTS.read_text()
    names = [match.group("name") for match in BLOCK.finditer(text)]
    assert {"paper", "joint", "cross_dataset"} <= set(names) <= set(TABLES)
    assert render(text) == text, "run: python -m experiments.summarize --write docs/RESULTS.md"


def test_rendering_replaces_only_the_blocks():
    text = "before\n<!-- table: joint (x) -->\nold rows\n<!-- end of table -->\nafter\n"
    rendered = render(text)
    assert rendered.startswith("before\n<!-- table: joint (x) -->\n| dataset |")
    assert rendered.endswith("<!-- end of table -->\nafter\n") and "old rows" not in rendered


def test_the_network_rule_needs_a_third_of_the_inference_time(tmp_path, monkeypatch):
    committed = json.loads((benchmarks.common.RESULTS / "networks.json").read_text())
    monkeypatch.setattr(benchmarks.common, "RESULTS", tmp_path)
    for ratio, adopted in ((0.30, True), (0.34, False)):
        speed = json.loads(json.dumps(committed))
        for row in speed["results"]["networks"].values():
            if row["inference_ratio"] < 1:
                row["inference_ratio"] = ratio
        (tmp_path / "networks.json").write_text(json.dumps(speed))
        text = networks_table()
        assert f"(ratio {ratio:.2f}); adopt = {adopted}" in text
