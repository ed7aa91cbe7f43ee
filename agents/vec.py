"""Stable-Baselines3 on a batched Gymnasium vector env: :class:`SB3VectorAdapter`.

SB3 algorithms talk to a :class:`stable_baselines3.common.vec_env.VecEnv`: an env that
ends an episode is reset in the same ``step`` and its last observation travels in
``info["terminal_observation"]``; ``infos`` is a list with one dict per env; ``reset()``
returns the observations only; seeds given by ``seed()`` apply at the next reset.
A Gymnasium :class:`~gymnasium.vector.VectorEnv` with next-step autoreset (edgelam's
batched envs, ``gym.make_vec(..., vectorization_mode="vector_entry_point")``) instead
reports the end and resets on the following call. The adapter converts: after a step
where some envs ended, it resets exactly those at once -- ``reset()`` when all ended,
``reset(options={"reset_mask": done})`` when only some did (Gymnasium's partial reset,
which edgelam's vector envs and ``SyncVectorEnv`` implement) -- so SB3 gets the new
episodes' first observations in the same step. Same-step autoreset vector envs
(``final_obs`` in ``info``) are taken as they are.

Like SB3's ``Monitor``, the adapter writes ``info["episode"] = {"r", "l", "t"}`` (return,
length, seconds since the adapter was built) for every finished episode, so
``rollout/ep_rew_mean`` logs, ``evaluate_policy`` and edgelam's learning-curve callback
work without a ``VecMonitor`` on top. A step in which no env ended does no Python work per
env beyond creating the list of empty info dicts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn


class SB3VectorAdapter(VecEnv):
    """An SB3 ``VecEnv`` over one Gymnasium ``VectorEnv`` (Box / Discrete / MultiDiscrete spaces).

    Attributes, methods and ``env_is_wrapped`` refer to the vector env as a whole: it is
    one object, not ``num_envs`` wrapped copies, so ``get_attr(name)`` gives its attribute
    once per requested index, ``set_attr`` sets it once, ``env_method`` calls it once and
    repeats the result. ``env_is_wrapped(Monitor)`` is True when ``monitor`` is on (the
    adapter fills ``info["episode"]`` as Monitor does), False for any other wrapper. The
    vector env has one random generator: ``seed(s)`` seeds it with ``s`` at the next reset.

    Args:
        venv: the vector env (next-step, same-step or disabled autoreset).
        monitor: record episode returns and lengths in ``info["episode"]``.
        step_info: also copy each step's ``info`` arrays into the per-env dicts
            (a Python loop over envs and keys per step; SB3's algorithms do not read
            them, evaluation code may).

    Raises:
        ValueError: if ``venv`` is not a Gymnasium ``VectorEnv``, or (at a step) if some but
            not all of its envs end and it cannot reset only those.
    """

    def __init__(self, venv: gym.vector.VectorEnv, monitor: bool = True, step_info: bool = False) -> None:
        if not isinstance(venv, gym.vector.VectorEnv):
            raise ValueError(f"venv: expected a gymnasium.vector.VectorEnv, got {type(venv).__name__}")
        self.venv = venv
        self.monitor = monitor
        self.step_info = step_info
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.autoreset_mode = AutoresetMode(mode) if isinstance(mode, str) else mode
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.metadata = {**venv.metadata, "render_modes": self.metadata["render_modes"]}
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._t_start = time.time()

    # -- SB3 VecEnv API -------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every env (with the seed of :meth:`seed`, if one was set) and return the observations."""
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, info = self.venv.reset(seed=seed, options=options)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = self._split_info(info, np.arange(self.num_envs))
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise ValueError("step_wait() without step_async(actions)")
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if self.step_info:
            self._fill(infos, info, np.arange(self.num_envs))
        if self.monitor:
            self._returns += reward
            self._lengths += 1
        if done.any():
            obs = self._end_episodes(obs, info, done, terminated, truncated, infos)
        return obs, np.asarray(reward, dtype=np.float32), done, infos

    def _end_episodes(
        self,
        obs: np.ndarray,
        info: dict[str, Any],
        done: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> np.ndarray:
        """Reset the envs that ended (unless the vector env did), fill their terminal entries."""
        idx = np.flatnonzero(done)
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            final_obs = info["final_obs"]
            terminal = [final_obs[i] for i in idx]
        else:
            terminal = list(np.asarray(obs)[idx].copy())
            if done.all():
                obs, reset_info = self.venv.reset()
            else:
                try:
                    obs, reset_info = self.venv.reset(options={"reset_mask": done})
                except (TypeError, ValueError, NotImplementedError) as exc:
                    raise ValueError(
                        f"{type(self.venv).__name__}: some envs ended ({idx.tolist()}) and the vector env cannot "
                        f"reset only those (reset(options={{'reset_mask': ...}})): {exc}"
                    ) from exc
            for i, reset_info_i in zip(idx, self._split_info(reset_info, idx), strict=True):
                self.reset_infos[i] = reset_info_i
        elapsed = round(time.time() - self._t_start, 6)
        for n, i in enumerate(idx):
            entry = infos[i]
            entry["terminal_observation"] = terminal[n]
            entry["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if self.monitor:
                entry["episode"] = {"r": round(float(self._returns[i]), 6), "l": int(self._lengths[i]), "t": elapsed}
        if self.monitor:
            self._returns[idx] = 0.0
            self._lengths[idx] = 0
        return obs

    @staticmethod
    def _fill(infos: list[dict[str, Any]], info: dict[str, Any], idx: np.ndarray) -> None:
        """Copy the entries of ``info`` (arrays over the batch, ``_key`` masks) for envs ``idx`` into ``infos``."""
        for key, value in info.items():
            if key.startswith("_"):
                continue
            mask = info.get(f"_{key}")
            for i in idx:
                if mask is None or mask[i]:
                    v = value[i]
                    infos[i][key] = v.item() if isinstance(v, np.generic) else v

    def _split_info(self, info: dict[str, Any], idx: np.ndarray) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        self._fill(out, info, idx)
        return [out[i] for i in idx]

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per index."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the vector env's attribute (shared by every index)."""
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call the vector env's method once; its result is repeated per index.

        ``action_masks`` (what sb3-contrib's MaskablePPO calls) is the exception: the vector
        env's ``action_masks()`` is (B, A), one row per env, and each index gets its row.
        """
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        if method_name == "action_masks":
            return [result[i] for i in self._get_indices(indices)]
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True for ``Monitor`` when the adapter monitors episodes; the vector env has no other wrapper."""
        wrapped = self.monitor and issubclass(wrapper_class, Monitor)
        return [wrapped for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
