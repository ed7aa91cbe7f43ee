"""``edgelam tune --engine ray``: the study of :mod:`edgelam.agents.tune` through Ray Tune, for a cluster.

Ray Tune's ``OptunaSearch`` proposes the trials with the same TPE sampler (seeded) over the
same search space (:data:`edgelam.agents.tune_space.SAMPLERS`, run define-by-run), and Ray's
``MedianStoppingRule`` plays the median pruner; each trial runs
:func:`edgelam.agents.tune.run_trial` on a worker, reports its validation returns to Tune and
trains in ``<out>/ray_trials/<trial id>``. The untuned entry is evaluated on the driver, as in
the local engine, and the result is the same :class:`~edgelam.agents.tune.TuneResult`.
Run from a folder every node mounts at the same path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna

from edgelam.agents.ray_engine import init_ray, require_ray
from edgelam.agents.tune import (
    CONSTRAINED,
    TuneResult,
    TuneSettings,
    entry_params,
    run_trial,
    untuned_score,
)
from edgelam.agents.tune_space import SAMPLERS

METRIC = "validation_return"


class _TuneReporter:
    """The trial interface :func:`run_trial` reports to, forwarding to Ray Tune (whose scheduler stops trials)."""

    def report(self, value: float, step: int) -> None:
        from ray import tune

        tune.report({METRIC: value, "step": step})

    def should_prune(self) -> bool:
        return False


class _Space:
    """The algorithm's search space, define-by-run (a picklable callable, as Tune checkpoints its searcher)."""

    def __init__(self, algo: str, n_envs: int) -> None:
        self.algo, self.n_envs = algo, n_envs

    def __call__(self, trial: optuna.Trial) -> None:
        SAMPLERS[self.algo](trial, self.n_envs)


def _trainable(config: dict[str, Any], settings: TuneSettings, n_envs: int, folder: str) -> None:
    from ray import tune

    params = SAMPLERS[settings.algo](optuna.trial.FixedTrial(config), n_envs)
    out_dir = Path(folder) / "ray_trials" / tune.get_context().get_trial_id()
    result = run_trial(settings, params, out_dir, _TuneReporter())
    tune.report({METRIC: result["mean"], "ci95": result["ci95"], "final": True, "step": result["num_timesteps"]})


def tune_ray(settings: TuneSettings, workers: int = 1, address: str | None = None) -> TuneResult:
    """Run the study of ``settings`` on Ray Tune (``workers`` trials at once); see the module docstring.

    Raises:
        ValueError: if Ray (or its Optuna search) is missing, a trial failed, no trial finished, or the
            algorithm's study selects on a cost constraint (ppo_lagrangian: the local engine only).
    """
    if settings.algo in CONSTRAINED:
        raise ValueError(f"tune --engine ray: {settings.algo}'s study selects on the cost limit; use --engine local")
    require_ray()
    from ray import tune
    from ray.tune.schedulers import MedianStoppingRule
    from ray.tune.search.optuna import OptunaSearch

    s = settings
    folder = s.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    untuned = untuned_score(s, folder)
    n_envs = entry_params(s.env_id, s.algo)["n_envs"]

    started = init_ray(address, quiet=True)
    try:
        tuner = tune.Tuner(
            tune.with_parameters(_trainable, settings=s, n_envs=n_envs, folder=str(folder)),
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(
                    space=_Space(s.algo, n_envs),
                    metric=METRIC,
                    mode="max",
                    sampler=optuna.samplers.TPESampler(seed=s.seed),
                ),
                scheduler=MedianStoppingRule(metric=METRIC, mode="max", time_attr="step", min_samples_required=3),
                num_samples=s.trials,
                max_concurrent_trials=workers,
                time_budget_s=s.minutes * 60.0,
            ),
            run_config=tune.RunConfig(name="study", storage_path=str(folder / "ray"), verbose=0),
        )
        grid = tuner.fit()
    finally:
        if started:
            require_ray().shutdown()
    failed = [r for r in grid if r.error is not None]
    if failed:  # as the local engine, where a failing trial ends the study with its error
        raise ValueError(
            f"tune: {len(failed)} Ray trial(s) of {s.env_id} / {s.algo} failed; the first: {failed[0].error}"
        )
    finals = [r for r in grid if r.metrics and r.metrics.get("final")]
    if not finals:
        raise ValueError(f"tune: no Ray trial of {s.env_id} / {s.algo} finished within {s.minutes} minutes")
    best = max(finals, key=lambda r: r.metrics[METRIC])
    return TuneResult(
        env_id=s.env_id,
        algo=s.algo,
        budget=s.budget,
        best_params=SAMPLERS[s.algo](optuna.trial.FixedTrial(best.config), n_envs),
        best={"mean": best.metrics[METRIC], "ci95": best.metrics["ci95"], "trial": best.metrics["trial_id"]},
        untuned=untuned,
        complete=len(finals),
        pruned=len(grid) - len(finals),
        wall_s=time.perf_counter() - began,
        folder=folder,
    )
