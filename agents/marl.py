"""Multi-agent training by parameter sharing, and the evaluation loop of parallel envs.

Parameter sharing (Terry et al., "Revisiting Parameter Sharing in Multi-Agent Deep
RL", 2020): the agents of a parallel env become the sub-envs of one SB3 vector env,
so one SB3 policy acts for every agent. :func:`edgelam.agents.train.train` does this
for any id in ``PARALLEL_ENVS`` through :func:`shared_vec_env`, which picks

* :func:`batched_vec_env` where the env's spec has a batched parallel game
  (``batched_entry_point``; replay backend): ``n_envs`` games in one array simulator,
  its B x N agent rows (:class:`~edgelam.envs.core.vector.AgentRowsVectorEnv`) behind
  :class:`~edgelam.agents.vec.SB3VectorAdapter`, no Python loop over games or agents;
* :func:`parallel_vec_env` otherwise: SuperSuit's conversion of ``n_envs`` copies of the
  parallel env (a Python loop over copies and agents every step).

Both give SB3 the same rows (copy or game ``g``, agent ``i`` at row ``g N + i``), the same
spaces, rewards, episode ends and ``info["episode"]`` records; with one copy and the same
seed they give the same trajectory bit for bit (the games of a batch share one generator,
SuperSuit seeds copy ``c`` with ``seed + c``). Agents must share observation and action
spaces (pad them with SuperSuit otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import supersuit as ss
from pettingzoo import ParallelEnv
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices
from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper

from edgelam.agents.common import (
    ParallelFactory,
    action_mask,
    cost_limit,
    env_kwargs_for,
    info_sums,
    info_team,
    make_parallel,
    with_cost_violation,
)
from edgelam.agents.metrics import EpisodeMetrics
from edgelam.agents.policies import PolicySpec, accepts_masks, resolve_policy, to_env_action
from edgelam.agents.vec import SB3VectorAdapter
from edgelam.baselines import Policy, RandomPolicy
from edgelam.baselines.hindsight import plan_row
from edgelam.envs import registration
from edgelam.envs.core.vector import AgentRowsVectorEnv


class _SeededVecEnv(SB3VecEnvWrapper):
    """SuperSuit's SB3 wrapper, with ``seed()`` applied at the next ``reset()`` as SB3 expects."""

    def __init__(self, venv: Any) -> None:
        super().__init__(venv)
        self._next_seed: int | None = None

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed the next reset (parallel env copy ``i`` gets ``seed + i``)."""
        self._next_seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def reset(self) -> np.ndarray:
        """Reset every copy (seeded once after :meth:`seed`)."""
        observations, self.reset_infos = self.venv.reset(seed=self._next_seed)
        self._next_seed = None
        return observations

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of the parallel env behind each sub-env (one sub-env per agent)."""
        values = [getattr(m.par_env, attr_name) for m in self.venv.vec_envs for _ in range(m.num_envs)]
        return [values[i] for i in self._get_indices(indices)]


def parallel_vec_env(env_fn: Callable[[], ParallelEnv], n_envs: int = 1, seed: int | None = None) -> VecEnv:
    """An SB3 VecEnv over ``n_envs`` copies of a parallel env, one sub-env per agent.

    Args:
        env_fn: builds the parallel env (copied ``n_envs`` times).
        n_envs: copies of the parallel env; SB3 sees ``n_envs * n_agents`` envs.
        seed: seed of the first reset (copy ``i`` gets ``seed + i``).

    Returns:
        The vector env, wrapped in ``VecMonitor`` (episode returns per agent).

    Raises:
        ValueError: if the agents' observation or action spaces differ.
    """
    env = env_fn()
    first = env.possible_agents[0]
    for agent in env.possible_agents[1:]:
        if env.observation_space(agent) != env.observation_space(first) or env.action_space(
            agent
        ) != env.action_space(first):
            raise ValueError(
                f"parameter sharing needs one observation and action space for all agents; {agent!r} and "
                f"{first!r} differ (pad them with SuperSuit, or train them apart, e.g. with RARL)"
            )
    markov = ss.pettingzoo_env_to_vec_env_v1(env)
    concat = ss.concat_vec_envs_v1(markov, n_envs, num_cpus=0, base_class="gymnasium")
    venv = _SeededVecEnv(concat)
    venv.seed(seed)
    return VecMonitor(venv)


def has_batched_game(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether ``env_id`` trains on its batched parallel game: its spec has one and the backend is replay."""
    spec = registration.find_spec(env_id) if isinstance(env_id, str) else None
    backend = dict(env_kwargs or {}).get("backend", "replay")
    return spec is not None and spec.batched_entry_point is not None and backend == "replay"


def batched_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
) -> VecEnv:
    """An SB3 VecEnv over ``n_envs`` games of ``env_id``'s batched parallel game, one sub-env per agent row.

    Args:
        env_id: a parallel id whose spec has a ``batched_entry_point``.
        n_envs: games B; SB3 sees ``n_envs * n_agents`` envs (game ``g``, agent ``i`` at row ``g N + i``).
        seed: seed of the first reset (the one generator of the batch).
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides.

    Returns:
        The vector env; finished episodes carry ``info["episode"]`` per agent row (as ``VecMonitor``).

    Raises:
        ValueError: if ``env_id`` has no batched game, or on bad arguments.
    """
    kwargs = env_kwargs_for(scenario, env_kwargs)
    try:
        game = registration.make_batched(env_id, num_games=n_envs, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{env_id}: bad arguments {kwargs}: {exc}") from exc
    venv = SB3VectorAdapter(AgentRowsVectorEnv(game))
    venv.seed(seed)
    venv.action_space.seed(seed)
    return venv


def shared_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
) -> VecEnv:
    """The parameter-sharing VecEnv of a parallel id: :func:`batched_vec_env` where it has a batched
    game (:func:`has_batched_game`), else :func:`parallel_vec_env` (SuperSuit)."""
    if has_batched_game(env_id, env_kwargs):
        return batched_vec_env(env_id, n_envs, seed, scenario, env_kwargs)
    return parallel_vec_env(lambda: make_parallel(env_id, scenario, env_kwargs), n_envs, seed)


def _resolve(spec: PolicySpec, env: ParallelEnv, agent: str, seed: int) -> Policy:
    """Resolve a spec for one agent; ``random`` samples that agent's action space."""
    if isinstance(spec, str) and spec == "random":
        return RandomPolicy(SimpleNamespace(action_space=env.action_space(agent)), seed=seed)
    return resolve_policy(spec, env, seed)


def _agent_policies(
    policy: PolicySpec | Mapping[str, PolicySpec], env: ParallelEnv, seed: int
) -> dict[str, Policy]:
    agents = env.possible_agents
    if isinstance(policy, Mapping):
        missing = set(agents) - set(policy)
        if missing:
            raise ValueError(f"no policy for agents {sorted(missing)}")
        return {a: _resolve(policy[a], env, a, seed + i) for i, a in enumerate(agents)}
    if isinstance(policy, str) and policy == "random":
        return {a: _resolve(policy, env, a, seed + i) for i, a in enumerate(agents)}
    shared = resolve_policy(policy, env, seed)
    return dict.fromkeys(agents, shared)


def evaluate_parallel(
    policy: PolicySpec | Mapping[str, PolicySpec],
    env: str | ParallelFactory,
    episodes: int = 10,
    seed: int = 0,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    deterministic: bool = True,
) -> list[dict[str, float]]:
    """Run ``episodes`` episodes of a parallel env; episode ``i`` resets with ``seed + i``.

    Args:
        policy: one policy spec shared by all agents (each agent's observation is
            passed to it separately), or agent -> policy spec. ``random`` samples each
            agent's own action space (agent ``i`` seeded with ``seed + i``); other
            baseline names go through ``edgelam.baselines.make(name, parallel_env)``.
        env: a parallel env id or factory.
        episodes: number of episodes.
        seed: seed of the first episode.
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides.
        deterministic: passed to ``predict``.

    Returns:
        One row per episode: ``episode``, ``seed``, ``length``; per agent
        ``return/<agent>`` and ``<metric>/<agent>`` (episode sum for keys in the env's
        ``metadata["info_sums"]`` and ``cost``, mean otherwise); global ``return`` (mean over
        agents) and ``<metric>`` (over agents: sum for summed keys, mean otherwise; a key in
        ``metadata["info_team"]``, which every agent reports with the team's value, is the
        mean, so the team's total counts once, not once per agent); ``cost_violation``
        where the scenario has a cost limit (as :func:`edgelam.agents.evaluate.evaluate`).
    """
    par_env = make_parallel(env, scenario, env_kwargs)
    set_random_seed(seed)
    policies = _agent_policies(policy, par_env, seed)
    sums = info_sums(par_env.metadata)
    over_agents = sums - info_team(par_env.metadata)
    limit = cost_limit(env, scenario, env_kwargs)
    rows = []
    for episode in range(episodes):
        tracked = {a: EpisodeMetrics(sums) for a in par_env.possible_agents}

        def track(_actions: dict, rewards: dict, infos: dict, tracked: dict = tracked) -> None:
            for agent, reward in rewards.items():
                tracked[agent].add(reward, infos.get(agent, {}))

        length = play_parallel_episode(par_env, policies, seed + episode, deterministic, track)
        row = _episode_row(episode, seed + episode, length, tracked, over_agents)
        plans = {id(p): plan_row(p.last_plan) for p in policies.values() if getattr(p, "last_plan", None) is not None}
        if len(plans) == 1:  # one hindsight policy (shared by every agent, or the protagonist's)
            row.update(next(iter(plans.values())))
        rows.append(with_cost_violation(row, limit))
    par_env.close()
    return rows


def play_parallel_episode(
    env: ParallelEnv,
    policies: Mapping[str, Policy],
    seed: int,
    deterministic: bool,
    on_step: Callable[[dict, dict, dict], None],
) -> int:
    """One episode of a parallel env from ``reset(seed=seed)``, each agent acting with its policy;
    ``on_step(actions, rewards, infos)`` after each joint step. Returns the episode length.

    MaskablePPO-like policies get their agent's mask from its observation or info.
    """
    masked = {a: accepts_masks(p) for a, p in policies.items()}
    observations, infos = env.reset(seed=seed)
    states: dict[str, Any] = dict.fromkeys(env.possible_agents)
    starts = dict.fromkeys(env.possible_agents, True)
    length = 0
    while env.agents:
        actions = {}
        for agent in env.agents:
            obs = observations[agent]
            extra = {}
            if masked[agent]:
                mask = action_mask(None, obs, infos.get(agent, {}))
                if mask is not None:
                    extra["action_masks"] = mask
            action, states[agent] = policies[agent].predict(
                obs,
                state=states[agent],
                episode_start=np.array([starts[agent]]),
                deterministic=deterministic,
                **extra,
            )
            starts[agent] = False
            actions[agent] = to_env_action(env.action_space(agent), action)
        observations, rewards, terminations, truncations, infos = env.step(actions)
        length += 1
        on_step(actions, rewards, infos)
        if all(terminations.get(a, False) or truncations.get(a, False) for a in actions):
            break
    return length


def _episode_row(
    episode: int, seed: int, length: int, tracked: Mapping[str, EpisodeMetrics], summed: frozenset[str]
) -> dict[str, float]:
    """One episode's row from each agent's metrics: a key in ``summed`` is summed over agents, others averaged."""
    row: dict[str, float] = {"episode": episode, "seed": seed, "length": length}
    per_agent = {agent: m.row() for agent, m in tracked.items()}
    row["return"] = float(np.mean([r["return"] for r in per_agent.values()]))
    metrics = dict.fromkeys(k for r in per_agent.values() for k in r if k not in ("return", "length"))
    for key in metrics:
        values = [r[key] for r in per_agent.values() if key in r]
        row[key] = float(np.sum(values) if key in summed else np.mean(values))
    for agent, agent_row in per_agent.items():
        for key, value in agent_row.items():
            if key != "length":
                row[f"{key}/{agent}"] = value
    return row
