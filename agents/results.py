"""``docs/results.md``: the compare table of every env, from the runs in ``configs/agents/results.yaml``.

``edgelam results [--only ENV ...] [--out runs/results] [--doc docs/results.md]``
runs :func:`edgelam.agents.compare.compare` for each entry (resumable: finished
training runs in ``out/<env>`` are reused), then writes one Markdown page with each
env's table (the return, then the mean episode cost and the violation rate against the
scenario's cost limit where it has one, then the key metrics), its settings, the paired
verdicts of its policies (``paired.csv``: "beats", "ties" or "loses to" by a Wilcoxon
signed-rank test over the shared evaluation episodes),
the wall time and the machine. Numbers in the page are exactly those of each run's
``results.csv``. Verdicts come only from the paired test: an entry's note explains the
ranking and names no verdict itself (:data:`VERDICT_WORDS` are refused in notes).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgelam.agents import leaderboard
from edgelam.agents.common import env_name, markdown_table
from edgelam.agents.compare import PAIRED_NOTE, CompareSettings, compare, cost_note, paired_lines, score_note
from edgelam.agents.compare.plan import algo_timesteps_checked
from edgelam.envs.core.config import bounds, build, configs_dir

# words that state a verdict; in docs/results.md they come from the paired test alone
VERDICT_WORDS = ("beats", "beat", "ties", "loses to", "outperforms", "better than", "worse than")


@dataclass(frozen=True)
class ResultsEntry:
    """One env's compare settings (validated like scenarios)."""

    env: str
    scenario: str = "default"
    algos: tuple[str, ...] = ("ppo",)
    seeds: tuple[int, ...] = field(default=(0, 1), metadata=bounds(0, None))
    timesteps: int = field(default=50_000, metadata=bounds(1, None))
    algo_timesteps: dict[str, int] = field(default_factory=dict)  # algo -> its steps, instead of `timesteps`
    episodes: int = field(default=10, metadata=bounds(1, None))
    vectorized: bool = False  # train on the env's batched vector env (RARL: each side on its batched game)
    note: str = ""  # why the table looks as it does (printed under it); no numbers, no verdicts: the run gives those

    def __post_init__(self) -> None:
        try:
            algo_timesteps_checked(self.algo_timesteps, self.algos)
        except ValueError as exc:
            raise ValueError(f"results entry {self.env}: {exc}") from None
        words = [w for w in VERDICT_WORDS if re.search(rf"\b{w}\b", self.note, flags=re.IGNORECASE)]
        if words:
            raise ValueError(
                f"note of {self.env}: {', '.join(map(repr, words))} states a verdict; verdicts come from "
                "the paired test (the lines above the note), the note says why"
            )


def tally_lines(records: list[dict]) -> list[str]:
    """The line under the leaderboard: on how many envs the best RL agent beats, ties or loses to the best
    online baseline (the table's "agent vs baseline" column, the paired test on the return)."""
    tally = leaderboard.agent_tally(records)
    ranked = len(records) - len(tally["-"])
    if not ranked:
        return []
    parts = [f"{verdict} it on {len(envs)} ({', '.join(envs)})" for verdict, envs in tally.items()
             if verdict != "-" and envs]
    return [f"The best RL agent against the best online baseline, paired test on the return over the same test "
            f"episodes, on the {ranked} envs with both: {'; '.join(parts)}.", ""]


def trained_steps(e: ResultsEntry) -> str:
    """``"ppo, ppo_lagrangian trained 200000 steps"``; with per-algorithm budgets each algorithm's own."""
    steps = {a: e.algo_timesteps.get(a, e.timesteps) for a in e.algos}
    if len(set(steps.values())) <= 1:
        return f"{', '.join(e.algos)} trained {next(iter(steps.values()), e.timesteps)} steps"
    return ", ".join(f"{a} trained {n} steps" for a, n in steps.items())


def load_entries(path: Path | None = None) -> list[ResultsEntry]:
    """The entries of ``configs/agents/results.yaml`` (or ``path``)."""
    import yaml

    path = path or configs_dir() / "agents" / "results.yaml"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read results settings {path}: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a YAML list of entries")
    return [build(ResultsEntry, entry, prefix=f"[{i}].") for i, entry in enumerate(data)]


def machine() -> str:
    """One line describing this machine (CPU, cores, Python, torch)."""
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )


def tuning_section(folder: Path | None = None) -> list[str]:
    """The "Tuning" section: one row per study record of ``configs/agents/tuning/`` (written by
    ``edgelam tune --write``): its budget, trials, wall time, and the tuned against the untuned
    entry on the test split with the paired gain and its Wilcoxon verdict."""
    records = sorted((folder or configs_dir() / "agents" / "tuning").glob("*.json"))
    if not records:
        return []
    rows = [["env", "algo", "scenario", "steps / trial", "trials (pruned)", "study wall time", "untuned (test)",
             "tuned (test)", "paired gain", "verdict"]]
    commands, splits = [], set()
    for path in records:
        r = json.loads(path.read_text())
        t, s = r["test"], r.get("settings", {})
        splits.add((t["episodes"], t["seed"]))
        rows.append([
            r["env_id"], r["algo"], f"`{s.get('scenario', 'default')}`", f"{r['budget']:,}",
            f"{r['complete'] + r['pruned']} ({r['pruned']})", f"{r['wall_s'] / 60:.0f} min",
            f"{t['untuned']['mean']:.4g} ± {t['untuned']['ci95']:.2g}",
            f"{t['tuned']['mean']:.4g} ± {t['tuned']['ci95']:.2g}",
            f"{t['gain']['mean']:.4g} ± {t['gain']['ci95']:.2g}",
            f"tuned {t['verdict']} untuned (p = {t['p_value']:.2g})",
        ])
        commands.append(f"- {r['env_id']}, {r['date']}: `{r['command']}`")
    return [
        "## Tuning",
        "",
        "Optuna studies (`edgelam tune`: TPE sampler, median pruner) of an entry of",
        "`configs/agents/hyperparams/`. Trials are validated on seeds 20000+i. Once a study ends, the best",
        "trial's model and the entry as it stood before (trained the same way, same budget) are evaluated",
        f"on the test split ({'; '.join(f'{n} episodes from seed {seed}' for n, seed in sorted(splits))}, "
        "which tuning never sees); the gain is their paired",
        "difference per episode (mean ± 95% CI) and the verdict a Wilcoxon signed-rank test at 95%.",
        "The records are `configs/agents/tuning/<env>.<algo>.json`; the tuned settings are the entries",
        "the agents above train with.",
        "",
        *markdown_table(rows),
        "",
        "Commands:",
        "",
        *commands,
        "",
    ]


def env_sections(page: str) -> dict[str, str]:
    """env id -> its section of a results page (from its ``## <env id> (scenario ...)`` line up to the
    next ``## `` heading), as :func:`run_results` wrote it."""
    out = {}
    starts = [m.start() for m in re.finditer(r"^## ", page, flags=re.MULTILINE)]
    for i, begin in enumerate(starts):
        end = starts[i + 1] - 1 if i + 1 < len(starts) else len(page)
        head = page[begin + 3:end].partition("\n")[0]
        if " (scenario " in head:
            out[head.split(" (scenario ")[0]] = page[begin:end]
    return out


def run_results(
    only: Sequence[str] | None = None,
    out_dir: str | Path = "runs/results",
    doc: str | Path = "docs/results.md",
    progress: bool = False,
    settings: str | Path | None = None,
) -> Path:
    """Run every (or the ``only``) entries of ``settings`` (default ``configs/agents/results.yaml``)
    and write the Markdown page; returns its path.

    With ``only``, the page's sections of the other entries are kept as they stand in ``doc``
    (where it exists), and the leaderboard table is built from ``docs/leaderboard.json`` beside it,
    whose other records are kept too: rerunning one env updates its section and its row only.
    """
    entries = load_entries(Path(settings) if settings is not None else None)
    doc = Path(doc)
    board = doc.parent / leaderboard.LEADERBOARD.name
    kept: dict[str, str] = {}
    if only:
        unknown = sorted(set(only) - {e.env for e in entries})
        if unknown:
            raise ValueError(f"not in results.yaml: {', '.join(unknown)}")
        if doc.is_file():
            kept = {env: text for env, text in env_sections(doc.read_text()).items() if env not in only}
    sections = []
    records = []
    start = time.perf_counter()
    for e in entries:
        if only and e.env not in only:
            if e.env in kept:
                sections.append(kept[e.env])
            continue
        settings = entry_settings(e, out_dir)
        res = compare(settings, progress=progress)
        records.append(leaderboard.record(settings, res))
        train_s = [float(r["wall_time_s"]) for r in res.runs]
        lines = [
            f"## {e.env} (scenario `{e.scenario}`)",
            "",
            f"Agents {trained_steps(e)} on seeds {list(e.seeds)} "
            f"(training wall time per run: {', '.join(f'{t / 60:.1f}' for t in train_s)} min); "
            f"{e.episodes} evaluation episodes per policy and seed. "
            "Mean ± 95% CI; `*` marks the best policy of a column.",
            "",
            *([note, ""] if (note := score_note(res.summary)) is not None else []),
            *([cost_note(res.cost_limit, res.cost_unit), ""] if res.cost_limit is not None else []),
            *markdown_table(res.table),
            "",
            *([f"Not evaluated (the baseline raised on this scenario): "
               f"{'; '.join(f'{name}: {why}' for name, why in res.skipped.items())}.", ""] if res.skipped else []),
            f"Paired verdicts. {PAIRED_NOTE}",
            "",
            *paired_lines(res.paired, res.kinds),
            "",
            *([e.note.strip(), ""] if e.note.strip() else []),
        ]
        sections.append("\n".join(lines))
    total = (time.perf_counter() - start) / 60
    leaderboard.write(records, board)  # merged with the file's records of the envs not run
    if only:  # the table's other rows are those records
        merged = leaderboard.load(board)
        records = [merged[e.env] for e in entries if e.env in merged]
    page = [
        "# Results: RL agents against the baselines on every env",
        "",
        "Produced by `edgelam results` (settings in `configs/agents/results.yaml`; each env's raw files",
        f"under `{out_dir}/<env>/`). Machine: {machine()}. Wall time of this call {total:.1f} min",
        "(finished training runs are reused; each section gives its runs' training time)"
        + (f"; this call ran {', '.join(only)} only, the other sections are kept from the page before." if only
           else "."),
        "",
        "## Leaderboard",
        "",
        "Per env, the best online baseline and the best RL agent by normalised score (random 0, hindsight 1;",
        "by return where the env has no hindsight yet) and the hindsight gap, 1 minus the best baseline's score.",
        "Every entry's numbers are in `docs/leaderboard.json`; `edgelam results --check ENV:POLICY`",
        "re-evaluates one on its test episodes and confirms it within its 95% CI.",
        "",
        *markdown_table(leaderboard.summary_table(records)),
        "",
        *tally_lines(records),
        *sections,
        *tuning_section(),
    ]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(page))
    return doc


def entry_settings(e: ResultsEntry, out_dir: str | Path = "runs/results") -> CompareSettings:
    """The compare settings of results entry ``e``, its folder under ``out_dir``."""
    return CompareSettings(
        e.env,
        scenario=e.scenario,
        algos=e.algos,
        seeds=e.seeds,
        timesteps=e.timesteps,
        algo_timesteps=dict(e.algo_timesteps) or None,
        episodes=e.episodes,
        out_dir=Path(out_dir) / env_name(e.env),
        vectorized=e.vectorized,
    )


def check_entry(entry: str, out_dir: str | Path = "runs/results", doc: str | Path = "docs/results.md",
                settings: str | Path | None = None) -> dict:
    """``edgelam results --check ENV:POLICY``: :func:`edgelam.agents.leaderboard.check` against the
    leaderboard beside ``doc``, with the compare settings of ``settings`` (default results.yaml)."""
    entries = load_entries(Path(settings) if settings is not None else None)
    board = Path(doc).parent / leaderboard.LEADERBOARD.name
    return leaderboard.check(entry, [entry_settings(e, out_dir) for e in entries], out_dir, board)
