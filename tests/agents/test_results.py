"""edgelam results: the Markdown page is the compare table of each entry, with its note."""

from __future__ import annotations

import csv
import json

import pytest

from edgelam.agents.results import load_entries, run_results


def test_results_page_holds_each_entrys_table_and_note(tmp_path):
    settings = tmp_path / "results.yaml"
    settings.write_text(
        "- env: edgelam/SplitInference-v0\n"
        "  scenario: congested_edge\n"
        "  algos: [ppo]\n"
        "  seeds: [0]\n"
        "  timesteps: 1024\n"
        "  episodes: 2\n"
        "  note: the search baselines see the channel estimate.\n"
    )
    doc = run_results(out_dir=tmp_path / "runs", doc=tmp_path / "results.md", settings=settings)
    page = doc.read_text()
    assert "## edgelam/SplitInference-v0 (scenario `congested_edge`)" in page
    assert "the search baselines see the channel estimate." in page
    assert "training wall time per run:" in page
    # the paired verdicts, from the run's paired.csv, above the note
    with open(tmp_path / "runs" / "SplitInference" / "paired.csv") as f:
        paired = [r for r in csv.DictReader(f) if r["policy"] == "ppo"]
    ppo_line = next(ln for ln in page.splitlines() if ln.startswith("- ppo "))
    for r in paired:
        assert f"{r['verdict']} " in ppo_line and r["other"] in ppo_line
    assert page.index("Paired verdicts.") < page.index(ppo_line) < page.index("the search baselines see")
    with open(tmp_path / "runs" / "SplitInference" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    means = {r["policy"]: float(r["mean"]) for r in rows if r["metric"] == "return"}
    assert {"ppo", "neurosurgeon", "edge_only", "device_only"} <= set(means)
    for policy in ("ppo", "neurosurgeon", "edge_only", "device_only"):
        mean = means[policy]
        line = next(ln for ln in page.splitlines() if ln.startswith(f"| {policy} |"))
        cell = line.split("|")[3].strip().strip("*").strip()
        assert float(cell.split("±")[0]) == pytest.approx(mean, rel=1e-3)  # 4 significant digits


def test_results_settings_are_validated(tmp_path):
    bad = tmp_path / "results.yaml"
    bad.write_text("- env: edgelam/SplitInference-v0\n  episodes: 0\n")
    with pytest.raises(ValueError, match="episodes"):
        load_entries(bad)


def test_tuning_section_gives_each_study_record_its_row(tmp_path):
    from edgelam.agents.results import tuning_section

    assert tuning_section(tmp_path) == []
    record = {
        "env_id": "edgelam/SpecDecode-v0", "algo": "ppo", "budget": 300_000, "complete": 4, "pruned": 10,
        "wall_s": 2694.0, "settings": {"scenario": "blockage"}, "date": "2 December 2026",
        "command": "edgelam tune edgelam/SpecDecode-v0 --write",
        "test": {"episodes": 30, "seed": 10_000, "tuned": {"mean": -0.3063, "ci95": 0.0364},
                 "untuned": {"mean": -0.3563, "ci95": 0.0287}, "gain": {"mean": 0.05008, "ci95": 0.0294},
                 "verdict": "beats", "p_value": 0.00113},
    }
    (tmp_path / "spec_decode.ppo.json").write_text(json.dumps(record))
    text = "\n".join(tuning_section(tmp_path))
    row = ("| edgelam/SpecDecode-v0 | ppo | `blockage` | 300,000 | 14 (10) | 45 min | -0.3563 ± 0.029 | "
           "-0.3063 ± 0.036 | 0.05008 ± 0.029 | tuned beats untuned (p = 0.0011) |")
    assert row in text and "30 episodes from seed 10000" in text
    assert "`edgelam tune edgelam/SpecDecode-v0 --write`" in text


def test_results_only_updates_that_envs_section_and_row_and_keeps_the_others(tmp_path):
    from edgelam.agents.results import env_sections

    def settings(note: str) -> object:
        path = tmp_path / "results.yaml"
        path.write_text(
            "- env: edgelam/SplitInference-v0\n  scenario: congested_edge\n  algos: [ppo]\n  seeds: [0]\n"
            "  timesteps: 1024\n  episodes: 2\n"
            f"  note: {note}\n"
            "- env: edgelam/Offload-v0\n  algos: [ppo]\n  seeds: [0]\n  timesteps: 1024\n  episodes: 2\n"
            "  note: the first run's Offload note.\n"
        )
        return path

    doc = tmp_path / "docs" / "results.md"
    run_results(out_dir=tmp_path / "runs", doc=doc, settings=settings("the first run's note."))
    before = env_sections(doc.read_text())
    assert list(before) == ["edgelam/SplitInference-v0", "edgelam/Offload-v0"]
    # a stale Offload section must survive verbatim: a rerun of Offload would not write this line
    stale = before["edgelam/Offload-v0"].replace("the first run's Offload note.", "a note kept from before.")
    doc.write_text(doc.read_text().replace(before["edgelam/Offload-v0"], stale))
    run_results(only=["edgelam/SplitInference-v0"], out_dir=tmp_path / "runs", doc=doc,
                settings=settings("the second run's note."))
    page = doc.read_text()
    after = env_sections(page)
    assert list(after) == ["edgelam/SplitInference-v0", "edgelam/Offload-v0"]
    assert after["edgelam/Offload-v0"] == stale
    assert "the second run's note." in after["edgelam/SplitInference-v0"]
    assert "the first run's note." not in page
    assert "this call ran edgelam/SplitInference-v0 only" in page
    board = page[page.index("## Leaderboard"):page.index("## edgelam/")]
    assert "SplitInference-v0" in board and "Offload-v0" in board  # Offload's row from leaderboard.json
    assert set(json.loads((tmp_path / "docs" / "leaderboard.json").read_text())) == {
        "edgelam/SplitInference-v0", "edgelam/Offload-v0"}
    # without --only the page is the entries run, as before
    run_results(out_dir=tmp_path / "runs", doc=doc, settings=settings("the third run's note."))
    assert env_sections(doc.read_text())["edgelam/Offload-v0"] != stale


def test_algo_timesteps_give_each_algorithm_its_own_budget(tmp_path):
    from edgelam.agents.compare.plan import CompareSettings, plan_compare
    from edgelam.agents.results import ResultsEntry, entry_settings, trained_steps

    e = ResultsEntry(env="edgelam/Offload-v0", algos=("ppo", "ppo_lagrangian"), seeds=(0, 1), timesteps=3000,
                     algo_timesteps={"ppo_lagrangian": 9000})
    plan = plan_compare(entry_settings(e, tmp_path))
    steps = {(j.name, j.seed): j.timesteps for j in plan.jobs if j.kind == "agent"}
    assert steps == {("ppo", 0): 3000, ("ppo", 1): 3000, ("ppo_lagrangian", 0): 9000, ("ppo_lagrangian", 1): 9000}
    assert plan.steps_of("ppo_lagrangian") == 9000 and plan.steps_of("ppo") == 3000
    assert trained_steps(e) == "ppo trained 3000 steps, ppo_lagrangian trained 9000 steps"
    alone = ResultsEntry(env="edgelam/Offload-v0", algos=("ppo",), timesteps=3000)
    assert trained_steps(alone) == "ppo trained 3000 steps"
    with pytest.raises(ValueError, match=r"algo_timesteps\.sac"):
        ResultsEntry(env="edgelam/Offload-v0", algos=("ppo",), algo_timesteps={"sac": 10})
    with pytest.raises(ValueError, match=r"algo_timesteps\.sac"):
        plan_compare(CompareSettings("edgelam/Offload-v0", algos=("ppo",), algo_timesteps={"sac": 10},
                                     out_dir=tmp_path))
    with pytest.raises(ValueError, match=r"algo_timesteps\.ppo must be an integer"):
        plan_compare(CompareSettings("edgelam/Offload-v0", algos=("ppo",), algo_timesteps={"ppo": 0},
                                     out_dir=tmp_path))
