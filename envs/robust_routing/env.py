"""edgelam/RobustRouting-v0: a microservice router against a demand adversary (PettingZoo parallel)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from edgelam.envs.core.actions import check_box, check_discrete
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer
from edgelam.envs.microservice_routing.dynamics import State, advance, initial, view
from edgelam.envs.microservice_routing.env import BACKENDS, make_params, observation_space
from edgelam.envs.robust_routing.config import RobustRoutingConfig
from edgelam.envs.robust_routing.dynamics import (
    OUTCOME_INFO,
    REWARD_COLUMN,
    AdversaryParams,
    adversary_reward,
    apply_adversary,
)
from edgelam.envs.robust_routing.spec import SPEC

ROUTER, ADVERSARY = "router", "adversary"

# what render_mode='rgb_array' draws, against the step index (edgelam.envs.core.render)
RENDER_PANELS = (
    Panel("edge server the router chose", ("action",), steps=True),
    Panel("unfinished work per server", ("queue_lengths_s",), "s"),
    Panel("arrival rate the adversary sets", ("arrival_rate_hz",), "1/s"),
    Panel("stage latency", ("latency_s",), "s"),
)


class RobustRoutingEnv(ParallelEnv):
    """Robust adversarial routing (Pinto et al., ICML 2017) over the MicroserviceRouting-v0 simulator.

    Agents ``["router", "adversary"]`` act simultaneously every step.

    ## Action Space
    ``router``: ``Discrete(K)``, the server for the pending stage (mask in
    ``infos["router"]["action_mask"]``, int8 as ``action_space.sample(mask=...)`` takes it; an
    unmasked action is projected to the nearest
    host and penalised, as in MicroserviceRouting-v0). ``adversary``:
    ``Box(-1, 1, (P + 1 + K,), float32)``: pipeline-mix logits, arrival-rate shift and
    cell logits, applied to the next arrival within the scenario's ``adversary`` budget
    (see :class:`~edgelam.envs.robust_routing.config.AdversaryConfig`).

    ## Observation Space
    Both agents see the MicroserviceRouting-v0 observation (``Box``, 5K + M + 5).

    ## Rewards
    Zero-sum: the router gets the MicroserviceRouting-v0 reward (negative stage latency,
    SLO-violation and infeasibility penalties), the adversary its negative.
    ``infos`` carry ``latency_s``, ``energy_j``, ``e2e_latency_s``, ``slo_violated`` and
    ``queue_lengths_s`` for both agents.

    ## Hindsight
    Kind ``exact``, value 0 (:mod:`edgelam.baselines.robust_routing_hindsight`). The game is
    zero-sum and the evaluation rows' ``return`` is the mean over the two agents, which is exactly
    0 for every joint action sequence: the best return in hindsight is 0 and every plan attains it
    (the normalised score is undefined, 0 / 0). The plan plays the adversary's zero action (the mean
    of the uniform ``random`` adversary) and, for the router, the MicroserviceRouting-v0
    perfect-information rollout planner against it, so ``return/router`` of its rows is a
    planner's router return (no bound: the adversary is an agent, not an exogenous trace). Run as
    the router alone against another adversary (as ``compare`` runs baselines here), it routes
    online by the planner's lookahead from the env's true state and generator. ``compare`` and
    ``results`` see the game from the router: there the reference of the normalised score is the
    router return this planner realises on each episode (kind ``planner``: a reference, not a bound).

    ## Episode End
    Both agents are truncated after ``episode_length`` steps; never terminated.

    ## Physics and sources
    The MicroserviceRouting-v0 simulator (roofline service times, FCFS servers, ring
    random-walk mobility of users, microservices as in NExT-GPT); the adversary perturbs the
    demand of the next arrival, as the destabilising agent of RARL (Pinto et al., ICML 2017).
    The adversary's effect, the observation and the reward are the functions of
    :mod:`edgelam.envs.robust_routing.dynamics` at B = 1; the batched game
    (:class:`~edgelam.envs.robust_routing.vector.RobustRoutingGames`) plays B games with them.

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "name": "robust_routing_v0",
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "is_parallelizable": True,
    }
    env_id = SPEC.id
    spec = None  # no Gymnasium spec; baselines.make reads env_id

    def __init__(
        self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None, **overrides
    ) -> None:
        self._renderer = Renderer("RobustRouting-v0", render_mode, RENDER_PANELS)
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self.config: RobustRoutingConfig = load_scenario(RobustRoutingConfig, SPEC.scenario_dir, scenario, overrides)
        self.backend = backend
        self.render_mode = render_mode
        self.params = make_params(self.config, backend)
        self.tables = self.params.tables
        self._renderer.entry_labels = tuple(f"server_{i}" for i in range(self.tables.num_servers))
        k, p = self.tables.num_servers, len(self.tables.pipelines)
        self.num_pipelines = p
        self.possible_agents = [ROUTER, ADVERSARY]
        self.agents: list[str] = []
        self._obs_space = observation_space(self.tables)
        self._action_spaces = {
            ROUTER: spaces.Discrete(k),
            ADVERSARY: spaces.Box(-1.0, 1.0, shape=(p + 1 + k,), dtype=np.float32),
        }
        self.adversary = AdversaryParams.build(self.config, self.params)
        self._rng = np.random.default_rng()
        self._route = np.zeros(1, dtype=np.int64)
        self._set_state(initial(self.params, np.random.default_rng(0), 1))  # replaced by reset()

    def observation_space(self, agent: str) -> spaces.Box:
        """The same Box object for both agents on every call."""
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        """The agent's action space (the same object on every call)."""
        return self._action_spaces[agent]

    def _set_state(self, state: State) -> None:
        self.state = state  # the MicroserviceRouting-v0 simulator's State (B = 1), advanced in place
        self._refresh()

    def _refresh(self) -> None:
        obs, mask, queue = view(self.params, self.state)
        self._obs, self._mask, self._queue = obs[0], mask[0], queue[0]

    def action_masks(self) -> np.ndarray:
        """The router's valid servers for the pending stage."""
        return self._mask.copy()

    def _observations(self) -> dict[str, np.ndarray]:
        return {ROUTER: self._obs, ADVERSARY: self._obs.copy()}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._set_state(initial(self.params, self._rng, 1))
        self.agents = list(self.possible_agents)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        mask = self._mask.astype(np.int8)
        return self._observations(), {ROUTER: {"action_mask": mask}, ADVERSARY: {}}

    def step(self, actions: dict[str, Any]):
        if set(actions) != set(self.agents):
            raise ValueError(f"actions for {sorted(actions)} but the live agents are {self.agents}")
        route = check_discrete(actions[ROUTER], self._action_spaces[ROUTER], "the edge server", f"action of {ROUTER}")
        push = check_box(actions[ADVERSARY], self._action_spaces[ADVERSARY], who=f"action of {ADVERSARY}",
                         within_bounds=False)
        apply_adversary(self.adversary, self.state, push[None])
        self._route[0] = route
        out = advance(self.params, self.state, self._route, self._rng)
        row = out.table[0].tolist()
        self._refresh()
        truncated = int(self.state.step[0]) >= self.config.episode_length
        info = {key: row[col] > 0.0 if flag else row[col] for key, col, flag in OUTCOME_INFO}
        info["arrival_rate_hz"] = float(self.state.rate_hz[0])
        info["queue_lengths_s"] = self._queue
        obs = self._observations()
        reward = row[REWARD_COLUMN]
        rewards = {ROUTER: reward, ADVERSARY: adversary_reward(reward)}
        infos = {ROUTER: {**info, "action_mask": self._mask.astype(np.int8)}, ADVERSARY: dict(info)}
        terms = dict.fromkeys(self.agents, False)
        truncs = dict.fromkeys(self.agents, truncated)
        if self._renderer.history is not None:
            self._renderer.history.append(route, reward, info)
        if truncated:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``).

        It shows the router's view: its decisions, the server queues, the load the adversary
        sets, and the router's return.
        """
        return self._renderer.render()

    def close(self) -> None:
        """Nothing to release."""


def parallel_env(**kwargs: Any) -> RobustRoutingEnv:
    """Factory named by the entry point of this env's spec (``robust_routing/spec.py``)."""
    return RobustRoutingEnv(**kwargs)
