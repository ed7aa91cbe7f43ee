"""The plan of a compare: its settings resolved and validated, and its jobs.

:class:`CompareSettings` is what a compare is (every engine takes it); :func:`plan_compare`
resolves its defaults (:data:`QUICK` / :data:`FULL`), checks the algorithms against the env
(an adversarial env trains only the trainers that are adversarial, e.g. RARL) and lists the
jobs, one per (algorithm, seed) and one per baseline, that every engine runs the same way
(:func:`edgelam.agents.compare.run.run_job`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgelam import baselines as baseline_registry
from edgelam.agents.common import (
    TEST_SEED,
    check_env_id,
    cost_limit,
    is_adversarial,
    is_parallel,
    make_env,
    make_parallel,
    metric_directions,
)
from edgelam.agents.trainers import TRAINERS, is_adversarial_algo
from edgelam.envs.registration import find_spec

QUICK = {"algos": ("ppo",), "seeds": (0, 1), "timesteps": 20_000, "episodes": 10}
FULL = {"algos": ("ppo",), "seeds": (0, 1, 2), "timesteps": 100_000, "episodes": 30}


@dataclass(frozen=True)
class CompareSettings:
    """What a compare is: the env, the agents and baselines, the budget, the folder.

    Attributes:
        env_id: a Gymnasium id or an edgelam parallel id (agents share parameters).
        scenario: scenario name or YAML path.
        algos: algorithms to train (default ``("ppo",)``; on an adversarial env the
            adversarial trainers, ``("rarl",)``).
        seeds: training seeds (default ``(0, 1, 2)``; quick: ``(0, 1)``).
        timesteps: env steps per training run (default 100k; quick: 20k).
        algo_timesteps: algorithm -> its env steps per training run, replacing ``timesteps``
            for that algorithm (e.g. a fast on-policy agent on the batched env beside an
            off-policy one); every key must be one of ``algos``.
        baselines: baseline names (default: every one available for the env; those
            raising ``ValueError`` on this scenario are skipped, with the reason recorded
            under ``skipped_baselines`` in the settings; a named one that fails raises).
        episodes: evaluation episodes per policy and training seed (default 30; quick: 10).
        out_dir: output folder (layout in :mod:`edgelam.agents.compare`); rerunning with the
            same folder reuses finished runs and resumes interrupted ones.
        quick: the defaults above that finish in a few minutes on two cores.
        env_kwargs: dotted scenario overrides.
        eval_seed: reset seed of the first evaluation episode (episode ``i``: ``eval_seed + i``),
            kept apart from the training seeds.
        hyperparams: algorithm -> hyperparameter overrides.
        eval_adversary: on an adversarial env, the adversary every protagonist (trained
            or baseline) is evaluated against: a baseline name or a saved policy.
        vectorized: train the agents on the env's batched vector env (RARL: each side on
            its batched game), as ``edgelam train --vector``.
        split: what the policies are evaluated on: ``"test"`` (default), the evaluation seeds
            with the scenario's test shift (its YAML's ``test`` block, unseen by training:
            :meth:`edgelam.envs.core.spec.EnvSpec.test_overrides`) applied on top of ``env_kwargs``;
            ``"train"``, the evaluation seeds on the training scenario itself.
    """

    env_id: str
    scenario: str = "default"
    algos: Sequence[str] | None = None
    seeds: Sequence[int] | None = None
    timesteps: int | None = None
    algo_timesteps: Mapping[str, int] | None = None
    baselines: Sequence[str] | None = None
    episodes: int | None = None
    out_dir: str | Path = "runs/compare"
    quick: bool = False
    env_kwargs: Mapping[str, Any] | None = None
    eval_seed: int = TEST_SEED
    hyperparams: Mapping[str, Mapping[str, Any]] | None = None
    eval_adversary: str | Path = "random"
    vectorized: bool = False
    split: str = "test"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"compare: split must be one of {SPLITS}, got {self.split!r}")


SPLITS = ("test", "train")


def eval_overrides(env_id: str, scenario: str, env_kwargs: Mapping[str, Any] | None, split: str) -> dict[str, Any]:
    """The dotted overrides policies are evaluated with: ``env_kwargs``, and on the test split its shift on top."""
    out = dict(env_kwargs or {})
    spec = find_spec(env_id)
    if split == "test" and spec is not None:
        out.update(spec.test_overrides(scenario))
    return out


def compare_settings(settings: CompareSettings | str, fields: Mapping[str, Any]) -> CompareSettings:
    """``settings`` with ``fields`` replaced; an env id and fields build new settings.

    Raises:
        TypeError: on a name that is not a field of :class:`CompareSettings`.
    """
    if isinstance(settings, str):
        return CompareSettings(settings, **fields)
    return replace(settings, **fields) if fields else settings


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
        vectorized: an agent job trains on the env's batched vector env.
        eval_env_kwargs: the dotted overrides of the evaluation episodes (the test split's shift
            on top of ``env_kwargs``); ``None``: ``env_kwargs``.
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
    vectorized: bool = False
    eval_env_kwargs: Mapping[str, Any] | None = None

    @property
    def evaluated_with(self) -> Mapping[str, Any]:
        """The dotted overrides of the evaluation episodes."""
        return self.env_kwargs if self.eval_env_kwargs is None else self.eval_env_kwargs

    @property
    def key(self) -> str:
        """A name unique within a compare (``agent/ppo/seed_0``, ``baseline/random``)."""
        return f"{self.kind}/{self.name}" + ("" if self.seed is None else f"/seed_{self.seed}")


@dataclass
class ComparePlan:
    """The settings of a compare, resolved and validated, and its jobs (see :func:`plan_compare`).

    ``cost_limit`` is the scenario's per-episode cost limit (:func:`edgelam.agents.common.cost_limit`;
    ``None`` without a budget) every episode's ``cost_violation`` is measured against, in ``cost_unit``
    (the env's ``metadata["info_units"]["cost"]``, else ``None``).
    """

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
    cost_limit: float | None = None
    cost_unit: str | None = None
    split: str = "test"
    eval_env_kwargs: dict[str, Any] | None = None
    algo_timesteps: dict[str, int] = field(default_factory=dict)

    def steps_of(self, algo: str) -> int:
        """Env steps of each training run of ``algo``."""
        return self.algo_timesteps.get(algo, self.timesteps)


def algo_timesteps_checked(values: Mapping[str, int] | None, algos: Sequence[str]) -> dict[str, int]:
    """``algo_timesteps`` checked against ``algos``: ``ValueError`` naming the key."""
    out = {}
    for algo, steps in dict(values or {}).items():
        if algo not in algos:
            raise ValueError(f"algo_timesteps.{algo}: not one of the algorithms trained ({', '.join(algos)})")
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"algo_timesteps.{algo} must be an integer >= 1, got {steps!r}")
        out[algo] = int(steps)
    return out


def plan_compare(settings: CompareSettings) -> ComparePlan:
    """Resolve the defaults of ``settings``, validate them and list the compare's jobs.

    Jobs come in the order of the report: each algorithm x seed, then each baseline.

    Raises:
        ValueError: on an unknown env id, or algorithms that do not fit the env.
    """
    env_id, scenario, env_kwargs, quick = settings.env_id, settings.scenario, settings.env_kwargs, settings.quick
    baselines, eval_seed, eval_adversary = settings.baselines, settings.eval_seed, settings.eval_adversary
    algos, seeds, timesteps, episodes = settings.algos, settings.seeds, settings.timesteps, settings.episodes
    check_env_id(env_id)
    defaults = QUICK if quick else FULL
    metadata, agents = _env_info(env_id, scenario, env_kwargs)
    adversarial = is_adversarial(agents)
    adversarial_algos = tuple(a for a in TRAINERS if is_adversarial_algo(a))
    algos = tuple(algos if algos is not None else adversarial_algos if adversarial else defaults["algos"])
    if adversarial and not all(is_adversarial_algo(a) for a in algos):  # no algos: baselines only
        trained = " or ".join(adversarial_algos)
        raise ValueError(f"{env_id} is adversarial ({agents}): the algorithm to train is {trained}, not {algos}")
    misplaced = [a for a in algos if is_adversarial_algo(a)]
    if not adversarial and misplaced:
        raise ValueError(
            f"{misplaced[0]} needs an adversarial env (agents [protagonist, 'adversary']); {env_id} is not"
        )
    seeds = tuple(seeds if seeds is not None else defaults["seeds"])
    timesteps = int(timesteps if timesteps is not None else defaults["timesteps"])
    algo_timesteps = algo_timesteps_checked(settings.algo_timesteps, algos)
    episodes = int(episodes if episodes is not None else defaults["episodes"])
    names = list(baselines if baselines is not None else baseline_registry.available(env_id))
    evaluated_with = eval_overrides(env_id, scenario, env_kwargs, settings.split)
    clash = set(names) & set(algos)
    if clash:
        raise ValueError(f"names used both as algorithm and baseline: {sorted(clash)}")
    out_dir = Path(settings.out_dir)
    common = {
        "env_id": env_id,
        "scenario": scenario,
        "env_kwargs": dict(env_kwargs or {}),
        "timesteps": timesteps,
        "episodes": episodes,
        "eval_seed": eval_seed,
        "protagonist": agents[0] if adversarial else None,
        "eval_adversary": eval_adversary,
        "eval_env_kwargs": evaluated_with if evaluated_with != dict(env_kwargs or {}) else None,
    }
    jobs = [
        CompareJob(
            kind="agent",
            name=algo,
            seed=seed,
            run_dir=out_dir / "runs" / algo / f"seed_{seed}",
            hyperparams=(settings.hyperparams or {}).get(algo),
            vectorized=settings.vectorized,
            **{**common, "timesteps": algo_timesteps.get(algo, timesteps)},
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
        algo_timesteps=algo_timesteps,
        episodes=episodes,
        names=names,
        eval_seed=eval_seed,
        quick=quick,
        out_dir=out_dir,
        directions=metric_directions(metadata),
        adversarial=adversarial,
        eval_adversary=eval_adversary,
        jobs=jobs,
        cost_limit=cost_limit(env_id, scenario, evaluated_with),
        split=settings.split,
        eval_env_kwargs=evaluated_with,
        cost_unit=(metadata.get("info_units") or {}).get("cost"),
    )


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
