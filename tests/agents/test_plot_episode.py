"""edgelam plot-episode: one episode recorded through the evaluation loop's policies, drawn with units."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import edgelam.envs  # noqa: F401
from edgelam import baselines
from edgelam.agents.cli import main
from edgelam.agents.episode_plot import panel_keys, plot_episode, record_episode
from edgelam.agents.evaluate import evaluate
from edgelam.agents.plots import unit_of


def test_the_trace_is_the_episode_a_manual_loop_plays():
    env_id = "edgelam/Offload-v0"
    trace = record_episode("greedy", env_id, seed=3)
    env = gym.make(env_id)
    policy = baselines.make("greedy", env)
    obs, _ = env.reset(seed=3)
    latency, actions, total = [], [], 0.0
    done = False
    while not done:
        action, _ = policy.predict(obs)
        obs, reward, terminated, truncated, info = env.step(int(action))
        latency.append(info["latency_s"])
        actions.append(int(action))
        total += reward
        done = terminated or truncated
    assert trace.steps == len(latency) == 200
    np.testing.assert_array_equal(trace.series("latency_s")[:, 0], latency)
    np.testing.assert_array_equal(np.concatenate(trace.actions), actions)
    assert trace.episode_return == pytest.approx(total, abs=1e-12)
    # the same episode the evaluation loop plays first with this seed
    assert trace.episode_return == pytest.approx(evaluate("greedy", env_id, episodes=1, seed=3)[0]["return"])
    keys = panel_keys(trace)
    assert keys[:2] == ["latency_s", "energy_j"] and "prompt_index" not in keys
    assert all(np.ptp(trace.series(k)[np.isfinite(trace.series(k))]) > 0 for k in keys)


def test_units_come_from_the_names():
    assert [unit_of(k) for k in ("latency_s", "energy_j", "uplink_rate_bps", "snr_db", "power_w", "quality")] == [
        "s", "J", "Mbit/s", "dB", "W", ""]


def test_plot_is_a_png_with_one_panel_per_metric(tmp_path):
    trace = record_episode("leviathan", "edgelam/SpecDecode-v0", seed=0)
    out = plot_episode(trace, tmp_path / "spec.png")
    width, height = Image.open(out).size
    assert width > 600 and height > 150 * (len(panel_keys(trace)) + 2) * 0.8


def test_cli_on_a_multi_agent_and_an_adversarial_env(tmp_path, capsys):
    assert main(["plot-episode", "edgelam/MultiUserOffload-v0", "--policy", "greedy", "--seed", "1",
                 "--out", str(tmp_path / "muo.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (tmp_path / "muo.png").stat().st_size > 10_000 and out["steps"] == 200
    row = evaluate("greedy", "edgelam/MultiUserOffload-v0", episodes=1, seed=1)[0]
    assert out["return"] == pytest.approx(row["return"])
    # RobustRouting: the router plays greedy against the --adversary; the router's return is reported
    assert main(["plot-episode", "edgelam/RobustRouting-v0", "--policy", "greedy", "--out",
                 str(tmp_path / "rr.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = evaluate({"router": "greedy", "adversary": "random"}, "edgelam/RobustRouting-v0", episodes=1)[0]
    assert out["return"] == pytest.approx(row["return/router"]) and out["return"] < 0
    assert main(["plot-episode", "edgelam/Offload-v0", "--policy", "no_such_policy", "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "no_such_policy" in capsys.readouterr().err


def test_evaluate_cli_plays_a_router_baseline_against_the_adversary(capsys):
    """`edgelam evaluate edgelam/RobustRouting-v0 --policy greedy` gave the adversary the router's action."""
    assert main(["evaluate", "edgelam/RobustRouting-v0", "--policy", "greedy", "--episodes", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["return/router"]["mean"] < 0


def test_a_name_without_a_unit_takes_the_env_s_info_units():
    """virtual_queue is in the unit of the budgeted metric: Offload-v0 states it per scenario."""
    assert record_episode("lyapunov", "edgelam/Offload-v0", seed=0).units["virtual_queue"] == "J"
    usd = record_episode("lyapunov", "edgelam/Offload-v0", seed=0, env_kwargs={"budget.metric": "cloud_cost_usd",
                                                                               "budget.per_task": 2e-5})
    assert usd.units["virtual_queue"] == "USD" and "virtual_queue" in panel_keys(usd)
    assert record_episode("equal", "edgelam/FedFTPower-v0", seed=0).units["loss"] == "nats/token"
