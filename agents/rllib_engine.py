"""RLlib training of edgelam envs, and an adapter that gives the trained policy SB3's ``predict``.

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

:class:`RLlibPolicy` wraps one RLModule with ``predict(obs, state, episode_start,
deterministic)``, so :func:`edgelam.agents.evaluate.evaluate` runs it through the same
loop as SB3 models and baselines (``deterministic=True``: the mode of the action
distribution, what RLlib does with ``explore=False``; Box actions are unsquashed and
clipped to the space as RLlib's env runners do).

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
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from edgelam.agents.common import check_env_id, is_parallel, make_env, make_parallel
from edgelam.agents.policies import META, read_meta
from edgelam.agents.ray_engine import init_ray, require_ray

ALGOS = ("ppo",)
CHECKPOINT = "checkpoint"
LEARNING_CURVE = "learning_curve.csv"
HISTORY = "history.json"
SHARED_MODULE = "shared"
ENV_PREFIX = "edgelam-rllib/"
# where an RLModule lives inside an Algorithm checkpoint
_MODULE_PATH = ("learner_group", "learner", "rl_module")
_SINGLE_MODULE = "default_policy"


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


class RLlibPolicy:
    """An RLlib RLModule behind SB3's ``predict`` (what every edgelam evaluation loop calls).

    Args:
        module: a trained RLModule (``forward_inference`` / ``forward_exploration``).
        action_space: the action space of the agent it acts for.
    """

    def __init__(self, module: Any, action_space: gym.Space) -> None:
        self.module = module
        self.action_space = action_space

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """The module's action for one observation (the distribution's mode when deterministic)."""
        from ray.rllib.utils.spaces.space_utils import unsquash_action

        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)[None])
        with torch.no_grad():
            if deterministic:
                out = self.module.forward_inference({"obs": obs})
                dist_cls = self.module.get_inference_action_dist_cls()
            else:
                out = self.module.forward_exploration({"obs": obs})
                dist_cls = self.module.get_exploration_action_dist_cls()
            dist = dist_cls.from_logits(out["action_dist_inputs"])
            if deterministic:
                dist = dist.to_deterministic()
            action = dist.sample()[0].numpy()
        return unsquash_action(action, self.action_space), state


@dataclass
class RLlibTrainResult:
    """What :func:`train_rllib` produced.

    Attributes:
        out_dir: the run folder.
        checkpoint: the RLlib checkpoint folder.
        env_id: the env id.
        algo: the algorithm.
        seed: the seed.
        iterations: training iterations run.
        num_env_steps: env steps sampled in total.
        wall_time_s: training wall time (building the algorithm included).
        modules: agent -> module id (``{"default_agent": "default_policy"}`` for a Gymnasium env).
        learning_curve: ``out_dir/learning_curve.csv``.
        history: one entry per iteration.
    """

    out_dir: Path
    checkpoint: Path
    env_id: str
    algo: str
    seed: int
    iterations: int
    num_env_steps: int
    wall_time_s: float
    modules: dict[str, str]
    learning_curve: Path
    history: list[dict[str, float]]

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
            "num_timesteps": self.num_env_steps,
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
        return {"default_agent": _SINGLE_MODULE}
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
    check_env_id(env_id)
    require_ray()
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if num_env_runners < 0:
        raise ValueError(f"num_env_runners must be >= 0, got {num_env_runners}")
    if per_agent and not is_parallel(env_id):
        raise ValueError(f"per_agent applies to PettingZoo parallel envs; {env_id} is a Gymnasium env")
    out_dir = Path(out_dir)
    if read_meta(out_dir) is not None:
        raise ValueError(f"{out_dir} already holds a run; use another out_dir")
    env_kwargs = dict(env_kwargs or {})
    modules = _modules(env_id, scenario, env_kwargs, per_agent)
    parallel = is_parallel(env_id)
    config = _apply_hyperparams(_algo_config(algo), hyperparams)

    from ray.tune.registry import register_env

    # RLlib and Ray print progress to stdout: keep stdout for results (--json)
    with contextlib.redirect_stdout(sys.stderr):
        started = init_ray(address)
        began = time.perf_counter()
        try:
            name = ENV_PREFIX + env_id
            register_env(name, _parallel_creator if parallel else _gym_creator)
            config = (
                config.environment(name, env_config={"env_id": env_id, "scenario": scenario, "env_kwargs": env_kwargs})
                .env_runners(num_env_runners=num_env_runners)
                .debugging(seed=seed)
            )
            if parallel:
                config = config.multi_agent(
                    policies=set(modules.values()), policy_mapping_fn=_own_mapping if per_agent else _shared_mapping
                )
            algorithm = config.build_algo()
            history: list[dict[str, float]] = []
            try:
                while not history or history[-1]["timesteps"] < timesteps:
                    if max_iterations is not None and len(history) >= max_iterations:
                        break
                    history.append(_iteration_row(algorithm.train(), len(modules) if parallel else None))
                out_dir.mkdir(parents=True, exist_ok=True)
                checkpoint = Path(algorithm.save_to_path(str((out_dir / CHECKPOINT).resolve())))
            finally:
                algorithm.stop()
        finally:
            if started:
                require_ray().shutdown()
    wall = time.perf_counter() - began

    curve = out_dir / LEARNING_CURVE
    with open(curve, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("timesteps", "episode_return", "episode_length"))
        for row in history:
            if row["episodes"] > 0 and math.isfinite(row["episode_return"]):
                writer.writerow((row["timesteps"], row["episode_return"], row["episode_length"]))
    (out_dir / HISTORY).write_text(json.dumps(history, indent=2) + "\n")
    steps = history[-1]["timesteps"] if history else 0
    meta = {
        "engine": "rllib",
        "algo": algo,
        "env_id": env_id,
        "seed": seed,
        "scenario": str(scenario),
        "env_kwargs": env_kwargs,
        "hyperparams": dict(hyperparams or {}),
        "num_env_runners": num_env_runners,
        "per_agent": per_agent,
        "modules": modules,
        "timesteps": timesteps,
        "num_timesteps": steps,
        "iterations": len(history),
        "finished": True,
        "wall_time_s": wall,
    }
    (out_dir / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return RLlibTrainResult(
        out_dir=out_dir,
        checkpoint=checkpoint,
        env_id=env_id,
        algo=algo,
        seed=seed,
        iterations=len(history),
        num_env_steps=steps,
        wall_time_s=wall,
        modules=modules,
        learning_curve=curve,
        history=history,
    )


def is_rllib_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run written by :func:`train_rllib`."""
    meta = read_meta(Path(folder)) if Path(folder).is_dir() else None
    return bool(meta and meta.get("engine") == "rllib")


def load_rllib_policy(folder: str | Path) -> RLlibPolicy | dict[str, RLlibPolicy]:
    """The policy of a run written by :func:`train_rllib`, ready for ``evaluate``.

    Returns:
        One :class:`RLlibPolicy` for a Gymnasium env or a shared policy (every agent
        uses it), else agent -> :class:`RLlibPolicy` (per-agent policies).

    Raises:
        ValueError: if the folder holds no RLlib run, or Ray is not installed.
    """
    folder = Path(folder)
    if not is_rllib_run(folder):
        raise ValueError(f"no RLlib run in {folder} (no meta.json with engine 'rllib')")
    require_ray()
    from ray.rllib.core.rl_module.rl_module import RLModule

    meta = read_meta(folder)
    modules: dict[str, str] = meta["modules"]
    root = folder / CHECKPOINT
    for part in _MODULE_PATH:
        root = root / part
    loaded = {m: RLModule.from_checkpoint(str((root / m).resolve())) for m in set(modules.values())}
    for module in loaded.values():
        module.eval()
    if not is_parallel(meta["env_id"]):
        module = loaded[_SINGLE_MODULE]
        return RLlibPolicy(module, module.action_space)
    policies = {agent: RLlibPolicy(loaded[m], loaded[m].action_space) for agent, m in modules.items()}
    if len(loaded) == 1:
        return next(iter(policies.values()))
    return policies
