"""Robust adversarial RL (Pinto et al., "Robust Adversarial Reinforcement Learning", ICML 2017).

A protagonist and an adversary share a 2-agent parallel env (``possible_agents ==
[protagonist, adversary]``, e.g. ``["router", "adversary"]``). Training alternates:
the protagonist's PPO learns for ``protagonist_steps`` against the frozen
adversary, then the adversary's PPO learns for ``adversary_steps`` against the
frozen protagonist; repeat. The game is zero-sum: the adversary is trained on
``-r_protagonist`` (``zero_sum=True``), whatever reward the env gives it.

Each phase sees the parallel env as a single-agent Gymnasium env
(:class:`OpponentView`) whose ``step`` asks the frozen agent's policy for its action;
with ``batched=True``, as ``n_envs`` games of the env's batched parallel game, one
agent's rows (the game's ``one_side`` view, e.g.
:class:`edgelam.envs.robust_routing.vector.OneSideVectorEnv`) behind
:class:`~edgelam.agents.vec.SB3VectorAdapter`, no Python loop over copies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from edgelam.agents import hyperparams as hp
from edgelam.agents.common import ParallelFactory, env_kwargs_for, make_parallel, torch_threads
from edgelam.agents.policies import META, MODEL, VECNORMALIZE, NormalizedPolicy, to_env_action
from edgelam.agents.train import LEARNING_CURVE, LearningCurveCallback
from edgelam.agents.vec import SB3VectorAdapter
from edgelam.baselines import Policy
from edgelam.envs import registration


class OpponentView(gym.Env):
    """One agent's view of a parallel env; every other agent acts through a fixed policy.

    Args:
        env_fn: builds the parallel env (this view owns its instance).
        agent: the learning agent.
        opponents: agent -> policy for every other agent; read at each step, so
            the mapping may be filled or changed after construction.
        zero_sum_with: if set, the reward is minus this agent's reward
            (the RARL adversary); otherwise the env's reward of ``agent``.
        deterministic_opponents: passed to the opponents' ``predict``.

    ``info`` carries the env's info of ``agent`` plus ``agent_rewards`` (every
    agent's reward of the step).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    render_mode = None

    def __init__(
        self,
        env_fn: Callable[[], ParallelEnv],
        agent: str,
        opponents: Mapping[str, Policy],
        zero_sum_with: str | None = None,
        deterministic_opponents: bool = False,
    ) -> None:
        self.env = env_fn()
        if agent not in self.env.possible_agents:
            raise ValueError(f"unknown agent {agent!r} (agents: {self.env.possible_agents})")
        self.agent = agent
        self.opponents = opponents
        self.zero_sum_with = zero_sum_with
        self.deterministic_opponents = deterministic_opponents
        self.observation_space = self.env.observation_space(agent)
        self.action_space = self.env.action_space(agent)
        self._observations: dict[str, Any] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Reset the parallel env; returns the learning agent's observation and info."""
        super().reset(seed=seed)
        self._observations, infos = self.env.reset(seed=seed, options=options)
        return self._observations[self.agent], dict(infos.get(self.agent, {}))

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step every agent: ``action`` for the learner, the opponents' policies for the rest."""
        actions = {self.agent: to_env_action(self.action_space, action)}
        for other in self.env.agents:
            if other != self.agent:
                other_action, _ = self.opponents[other].predict(
                    self._observations[other], deterministic=self.deterministic_opponents
                )
                actions[other] = to_env_action(self.env.action_space(other), other_action)
        self._observations, rewards, terminations, truncations, infos = self.env.step(actions)
        if self.zero_sum_with is not None:
            reward = -float(rewards[self.zero_sum_with])
        else:
            reward = float(rewards[self.agent])
        info = {**infos.get(self.agent, {}), "agent_rewards": {a: float(r) for a, r in rewards.items()}}
        terminated = bool(terminations.get(self.agent, False))
        truncated = bool(truncations.get(self.agent, False)) or not self.env.agents
        return self._observations.get(self.agent), reward, terminated, truncated, info

    def close(self) -> None:
        """Close the parallel env."""
        self.env.close()


@dataclass
class RarlResult:
    """What :func:`train_rarl` produced.

    Attributes:
        protagonist: the protagonist's PPO model.
        adversary: the adversary's PPO model.
        policies: agent name -> policy ready for evaluation (normalisation applied).
        history: one entry per phase: ``iteration``, ``trained`` (agent name),
            ``timesteps`` (of that agent so far), ``episodes`` finished in the phase
            and their ``mean_return`` (the trained agent's reward).
        out_dir: ``<agent>/model.zip`` (+ ``vecnormalize.pkl``, ``meta.json``,
            ``learning_curve.csv``) per agent, and ``history.json``.
    """

    protagonist: PPO
    adversary: PPO
    policies: dict[str, Policy]
    history: list[dict[str, Any]]
    out_dir: Path


class _PhaseReturns(BaseCallback):
    """Collects the returns of the episodes finished during one ``learn`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            if "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
        return True


def one_side_vec_env(
    env: str | ParallelFactory,
    n_envs: int,
    seed: int | None,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    **view_kwargs: Any,
) -> VecEnv:
    """An SB3 VecEnv of one agent's rows of ``n_envs`` games of the env's batched game, the other agent fixed.

    ``view_kwargs`` (``agent``, ``opponents``, ``zero_sum_with``) as :class:`OpponentView`'s; the
    game's ``one_side`` builds the view (opponents predict on a batch of observations).

    Raises:
        ValueError: if ``env`` is not an id whose spec has a batched game (replay backend) with a
            ``one_side`` view.
    """
    spec = registration.find_spec(env) if isinstance(env, str) else None
    backend = dict(env_kwargs or {}).get("backend", "replay")
    if spec is None or spec.batched_entry_point is None or backend != "replay":
        raise ValueError(f"batched: {env!r} has no batched parallel game (an id whose spec has a "
                         f"batched_entry_point, replay backend)")
    game = registration.make_batched(env, num_games=n_envs, **env_kwargs_for(scenario, env_kwargs))
    if not callable(getattr(game, "one_side", None)):
        raise ValueError(f"batched: {env}'s batched game has no one_side() view of one agent's rows")
    venv = SB3VectorAdapter(game.one_side(**view_kwargs))
    venv.seed(seed)
    venv.action_space.seed(seed)
    return venv


def _policy(model: PPO, venv: VecEnv) -> Policy:
    return NormalizedPolicy(model, venv) if isinstance(venv, VecNormalize) else model


def train_rarl(
    env: str | ParallelFactory,
    iterations: int = 5,
    protagonist_steps: int = 2048,
    adversary_steps: int = 2048,
    seed: int = 0,
    out_dir: str | Path = "runs/rarl",
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    zero_sum: bool = True,
    progress: bool = False,
    threads: int = 1,
    batched: bool = False,
) -> RarlResult:
    """Alternate PPO training of a protagonist and an adversary (RARL).

    Args:
        env: a parallel env id or factory whose ``possible_agents`` are
            ``[protagonist, adversary]``.
        iterations: number of (protagonist phase, adversary phase) pairs.
        protagonist_steps: env steps of each protagonist phase (N_mu in the paper,
            counted in steps).
        adversary_steps: env steps of each adversary phase (N_nu).
        seed: seed of everything (the adversary's model and envs use ``seed + 1``).
        out_dir: where the two models and the history are saved.
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides.
        hyperparams: overrides of the env's entry in ``configs/agents/hyperparams/ppo.yml`` (or its ``default``),
            shared by both agents; ``n_envs`` copies of the view per agent,
            ``normalize`` gives each agent its own VecNormalize, applied also when it
            acts as the frozen opponent.
        zero_sum: train the adversary on minus the protagonist's reward.
        progress: SB3 progress bars.
        threads: torch CPU threads while learning.
        batched: each agent learns on ``n_envs`` games of the env's batched parallel game
            (its spec's ``batched_entry_point``, replay backend) instead of ``n_envs`` copies of
            :class:`OpponentView` (:func:`one_side_vec_env`).

    Raises:
        ValueError: if the env does not have exactly two agents, or ``out_dir``
            already holds a finished RARL run (an interrupted one restarts from scratch),
            or ``batched`` is asked of an env without a batched game with a ``one_side`` view.
    """
    env_id = env if isinstance(env, str) else None
    params = hp.resolve(env_id, "ppo", hyperparams)
    params.pop("n_timesteps", None)  # the file's default budget; RARL's is its phases' steps
    out_dir = Path(out_dir)
    if (out_dir / "history.json").exists():
        raise ValueError(f"{out_dir} already holds a RARL run; choose another out_dir")

    def env_fn() -> ParallelEnv:
        return make_parallel(env, scenario, env_kwargs)

    probe = env_fn()
    agents = list(probe.possible_agents)
    probe.close()
    if len(agents) != 2:
        raise ValueError(f"RARL needs a 2-agent env [protagonist, adversary]; got agents {agents}")
    protagonist, adversary = agents
    set_random_seed(seed)
    frozen: dict[str, Policy] = {}
    norm_kwargs = hp.normalize_kwargs(params)
    kwargs = hp.sb3_kwargs(params)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("policy", params.get("policy") or "MlpPolicy")
    models: dict[str, PPO] = {}
    venvs: dict[str, VecEnv] = {}
    for offset, agent in enumerate(agents):
        view_kwargs = {
            "agent": agent,
            "opponents": frozen,
            "zero_sum_with": protagonist if zero_sum and agent == adversary else None,
        }
        if batched:
            venv = one_side_vec_env(env, params["n_envs"], seed + offset, scenario, env_kwargs, **view_kwargs)
        else:
            venv = make_vec_env(
                OpponentView,
                n_envs=params["n_envs"],
                seed=seed + offset,
                env_kwargs={"env_fn": env_fn, **view_kwargs},
                vec_env_cls=DummyVecEnv,
            )
        if norm_kwargs is not None:
            venv = VecNormalize(venv, **norm_kwargs)
        venvs[agent] = venv
        tb_dir = str(out_dir / agent / "tb")
        models[agent] = PPO(env=venv, seed=seed + offset, tensorboard_log=tb_dir, **kwargs)
        frozen[agent] = _policy(models[agent], venv)

    history: list[dict[str, Any]] = []
    curves = {a: LearningCurveCallback(out_dir / a / LEARNING_CURVE) for a in agents}
    for agent in agents:
        (out_dir / agent).mkdir(parents=True, exist_ok=True)
        (out_dir / agent / LEARNING_CURVE).unlink(missing_ok=True)  # left by an interrupted run
    with torch_threads(threads):
        for iteration in range(iterations):
            for agent, steps in ((protagonist, protagonist_steps), (adversary, adversary_steps)):
                for other, venv in venvs.items():
                    if isinstance(venv, VecNormalize):
                        venv.training = other == agent
                phase = _PhaseReturns()
                models[agent].learn(
                    total_timesteps=steps,
                    callback=[phase, curves[agent]],
                    reset_num_timesteps=False,
                    tb_log_name="ppo",
                    progress_bar=progress,
                )
                history.append(
                    {
                        "iteration": iteration,
                        "trained": agent,
                        "timesteps": int(models[agent].num_timesteps),
                        "episodes": len(phase.returns),
                        "mean_return": float(np.mean(phase.returns)) if phase.returns else float("nan"),
                    }
                )
    for agent in agents:
        folder = out_dir / agent
        models[agent].save(folder / MODEL)
        if isinstance(venvs[agent], VecNormalize):
            venvs[agent].save(str(folder / VECNORMALIZE))
        meta = {
            "algo": "ppo",
            "env_id": env_id,
            "agent": agent,
            "role": "protagonist" if agent == protagonist else "adversary",
            "seed": seed,
            "scenario": str(scenario),
            "env_kwargs": dict(env_kwargs or {}),
            "num_timesteps": int(models[agent].num_timesteps),
            "finished": True,
        }
        (folder / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        venvs[agent].close()
    (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    return RarlResult(
        protagonist=models[protagonist],
        adversary=models[adversary],
        policies=dict(frozen),
        history=history,
        out_dir=out_dir,
    )
