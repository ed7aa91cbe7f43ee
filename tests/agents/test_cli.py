"""The edgelam command, called in-process through ``main(argv)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgelam import baselines
from edgelam.agents.cli import main
from edgelam.agents.cli_args import parse_sets
from edgelam.envs import registration
from tests.agents.conftest import TOY, TOY_PAR, TOY_ZERO_SUM, HintPolicy

TINY_HP = [
    *("--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64"),
    *("--hp", "policy_kwargs.net_arch=[16]"),
]


def _json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_list_json(capsys, monkeypatch):
    # only the toy ids: the real envs are checked by their own tests
    monkeypatch.setattr(registration, "GYM_ENVS", {TOY: ("tests:ToyEnv", None, 10)})
    monkeypatch.setattr(registration, "PARALLEL_ENVS", {TOY_PAR: registration.PARALLEL_ENVS[TOY_PAR]})
    entries = {e["id"]: e for e in _json(capsys, ["list", "--json"])}
    assert set(entries) == {TOY, TOY_PAR}
    assert entries[TOY]["kind"] == "gymnasium" and entries[TOY_PAR]["kind"] == "pettingzoo"
    assert entries[TOY]["baselines"] == ["random", "oracle", "zero"]
    assert entries[TOY]["scenarios"] == [] and entries[TOY]["max_episode_steps"] == 10


def test_evaluate_json_is_reproducible_and_takes_set(capsys, monkeypatch):
    # the hint policy, a baseline of the toy env for this test only (compare tests list the toy's baselines)
    monkeypatch.setitem(baselines._REGISTRY[TOY], "hint", lambda env: HintPolicy())
    argv = ["evaluate", TOY, "--policy", "oracle", "--episodes", "3", "--seed", "4", "--json"]
    out = _json(capsys, argv)
    assert out == _json(capsys, argv)
    assert [e["seed"] for e in out["episodes"]] == [4, 5, 6]
    assert out["summary"]["return"] == {"mean": 10.0, "ci95": 0.0, "n": 3}
    # the hint policy follows the observation: exact without noise, often wrong under noise 1.0
    argv = ["evaluate", TOY, "--policy", "hint", "--episodes", "4", "--seed", "4", "--json"]
    clean = _json(capsys, [*argv, "--set", "noise=0.0"])
    assert clean["summary"]["return"] == {"mean": 10.0, "ci95": 0.0, "n": 4}
    noisy = _json(capsys, [*argv, "--set", "noise=1.0"])
    assert noisy["summary"]["return"]["mean"] < 9.0
    assert noisy == _json(capsys, [*argv, "--set", "noise=1.0"])
    assert noisy != _json(capsys, [*argv, "--set", "noise=0.9"])


def test_train_then_evaluate_the_saved_run(capsys, tmp_path):
    argv = ["train", TOY, "--timesteps", "128", "--out", str(tmp_path / "run"), *TINY_HP, "--json"]
    out = _json(capsys, argv)
    assert out["num_timesteps"] >= 128 and out["model"].endswith("model.zip")
    rows = _json(capsys, ["evaluate", TOY, "--policy", out["model"], "--episodes", "2", "--json"])
    assert rows["summary"]["length"]["mean"] == 10.0


def test_train_rarl(capsys, tmp_path):
    argv = ["train", TOY_ZERO_SUM, "--algo", "rarl", "--timesteps", "256", "--iterations", "1"]
    out = _json(capsys, [*argv, "--out", str(tmp_path), *TINY_HP, "--json"])
    assert [h["trained"] for h in out["history"]] == ["router", "adversary"]
    assert all(Path(p).is_file() for p in out["models"].values())
    assert main(["train", TOY, "--algo", "rarl", "--out", str(tmp_path / "x")]) == 2


def test_compare_json(capsys, tmp_path):
    argv = ["compare", TOY, "--seeds", "0", "--timesteps", "128", "--episodes", "2", "--baselines", "zero"]
    document = _json(capsys, [*argv, "--out", str(tmp_path), "--json"])
    assert set(document["summary"]) == {"ppo", "zero"}
    assert document["settings"]["seeds"] == [0]


def test_bench_json_and_markdown(capsys, tmp_path):
    page = tmp_path / "docs" / "bench.md"
    argv = ["bench", TOY, "--steps", "200", "--live-steps", "2", "--markdown", str(page), "--json"]
    out = _json(capsys, argv)
    (env,) = out["envs"]
    assert env["env_id"] == TOY and env["steps_per_s"] > 0 and env["vector_steps_per_s"] is None
    assert env["live_mean_step_s"] is None and "backend" in env["live_note"]
    assert "installed" in out["mobile_env"]
    assert TOY in page.read_text()


def test_profile_calls_run_profile_lazily(capsys, monkeypatch, tmp_path):
    import edgelam.envs.lam as lam

    seen = {}

    def fake_run_profile(out_dir=None, n_prompts=300, quick=False, log=print):
        log("progress goes to stderr with --json")
        seen.update(out_dir=out_dir, n_prompts=n_prompts, quick=quick)
        return [tmp_path / "a.npz"]

    monkeypatch.setattr(lam, "run_profile", fake_run_profile, raising=False)
    out = _json(capsys, ["profile", "--out", str(tmp_path), "--quick", "--json"])
    assert out == {"files": [str(tmp_path / "a.npz")]}
    assert seen == {"out_dir": tmp_path, "n_prompts": 300, "quick": True}


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "edgelam_test/Nope-v0", "--policy", "random"],
        ["evaluate", TOY, "--policy", "random", "--set", "noise"],
        ["evaluate", TOY, "--policy", "random", "--set", "no_such_key=1"],
        ["evaluate", TOY, "--policy", "no_such_baseline"],
        ["train", TOY, "--algo", "dqn_typo"],
        ["evaluate", TOY],
        [],
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_parse_sets_types_values_with_yaml():
    assert parse_sets(["a.b=50", "c=true", "d=[1, 2]", "e=UMi", "f=1e-3"]) == {
        "a.b": 50,
        "c": True,
        "d": [1, 2],
        "e": "UMi",
        "f": "1e-3",
    }
