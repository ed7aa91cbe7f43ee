"""edgelam/MicroserviceRouting-v0: route the stages of multimodal LAM pipelines over edge servers."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgelam.envs.core.actions import DiscreteAction
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer
from edgelam.envs.microservice_routing.catalog import REGENERATE, load_catalog
from edgelam.envs.microservice_routing.config import MicroserviceRoutingConfig
from edgelam.envs.microservice_routing.dynamics import (
    OBS_CLIP,
    Params,
    RoutingTables,
    State,
    advance,
    build_tables,
    initial,
    view,
)
from edgelam.envs.microservice_routing.spec import SPEC

BACKENDS = ("replay", "live")

# what render_mode='rgb_array' draws, against the step index (edgelam.envs.core.render)
RENDER_PANELS = (
    Panel("edge server chosen for the stage", ("server",), steps=True),
    Panel("unfinished work per server", ("queue_lengths_s",), "s"),
    Panel("stage latency", ("latency_s",), "s"),
    Panel("SLO missed by the pipeline completed at this step (1 = missed)", ("slo_violated",), steps=True),
)


def make_params(cfg: MicroserviceRoutingConfig, backend: str) -> Params:
    """The simulator's tables of a scenario: catalog from the shipped JSON (replay) or re-profiled now (live)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
    if backend == "live":
        from edgelam.envs.microservice_routing.catalog import profile_catalog

        catalog = profile_catalog()
    else:
        catalog = load_catalog(cfg.catalog_path)
    try:
        tables = build_tables(cfg, catalog)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:  # a field missing or of the wrong kind
        where = cfg.catalog_path or "the shipped catalog.json"
        raise ValueError(f"catalog: {where} is malformed ({type(exc).__name__}: {exc}); {REGENERATE}") from None
    return Params.build(cfg, tables)


def observation_space(tables: RoutingTables) -> spaces.Box:
    """Box of :func:`~.dynamics.observation`: 5 K + M + 5 values."""
    k, m = tables.num_servers, len(tables.microservices)
    n = 5 * k + m + 5
    low = np.zeros(n, dtype=np.float32)
    high = np.full(n, OBS_CLIP, dtype=np.float32)
    low[-4] = -1.0  # slack
    high[3 * k : -5] = 1.0  # host mask, microservice one-hot, user cell one-hot
    high[-5:] = (1.0, 1.0, 1.0, OBS_CLIP, 1.0)
    return spaces.Box(low, high, dtype=np.float32)


class MicroserviceRoutingEnv(gym.Env):
    """Route each stage of multimodal LAM requests to an edge server hosting its microservice.

    K heterogeneous edge servers (catalog hardware, one per cell, backhaul links of
    ``link_bps``) host replicas of the microservices of a multimodal LAM (modality
    encoders, input projector, LM backbone, output projector, text/speech decoders;
    FLOPs and tensor sizes profiled from real torch modules, ``catalog.py``, the LM
    side priced at the scenario's ``backbone_card``). Requests of three pipelines
    (text chat, image captioning, speech QA) arrive as a Poisson process from users
    moving between cells; every step routes the pending stage of the current request.

    ## Action Space
    ``Discrete(K)``: the server for the pending stage. With ``migration.enabled``,
    ``Discrete(2K)``: action K + s first moves a replica of the pending microservice
    to server s (from its host with the fastest link to s) and routes there. The
    mask (``action_masks()``, bool as sb3-contrib's MaskablePPO takes it; also
    ``info["action_mask"]``, int8 as ``action_space.sample(mask=...)`` takes it) marks hosts (first K)
    and non-hosts (next K). An unmasked action is projected to the host with the
    lowest transfer time, flagged ``info["infeasible_action"]`` and costs
    ``reward.infeasible_penalty``.

    ## Observation Space
    ``Box(float32)`` of 5K + M + 5: per server the backlog ahead of the stage, the
    transfer time of its input and its compute time (s / 0.5, clipped to 10); the
    host mask; the microservice one-hot (M = 8); the requesting user's cell one-hot;
    log10(input bytes) / 8; request slack (SLO - elapsed) / SLO in [-1, 1]; stages
    left / 5; migration virtual queue / (10 budget); fraction of the episode elapsed.

    ## Rewards
    Each step pays ``-(stage latency)``: transfer + queueing + compute added to the
    request's time; the step that finishes a request adds the delivery to the user's
    current cell and ``-slo_penalty`` if its end-to-end latency exceeds ``slo_s``. A
    request's rewards sum to ``-(e2e latency) - slo_penalty * [violated]``; also
    ``-migration_weight_per_j * migration J`` and ``-infeasible_penalty``.
    ``info``: ``latency_s`` (stage latency; summed over an episode it is the total
    e2e latency), ``e2e_latency_s`` and ``slo_violated`` of the finished request,
    ``energy_j`` (compute + transfer + migration), ``queue_lengths_s`` (K backlogs),
    ``migration_energy_j`` and ``virtual_queue`` (Z(t+1) = max(Z + y - budget, 0)).

    Cost (Safety-Gymnasium's convention): ``info["cost"]`` is the step's migration energy y
    in J (``migration_energy_j``, what the queue accumulates; 0 without a migration),
    reported on every step. The per-episode limit, the spec's ``cost_limit(scenario)``, is
    ``migration.budget_j_per_step`` x ``episode_length`` J (80 J in scenario ``migration``:
    0.2 J x 400 decisions), ``None`` without ``migration.enabled`` (scenario ``default``).

    ## Hindsight
    Kind ``bound`` (:mod:`edgelam.baselines.microservice_routing_hindsight`). No exact method is
    tractable: the FCFS backlogs couple all 400 decisions, and the users' handovers are drawn from
    the env's generator at the finish times the actions set, so the trace itself depends on the
    actions (the arrivals, drawn in one block at reset, do not). ``hindsight_value`` is a
    certified upper bound: each request pays at least its cheapest chain of upload, transfers,
    compute and delivery with no queueing, over any cell of arrival and delivery (so for every
    handover draw), plus the waits the requests' backbone stages certainly add to each other on a
    shared server (the dual bound of a small HiGHS MILP over their servers; a HiGHS failure only
    drops that term), plus the SLO penalty where even that chain misses the SLO (proof sketch in the
    module). The plan played is a perfect-information rollout planner on copies of the env's state
    and generator (the env's own step), never worse than ``greedy`` on the episode.

    ## Episode End
    Truncated after the scenario's ``episode_length`` routing decisions (400 by default;
    the id registers no ``max_episode_steps``, so an ``episode_length`` override is the
    episode length); never terminated.

    ## Physics and sources
    Roofline service times (``edgelam.envs.core.hardware``); FCFS servers; ring
    random-walk mobility of users between cells; microservice decomposition as in
    NExT-GPT (Wu et al., ICML 2024); Lyapunov virtual queue (Neely 2010).
    The simulator is :mod:`~edgelam.envs.microservice_routing.dynamics` over a batched
    ``State``: this env is one row of it (``env.state``, advanced in place, what the
    baselines read); ``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point")``
    steps B rows (:class:`~edgelam.envs.microservice_routing.vector.MicroserviceRoutingVectorEnv`).

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "render_modes": RENDER_MODES, "render_fps": RENDER_FPS,
        "info_sums": ("latency_s", "energy_j", "migration_energy_j", "completed"),
        "info_units": {"virtual_queue": "J", "cost": "J"},  # units of info keys whose name does not state one
    }

    def __init__(self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None, **overrides):
        self._renderer = Renderer("MicroserviceRouting-v0", render_mode, RENDER_PANELS)
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self.config: MicroserviceRoutingConfig = load_scenario(
            MicroserviceRoutingConfig, SPEC.scenario_dir, scenario, overrides
        )
        self.backend = backend
        self.render_mode = render_mode
        self.params = make_params(self.config, backend)
        self.tables = self.params.tables
        self._renderer.entry_labels = tuple(f"server_{i}" for i in range(self.tables.num_servers))
        self.num_actions = self.params.num_actions
        self.action_space = spaces.Discrete(self.num_actions)
        self._check_action = DiscreteAction(self.action_space, "the edge server of the pending stage")
        self.observation_space = observation_space(self.tables)
        self._action = np.zeros(1, dtype=np.int64)
        self._set_state(initial(self.params, np.random.default_rng(0), 1))  # replaced by reset()

    def _set_state(self, state: State) -> None:
        self.state = state  # the simulator's State (B = 1), advanced in place: what the baselines read
        self._refresh()

    def _refresh(self) -> None:
        obs, mask, queue = view(self.params, self.state)
        self._obs, self._mask, self._queue = obs[0], mask[0], queue[0]

    def action_masks(self) -> np.ndarray:
        """Valid actions of the pending stage (what sb3-contrib's MaskablePPO calls)."""
        return self._mask.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self._set_state(initial(self.params, self.np_random, 1))
        return self._obs, {"action_mask": self._mask.astype(np.int8)}

    def step(self, action):
        self._action[0] = self._check_action(action)
        out = advance(self.params, self.state, self._action, self.np_random)
        # the row's columns, in the order of dynamics.OUTCOME_COLUMNS
        server, migrated, infeasible, latency, energy, migration_j, completed, e2e, violated, reward = (
            out.table[0].tolist()
        )
        self._refresh()
        info = {
            "latency_s": latency,
            "energy_j": energy,
            "e2e_latency_s": e2e,
            "slo_violated": violated > 0.0,
            "completed": completed > 0.0,
            "server": int(server),
            "migrated": migrated > 0.0,
            "infeasible_action": infeasible > 0.0,
            "migration_energy_j": migration_j,
            "virtual_queue": float(self.state.virtual_queue[0]),
            "cost": migration_j,
            "queue_lengths_s": self._queue,
            "action_mask": self._mask.astype(np.int8),
        }
        if self._renderer.history is not None:
            self._renderer.history.append(action, reward, info)
        truncated = int(self.state.step[0]) >= self.config.episode_length
        return self._obs, reward, False, truncated, info

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``)."""
        return self._renderer.render()
