"""The compare harness: files, table == CSV, best marks, reuse of finished runs, interruption."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console

from edgelam import baselines
from edgelam.agents.compare import compare, format_cell
from edgelam.agents.plots import plot_v_tradeoff
from edgelam.agents.train import SB3Trainer
from tests.agents.conftest import TOY, TOY_ZERO_SUM

PNG = b"\x89PNG\r\n\x1a\n"


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=100), buffer


def _run(out_dir, tiny_ppo, console, seeds=(0, 1)):
    return compare(
        TOY,
        seeds=seeds,
        timesteps=256,
        episodes=3,
        out_dir=out_dir,
        hyperparams={"ppo": tiny_ppo},
        progress=False,
        console=console,
    )


def test_outputs_exist_parse_and_the_table_equals_the_csv(tmp_path, tiny_ppo):
    console, printed = _console()
    result = _run(tmp_path, tiny_ppo, console)
    for name in ("results.csv", "results.json", "report.md", "learning_curves.png", "metrics.png"):
        assert (tmp_path / name).is_file(), name
    for name in ("learning_curves.png", "metrics.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)

    assert result.kinds == {"ppo": "agent", "random": "baseline", "oracle": "baseline", "zero": "baseline"}
    assert result.summary["ppo"]["return"][2] == 2 * 3  # pooled over 2 seeds x 3 episodes
    assert result.summary["oracle"]["return"][2] == 3
    assert result.directions["quality"] == "max" and result.directions["energy_j"] == "min"
    assert "oracle" in result.best["return"] and result.best["energy_j"] == ["zero"]

    with open(tmp_path / "results.csv", newline="") as f:
        csv_rows = {(r["policy"], r["metric"]): r for r in csv.DictReader(f)}
    header, *body = result.table
    assert header[:2] == ["policy", "kind"] and len(header) == 2 + len(result.metrics)
    text = printed.getvalue()
    for row in body:
        policy = row[0]
        assert row[1] == result.kinds[policy]
        for metric, cell in zip(result.metrics, row[2:], strict=True):
            stored = csv_rows[(policy, metric)]
            assert cell.removesuffix(" *") == format_cell(float(stored["mean"]), float(stored["ci95"]))
            assert cell.endswith(" *") == (stored["best"] == "1")
            assert cell in text
    document = json.loads((tmp_path / "results.json").read_text())
    for (policy, metric), stored in csv_rows.items():
        assert document["summary"][policy][metric]["mean"] == float(stored["mean"])
    assert len(document["episodes"]) == 2 * 3 + 3 * 3
    assert document["machine"]["cpu_count"] >= 1
    report = (tmp_path / "report.md").read_text()
    assert "| policy | kind |" in report and "cpu_count" in report and "Wall time" in report


def test_rerun_reuses_finished_runs_and_interrupted_runs_resume(tmp_path, tiny_ppo, monkeypatch):
    console, _ = _console()
    real_fit = SB3Trainer.fit
    calls = []

    def fit_then_interrupt(self, run, start, progress):
        calls.append(run.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(self, run, start, progress)

    monkeypatch.setattr(SB3Trainer, "fit", fit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, tiny_ppo, console)
    assert (tmp_path / "runs" / "ppo" / "seed_0" / "model.zip").is_file()
    monkeypatch.setattr(SB3Trainer, "fit", real_fit)

    first = _run(tmp_path, tiny_ppo, console)
    assert [r["reused"] for r in first.runs] == [True, False]

    def inapplicable(env):
        raise ValueError("needs another scenario")

    monkeypatch.setitem(baselines._REGISTRY[TOY], "needs_other_scenario", inapplicable)
    second = _run(tmp_path, tiny_ppo, console)
    assert all(r["reused"] for r in second.runs)
    assert second.summary == first.summary  # the inapplicable baseline is skipped, recorded
    settings = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert settings["skipped_baselines"] == {"needs_other_scenario": "needs another scenario"}
    assert second.skipped == {"needs_other_scenario": "needs another scenario"} and not first.skipped
    with pytest.raises(ValueError, match="needs another scenario"):
        compare(
            TOY,
            seeds=(0,),
            timesteps=256,
            episodes=1,
            out_dir=tmp_path,
            baselines=["needs_other_scenario"],
            hyperparams={"ppo": tiny_ppo},
            progress=False,
            console=console,
        )


def test_v_tradeoff_plot(tmp_path):
    v, cost, queue = [1, 10, 100], [3.0, 2.0, 1.5], [0.1, 0.4, 0.9]
    path = plot_v_tradeoff(v, cost, queue, tmp_path / "v.png", "energy_j", "queue")
    assert path.read_bytes().startswith(PNG)
    with pytest.raises(ValueError):
        plot_v_tradeoff([1, 10], [3.0], [0.1, 0.2], tmp_path / "bad.png")


def test_adversarial_env_trains_rarl_and_reports_the_protagonist(tmp_path, tiny_ppo):
    console, _ = _console()
    kwargs = {"seeds": (0,), "timesteps": 512, "episodes": 2, "out_dir": tmp_path, "progress": False}
    result = compare(TOY_ZERO_SUM, hyperparams={"rarl": tiny_ppo}, console=console, **kwargs)
    assert result.kinds == {"rarl": "agent", "random": "baseline"}
    (run,) = result.runs
    assert not run["reused"] and (tmp_path / "runs" / "rarl" / "seed_0" / "history.json").is_file()
    episode = result.episodes[0]
    assert not any("/" in key for key in episode)  # the router's view: its return and info
    assert episode["return"] in range(-8, 9, 2)  # 8 steps of +-1
    again = compare(TOY_ZERO_SUM, hyperparams={"rarl": tiny_ppo}, console=console, **kwargs)
    assert again.runs[0]["reused"] and again.summary == result.summary
    with pytest.raises(ValueError, match="adversarial"):
        compare(TOY_ZERO_SUM, algos=("ppo",), console=console, **kwargs)
