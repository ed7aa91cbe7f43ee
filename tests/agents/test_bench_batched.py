"""`edgelam bench` on a PettingZoo env with a batched game: agent-steps/s, scaling in N, PPO training speed."""

from __future__ import annotations

import json

from edgelam.agents import bench, bench_marl
from edgelam.agents.cli import main

ENV_ID = "edgelam/MultiUserOffload-v0"


def test_bench_reports_the_batched_game_and_the_agent_counts():
    result = bench.bench([ENV_ID], steps=200, num_envs=8, live_steps=0, agent_counts=(4, 64), agent_steps=256)
    (row,) = result["envs"]
    assert row["vector_unit"] == "agent-steps/s" and row["vector_num_envs"] == 8 and row["vector_steps_per_s"] > 0
    assert [a["num_agents"] for a in row["agents"]] == [4, 64]
    assert all(a["agent_steps_per_s"] > 0 for a in row["agents"])
    assert [a["steps"] for a in row["agents"]] == [max(256 // n, bench.AGENT_MIN_STEPS) for n in (4, 64)]
    table = bench.agent_rows(result)
    assert table[0] == ["env", "N = 4 agent-steps/s", "N = 64 agent-steps/s"] and table[1][0] == ENV_ID
    assert "agent-steps (x8 games)" in bench.rows(result)[1][4]
    page = bench.to_markdown(result)
    assert "## Agents per PettingZoo env" in page and "| N = 64 agent-steps/s |" in page


def test_bench_marl_train_times_both_simulators_with_the_same_ppo(capsys, monkeypatch):
    tiny = {"n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}
    result = bench_marl.bench_marl_train(ENV_ID, timesteps=256, hyperparams=tiny, repeats=1)
    assert result["agent_rows"] == 8 and result["hyperparams"]["n_steps"] == 32
    assert result["supersuit_steps_per_s"] > 0 and result["batched_steps_per_s"] > 0
    assert result["ratio"] == result["batched_steps_per_s"] / result["supersuit_steps_per_s"]
    assert len(result["runs"]["batched"]) == len(result["runs"]["supersuit"]) == 1
    assert bench_marl.marl_rows(result)[1][1] == "n_envs 2, n_steps 32, batch 64, epochs 1"
    calls = []
    monkeypatch.setattr(bench_marl, "bench_marl_train", lambda **kw: calls.append(kw) or result)
    assert main(["bench", "--marl-train", "--marl-timesteps", "512", "--marl-env-settings", "--json"]) == 0
    assert calls == [{"timesteps": 512, "hyperparams": {}}]
    assert json.loads(capsys.readouterr().out)["ratio"] == result["ratio"]
    assert main(["bench", "--marl-train"]) == 0
    assert calls[-1] == {"timesteps": 65_536, "hyperparams": None} and "SuperSuit" in capsys.readouterr().out


def test_a_batched_env_is_timed_after_its_untimed_warmup_calls(monkeypatch):
    stepped = []

    class Counting:
        def step(self, action):
            stepped.append(action)

        def close(self):
            stepped.append("closed")

    actions = list(range(bench.WARMUP_CALLS + 3))
    clock = iter(range(100))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    assert bench._time_batched(Counting(), actions) == 3.0  # the 3 timed calls, 1 s each on this clock
    assert stepped == [*actions, "closed"]
