"""Discrete-event routing of multimodal LAM pipelines over edge servers (shared by both env shells).

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
from edgelam.envs.core.queues import fcfs_finish_s, fcfs_wait_s, virtual_queue_step
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


@dataclass
class StepOutcome:
    """What one routing decision did (python scalars)."""

    server: int
    migrated: bool
    infeasible: bool
    stage_latency_s: float
    energy_j: float
    migration_energy_j: float
    completed: bool
    e2e_latency_s: float  # 0.0 unless completed
    slo_violated: bool


class RoutingSim:
    """The event-driven core: server reservations, replica placement, the pending request, users.

    Plain Python scalars and lists (K and M are small), so a step costs a few
    microseconds; randomness is drawn from the generator given to :meth:`reset` in
    blocks of ``BLOCK`` arrivals. Demand parameters (``rate_hz``, ``mix``,
    ``cell_override``) may be changed between steps (the RobustRouting adversary does).
    """

    def __init__(self, cfg: MicroserviceRoutingConfig, tables: RoutingTables) -> None:
        self.cfg = cfg
        self.t = tables
        self.k = tables.num_servers
        self.migration = cfg.migration.enabled
        mix = np.asarray(cfg.demand.mix, dtype=np.float64)
        self.base_mix = tuple((mix / mix.sum()).tolist())
        self.base_rate_hz = cfg.demand.arrival_rate_hz
        self.initial_hosts = tuple(
            tuple(s in cfg.placement.get(m, ()) for s in range(self.k)) for m in tables.microservices
        )

    # -- demand ----------------------------------------------------------------------------------

    def reset(self, rng: np.random.Generator) -> None:
        """Empty servers, initial placement, users placed, first request drawn."""
        cfg = self.cfg
        self.rng = rng
        self.free_at = [0.0] * self.k
        self.hosts = [list(row) for row in self.initial_hosts]
        self.replica_ready = [[0.0] * self.k for _ in self.t.microservices]
        d = cfg.demand
        if d.hotspot_cell >= 0:
            self.user_cell = [d.hotspot_cell] * d.num_users
        else:
            self.user_cell = rng.integers(self.k, size=d.num_users).tolist()
        self.user_time = [0.0] * d.num_users
        self.rate_hz = self.base_rate_hz
        self.mix = self.base_mix
        self.cell_override: tuple[float, tuple[float, ...]] | None = None  # (probability, cell distribution)
        self.now = 0.0
        self.virtual_queue = 0.0
        self._new_block()
        self._next_request()

    def _new_block(self) -> None:
        rng = self.rng
        self._b_exp = rng.standard_exponential(BLOCK).tolist()
        self._b_type = rng.random(BLOCK).tolist()
        self._b_user = rng.integers(self.cfg.demand.num_users, size=BLOCK).tolist()
        self._b_override = rng.random((BLOCK, 2)).tolist()
        self._b = 0

    def _move_user(self, u: int, time_s: float) -> int:
        """Advance user ``u``'s ring random walk to ``time_s`` (lazy CTMC) and return its cell."""
        dt = time_s - self.user_time[u]
        self.user_time[u] = time_s
        rate = self.cfg.demand.handover_rate_hz
        if dt > 0.0 and rate > 0.0:
            n = int(self.rng.poisson(rate * dt))
            if n:
                step = 2 * int(self.rng.binomial(n, 0.5)) - n
                self.user_cell[u] = (self.user_cell[u] + step) % self.k
        return self.user_cell[u]

    @staticmethod
    def _pick(cdf_weights: tuple[float, ...], u: float) -> int:
        acc = 0.0
        for i, w in enumerate(cdf_weights):
            acc += w
            if u < acc:
                return i
        return len(cdf_weights) - 1

    def _next_request(self) -> None:
        if self._b >= BLOCK:
            self._new_block()
        b = self._b
        self._b += 1
        self.now += self._b_exp[b] / self.rate_hz
        self.pipeline = self._pick(self.mix, self._b_type[b])
        self.user = self._b_user[b]
        cell = self._move_user(self.user, self.now)
        if self.cell_override is not None and self._b_override[b][0] < self.cell_override[0]:
            cell = self._pick(self.cell_override[1], self._b_override[b][1])
            self.user_cell[self.user] = cell
        self.origin_cell = cell
        self.arrival_s = self.now
        self.stage = 0
        self.loc = cell
        self.ready = self.now + self.t.stage_in_bytes[self.pipeline][0] * 8.0 / self.cfg.access_rate_bps

    # -- decisions -------------------------------------------------------------------------------

    @property
    def microservice(self) -> int:
        """Microservice index of the pending stage."""
        return self.t.stage_ms[self.pipeline][self.stage]

    def transfer_s(self, src: int, dst: int, num_bytes: float) -> float:
        """Backhaul time of ``num_bytes`` from server ``src`` to ``dst`` (0 when local)."""
        if src == dst:
            return 0.0
        return num_bytes * 8.0 / self.t.link_bps[src][dst] + self.cfg.hop_latency_s

    def action_mask(self) -> list[bool]:
        """Valid actions: route to a host (first K); with migration, migrate to a non-host (next K)."""
        row = self.hosts[self.microservice]
        if self.migration:
            return [*row, *(not h for h in row)]
        return list(row)

    def migration_source(self, ms: int, dst: int) -> int:
        """Host of ``ms`` that a migration to ``dst`` moves: fastest link to ``dst``, lowest index on ties."""
        best, best_bps = -1, -1.0
        for s in range(self.k):
            if self.hosts[ms][s] and self.t.link_bps[s][dst] > best_bps:
                best, best_bps = s, self.t.link_bps[s][dst]
        return best

    def nearest_host(self, ms: int) -> int:
        """Host of ``ms`` with the smallest transfer time of the pending input (lowest index on ties)."""
        num_bytes = self.t.stage_in_bytes[self.pipeline][self.stage]
        best, best_t = -1, math.inf
        for s in range(self.k):
            if self.hosts[ms][s]:
                tr = self.transfer_s(self.loc, s, num_bytes)
                if tr < best_t:
                    best, best_t = s, tr
        return best

    def expected_finish(self, server: int, migrate: bool = False) -> tuple[float, float]:
        """(finish time of the pending stage on ``server``, migration energy J) without changing state."""
        t, p, k = self.t, self.pipeline, self.stage
        ms = t.stage_ms[p][k]
        ready_replica = self.replica_ready[ms][server]
        mig_j = 0.0
        if migrate:
            src = self.migration_source(ms, server)
            ready_replica = self.ready + self.transfer_s(src, server, t.weight_bytes[ms])
            mig_j = t.weight_bytes[ms] * 8.0 * self.cfg.migration.energy_j_per_bit
        arrive = self.ready + self.transfer_s(self.loc, server, t.stage_in_bytes[p][k])
        return fcfs_finish_s(self.free_at[server], max(arrive, ready_replica), t.service_s[p][k][server]), mig_j

    def step(self, action: int) -> StepOutcome:
        """Route (or migrate-and-route) the pending stage; an infeasible action goes to :meth:`nearest_host`."""
        t, cfg, p, k = self.t, self.cfg, self.pipeline, self.stage
        ms = t.stage_ms[p][k]
        migrate = action >= self.k
        server = action - self.k if migrate else action
        feasible = (not self.hosts[ms][server]) if migrate else self.hosts[ms][server]
        if not feasible:
            migrate, server = False, self.nearest_host(ms)
        mig_j = 0.0
        if migrate:
            src = self.migration_source(ms, server)
            self.replica_ready[ms][server] = self.ready + self.transfer_s(src, server, t.weight_bytes[ms])
            self.hosts[ms][src] = False
            self.hosts[ms][server] = True
            mig_j = t.weight_bytes[ms] * 8.0 * cfg.migration.energy_j_per_bit
        in_bytes = t.stage_in_bytes[p][k]
        sent = 0.0 if server == self.loc else in_bytes
        arrive = self.ready + self.transfer_s(self.loc, server, in_bytes)
        service = t.service_s[p][k][server]
        # the stage is ready once its input has arrived and the microservice's replica is loaded
        finish = self.free_at[server] = fcfs_finish_s(
            self.free_at[server], max(arrive, self.replica_ready[ms][server]), service
        )
        latency = finish - (self.arrival_s if k == 0 else self.ready)  # the first stage includes the upload
        energy = t.power_w[server] * service + sent * 8.0 * cfg.transfer_energy_j_per_bit + mig_j
        if self.migration:
            self.virtual_queue = virtual_queue_step(self.virtual_queue, mig_j, cfg.migration.budget_j_per_step)
        self.ready, self.loc = finish, server
        self.stage = k + 1
        completed, e2e, violated = self.stage == len(t.stage_ms[p]), 0.0, False
        if completed:
            out = t.final_out_bytes[p]
            cell = self._move_user(self.user, finish)
            deliver = self.transfer_s(server, cell, out) + out * 8.0 / cfg.access_rate_bps
            energy += (0.0 if server == cell else out) * 8.0 * cfg.transfer_energy_j_per_bit
            latency += deliver
            e2e = finish + deliver - self.arrival_s
            violated = e2e > cfg.slo_s
            self._next_request()
        return StepOutcome(server, migrate, not feasible, latency, energy, mig_j, completed, e2e, violated)

    def observation(self, elapsed_fraction: float) -> list[float]:
        """Fixed-size observation (see the env docstring), as python floats."""
        t, p, k = self.t, self.pipeline, self.stage
        ms = t.stage_ms[p][k]
        in_bytes = t.stage_in_bytes[p][k]
        ready, loc = self.ready, self.loc
        scale, clip = TIME_SCALE_S, OBS_CLIP
        backlog = [min(fcfs_wait_s(f, ready) / scale, clip) for f in self.free_at]
        transfer = [min(self.transfer_s(loc, s, in_bytes) / scale, clip) for s in range(self.k)]
        service = [min(x / scale, clip) for x in t.service_s[p][k]]
        hosts = [1.0 if h else 0.0 for h in self.hosts[ms]]
        onehot = [0.0] * len(t.microservices)
        onehot[ms] = 1.0
        cell = [0.0] * self.k
        cell[self.user_cell[self.user]] = 1.0
        slack = (self.cfg.slo_s - (ready - self.arrival_s)) / self.cfg.slo_s
        budget = self.cfg.migration.budget_j_per_step
        queue = min(self.virtual_queue / (10.0 * budget), clip) if self.migration and budget > 0 else 0.0
        return [
            *backlog,
            *transfer,
            *service,
            *hosts,
            *onehot,
            *cell,
            math.log10(max(in_bytes, 1.0)) / 8.0,
            min(max(slack, -1.0), 1.0),
            (len(t.stage_ms[p]) - k) / MAX_STAGES,
            queue,
            elapsed_fraction,
        ]
