"""The leaderboard beside docs/results.md, its table across envs, and `edgelam results --check`."""

from __future__ import annotations

import json

import pytest

from edgelam.agents import leaderboard
from edgelam.agents.cli import main
from edgelam.agents.results import check_entry, run_results

ENV = "edgelam/Offload-v0"


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One results entry (a short PPO run, 3 test episodes), run once."""
    tmp = tmp_path_factory.mktemp("board")
    settings = tmp / "results.yaml"
    settings.write_text(f"- env: {ENV}\n  algos: [ppo]\n  seeds: [0]\n  timesteps: 512\n  episodes: 3\n"
                        "  vectorized: true\n")
    doc = run_results(out_dir=tmp / "runs", doc=tmp / "docs" / "results.md", settings=settings)
    return tmp, settings, doc


def test_results_write_the_leaderboard_and_the_table_across_envs(board):
    tmp, _, doc = board
    data = json.loads((doc.parent / "leaderboard.json").read_text())
    rec = data[ENV]
    assert rec["eval_seed"] == 10000 and rec["episodes"] == 3 and rec["scenario"] == "default"
    assert rec["cost_limit"] == pytest.approx(100.0) and rec["cost_unit"] == "J"
    greedy = rec["policies"]["greedy"]
    assert greedy["kind"] == "baseline" and greedy["return"]["n"] == 3
    results = json.loads((tmp / "runs" / "Offload" / "results.json").read_text())
    assert greedy["return"]["mean"] == pytest.approx(results["summary"]["greedy"]["return"]["mean"])
    page = doc.read_text()
    assert "## Leaderboard" in page and "| Offload |" in page.replace("Offload-v0", "Offload")
    table = leaderboard.summary_table([rec])
    best = max((p for p, v in rec["policies"].items() if p not in leaderboard.REFERENCES),
               key=lambda p: rec["policies"][p].get("score", rec["policies"][p]["return"])["mean"])
    assert table[1][3] == best  # the best online baseline, the references (random, hindsight) left out
    # the agent-vs-baseline column is the run's own paired verdict of the two (paired.csv)
    with open(tmp / "runs" / "Offload" / "paired.csv") as f:
        import csv

        pairs = {(r["policy"], r["other"]): r["verdict"] for r in csv.DictReader(f)}
    assert table[1][7].split(" (p = ")[0] == pairs[("ppo", best)]
    assert "The best RL agent against the best online baseline" in page


def _record(env: str, paired: list[dict]) -> dict:
    score = {"mean": 0.0, "ci95": 0.01, "n": 10}
    return {"env_id": env, "scenario": "hard", "hindsight": "exact", "paired": paired, "policies": {
        "ppo": {"kind": "agent", "score": {**score, "mean": 0.8}},
        "greedy": {"kind": "baseline", "score": {**score, "mean": 0.9}},
        "lyapunov": {"kind": "baseline", "score": {**score, "mean": 0.7}},
        "hindsight": {"kind": "baseline", "score": {**score, "mean": 1.0}},
    }}


def test_agent_vs_baseline_is_the_paired_verdict_of_the_best_two_read_from_either_side():
    pair = {"policy": "ppo", "other": "greedy", "verdict": "loses to", "p_value": 0.01}
    ahead = {"policy": "greedy", "other": "ppo", "verdict": "loses to", "p_value": 0.02}  # stored the other way
    noise = {"policy": "ppo", "other": "lyapunov", "verdict": "beats", "p_value": 0.001}  # not the best baseline
    records = [_record("edgelam/A-v0", [noise, pair]), _record("edgelam/B-v0", [ahead]),
               _record("edgelam/C-v0", [noise])]
    table = leaderboard.summary_table(records)
    assert [row[7] for row in table[1:]] == ["loses to (p = 0.01)", "beats (p = 0.02)", "-"]
    assert leaderboard.agent_tally(records) == {"beats": ["B-v0"], "ties": [], "loses to": ["A-v0"], "-": ["C-v0"]}


def test_check_confirms_a_baseline_and_a_saved_agent_and_refuses_a_tampered_record(board):
    tmp, settings, doc = board
    out = check_entry(f"{ENV}:greedy", out_dir=tmp / "runs", doc=doc, settings=settings)
    assert out["ok"] and out["identical"] and out["measured"]["n"] == 3
    agent = check_entry(f"{ENV}:ppo", out_dir=tmp / "runs", doc=doc, settings=settings)
    assert agent["ok"] and agent["identical"]  # the run folder's saved model, reused
    # the command, with the shipped results settings: the baseline job is the same
    assert main(["results", "--check", f"{ENV}:greedy", "--out", str(tmp / "runs"), "--doc", str(doc)]) == 0
    path = doc.parent / "leaderboard.json"
    data = json.loads(path.read_text())
    rec = data[ENV]["policies"]["greedy"]["return"]
    rec["mean"] += 10 * (rec["ci95"] or 1.0)  # a number the policy does not reproduce
    path.write_text(json.dumps(data))
    bad = check_entry(f"{ENV}:greedy", out_dir=tmp / "runs", doc=doc, settings=settings)
    assert not bad["ok"] and not bad["identical"]
    assert main(["results", "--check", f"{ENV}:greedy", "--out", str(tmp / "runs"), "--doc", str(doc)]) == 1
    with pytest.raises(ValueError, match="no entry 'nope'"):
        check_entry(f"{ENV}:nope", out_dir=tmp / "runs", doc=doc, settings=settings)
    with pytest.raises(ValueError, match="not ENV:POLICY"):
        check_entry("greedy", out_dir=tmp / "runs", doc=doc, settings=settings)
    with pytest.raises(ValueError, match="not on the leaderboard"):
        check_entry("edgelam/SpecDecode-v0:leviathan", out_dir=tmp / "runs", doc=doc, settings=settings)


def test_check_of_an_agent_without_its_saved_run_says_what_to_run(tmp_path):
    settings = tmp_path / "results.yaml"
    settings.write_text(f"- env: {ENV}\n  algos: [ppo]\n  seeds: [0]\n  episodes: 2\n")
    path = tmp_path / "leaderboard.json"
    path.write_text(json.dumps({ENV: {"env_id": ENV, "scenario": "default", "eval_seed": 10000, "episodes": 2,
                                      "policies": {"ppo": {"kind": "agent", "return": {"mean": 1.0, "ci95": 0.1,
                                                                                       "n": 2}}}}}))
    with pytest.raises(ValueError, match="no saved agent"):
        check_entry(f"{ENV}:ppo", out_dir=tmp_path / "runs", doc=tmp_path / "results.md", settings=settings)
