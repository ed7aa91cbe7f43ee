"""The compare harness: SB3 agents over seeds against every baseline, through one loop.

``compare`` trains each algorithm for each seed (``out_dir/runs/<algo>/seed_<s>``;
finished runs are reused and interrupted ones resumed, so Ctrl-C loses at most the
steps since the last checkpoint), evaluates every trained agent and every baseline
with :func:`edgelam.agents.evaluate.evaluate` on the same episodes (reset seeds
``eval_seed + i``), and aggregates per policy: the mean and Student-t 95% CI of
the return and of every physical metric, pooled over training seeds and episodes.

Files written into ``out_dir``:

* ``results.csv``: one row per policy x metric:
  ``policy,kind,metric,mean,ci95,n,direction,best`` (``kind`` is ``agent`` or
  ``baseline``; ``direction`` ``max``/``min``/empty; ``best`` 1 when marked best);
* ``paired.csv``: the paired verdict of every pair of policies on the return:
  ``policy,other,metric,n,mean_diff,ci95,p_value,verdict`` ("<policy> <verdict> <other>");
* ``results.json``: settings, summary, best, directions, paired verdicts, runs, every
  episode row, wall time, machine;
* ``report.md``: the table, the paired verdicts, settings, training runs, wall time, machine;
* ``learning_curves.png`` (with the baselines' returns as reference lines), ``metrics.png`` (the headline
  metrics), ``tradeoff.png`` (latency against energy, or the first two headline metrics);
* ``runs/<algo>/seed_<s>/``: the training runs (TensorBoard logs in ``tb/``).

Which way is better comes from the env's ``metadata["metric_directions"]`` over
:data:`edgelam.agents.common.DEFAULT_DIRECTIONS`; metrics with no direction are
not marked.

"beats" / "ties" / "loses to" come only from a paired test over the evaluation episodes
both policies saw (:func:`edgelam.agents.metrics.paired_verdicts`: two-sided Wilcoxon
signed-rank at 95%; an agent enters with its mean over training seeds per episode), never
from comparing the confidence intervals of the table.
"""

from __future__ import annotations

import csv
import json
import math
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
from rich.table import Table

from edgelam import baselines as baseline_registry
from edgelam.agents.common import (
    check_env_id,
    is_adversarial,
    is_parallel,
    make_env,
    make_parallel,
    markdown_table,
    metric_directions,
)
from edgelam.agents.evaluate import evaluate
from edgelam.agents.metrics import ALPHA, paired_verdicts, summarize, verdict_sentence
from edgelam.agents.plots import plot_learning_curves, plot_metrics, plot_tradeoff
from edgelam.agents.policies import META, read_meta
from edgelam.agents.rarl import train_rarl
from edgelam.agents.train import LEARNING_CURVE, train
from edgelam.envs.registration import find_spec

QUICK = {"algos": ("ppo",), "seeds": (0, 1), "timesteps": 20_000, "episodes": 10}
FULL = {"algos": ("ppo",), "seeds": (0, 1, 2), "timesteps": 100_000, "episodes": 30}
# RARL on adversarial envs: (protagonist phase, adversary phase) pairs per run
RARL_ITERATIONS = 4

# how the verdicts are read (report.md, docs/results.md)
PAIRED_NOTE = (
    "On the return, over the evaluation episodes both policies saw (same reset seeds; an agent's mean over "
    f"its training seeds per episode): two-sided Wilcoxon signed-rank test at {1 - ALPHA:.0%}. "
    f'"beats" and "loses to" need p < {ALPHA}; "ties" is everything else.'
)
# columns of the printed table besides the return: not per-agent, not the episode length
_HIDDEN = frozenset({"length"})
# metric columns of the headline table besides the return (it fits in 160 columns; the rest is in the CSV/JSON)
MAX_TABLE_METRICS = 5


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


def format_cell(mean: float, ci95: float) -> str:
    """How a table cell shows a mean and its CI half-width (``"12.3 ± 0.45"``)."""
    if not math.isfinite(ci95):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {ci95:.2g}"


def best_policies(
    summary: Mapping[str, Mapping[str, tuple[float, float, int]]], metric: str, direction: str
) -> list[str]:
    """Policies whose mean of ``metric`` is the best in ``direction`` (all of them on a tie)."""
    means = {p: s[metric][0] for p, s in summary.items() if metric in s and math.isfinite(s[metric][0])}
    if not means:
        return []
    target = max(means.values()) if direction == "max" else min(means.values())
    return [p for p, m in means.items() if m == target]


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


def jsonable(value: Any) -> Any:
    """A JSON-ready copy: NaN/inf -> ``None``, tuples -> lists, numpy scalars and paths -> python."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _env_info(
    env_id: str, scenario: str, env_kwargs: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str] | None]:
    """The env's metadata and, for a parallel env, its agents."""
    if is_parallel(env_id):
        env = make_parallel(env_id, scenario, env_kwargs)
        agents = list(env.possible_agents)
    else:
        env = make_env(env_id, scenario, env_kwargs)
        agents = None
    metadata = dict(env.metadata)
    env.close()
    return metadata, agents


def _protagonist_view(row: Mapping[str, Any], protagonist: str) -> dict[str, Any]:
    """An episode row of an adversarial env seen from the protagonist (``x/<protagonist>`` -> ``x``)."""
    suffix = "/" + protagonist
    out = {k: row[k] for k in ("episode", "seed", "length")}
    out.update({k.removesuffix(suffix): v for k, v in row.items() if k.endswith(suffix)})
    return out


def _train_rarl_run(
    env_id: str,
    seed: int,
    timesteps: int,
    run_dir: Path,
    scenario: str,
    env_kwargs: Mapping[str, Any] | None,
    hyperparams: Mapping[str, Any] | None,
    progress: bool,
) -> tuple[int, float, bool]:
    """Train (or reuse) one RARL run of ``timesteps`` env steps split over both agents' phases.

    Returns:
        ``(env steps, wall time in s, reused)``.
    """
    steps = max(timesteps // (2 * RARL_ITERATIONS), 1)
    settings = _rarl_settings(env_id, seed, steps, scenario, env_kwargs, hyperparams)
    meta = read_meta(run_dir)
    if meta is not None and (run_dir / "history.json").is_file():
        changed = sorted(k for k, v in settings.items() if meta.get(k) != v)
        if changed:
            raise ValueError(f"{run_dir} holds a RARL run with other settings ({', '.join(changed)})")
        return meta["num_timesteps"], meta["wall_time_s"], True
    began = time.perf_counter()
    result = train_rarl(
        env_id,
        iterations=RARL_ITERATIONS,
        protagonist_steps=steps,
        adversary_steps=steps,
        seed=seed,
        out_dir=run_dir,
        scenario=scenario,
        env_kwargs=env_kwargs,
        hyperparams=hyperparams,
        progress=progress,
    )
    wall = time.perf_counter() - began
    total = result.protagonist.num_timesteps + result.adversary.num_timesteps
    (run_dir / META).write_text(json.dumps({**settings, "num_timesteps": total, "wall_time_s": wall}, indent=2))
    return total, wall, False


def _rarl_settings(
    env_id: str,
    seed: int,
    steps: int,
    scenario: str,
    env_kwargs: Mapping[str, Any] | None,
    hyperparams: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return jsonable(
        {
            "algo": "rarl",
            "env_id": env_id,
            "seed": seed,
            "iterations": RARL_ITERATIONS,
            "phase_steps": steps,
            "scenario": str(scenario),
            "env_kwargs": dict(env_kwargs or {}),
            "hyperparams": dict(hyperparams or {}),
        }
    )


def _policy_dependent(summary: Mapping[str, Mapping[str, Any]], metric: str) -> bool:
    """Whether the policies' means of ``metric`` differ (exogenous ones, like the SNR, are the same for all)."""
    means = [float(s[metric][0]) for s in summary.values() if metric in s]
    if len(means) < 2:
        return bool(means)
    spread = max(means) - min(means)
    return spread > 1e-9 * max(1.0, max(abs(m) for m in means))


def _table_metrics(
    summary: Mapping[str, Mapping[str, Any]],
    directions: Mapping[str, str] | None = None,
    cost_keys: Sequence[str] = (),
    max_metrics: int = MAX_TABLE_METRICS,
) -> list[str]:
    """The headline table's columns: the return, then the env's key metrics (those with a direction),
    then its budget (cost) keys, each only where the policies differ in it; at most ``max_metrics``
    besides the return. Every metric stays in results.csv/json."""
    present = list(dict.fromkeys(m for metrics in summary.values() for m in metrics if m not in _HIDDEN))
    present = [m for m in present if "/" not in m]
    directions = directions or {}
    keyed = [m for m in present if m != "return" and _direction(directions, m) is not None]
    costs = [m for m in present if m in cost_keys and m not in keyed]
    chosen = [m for m in [*keyed, *costs] if _policy_dependent(summary, m)]
    return ["return", *chosen[:max_metrics]]


def _tradeoff_pair(metrics: Sequence[str]) -> tuple[str, str] | None:
    """The two metrics of the trade-off scatter: latency against energy where both are headline metrics,
    else the first two headline metrics besides the return."""
    if "latency_s" in metrics and "energy_j" in metrics:
        return "latency_s", "energy_j"
    rest = [m for m in metrics if m != "return"]
    return (rest[0], rest[1]) if len(rest) >= 2 else None


def _direction(directions: Mapping[str, str], metric: str) -> str | None:
    return directions.get(metric, directions.get(metric.split("/")[0]))


@dataclass(frozen=True)
class CompareJob:
    """One unit of work of a compare: train and evaluate one (algorithm, seed), or evaluate one baseline.

    Every engine runs the same jobs through :func:`run_job` (the local engine in this
    process, the Ray engine as one Tune trial each), so their results are the same.

    Attributes:
        env_id: the env id.
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides.
        kind: ``"agent"`` (train, then evaluate) or ``"baseline"`` (evaluate).
        name: the algorithm or baseline name.
        seed: training seed (``None`` for a baseline).
        timesteps: env steps of the training run.
        episodes: evaluation episodes.
        eval_seed: reset seed of the first evaluation episode.
        run_dir: the training run folder (``None`` for a baseline).
        hyperparams: the algorithm's hyperparameter overrides.
        protagonist: on an adversarial env, the protagonist agent (else ``None``).
        eval_adversary: on an adversarial env, the adversary evaluated against.
        strict: a baseline named by the user: a ``ValueError`` raises instead of skipping it.
    """

    env_id: str
    scenario: str
    env_kwargs: Mapping[str, Any]
    kind: str
    name: str
    seed: int | None
    timesteps: int
    episodes: int
    eval_seed: int
    run_dir: Path | None = None
    hyperparams: Mapping[str, Any] | None = None
    protagonist: str | None = None
    eval_adversary: str | Path = "random"
    strict: bool = False

    @property
    def key(self) -> str:
        """A name unique within a compare (``agent/ppo/seed_0``, ``baseline/random``)."""
        return f"{self.kind}/{self.name}" + ("" if self.seed is None else f"/seed_{self.seed}")


@dataclass
class JobResult:
    """What :func:`run_job` produced.

    Attributes:
        key: the job's :attr:`CompareJob.key`.
        rows: evaluated episode rows, tagged with ``policy`` (and ``train_seed``).
        run: the training run entry (agents; ``None`` for baselines).
        skipped: why a baseline was skipped (not applicable to the scenario), else ``None``.
    """

    key: str
    rows: list[dict[str, Any]]
    run: dict[str, Any] | None = None
    skipped: str | None = None


@dataclass
class ComparePlan:
    """The settings of a compare, resolved and validated, and its jobs (see :func:`plan_compare`)."""

    env_id: str
    scenario: str
    env_kwargs: dict[str, Any]
    algos: tuple[str, ...]
    seeds: tuple[int, ...]
    timesteps: int
    episodes: int
    names: list[str]
    eval_seed: int
    quick: bool
    out_dir: Path
    directions: dict[str, str]
    adversarial: bool
    eval_adversary: str | Path
    jobs: list[CompareJob]


def plan_compare(
    env_id: str,
    scenario: str = "default",
    algos: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    timesteps: int | None = None,
    baselines: Sequence[str] | None = None,
    episodes: int | None = None,
    out_dir: str | Path = "runs/compare",
    quick: bool = False,
    env_kwargs: Mapping[str, Any] | None = None,
    eval_seed: int = 10_000,
    hyperparams: Mapping[str, Mapping[str, Any]] | None = None,
    eval_adversary: str | Path = "random",
) -> ComparePlan:
    """Resolve the defaults of :func:`compare`, validate them and list its jobs (arguments as there).

    Jobs come in the order of the report: each algorithm x seed, then each baseline.

    Raises:
        ValueError: on an unknown env id, or algorithms that do not fit the env.
    """
    check_env_id(env_id)
    defaults = QUICK if quick else FULL
    metadata, agents = _env_info(env_id, scenario, env_kwargs)
    adversarial = is_adversarial(agents)
    algos = tuple(algos if algos is not None else ("rarl",) if adversarial else defaults["algos"])
    if adversarial and algos != ("rarl",):
        raise ValueError(f"{env_id} is adversarial ({agents}): the algorithm to train is rarl, not {algos}")
    if not adversarial and "rarl" in algos:
        raise ValueError(f"rarl needs an adversarial env (agents [protagonist, 'adversary']); {env_id} is not")
    seeds = tuple(seeds if seeds is not None else defaults["seeds"])
    timesteps = int(timesteps if timesteps is not None else defaults["timesteps"])
    episodes = int(episodes if episodes is not None else defaults["episodes"])
    names = list(baselines if baselines is not None else baseline_registry.available(env_id))
    clash = set(names) & set(algos)
    if clash:
        raise ValueError(f"names used both as algorithm and baseline: {sorted(clash)}")
    out_dir = Path(out_dir)
    common = {
        "env_id": env_id,
        "scenario": scenario,
        "env_kwargs": dict(env_kwargs or {}),
        "timesteps": timesteps,
        "episodes": episodes,
        "eval_seed": eval_seed,
        "protagonist": agents[0] if adversarial else None,
        "eval_adversary": eval_adversary,
    }
    jobs = [
        CompareJob(
            kind="agent",
            name=algo,
            seed=seed,
            run_dir=out_dir / "runs" / algo / f"seed_{seed}",
            hyperparams=(hyperparams or {}).get(algo),
            **common,
        )
        for algo in algos
        for seed in seeds
    ]
    jobs += [
        CompareJob(kind="baseline", name=name, seed=None, strict=baselines is not None, **common) for name in names
    ]
    return ComparePlan(
        env_id=env_id,
        scenario=scenario,
        env_kwargs=dict(env_kwargs or {}),
        algos=algos,
        seeds=seeds,
        timesteps=timesteps,
        episodes=episodes,
        names=names,
        eval_seed=eval_seed,
        quick=quick,
        out_dir=out_dir,
        directions=metric_directions(metadata),
        adversarial=adversarial,
        eval_adversary=eval_adversary,
        jobs=jobs,
    )


def _evaluate_job(job: CompareJob, policy: Any) -> list[dict[str, Any]]:
    if job.protagonist is not None:
        if not isinstance(policy, Mapping):
            policy = {job.protagonist: policy, "adversary": job.eval_adversary}
        rows = evaluate(policy, job.env_id, job.episodes, job.eval_seed, job.scenario, job.env_kwargs)
        return [_protagonist_view(row, job.protagonist) for row in rows]
    return evaluate(policy, job.env_id, job.episodes, job.eval_seed, job.scenario, job.env_kwargs)


def run_job(job: CompareJob, progress: bool = False, console: Console | None = None) -> JobResult:
    """Run one job of a compare: train (or reuse) and evaluate an agent, or evaluate a baseline.

    A training run already finished in ``job.run_dir`` is reused, an interrupted one resumed.

    Args:
        job: the job.
        progress: SB3 progress bars and status lines.
        console: where the status lines go (default: stdout).

    Raises:
        ValueError: on a bad hyperparameter, a run folder holding a run with other settings,
            or a strict baseline that does not apply (a non-strict one is returned as skipped).
    """
    console = console or Console()
    if job.kind == "baseline":
        if progress:
            console.log(f"evaluating baseline {job.name} ({job.episodes} episodes)")
        try:
            rows = _evaluate_job(job, job.name)
        except ValueError as exc:
            if job.strict:
                raise
            console.log(f"skipping baseline {job.name}: not applicable here ({exc})")
            return JobResult(job.key, [], skipped=str(exc))
        return JobResult(job.key, [{"policy": job.name, **row} for row in rows])
    if job.kind != "agent" or job.run_dir is None or job.seed is None:
        raise ValueError(f"bad compare job {job.key}: an agent job needs a seed and a run folder")
    algo, seed, run_dir = job.name, job.seed, job.run_dir
    if algo == "rarl":
        if progress:
            console.log(f"rarl seed {seed} -> {run_dir}")
        steps, wall, reused = _train_rarl_run(
            job.env_id, seed, job.timesteps, run_dir, job.scenario, job.env_kwargs, job.hyperparams, progress
        )
        run = {
            "algo": algo,
            "seed": seed,
            "out_dir": run_dir,
            "num_timesteps": steps,
            "wall_time_s": wall,
            "reused": reused,
            "policy": {job.protagonist: run_dir / job.protagonist, "adversary": job.eval_adversary},
            "curve": run_dir / job.protagonist / LEARNING_CURVE,
        }
    else:
        meta = read_meta(run_dir)
        reused = bool(meta and meta.get("finished") and meta.get("num_timesteps", 0) >= job.timesteps)
        if progress:
            console.log(f"{'reusing' if reused else 'training'} {algo} seed {seed} -> {run_dir}")
        result = train(
            job.env_id,
            algo,
            timesteps=job.timesteps,
            seed=seed,
            out_dir=run_dir,
            scenario=job.scenario,
            env_kwargs=job.env_kwargs,
            hyperparams=job.hyperparams,
            progress=progress and not reused,
            resume=True,
        )
        run = {
            "algo": algo,
            "seed": seed,
            "out_dir": run_dir,
            "num_timesteps": result.num_timesteps,
            "wall_time_s": result.wall_time_s,
            "reused": reused,
            "policy": run_dir,
            "curve": run_dir / LEARNING_CURVE,
        }
    if progress:
        console.log(f"evaluating {algo} seed {seed} ({job.episodes} episodes)")
    rows = [{"policy": algo, "train_seed": seed, **row} for row in _evaluate_job(job, run["policy"])]
    return JobResult(job.key, rows, run=run)


def compare(
    env_id: str,
    scenario: str = "default",
    algos: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    timesteps: int | None = None,
    baselines: Sequence[str] | None = None,
    episodes: int | None = None,
    out_dir: str | Path = "runs/compare",
    quick: bool = False,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    eval_seed: int = 10_000,
    hyperparams: Mapping[str, Mapping[str, Any]] | None = None,
    console: Console | None = None,
    eval_adversary: str | Path = "random",
) -> CompareResult:
    """Train agents over seeds, evaluate them and the baselines on the same episodes, report.

    Args:
        env_id: a Gymnasium id or an edgelam parallel id (agents share parameters).
        scenario: scenario name or YAML path.
        algos: algorithms to train (default ``("ppo",)``).
        seeds: training seeds (default ``(0, 1, 2)``; quick: ``(0, 1)``).
        timesteps: env steps per training run (default 100k; quick: 20k).
        baselines: baseline names (default: every one available for the env; those
            raising ``ValueError`` on this scenario are skipped, with the reason recorded
            under ``skipped_baselines`` in the settings; a named one that fails raises).
        episodes: evaluation episodes per policy and training seed (default 30; quick: 10).
        out_dir: output folder (layout in the module docstring); rerunning with the
            same folder reuses finished runs and resumes interrupted ones.
        quick: the defaults above that finish in a few minutes on two cores.
        env_kwargs: dotted scenario overrides.
        progress: SB3 progress bars and status lines; the table is printed either way.
        eval_seed: reset seed of the first evaluation episode (episode ``i``: ``eval_seed + i``),
            kept apart from the training seeds.
        hyperparams: algorithm -> hyperparameter overrides.
        console: where the status lines and the table go (default: stdout).
        eval_adversary: on an adversarial env, the adversary every protagonist (trained
            or baseline) is evaluated against: a baseline name or a saved policy.

    On an adversarial env (a 2-agent parallel env whose second agent is named
    ``adversary``, e.g. RobustRouting-v0) the only algorithm is ``rarl``
    (:func:`edgelam.agents.rarl.train_rarl`, ``RARL_ITERATIONS`` iterations whose phases
    share ``timesteps``; ``hyperparams["rarl"]`` are its PPO overrides); baselines act
    for the protagonist; every metric is the protagonist's (its return and info),
    measured against ``eval_adversary``.

    The work is the jobs of :func:`plan_compare`, each run by :func:`run_job`, in this
    process; :func:`edgelam.agents.ray_engine.compare_ray` runs the same jobs on Ray.

    Raises:
        ValueError: on an unknown env id, algorithm, baseline or hyperparameter, or a
            run folder holding a run with other settings.
    """
    began = time.perf_counter()
    plan = plan_compare(
        env_id,
        scenario=scenario,
        algos=algos,
        seeds=seeds,
        timesteps=timesteps,
        baselines=baselines,
        episodes=episodes,
        out_dir=out_dir,
        quick=quick,
        env_kwargs=env_kwargs,
        eval_seed=eval_seed,
        hyperparams=hyperparams,
        eval_adversary=eval_adversary,
    )
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console()
    results = [run_job(job, progress, console) for job in plan.jobs]
    return finish_compare(plan, results, began, console)


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
    directions = plan.directions

    summary = {p: summarize(r for r in rows if r["policy"] == p) for p in kinds}
    all_metrics = list(dict.fromkeys(m for s in summary.values() for m in s))
    best = {}
    for metric in all_metrics:
        direction = _direction(directions, metric)
        if direction is not None:
            best[metric] = best_policies(summary, metric, direction)
    spec = find_spec(plan.env_id)
    metrics = _table_metrics(summary, directions, spec.cost_keys if spec is not None else ())
    table = _table_text(summary, kinds, metrics, directions, best)
    paired = paired_verdicts(rows, list(kinds), "return", _direction(directions, "return") or "max")
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
    pair = _tradeoff_pair(metrics)
    if pair is not None:
        files["tradeoff.png"] = plot_tradeoff(summary, *pair, out_dir / "tradeoff.png", kinds)
    settings = {
        "env_id": plan.env_id,
        "scenario": str(plan.scenario),
        "env_kwargs": dict(plan.env_kwargs),
        "algos": list(plan.algos),
        "seeds": list(plan.seeds),
        "timesteps": plan.timesteps,
        "baselines": [n for n in plan.names if n not in skipped],
        "skipped_baselines": skipped,
        "episodes": plan.episodes,
        "eval_seed": plan.eval_seed,
        "quick": plan.quick,
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
    )


def _finished_jobs(plan: ComparePlan, results: Sequence[JobResult]) -> list[CompareJob]:
    by_key = {job.key: job for job in plan.jobs}
    missing = [r.key for r in results if r.key not in by_key]
    if missing:
        raise ValueError(f"results of jobs not in the plan: {missing}")
    return [by_key[r.key] for r in results]


def _header(metric: str, directions: Mapping[str, str]) -> str:
    arrow = {"max": " ↑", "min": " ↓"}.get(_direction(directions, metric) or "", "")
    return metric + arrow


def _table_text(
    summary: Mapping[str, Mapping[str, tuple[float, float, int]]],
    kinds: Mapping[str, str],
    metrics: Sequence[str],
    directions: Mapping[str, str],
    best: Mapping[str, Sequence[str]],
) -> list[list[str]]:
    table = [["policy", "kind", *(_header(m, directions) for m in metrics)]]
    for policy, stats_of in summary.items():
        row = [policy, kinds[policy]]
        for metric in metrics:
            if metric not in stats_of:
                row.append("-")
                continue
            mean, ci, _ = stats_of[metric]
            cell = format_cell(mean, ci)
            row.append(cell + " *" if policy in best.get(metric, ()) else cell)
        table.append(row)
    return table


def rich_table(title: str, rows: Sequence[Sequence[str]], left: int = 2) -> Table:
    """A rich table of text rows (header first) that never wraps or squeezes a cell.

    The table is as wide as its cells need, wider than the terminal if need be (print
    it with ``crop=False``); the first ``left`` columns are left-aligned, the others
    right-aligned; cells ending in ``" *"`` (best values) are bold.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = Table(title=title, width=sum(widths) + 3 * len(widths) + 1)
    for i, name in enumerate(rows[0]):
        table.add_column(name, justify="left" if i < left else "right", no_wrap=True)
    for row in rows[1:]:
        table.add_row(*(f"[bold]{c}[/bold]" if c.endswith(" *") else c for c in row))
    return table


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
                    direction = _direction(directions, metric) or ""
                    is_best = int(policy in best.get(metric, ()))
                    row = [policy, kinds[policy], metric, repr(mean), repr(ci), n, direction, is_best]
                    writer.writerow(row)
    return path


def paired_lines(paired: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]) -> list[str]:
    """One sentence per policy: what it beats, ties and loses to by the paired test (agents first).

    An agent is set against every other policy, a baseline against the baselines after it
    (its verdicts against the agents are on the agents' lines).
    """
    agents = [p for p, k in kinds.items() if k == "agent"]
    names = list(kinds)
    lines = [verdict_sentence(paired, p) for p in agents]
    for i, policy in enumerate(names):
        if kinds[policy] == "agent":
            continue
        later = [e for e in paired if e["policy"] == policy and e["other"] in names[i + 1 :]]
        if later:
            lines.append(verdict_sentence(later, policy))
    return [f"- {line}" for line in lines]


def _write_paired_csv(path: Path, paired: Sequence[Mapping[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        columns = ["policy", "other", "metric", "n", "mean_diff", "ci95", "p_value", "verdict"]
        writer.writerow(columns)
        for entry in paired:
            writer.writerow([repr(v) if isinstance(v, float) else v for v in (entry[c] for c in columns)])
    return path


def _markdown_table(table: Sequence[Sequence[str]]) -> str:
    """The report's table, a column's best cell (``... *``) in bold."""
    bold = [[f"**{c.removesuffix(' *')}** *" if c.endswith(" *") else c for c in row] for row in table[1:]]
    return "\n".join(markdown_table([table[0], *bold]))


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
        _markdown_table(table),
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
