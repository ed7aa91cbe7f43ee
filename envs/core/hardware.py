"""Hardware catalog and roofline pricing of transformer layers.

The catalog (``configs/hardware.yaml``) lists device / edge / cloud processors with
dense peak FLOP/s per precision, memory bandwidth and capacity, and power, each
citing its datasheet. The roofline model (Williams, Waterman & Patterson, "Roofline:
an insightful visual performance model for multicore architectures", CACM 52(4),
2009) prices a kernel at

    time = max(flops / (peak * compute_efficiency), bytes / (bandwidth * memory_efficiency)),
    energy = power_active_w * time.

Transformer prefill of a long prompt is compute-bound (weights are reused across
tokens), decode of one token is memory-bound (all weights and the KV cache are read
for a few FLOPs per byte) — Pope et al., "Efficiently scaling transformer inference",
MLSys 2023. All functions are numpy-vectorised over tokens, context lengths and layer
ranges, so an env can build its cost tables at reset in one call.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgelam.envs.core.config import bounds, build, choices, configs_dir, read_yaml
from edgelam.envs.core.model_cards import ModelCard, file_stamp

PRECISIONS = ("fp32", "fp16", "int8")
PHASES = ("prefill", "decode")


def _out(x: np.ndarray) -> np.ndarray | float:
    return x[()] if x.ndim == 0 else x


@dataclass(frozen=True)
class HardwareSpec:
    """One processor of the catalog; rates are dense (no structured sparsity).

    Attributes:
        name: catalog name (the YAML key).
        kind: ``"device"``, ``"edge"`` or ``"cloud"``.
        peak_flops_fp32: peak FP32 rate in FLOP/s.
        peak_flops_fp16: peak FP16/BF16 (tensor) rate in FLOP/s.
        peak_flops_int8: peak INT8 (tensor) rate in operations/s.
        memory_bandwidth_bytes_per_s: peak memory bandwidth in bytes/s.
        memory_bytes: memory capacity in bytes.
        power_active_w: power while computing (TDP / maximum module power) in W.
        power_idle_w: power while idle or waiting in W.
        source: datasheet(s) the numbers come from.
        description: human-readable name.
        compute_efficiency: reachable fraction of peak FLOP/s; default 0.5 from
            46-52 % of peak in large transformer runs (Chowdhery et al. 2022, PaLM,
            46.2 % MFU; Narayanan et al., SC 2021, 52 % on A100).
        memory_efficiency: reachable fraction of peak bandwidth; default 0.85 from
            80-90 % in streaming benchmarks (Deakin et al., BabelStream, 2018).
    """

    name: str
    kind: str = field(metadata=choices("device", "edge", "cloud"))
    peak_flops_fp32: float = field(metadata=bounds(1e6, 1e19))
    peak_flops_fp16: float = field(metadata=bounds(1e6, 1e19))
    peak_flops_int8: float = field(metadata=bounds(1e6, 1e19))
    memory_bandwidth_bytes_per_s: float = field(metadata=bounds(1e6, 1e15))
    memory_bytes: float = field(metadata=bounds(1e6, 1e15))
    power_active_w: float = field(metadata=bounds(0.0, 1e5))
    power_idle_w: float = field(metadata=bounds(0.0, 1e5))
    source: str
    description: str = ""
    compute_efficiency: float = field(default=0.5, metadata=bounds(0.01, 1.0))
    memory_efficiency: float = field(default=0.85, metadata=bounds(0.01, 1.0))

    def validate(self) -> None:
        """Cross-field checks -> ``ValueError`` naming the key."""
        if not self.source.strip():
            raise ValueError(f"{self.name}.source: every hardware entry must cite its datasheet")
        if self.power_idle_w > self.power_active_w:
            raise ValueError(
                f"{self.name}.power_idle_w: {self.power_idle_w} W exceeds power_active_w {self.power_active_w} W"
            )

    def peak_flops(self, precision: str) -> float:
        """Peak rate in FLOP/s (operations/s for int8) at ``precision`` (fp32, fp16, int8)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision: {precision!r} is not allowed (allowed: {', '.join(PRECISIONS)})")
        return getattr(self, f"peak_flops_{precision}")

    def achievable_flops(self, precision: str) -> float:
        """Reachable FLOP/s: peak x ``compute_efficiency``."""
        return self.peak_flops(precision) * self.compute_efficiency

    @property
    def achievable_bandwidth_bytes_per_s(self) -> float:
        """Reachable bandwidth: peak x ``memory_efficiency`` in bytes/s."""
        return self.memory_bandwidth_bytes_per_s * self.memory_efficiency

    def ridge_point(self, precision: str) -> float:
        """Arithmetic intensity (FLOP/byte) above which a kernel is compute-bound."""
        return self.achievable_flops(precision) / self.achievable_bandwidth_bytes_per_s


# -- catalog -----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _load_catalog(path: str, stamp: tuple[int, int] | None) -> dict[str, HardwareSpec]:
    """Parse a catalog file; ``stamp`` (:func:`file_stamp`) is only part of the cache key."""
    data = read_yaml(path)
    if not data:
        raise ValueError(f"{path}: no hardware entries")
    catalog = {}
    for key, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{key}: expected a mapping of HardwareSpec fields, got {entry!r}")
        if "name" in entry:
            raise ValueError(f"unknown config key '{key}.name' (the entry's name is its YAML key)")
        catalog[str(key)] = build(HardwareSpec, {**entry, "name": str(key)}, prefix=f"{key}.")
    return catalog


def load_hardware_catalog(path: Path | str | None = None) -> dict[str, HardwareSpec]:
    """Hardware entries by name from ``path`` (default: the shipped ``configs/hardware.yaml``).

    Parsed once per file version (cached on path, mtime and size); each call returns a fresh dict.

    Raises:
        ValueError: for bad YAML, an unknown key or a bad value, naming ``<entry>.<key>``.
    """
    file = Path(path) if path is not None else configs_dir() / "hardware.yaml"
    return dict(_load_catalog(str(file), file_stamp(file)))


def get_hardware(name: str, path: Path | str | None = None) -> HardwareSpec:
    """The catalog entry ``name``; ``ValueError`` listing the known names otherwise."""
    catalog = load_hardware_catalog(path)
    if name not in catalog:
        raise ValueError(f"unknown hardware {name!r} (catalog: {', '.join(catalog)})")
    return catalog[name]


# -- roofline ----------------------------------------------------------------------------------------------


def compute_precision(weight_bits: int, act_bits: int) -> str:
    """Arithmetic precision of a matmul with these operand widths.

    int8 when both operands have <= 8 bits (W8A8, W4A8), fp32 when either has 32,
    else fp16 — weight-only quantisation (W4A16, W8A16) dequantises to fp16 and
    computes there, saving bytes but not FLOP time (Lin et al., AWQ, MLSys 2024).
    """
    for key, bits in (("weight_bits", weight_bits), ("act_bits", act_bits)):
        if bits not in (2, 3, 4, 8, 16, 32):
            raise ValueError(f"{key}: {bits!r} is not allowed (allowed: 2, 3, 4, 8, 16, 32)")
    if max(weight_bits, act_bits) <= 8:
        return "int8"
    if max(weight_bits, act_bits) == 32:
        return "fp32"
    return "fp16"


def _nonnegative(name: str, x: np.ndarray | float) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if np.any(~(arr >= 0)) or np.any(~np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite and >= 0, got {x!r}")
    return arr


def roofline_time_s(
    hw: HardwareSpec, flops: np.ndarray | float, bytes_moved: np.ndarray | float, precision: str = "fp16"
) -> np.ndarray | float:
    """Roofline time max(flops / (peak eff_c), bytes / (bandwidth eff_m)) in s, vectorised."""
    f = _nonnegative("flops", flops)
    b = _nonnegative("bytes_moved", bytes_moved)
    return _out(np.maximum(f / hw.achievable_flops(precision), b / hw.achievable_bandwidth_bytes_per_s))


def memory_bound(
    hw: HardwareSpec, flops: np.ndarray | float, bytes_moved: np.ndarray | float, precision: str = "fp16"
) -> np.ndarray | bool:
    """Whether the memory term of the roofline dominates (intensity below the ridge point)."""
    f = _nonnegative("flops", flops)
    b = _nonnegative("bytes_moved", bytes_moved)
    return _out(b / hw.achievable_bandwidth_bytes_per_s > f / hw.achievable_flops(precision))


def active_energy_j(hw: HardwareSpec, time_s: np.ndarray | float) -> np.ndarray | float:
    """Energy of computing for ``time_s`` seconds: power_active_w x time, in J."""
    return _out(hw.power_active_w * _nonnegative("time_s", time_s))


def idle_energy_j(hw: HardwareSpec, time_s: np.ndarray | float) -> np.ndarray | float:
    """Energy of waiting for ``time_s`` seconds: power_idle_w x time, in J."""
    return _out(hw.power_idle_w * _nonnegative("time_s", time_s))


def fits_in_memory(hw: HardwareSpec, bytes_needed: np.ndarray | float) -> np.ndarray | bool:
    """Whether ``bytes_needed`` (weights + KV cache + activations) fit in the memory capacity."""
    return _out(_nonnegative("bytes_needed", bytes_needed) <= hw.memory_bytes)


# -- transformer pricing -----------------------------------------------------------------------------------


def layer_flops_bytes(
    card: ModelCard,
    phase: str,
    tokens: np.ndarray | float,
    context_len: np.ndarray | float,
    weight_bits: int = 16,
    act_bits: int = 16,
    kv_bits: int | None = None,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """FLOPs and memory bytes of ONE decoder layer of ``card``.

    ``context_len`` C is the sequence length after this call, ``tokens`` t the new
    tokens (t <= C); new token i (1..t) attends to C - t + i keys, n = C - (t - 1) / 2
    on average, costing :meth:`ModelCard.flops_per_token` (n) each.

    * ``"prefill"``: one pass over t tokens in parallel. Bytes = layer weights once +
      KV cache (C - t entries read, t written) + hidden states in and out
      (2 t d act_bits / 8). Attention tiles are assumed to stay on chip (fused,
      FlashAttention-style, Dao et al. 2022).
    * ``"decode"``: t sequential one-token steps. Each step reads all layer weights,
      reads its n - 1 cached KV entries and writes one, and moves its hidden state in
      and out: bytes = t (W + n kv + 2 d act_bits / 8).

    Args:
        card: model shape.
        phase: ``"prefill"`` or ``"decode"``.
        tokens: new tokens t (>= 1), broadcast with ``context_len``.
        context_len: total sequence length C after the call (>= t).
        weight_bits: bits per stored weight.
        act_bits: bits per activation element.
        kv_bits: bits per KV-cache element (default ``act_bits``).

    Returns:
        (flops, bytes): arrays (or numbers) of the broadcast shape.
    """
    if phase not in PHASES:
        raise ValueError(f"phase: {phase!r} is not allowed (allowed: {', '.join(PHASES)})")
    t = np.asarray(tokens, dtype=np.float64)
    c = np.asarray(context_len, dtype=np.float64)
    if np.any(~(t >= 1)) or np.any(~np.isfinite(t)):
        raise ValueError(f"tokens: must be >= 1, got {tokens!r}")
    if np.any(~(c >= t)) or np.any(~np.isfinite(c)):
        raise ValueError(f"context_len: must be finite and >= tokens, got {context_len!r} for tokens {tokens!r}")
    kv = card.kv_bytes_per_token_per_layer(act_bits if kv_bits is None else kv_bits)
    weights = card.weight_bytes_per_layer(weight_bits)
    hidden = 2.0 * card.d_model * act_bits / 8.0
    mean_keys = c - (t - 1.0) / 2.0
    flops = t * np.asarray(card.flops_per_token(mean_keys))
    if phase == "prefill":
        moved = weights + c * kv + t * hidden
    else:
        moved = t * (weights + mean_keys * kv + hidden)
    return _out(np.asarray(flops)), _out(np.asarray(moved))


def transformer_layer_cost(
    hw: HardwareSpec,
    card: ModelCard,
    phase: str,
    tokens: np.ndarray | float,
    context_len: np.ndarray | float,
    weight_bits: int = 16,
    act_bits: int = 16,
    kv_bits: int | None = None,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Time (s) and energy (J) of ONE decoder layer on ``hw`` by the roofline model.

    FLOPs and bytes from :func:`layer_flops_bytes` (see it for ``phase``, ``tokens``
    and ``context_len``); arithmetic at :func:`compute_precision` (weight_bits,
    act_bits); energy = power_active_w x time. Vectorised over tokens and context.
    """
    flops, moved = layer_flops_bytes(card, phase, tokens, context_len, weight_bits, act_bits, kv_bits)
    time_s = np.asarray(roofline_time_s(hw, flops, moved, compute_precision(weight_bits, act_bits)))
    return _out(time_s), _out(hw.power_active_w * time_s)


def lm_head_cost(
    hw: HardwareSpec, card: ModelCard, tokens: np.ndarray | float = 1, weight_bits: int = 16, act_bits: int = 16
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Time (s) and energy (J) of the LM head over ``tokens`` positions in ONE pass.

    FLOPs 2 d V per position; bytes = head matrix V d weight_bits / 8 (read once) +
    per position the hidden state in (d) and the logits out (V) at ``act_bits``.
    N sequential decode steps cost N times ``tokens=1``; a prefill needs logits for
    its last position only (``tokens=1``).
    """
    t = np.asarray(tokens, dtype=np.float64)
    if np.any(~(t >= 1)) or np.any(~np.isfinite(t)):
        raise ValueError(f"tokens: must be >= 1, got {tokens!r}")
    flops = t * card.lm_head_flops_per_token
    moved = card.lm_head_weight_bytes(weight_bits) + t * (card.d_model + card.vocab_size) * act_bits / 8.0
    time_s = np.asarray(roofline_time_s(hw, flops, moved, compute_precision(weight_bits, act_bits)))
    return _out(time_s), _out(hw.power_active_w * time_s)


def model_cost(
    hw: HardwareSpec,
    card: ModelCard,
    phase: str,
    tokens: np.ndarray | float,
    context_len: np.ndarray | float,
    start: np.ndarray | int = 0,
    end: np.ndarray | int | None = None,
    weight_bits: int = 16,
    act_bits: int = 16,
    kv_bits: int | None = None,
    include_head: bool = False,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Time (s) and energy (J) of layers [start, end) (+ the LM head) on ``hw``.

    All layers of a card are identical, so the price is (end - start) x one layer;
    a split at layer l prices the device part as ``start=0, end=l`` and the edge part
    as ``start=l, end=L, include_head=True``. ``start``/``end`` broadcast with
    ``tokens`` and ``context_len`` (e.g. ``end=np.arange(L + 1)`` for every split).
    The embedding lookup (t d values read) is negligible and not priced. With
    ``include_head``, a prefill adds one head pass for its last position and a
    decode of t tokens adds t head passes.
    """
    lo = np.asarray(start)
    hi = np.asarray(card.num_layers if end is None else end)
    if np.any(lo < 0) or np.any(hi > card.num_layers) or np.any(lo > hi):
        raise ValueError(f"start/end: need 0 <= start <= end <= {card.num_layers}, got start={start!r}, end={end!r}")
    layer_s, _ = transformer_layer_cost(hw, card, phase, tokens, context_len, weight_bits, act_bits, kv_bits)
    time_s = (hi - lo) * np.asarray(layer_s)
    if include_head:
        head_s, _ = lm_head_cost(hw, card, 1, weight_bits, act_bits)
        passes = 1.0 if phase == "prefill" else np.asarray(tokens, dtype=np.float64)
        time_s = time_s + passes * head_s
    time_s = np.asarray(time_s, dtype=np.float64)
    return _out(time_s), _out(hw.power_active_w * time_s)
