"""The compare's report: aggregate the jobs' results, write every file, print the table.

"beats" / "ties" / "loses to" come only from a paired test over the evaluation episodes
both policies saw (:func:`edgelam.agents.metrics.paired_verdicts`: two-sided Wilcoxon
signed-rank at 95%; an agent enters with its mean over training seeds per episode), never
from comparing the confidence intervals of the table.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import stable_baselines3
import torch
from rich.console import Console

from edgelam.agents.common import jsonable
from edgelam.agents.compare.plan import CompareJob, ComparePlan
from edgelam.agents.compare.run import JobResult
from edgelam.agents.compare.table import (
    best_policies,
    direction_of,
    markdown_report_table,
    paired_lines,
    rich_table,
    table_metrics,
    table_text,
    tradeoff_pair,
)
from edgelam.agents.metrics import ALPHA, HINDSIGHT_POLICY, SCORE_KEY, normalised_scores, paired_verdicts, summarize
from edgelam.agents.plots import plot_learning_curves, plot_metrics, plot_tradeoff
from edgelam.envs.registration import find_spec

# how the verdicts are read (report.md, docs/results.md)
PAIRED_NOTE = (
    "On the return, over the evaluation episodes both policies saw (same reset seeds; an agent's mean over "
    f"its training seeds per episode): two-sided Wilcoxon signed-rank test at {1 - ALPHA:.0%}. "
    f'"beats" and "loses to" need p < {ALPHA}; "ties" is everything else.'
)


@dataclass
class CompareResult:
    """What :func:`compare` produced.

    Attributes:
        out_dir: the output folder.
        summary: policy -> metric -> ``(mean, ci95_halfwidth, n)``.
        kinds: policy -> ``"agent"`` or ``"baseline"``.
        metrics: the table's metric columns, in order.
        directions: metric -> ``"max"`` / ``"min"`` (metrics without one are absent).
        best: metric -> the best policies (ties all listed).
        table: the printed table as text: header row, then one row per policy
            (``policy``, ``kind``, one cell per metric; best cells end in ``" *"``).
        runs: one entry per training run (algo, seed, folder, timesteps, wall time, reused).
        episodes: every evaluated episode row, tagged with ``policy`` (and ``train_seed``).
        wall_time_s: wall time of the whole call.
        files: name -> path of every file written.
        failed: jobs that failed (Ray engine: after their retries), each
            ``{"job": key, "error": text}``; empty when every job finished.
        paired: the paired verdict of every pair of policies on the return
            (:func:`edgelam.agents.metrics.paired_verdicts`), agents first.
        cost_limit: the per-episode cost limit each episode's ``cost_violation`` is measured
            against (``None`` where the scenario has no budget), in ``cost_unit``.
        cost_unit: the unit of ``cost`` (``J``, ``USD``), or ``None``.
        skipped: baseline -> why it was not evaluated (it raised ``ValueError`` on this scenario).
    """

    out_dir: Path
    summary: dict[str, dict[str, tuple[float, float, int]]]
    kinds: dict[str, str]
    metrics: list[str]
    directions: dict[str, str]
    best: dict[str, list[str]]
    table: list[list[str]]
    runs: list[dict[str, Any]]
    episodes: list[dict[str, Any]]
    wall_time_s: float
    files: dict[str, Path]
    failed: list[dict[str, Any]] = field(default_factory=list)
    paired: list[dict[str, Any]] = field(default_factory=list)
    cost_limit: float | None = None
    cost_unit: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def machine_info() -> dict[str, Any]:
    """Platform, CPU count and library versions, for reports."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "numpy": np.__version__,
    }


def finish_compare(
    plan: ComparePlan,
    results: Sequence[JobResult],
    began: float,
    console: Console | None = None,
    failed: Sequence[Mapping[str, Any]] = (),
) -> CompareResult:
    """Aggregate the jobs' results, write every file and print the table.

    Args:
        plan: the compare's plan.
        results: the results of the plan's jobs that finished, in the plan's order.
        began: ``time.perf_counter()`` when the compare began (for its wall time).
        console: where the table goes (default: stdout).
        failed: jobs that failed (``{"job": key, "error": text, ...}``); listed in the
            report and ``results.json`` under ``failed``, never dropped silently.
    """
    console = console or Console()
    runs = [r.run for r in results if r.run is not None]
    rows = [row for r in results for row in r.rows]
    kinds: dict[str, str] = {}
    for job, result in zip(_finished_jobs(plan, results), results, strict=True):
        if result.skipped is None:
            kinds[job.name] = job.kind
    skipped = {r.key.split("/", 1)[1]: r.skipped for r in results if r.skipped is not None}
    directions = {**plan.directions, SCORE_KEY: "max"}

    summary = {p: summarize(r for r in rows if r["policy"] == p) for p in kinds}
    for policy, score in normalised_scores(rows, list(kinds)).items():
        summary[policy] = {"return": summary[policy]["return"], SCORE_KEY: score, **summary[policy]}
    all_metrics = list(dict.fromkeys(m for s in summary.values() for m in s))
    best = {}
    for metric in all_metrics:
        direction = direction_of(directions, metric)
        if direction is not None:
            best[metric] = best_policies(summary, metric, direction)
    spec = find_spec(plan.env_id)
    metrics = table_metrics(summary, directions, spec.cost_keys if spec is not None else ())
    table = table_text(summary, kinds, metrics, directions, best)
    paired = paired_verdicts(rows, list(kinds), "return", direction_of(directions, "return") or "max")
    wall = time.perf_counter() - began
    out_dir = plan.out_dir

    files = {
        "results.csv": _write_csv(out_dir / "results.csv", summary, kinds, all_metrics, directions, best),
        "paired.csv": _write_paired_csv(out_dir / "paired.csv", paired),
        "learning_curves.png": plot_learning_curves(
            {a: {r["seed"]: r["curve"] for r in runs if r["algo"] == a} for a in plan.algos},
            out_dir / "learning_curves.png",
            references={p: s["return"][0] for p, s in summary.items() if kinds[p] == "baseline" and "return" in s},
        ),
        "metrics.png": plot_metrics(summary, metrics, best, out_dir / "metrics.png", directions),
    }
    pair = tradeoff_pair(metrics)
    if pair is not None:
        files["tradeoff.png"] = plot_tradeoff(summary, *pair, out_dir / "tradeoff.png", kinds)
    settings = {
        "env_id": plan.env_id,
        "scenario": str(plan.scenario),
        "env_kwargs": dict(plan.env_kwargs),
        "algos": list(plan.algos),
        "seeds": list(plan.seeds),
        "timesteps": plan.timesteps,
        **({"algo_timesteps": dict(plan.algo_timesteps)} if plan.algo_timesteps else {}),
        "baselines": [n for n in plan.names if n not in skipped],
        "skipped_baselines": skipped,
        "episodes": plan.episodes,
        "eval_seed": plan.eval_seed,
        "quick": plan.quick,
        "cost_limit": plan.cost_limit,
        "cost_unit": plan.cost_unit,
        "split": plan.split,
        "eval_env_kwargs": dict(plan.eval_env_kwargs or {}),
    }
    if plan.adversarial:
        settings["eval_adversary"] = str(plan.eval_adversary)
    files["report.md"] = _write_report(
        out_dir / "report.md", settings, table, runs, wall, files, failed, paired_lines(paired, kinds)
    )
    files["results.json"] = out_dir / "results.json"
    document = {
        "settings": settings,
        "summary": {
            p: {m: {"mean": v[0], "ci95": v[1], "n": v[2]} for m, v in s.items()} for p, s in summary.items()
        },
        "kinds": kinds,
        "directions": directions,
        "best": best,
        "paired": paired,
        "paired_test": {"test": "wilcoxon signed-rank, two-sided", "alpha": ALPHA, "metric": "return"},
        "table_metrics": metrics,
        "runs": runs,
        "episodes": rows,
        "wall_time_s": wall,
        "machine": machine_info(),
    }
    if failed:
        document["failed"] = list(failed)
    files["results.json"].write_text(json.dumps(jsonable(document), indent=2) + "\n")
    title = f"{plan.env_id}: mean ± 95% CI (* best; ↑ higher is better, ↓ lower)"
    console.print(rich_table(title, table), crop=False)
    for line in paired_lines(paired, kinds):
        console.print(line, soft_wrap=True)
    console.print(
        f"results: {out_dir} (results.csv, results.json, report.md, *.png); wall time {wall:.1f} s", soft_wrap=True
    )
    return CompareResult(
        out_dir=out_dir,
        summary=summary,
        kinds=kinds,
        metrics=metrics,
        directions=directions,
        best=best,
        table=table,
        runs=runs,
        episodes=rows,
        wall_time_s=wall,
        files=files,
        failed=list(failed),
        paired=paired,
        cost_limit=plan.cost_limit,
        cost_unit=plan.cost_unit,
        skipped=skipped,
    )


def hindsight_kind(summary: Mapping[str, Mapping[str, tuple[float, float, int]]]) -> str | None:
    """What the compare's ``hindsight`` was: ``"exact"``, ``"bound"``, ``"planner"`` or a mix, ``None`` without one."""
    stats_of = summary.get(HINDSIGHT_POLICY)
    if not stats_of or "hindsight_value" not in stats_of:
        return None
    exact, bound = stats_of["hindsight_exact"][0], stats_of["hindsight_bound"][0]
    if exact == 1.0:
        return "exact"
    if bound == 1.0:
        return "bound"
    if exact == 0.0 and bound == 0.0:
        return "planner"
    return f"mixed: {exact:.0%} exact, {bound:.0%} bound"


def score_note(summary: Mapping[str, Mapping[str, tuple[float, float, int]]]) -> str | None:
    """What the score column is, what hindsight was and any solver fallbacks (report.md, docs/results.md)."""
    kind = hindsight_kind(summary)
    if kind is None:
        return None
    meaning = {
        "exact": "the optimal return of each episode with its realised exogenous trace known in advance",
        "bound": "a certified upper bound on the return of each episode given its realised exogenous trace",
        "planner": "the return of a perfect-information planner (a reference, not a bound)",
    }.get(kind, "per episode the optimum, an upper bound or a planner's return")
    fallbacks = summary[HINDSIGHT_POLICY].get("hindsight_fallback", (0.0, 0.0, 0))
    note = (f"`score` = (return − random) / (hindsight − random), 95% paired bootstrap CI over the episodes; "
            f"random scores 0, hindsight 1. Hindsight here is **{kind}**: {meaning}.")
    if fallbacks[0] > 0:
        note += f" Its solver fell back on {fallbacks[0]:.0%} of the episodes (flagged `hindsight_fallback`)."
    return note


def cost_note(limit: float, unit: str | None) -> str:
    """What the cost columns are, with the limit they are held to (report.md, docs/results.md)."""
    unit = f" {unit}" if unit else ""
    return (
        f"`cost`: the episode's sum of `info[\"cost\"]`{' (' + unit.strip() + ')' if unit else ''}; "
        f"`cost_violation`: the share of episodes whose cost is above the scenario's limit of {limit:.4g}{unit}."
    )


def _finished_jobs(plan: ComparePlan, results: Sequence[JobResult]) -> list[CompareJob]:
    by_key = {job.key: job for job in plan.jobs}
    missing = [r.key for r in results if r.key not in by_key]
    if missing:
        raise ValueError(f"results of jobs not in the plan: {missing}")
    return [by_key[r.key] for r in results]


def _write_csv(
    path: Path,
    summary: Mapping[str, Mapping[str, tuple[float, float, int]]],
    kinds: Mapping[str, str],
    metrics: Sequence[str],
    directions: Mapping[str, str],
    best: Mapping[str, Sequence[str]],
) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", "kind", "metric", "mean", "ci95", "n", "direction", "best"])
        for policy, stats_of in summary.items():
            for metric in metrics:
                if metric in stats_of:
                    mean, ci, n = stats_of[metric]
                    direction = direction_of(directions, metric) or ""
                    is_best = int(policy in best.get(metric, ()))
                    row = [policy, kinds[policy], metric, repr(mean), repr(ci), n, direction, is_best]
                    writer.writerow(row)
    return path


def _write_paired_csv(path: Path, paired: Sequence[Mapping[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        columns = ["policy", "other", "metric", "n", "mean_diff", "ci95", "p_value", "verdict"]
        writer.writerow(columns)
        for entry in paired:
            writer.writerow([repr(v) if isinstance(v, float) else v for v in (entry[c] for c in columns)])
    return path


def _write_report(
    path: Path,
    settings: Mapping[str, Any],
    table: Sequence[Sequence[str]],
    runs: Sequence[Mapping[str, Any]],
    wall: float,
    files: Mapping[str, Path],
    failed: Sequence[Mapping[str, Any]] = (),
    verdicts: Sequence[str] = (),
) -> Path:
    lines = [
        f"# edgelam compare: {settings['env_id']}",
        "",
        "Mean ± Student-t 95% CI half-width over training seeds x evaluation episodes "
        "(baselines: over episodes). Best per column in bold with `*`; ↑ higher is better, ↓ lower.",
        "",
        *([cost_note(settings["cost_limit"], settings["cost_unit"]), ""] if settings["cost_limit"] is not None else []),
        markdown_report_table(table),
        "",
        "## Paired verdicts",
        "",
        PAIRED_NOTE,
        "",
        *verdicts,
        "",
        "## Settings",
        "",
        *(f"- {k}: `{json.dumps(jsonable(v))}`" for k, v in settings.items()),
        "",
        "## Training runs",
        "",
        "| algo | seed | timesteps | wall time (s) | reused | folder |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['algo']} | {r['seed']} | {r['num_timesteps']} | {r['wall_time_s']:.1f} | "
            f"{'yes' if r['reused'] else 'no'} | `{r['out_dir']}` |"
            for r in runs
        ),
        "",
        f"Wall time of this compare: {wall:.1f} s (training time of reused runs not included).",
        "",
        *(
            [
                "## Failed jobs",
                "",
                "These jobs failed after their retries; their policies are missing from the table. "
                "Rerun the same command to retry them.",
                "",
                *(f"- `{f['job']}`: {f['error']}" for f in failed),
                "",
            ]
            if failed
            else []
        ),
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine_info().items()),
        "",
        "## Files",
        "",
        *(f"- `{name}`" for name in [*files, "results.json", "runs/<algo>/seed_<s>/"]),
        "",
    ]
    path.write_text("\n".join(lines))
    return path
