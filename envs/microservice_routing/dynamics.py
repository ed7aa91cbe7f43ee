"""MicroserviceRouting-v0 defined once: discrete-event routing of multimodal LAM pipelines over edge servers.

Requests arrive as a Poisson process; a request of pipeline p is a chain of stages
(microservices, see ``catalog.py``). Its input is uploaded over the access link to
the server of the user's cell; each decision routes the pending stage to one server
hosting that microservice. With ``ready`` the time the stage's input is complete at
server ``loc`` and ``free_at[s]`` the time server s finishes its reserved work (FCFS
in routing order, one stage at a time, :func:`edgelam.envs.core.queues.fcfs_finish_s`):

    transfer = 0 if s == loc else in_bytes * 8 / link_bps[loc][s] + hop_latency_s
    start = max(ready + transfer, free_at[s], replica_ready)
    finish = start + service_s[p][stage][s]        (roofline time on s's hardware)

The stage adds ``finish - ready`` to the request's latency (the first stage also the
upload over the access link). After the last stage the
output is sent to the server of the user's cell *at that time* (users move) and down
the access link. End-to-end latency = delivery time - arrival time.

Service time on server s: roofline max(FLOPs / (peak eff), bytes / (bandwidth eff))
(``edgelam.envs.core.hardware.roofline_time_s``) of the stage's profiled FLOPs and
memory traffic (weights read once per pass: prefill + one pass per decoded token).

Model-card scaling (``backbone_card``): the LM-side microservices are re-priced at
the card's real size, d = card.d_model replacing the executed LM's width h: backbone
FLOPs/bytes from ``layer_flops_bytes`` (prefill of the profiled prompt tokens + the
profiled number of decode steps) x L_card, text decoder = LM head per generated
token, text encoder = embedding + one card layer, input projector re-counted with
output width d, output projector FLOPs x d / h, hidden-state tensors x d / h. The
image/audio encoders and the speech decoder keep their profiled size.

The simulator over a batched :class:`State` (arrays with a leading axis of B rows, each
its own set of servers, users and requests): :func:`initial` starts episodes,
:func:`transition` routes every row's pending stage, :func:`observation` and
:func:`action_mask` are what a router sees. The Gymnasium env is B = 1, the vector env
B; RobustRouting-v0 and the baselines read the same state. The step is written once,
in scalar form over one row, in :mod:`.kernels` (a loop over the rows compiled by
numba); the random draws are numpy's, in the order the env has drawn them since v0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgelam.envs.core.hardware import (
    compute_precision,
    layer_flops_bytes,
    load_hardware_catalog,
    roofline_time_s,
)
from edgelam.envs.core.model_cards import ModelCard, get_model_card
from edgelam.envs.microservice_routing import kernels
from edgelam.envs.microservice_routing.catalog import MICROSERVICES, PIPELINES
from edgelam.envs.microservice_routing.config import MicroserviceRoutingConfig

BLOCK = 256  # arrivals of exogenous randomness drawn per vectorised batch
TIME_SCALE_S = 0.5  # observation: times / 0.5 s, clipped to [0, OBS_CLIP]
OBS_CLIP = 10.0
MAX_STAGES = max(len(p) for p in PIPELINES.values())


def scaled_stages(catalog: dict, card: ModelCard | None, weight_bits: int = 16) -> tuple[dict, dict]:
    """Per pipeline the stage dicts (flops, mem_bytes, in_bytes, out_bytes, microservice) and weight bytes.

    Without ``card`` the profiled values; with it the LM-side microservices priced at
    the card's size (see the module docstring).
    """
    weights = {m: float(v["weight_bytes"]) for m, v in catalog["microservices"].items()}
    pipelines = {p: [dict(s) for s in stages] for p, stages in catalog["pipelines"].items()}
    if card is None:
        return pipelines, weights
    lm = catalog["executed_lm"]
    h, d, n_dec = lm["hidden_size"], card.d_model, catalog["decode_tokens"]
    r = d / h
    wb = weight_bits / 8.0
    layer_w = float(card.weight_bytes_per_layer(weight_bits))
    weights["backbone"] = layer_w * card.num_layers
    weights["text_decoder"] = float(card.lm_head_weight_bytes(weight_bits))
    weights["text_encoder"] = card.embedding_params * wb + layer_w
    weights["output_projector"] *= r
    for stages in pipelines.values():
        prev_width = None
        for s in stages:
            m = s["microservice"]
            if m in ("backbone", "text_decoder", "output_projector"):
                s["in_bytes"] *= r
            if m in ("text_encoder", "input_projector", "backbone"):
                s["out_bytes"] *= r
            if m == "backbone":
                t = s["prefill_tokens"]
                f_p, b_p = layer_flops_bytes(card, "prefill", t, t, weight_bits)
                f_d, b_d = layer_flops_bytes(card, "decode", n_dec, t + n_dec, weight_bits)
                s["flops"] = card.num_layers * float(f_p + f_d)
                s["mem_bytes"] = card.num_layers * float(b_p + b_d)
            elif m == "text_decoder":
                s["flops"] = n_dec * card.lm_head_flops_per_token
                s["mem_bytes"] = n_dec * weights["text_decoder"] + s["in_bytes"] + s["out_bytes"]
            elif m == "text_encoder":
                t = s["out_shape"][1]
                f, b = layer_flops_bytes(card, "prefill", t, t, weight_bits)
                s["flops"] = float(f)
                s["mem_bytes"] = float(b) + t * d * wb
            elif m == "input_projector":
                tokens, width = s["out_shape"][1], prev_width
                s["flops"] = 2.0 * tokens * (width * d + d * d)
                weights["input_projector"] = (width * d + d * d) * wb
                s["mem_bytes"] = weights["input_projector"] + s["in_bytes"] + s["out_bytes"]
            elif m == "output_projector":
                s["flops"] *= r
                s["mem_bytes"] = weights["output_projector"] + s["in_bytes"] + s["out_bytes"]
            prev_width = s["out_shape"][-1]
    return pipelines, weights


@dataclass(frozen=True)
class RoutingTables:
    """Everything a step needs, precomputed once per scenario (K servers, M microservices, P pipelines)."""

    num_servers: int  # K
    microservices: tuple[str, ...]  # M names, in catalog order
    pipelines: tuple[str, ...]  # P names, in demand order
    stage_ms: tuple[tuple[int, ...], ...]  # (P, stages) microservice index of each stage
    stage_in_bytes: tuple[tuple[float, ...], ...]  # (P, stages) bytes of the stage's input tensor
    final_out_bytes: tuple[float, ...]  # (P,) bytes of the pipeline's result
    service_s: tuple[tuple[tuple[float, ...], ...], ...]  # (P, stages, K) compute time on each server
    power_w: tuple[float, ...]  # (K,) active power of each server
    weight_bytes: tuple[float, ...]  # (M,) bytes of one replica's weights
    link_bps: tuple[tuple[float, ...], ...]  # (K, K), inf on the diagonal


def build_tables(cfg: MicroserviceRoutingConfig, catalog: dict) -> RoutingTables:
    """Price every (pipeline, stage, server) with the roofline model on the scenario's hardware."""
    card = get_model_card(cfg.backbone_card) if cfg.backbone_card is not None else None
    stages, weights = scaled_stages(catalog, card, cfg.weight_bits)
    hw_catalog = load_hardware_catalog()
    hws = [hw_catalog[name] for name in cfg.servers]
    precision = compute_precision(cfg.weight_bits, 16)
    pipelines = tuple(cfg.demand.pipelines)
    ms_index = {m: i for i, m in enumerate(MICROSERVICES)}
    service = []
    for p in pipelines:
        service.append(
            tuple(
                tuple(float(roofline_time_s(hw, s["flops"], s["mem_bytes"], precision)) for hw in hws)
                for s in stages[p]
            )
        )
    k = len(hws)
    link = tuple(tuple(math.inf if i == j else float(cfg.link_bps[i][j]) for j in range(k)) for i in range(k))
    return RoutingTables(
        num_servers=k,
        microservices=MICROSERVICES,
        pipelines=pipelines,
        stage_ms=tuple(tuple(ms_index[s["microservice"]] for s in stages[p]) for p in pipelines),
        stage_in_bytes=tuple(tuple(float(s["in_bytes"]) for s in stages[p]) for p in pipelines),
        final_out_bytes=tuple(float(stages[p][-1]["out_bytes"]) for p in pipelines),
        service_s=tuple(service),
        power_w=tuple(hw.power_active_w for hw in hws),
        weight_bytes=tuple(weights[m] for m in MICROSERVICES),
        link_bps=link,
    )


@dataclass(frozen=True)
class Params:
    """What one scenario fixes, as the arrays the kernels index (K servers, M microservices, P pipelines,
    S = the most stages of a pipeline, U users); built by :meth:`build` from the config and its tables.

    Every time and energy below is computed once, from the :class:`RoutingTables`, by the same
    floating-point operations a step would do on them.
    """

    config: MicroserviceRoutingConfig
    tables: RoutingTables
    num_actions: int  # K, or 2 K with migration
    stage_ms: np.ndarray  # (P, S) int microservice of each stage (0 past the last stage)
    num_stages: np.ndarray  # (P,) int
    transfer_s: np.ndarray  # (P, S, K, K) backhaul time of the stage's input from server i to j (0 if i = j)
    service_s: np.ndarray  # (P, S, K) roofline compute time of the stage on each server
    compute_j: np.ndarray  # (P, S, K) active power x compute time
    send_j: np.ndarray  # (P, S) energy of moving the stage's input between two servers
    upload_s: np.ndarray  # (P,) access-link upload of the request's input
    deliver_s: np.ndarray  # (P, K, K) result from the last server i to the user's cell j, then down the access link
    deliver_j: np.ndarray  # (P,) energy of moving the result between two servers
    replica_transfer_s: np.ndarray  # (M, K, K) time to ship one replica's weights from server i to j
    migration_j: np.ndarray  # (M,) energy of one migration of each microservice
    link_bps: np.ndarray  # (K, K) backhaul bandwidth, inf on the diagonal
    base_mix: np.ndarray  # (P,) the scenario's pipeline mix, normalised
    initial_hosts: np.ndarray  # (M, K) bool, the scenario's placement
    obs_transfer: np.ndarray  # (P, S, K, K) transfer_s / TIME_SCALE_S, clipped to OBS_CLIP
    obs_service: np.ndarray  # (P, S, K) service_s / TIME_SCALE_S, clipped to OBS_CLIP
    obs_in_bytes: np.ndarray  # (P, S) log10(input bytes) / 8
    consts: np.ndarray  # (6,) what :func:`kernels.route` reads: migration on, budget, handover rate, weights

    @classmethod
    def build(cls, config: MicroserviceRoutingConfig, tables: RoutingTables) -> Params:
        """The arrays of ``config`` priced by ``tables``."""
        cfg, t = config, tables
        k, m, p_count = t.num_servers, len(t.microservices), len(t.pipelines)
        hop, access, e_bit = cfg.hop_latency_s, cfg.access_rate_bps, cfg.transfer_energy_j_per_bit

        def transfer(src: int, dst: int, num_bytes: float) -> float:
            return 0.0 if src == dst else num_bytes * 8.0 / t.link_bps[src][dst] + hop

        stage_ms = np.zeros((p_count, MAX_STAGES), dtype=np.int64)
        in_bytes = np.ones((p_count, MAX_STAGES))
        transfer_s = np.zeros((p_count, MAX_STAGES, k, k))
        service = np.zeros((p_count, MAX_STAGES, k))
        compute_j = np.zeros((p_count, MAX_STAGES, k))
        for p, stages in enumerate(t.stage_ms):
            for j, ms in enumerate(stages):
                stage_ms[p, j] = ms
                in_bytes[p, j] = t.stage_in_bytes[p][j]
                for s in range(k):
                    service[p, j, s] = t.service_s[p][j][s]
                    compute_j[p, j, s] = t.power_w[s] * t.service_s[p][j][s]
                    for src in range(k):
                        transfer_s[p, j, src, s] = transfer(src, s, t.stage_in_bytes[p][j])
        out = t.final_out_bytes
        deliver_s = np.array([[[transfer(src, cell, out[p]) + out[p] * 8.0 / access for cell in range(k)]
                               for src in range(k)] for p in range(p_count)])
        replica_s = np.array([[[transfer(src, dst, t.weight_bytes[ms]) for dst in range(k)] for src in range(k)]
                              for ms in range(m)])
        mix = np.asarray(cfg.demand.mix, dtype=np.float64)
        budget = cfg.migration.budget_j_per_step
        w = cfg.reward
        return cls(
            config=cfg,
            tables=t,
            num_actions=2 * k if cfg.migration.enabled else k,
            stage_ms=stage_ms,
            num_stages=np.array([len(s) for s in t.stage_ms], dtype=np.int64),
            transfer_s=transfer_s,
            service_s=service,
            compute_j=compute_j,
            send_j=in_bytes * 8.0 * e_bit,
            upload_s=np.array([t.stage_in_bytes[p][0] * 8.0 / access for p in range(p_count)]),
            deliver_s=deliver_s,
            deliver_j=np.array([b * 8.0 * e_bit for b in out]),
            replica_transfer_s=replica_s,
            migration_j=np.array([b * 8.0 * cfg.migration.energy_j_per_bit for b in t.weight_bytes]),
            link_bps=np.array(t.link_bps, dtype=np.float64),
            base_mix=mix / mix.sum(),
            initial_hosts=np.array([[s in cfg.placement.get(name, ()) for s in range(k)] for name in t.microservices],
                                   dtype=bool),
            obs_transfer=np.minimum(transfer_s / TIME_SCALE_S, OBS_CLIP),
            obs_service=np.minimum(service / TIME_SCALE_S, OBS_CLIP),
            obs_in_bytes=np.array([[math.log10(max(b, 1.0)) / 8.0 for b in row] for row in in_bytes.tolist()]),
            consts=np.array([float(cfg.migration.enabled), budget, cfg.demand.handover_rate_hz,
                             w.migration_weight_per_j, w.slo_penalty, w.infeasible_penalty]),
        )

    @property
    def num_servers(self) -> int:
        """K."""
        return self.tables.num_servers

    @property
    def queue_scale_j(self) -> float:
        """What the observation divides the virtual queue by (10 budgets; 0: no queue observed)."""
        budget = self.config.migration.budget_j_per_step
        return 10.0 * budget if self.config.migration.enabled and budget > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Exogenous:
    """The next ``BLOCK`` arrivals of each of B rows, drawn ahead (what no router controls)."""

    interarrival: np.ndarray  # (B, BLOCK) standard exponentials: gap to the previous arrival x arrival rate
    pipeline_u: np.ndarray  # (B, BLOCK) uniforms picking the pipeline from the mix
    user: np.ndarray  # (B, BLOCK) int, the requesting user, uniform
    override_u: np.ndarray  # (B, BLOCK, 2) uniforms of the adversary's cell override (whether, which cell)


def draw_arrivals(rng: np.random.Generator, params: Params, num_rows: int) -> Exogenous:
    """The next block of arrivals of ``num_rows`` rows: exponentials, pipeline uniforms, users, override uniforms."""
    shape = (num_rows, BLOCK)
    return Exogenous(
        interarrival=rng.standard_exponential(shape),
        pipeline_u=rng.random(shape),
        user=rng.integers(params.config.demand.num_users, size=shape),
        override_u=rng.random((*shape, 2)),
    )


@dataclass(slots=True)
class State:
    """B rows, each a set of edge servers and the pending stage of its current request.

    The arrays are the simulator's memory: :func:`advance` writes them in place (the env
    shells own their state); :func:`transition` is the pure step, on a copy.
    """

    step: np.ndarray  # (B,) int, routing decisions in the episode
    free_at_s: np.ndarray  # (B, K) when each server finishes the work reserved on it
    hosts: np.ndarray  # (B, M, K) bool, where each microservice has a replica
    replica_ready_s: np.ndarray  # (B, M, K) when a migrated replica is loaded (0: from the start)
    user_cell: np.ndarray  # (B, U) int, each user's cell (= server index) at its clock
    user_time_s: np.ndarray  # (B, U) the time up to which each user's walk is simulated
    pipeline: np.ndarray  # (B,) int, pipeline of the current request
    user: np.ndarray  # (B,) int, its user
    stage: np.ndarray  # (B,) int, its pending stage
    loc: np.ndarray  # (B,) int, the server holding the pending stage's input
    arrival_s: np.ndarray  # (B,) its arrival time (the clock of arrivals)
    ready_s: np.ndarray  # (B,) when the pending stage's input is complete at ``loc``
    virtual_queue: np.ndarray  # (B,) migration-budget virtual queue, J
    rate_hz: np.ndarray  # (B,) arrival rate of the next arrival
    mix: np.ndarray  # (B, P) pipeline mix of the next arrival
    override_prob: np.ndarray  # (B,) probability the next arrival's user is moved by the adversary
    override_cells: np.ndarray  # (B, K) the distribution of the cell it is moved to
    arrivals: Exogenous  # the arrivals drawn ahead (rows refilled in place when used up)
    arrivals_used: np.ndarray  # (B,) int, how many of them have arrived

    @property
    def num_rows(self) -> int:
        """B."""
        return len(self.step)

    def copy(self) -> State:
        """A deep copy."""
        a = self.arrivals
        arrivals = Exogenous(a.interarrival.copy(), a.pipeline_u.copy(), a.user.copy(), a.override_u.copy())
        return State(*(arrivals if f == "arrivals" else getattr(self, f).copy() for f in _FIELDS))

    def set_rows(self, rows: np.ndarray, other: State) -> None:
        """Overwrite rows ``rows`` (int indices) with the rows of ``other`` (one per row), in place."""
        for f in _FIELDS:
            if f == "arrivals":
                for g in _ARRIVAL_FIELDS:
                    getattr(self.arrivals, g)[rows] = getattr(other.arrivals, g)
            else:
                getattr(self, f)[rows] = getattr(other, f)


_FIELDS = State.__slots__
_ARRIVAL_FIELDS = Exogenous.__slots__


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one step did in each row: the (B, 10) table :func:`kernels.route` and
    :func:`kernels.deliver_and_arrive` fill (columns :data:`OUTCOME_COLUMNS`)."""

    table: np.ndarray  # (B, 10) float64

    @property
    def reward(self) -> np.ndarray:
        """(B,) the step's reward (env docstring)."""
        return self.table[:, 9]

    def info(self, state: State) -> dict[str, np.ndarray]:
        """The step's ``info`` arrays (B,): the keys of :data:`OUTCOME_COLUMNS`, ``virtual_queue`` and ``cost``
        (the ``migration_energy_j`` column the queue accumulates)."""
        t = self.table
        info = {key: t[:, i] > 0.0 if key in _FLAGS else t[:, i] for i, key in enumerate(OUTCOME_COLUMNS[:9])}
        info["server"] = t[:, 0].astype(np.int64)
        info["virtual_queue"] = state.virtual_queue.copy()
        info["cost"] = info["migration_energy_j"]
        return info


# the table's columns: its info key (values of the flag columns are 0 / 1), then the reward
OUTCOME_COLUMNS = ("server", "migrated", "infeasible_action", "latency_s", "energy_j", "migration_energy_j",
                   "completed", "e2e_latency_s", "slo_violated", "reward")
_FLAGS = ("migrated", "infeasible_action", "completed", "slo_violated")
_ROW0 = np.zeros(1, dtype=np.int64)
_NO_ROWS = np.zeros(0, dtype=np.int64)


def handover_steps(rng: np.random.Generator, intensity: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(B,) int net ring steps of the users of ``rows``: N ~ Poisson(intensity) handovers, each +-1 with
    probability 1/2 (2 Binomial(N, 1/2) - N). Draws, in row order, the Poisson counts of the rows with a
    positive intensity, then the binomials of those with N > 0; one row takes the plain-number draws."""
    steps = np.zeros(len(intensity), dtype=np.int64)
    if len(intensity) == 1:
        if rows.size and intensity[0] > 0.0:
            n = int(rng.poisson(intensity[0]))
            if n:
                steps[0] = 2 * int(rng.binomial(n, 0.5)) - n
        return steps
    need = rows[intensity[rows] > 0.0]
    if need.size:
        n = rng.poisson(intensity[need])
        moved = n > 0
        if moved.any():
            n = n[moved]
            steps[need[moved]] = 2 * rng.binomial(n, 0.5) - n
    return steps


def _arrive(params: Params, s: State, rows: np.ndarray, rng: np.random.Generator, table: np.ndarray,
            deliver: np.ndarray | None) -> None:
    """Rows ``rows`` of ``s`` take their next arrival, in place (after delivering their finished
    request, when ``deliver`` holds its users' handover steps)."""
    used_up = rows[s.arrivals_used[rows] >= BLOCK]
    if used_up.size:
        new = draw_arrivals(rng, params, len(used_up))
        for g in _ARRIVAL_FIELDS:
            getattr(s.arrivals, g)[used_up] = getattr(new, g)
        s.arrivals_used[used_up] = 0
    a, k = s.arrivals, params.num_servers
    intensity = np.empty(s.num_rows)
    kernels.deliver_and_arrive(
        rows, deliver is not None, _ROW0 if deliver is None else deliver, k, params.deliver_s, params.deliver_j,
        a.interarrival, a.pipeline_u, a.user, params.consts, params.config.slo_s,
        s.pipeline, s.user, s.loc, s.arrival_s, s.ready_s, s.user_cell, s.user_time_s, s.rate_hz, s.mix,
        s.arrivals_used, table, intensity,
    )
    steps = handover_steps(rng, intensity, rows)
    kernels.settle(
        rows, steps, k, params.upload_s, a.override_u,
        s.pipeline, s.user, s.stage, s.loc, s.arrival_s, s.ready_s, s.user_cell, s.override_prob,
        s.override_cells, s.arrivals_used,
    )


def initial(params: Params, rng: np.random.Generator, num_rows: int) -> State:
    """New episodes of ``num_rows`` rows: empty servers, the scenario's placement, users placed, first request.

    Random draws in this order: the users' cells (uniform, unless ``demand.hotspot_cell``
    places them all there), the first block of arrivals (:func:`draw_arrivals`), then the
    first arrivals' handovers (:func:`handover_steps`). With one row these are the draws of
    the env since v0.
    """
    cfg, n, k = params.config, num_rows, params.num_servers
    d = cfg.demand
    if d.hotspot_cell >= 0:
        user_cell = np.full((n, d.num_users), d.hotspot_cell, dtype=np.int64)
    else:
        user_cell = rng.integers(k, size=(n, d.num_users))
    m = len(params.tables.microservices)
    state = State(
        step=np.zeros(n, dtype=np.int64),
        free_at_s=np.zeros((n, k)),
        hosts=np.repeat(params.initial_hosts[None], n, axis=0),
        replica_ready_s=np.zeros((n, m, k)),
        user_cell=user_cell,
        user_time_s=np.zeros((n, d.num_users)),
        pipeline=np.zeros(n, dtype=np.int64),
        user=np.zeros(n, dtype=np.int64),
        stage=np.zeros(n, dtype=np.int64),
        loc=np.zeros(n, dtype=np.int64),
        arrival_s=np.zeros(n),
        ready_s=np.zeros(n),
        virtual_queue=np.zeros(n),
        rate_hz=np.full(n, d.arrival_rate_hz),
        mix=np.repeat(params.base_mix[None], n, axis=0),
        override_prob=np.zeros(n),
        override_cells=np.full((n, k), 1.0 / k),
        arrivals=draw_arrivals(rng, params, n),
        arrivals_used=np.zeros(n, dtype=np.int64),
    )
    _arrive(params, state, np.arange(n), rng, np.zeros((n, len(OUTCOME_COLUMNS))), None)
    return state


def advance(params: Params, state: State, actions: np.ndarray, rng: np.random.Generator) -> Outcome:
    """Route every row's pending stage, writing ``state`` in place; what the step did.

    Args:
        params: the scenario.
        state: the rows now; afterwards the rows after the step.
        actions: (B,) int in ``[0, params.num_actions)``, already checked (K + s: migrate to s).
        rng: where the step's randomness comes from, drawn when the step needs it (the users'
            handovers over the times the step reaches, a new block of arrivals when a row's is
            used up): the handovers' intensity depends on the state, so they cannot be drawn
            before the step. Order: the handovers of the completing rows' users, the new blocks
            of arrivals, the handovers of the next arrivals' users; with one row the draws of the
            env since v0.
    """
    s, b = state, state.num_rows
    table = np.empty((b, len(OUTCOME_COLUMNS)))
    intensity = np.empty(b)
    kernels.route(
        actions, params.stage_ms, params.num_stages, params.transfer_s, params.service_s, params.compute_j,
        params.send_j, params.link_bps, params.replica_transfer_s, params.migration_j, params.consts,
        s.pipeline, s.stage, s.loc, s.user, s.arrival_s, s.ready_s, s.free_at_s, s.hosts, s.replica_ready_s,
        s.virtual_queue, s.user_time_s, s.step, table, intensity,
    )
    if b == 1:
        rows = _ROW0 if table[0, 6] else _NO_ROWS
    else:
        rows = np.flatnonzero(table[:, 6])
    if rows.size:
        _arrive(params, s, rows, rng, table, handover_steps(rng, intensity, rows))
    return Outcome(table)


def transition(params: Params, state: State, actions: np.ndarray, rng: np.random.Generator
               ) -> tuple[State, np.ndarray, dict[str, np.ndarray]]:
    """The pure step: (next state, reward (B,), info arrays (B,)); ``state`` is left as it was.

    :func:`advance` on a copy (arguments as there). ``info`` holds ``server``, ``migrated``,
    ``infeasible_action``, ``latency_s``, ``energy_j``, ``migration_energy_j``, ``completed``,
    ``e2e_latency_s``, ``slo_violated``, ``virtual_queue`` and ``cost`` (the env docstring says what each is).
    """
    after = state.copy()
    out = advance(params, after, actions, rng)
    return after, out.reward, out.info(after)


def view(params: Params, state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the rows show: (observation (B, 5 K + M + 5) float32 (layout in the env docstring),
    action mask (B, A) bool (route to a host: first K; with migration, migrate to a non-host:
    next K), backlog of each server ahead of the pending stage (B, K) in s)."""
    cfg, t, s = params.config, params.tables, state
    b, k = s.num_rows, t.num_servers
    obs = np.empty((b, 5 * k + len(t.microservices) + 5), dtype=np.float32)
    mask = np.empty((b, params.num_actions), dtype=bool)
    queue = np.empty((b, k))
    kernels.observe(
        TIME_SCALE_S, OBS_CLIP, cfg.slo_s, params.queue_scale_j, cfg.episode_length, MAX_STAGES,
        params.stage_ms, params.num_stages, params.obs_transfer, params.obs_service, params.obs_in_bytes,
        s.step, s.pipeline, s.stage, s.loc, s.user, s.arrival_s, s.ready_s, s.free_at_s, s.hosts, s.user_cell,
        s.virtual_queue, obs, mask, queue,
    )
    return obs, mask, queue


def observation(params: Params, state: State) -> np.ndarray:
    """(B, 5 K + M + 5) float32 observation of every row (:func:`view`)."""
    return view(params, state)[0]


def action_mask(params: Params, state: State) -> np.ndarray:
    """(B, A) bool valid actions of every row (:func:`view`)."""
    return view(params, state)[1]


def queue_lengths_s(params: Params, state: State) -> np.ndarray:
    """(B, K) backlog of each server ahead of the pending stage, s (:func:`view`)."""
    return view(params, state)[2]


def pending_microservice(params: Params, state: State) -> np.ndarray:
    """(B,) int microservice of each row's pending stage."""
    return params.stage_ms[state.pipeline, state.stage]


def finish_times_s(params: Params, state: State, migrate: bool = False) -> np.ndarray:
    """(B, K) finish time of each row's pending stage on each server, as a step would reserve it.

    With ``migrate``, after moving a replica there first (from the host with the fastest link
    to it). Nothing changes; what the greedy and Lyapunov baselines compare.
    """
    out = np.empty_like(state.free_at_s)
    s = state
    kernels.finish_times(
        migrate, params.stage_ms, params.transfer_s, params.service_s, params.link_bps, params.replica_transfer_s,
        s.pipeline, s.stage, s.loc, s.ready_s, s.free_at_s, s.hosts, s.replica_ready_s, out,
    )
    return out
