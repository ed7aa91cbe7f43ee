"""Training speed of parameter-sharing PPO on a PettingZoo env (``edgelam bench --marl-train``).

:func:`bench_marl_train` times the env's batched game against SuperSuit's conversion (what
training used before the batched game), in the same run.
"""

from __future__ import annotations

import time
from typing import Any

from edgelam.agents.bench import fmt
from edgelam.agents.common import make_parallel
from edgelam.agents.compare import machine_info
from edgelam.envs import registration

MARL_ENV_ID = "edgelam/MultiUserOffload-v0"
# PPO settings where the simulator, not the gradient steps, bounds training: 64 games (256 agent rows
# of MultiUserOffload), 16,384 transitions per rollout, 4 epochs of 4 minibatches
THROUGHPUT_PPO = {"n_envs": 64, "n_steps": 64, "batch_size": 4096, "n_epochs": 4}


def _learn_steps_per_s(env_id: str, sharing: str, params: dict[str, Any], timesteps: int, seed: int) -> float:
    """SB3 timesteps (agent-row steps) per second of ``model.learn`` with parameter sharing ``sharing``."""
    from stable_baselines3.common.vec_env import VecNormalize

    from edgelam.agents import hyperparams as hp
    from edgelam.agents.common import torch_threads
    from edgelam.agents.marl import batched_vec_env, parallel_vec_env

    n_envs = params["n_envs"]
    if sharing == "batched":
        venv = batched_vec_env(env_id, n_envs, seed)
    else:
        venv = parallel_vec_env(lambda: make_parallel(env_id), n_envs, seed)
    norm = hp.normalize_kwargs(params)
    if norm is not None:
        venv = VecNormalize(venv, **norm)
    kwargs = {"device": "cpu", **hp.sb3_kwargs(params)}
    model = hp.algo_class("ppo")("MlpPolicy", venv, seed=seed, verbose=0, **kwargs)
    with torch_threads(1):
        began = time.perf_counter()
        model.learn(total_timesteps=timesteps)
        wall = time.perf_counter() - began
    venv.close()
    return model.num_timesteps / wall


def bench_marl_train(
    env_id: str = MARL_ENV_ID,
    timesteps: int = 65_536,
    hyperparams: dict[str, Any] | None = None,
    repeats: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Parameter-sharing PPO training speed on the env's batched game and through SuperSuit, same run.

    Both train the same PPO (``configs/agents`` settings of the env with ``hyperparams`` on top,
    default :data:`THROUGHPUT_PPO`, ``{}`` for the file's settings alone; VecNormalize as
    ``edgelam train`` applies it; one torch thread) for ``timesteps`` SB3 timesteps, one per
    agent row and step, so timesteps/s are agent-steps/s of training. The two run alternately
    ``repeats`` times; each reports its fastest run (the least disturbed on a busy machine).
    ``ratio`` = batched / SuperSuit.

    Raises:
        ValueError: if ``env_id`` has no batched game.
    """
    from edgelam.agents import hyperparams as hp

    if registration.find_spec(env_id) is None or registration.find_spec(env_id).batched_entry_point is None:
        raise ValueError(f"{env_id}: no batched parallel game to train on (its spec has no batched_entry_point)")
    params = hp.resolve(env_id, "ppo", THROUGHPUT_PPO if hyperparams is None else hyperparams)
    runs: dict[str, list[float]] = {"supersuit": [], "batched": []}
    for _ in range(repeats):
        for sharing in runs:
            runs[sharing].append(_learn_steps_per_s(env_id, sharing, params, timesteps, seed))
    best = {k: max(v) for k, v in runs.items()}
    return {
        "env_id": env_id,
        "algo": "ppo",
        "timesteps": timesteps,
        "hyperparams": params,
        "agent_rows": params["n_envs"] * registration.make_batched(env_id).num_agents,
        "supersuit_steps_per_s": best["supersuit"],
        "batched_steps_per_s": best["batched"],
        "ratio": best["batched"] / best["supersuit"],
        "runs": runs,
        "machine": machine_info(),
    }


def marl_rows(result: dict[str, Any]) -> list[list[str]]:
    """:func:`bench_marl_train` as table rows (header first)."""
    p = result["hyperparams"]
    settings = f"n_envs {p['n_envs']}, n_steps {p['n_steps']}, batch {p['batch_size']}, epochs {p['n_epochs']}"
    return [
        ["env", "PPO settings", "SuperSuit steps/s", "batched steps/s", "ratio"],
        [
            result["env_id"],
            settings,
            fmt(result["supersuit_steps_per_s"], spec=",.0f"),
            fmt(result["batched_steps_per_s"], spec=",.0f"),
            f"{result['ratio']:.2f}x",
        ],
    ]
