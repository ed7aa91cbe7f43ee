"""RLlib training of edgelam envs: :class:`RLlibTrainer`, the :class:`~edgelam.agents.trainers.Trainer` of RLlib.

:func:`train_rllib` trains RLlib's PPO (new API stack: RLModule, Learner, EnvRunner)
on any edgelam env:

* a Gymnasium id is registered in RLlib's env registry (``ray.tune.registry.register_env``)
  under ``edgelam-rllib/<env id>``, built with :func:`edgelam.agents.common.make_env`
  (so its ``max_episode_steps`` applies);
* a PettingZoo parallel id goes through RLlib's ``ParallelPettingZooEnv`` wrapper,
  with one policy shared by every agent (parameter sharing; agents must share their
  spaces) or, with ``per_agent=True``, one policy per agent.

``num_env_runners`` remote env runners sample in parallel (0: sampling in this process).
A run folder holds::

    meta.json            engine "rllib", algo, env, settings, modules (agent -> module id)
    checkpoint/          the RLlib checkpoint (``Algorithm.save_to_path``)
    learning_curve.csv   timesteps,episode_return,episode_length: per training iteration,
                         the means over the episodes that iteration finished (parallel
                         envs: the return of an agent, averaged over agents)
    history.json         the per-iteration numbers above, plus the losses

The folder's ``meta.json`` is written when the run ends: a finished run is reused
(``resume``), an interrupted one trains from scratch. The trained policy loads as
:class:`~edgelam.agents.rllib_policy.RLlibPolicy` (SB3's ``predict``, so
:func:`edgelam.agents.evaluate.evaluate` runs it through the same loop as SB3 models and
baselines).

Ray is an optional dependency (``pip install -e '.[ray]'``), imported when called.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from edgelam.agents.common import check_env_id, is_parallel, make_env, make_parallel
from edgelam.agents.ray_engine import init_ray, require_ray
from edgelam.agents.rllib_policy import CHECKPOINT, SHARED_MODULE, SINGLE_MODULE, RLlibPolicy, load_rllib_policy
from edgelam.agents.runs import CURVE_HEADER, HISTORY, LEARNING_CURVE, Resume, write_meta
from edgelam.agents.trainers import TrainedRun, TrainSettings, train_run

ALGOS = ("ppo",)
ENV_PREFIX = "edgelam-rllib/"


def _gym_creator(env_config: Mapping[str, Any]) -> gym.Env:
    """RLlib env creator of a Gymnasium id (``env_config``: env_id, scenario, env_kwargs)."""
    return make_env(env_config["env_id"], env_config["scenario"], env_config["env_kwargs"])


def _parallel_creator(env_config: Mapping[str, Any]) -> Any:
    """RLlib env creator of a PettingZoo parallel id, through RLlib's PettingZoo wrapper."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    return ParallelPettingZooEnv(make_parallel(env_config["env_id"], env_config["scenario"], env_config["env_kwargs"]))


def _shared_mapping(agent_id: str, episode: Any, **kwargs: Any) -> str:
    """Every agent acts with the shared module."""
    return SHARED_MODULE


def _own_mapping(agent_id: str, episode: Any, **kwargs: Any) -> str:
    """Each agent acts with its own module (named after the agent)."""
    return agent_id


@dataclass
class RLlibTrainResult(TrainedRun):
    """What :func:`train_rllib` produced (the fields of :class:`~edgelam.agents.trainers.TrainedRun`, then these).

    Attributes:
        checkpoint: the RLlib checkpoint folder.
        iterations: training iterations run.
        modules: agent -> module id (``{"default_agent": "default_policy"}`` for a Gymnasium env).
        history: one entry per iteration.
    """

    checkpoint: Path
    iterations: int
    modules: dict[str, str]
    history: list[dict[str, float]]

    @property
    def num_env_steps(self) -> int:
        """Env steps sampled in total (``num_timesteps``)."""
        return self.num_timesteps

    def policy(self) -> RLlibPolicy | dict[str, RLlibPolicy]:
        """The trained policy for :func:`edgelam.agents.evaluate.evaluate` (see :func:`load_rllib_policy`)."""
        return load_rllib_policy(self.out_dir)

    def summary(self) -> dict[str, Any]:
        """The run's numbers and files, for the CLI."""
        return {
            "env_id": self.env_id,
            "engine": "rllib",
            "algo": self.algo,
            "seed": self.seed,
            "out_dir": self.out_dir,
            "checkpoint": self.checkpoint,
            "iterations": self.iterations,
            "num_timesteps": self.num_timesteps,
            "wall_time_s": self.wall_time_s,
            "modules": self.modules,
            "learning_curve": self.learning_curve,
        }


def _algo_config(algo: str) -> Any:
    if algo not in ALGOS:
        raise ValueError(f"unknown RLlib algorithm {algo!r} (available: {', '.join(ALGOS)})")
    from ray.rllib.algorithms.ppo import PPOConfig

    return PPOConfig()


def _apply_hyperparams(config: Any, hyperparams: Mapping[str, Any] | None) -> Any:
    """``config.training(**hyperparams)``; ``hyperparams["model"]`` sets the ``DefaultModelConfig``."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    params = dict(hyperparams or {})
    model = params.pop("model", None)
    if model is not None:
        if not isinstance(model, Mapping):
            raise ValueError(f"hyperparameter model must be a mapping of DefaultModelConfig fields, got {model!r}")
        try:
            config = config.rl_module(model_config=DefaultModelConfig(**model))
        except TypeError as exc:
            raise ValueError(f"bad model hyperparameters {dict(model)}: {exc}") from None
    try:
        return config.training(**params)
    except TypeError as exc:
        raise ValueError(f"bad RLlib training hyperparameters {params}: {exc}") from None


def _modules(env_id: str, scenario: str, env_kwargs: Mapping[str, Any], per_agent: bool) -> dict[str, str]:
    """agent -> module id, checking that a shared module fits every agent's spaces."""
    if not is_parallel(env_id):
        return {"default_agent": SINGLE_MODULE}
    env = make_parallel(env_id, scenario, env_kwargs)
    agents = list(env.possible_agents)
    if not per_agent:
        first = agents[0]
        for agent in agents[1:]:
            same_obs = env.observation_space(agent) == env.observation_space(first)
            if not same_obs or env.action_space(agent) != env.action_space(first):
                env.close()
                raise ValueError(
                    f"a shared policy needs one observation and action space for all agents; {agent!r} and "
                    f"{first!r} differ: train one policy per agent (per_agent=True, --per-agent)"
                )
    env.close()
    return {agent: agent if per_agent else SHARED_MODULE for agent in agents}


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _iteration_row(result: Mapping[str, Any], n_agents: int | None) -> dict[str, float]:
    runners = result.get("env_runners", {}) or {}
    per_agent = runners.get("agent_episode_return_mean") or {}
    if n_agents is not None and per_agent:
        episode_return = float(np.mean([_number(v) for v in per_agent.values()]))
    else:
        episode_return = _number(runners.get("episode_return_mean"))
    learners = result.get("learners", {}) or {}
    losses = {
        f"total_loss/{module}": _number(stats["total_loss"])
        for module, stats in learners.items()
        if isinstance(stats, Mapping) and "total_loss" in stats
    }
    return {
        "iteration": int(result["training_iteration"]),
        "timesteps": int(_number(runners.get("num_env_steps_sampled_lifetime", 0))),
        "episode_return": episode_return,
        "episode_length": _number(runners.get("episode_len_mean")),
        "episodes": int(_number(runners.get("num_episodes", 0)) or 0),
        **losses,
    }


def train_rllib(
    env_id: str,
    algo: str = "ppo",
    timesteps: int = 100_000,
    seed: int = 0,
    out_dir: str | Path = "runs/train_rllib",
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    num_env_runners: int = 0,
    per_agent: bool = False,
    hyperparams: Mapping[str, Any] | None = None,
    address: str | None = None,
    max_iterations: int | None = None,
) -> RLlibTrainResult:
    """Train an RLlib algorithm on an edgelam env until ``timesteps`` env steps are sampled.

    Args:
        env_id: a Gymnasium id or an edgelam PettingZoo parallel id.
        algo: ``ppo``.
        timesteps: env steps to sample (training stops after the iteration that reaches them).
        seed: RLlib's seed (``config.debugging(seed=...)``): module weights and env resets.
        out_dir: the run folder (layout in the module docstring); must not hold a run.
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides.
        num_env_runners: remote env runners (0: sample in this process).
        per_agent: parallel envs: one policy per agent instead of one shared by all.
        hyperparams: ``PPOConfig.training`` keywords (``lr``, ``gamma``,
            ``train_batch_size_per_learner``, ``minibatch_size``, ``num_epochs`` ...);
            ``model``: ``DefaultModelConfig`` fields (``{"fcnet_hiddens": [64, 64]}``).
        address: Ray cluster to join (default: a local instance, shut down at the end,
            unless Ray is already initialised in this process).
        max_iterations: stop after this many iterations even if ``timesteps`` is not reached.

    Raises:
        ValueError: on an unknown env id or algorithm, bad hyperparameters, a shared
            policy over agents with different spaces, ``per_agent`` on a Gymnasium env,
            a run folder that already holds a run, or Ray not installed.
    """
    run = TrainSettings(
        env_id,
        algo,
        timesteps,
        seed,
        Path(out_dir),
        scenario,
        dict(env_kwargs or {}),
        hyperparams,
        num_env_runners=num_env_runners,
        per_agent=per_agent,
        address=address,
        max_iterations=max_iterations,
    )
    return cast(RLlibTrainResult, train_run(RLlibTrainer(algo), run))


class RLlibTrainer:
    """The :class:`~edgelam.agents.trainers.Trainer` of RLlib's algorithms (what :func:`train_rllib` runs)."""

    adversarial = False
    final = CHECKPOINT

    def __init__(self, algo: str = "ppo") -> None:
        self.algo = algo
        self.hyperparams_algo = algo

    def settings(self, run: TrainSettings) -> dict[str, Any]:
        """Engine, algorithm, env, seed, scenario, hyperparameters, env runners, per-agent policies.

        Raises:
            ValueError: on an unknown env id, Ray not installed, ``timesteps < 1``, a negative
                ``num_env_runners``, ``per_agent`` on a Gymnasium env, or ``n_envs``.
        """
        check_env_id(run.env_id)
        require_ray()
        if run.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {run.timesteps}")
        num_env_runners = run.num_env_runners or 0
        if num_env_runners < 0:
            raise ValueError(f"num_env_runners must be >= 0, got {num_env_runners}")
        if run.per_agent and not is_parallel(run.env_id):
            raise ValueError(f"per_agent applies to PettingZoo parallel envs; {run.env_id} is a Gymnasium env")
        if run.n_envs is not None:
            raise ValueError("--engine rllib takes no --n-envs (use --num-env-runners)")
        return {
            "engine": "rllib",
            "algo": self.algo,
            "env_id": run.env_id,
            "seed": run.seed,
            "scenario": str(run.scenario),
            "env_kwargs": dict(run.env_kwargs),
            "hyperparams": dict(run.hyperparams or {}),
            "num_env_runners": num_env_runners,
            "per_agent": run.per_agent,
        }

    def budget(self, run: TrainSettings) -> int:
        """The run's timesteps."""
        return run.timesteps

    def _result(
        self, run: TrainSettings, meta: Mapping[str, Any], history: list[dict[str, float]], reused: bool
    ) -> RLlibTrainResult:
        out_dir = Path(run.out_dir)
        return RLlibTrainResult(
            env_id=run.env_id,
            algo=self.algo,
            seed=run.seed,
            out_dir=out_dir,
            num_timesteps=meta["num_timesteps"],
            wall_time_s=meta["wall_time_s"],
            learning_curve=out_dir / LEARNING_CURVE,
            reused=reused,
            checkpoint=(out_dir / CHECKPOINT).resolve(),
            iterations=meta["iterations"],
            modules=dict(meta["modules"]),
            history=history,
        )

    def load(self, run: TrainSettings, start: Resume) -> RLlibTrainResult:
        """The finished run in the folder."""
        history = json.loads((Path(run.out_dir) / HISTORY).read_text())
        return self._result(run, start.meta or {}, history, reused=True)

    def fit(self, run: TrainSettings, start: Resume, progress: bool) -> RLlibTrainResult:
        """Train until ``run.timesteps`` env steps are sampled; write the checkpoint, curve, history, meta."""
        settings = self.settings(run)
        env_id, env_kwargs, out_dir = run.env_id, dict(run.env_kwargs), Path(run.out_dir)
        per_agent, num_env_runners = run.per_agent, settings["num_env_runners"]
        modules = _modules(env_id, run.scenario, env_kwargs, per_agent)
        parallel = is_parallel(env_id)
        config = _apply_hyperparams(_algo_config(self.algo), run.hyperparams)

        from ray.tune.registry import register_env

        # RLlib and Ray print progress to stdout: keep stdout for results (--json)
        with contextlib.redirect_stdout(sys.stderr):
            started = init_ray(run.address)
            began = time.perf_counter()
            try:
                name = ENV_PREFIX + env_id
                register_env(name, _parallel_creator if parallel else _gym_creator)
                config = (
                    config.environment(
                        name, env_config={"env_id": env_id, "scenario": run.scenario, "env_kwargs": env_kwargs}
                    )
                    .env_runners(num_env_runners=num_env_runners)
                    .debugging(seed=run.seed)
                )
                if parallel:
                    config = config.multi_agent(
                        policies=set(modules.values()), policy_mapping_fn=_own_mapping if per_agent else _shared_mapping
                    )
                algorithm = config.build_algo()
                history: list[dict[str, float]] = []
                try:
                    while not history or history[-1]["timesteps"] < run.timesteps:
                        if run.max_iterations is not None and len(history) >= run.max_iterations:
                            break
                        history.append(_iteration_row(algorithm.train(), len(modules) if parallel else None))
                    out_dir.mkdir(parents=True, exist_ok=True)
                    algorithm.save_to_path(str((out_dir / CHECKPOINT).resolve()))
                finally:
                    algorithm.stop()
            finally:
                if started:
                    require_ray().shutdown()
        wall = time.perf_counter() - began

        with open(out_dir / LEARNING_CURVE, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CURVE_HEADER)
            for row in history:
                if row["episodes"] > 0 and math.isfinite(row["episode_return"]):
                    writer.writerow((row["timesteps"], row["episode_return"], row["episode_length"]))
        (out_dir / HISTORY).write_text(json.dumps(history, indent=2) + "\n")
        meta = {
            **settings,
            "modules": modules,
            "timesteps": run.timesteps,
            "num_timesteps": history[-1]["timesteps"] if history else 0,
            "iterations": len(history),
            "finished": True,
            "wall_time_s": wall,
        }
        write_meta(out_dir, meta)
        return self._result(run, meta, history, reused=False)
