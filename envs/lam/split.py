"""Split execution: layers ``[0, l)`` on the device, a quantised hidden state over the air,
layers ``[l, L)`` at the edge (Neurosurgeon, Kang et al. 2017; Edgent, Li et al. 2020).

Quality is measured teacher-forced over ``prompt + reference``: at each of the ``R``
positions that predict a reference token, the split run's next-token distribution is
compared with the unsplit full-precision run's:

* ``top1_agreement`` -- fraction of positions where both argmaxes agree;
* ``kl_nats`` -- mean KL(p_full || p_split) in nats;
* ``ref_accuracy`` -- top-1 accuracy of the split run on the reference tokens;
* ``ref_accuracy_full`` -- the same for the full run.

The device sends the hidden states of every input token (``prompt + reference[:-1]``).
At ``l = 0`` the device sends token ids and at ``l = L`` the result, so both equal the full
run (agreement 1, KL 0) whatever ``bits``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .model import LM
from .quantize import BITS, transmit


def _inputs(lm: LM, prompt_ids, reference_ids) -> tuple[torch.Tensor, torch.Tensor, int]:
    prompt = [int(t) for t in prompt_ids]
    reference = [int(t) for t in reference_ids]
    if not prompt or not reference:
        raise ValueError("prompt_ids and reference_ids must both be non-empty")
    ids = lm.as_ids(prompt + reference[:-1])
    return ids, torch.tensor(reference, device=ids.device), len(prompt) - 1


def _compare(
    full_logits: torch.Tensor, split_logits: torch.Tensor, reference: torch.Tensor
) -> dict[str, np.ndarray]:
    """Metrics per batch entry of ``split_logits`` ``(n, R, V)`` against ``full_logits`` ``(R, V)``."""
    logp_full = torch.log_softmax(full_logits.double(), -1)
    logp_split = torch.log_softmax(split_logits.double(), -1)
    kl = (logp_full.exp() * (logp_full - logp_split)).sum(-1).mean(-1)
    top_full = full_logits.argmax(-1)
    top_split = split_logits.argmax(-1)
    return {
        "top1_agreement": (top_split == top_full).double().mean(-1).cpu().numpy(),
        "kl_nats": kl.clamp_min(0.0).cpu().numpy(),
        "ref_accuracy": (top_split == reference).double().mean(-1).cpu().numpy(),
    }


def _generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed()))
    return gen


@torch.no_grad()
def split_quality(
    lm: LM,
    prompt_ids: Sequence[int],
    reference_ids: Sequence[int],
    split_layer: int,
    bits: int,
    ber: float = 0.0,
    seed: int | None = None,
    scheme: str = "per_token",
) -> dict[str, float]:
    """Quality of one split execution against the full run (see the module docstring).

    Args:
        lm: the executed model.
        prompt_ids, reference_ids: token ids; teacher-forced over their concatenation.
        split_layer: ``l`` in ``[0, L]``.
        bits: precision of the sent hidden state, 4, 8 or 16.
        ber: bit error rate on the transmitted codes (seeded by ``seed``).
        scheme: quantisation scale granularity, ``per_token`` or ``per_channel``.

    Returns:
        ``{"top1_agreement", "kl_nats", "ref_accuracy", "ref_accuracy_full"}`` as floats.
    """
    grid = split_quality_grid(lm, prompt_ids, reference_ids, [split_layer], [bits], ber, seed, scheme)
    return {
        "top1_agreement": float(grid["top1_agreement"][0, 0]),
        "kl_nats": float(grid["kl_nats"][0, 0]),
        "ref_accuracy": float(grid["ref_accuracy"][0, 0]),
        "ref_accuracy_full": float(grid["ref_accuracy_full"]),
    }


@torch.no_grad()
def split_quality_grid(
    lm: LM,
    prompt_ids: Sequence[int],
    reference_ids: Sequence[int],
    split_layers: Sequence[int] | None = None,
    bits: Sequence[int] = BITS,
    ber: float = 0.0,
    seed: int | None = None,
    scheme: str = "per_token",
) -> dict[str, np.ndarray]:
    """Split quality for every ``(split_layer, bits)`` of one prompt, reusing the full run.

    The full-precision run is done once and its hidden state at every layer boundary is
    kept; for each split layer, all precisions run through ``[l, L)`` as one batch.

    Args:
        split_layers: default ``0..L``.
        bits: precisions, each in {4, 8, 16}.
        ber, seed, scheme: as in :func:`split_quality`; one generator seeded by ``seed`` is
            drawn from in ``(split_layer, bits)`` order.

    Returns:
        ``top1_agreement``, ``kl_nats``, ``ref_accuracy`` shaped ``(len(split_layers),
        len(bits))``, ``ref_accuracy_full`` (a 0-d array), ``split_layers`` and ``bits``.
    """
    n_layers = lm.num_layers
    split_layers = list(range(n_layers + 1)) if split_layers is None else [int(s) for s in split_layers]
    bits = [int(b) for b in bits]
    for s in split_layers:
        if not 0 <= s <= n_layers:
            raise ValueError(f"split_layer must be in [0, {n_layers}], got {s}")
    for b in bits:
        if b not in BITS:
            raise ValueError(f"bits must be in {BITS}, got {b}")
    ids, reference, first = _inputs(lm, prompt_ids, reference_ids)
    boundary = [lm.embed(ids)]
    for i in range(n_layers):
        boundary.append(lm.forward_layers(boundary[-1], i, i + 1))
    full_logits = lm.head(boundary[-1][0, first:])
    shape = (len(split_layers), len(bits))
    out = {k: np.zeros(shape) for k in ("top1_agreement", "kl_nats", "ref_accuracy")}
    full = _compare(full_logits, full_logits[None], reference)
    gen = _generator(seed) if ber > 0.0 else None
    for i, layer in enumerate(split_layers):
        if layer in (0, n_layers):
            for k in out:
                out[k][i] = full[k][0]
            continue
        sent = torch.cat([transmit(boundary[layer], b, ber, gen, scheme) for b in bits])
        split_logits = lm.head(lm.forward_layers(sent, layer, n_layers)[:, first:])
        metrics = _compare(full_logits, split_logits, reference)
        for k in out:
            out[k][i] = metrics[k]
    out["ref_accuracy_full"] = np.asarray(full["ref_accuracy"][0])
    out["split_layers"] = np.asarray(split_layers)
    out["bits"] = np.asarray(bits)
    return out
