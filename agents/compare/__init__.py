"""The compare harness: trained agents over seeds against every baseline, through one loop.

``compare`` trains each algorithm for each seed through its
:class:`~edgelam.agents.trainers.Trainer` (``out_dir/runs/<algo>/seed_<s>``;
finished runs are reused and interrupted ones resumed, so Ctrl-C loses at most the
steps since the last checkpoint), evaluates every trained agent and every baseline
with :func:`edgelam.agents.evaluate.evaluate` on the same episodes (reset seeds
``eval_seed + i``), and aggregates per policy: the mean and Student-t 95% CI of
the return and of every physical metric, pooled over training seeds and episodes.
Where the env reports a cost (``info["cost"]``), each episode's ``cost`` (its sum) and,
where the scenario has a limit, ``cost_violation`` (1 above it) are metrics too: the table
shows the mean episode cost and the violation rate beside the return, and the settings
record ``cost_limit`` and ``cost_unit``. The paired verdicts stay on the return.

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

A compare is three steps, one module each: :mod:`~edgelam.agents.compare.plan` (the
:class:`CompareSettings` resolved into jobs), :mod:`~edgelam.agents.compare.run` (one job,
the same in every engine) and :mod:`~edgelam.agents.compare.report` (aggregate, write,
print; the table's metrics and cells in :mod:`~edgelam.agents.compare.table`).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from edgelam.agents.compare.plan import (
    FULL,
    QUICK,
    CompareJob,
    ComparePlan,
    CompareSettings,
    compare_settings,
    plan_compare,
)
from edgelam.agents.compare.report import (
    PAIRED_NOTE,
    CompareResult,
    cost_note,
    finish_compare,
    hindsight_kind,
    machine_info,
    score_note,
)
from edgelam.agents.compare.run import JobResult, run_job
from edgelam.agents.compare.table import (
    MAX_TABLE_METRICS,
    best_policies,
    format_cell,
    paired_lines,
    rich_table,
    table_metrics,
    tradeoff_pair,
)

__all__ = [
    "FULL",
    "MAX_TABLE_METRICS",
    "PAIRED_NOTE",
    "QUICK",
    "CompareJob",
    "ComparePlan",
    "CompareResult",
    "CompareSettings",
    "JobResult",
    "best_policies",
    "compare",
    "compare_settings",
    "cost_note",
    "finish_compare",
    "format_cell",
    "hindsight_kind",
    "machine_info",
    "paired_lines",
    "plan_compare",
    "rich_table",
    "run_job",
    "score_note",
    "table_metrics",
    "tradeoff_pair",
]


def compare(
    settings: CompareSettings | str,
    *,
    progress: bool = True,
    console: Console | None = None,
    **fields: Any,
) -> CompareResult:
    """Train agents over seeds, evaluate them and the baselines on the same episodes, report.

    Args:
        settings: the compare (:class:`CompareSettings`), or its env id.
        progress: SB3 progress bars and status lines; the table is printed either way.
        console: where the status lines and the table go (default: stdout).
        fields: :class:`CompareSettings` fields replaced (with an env id: the settings).

    On an adversarial env (a 2-agent parallel env whose second agent is named
    ``adversary``, e.g. RobustRouting-v0) the algorithms are the adversarial trainers: ``rarl``
    (:class:`edgelam.agents.rarl.RarlTrainer`, :data:`~edgelam.agents.trainers.RARL_ITERATIONS`
    iterations whose phases share ``timesteps``; ``hyperparams["rarl"]`` are its PPO overrides); baselines act
    for the protagonist; every metric is the protagonist's (its return and info),
    measured against ``eval_adversary``.

    The work is the jobs of :func:`plan_compare`, each run by :func:`run_job`, in this
    process; :func:`edgelam.agents.ray_engine.compare_ray` runs the same jobs on Ray.

    Raises:
        ValueError: on an unknown env id, algorithm, baseline or hyperparameter, or a
            run folder holding a run with other settings.
        TypeError: on a name in ``fields`` that is not a :class:`CompareSettings` field.
    """
    began = time.perf_counter()
    plan = plan_compare(compare_settings(settings, fields))
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console()
    results = [run_job(job, progress, console) for job in plan.jobs]
    return finish_compare(plan, results, began, console)
