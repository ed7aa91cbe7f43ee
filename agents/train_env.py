"""The monitored vector env an SB3 algorithm trains on, for every kind of env id.

Gymnasium ids: ``make_vec_env`` over copies in a ``DummyVecEnv``, or the env's batched
``vector_entry_point`` env behind :class:`~edgelam.agents.vec.SB3VectorAdapter`; parallel ids:
one policy shared by every agent (:func:`edgelam.agents.marl.shared_vec_env`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from edgelam.agents.common import env_kwargs_for, is_parallel, make_env, with_action_masks
from edgelam.agents.marl import has_batched_game, shared_vec_env
from edgelam.agents.vec import SB3VectorAdapter

# action spaces each algorithm handles
_SPACES: dict[str, tuple[type[gym.Space], ...]] = {
    "ppo": (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary, gym.spaces.Box),
    "a2c": (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary, gym.spaces.Box),
    "maskable_ppo": (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary),
    "dqn": (gym.spaces.Discrete,),
    "sac": (gym.spaces.Box,),
    "td3": (gym.spaces.Box,),
}



def make_train_env(
    env_id: str,
    algo: str,
    scenario: str,
    env_kwargs: Mapping[str, Any] | None,
    n_envs: int,
    seed: int,
    vectorized: bool = False,
) -> VecEnv:
    """The monitored vector env an algorithm trains on (before VecNormalize).

    Gymnasium ids: ``make_vec_env`` over ``n_envs`` copies in a ``DummyVecEnv``
    (MaskablePPO gets ``action_masks()``); with ``vectorized``, the env's batched
    ``vector_entry_point`` env of ``n_envs`` copies behind :class:`SB3VectorAdapter`;
    parallel ids: :func:`~edgelam.agents.marl.shared_vec_env` (``n_envs`` games of the
    env's batched parallel game where it has one, else SuperSuit over ``n_envs`` copies;
    ``vectorized`` asks for the batched game).

    Raises:
        ValueError: if the algorithm does not handle the env's action space (or is
            ``maskable_ppo`` on a parallel env), or ``vectorized`` is asked of an env
            without a ``vector_entry_point``, or with ``maskable_ppo`` of one whose vector
            env has no ``action_masks()``.
    """
    if vectorized and not (is_parallel(env_id) and has_batched_game(env_id, env_kwargs)):
        spec = None if is_parallel(env_id) else gym.spec(env_id)
        if spec is None or spec.vector_entry_point is None:
            raise ValueError(
                f"vectorized: {env_id} has no batched vector env (needs a registered vector_entry_point)"
            )
        creator = spec.vector_entry_point
        if isinstance(creator, str):
            creator = load_env_creator(creator)
        if algo == "maskable_ppo" and not callable(getattr(creator, "action_masks", None)):
            raise ValueError(
                f"vectorized: maskable_ppo needs action_masks() of the vector env; {env_id}'s vector env has none"
            )
        kwargs = env_kwargs_for(scenario, env_kwargs)
        try:
            batched = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs)
        except TypeError as exc:
            raise ValueError(f"{env_id}: bad arguments {kwargs}: {exc}") from exc
        venv: VecEnv = SB3VectorAdapter(batched)
        venv.seed(seed)
        venv.action_space.seed(seed)
    elif is_parallel(env_id):
        if algo == "maskable_ppo":
            raise ValueError("maskable_ppo is not supported with parameter sharing (parallel envs)")
        venv = shared_vec_env(env_id, n_envs, seed, scenario, env_kwargs)
    else:

        def env_fn() -> gym.Env:
            env = make_env(env_id, scenario, env_kwargs)
            return with_action_masks(env) if algo == "maskable_ppo" else env

        venv = make_vec_env(env_fn, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    if not isinstance(venv.action_space, _SPACES[algo]):
        venv.close()
        allowed = ", ".join(s.__name__ for s in _SPACES[algo])
        raise ValueError(f"{algo} needs a {allowed} action space; {env_id} has {venv.action_space}")
    return venv
