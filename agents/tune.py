"""``edgelam tune``: an Optuna study of one algorithm's hyperparameters on one env.

Optuna's TPE sampler (seeded) proposes settings from a search space per algorithm
(:data:`edgelam.agents.tune_space.SAMPLERS`; rl-zoo3's ``hyperparams_opt.py`` is the reference,
with discounts down to 0.8 because several edgelam envs are nearly myopic, and networks no larger
than 256 x 256 for two CPU cores). The sampled keys replace those of the env's entry in
``configs/agents/hyperparams/<algo>.yml``; ``n_envs`` and ``normalize`` stay the file's.
Each trial trains with the algorithm's Trainer (:func:`edgelam.agents.trainers.train_run`, on the env's
batched vector env where it has one) and is evaluated ``evaluations`` times during training on validation
episodes: episode ``i`` resets with seed ``VALIDATION_SEED + i`` (20000 + i), while
``compare`` and ``results`` evaluate on 10000 + i, the test split, which tuning never sees.
Optuna's median pruner stops a trial whose intermediate mean return is below the median of
the earlier trials at the same step. The entry as it stands is trained and evaluated the
same way first, so the study reports what tuning gained. The study stops after ``trials``
trials or ``minutes`` of wall time; it lives in ``<out>/study.db`` (SQLite), so the same
command continues it. :func:`held_out_gain` then evaluates the best trial's and the untuned
entry's trained models on ``test_episodes`` episodes of the test split, and the gain is their
paired difference (its 95% interval and the Wilcoxon verdict of :func:`.metrics.paired_test`).
:func:`.tune_write.write_best` writes the best trial back into the file, with the study's numbers in a
comment above the entry, and the study's record into ``configs/agents/tuning/`` (the
Tuning section of docs/results.md).

Two trainers beyond SB3's. ``ppo_lagrangian``
(:func:`~edgelam.agents.tune_space.sample_ppo_lagrangian`: PPO's space plus ``lambda_lr``,
log-uniform in 0.01..0.5, and ``cost_limit_margin`` in 0.1..0.5; ``lambda_optimizer`` and the
multiplier's start stay the file's) is constrained (:data:`CONSTRAINED`): each validation also
measures the episodes' costs (sum of ``info["cost"]``) against the scenario's limit
(:func:`edgelam.agents.lagrangian.cost_limit`) and the trial records the violation share (episodes
over the limit, user attr ``violation``). The best trial is :func:`select_best`'s, not
``study.best_trial``'s: the highest return among trials whose final violation share is <=
:data:`MAX_VIOLATION` (0.10), else the lowest violation share (said in the log and in
``study.json``'s ``constraint``). Its trials are never pruned (a median of returns would prune the
feasible low-return ones first). ``rarl`` (:func:`~edgelam.agents.tune_space.sample_rarl`: PPO's
space, shared by both sides) takes no SB3 callbacks (:func:`takes_callbacks`: an ``adversarial``
trainer), so a trial is validated once, at its end, unpruned: the protagonist against the
``random`` adversary, as ``compare`` evaluates it; its best goes to
``configs/agents/hyperparams/rarl.yml``, leaving the env's plain PPO entry in ``ppo.yml`` as it is.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback

from edgelam.agents import hyperparams as hp
from edgelam.agents import lagrangian
from edgelam.agents.common import TEST_SEED, check_env_id, env_dir, is_parallel, make_parallel
from edgelam.agents.compare.plan import eval_overrides
from edgelam.agents.evaluate import evaluate
from edgelam.agents.metrics import ci95_halfwidth, paired_test
from edgelam.agents.policies import NormalizedPolicy, load_policy
from edgelam.agents.trainers import (
    TRAINERS,
    TrainSettings,
    _load,
    default_timesteps,
    is_adversarial_algo,
    train_run,
    trainer_for,
)
from edgelam.agents.tune_space import SAMPLERS
from edgelam.envs import registration

VALIDATION_SEED = 20_000
# algorithms whose study selects on the cost constraint (:func:`select_best`)
CONSTRAINED = frozenset({"ppo_lagrangian"})
# the share of validation episodes over the cost limit a constrained trial may have (issue #19's target)
MAX_VIOLATION = 0.10


def _trainer(algo: str, callbacks: Sequence[BaseCallback] = ()) -> Any:
    """``algo``'s Trainer, given ``callbacks`` where it takes them (an adversarial trainer takes none)."""
    return _load(TRAINERS[algo])(algo, callbacks) if takes_callbacks(algo) else trainer_for(algo)


def takes_callbacks(algo: str) -> bool:
    """Whether ``algo``'s trainer runs SB3 callbacks (validation points, pruning): not an adversarial one."""
    return not is_adversarial_algo(algo)


def entry_params(env_id: str, algo: str) -> dict[str, Any]:
    """The env's resolved entry that the study's trials override (PPO keys for ppo_lagrangian and rarl)."""
    if algo in CONSTRAINED:
        return lagrangian.resolve(env_id)[0]
    if not takes_callbacks(algo):
        return hp.resolve(env_id, "ppo", hp.rarl_overrides(env_id))
    return hp.resolve(env_id, algo)


def select_best(
    trials: Sequence[Mapping[str, Any]], max_violation: float = MAX_VIOLATION
) -> tuple[Mapping[str, Any], bool]:
    """The best of a constrained study's finished trials (each ``{"trial", "mean", "violation"}``) and whether it is
    feasible: the highest validation return among those whose violation share is ``<= max_violation``; where none
    is, the lowest violation share (ties: the higher return).

    Raises:
        ValueError: on no trials.
    """
    if not trials:
        raise ValueError("select_best: no trials")
    feasible = [t for t in trials if t["violation"] <= max_violation]
    if feasible:
        return max(feasible, key=lambda t: t["mean"]), True
    return min(trials, key=lambda t: (t["violation"], -t["mean"])), False


@dataclass(frozen=True)
class TuneSettings:
    """One study: what is tuned, on what, with what budget.

    Attributes:
        timesteps: env steps per trial (default: the entry's ``n_timesteps``).
        evaluations: validation points per trial, where the pruner may stop it.
        episodes: validation episodes per evaluation.
    """

    env_id: str
    algo: str = "ppo"
    trials: int = 20
    minutes: float = 20.0
    timesteps: int | None = None
    evaluations: int = 4
    episodes: int = 10
    test_episodes: int = 30
    seed: int = 0
    scenario: str = "default"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None

    def __post_init__(self) -> None:
        check_env_id(self.env_id)
        if self.algo not in SAMPLERS:
            raise ValueError(f"tune: no search space for {self.algo!r} (allowed: {', '.join(SAMPLERS)})")
        for name in ("trials", "evaluations", "episodes", "test_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"tune: {name} must be >= 1, got {getattr(self, name)}")
        if not self.minutes > 0:
            raise ValueError(f"tune: minutes must be > 0, got {self.minutes}")
        if self.timesteps is not None and self.timesteps < self.evaluations:
            raise ValueError(f"tune: timesteps ({self.timesteps}) must be >= evaluations ({self.evaluations})")

    @property
    def budget(self) -> int:
        """Env steps per trial."""
        return self.timesteps or default_timesteps(_trainer(self.algo), self.env_id)

    @property
    def folder(self) -> Path:
        """The study's folder (default ``runs/tune/<env>/<algo>``)."""
        return self.out or Path("runs") / "tune" / env_dir(self.env_id) / self.algo

    @property
    def vectorized(self) -> bool:
        """Train on the batched vector env (Gymnasium ids with one; PettingZoo ids batch by themselves)."""
        spec = registration.find_spec(self.env_id)
        return bool(
            spec
            and not is_parallel(self.env_id)
            and spec.vector_entry_point
            and self.env_kwargs.get("backend", "replay") == "replay"
        )


def validate(settings: TuneSettings, policy: Any) -> dict[str, Any]:
    """``policy`` on the validation episodes (seed ``VALIDATION_SEED + i``): ``{"mean", "ci95"}`` of the return,
    and for a constrained algorithm ``"violation"``, the share of episodes whose cost (sum of ``info["cost"]``)
    is over the scenario's limit (:func:`edgelam.agents.lagrangian.cost_limit`), and ``"cost"``, their mean cost."""
    s = settings
    rows = evaluate(
        policy, s.env_id, episodes=s.episodes, seed=VALIDATION_SEED, scenario=s.scenario, env_kwargs=s.env_kwargs
    )
    returns = np.array([r["return"] for r in rows])
    half = 1.96 * returns.std(ddof=1) / math.sqrt(len(returns)) if len(returns) > 1 else float("nan")
    out: dict[str, Any] = {"mean": float(returns.mean()), "ci95": float(half)}
    if s.algo in CONSTRAINED:
        limit = lagrangian.cost_limit(s.env_id, s.scenario, s.env_kwargs)
        costs = np.array([float(r["cost"]) for r in rows])
        out.update(violation=float(np.mean(costs > limit)), cost=float(costs.mean()), cost_limit=float(limit))
    return out


class _Validation(BaseCallback):
    """Evaluates the learning policy on the validation episodes every ``every`` steps; reports to the trial."""

    def __init__(self, settings: TuneSettings, every: int, trial: optuna.Trial | None) -> None:
        super().__init__()
        self.settings, self.every, self.trial = settings, every, trial
        self.next_at, self.scores, self.pruned = every, [], False

    def score(self) -> dict[str, Any]:
        """:func:`validate` of the current policy."""
        policy: Any = self.model
        stats = self.model.get_vec_normalize_env()
        if stats is not None:
            policy = NormalizedPolicy(self.model, copy.copy(stats))  # a frozen view; training keeps updating
        return validate(self.settings, policy)

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_at:
            return True
        self.next_at += self.every
        score = self.score()
        mean = score["mean"]
        self.scores.append([int(self.num_timesteps), mean, *([score["violation"]] if "violation" in score else [])])
        # a constrained trial is never pruned: a median of returns would prune the feasible low-return ones
        if self.trial is not None and self.settings.algo not in CONSTRAINED:
            self.trial.report(mean, int(self.num_timesteps))
            if self.trial.should_prune():
                self.pruned = True
                return False
        return True


def run_trial(
    settings: TuneSettings, params: dict[str, Any], out_dir: Path, trial: optuna.Trial | None = None
) -> dict[str, Any]:
    """Train ``params`` (overrides of the entry) for the study's budget; its final validation score.

    Raises:
        optuna.TrialPruned: when the pruner stops the trial.
    """
    s = settings
    validation = _Validation(s, max(s.budget // s.evaluations, 1), trial)
    callbacks = takes_callbacks(s.algo)
    trainer = _trainer(s.algo, [validation] if callbacks else ())
    began = time.perf_counter()
    run = TrainSettings(
        s.env_id,
        s.algo,
        s.budget,
        s.seed,
        Path(out_dir),
        s.scenario,
        dict(s.env_kwargs),
        params,
        vectorized=s.vectorized,
    )
    result = train_run(trainer, run)
    if validation.pruned:
        raise optuna.TrialPruned(f"validation return {validation.scores[-1][1]:.4g} at step {validation.scores[-1][0]}")
    if callbacks:
        score = validation.score()
    else:  # validated once, at its end: the protagonist against the random adversary, as compare evaluates it
        score = validate(s, _protagonist(s, Path(out_dir)))
        validation.scores.append([int(result.num_timesteps), score["mean"]])
    return {
        **score,
        "curve": validation.scores,
        "wall_s": time.perf_counter() - began,
        "num_timesteps": result.num_timesteps,
    }


@dataclass
class TuneResult:
    """What a study found: the best trial's settings and score beside the untuned entry's."""

    env_id: str
    algo: str
    budget: int
    best_params: dict[str, Any]
    best: dict[str, Any]
    untuned: dict[str, Any]
    complete: int
    pruned: int
    wall_s: float
    folder: Path
    test: dict[str, Any] | None = None  # :func:`held_out_gain`, once measured
    # constrained algorithms: {"max_violation", "feasible", "trials": [{"trial", "mean", "violation", "cost"}],
    # "untuned_violation"} (:func:`select_best`)
    constraint: dict[str, Any] | None = None

    @property
    def gain(self) -> float:
        """Best trial's validation return minus the untuned entry's."""
        return self.best["mean"] - self.untuned["mean"]


def held_out_gain(result: TuneResult, settings: TuneSettings) -> dict[str, Any]:
    """The best trial's and the untuned entry's trained models on the test split (episode ``i``: seed
    ``TEST_SEED + i``, ``settings.test_episodes`` of them, with the scenario's test shift), paired per episode.

    Returns ``{"episodes", "seed", "tuned", "untuned", "gain", "verdict", "p_value"}``: the two mean
    returns with their 95% half-widths, the mean paired difference (tuned - untuned) with its 95%
    half-width, and :func:`.metrics.paired_test`'s verdict and p-value. Kept in
    ``<folder>/test_split.json`` for the trial it was measured on.
    """
    path = result.folder / "test_split.json"
    trial = result.best["trial"]
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("trial") == trial and cached.get("episodes") == settings.test_episodes:
            return cached
    s = settings
    returns = {}
    for name, folder in (("tuned", result.folder / f"trial_{trial}"), ("untuned", result.folder / "untuned")):
        policy: Any = load_policy(folder) if takes_callbacks(s.algo) else _protagonist(s, folder)
        rows = evaluate(
            policy,
            s.env_id,
            episodes=s.test_episodes,
            seed=TEST_SEED,
            scenario=s.scenario,
            env_kwargs=eval_overrides(s.env_id, s.scenario, s.env_kwargs, "test"),
        )
        returns[name] = [float(r["return"]) for r in rows]
    test = paired_test(returns["tuned"], returns["untuned"])
    out = {
        "trial": trial,
        "episodes": s.test_episodes,
        "seed": TEST_SEED,
        **{name: {"mean": float(np.mean(v)), "ci95": ci95_halfwidth(v)} for name, v in returns.items()},
        "gain": {"mean": test["mean_diff"], "ci95": test["ci95"]},
        "verdict": test["verdict"],
        "p_value": test["p_value"],
    }
    path.write_text(json.dumps(out, indent=2))
    return out


def _protagonist(settings: TuneSettings, folder: Path) -> dict[str, Any]:
    """An adversarial run's protagonist (its folder's ``<protagonist>/``) against the ``random`` adversary."""
    agents = list(make_parallel(settings.env_id, settings.scenario, settings.env_kwargs).possible_agents)
    return {agents[0]: load_policy(folder / agents[0]), "adversary": "random"}


def untuned_score(settings: TuneSettings, folder: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The entry as it stands, trained and validated like a trial (kept in ``<folder>/untuned.json``)."""
    path = folder / "untuned.json"
    if path.is_file():
        return json.loads(path.read_text())
    log(f"tune: the entry as it stands, {settings.budget:,} steps")
    untuned = run_trial(settings, {}, folder / "untuned")
    path.write_text(json.dumps(untuned, indent=2))
    return untuned


def _study_seconds(study: optuna.Study, untuned: dict[str, Any]) -> float:
    """Wall time the study has taken over all its runs: the untuned entry's training plus every trial's."""
    trials = [t for t in study.trials if t.datetime_start is not None and t.datetime_complete is not None]
    return float(untuned["wall_s"]) + sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)


def tune(settings: TuneSettings, log: Callable[[str], None] = print) -> TuneResult:
    """Run (or continue) the study of ``settings``; see the module docstring."""
    s = settings
    folder = s.folder
    folder.mkdir(parents=True, exist_ok=True)
    untuned = untuned_score(s, folder, log)
    n_envs = entry_params(s.env_id, s.algo)["n_envs"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"{s.env_id}:{s.algo}",
        storage=f"sqlite:///{folder / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=s.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )

    def objective(trial: optuna.Trial) -> float:
        params = SAMPLERS[s.algo](trial, n_envs)
        trial.set_user_attr("params", params)
        out = run_trial(s, params, folder / f"trial_{trial.number}", trial)
        trial.set_user_attr("ci95", out["ci95"])
        line = f"tune: trial {trial.number}: validation return {out['mean']:.4g} ± {out['ci95']:.2g}"
        if "violation" in out:
            trial.set_user_attr("violation", out["violation"])
            trial.set_user_attr("cost", out["cost"])
            line += f", {out['violation']:.0%} of episodes over the cost limit {out['cost_limit']:.4g}"
        log(line)
        return out["mean"]

    remaining = s.trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=s.minutes * 60.0, catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ValueError(f"tune: no trial of {s.env_id} / {s.algo} completed within {s.minutes} minutes")
    best_trial = study.best_trial
    constraint: dict[str, Any] | None = None
    if s.algo in CONSTRAINED:  # explicit: study.best_trial would take the highest return, feasible or not
        records = [
            {
                "trial": t.number,
                "mean": t.value,
                "violation": t.user_attrs["violation"],
                "cost": t.user_attrs.get("cost"),
            }
            for t in done
        ]
        chosen, feasible = select_best(records)
        best_trial = next(t for t in done if t.number == chosen["trial"])
        constraint = {
            "max_violation": MAX_VIOLATION,
            "feasible": feasible,
            "trials": records,
            "untuned_violation": untuned.get("violation"),
        }
        if not feasible:
            log(
                f"tune: no trial kept the cost limit on >= {1 - MAX_VIOLATION:.0%} of the validation episodes; "
                f"the best is the lowest violation share, trial {chosen['trial']} ({chosen['violation']:.0%})"
            )
    best = {"mean": best_trial.value, "ci95": best_trial.user_attrs["ci95"], "trial": best_trial.number}
    if constraint is not None:
        best["violation"] = best_trial.user_attrs["violation"]
    result = TuneResult(
        env_id=s.env_id,
        algo=s.algo,
        budget=s.budget,
        best_params=best_trial.user_attrs["params"],
        best=best,
        untuned=untuned,
        complete=len(done),
        pruned=len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]),
        wall_s=_study_seconds(study, untuned),
        folder=folder,
        constraint=constraint,
    )
    summary = {
        **asdict(result),
        "folder": str(folder),
        "gain": result.gain,
        "settings": {
            **{k: v for k, v in asdict(s).items() if k != "out"},
            "budget": s.budget,
            "vectorized": s.vectorized,
        },
    }
    (folder / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    return result
