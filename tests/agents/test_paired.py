"""Paired verdicts: a Wilcoxon signed-rank test over the shared evaluation episodes decides beats / ties / loses to."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from edgelam.agents.compare import compare
from edgelam.agents.metrics import ci95_halfwidth, paired_test, paired_verdicts, per_seed_means, verdict_sentence
from edgelam.agents.results import ResultsEntry, load_entries
from edgelam.envs import ENV_IDS
from tests.agents.conftest import TOY

# shared per-episode difficulty, far larger than the gap between the two policies
EPISODE = np.array([0.0, 120.0, -80.0, 45.0, -150.0, 10.0, 90.0, -30.0, 60.0, -5.0])


def test_a_consistent_gap_beats_even_where_the_intervals_overlap():
    gap = np.array([3.0, 1.0, 4.0, 10.0, 5.0, 9.0, 2.0, 6.0, 8.0, 7.0])  # |d| = 1..10, no ties, no zeros
    a, b = EPISODE + gap, EPISODE
    assert a.mean() - b.mean() < ci95_halfwidth(a) + ci95_halfwidth(b)  # the 95% intervals overlap
    test = paired_test(a, b)
    # exact null distribution of W+ over 2^10 sign patterns: only all-positive reaches W- = 0
    assert test["p_value"] == pytest.approx(2 / 1024, rel=1e-12)
    assert test["verdict"] == "beats" and test["n"] == 10 and test["mean_diff"] == pytest.approx(5.5)
    assert paired_test(b, a)["verdict"] == "loses to"
    assert paired_test(a, b, direction="min")["verdict"] == "loses to"  # e.g. latency: higher is worse


def test_wilcoxon_p_value_by_hand_and_what_ties():
    gap = np.arange(1.0, 11.0)
    gap[0] = -1.0  # W- = 1: sign patterns with W- <= 1 are {} and {1}
    assert paired_test(EPISODE + gap, EPISODE)["p_value"] == pytest.approx(4 / 1024, rel=1e-12)
    # a gap that changes sign episode by episode: the means differ, the test cannot tell them apart
    swing = np.array([9.0, -8.0, 7.0, -6.0, 5.0, -4.0, 3.0, -2.0, 10.0, -1.0])
    test = paired_test(EPISODE + swing, EPISODE)
    assert test["mean_diff"] > 0 and test["p_value"] > 0.05 and test["verdict"] == "ties"
    # four episodes, all better: p = 2 / 16 = 0.125, no verdict at 95%
    four = paired_test(EPISODE[:4] + 1.0 + np.arange(4), EPISODE[:4])
    assert four["p_value"] == pytest.approx(0.125) and four["verdict"] == "ties"
    same = paired_test(EPISODE, EPISODE)
    assert same["verdict"] == "ties" and same["p_value"] == 1.0 and same["mean_diff"] == 0.0
    with pytest.raises(ValueError, match="as many values"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="direction"):
        paired_test([1.0, 2.0], [1.0, 3.0], direction="up")


def test_agents_enter_with_their_mean_over_training_seeds_per_episode():
    rows = [
        {"policy": "ppo", "train_seed": t, "seed": 100 + i, "return": float(EPISODE[i] + 2.0 + (1.0 if t else -1.0))}
        for t in (0, 1)
        for i in range(10)
    ] + [{"policy": "base", "seed": 100 + i, "return": float(EPISODE[i])} for i in range(10)]
    assert per_seed_means(rows, "ppo", "return") == {100 + i: EPISODE[i] + 2.0 for i in range(10)}
    (entry,) = paired_verdicts(rows, ["ppo", "base"])
    assert entry["n"] == 10 and entry["mean_diff"] == pytest.approx(2.0) and entry["verdict"] == "beats"
    assert verdict_sentence([entry], "ppo") == "ppo beats base"
    assert verdict_sentence([entry], "base") == "base loses to ppo"
    # only shared episodes are paired
    (entry,) = paired_verdicts([r for r in rows if r["seed"] != 100 or r["policy"] == "ppo"], ["ppo", "base"])
    assert entry["n"] == 9


def test_compare_writes_the_verdicts_to_json_csv_and_report(tmp_path, tiny_ppo):
    buffer = io.StringIO()
    result = compare(
        TOY, seeds=(0, 1), timesteps=256, episodes=10, out_dir=tmp_path, hyperparams={"ppo": tiny_ppo},
        progress=False, console=Console(file=buffer, width=100),
    )
    document = json.loads((tmp_path / "results.json").read_text())
    names = ["ppo", "random", "oracle", "zero"]
    assert list(result.kinds) == names
    pairs = {(e["policy"], e["other"]): e for e in document["paired"]}
    assert set(pairs) == {(a, b) for i, a in enumerate(names) for b in names[i + 1 :]}
    assert all(e["n"] == 10 for e in pairs.values())  # 10 shared episodes, ppo's 2 seeds averaged
    # the oracle is right every step (return 10), zero only when the target is bin 0
    assert pairs[("oracle", "zero")]["verdict"] == "beats" and pairs[("random", "oracle")]["verdict"] == "loses to"
    # recomputed from the episode rows of the JSON, independently of the stored verdicts
    by_seed = {p: {r["seed"]: r["return"] for r in document["episodes"] if r["policy"] == p} for p in names[1:]}
    d = np.array([by_seed["oracle"][s] - by_seed["zero"][s] for s in sorted(by_seed["zero"])])
    assert np.all(d > 0) and pairs[("oracle", "zero")]["mean_diff"] == pytest.approx(d.mean())
    with open(tmp_path / "paired.csv", newline="") as f:
        stored = {(r["policy"], r["other"]): r for r in csv.DictReader(f)}
    assert {k: v["verdict"] for k, v in stored.items()} == {k: v["verdict"] for k, v in pairs.items()}
    assert float(stored[("oracle", "zero")]["p_value"]) == pairs[("oracle", "zero")]["p_value"] < 0.05
    report = (tmp_path / "report.md").read_text()
    assert "## Paired verdicts" in report and "Wilcoxon signed-rank" in report
    oracle_line = next(ln for ln in report.splitlines() if ln.startswith("- oracle "))
    assert "beats zero" in oracle_line
    assert next(ln for ln in report.splitlines() if ln.startswith("- ppo ")) in report
    assert oracle_line.removeprefix("- ") in buffer.getvalue()


def test_a_note_that_states_a_verdict_is_refused():
    with pytest.raises(ValueError, match=r"note of edgelam/Offload-v0: 'beats' states a verdict"):
        ResultsEntry(env="edgelam/Offload-v0", note="PPO beats lyapunov because it learns the tiers.")
    with pytest.raises(ValueError, match="'ties'"):
        ResultsEntry(env="edgelam/Offload-v0", note="PPO ties greedy.")
    ResultsEntry(env="edgelam/Offload-v0", note="greedy prices each tier's expected quality.")
    entries = load_entries()  # loading checks that the shipped notes name no verdict
    assert sorted(e.env for e in entries) == sorted(ENV_IDS)  # one entry per registered id
