"""Policies the evaluation loops accept: SB3 models, baselines, saved runs, factories.

A saved run is a folder written by :func:`edgelam.agents.train.train`::

    model.zip          the SB3 model
    vecnormalize.pkl   VecNormalize statistics (only when the run normalised)
    meta.json          {"algo": "ppo", "env_id": ..., "num_timesteps": ..., ...}
    checkpoints/model_<steps>_steps.zip (+ model_vecnormalize_<steps>_steps.pkl)

An rl-zoo3 experiment folder (``python -m rl_zoo3.train ... -f LOGS`` writes
``LOGS/<algo>/<env>_<n>/``) loads too: its ``<env>.zip`` (or ``best_model.zip`` when that
is the path given), the algorithm from ``<env>/args.yml``, the statistics from
``<env>/vecnormalize.pkl``.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from edgelam import baselines
from edgelam.agents.hyperparams import algo_class
from edgelam.agents.runs import CHECKPOINT_NAME, META, MODEL, VECNORMALIZE, read_meta
from edgelam.baselines import Policy

PolicySpec = Policy | str | Path | Callable[[Any], Policy]



class NormalizedPolicy:
    """An SB3 model behind the observation normalisation it was trained with."""

    def __init__(self, model: BaseAlgorithm, vecnormalize: VecNormalize) -> None:
        self.model = model
        self.vecnormalize = vecnormalize
        vecnormalize.training = False
        self._masked = accepts_masks(model)

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[Any, Any]:
        """SB3's ``predict`` on the normalised observation (masks go to models that take them)."""
        extra = {"action_masks": action_masks} if action_masks is not None and self._masked else {}
        obs = self.vecnormalize.normalize_obs(observation)
        return self.model.predict(obs, state, episode_start, deterministic, **extra)


def load_vecnormalize(path: Path) -> VecNormalize:
    """VecNormalize statistics saved by SB3 (no venv attached; for ``normalize_obs``)."""
    with open(path, "rb") as f:
        vecnormalize = pickle.load(f)
    vecnormalize.training = False
    return vecnormalize


def vecnormalize_path(model_path: Path) -> Path | None:
    """The statistics file that belongs to a final model or a checkpoint, if it exists."""
    match = CHECKPOINT_NAME.match(model_path.name)
    name = f"model_vecnormalize_{match.group(1)}_steps.pkl" if match else VECNORMALIZE
    path = model_path.parent / name
    return path if path.is_file() else None


class _ZooLoader(yaml.SafeLoader):
    """YAML's safe loader plus the OrderedDict tag rl-zoo3 writes its ``args.yml`` with."""


_ZooLoader.add_constructor(
    "tag:yaml.org,2002:python/object/apply:collections.OrderedDict",
    lambda loader, node: dict(loader.construct_sequence(node.value[0], deep=True)),
)


def zoo_run(path: Path) -> tuple[Path, str, Path | None] | None:
    """``(model, algo, vecnormalize or None)`` of an rl-zoo3 experiment folder or model, else ``None``.

    Raises:
        ValueError: if the folder's ``args.yml`` cannot be read or names no algorithm.
    """
    path = Path(path)
    if path.is_dir():
        found = [d for d in sorted(path.iterdir()) if (d / "args.yml").is_file() and (path / f"{d.name}.zip").is_file()]
        if len(found) != 1:
            return None
        config_dir, model = found[0], path / f"{found[0].name}.zip"
    elif path.suffix == ".zip":
        model = path
        config_dir = path.with_suffix("") if path.name != "best_model.zip" else None
        if config_dir is None or not (config_dir / "args.yml").is_file():
            dirs = [d for d in path.parent.iterdir() if (d / "args.yml").is_file()] if path.parent.is_dir() else []
            if len(dirs) != 1:
                return None
            config_dir = dirs[0]
    else:
        return None
    try:
        args = yaml.load((config_dir / "args.yml").read_text(), Loader=_ZooLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{config_dir / 'args.yml'}: not rl-zoo3's args file ({exc})") from None
    if not isinstance(args, dict) or "algo" not in args:
        raise ValueError(f"{config_dir / 'args.yml'}: names no algorithm")
    algo = {"ppo_mask": "maskable_ppo"}.get(args["algo"], args["algo"])
    stats = config_dir / VECNORMALIZE
    return model, algo, stats if stats.is_file() else None


def load_policy(path: str | Path) -> Policy:
    """Load a saved model (``model.zip``, a checkpoint, or a run folder; RLlib and rl-zoo3 run folders too).

    The algorithm is read from the ``meta.json`` beside the file (or in its parent
    folder, for checkpoints); VecNormalize statistics, when present, are applied
    to observations.

    Raises:
        ValueError: if the file or its ``meta.json`` is missing.
    """
    path = Path(path)
    meta = read_meta(path if path.is_dir() else path.parent)
    if path.is_dir() and (meta or {}).get("engine") == "rllib":
        from edgelam.agents.rllib_policy import load_rllib_policy

        policy = load_rllib_policy(path)
        if isinstance(policy, dict):
            raise ValueError(
                f"{path} holds one RLlib policy per agent: evaluate the mapping "
                "edgelam.agents.rllib_engine.load_rllib_policy(path) instead"
            )
        return policy
    zoo = zoo_run(path) if meta is None else None
    if zoo is not None:
        model_path, algo, stats_path = zoo
    else:
        model_path = path / MODEL if path.is_dir() else path
        if not model_path.is_file():
            raise ValueError(f"no saved model at {model_path}")
        meta = read_meta(model_path.parent) or read_meta(model_path.parent.parent)
        if meta is None:
            raise ValueError(f"no {META} beside {model_path} (or in its parent): cannot tell the algorithm")
        algo, stats_path = meta["algo"], vecnormalize_path(model_path)
    model = algo_class(algo).load(model_path, device="cpu")
    return model if stats_path is None else NormalizedPolicy(model, load_vecnormalize(stats_path))


def _is_path(spec: str | Path) -> bool:
    text = str(spec)
    return isinstance(spec, Path) or text.endswith(".zip") or "/" in text or Path(text).is_dir()


def is_random_baseline(name: str) -> bool:
    """Whether baseline ``name`` acts at random (``random``, ``random_masked``, ...): evaluation seeds it."""
    return name == "random" or name.startswith("random_")


def resolve_policy(spec: PolicySpec, env: Any, seed: int) -> Policy:
    """Turn a policy spec into an object with ``predict``.

    Args:
        spec: an object with ``predict`` (returned as is); a path to a saved model or
            run folder; a baseline name (built with ``edgelam.baselines.make(name, env)``;
            the random ones, ``random`` and ``random_*``, are seeded with ``seed``); or a callable ``env -> policy``
            (a policy class taking the env, for instance).
        env: the env instance the policy will act on.
        seed: the evaluation seed.
    """
    if hasattr(spec, "predict") and not isinstance(spec, type):
        return spec
    if isinstance(spec, (str, Path)):
        if _is_path(spec):
            return load_policy(spec)
        return baselines.make(spec, env, **({"seed": seed} if is_random_baseline(str(spec)) else {}))
    if callable(spec):
        return spec(env)
    raise ValueError(f"not a policy: {spec!r} (expected predict(), a path, a baseline name or a factory)")


def accepts_masks(policy: Policy) -> bool:
    """Whether ``policy.predict`` takes ``action_masks`` (MaskablePPO and alike)."""
    if isinstance(policy, NormalizedPolicy):
        return policy._masked
    try:
        return "action_masks" in inspect.signature(policy.predict).parameters
    except (TypeError, ValueError):
        return False


def to_env_action(space: gym.Space, action: Any) -> Any:
    """A policy's action in the form the env's ``step`` expects (python int for Discrete)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(np.asarray(action).item())
    return np.asarray(action)
