"""Agent hyperparameters per env, rl-zoo style, loaded from ``configs/agents/<env>.yaml``.

A file maps algorithm names to their settings::

    ppo:
      n_envs: 4            # vectorised copies of the env (DummyVecEnv)
      normalize: true      # VecNormalize (true, or a mapping of VecNormalize kwargs)
      policy: MlpPolicy    # optional; MultiInputPolicy is chosen for Dict observations
      n_steps: 256         # any other key is a keyword of the SB3 class
      learning_rate: 3.0e-4
      policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}

``<env>`` is :func:`edgelam.agents.common.env_dir` of the id; an env without a
file, or without a section for the algorithm, uses ``default.yaml``. Write floats
with a dot (``3.0e-4``): YAML reads ``3e-4`` as a string.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from edgelam.agents.common import env_dir
from edgelam.envs.core.config import configs_dir, read_yaml

ALGOS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO,
    "a2c": A2C,
    "dqn": DQN,
    "sac": SAC,
    "td3": TD3,
    "maskable_ppo": MaskablePPO,
}

# keys handled by the trainer rather than passed to the SB3 class
TRAINER_KEYS = frozenset({"n_envs", "normalize", "policy"})

# SB3 constructor arguments the trainer sets itself, or that take objects YAML cannot express
_RESERVED = frozenset(
    {
        "self",
        "env",
        "seed",
        "verbose",
        "tensorboard_log",
        "_init_setup_model",
        "rollout_buffer_class",
        "replay_buffer_class",
        "action_noise",
    }
)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


def agents_dir() -> Path:
    """Folder of the hyperparameter YAMLs (package data ``edgelam.configs/agents``)."""
    return configs_dir() / "agents"


def allowed_keys(algo: str) -> frozenset[str]:
    """Hyperparameter names accepted for ``algo``."""
    cls = algo_class(algo)
    params = set(inspect.signature(cls.__init__).parameters) - _RESERVED
    return frozenset(params | TRAINER_KEYS)


def algo_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 class of an algorithm name; ``ValueError`` for an unknown one."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r} (allowed: {', '.join(ALGOS)})")
    return ALGOS[algo]


def validate(algo: str, params: Mapping[str, Any], source: str = "hyperparams") -> dict[str, Any]:
    """Check the keys and the trainer-handled values of one algorithm's settings.

    Raises:
        ValueError: on an unknown key or a bad ``n_envs`` / ``normalize`` /
            ``policy_kwargs`` value; the message names ``source`` and the key.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"{source}: {algo}: expected a mapping of hyperparameters, got {params!r}")
    allowed = allowed_keys(algo)
    for key in params:
        if key not in allowed:
            raise ValueError(f"{source}: unknown key '{algo}.{key}' (allowed: {', '.join(sorted(allowed))})")
    out = dict(params)
    n_envs = out.get("n_envs", 1)
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"{source}: '{algo}.n_envs' must be an integer >= 1, got {n_envs!r}")
    normalize = out.get("normalize", False)
    if isinstance(normalize, Mapping):
        vn_keys = set(inspect.signature(VecNormalize.__init__).parameters) - {"self", "venv", "training"}
        for key in normalize:
            if key not in vn_keys:
                raise ValueError(
                    f"{source}: unknown key '{algo}.normalize.{key}' (allowed: {', '.join(sorted(vn_keys))})"
                )
    elif not isinstance(normalize, bool):
        raise ValueError(f"{source}: '{algo}.normalize' must be a bool or a mapping, got {normalize!r}")
    policy_kwargs = out.get("policy_kwargs")
    if policy_kwargs is not None:
        if not isinstance(policy_kwargs, Mapping):
            raise ValueError(f"{source}: '{algo}.policy_kwargs' must be a mapping, got {policy_kwargs!r}")
        activation = policy_kwargs.get("activation_fn")
        if isinstance(activation, str) and activation not in ACTIVATIONS:
            raise ValueError(
                f"{source}: '{algo}.policy_kwargs.activation_fn': unknown activation {activation!r} "
                f"(allowed: {', '.join(ACTIVATIONS)})"
            )
    return out


def read_file(path: Path) -> dict[str, dict[str, Any]]:
    """Read and validate a hyperparameter YAML (every section is checked)."""
    data = read_yaml(path)
    out = {}
    for algo, params in data.items():
        if algo not in ALGOS:
            raise ValueError(f"{path}: unknown algorithm section {algo!r} (allowed: {', '.join(ALGOS)})")
        out[algo] = validate(algo, params or {}, source=str(path))
    return out


def resolve(env_id: str | None, algo: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of ``algo`` on ``env_id``: the env's file (else ``default.yaml``) plus ``overrides``.

    ``overrides`` replaces keys one by one (a given ``policy_kwargs`` replaces the
    file's whole mapping). ``env_id=None`` reads ``default.yaml`` only.
    """
    algo_class(algo)
    params: dict[str, Any] = {}
    paths = [agents_dir() / "default.yaml"]
    if env_id is not None:
        paths.insert(0, agents_dir() / f"{env_dir(env_id)}.yaml")
    for path in paths:
        if path.is_file():
            sections = read_file(path)
            if algo in sections:
                params = sections[algo]
                break
    params.update(overrides or {})
    return validate(algo, params)


def sb3_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The SB3 constructor keywords of validated settings (activation names -> torch classes)."""
    kwargs = {k: v for k, v in params.items() if k not in TRAINER_KEYS}
    policy_kwargs = kwargs.get("policy_kwargs")
    if policy_kwargs is not None:
        policy_kwargs = dict(policy_kwargs)
        activation = policy_kwargs.get("activation_fn")
        if isinstance(activation, str):
            policy_kwargs["activation_fn"] = ACTIVATIONS[activation]
        kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


def normalize_kwargs(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """VecNormalize keywords, or ``None`` when the settings do not normalise."""
    normalize = params.get("normalize", False)
    if normalize is False:
        return None
    return {} if normalize is True else dict(normalize)
