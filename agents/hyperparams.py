"""Agent hyperparameters of every env id, in rl-zoo3's format: ``configs/agents/hyperparams/<algo>.yml``.

One file per algorithm, as rl-zoo3's own ``hyperparams/ppo.yml``, keyed by env id, with a
``default`` entry for the ids it does not list::

    default:
      n_timesteps: 100000  # training budget of `edgelam train` without --timesteps
      policy: MlpPolicy
      n_envs: 4            # vectorised copies of the env (the games of a batched PettingZoo id)
      normalize: true      # VecNormalize (true, or a mapping of VecNormalize kwargs)
      n_steps: 256         # any other key is a keyword of the SB3 class
      learning_rate: 3.0e-4
      policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}
    edgelam/SplitInference-v0:
      ...

The same file trains with rl-zoo3 (``python -m rl_zoo3.train --algo ppo --env
edgelam/SplitInference-v0 --gym-packages edgelam.envs --conf-file
configs/agents/hyperparams/ppo.yml``) and is the single source of ``edgelam train``,
``compare``, ``results`` and ``tune`` (which writes its best trial back into it).
``policy_kwargs`` is a mapping, or rl-zoo3's string form ``"dict(net_arch=[64, 64],
activation_fn=nn.Tanh)"`` (read without ``eval``: only ``dict``, literals and the
activations of :data:`ACTIVATIONS` by their ``nn`` names). Write floats with a dot
(``3.0e-4``): YAML reads ``3e-4`` as a string.
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
TRAINER_KEYS = frozenset({"n_envs", "normalize", "policy", "n_timesteps"})
DEFAULT_ENTRY = "default"

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


# rl-zoo3's names of the activations, as its string form of policy_kwargs writes them
_NN_NAMES: dict[str, str] = {"Tanh": "tanh", "ReLU": "relu", "ELU": "elu", "LeakyReLU": "leaky_relu", "GELU": "gelu"}


def agents_dir() -> Path:
    """Folder of the agent settings (package data ``edgelam.configs/agents``)."""
    return configs_dir() / "agents"


def hyperparams_file(algo: str) -> Path:
    """The rl-zoo3 hyperparameter file of ``algo`` (``configs/agents/hyperparams/<algo>.yml``)."""
    algo_class(algo)
    return agents_dir() / "hyperparams" / f"{algo}.yml"


RARL = "rarl"


def rarl_file() -> Path:
    """``configs/agents/hyperparams/rarl.yml``: RARL's own PPO entries (env id -> PPO keys, shared by both sides),
    over the env's ``ppo.yml`` entry; an env without one trains on ``ppo.yml`` alone."""
    return agents_dir() / "hyperparams" / f"{RARL}.yml"


def rarl_overrides(env_id: str, path: Path | None = None) -> dict[str, Any]:
    """The env's entry of :func:`rarl_file` (PPO keys, validated as ``ppo``'s), ``{}`` where it has none
    (no ``default`` entry: ``ppo.yml``'s is RARL's default)."""
    path = path or rarl_file()
    if not path.is_file():
        return {}
    entries = read_file(path, "ppo")
    if DEFAULT_ENTRY in entries:
        raise ValueError(f"{path}: no '{DEFAULT_ENTRY}' entry here (ppo.yml's is RARL's default)")
    return dict(entries.get(env_id, {}))


def parse_policy_kwargs(text: str, source: str = "policy_kwargs") -> dict[str, Any]:
    """rl-zoo3's string form ``"dict(net_arch=[64, 64], activation_fn=nn.Tanh)"`` as a mapping.

    Read without ``eval``: the string must be one ``dict(...)`` call (or a ``{...}`` literal)
    whose values are literals or ``nn.<Activation>`` of :data:`ACTIVATIONS`, which become
    their names (``nn.Tanh`` -> ``"tanh"``).

    Raises:
        ValueError: on anything else, naming ``source``.
    """
    import ast

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nn":
            if node.attr not in _NN_NAMES:
                raise ValueError(
                    f"{source}: unknown activation nn.{node.attr} (allowed: {', '.join('nn.' + n for n in _NN_NAMES)})"
                )
            return _NN_NAMES[node.attr]
        if isinstance(node, ast.Call):
            return call(node)
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise ValueError(f"{source}: {ast.unparse(node)!r} is not a literal or an nn activation") from None

    def call(node: ast.Call) -> dict[str, Any]:
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise ValueError(f"{source}: expected dict(key=value, ...), got {ast.unparse(node)!r}")
        return {kw.arg: value(kw.value) for kw in node.keywords if kw.arg is not None}

    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"{source}: cannot parse {text!r}: {exc.msg}") from None
    if isinstance(tree, ast.Call):
        return call(tree)
    if isinstance(tree, ast.Dict):
        return {ast.literal_eval(k): value(v) for k, v in zip(tree.keys, tree.values, strict=True)}
    raise ValueError(f"{source}: expected dict(...) or a {{...}} mapping, got {text!r}")


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
    n_timesteps = out.get("n_timesteps", 1)
    if (
        isinstance(n_timesteps, bool)
        or not isinstance(n_timesteps, int | float)
        or n_timesteps < 1
        or n_timesteps != int(n_timesteps)
    ):
        raise ValueError(f"{source}: '{algo}.n_timesteps' must be an integer >= 1, got {n_timesteps!r}")
    if "n_timesteps" in out:
        out["n_timesteps"] = int(n_timesteps)
    policy_kwargs = out.get("policy_kwargs")
    if isinstance(policy_kwargs, str):
        policy_kwargs = out["policy_kwargs"] = parse_policy_kwargs(policy_kwargs, f"{source}: '{algo}.policy_kwargs'")
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


def read_file(path: Path, algo: str) -> dict[str, dict[str, Any]]:
    """Read and validate ``algo``'s rl-zoo3 hyperparameter file: env id (or ``default``) -> settings.

    Raises:
        ValueError: on a file that is not a mapping of entries, an entry that names no
            registered env id, or a bad key or value (the message names the file and entry).
    """
    from edgelam.agents.common import check_env_id

    data = read_yaml(path)
    out = {}
    for entry, params in data.items():
        if entry != DEFAULT_ENTRY:
            try:
                check_env_id(entry)
            except ValueError:
                raise ValueError(
                    f"{path}: entry {entry!r} is neither '{DEFAULT_ENTRY}' nor a registered env id"
                ) from None
        out[entry] = validate(algo, params or {}, source=f"{path}: {entry}")
    return out


def entry(env_id: str | None, algo: str, path: Path | None = None) -> dict[str, Any]:
    """The settings the file of ``algo`` (or ``path``) gives ``env_id`` (its entry, else ``default``;
    ``None``: ``default``)."""
    path = path or hyperparams_file(algo)
    if not path.is_file():
        raise ValueError(f"no hyperparameter file for {algo}: {path} is missing")
    entries = read_file(path, algo)
    if env_id is not None and env_id in entries:
        return dict(entries[env_id])
    if DEFAULT_ENTRY not in entries:
        raise ValueError(f"{path}: no entry for {env_id!r} and no '{DEFAULT_ENTRY}' entry")
    return dict(entries[DEFAULT_ENTRY])


def resolve(env_id: str | None, algo: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of ``algo`` on ``env_id``: its entry in the algorithm's file, else ``default``, plus ``overrides``.

    ``overrides`` replaces keys one by one (a given ``policy_kwargs`` replaces the
    entry's whole mapping). ``env_id=None`` reads the ``default`` entry.
    """
    params = entry(env_id, algo)
    params.update(overrides or {})
    return validate(algo, params)


def default_timesteps(env_id: str | None, algo: str) -> int:
    """The ``n_timesteps`` the file of ``algo`` gives ``env_id`` (100,000 where the entry has none)."""
    return int(entry(env_id, algo).get("n_timesteps", 100_000))


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
