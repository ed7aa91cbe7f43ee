"""Batched FedFT: FedFTAllocation-v0's vector env and FedFTPower-v0's batched game, B federations in one State.

Both run :mod:`.dynamics` (the round compiled once, :mod:`.kernels`) on B rows of the one
batched :class:`~.dynamics.State`, with no Python loop per row or per device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from edgelam.envs.core.actions import check_box
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.vector import ReplayVectorEnv, check_batch_arguments, partial_reset_mask
from edgelam.envs.fedft.config import FedFTConfig
from edgelam.envs.fedft.dynamics import (
    Outcome,
    Params,
    State,
    Workspace,
    advance,
    agent_observations,
    allocation,
    draw_fading,
    draw_learning_noise,
    initial,
    learning_generator,
    observation,
    requested_allocation,
)
from edgelam.envs.fedft.env import FedFTAllocationEnv, power_action_space, power_observation_space
from edgelam.envs.fedft.kernels import in_unit_box
from edgelam.envs.fedft.spec import POWER

# FedFTPower-v0's per-game info keys, (B,); the others are per device, (B, K)
GAME_KEYS = ("loss", "num_participants", "total_energy_j", "round_latency_s", "virtual_queue", "uplink_bits",
             "downlink_bits", "global_reward", "cost", "max_epsilon")


def _unit_box_actions(actions: Any, space: spaces.Box, meaning: str) -> np.ndarray:
    """float64 copy of a batch of actions in [-1, 1] of ``space``'s shape (ValueError naming the problem)."""
    if type(actions) is np.ndarray and actions.shape == space.shape and actions.dtype.kind == "f":
        a = actions.astype(np.float64)
        if in_unit_box(a.reshape(-1)):
            return a
    return check_box(actions, space, meaning, "actions")


class _Rows:
    """What the vector env and the batched game share: B rows of one scenario, their generators and resets."""

    params: Params
    num_rows: int

    def _start(self, params: Params, num_rows: int) -> None:
        self.params = params
        self.num_rows = num_rows
        self.work = Workspace.of(params, num_rows)  # what a round writes (info arrays are copied out of it)
        self.learn_rng = np.random.default_rng(0)
        self.state: State = initial(params, np.random.default_rng(0), num_rows)[0]  # replaced by reset()
        self._needs_reset = np.zeros(num_rows, dtype=bool)

    def _reset_all(self, rng: np.random.Generator) -> None:
        self.state, episode = initial(self.params, rng, self.num_rows)
        self.learn_rng = learning_generator(episode.learning_seeds)
        self._needs_reset = np.zeros(self.num_rows, dtype=bool)

    def _reset_rows(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        fresh, episode = initial(self.params, rng, len(rows))
        self.state.set_rows(rows, fresh)
        self.learn_rng = learning_generator(episode.learning_seeds)

    def _play(self, bandwidth: np.ndarray, power: np.ndarray, rng: np.random.Generator) -> Outcome:
        return advance(self.params, self.state, bandwidth, power, draw_fading(rng, self.params, self.num_rows),
                       lambda m: draw_learning_noise(self.learn_rng, self.params, m), self.work)


class FedFTAllocationVectorEnv(_Rows, ReplayVectorEnv):
    """``num_envs`` copies of :class:`~.env.FedFTAllocationEnv` on one batched :class:`~.dynamics.State`.

    Spaces, reward, physics and ``info`` keys are those of the single env: the same
    functions (:func:`~.dynamics.advance`, :func:`~.dynamics.observation`) on B rows
    instead of one. ``info`` values are arrays with a leading axis B (``participants``,
    ``bandwidth_hz``, ``power_w``, ``device_epsilon`` (B, K), ``topic_loss`` (B, G)).

    Each row truncates after ``episode_length`` rounds (never terminated) and the step after
    that resets it (Gymnasium's next-step autoreset: its action is ignored, its reward is 0,
    ``terminated`` and ``truncated`` are False, its observation is the new episode's first).
    When every row resets in that step (always: the rows' episodes have one length, unless a
    partial reset shifted them) the step returns the reset's info (``loss`` (B,),
    ``distance_m`` (B, K)); otherwise every step ``info`` key carries a mask ``_<key>`` (False
    for the resetting rows) and the resets' ``distance_m`` its mask ``_distance_m``.
    ``reset(options={"reset_mask": mask})`` resets only the rows of a bool mask (B,) now.

    Devices, channels and fading of all rows come from one generator (block draws,
    :func:`~.dynamics.initial`, :func:`~.dynamics.draw_fading`); the replay surrogate's noise
    from one learning generator, seeded at every reset from the seeds the resetting rows draw
    (:func:`~.dynamics.learning_generator`). With ``num_envs=1`` and the same seed the
    trajectory equals the single env's bit for bit, resets included. Replay backend only; a
    ``max_episode_steps`` passed to ``gym.make_vec`` caps ``episode_length``, as a
    ``TimeLimit`` would.

    Create it with ``gym.make_vec("edgelam/FedFTAllocation-v0", num_envs=256,
    vectorization_mode="vector_entry_point", scenario=..., **overrides)``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        scenario: str = "default",
        backend: str = "replay",
        max_episode_steps: int | None = None,
        **overrides: Any,
    ):
        self._setup(FedFTAllocationEnv, num_envs, scenario, backend, max_episode_steps, overrides)
        self._start(self.single.fed.params, num_envs)

    def _reset_info(self) -> dict[str, Any]:
        return {"loss": self.state.loss.copy(), "distance_m": self.state.distances_m.copy()}

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every row, or those of ``options["reset_mask"]`` (a bool array (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed) and its info keys carry the mask
        ``_loss`` / ``_distance_m`` of the rows that reset.
        """
        mask = partial_reset_mask(options, seed, self.num_envs)
        if mask is not None:
            self._reset_rows(np.flatnonzero(mask), self.np_random)
            self._needs_reset = self._needs_reset & ~mask
            info = {**self._reset_info(), "_loss": mask, "_distance_m": mask}
            return observation(self.params, self.state, self.work), info
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        self._reset_all(self.np_random)
        return observation(self.params, self.state, self.work), self._reset_info()

    def step(self, actions):
        """Step every row (next-step autoreset for those whose episode ended in the previous step)."""
        a = _unit_box_actions(actions, self.action_space, "per row: bandwidth shares then powers of the devices")
        b = self.num_envs
        resetting = self._needs_reset
        if resetting.all():
            self._reset_all(self.np_random)
            zeros = np.zeros(b, dtype=bool)
            return observation(self.params, self.state, self.work), np.zeros(b), zeros, zeros.copy(), self._reset_info()
        p, s = self.params, self.state
        bandwidth, power = allocation(p, s, a, self.work)
        out = self._play(bandwidth, power, self.np_random)
        info = allocation_infos(p, s, out)
        reward = out.reward.copy()
        terminated = np.zeros(b, dtype=bool)
        truncated = s.step >= self.episode_length
        if resetting.any():
            rows = np.flatnonzero(resetting)
            reward[rows] = 0.0
            truncated[rows] = False
            stepped = ~resetting
            for key in list(info):
                info[f"_{key}"] = stepped
            self._reset_rows(rows, self.np_random)
            distance = np.zeros_like(self.state.distances_m)
            distance[rows] = self.state.distances_m[rows]
            info["distance_m"], info["_distance_m"] = distance, resetting.copy()
        self._needs_reset = truncated.copy()
        return observation(p, self.state, self.work), reward, terminated, truncated, info


def allocation_infos(params: Params, state: State, out: Outcome) -> dict[str, np.ndarray]:
    """FedFTAllocation-v0's ``info`` of every row after a round, arrays with a leading axis B (copies)."""
    c, b = out.costs, state.num_rows
    previous, loss = out.table[:, 0], out.table[:, 1]
    info = {
        "loss": loss.copy(),
        "loss_decrease": previous - loss,
        "topic_loss": state.topic_loss.copy(),
        "participants": c.participants.copy(),
        "num_participants": c.counts[:, 0].copy(),
        "num_dropped": c.counts[:, 1].copy(),
        "energy_j": c.sums[:, 0].copy(),
        "compute_energy_j": c.sums[:, 1].copy(),
        "upload_energy_j": c.sums[:, 2].copy(),
        "latency_s": c.sums[:, 3].copy(),
        "uplink_bits": np.full(b, params.bits),
        "downlink_bits": np.full(b, params.downlink_bits),
        "virtual_queue": state.queue.copy(),
        "bandwidth_hz": c.bandwidth_hz.copy(),
        "power_w": c.power_w.copy(),
    }
    info["cost"] = info["energy_j"]  # the energy the queue accumulates: the same (copied) array
    if params.private:
        eps = state.epsilon(params)
        info["epsilon"] = eps.max(axis=1)
        info["device_epsilon"] = eps
    return info


class FedFTPowerGames(_Rows):
    """``num_games`` games of FedFTPower-v0, each of K devices, played with array math.

    The batched parallel game: the PettingZoo env (:class:`~.env.FedFTPowerEnv`) with a
    leading game axis. Observations (B, K, 7) float32, actions (B, K, 2) float in [-1, 1]
    ([power, bandwidth request] per device), rewards, terminations and truncations (B, K),
    and ``info`` arrays (B, K) per device (``energy_j``, ``latency_s``, ``participated``,
    ``bandwidth_hz``, ``power_w``, ``epsilon`` with privacy) and (B,) per game
    (:data:`GAME_KEYS`). Dynamics, reward and spaces are the env's (:mod:`.dynamics`, the
    same functions). :class:`~edgelam.envs.core.vector.AgentRowsVectorEnv` views the B x K
    agent rows as one Gymnasium vector env, the SB3 view parameter sharing trains on
    (:func:`edgelam.agents.marl.batched_vec_env`).

    Episodes follow Gymnasium's vector conventions per game: a game truncates after
    ``episode_length`` rounds (all its devices at once; never terminated), and the step
    after that resets it (next-step autoreset: its actions are ignored, its rewards are 0,
    ``terminated`` and ``truncated`` are False, its observations are the new episode's
    first). In a step where only some games reset, every ``info`` key carries a boolean
    mask ``_<key>`` (B,) (False for the resetting games), and the resets' ``distance_m`` a
    mask ``_distance_m``. ``reset(options={"reset_mask": mask})`` resets only the games of
    a bool mask (B,) now.

    All games draw from one generator (and the surrogate's noise from one learning
    generator, as :class:`FedFTAllocationVectorEnv`). With ``num_games=1`` and the same seed
    the game equals the PettingZoo env bit for bit, resets included. Replay backend only;
    up to 1,024 devices per game (``num_devices``).

    Build it with ``edgelam.envs.registration.make_batched("edgelam/FedFTPower-v0",
    num_games=256, scenario=..., **overrides)`` (the spec's ``batched_entry_point``).
    """

    metadata = {"name": "fed_ft_power_v0_batched", "render_modes": [], "autoreset_mode": "next_step"}

    def __init__(self, num_games: int = 1, scenario: str = "default", backend: str = "replay", **overrides: Any):
        check_batch_arguments("num_games", num_games, backend, overrides, "batched game")
        self.config: FedFTConfig = load_scenario(FedFTConfig, POWER.scenario_dir, scenario, overrides)
        self._start(Params.build(self.config), num_games)
        self.num_games = num_games
        self.num_agents = self.config.num_devices
        self.episode_length = self.config.episode_length
        self.possible_agents = [f"device_{i}" for i in range(self.num_agents)]
        self.single_observation_space = power_observation_space()
        self.single_action_space = power_action_space()
        self._batch_action_space = spaces.Box(-1.0, 1.0, shape=(num_games, self.num_agents, 2), dtype=np.float32)
        self.np_random, _ = seeding.np_random(None)

    def observation_space(self, agent: str) -> spaces.Box:
        """One device's observation space (the same object for every agent)."""
        return self.single_observation_space

    def action_space(self, agent: str) -> spaces.Box:
        """One device's action space (the same object for every agent)."""
        return self.single_action_space

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every game, or those of ``options["reset_mask"]`` (bool (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed). Returns (observations (B, K, 7),
        info with ``distance_m`` (B, K), and ``_distance_m`` (B,) after a partial reset).
        """
        mask = partial_reset_mask(options, seed, self.num_games)
        if mask is not None:
            rows = np.flatnonzero(mask)
            self._reset_rows(rows, self.np_random)
            self._needs_reset = self._needs_reset & ~mask
            return agent_observations(self.params, self.state, self.work), {"distance_m": self._distances(rows),
                                                                 "_distance_m": mask}
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self._reset_all(self.np_random)
        return agent_observations(self.params, self.state, self.work), {"distance_m": self.state.distances_m.copy()}

    def _distances(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros_like(self.state.distances_m)
        out[rows] = self.state.distances_m[rows]
        return out

    def step(self, actions: Any):
        """Play one round of every game (next-step autoreset for the games that ended in the previous one).

        Returns:
            (observations (B, K, 7), rewards (B, K), terminations (B, K), truncations (B, K), info).

        Raises:
            ValueError: unless ``actions`` are numbers in [-1, 1] of shape (B, K, 2).
        """
        a = _unit_box_actions(actions, self._batch_action_space, "per device: [power, bandwidth request]")
        shape = (self.num_games, self.num_agents)
        resetting = self._needs_reset
        if resetting.all():
            self._reset_all(self.np_random)
            zeros = np.zeros(shape, dtype=bool)
            return (agent_observations(self.params, self.state, self.work), np.zeros(shape), zeros, zeros.copy(),
                    {"distance_m": self.state.distances_m.copy()})
        p, s = self.params, self.state
        bandwidth, power = requested_allocation(p, s, a, self.work)
        out = self._play(bandwidth, power, self.np_random)
        reward, info = power_rewards_infos(p, s, out)
        truncated = np.repeat((s.step >= self.episode_length)[:, None], self.num_agents, axis=1)
        terminated = np.zeros(shape, dtype=bool)
        if resetting.any():
            rows = np.flatnonzero(resetting)
            stepped = ~resetting
            reward[rows] = 0.0
            truncated[rows] = False
            for key in list(info):
                info[f"_{key}"] = stepped
            self._reset_rows(rows, self.np_random)
            info["distance_m"], info["_distance_m"] = self._distances(rows), resetting.copy()
        self._needs_reset = truncated[:, 0].copy()
        return agent_observations(p, self.state, self.work), reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release."""


def power_rewards_infos(params: Params, state: State, out: Outcome) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """FedFTPower-v0's rewards (B, K) and ``info`` arrays ((B, K) per device, (B,) per game) after a round."""
    c, b = out.costs, state.num_rows
    w = params.config.reward
    previous, loss = out.table[:, 0], out.table[:, 1]
    shared = w.loss_scale * (previous - loss)
    reward = shared[:, None] - w.energy_weight_per_j * c.energy_j
    info = {
        "energy_j": c.energy_j.copy(),
        "latency_s": c.device_latency_s.copy(),
        "participated": c.participants.copy(),
        "bandwidth_hz": c.bandwidth_hz.copy(),
        "power_w": c.power_w.copy(),
        "loss": loss.copy(),
        "num_participants": c.counts[:, 0].copy(),
        "total_energy_j": c.sums[:, 0].copy(),
        "round_latency_s": c.sums[:, 3].copy(),
        "virtual_queue": state.queue.copy(),
        "uplink_bits": np.full(b, params.bits),
        "downlink_bits": np.full(b, params.downlink_bits),
        "global_reward": out.table[:, 2].copy(),
    }
    info["cost"] = info["total_energy_j"]  # the shared queue's energy, per game (B,): the same (copied) array
    if params.private:
        eps = state.epsilon(params)
        info["epsilon"] = eps
        info["max_epsilon"] = eps.max(axis=1)
    return reward, info
