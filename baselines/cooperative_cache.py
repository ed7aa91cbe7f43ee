"""Baselines of edgelam/CooperativeModelCache-v0, and its hindsight bound.

Joint-policy interface (as MultiUserOffload-v0's): ``predict(obs_dict)`` returns one action per
agent; called SB3-style with one agent's observation at a time (``env.agents`` order) it decides
the joint action on the first call of a step and hands it out agent by agent.

* ``always_cloud``, ``greedy``, ``lru``, ``lfu``, ``placement`` and ``lyapunov``: EdgeModelCache-v0's
  baselines (:mod:`edgelam.baselines.model_cache`) run by every edge on its own requests, storage and
  budget (:class:`EdgeView`); they do not coordinate, but a download of theirs comes over the metro
  when a neighbour holds the model, and their expected prices say so.
* ``cooperative``: the central placement every ``period`` requests: the caches of all online edges at
  once by HiGHS (:func:`~edgelam.envs.core.caching.joint_placement`: each edge's expected gain over the
  next ``period`` requests from its popularity average, a model's first copy priced at the backhaul
  and the others at the metro), each edge then prefetching its share (one model per request),
  evicting the rest and serving from its cache or the cloud.
* ``hindsight``: kind ``bound``, :func:`solve` (the env docstring's Hindsight section).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.baselines import model_cache as single
from edgelam.baselines import register
from edgelam.baselines.hindsight import Plan, fork, register_hindsight, rollout
from edgelam.baselines.model_cache_hindsight import dp
from edgelam.envs.core.caching import joint_placement
from edgelam.envs.model_cache.dynamics import GB
from edgelam.envs.model_cache.env import EdgeRow
from edgelam.envs.model_cache.spec import COOPERATIVE_SPEC

ENV_ID = COOPERATIVE_SPEC.id
_TOL = 1e-6


class EdgeView(EdgeRow):
    """Edge ``i`` of a CooperativeModelCache-v0 env as the lone-edge baselines read an EdgeModelCache-v0 env
    (:class:`~edgelam.envs.model_cache.env.EdgeRow` over its row of the game's simulator), with its
    storage, the team's queue and the models its online neighbours hold."""

    def __init__(self, env: Any, i: int) -> None:
        self.game = env.game
        self.row = i
        self.params = self.game.params
        self.tables = self.game.tables
        self.config = self.game.config
        self.capacity_bytes = float(self.config.edge_capacities()[i])

    @property
    def state(self):
        return self.game.state  # the game replaces its State on reset

    @property
    def unwrapped(self) -> EdgeView:
        return self

    @property
    def virtual_queue(self) -> float:
        """The team's queue (the budget is the team's), which every edge's drift-plus-penalty prices."""
        return float(self.game.team_queue[0])

    @property
    def neighbour_mask(self) -> int:
        return int(self.game.neighbour_masks()[self.row])

    @property
    def online(self) -> bool:
        return bool(self.game.online[0, self.row])


class JointPolicy:
    """One action per edge each step (module docstring for the calling conventions)."""

    def __init__(self, env: Any) -> None:
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.edges = [EdgeView(self.env, i) for i in range(len(self.env.possible_agents))]
        self._step: tuple[int, int] | None = None
        self._queue: list = []

    def decide(self) -> list[int]:
        raise NotImplementedError

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        env = self.env
        if isinstance(observation, dict):
            joint = self.decide()
            return {a: np.int64(joint[i]) for i, a in enumerate(env.possible_agents) if a in observation}, state
        key = (id(env.game.state.requests), env.step_count)
        if key != self._step or not self._queue:
            self._step = key
            self._queue = [np.int64(a) for a in self.decide()]
        return self._queue.pop(0), state


class PerEdge(JointPolicy):
    """Every edge runs the lone-edge baseline ``name`` on its own view."""

    def __init__(self, env: Any, factory) -> None:
        super().__init__(env)
        self.policies = [factory(view) for view in self.edges]

    def decide(self) -> list[int]:
        return [int(p.predict(None)[0]) for p in self.policies]


class Cooperative(JointPolicy):
    """The central placement of every edge's cache by one MILP, re-solved every ``period`` requests."""

    def __init__(self, env: Any, period: int = 50) -> None:
        super().__init__(env)
        if int(period) != period or period < 1:
            raise ValueError(f"cooperative baseline: period must be an integer >= 1, got {period!r}")
        self.period = int(period)
        self.placers = [single.Placement(view, period=self.period) for view in self.edges]
        self.targets: tuple[tuple[int, ...], ...] = tuple(() for _ in self.edges)
        self.status = ""

    def _solve(self) -> None:
        p = self.env.params
        cfg = self.env.config
        cat = p.tables.catalogue
        m = p.num_models
        gains = self.placers[0]._gains()
        online = np.array([v.online for v in self.edges])
        horizon = min(self.period, self.edges[0].steps_left)
        demand = np.array([v.popularity * horizon if v.online else np.zeros(p.num_tasks) for v in self.edges])
        caps = [v.capacity_bytes if v.online else 0.0 for v in self.edges]
        stored = np.array([[v.online and bool(v.cache_mask >> j & 1) for j in range(m)] for v in self.edges])
        size = np.array([cat.model_bytes(j) for j in range(m)], dtype=np.float64)
        first = cfg.reward.backhaul_weight_per_gb * size / GB
        copy = cfg.metro.weight_per_gb * size / GB
        models, _, self.status, _ = joint_placement(gains, demand, cat, caps, stored, first, copy)
        self.targets = tuple(models[i] if online[i] else () for i in range(len(self.edges)))

    def decide(self) -> list[int]:
        if self.edges[0].step_count % self.period == 0:
            self._solve()
        # a model no online edge holds is downloaded from the cloud by one edge (the first that wants it)
        # and copied by the others over the metro afterwards: they keep it out of their targets this step
        held = 0
        for view in self.edges:
            if view.online:
                held |= view.cache_mask
        claimed = 0
        out = []
        for view, placer, target in zip(self.edges, self.placers, self.targets, strict=True):
            wanted = [j for j in target if not view.cache_mask >> j & 1]
            fresh = [j for j in wanted if not held >> j & 1]
            placer.target = tuple(j for j in target if j not in fresh or not claimed >> j & 1)
            for j in fresh[:1]:
                claimed |= 1 << j
            out.append(int(placer.act()))
        return out


def _trace(env: Any) -> dict[str, np.ndarray]:
    """Each edge's window, privacy, rate, RTT and membership of every remaining request, (N, T) each, read by
    stepping a fork with every edge forwarding (no action changes what is drawn)."""
    sim = fork(env)
    m = sim.params.num_models
    forward = m * (m + 1) + m
    left = sim.config.episode_length - sim.step_count
    keys = ("window", "private", "rate_bps", "rtt_s")
    out: dict[str, list] = {k: [] for k in (*keys, "online")}
    for _ in range(left):
        for k in keys:
            out[k].append(sim.state.pending(k).copy())
        _, _, _, _, infos = sim.step({a: forward for a in sim.agents})
        out["online"].append(np.array([infos[a]["online"] for a in sim.possible_agents]))
    return {k: np.stack(v, axis=1) for k, v in out.items()}


def solve(env: Any) -> Plan:
    """The cooperative bound and the plan of the edges' relaxed DPs (the env docstring's Hindsight section)."""
    sim = env.unwrapped if hasattr(env, "unwrapped") else env
    p, t = sim.params, sim.tables
    m = p.num_models
    forward = m * (m + 1) + m
    agents = list(sim.possible_agents)
    try:
        tr = _trace(sim)
        values, plans = [], []
        for i, cap in enumerate(sim.config.edge_capacities()):
            value, plan = dp(p.consts, float(cap), t.footprint, t.missing, t.compute_s, t.energy_j, t.top1,
                             tr["window"][i], tr["private"][i], tr["rate_bps"][i], tr["rtt_s"][i],
                             tr["online"][i], True, int(sim.state.cache[i]))
            values.append(value)
            plans.append(plan)
        actions = [{a: int(plans[i][s]) for i, a in enumerate(agents)} for s in range(len(plans[0]))]
        bound = float(np.mean(values))
        realised, _ = rollout(sim, actions)
        if realised > bound + _TOL * max(1.0, abs(bound)):
            raise RuntimeError(f"the plan earns {realised:.9g}, above the bound {bound:.9g}")
        return Plan(actions, bound, "bound", "per-edge DPs with downloads at the cheaper source (relaxation)")
    except Exception as err:  # any solver failure falls back safely (flagged)
        left = max(sim.config.episode_length - sim.step_count, 1)
        actions = [dict.fromkeys(agents, forward) for _ in range(left)]
        return Plan(actions, rollout(sim, actions)[0], "planner", f"forward every request (bound failed: {err})",
                    fallback=True)


for _name, _factory in (("always_cloud", single.AlwaysCloud), ("greedy", single.Greedy),
                        ("lru", lambda v: single.Replacement(v, lfu=False)),
                        ("lfu", lambda v: single.Replacement(v, lfu=True)),
                        ("placement", single.Placement)):
    register(ENV_ID, _name, lambda env, f=_factory: PerEdge(env, f))
register(ENV_ID, "lyapunov", lambda env, v=1.0, period=50: PerEdge(
    env, lambda view: single.Placement(view, period=period, v=v)))
register(ENV_ID, "cooperative", lambda env, period=50: Cooperative(env, period=period))
register_hindsight(ENV_ID, solve)
