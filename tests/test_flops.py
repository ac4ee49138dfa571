"""The FLOPs tool reproduces the paper's model table within 2%."""

import pytest

from tools.flops import format_paper_table, model_cost, paper_table


def test_paper_table_within_two_percent():
    rows = paper_table()
    assert [r["model"] for r in rows] == ["PAN Lite", "PAN Full", "PAN En", "PAN En"]
    for row in rows:
        assert row["ours_gmacs"] == pytest.approx(row["paper_gmacs"], rel=0.02), row
    assert "| PAN Lite | resnet50 |" in format_paper_table(rows)


def test_cost_grows_with_size_and_pa_adds_little():
    rgb, lite = model_cost("RGB", "resnet18", 8, 128), model_cost("Lite", "resnet18", 8, 128)
    assert model_cost("RGB", "resnet18", 8, 256).gmacs == pytest.approx(4 * rgb.gmacs, rel=0.02)
    assert rgb.gmacs < lite.gmacs < 1.2 * rgb.gmacs
