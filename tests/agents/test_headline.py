"""The compare harness's headline table and figures: policy-dependent metrics only, no artefacts."""

from __future__ import annotations

import numpy as np
from PIL import Image

from edgelam.agents.compare import MAX_TABLE_METRICS, table_metrics, tradeoff_pair
from edgelam.agents.plots import binned_curve, plot_learning_curves, plot_tradeoff

DIRECTIONS = {"return": "max", "latency_s": "min", "energy_j": "min", "quality": "max", "loss": "min"}


def _summary():
    # snr_db and prompt_index are exogenous: equal for every policy on the same episodes
    return {
        "ppo": {"return": (-1.0, 0.1, 10), "latency_s": (0.3, 0.01, 10), "energy_j": (0.5, 0.02, 10),
                "quality": (0.9, 0.01, 10), "snr_db": (3.2, 1.0, 10), "prompt_index": (150.0, 5.0, 10),
                "virtual_queue": (4.0, 1.0, 10), "split_layer": (7.0, 1.0, 10), "loss": (2.0, 0.0, 10)},
        "random": {"return": (-2.0, 0.3, 10), "latency_s": (0.6, 0.05, 10), "energy_j": (0.7, 0.02, 10),
                   "quality": (0.8, 0.01, 10), "snr_db": (3.2, 1.0, 10), "prompt_index": (150.0, 5.0, 10),
                   "virtual_queue": (9.0, 2.0, 10), "split_layer": (12.0, 1.0, 10), "loss": (2.0, 0.0, 10)},
    }


def test_headline_columns_are_the_key_metrics_that_policies_change_and_the_budget():
    cols = table_metrics(_summary(), DIRECTIONS, cost_keys=("virtual_queue",))
    # loss has a direction but the same value for both policies; snr_db, prompt_index and split_layer have none
    assert cols == ["return", "latency_s", "energy_j", "quality", "virtual_queue"]
    assert table_metrics(_summary(), DIRECTIONS) == ["return", "latency_s", "energy_j", "quality"]
    many = {p: {**s, **{f"m{i}_s": (float(i + (p == "ppo")), 0.0, 1) for i in range(9)}} for p, s in _summary().items()}
    wide = table_metrics(many, {**DIRECTIONS, **{f"m{i}_s": "min" for i in range(9)}})
    assert len(wide) == 1 + MAX_TABLE_METRICS
    assert tradeoff_pair(cols) == ("latency_s", "energy_j")
    assert tradeoff_pair(["return", "tokens", "accepted_tokens"]) == ("tokens", "accepted_tokens")
    assert tradeoff_pair(["return", "loss"]) is None


def test_episodes_ending_at_one_timestep_give_one_point():
    steps = np.repeat(np.arange(1, 51) * 100, 8)  # 8 parallel envs end their episodes together
    returns = np.arange(steps.size, dtype=float)
    x, y = binned_curve(steps, returns, bins=25)
    assert np.all(np.diff(x) > 0) and len(x) == 25
    assert y[0] == returns[steps < 200].mean()  # bins are [0, 200), [200, 400), ...; the last one is closed


def test_figures_are_written(tmp_path):
    curve = tmp_path / "curve.csv"
    curve.write_text("timesteps,episode_return\n" + "".join(f"{100 * (i // 4 + 1)},{i}\n" for i in range(200)))
    out = plot_learning_curves({"ppo": {0: curve}}, tmp_path / "lc.png", references={"greedy": 150.0, "oracle": 150.5})
    assert Image.open(out).size[0] > 500
    out = plot_tradeoff(_summary(), "latency_s", "energy_j", tmp_path / "t.png", {"ppo": "agent", "random": "baseline"})
    assert Image.open(out).size[0] > 500
