"""PPO-Lagrangian: SB3 PPO on the reward ``(r - lambda c) / (1 + lambda)``, lambda >= 0 by dual ascent.

The constrained problem is Safety-Gymnasium's: maximise the expected return subject to
E[episode cost] <= d, where the cost of a step is the env's ``info["cost"]`` (device energy in
J, cloud spend in USD) and d is the per-episode limit of the run's scenario,
:meth:`edgelam.envs.core.spec.EnvSpec.cost_limit`. Its Lagrangian is
``max_pi min_{lambda >= 0} J_r(pi) - lambda (J_c(pi) - d)``. As OmniSafe's PPO-Lag (Ji et al.,
JMLR 2024; its ``Lagrange`` class), the policy step is PPO on the penalised objective and the
dual step is projected gradient ascent on lambda:

* **Reward.** :class:`LagrangianReward` (an SB3 ``VecEnvWrapper`` under VecNormalize) gives PPO
  ``(r - lambda c) / (1 + lambda)`` per step, OmniSafe's normalisation of its penalised
  advantage applied to the rewards (one critic on the shaped reward instead of OmniSafe's
  reward and cost critics). The shaped reward is a convex combination of ``r`` and ``-c``:
  its scale stays between theirs however large lambda grows, so neither VecNormalize's
  running return statistics nor the value targets chase a growing scale, and as lambda grows
  the policy turns to minimising cost alone.
* **Constraint tightening.** With ``cost_limit_margin`` = m > 0 the dual step drives J_c to
  (1 - m) d instead of d: at J_c = d about half of the episodes end over the limit (the episode
  cost spreads around its mean), so m trades return for a lower violation rate.
* **Dual step.** After each rollout (:class:`DualAscentCallback`), with J_c the mean cost of
  the episodes that ended in the rollout (the previous J_c when none did; no step before the
  first episode ends), ``lambda <- max(0, lambda + lambda_lr (J_c - d))``
  (``lambda_optimizer: sgd``), or OmniSafe's default, Adam on the loss ``-lambda (J_c - d)``
  then the clamp at 0 (``lambda_optimizer: adam``: the step is about ``lambda_lr`` whatever
  the unit of the cost). The new lambda prices the next rollout: the rollout just collected
  was shaped with the lambda it was collected under.

Settings: ``configs/agents/hyperparams/ppo_lagrangian.yml``, PPO's keys in rl-zoo3's format plus
the keys of :data:`LAGRANGIAN_KEYS` (OmniSafe's names), which the trainer takes out before
PPO is built. A run folder is an SB3 PPO run (:mod:`edgelam.agents.train`) whose
``meta.json`` records ``"algo": "ppo"`` (the class its model loads as, so ``edgelam
evaluate --policy`` and ``compare`` load it as any PPO run), ``"trainer": "ppo_lagrangian"``
and the ``lagrangian`` settings with the cost limit; ``learning_curve.csv`` adds
``episode_cost`` and ``lagrange_multiplier`` to each episode's row, and ``lagrange.json``
holds every dual step, so that a resumed run continues from the lambda of the checkpoint it
restarts from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from edgelam.agents import hyperparams as hp
from edgelam.agents.lagrange import (
    LAGRANGE_FILE,
    LAGRANGIAN_KEYS,
    OPTIMIZERS,
    LagrangeMultiplier,
    read_updates,
    restore,
    shaped_reward,
    write_updates,
)
from edgelam.agents.runs import Resume
from edgelam.agents.train import SB3Trainer, TrainResult
from edgelam.agents.trainers import TrainSettings
from edgelam.agents.vec import SB3VectorAdapter
from edgelam.envs.core.config import read_yaml
from edgelam.envs.registration import find_spec

ALGO = "ppo_lagrangian"
SB3_ALGO = "ppo"  # the SB3 class of the model (meta.json's "algo")
# env constructor arguments that are not scenario overrides (EnvSpec.cost_limit takes the overrides)
_NOT_OVERRIDES = frozenset({"backend", "render_mode"})


@dataclass(frozen=True)
class LagrangianSettings:
    """The Lagrangian keys of a ``ppo_lagrangian`` entry (see :data:`LAGRANGIAN_KEYS`)."""

    lagrangian_multiplier_init: float = LAGRANGIAN_KEYS["lagrangian_multiplier_init"]
    lambda_lr: float = LAGRANGIAN_KEYS["lambda_lr"]
    lambda_optimizer: str = LAGRANGIAN_KEYS["lambda_optimizer"]
    cost_limit_margin: float = LAGRANGIAN_KEYS["cost_limit_margin"]

    def target(self, limit: float) -> float:
        """The episode cost the dual step drives towards: ``(1 - cost_limit_margin) x limit``."""
        return (1.0 - self.cost_limit_margin) * limit

    @classmethod
    def parse(cls, values: Mapping[str, Any], source: str) -> LagrangianSettings:
        """The settings of ``values`` (keys of :data:`LAGRANGIAN_KEYS`); ``ValueError`` naming ``source``, key."""
        for key in ("lagrangian_multiplier_init", "lambda_lr"):
            value = values.get(key, LAGRANGIAN_KEYS[key])
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{source}: '{ALGO}.{key}' must be a number, got {value!r}")
        init = float(values.get("lagrangian_multiplier_init", LAGRANGIAN_KEYS["lagrangian_multiplier_init"]))
        lr = float(values.get("lambda_lr", LAGRANGIAN_KEYS["lambda_lr"]))
        if init < 0.0:
            raise ValueError(f"{source}: '{ALGO}.lagrangian_multiplier_init' must be >= 0, got {init!r}")
        if lr <= 0.0:
            raise ValueError(f"{source}: '{ALGO}.lambda_lr' must be > 0, got {lr!r}")
        optimizer = values.get("lambda_optimizer", LAGRANGIAN_KEYS["lambda_optimizer"])
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"{source}: '{ALGO}.lambda_optimizer' must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {optimizer!r}")
        margin = values.get("cost_limit_margin", LAGRANGIAN_KEYS["cost_limit_margin"])
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0.0 <= margin < 1.0:
            raise ValueError(f"{source}: '{ALGO}.cost_limit_margin' must be a number in [0, 1), got {margin!r}")
        return cls(init, lr, optimizer, float(margin))


def split_entry(params: Mapping[str, Any], source: str = "hyperparams") -> tuple[dict[str, Any], LagrangianSettings]:
    """An entry's PPO settings (validated as ``ppo``'s) and its Lagrangian settings.

    Raises:
        ValueError: on a key neither PPO nor :data:`LAGRANGIAN_KEYS` knows, or a bad value
            (the message names ``source`` and the key).
    """
    lagrangian = {k: v for k, v in params.items() if k in LAGRANGIAN_KEYS}
    rest = {k: v for k, v in params.items() if k not in LAGRANGIAN_KEYS}
    try:
        ppo = hp.validate(SB3_ALGO, rest, source)
    except ValueError as exc:  # name the Lagrangian keys too
        raise ValueError(f"{exc}; or a Lagrangian key ({', '.join(LAGRANGIAN_KEYS)})") from None
    return ppo, LagrangianSettings.parse(lagrangian, source)


def hyperparams_file() -> Path:
    """``configs/agents/hyperparams/ppo_lagrangian.yml``."""
    return hp.agents_dir() / "hyperparams" / f"{ALGO}.yml"


def read_file(path: Path | None = None) -> dict[str, tuple[dict[str, Any], LagrangianSettings]]:
    """Every entry of the file (env id or ``default``) as ``(PPO settings, Lagrangian settings)``.

    Raises:
        ValueError: on an entry that names no registered env id, or a bad key or value.
    """
    from edgelam.agents.common import check_env_id

    path = path or hyperparams_file()
    out = {}
    for entry, params in read_yaml(path).items():
        if entry != hp.DEFAULT_ENTRY:
            try:
                check_env_id(entry)
            except ValueError:
                raise ValueError(f"{path}: entry {entry!r} is neither '{hp.DEFAULT_ENTRY}' nor a registered env id") \
                    from None
        out[entry] = split_entry(params or {}, source=f"{path}: {entry}")
    return out


def resolve(
    env_id: str | None, overrides: Mapping[str, Any] | None = None, path: Path | None = None
) -> tuple[dict[str, Any], LagrangianSettings]:
    """The PPO and Lagrangian settings of ``env_id``: its entry (else ``default``) plus ``overrides``."""
    path = path or hyperparams_file()
    data = read_yaml(path)
    name = env_id if env_id in data else hp.DEFAULT_ENTRY
    if name not in data:
        raise ValueError(f"{path}: no entry for {env_id!r} and no '{hp.DEFAULT_ENTRY}' entry")
    read_file(path)  # every entry is checked, as hp.read_file does
    return split_entry({**(data[name] or {}), **(overrides or {})}, source=f"{path}: {name}")


def cost_limit(env_id: str, scenario: str | Path = "default", env_kwargs: Mapping[str, Any] | None = None) -> float:
    """The per-episode cost limit d of ``env_id``'s scenario with ``env_kwargs`` (its spec's ``cost_limit``).

    Raises:
        ValueError: if the env or the scenario has no budget (no limit), naming both.
    """
    spec = find_spec(env_id)
    overrides = {k: v for k, v in (env_kwargs or {}).items() if k not in _NOT_OVERRIDES}
    limit = None if spec is None else spec.cost_limit(scenario, **overrides)
    if limit is None:
        why = "has no EnvSpec with a budget (cost_keys)" if spec is None or not spec.cost_keys else \
            "sets no budget"
        raise ValueError(
            f"{ALGO} needs a cost limit: {env_id} scenario {str(scenario)!r}"
            f"{f' with {dict(overrides)}' if overrides else ''} {why}, so EnvSpec.cost_limit is None "
            "(set the env's budget, e.g. --set energy_budget_j=0.6)"
        )
    return limit


class _CostTap(gym.vector.VectorWrapper):
    """Keeps the ``info["cost"]`` array (B,) of a Gymnasium vector env's last step (0 where ``_cost`` masks it)."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.cost: np.ndarray | None = None

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        cost = info.get("cost")
        if cost is None:
            self.cost = None
        else:
            mask = info.get("_cost")
            cost = np.asarray(cost, dtype=np.float64)
            self.cost = cost if mask is None else np.where(mask, cost, 0.0)
        return obs, reward, terminated, truncated, info

    def __getattr__(self, name: str) -> Any:  # the adapter's get_attr / env_method reach the vector env
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.env, name)


class LagrangianReward(VecEnvWrapper):
    """Gives PPO :func:`shaped_reward` of each step and collects the costs of finished episodes.

    Sits on the monitored env, under VecNormalize: the episode returns of ``info["episode"]``
    (Monitor's, or :class:`~edgelam.agents.vec.SB3VectorAdapter`'s) stay the env's own, and
    VecNormalize normalises the shaped reward. The cost of a step is ``info["cost"]`` of each
    env's info dict; on the batched vector env (the adapter's per-env dicts carry no step info)
    it is the vector env's ``info["cost"]`` array, read in one piece below the adapter. Each
    finished episode's ``info["episode"]`` gets ``episode_cost`` (the summed cost) and
    ``lagrange_multiplier`` (the lambda it was shaped with).

    Raises:
        ValueError: (at a step) if the env reports no ``info["cost"]``.
    """

    def __init__(self, venv: VecEnv, multiplier: LagrangeMultiplier) -> None:
        super().__init__(venv)
        self.multiplier = multiplier
        self._tap: _CostTap | None = None
        if isinstance(venv, SB3VectorAdapter):
            self._tap = _CostTap(venv.venv)
            venv.venv = self._tap
        self._episode_cost = np.zeros(self.num_envs)
        self.finished_costs: list[float] = []

    def reset(self) -> VecEnvObs:
        self._episode_cost[:] = 0.0
        return self.venv.reset()

    def _step_cost(self, infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self._tap is not None:
            cost = self._tap.cost
        else:
            try:
                cost = np.array([info["cost"] for info in infos], dtype=np.float64)
            except KeyError:
                cost = None
        if cost is None:
            raise ValueError(f"{ALGO}: the env reports no info['cost'] (is its budget set?)")
        return cost

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, dones, infos = self.venv.step_wait()
        cost = self._step_cost(infos)
        lam = self.multiplier.value
        self._episode_cost += cost
        for i in np.flatnonzero(dones):
            episode_cost = float(self._episode_cost[i])
            self.finished_costs.append(episode_cost)
            episode = infos[i].get("episode")
            if episode is not None:
                episode["episode_cost"] = round(episode_cost, 9)
                episode["lagrange_multiplier"] = lam
            self._episode_cost[i] = 0.0
        return obs, shaped_reward(reward, cost, lam).astype(np.float32), dones, infos

    def pop_finished_costs(self) -> list[float]:
        """The costs of the episodes finished since the last call."""
        costs, self.finished_costs = self.finished_costs, []
        return costs


class DualAscentCallback(BaseCallback):
    """After each rollout: the dual step on the episodes it finished; logs lambda and writes ``lagrange.json``.

    TensorBoard gets ``lagrangian/lagrange_multiplier`` and ``lagrangian/mean_episode_cost``.
    """

    def __init__(self, env: LagrangianReward, path: Path, updates: list[dict[str, Any]]) -> None:
        super().__init__()
        self.env = env
        self.path = path
        self.updates = updates

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        costs = self.env.pop_finished_costs()
        multiplier = self.env.multiplier
        multiplier.update(costs)
        state = asdict(multiplier)
        self.updates.append({
            "timesteps": int(self.num_timesteps),
            "episodes": len(costs),
            "mean_episode_cost": state["mean_episode_cost"],
            "lagrange_multiplier": state["value"],
            **{k: state[k] for k in ("adam_m", "adam_v", "adam_t")},
        })
        write_updates(self.path, multiplier.cost_limit, self.updates)
        self.logger.record("lagrangian/lagrange_multiplier", multiplier.value)
        if multiplier.mean_episode_cost is not None:
            self.logger.record("lagrangian/mean_episode_cost", multiplier.mean_episode_cost)


@dataclass
class LagrangianTrainResult(TrainResult):
    """A :class:`~edgelam.agents.train.TrainResult` plus the run's final lambda and cost limit.

    Attributes:
        lagrange_multiplier: lambda at the end of the run.
        cost_limit: d, the per-episode cost limit of the env's spec.
        cost_target: ``(1 - cost_limit_margin) x d``, the episode cost the dual step drove towards.
        lagrange_path: ``out_dir/lagrange.json``.
    """

    lagrange_multiplier: float = 0.0
    cost_limit: float = 0.0
    cost_target: float = 0.0
    lagrange_path: Path = Path(LAGRANGE_FILE)

    def summary(self) -> dict[str, Any]:
        """:meth:`TrainResult.summary` plus lambda, the cost limit, its target and ``lagrange.json``."""
        return {**super().summary(), "lagrange_multiplier": self.lagrange_multiplier, "cost_limit": self.cost_limit,
                "cost_target": self.cost_target, "lagrange": self.lagrange_path}


class LagrangianTrainer(SB3Trainer):
    """The :class:`~edgelam.agents.trainers.Trainer` of ``ppo_lagrangian`` (PPO on :class:`LagrangianReward`).

    Args:
        algo: its name in the registry (``ppo_lagrangian``).
        callbacks: SB3 callbacks called while learning, after the run's own.
    """

    curve_columns = ("episode_cost", "lagrange_multiplier")

    def __init__(self, algo: str = ALGO, callbacks: Sequence[BaseCallback] = ()) -> None:
        super().__init__(SB3_ALGO, callbacks)
        self.name = algo
        self.hyperparams_algo = algo

    def default_timesteps(self, env_id: str) -> int:
        """The ``n_timesteps`` of ``env_id``'s entry in ``ppo_lagrangian.yml`` (100,000 where it has none)."""
        return int(resolve(env_id)[0].get("n_timesteps", 100_000))

    def _resolve(self, run: TrainSettings) -> tuple[dict[str, Any], LagrangianSettings]:
        params, lagrangian = resolve(run.env_id, run.hyperparams)
        params.pop("n_timesteps", None)
        if run.n_envs is not None:
            params = hp.validate(SB3_ALGO, {**params, "n_envs": run.n_envs})
        return params, lagrangian

    def params(self, run: TrainSettings) -> dict[str, Any]:
        """The PPO settings of the run (the entry, the overrides, ``n_envs``; no Lagrangian key)."""
        return self._resolve(run)[0]

    def settings(self, run: TrainSettings) -> dict[str, Any]:
        """SB3's settings of the run plus the trainer's name and the Lagrangian settings with the cost limit.

        Raises:
            ValueError: if the env or scenario has no budget (:func:`cost_limit`), or on a bad key.
        """
        s = self._resolve(run)[1]
        limit = cost_limit(run.env_id, run.scenario, run.env_kwargs)
        return {**super().settings(run), "trainer": self.name,
                "lagrangian": {**asdict(s), "cost_limit": limit, "cost_target": s.target(limit)}}

    def _multiplier(self, run: TrainSettings) -> LagrangeMultiplier:
        _, s = self._resolve(run)
        limit = cost_limit(run.env_id, run.scenario, run.env_kwargs)
        return LagrangeMultiplier(s.target(limit), s.lambda_lr, s.lambda_optimizer, value=s.lagrangian_multiplier_init)

    def wrap_env(self, venv: VecEnv, run: TrainSettings, start: Resume) -> tuple[VecEnv, Sequence[BaseCallback]]:
        """:class:`LagrangianReward` with lambda where ``start`` left it, and its :class:`DualAscentCallback`."""
        multiplier = self._multiplier(run)
        path = Path(run.out_dir) / LAGRANGE_FILE
        updates = [u for u in read_updates(path) if u["timesteps"] <= start.steps] if start.checkpoint else []
        restore(multiplier, updates)
        write_updates(path, multiplier.cost_limit, updates)
        env = LagrangianReward(venv, multiplier)
        return env, (DualAscentCallback(env, path, updates),)

    def _result(self, result: TrainResult, run: TrainSettings) -> LagrangianTrainResult:
        multiplier = self._multiplier(run)
        path = Path(run.out_dir) / LAGRANGE_FILE
        restore(multiplier, read_updates(path))
        fields = {**vars(result), "algo": self.name}
        limit = cost_limit(run.env_id, run.scenario, run.env_kwargs)
        return LagrangianTrainResult(**fields, lagrange_multiplier=multiplier.value, cost_limit=limit,
                                     cost_target=multiplier.cost_limit, lagrange_path=path)

    def fit(self, run: TrainSettings, start: Resume, progress: bool) -> LagrangianTrainResult:
        """SB3's :meth:`~edgelam.agents.train.SB3Trainer.fit` on the shaped reward."""
        return self._result(super().fit(run, start, progress), run)

    def load(self, run: TrainSettings, start: Resume) -> LagrangianTrainResult:
        """The finished run in the folder, with its final lambda."""
        return self._result(super().load(run, start), run)
