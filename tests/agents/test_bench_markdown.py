"""docs/benchmarks.md as `edgelam bench --markdown` writes it: every live-backend line carries its figure."""

from __future__ import annotations

import re

from edgelam.agents.bench import to_markdown


def _env(env_id: str, live_s: float | None, note: str) -> dict:
    return {
        "env_id": env_id, "kind": "gymnasium", "steps_per_s": 1e5, "mean_step_s": 1e-5, "vector_steps_per_s": None,
        "vector_num_envs": 0, "live_mean_step_s": live_s, "live_note": note,
    }


def test_live_backend_lines_print_the_measured_step_time_with_its_unit():
    result = {
        "envs": [
            _env("edgelam/A-v0", 0.0342, "mean over 5 steps"),
            _env("edgelam/B-v0", 1.19, "mean over 5 steps"),
            _env("edgelam/C-v0", None, "the env takes no backend= argument"),
        ],
        "mobile_env": {"installed": False, "env_id": "mobile-small-central-v0", "note": "not installed"},
        "machine": {"cpu_count": 2},
    }
    page = to_markdown(result)
    section = page.split("## Live backend")[1].split("## Machine")[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert lines[0] == "- edgelam/A-v0: 34.2 ms per step (mean over 5 steps)"
    assert lines[1] == "- edgelam/B-v0: 1.19e+03 ms per step (mean over 5 steps)"
    assert lines[2] == "- edgelam/C-v0: no live figure (the env takes no backend= argument)"
    for line in lines[:2]:
        assert re.search(r"\d ms per step", line)
