"""One job of a compare, run the same way by every engine: train (or reuse) and evaluate an agent,
or evaluate a baseline.

An agent job trains through its algorithm's :class:`~edgelam.agents.trainers.Trainer`
(:func:`~edgelam.agents.trainers.train_run`: a finished run in the job's folder is reused,
an interrupted one resumed), then evaluates the trained policy with
:func:`edgelam.agents.evaluate.evaluate` on the job's episodes; on an adversarial env every
row is the protagonist's, against the job's ``eval_adversary``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from edgelam.agents.compare.plan import CompareJob
from edgelam.agents.evaluate import evaluate
from edgelam.agents.trainers import TrainSettings, train_run, trainer_for


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


def _protagonist_view(row: Mapping[str, Any], protagonist: str) -> dict[str, Any]:
    """An episode row of an adversarial env seen from the protagonist (``x/<protagonist>`` -> ``x``).

    A ``hindsight`` row's value is of the team return, which a zero-sum game fixes at 0
    (RobustRouting-v0), so it says nothing of the protagonist. Seen from the protagonist, the
    reference is what hindsight's perfect-information planner realised on the episode: its
    ``return`` becomes the ``hindsight_value`` and the kind is ``planner`` (not exact, not a bound),
    so the normalised score of the protagonist's return is the share of that planner's gain over
    random.
    """
    suffix = "/" + protagonist
    out = {k: row[k] for k in ("episode", "seed", "length")}
    out.update({k.removesuffix(suffix): v for k, v in row.items() if k.endswith(suffix)})
    if "hindsight_value" in row and "return" in out:
        out.update(hindsight_value=out["return"], hindsight_exact=0.0, hindsight_bound=0.0,
                   hindsight_fallback=float(row.get("hindsight_fallback", 0.0)))
    return out


def _evaluate_job(job: CompareJob, policy: Any) -> list[dict[str, Any]]:
    if job.protagonist is not None:
        if not isinstance(policy, Mapping):
            policy = {job.protagonist: policy, "adversary": job.eval_adversary}
        rows = evaluate(policy, job.env_id, job.episodes, job.eval_seed, job.scenario, job.evaluated_with)
        return [_protagonist_view(row, job.protagonist) for row in rows]
    return evaluate(policy, job.env_id, job.episodes, job.eval_seed, job.scenario, job.evaluated_with)


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
    settings = TrainSettings(
        job.env_id, algo, job.timesteps, seed, run_dir, job.scenario, job.env_kwargs, job.hyperparams, resume=True,
        vectorized=job.vectorized,
    )
    trained = train_run(trainer_for(algo), settings, progress, console.log if progress else None)
    policy = trained.policy_path()
    run = {
        "algo": algo,
        "seed": seed,
        "out_dir": run_dir,
        "num_timesteps": trained.num_timesteps,
        "wall_time_s": trained.wall_time_s,
        "reused": trained.reused,
        "policy": policy if job.protagonist is None else {job.protagonist: policy, "adversary": job.eval_adversary},
        "curve": trained.learning_curve,
    }
    if progress:
        console.log(f"evaluating {algo} seed {seed} ({job.episodes} episodes)")
    rows = [{"policy": algo, "train_seed": seed, **row} for row in _evaluate_job(job, run["policy"])]
    return JobResult(job.key, rows, run=run)
