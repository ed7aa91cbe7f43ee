"""Scenario of EdgeModelCache-v0, loaded from ``configs/scenarios/model_cache/*.yaml``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgelam.envs.core.config import bounds, choices
from edgelam.envs.offload.config import WanConfig

# the toolbox's tasks (edgelam.envs.lam.toolbox.TASKS), written out so that a config loads without the toolbox
TOOLBOX_TASKS = ("gui", "packaging", "concurrency", "web", "core")


@dataclass(frozen=True)
class CardsConfig:
    """The real-size model cards that price the cacheable models (``configs/model_cards.yaml``).

    ``small`` prices ``device`` (the small general model), ``backbone`` prices ``edge`` (the general
    edge model) and every task model ``edge+<task>``, ``big`` prices ``cloud`` (the big general model,
    cached at the edge or run by the cloud). ``task_models: merged`` deploys each task model as its
    own copy of the backbone with the LoRA update merged into the weights (Hu et al., ICLR 2022: no
    extra inference cost); ``adapter`` keeps the adapter beside one shared backbone, stored once for
    all the task models and ``edge`` (TrimCaching: Qu et al., ICDCS 2024), the adapter priced at
    ``adapter_bits`` per LoRA parameter. Weights at ``weight_bits`` (int4: AWQ, Lin et al., MLSys 2024).
    """

    small: str = "Qwen2.5-0.5B"
    backbone: str = "Llama-3.2-3B"
    big: str = "Llama-3.1-8B"
    weight_bits: int = field(default=4, metadata=choices(4, 8, 16))
    adapter_bits: int = field(default=16, metadata=choices(4, 8, 16, 32))
    task_models: str = field(default="merged", metadata=choices("merged", "adapter"))


@dataclass(frozen=True)
class RequestsConfig:
    """Requests for the toolbox's tasks (``tasks``): each comes from a user group (``group_weights``) that
    ranks the tasks its own way and draws a rank with Zipf probability k^-``zipf_exponent``; with
    probability ``swap_prob`` per request and group two neighbouring ranks of that group swap (drifting
    popularity); a share ``private_share`` carries sensitive data. The observation's popularity is an
    exponential average of the requested tasks with weight ``popularity_decay`` per request."""

    tasks: tuple[str, ...] = TOOLBOX_TASKS
    zipf_exponent: float = field(default=0.8, metadata=bounds(0.0, 3.0))
    group_weights: tuple[float, ...] = field(default=(0.6, 0.4), metadata=bounds(0.0, None))
    swap_prob: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    private_share: float = field(default=0.1, metadata=bounds(0.0, 1.0))
    popularity_decay: float = field(default=0.02, metadata=bounds(1e-4, 1.0))


@dataclass(frozen=True)
class BackhaulConfig:
    """The edge's link to the cloud's model store: rate log-normal around ``rate_mean_bps`` with AR(1)
    log-correlation ``corr`` per request, and a round trip ``rtt_s`` per download."""

    rate_mean_bps: float = field(default=10e9, metadata=bounds(1e3, 1e13))
    log_std: float = field(default=0.3, metadata=bounds(0.0, 2.0))
    corr: float = field(default=0.9, metadata=bounds(0.0, 0.999))
    rtt_s: float = field(default=0.02, metadata=bounds(0.0, 5.0))


@dataclass(frozen=True)
class RewardConfig:
    """reward = quality_weight quality - latency_weight latency_s - energy_weight_per_j energy_j
    - cloud_cost_weight_per_usd cloud_cost_usd - backhaul_weight_per_gb backhaul_bytes / 1e9
    - privacy_penalty (a private request forwarded to the cloud)."""

    quality_weight: float = field(default=10.0, metadata=bounds(0.0, 1e3))
    latency_weight: float = field(default=1.0, metadata=bounds(0.0, 1e3))
    energy_weight_per_j: float = field(default=0.01, metadata=bounds(0.0, 1e3))
    cloud_cost_weight_per_usd: float = field(default=2000.0, metadata=bounds(0.0, 1e9))
    backhaul_weight_per_gb: float = field(default=0.5, metadata=bounds(0.0, 1e6))
    privacy_penalty: float = field(default=1.0, metadata=bounds(0.0, 1e6))


@dataclass(frozen=True)
class BudgetConfig:
    """Long-term average budget per request on ``metric`` (None = no budget); drives the virtual queue."""

    metric: str = field(default="backhaul_bytes", metadata=choices("backhaul_bytes", "energy_j"))
    per_request: float | None = field(default=None, metadata=bounds(0.0, None))


@dataclass(frozen=True)
class ModelCacheConfig:
    """One EdgeModelCache-v0 scenario; every field is validated on load."""

    description: str = ""
    episode_length: int = field(default=500, metadata=bounds(1, 1_000_000))
    windows_path: str | None = None  # the per-window quality profile; None = the shipped one
    capacity_bytes: float = field(default=5.0e9, metadata=bounds(0.0, None))
    initial_cache: tuple[str, ...] | None = None  # the models cached when an episode starts (None: empty)
    cards: CardsConfig = field(default_factory=CardsConfig)
    edge_hardware: str = "edge_gpu_l4"
    cloud_hardware: str = "cloud_a100"
    cloud_weight_bits: int = field(default=16, metadata=choices(4, 8, 16))
    prompt_tokens: int = field(default=224, metadata=bounds(1, 32768))
    decode_tokens: int = field(default=32, metadata=bounds(1, 4096))
    token_id_bytes: int = field(default=4, metadata=bounds(1, 8))
    request_overhead_bytes: int = field(default=400, metadata=bounds(0, 1_000_000))
    access_rtt_s: float = field(default=0.01, metadata=bounds(0.0, 2.0))
    access_rate_bps: float = field(default=100e6, metadata=bounds(1e3, 1e12))
    cloud_price_usd_per_token: float = field(default=1.0e-6, metadata=bounds(0.0, 1.0))
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    backhaul: BackhaulConfig = field(default_factory=BackhaulConfig)
    wan: WanConfig = field(default_factory=WanConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def cost_limit(self) -> float | None:
        """Per-episode limit of ``info["cost"]`` (``budget.metric``: backhaul bytes or edge energy in J):
        ``budget.per_request`` x ``episode_length`` (one request per step), or None without a budget."""
        budget = self.budget.per_request
        return None if budget is None else budget * self.episode_length

    def validate(self) -> None:
        """Cross-field checks (names against the catalogs, the capacity against the models) -> ValueError
        naming the key."""
        self.check_capacity(self.capacity_bytes, "capacity_bytes", self.check_names())

    def check_names(self) -> dict:
        """Tasks, groups, hardware, cards and the initial cache against the catalogs -> ValueError naming
        the key; returns the model cards."""
        from edgelam.envs.core.hardware import load_hardware_catalog
        from edgelam.envs.core.model_cards import load_model_cards

        tasks = self.requests.tasks
        unknown = [t for t in tasks if t not in TOOLBOX_TASKS]
        if not tasks or unknown or len(set(tasks)) != len(tasks):
            raise ValueError(f"requests.tasks: need distinct toolbox tasks ({', '.join(TOOLBOX_TASKS)}), "
                             f"got {list(tasks)}" + (f" (unknown: {unknown})" if unknown else ""))
        w = self.requests.group_weights
        if not w or sum(w) <= 0.0 or len(w) > 8:
            raise ValueError(f"requests.group_weights: need 1 to 8 weights >= 0, not all 0, got {list(w)}")
        catalog = load_hardware_catalog()
        for key in ("edge_hardware", "cloud_hardware"):
            if getattr(self, key) not in catalog:
                raise ValueError(f"{key}: unknown hardware {getattr(self, key)!r} (catalog: {', '.join(catalog)})")
        cards = load_model_cards()
        for key in ("small", "backbone", "big"):
            name = getattr(self.cards, key)
            if name not in cards:
                raise ValueError(f"cards.{key}: unknown card {name!r} (cards: {', '.join(cards)})")
        names = model_names(tasks)
        for name in self.initial_cache or ():
            if name not in names:
                raise ValueError(f"initial_cache: unknown model {name!r} (models: {', '.join(names)})")
        return cards

    def check_capacity(self, capacity: float, key: str, cards: dict) -> None:
        """An edge storing ``capacity`` bytes (the scenario's ``key``) holds at least the smallest model."""
        smallest = min(cards[self.cards.small].total_weight_bytes(self.cards.weight_bits),
                       cards[self.cards.backbone].total_weight_bytes(self.cards.weight_bits))
        if capacity < smallest:
            raise ValueError(f"{key}: {capacity:.4g} B is below the smallest model "
                             f"({smallest:.4g} B): nothing could ever be cached")


def model_names(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The cacheable models, in catalogue order: ``device``, ``edge``, ``edge+<task>`` per task, ``cloud``."""
    return ("device", "edge", *(f"edge+{t}" for t in tasks), "cloud")


@dataclass(frozen=True)
class MetroConfig:
    """The metro link between neighbouring edge sites: a model a neighbour holds is downloaded from it at
    ``rate_bps`` after ``rtt_s``, priced ``weight_per_gb`` per GB in the reward (the backhaul's price is
    ``reward.backhaul_weight_per_gb``), and counts against no backhaul budget."""

    rate_bps: float = field(default=25e9, metadata=bounds(1e3, 1e13))
    rtt_s: float = field(default=0.002, metadata=bounds(0.0, 5.0))
    weight_per_gb: float = field(default=0.05, metadata=bounds(0.0, 1e6))


@dataclass(frozen=True)
class MembershipConfig:
    """Edges join and leave (Tian et al.'s node management): before each request an online edge leaves
    with probability ``leave_prob`` (its toolbox is lost) and an offline one rejoins with ``join_prob``
    (with an empty toolbox); ``initially_offline`` edges (the last ones) start offline."""

    leave_prob: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    join_prob: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    initially_offline: int = field(default=0, metadata=bounds(0, 1024))


@dataclass(frozen=True)
class CooperativeCacheConfig(ModelCacheConfig):
    """One CooperativeModelCache-v0 scenario: ``num_edges`` edges of EdgeModelCache-v0, each with its own
    users, storage (``capacities_bytes``, one per edge; None: ``capacity_bytes`` for every edge) and
    request stream, joined by a metro link; every field is validated on load."""

    num_edges: int = field(default=3, metadata=bounds(1, 1024))
    # one per edge (checked in validate(): the count against num_edges, each against the smallest model)
    capacities_bytes: tuple[float, ...] | None = None
    metro: MetroConfig = field(default_factory=MetroConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)

    def cost_limit(self) -> float | None:
        """Per-episode limit of the team's ``info["cost"]``: ``budget.per_request`` x ``num_edges`` x
        ``episode_length`` (each edge's budget, summed), or None without a budget."""
        budget = self.budget.per_request
        return None if budget is None else budget * self.num_edges * self.episode_length

    def edge_capacities(self) -> tuple[float, ...]:
        """The storage of each edge, in bytes."""
        return self.capacities_bytes if self.capacities_bytes is not None else (self.capacity_bytes,) * self.num_edges

    def validate(self) -> None:
        """The single edge's checks for every edge's capacity, and the counts -> ValueError naming the key."""
        if self.capacities_bytes is not None and len(self.capacities_bytes) != self.num_edges:
            raise ValueError(f"capacities_bytes: need one capacity per edge ({self.num_edges}), "
                             f"got {len(self.capacities_bytes)}")
        if self.membership.initially_offline > self.num_edges:
            raise ValueError(f"membership.initially_offline: {self.membership.initially_offline} is more than "
                             f"num_edges {self.num_edges}")
        cards = self.check_names()
        if self.capacities_bytes is None:
            self.check_capacity(self.capacity_bytes, "capacity_bytes", cards)
            return
        for i, cap in enumerate(self.capacities_bytes):
            if not math.isfinite(cap):
                raise ValueError(f"capacities_bytes[{i}]: need a finite number of bytes, got {cap!r}")
            self.check_capacity(cap, f"capacities_bytes[{i}]", cards)
