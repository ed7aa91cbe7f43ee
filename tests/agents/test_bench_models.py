"""The model benchmark times both paths on the shipped models and reports their ratio."""

from __future__ import annotations

import pytest

from edgelam.agents.bench_models import bench_models


def test_bench_models_reports_both_paths():
    (row,) = bench_models(names=("device",), tokens=4, context=8, repeats=1)
    assert row["model"] == "device" and row["layers"] == 2
    assert row["wrapper_s_per_token"] > 0 and row["raw_s_per_token"] > 0
    assert row["overhead"] == pytest.approx(row["wrapper_s_per_token"] / row["raw_s_per_token"])


def test_bench_speculative_reports_measured_and_predicted_rates():
    from edgelam.agents.bench_models import bench_speculative

    res = bench_speculative(gammas=(0, 2), prompts=1, tokens=4)
    assert 0.0 < res["alpha"] < 1.0 and res["c"] > 0.0
    base, spec = res["rows"]
    assert base["gamma"] == 0 and base["predicted_tokens_per_s"] == base["tokens_per_s"] > 0
    # Leviathan et al. Theorem 3.8 from the measured alpha and c
    expected = base["tokens_per_s"] * (1 - res["alpha"] ** 3) / ((1 - res["alpha"]) * (2 * res["c"] + 1))
    assert spec["predicted_tokens_per_s"] == pytest.approx(expected)
