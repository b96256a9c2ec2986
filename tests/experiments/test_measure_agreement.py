"""The measure-agreement experiment's statistics and table (experiments/measure_agreement.py)."""

import math

import pytest

from experiments.measure_agreement import agreement, pearson, table


def test_pearson_against_known_values():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(pearson([1, 2], [1, 2])) and math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert pearson([1, 2, 3, math.nan], [1, 3, 2, 5]) == pytest.approx(0.5)


def test_agreement_bias_relative_bias_and_correlation():
    images = {f"im{i}": {"manual": {"vessel_length_px": m, "mean_width_px": math.nan},
                         "predicted": {"vessel_length_px": p, "mean_width_px": 3.0}}
              for i, (m, p) in enumerate([(100.0, 90.0), (200.0, 190.0), (300.0, 290.0)])}
    result = agreement(images, ["vessel_length_px", "mean_width_px"])
    length = result["vessel_length_px"]
    assert (length["n"], length["bias"], length["manual_mean"], length["predicted_mean"]) == (3, -10.0, 200.0, 190.0)
    assert length["relative_bias"] == pytest.approx(-0.05) and length["pearson_r"] == pytest.approx(1.0)
    assert result["mean_width_px"] == {"n": 0}
    text = table({"runs": {"bundled:drive": {"threshold": 0.5, "images": images, "agreement": result}}},
                 columns=["vessel_length_px", "mean_width_px"])
    assert "### bundled:drive (3 images, threshold 0.5)" in text
    assert "| `vessel_length_px` | 200 | 190 | -10 | -5% | 1 |" in text
    assert "| `mean_width_px` | - | - | - | - | - |" in text
