"""The model benchmark times both paths on the shipped models and reports their ratio."""

from __future__ import annotations

import pytest

from edgelam.agents.bench_models import bench_models


def test_bench_models_reports_both_paths():
    (row,) = bench_models(names=("device",), tokens=4, context=8, repeats=1)
    assert row["model"] == "device" and row["layers"] == 2
    assert row["wrapper_s_per_token"] > 0 and row["raw_s_per_token"] > 0
    assert row["overhead"] == pytest.approx(row["wrapper_s_per_token"] / row["raw_s_per_token"])
