"""Robust adversarial RL (Pinto et al., "Robust Adversarial Reinforcement Learning", ICML 2017).

A protagonist and an adversary share a 2-agent parallel env (``possible_agents ==
[protagonist, adversary]``, e.g. ``["router", "adversary"]``). Training alternates:
the protagonist's PPO learns for ``protagonist_steps`` against the frozen
adversary, then the adversary's PPO learns for ``adversary_steps`` against the
frozen protagonist; repeat. The game is zero-sum: the adversary is trained on
``-r_protagonist`` (``zero_sum=True``), whatever reward the env gives it.

Each phase sees the parallel env as a single-agent Gymnasium env
(:class:`~edgelam.agents.opponent.OpponentView`) whose ``step`` asks the frozen agent's
policy for its action; with ``batched=True``, as ``n_envs`` games of the env's batched
parallel game, one agent's rows (:func:`~edgelam.agents.opponent.one_side_vec_env`).
:class:`RarlTrainer` is RARL's :class:`~edgelam.agents.trainers.Trainer`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from edgelam.agents import hyperparams as hp
from edgelam.agents.common import ParallelFactory, is_parallel, jsonable, make_parallel, torch_threads
from edgelam.agents.opponent import OpponentView, one_side_vec_env
from edgelam.agents.policies import NormalizedPolicy
from edgelam.agents.runs import HISTORY, LEARNING_CURVE, MODEL, VECNORMALIZE, Resume, write_meta
from edgelam.agents.train import LearningCurveCallback
from edgelam.agents.trainers import TrainedRun, TrainSettings
from edgelam.baselines import Policy


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
            :class:`~edgelam.agents.opponent.OpponentView` (:func:`~edgelam.agents.opponent.one_side_vec_env`).

    Raises:
        ValueError: if the env does not have exactly two agents, or ``out_dir``
            already holds a finished RARL run (an interrupted one restarts from scratch),
            or ``batched`` is asked of an env without a batched game with a ``one_side`` view.
    """
    env_id = env if isinstance(env, str) else None
    params = hp.resolve(env_id, "ppo", hyperparams)
    params.pop("n_timesteps", None)  # the file's default budget; RARL's is its phases' steps
    out_dir = Path(out_dir)
    if (out_dir / HISTORY).exists():
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
        write_meta(folder, meta)
        venvs[agent].close()
    (out_dir / HISTORY).write_text(json.dumps(history, indent=2) + "\n")
    return RarlResult(
        protagonist=models[protagonist],
        adversary=models[adversary],
        policies=dict(frozen),
        history=history,
        out_dir=out_dir,
    )


@dataclass
class RarlRun(TrainedRun):
    """A RARL run of :class:`RarlTrainer` (the fields of :class:`~edgelam.agents.trainers.TrainedRun`, then these).

    Attributes:
        agents: ``[protagonist, adversary]``.
        history: the phases (as :attr:`RarlResult.history`).
    """

    agents: list[str]
    history: list[dict[str, Any]]

    def policy_path(self) -> Path:
        """The protagonist's folder."""
        return self.out_dir / self.agents[0]

    def summary(self) -> dict[str, Any]:
        """The run's models and phases, as ``edgelam train`` prints them."""
        return {
            "env_id": self.env_id,
            "algo": self.algo,
            "seed": self.seed,
            "out_dir": self.out_dir,
            "models": {agent: self.out_dir / agent / MODEL for agent in self.agents},
            "history": self.history,
        }


class RarlTrainer:
    """The :class:`~edgelam.agents.trainers.Trainer` of RARL (:func:`train_rarl`) on an adversarial parallel env.

    A run is ``run.iterations`` phase pairs of ``run.timesteps // (2 * run.iterations)`` env steps
    each, PPO with the env's ``configs/agents/hyperparams/ppo.yml`` entry, then its ``rarl.yml`` entry
    where it has one (``edgelam tune --algo rarl --write``), then ``run.hyperparams``
    (overrides shared by both agents); ``run.vectorized``: each side on the env's batched game.
    The folder holds :func:`train_rarl`'s files and a ``meta.json`` written when the run ends:
    a finished run is reused, an interrupted one restarts from scratch.
    """

    hyperparams_algo = "ppo"
    adversarial = True
    final = HISTORY

    def __init__(self, algo: str = "rarl") -> None:
        self.algo = algo

    @staticmethod
    def phase_steps(run: TrainSettings) -> int:
        """Env steps of each phase."""
        return max(run.timesteps // (2 * run.iterations), 1)

    @staticmethod
    def default_timesteps(env_id: str) -> int:
        """The ``n_timesteps`` of the env's ``rarl.yml`` entry, else of its ``ppo.yml`` entry."""
        own = hp.rarl_overrides(env_id).get("n_timesteps")
        return int(own) if own is not None else hp.default_timesteps(env_id, "ppo")

    @staticmethod
    def hyperparams(run: TrainSettings) -> dict[str, Any]:
        """The PPO overrides of both sides: the env's ``rarl.yml`` entry
        (:func:`~edgelam.agents.hyperparams.rarl_overrides`, none where it has none) under ``run.hyperparams``."""
        return {**hp.rarl_overrides(run.env_id), **(run.hyperparams or {})}

    def settings(self, run: TrainSettings) -> dict[str, Any]:
        """Env, seed, phases, scenario and the hyperparameter overrides (``vectorized`` when set).

        Raises:
            ValueError: on a Gymnasium env, or ``run.n_envs`` (set ``n_envs`` in the hyperparameters).
        """
        if not is_parallel(run.env_id):
            raise ValueError(f"rarl needs a 2-agent PettingZoo env [protagonist, adversary]; {run.env_id} is Gymnasium")
        if run.n_envs is not None:
            raise ValueError("rarl runs take no --n-envs (set n_envs with --hp)")
        return jsonable(
            {
                "algo": self.algo,
                "env_id": run.env_id,
                "seed": run.seed,
                "iterations": run.iterations,
                "phase_steps": self.phase_steps(run),
                "scenario": str(run.scenario),
                "env_kwargs": dict(run.env_kwargs),
                "hyperparams": self.hyperparams(run),
                **({"vectorized": True} if run.vectorized else {}),
            }
        )

    def budget(self, run: TrainSettings) -> int:
        """0: the settings fix the phases, so a finished run with them is reused."""
        return 0

    def _run(self, run: TrainSettings, steps: int, wall: float, reused: bool, history: list[dict[str, Any]]) -> RarlRun:
        env = make_parallel(run.env_id, run.scenario, run.env_kwargs)
        agents = list(env.possible_agents)
        env.close()
        out_dir = Path(run.out_dir)
        return RarlRun(
            env_id=run.env_id,
            algo=self.algo,
            seed=run.seed,
            out_dir=out_dir,
            num_timesteps=steps,
            wall_time_s=wall,
            learning_curve=out_dir / agents[0] / LEARNING_CURVE,
            reused=reused,
            agents=agents,
            history=history,
        )

    def load(self, run: TrainSettings, start: Resume) -> RarlRun:
        """The finished run in the folder."""
        meta = start.meta or {}
        history = json.loads((Path(run.out_dir) / HISTORY).read_text())
        return self._run(run, meta["num_timesteps"], meta["wall_time_s"], True, history)

    def fit(self, run: TrainSettings, start: Resume, progress: bool) -> RarlRun:
        """Train both agents (:func:`train_rarl`) and write the run's ``meta.json``."""
        settings = self.settings(run)
        steps = self.phase_steps(run)
        began = time.perf_counter()
        result = train_rarl(
            run.env_id,
            iterations=run.iterations,
            protagonist_steps=steps,
            adversary_steps=steps,
            seed=run.seed,
            out_dir=run.out_dir,
            scenario=run.scenario,
            env_kwargs=run.env_kwargs,
            hyperparams=self.hyperparams(run),
            progress=progress,
            threads=run.threads,
            batched=run.vectorized,
        )
        wall = time.perf_counter() - began
        total = result.protagonist.num_timesteps + result.adversary.num_timesteps
        write_meta(Path(run.out_dir), {**settings, "num_timesteps": total, "wall_time_s": wall})
        return self._run(run, total, wall, False, result.history)
