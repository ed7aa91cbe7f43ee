"""Low-rank adapters (LoRA, Hu et al., ICLR 2022) for federated fine-tuning of the real model.

:func:`attach_lora` replaces each targeted ``nn.Linear`` by :class:`LoRALinear`:
``y = W x + (alpha / rank) * B A x`` with ``A`` ``(rank, in)`` Kaiming-uniform initialised
from a seeded generator and ``B`` ``(out, rank)`` zero, so the model is unchanged at
attachment. The base weights are frozen; only ``A`` and ``B`` train.

Attaching modifies the model in place. Shipped models from :func:`~.model.load` are shared
per name, so use ``load(name, fresh=True)`` for a private copy before training adapters.

States (:func:`lora_state`) map ``"<module path>.lora_A"`` / ``".lora_B"`` to tensors; FedAvg
(:func:`average_lora_states`) averages ``A`` and ``B`` separately, as FedIT-style federated
LoRA does (the average of the products ``B A`` is not in general the product of averages).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .model import LM


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (see the module docstring)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        a = torch.empty(rank, base.in_features)
        bound = 1.0 / math.sqrt(base.in_features)  # kaiming_uniform_(a=sqrt(5)) as nn.Linear uses
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(base.weight.device, base.weight.dtype))
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, rank, device=base.weight.device, dtype=base.weight.dtype)
        )
        base.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def _module(model: LM | nn.Module) -> nn.Module:
    return model.model if isinstance(model, LM) else model


def attach_lora(
    model: LM | nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    seed: int = 0,
) -> LM | nn.Module:
    """Attach LoRA adapters in place to every ``nn.Linear`` whose name ends in one of ``targets``.

    Freezes every other parameter. Returns ``model``.

    Raises:
        ValueError: bad rank/alpha, adapters already attached, or no module matched.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    module = _module(model)
    if any(isinstance(m, LoRALinear) for m in module.modules()):
        raise ValueError("LoRA adapters are already attached to this model")
    module.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    matched = [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]
    if not matched:
        raise ValueError(f"no nn.Linear named one of {tuple(targets)} in {type(module).__name__}")
    for name, linear in matched:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, LoRALinear(linear, rank, alpha, gen))
    return model


def lora_state(model: LM | nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the adapter tensors, ``{"<module>.lora_A": (rank, in), "<module>.lora_B": (out, rank)}``."""
    state = {
        f"{name}.{part}": getattr(m, part).detach().clone()
        for name, m in _module(model).named_modules()
        if isinstance(m, LoRALinear)
        for part in ("lora_A", "lora_B")
    }
    if not state:
        raise ValueError("the model has no LoRA adapters; call attach_lora first")
    return state


def load_lora_state(model: LM | nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's adapters; keys and shapes must match exactly."""
    current = {
        f"{name}.{part}": getattr(m, part)
        for name, m in _module(model).named_modules()
        if isinstance(m, LoRALinear)
        for part in ("lora_A", "lora_B")
    }
    missing, unexpected = sorted(set(current) - set(state)), sorted(set(state) - set(current))
    if missing or unexpected:
        raise ValueError(f"LoRA state mismatch: missing {missing[:4]}, unexpected {unexpected[:4]}")
    with torch.no_grad():
        for key, param in current.items():
            value = torch.as_tensor(state[key])
            if value.shape != param.shape:
                raise ValueError(
                    f"LoRA state {key!r} has shape {tuple(value.shape)}, expected {tuple(param.shape)}"
                )
            param.copy_(value)


def average_lora_states(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted average of adapter states (FedAvg); ``weights`` (e.g. sample counts) are
    normalised to sum 1, default equal.
    """
    if not states:
        raise ValueError("need at least one LoRA state to average")
    w = np.ones(len(states)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(states),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"weights must be {len(states)} non-negative numbers with a positive sum, got {weights}"
        )
    w = w / w.sum()
    keys = set(states[0])
    for s in states[1:]:
        if set(s) != keys:
            raise ValueError("LoRA states to average must have the same keys")
    return {
        k: sum(float(wi) * s[k].double() for wi, s in zip(w, states, strict=True)).to(states[0][k].dtype)
        for k in states[0]
    }


def lora_bytes(state: Mapping[str, torch.Tensor], bits: int = 16) -> int:
    """Bytes to transmit an adapter state at ``bits`` (16 or 32) per value."""
    if bits not in (16, 32):
        raise ValueError(f"bits must be 16 or 32, got {bits}")
    return sum(t.numel() for t in state.values()) * bits // 8


def train_lora_steps(
    model: LM | nn.Module,
    token_batches: Iterable,
    steps: int,
    lr: float = 1e-3,
) -> list[float]:
    """Train the trainable parameters (the adapters) for ``steps`` AdamW steps.

    Args:
        model: a model with adapters attached.
        token_batches: token id batches ``(B, T)`` (tensors or arrays), cycled through.
        steps: optimiser steps.
        lr: learning rate.

    Returns:
        The causal-LM cross-entropy (nats/token) of each step's batch, before its update.
    """
    module = _module(model)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters; call attach_lora first")
    batches = [
        torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b, dtype=torch.long)
        for b in token_batches
    ]
    if not batches:
        raise ValueError("token_batches is empty")
    batches = [b.unsqueeze(0) if b.ndim == 1 else b for b in batches]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = params[0].device
    losses = []
    was_training = module.training
    module.train()
    try:
        for step in range(steps):
            x = batches[step % len(batches)].to(device)
            loss = module(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        module.train(was_training)
    return losses
