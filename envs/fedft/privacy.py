"""Sample-level differential privacy of the FedFT devices: DP-SGD on the LoRA adapters and its Rényi-DP accountant.

**Mechanism** (DP-SGD, Abadi et al., CCS 2016). In every local step a device draws a
Poisson sample of its local sequences (each one independently with probability
q = batch_size / n_k), computes each sampled sequence's gradient of its own loss w.r.t. the
adapters it trains, clips it to L2 norm ``clip_norm`` (g / max(1, ||g|| / C)), sums the
clipped gradients, adds N(0, (noise_multiplier * C)^2) to every coordinate and divides by
the expected batch size q n_k = batch_size; the optimiser (AdamW, as without privacy)
steps on that noisy mean. Everything after the noise (the optimiser, FedAvg, the
validation loss) is post-processing, so the adapters a device uploads after its local
steps are differentially private w.r.t. adding or removing one of its sequences.

Per-sample gradients of :class:`~edgelam.envs.lam.lora.LoRALinear` adapters are exact and
batched (:class:`LoRATape`): with y = W x + s B A x, input x_t (T, in) and output
gradient g_t (T, out) of one sequence, dL/dB = s sum_t g_t (A x_t)^T and
dL/dA = s sum_t (B^T g_t) x_t^T; one backward pass of the summed per-sequence losses gives
g for the whole batch, since sequences do not interact in a causal LM. The same trick
computes per-example gradients of linear layers in Goodfellow, arXiv 1510.01799 (2015).

**Accountant.** One local step is the sampled Gaussian mechanism (SGM) with sampling rate
q and noise multiplier sigma. Its Rényi DP at integer order alpha >= 2 is exactly
(Mironov, Talwar, Zhang, "Rényi differential privacy of the sampled Gaussian mechanism",
arXiv 1908.10530, 2019, Sec. 3.3)::

    rdp(alpha) = log A_alpha / (alpha - 1),
    A_alpha = sum_{i=0}^{alpha} C(alpha, i) q^i (1 - q)^(alpha - i) exp((i^2 - i) / (2 sigma^2)),

and q = 1 gives the Gaussian mechanism's alpha / (2 sigma^2) (Mironov, "Rényi differential
privacy", CSF 2017, Prop. 7). RDP composes by addition (Mironov 2017, Prop. 1), so a device
that ran S local steps in total has S * rdp(alpha). It converts to (epsilon, delta)-DP by
the conversion of Balle et al., "Hypothesis testing interpretations and Rényi differential
privacy", AISTATS 2020, Theorem 21 (tighter than Mironov 2017's
rdp + log(1/delta) / (alpha - 1) by log(alpha / (alpha - 1)) + log(alpha) / (alpha - 1))::

    epsilon = min_alpha  rdp(alpha) + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1)

over the integer orders :data:`ORDERS`. Opacus' and TF Privacy's RDP accountants compute the
same quantities; ``tests/fedft/test_privacy.py`` checks this one against Opacus' and
against a numerical integration of the Rényi divergence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import gammaln, logsumexp

if TYPE_CHECKING:  # the DP-SGD helpers run on a live model; the accountant (replay backend) is numpy only
    import torch
    from torch import nn

    from edgelam.envs.lam.lora import LoRALinear

ORDERS = np.arange(2, 257)  # integer Rényi orders alpha of the accountant
_I = np.arange(ORDERS[-1] + 1)
_LOG_BINOM = np.where(  # (A, I): log C(alpha, i), -inf for i > alpha
    _I[None, :] <= ORDERS[:, None],
    gammaln(ORDERS[:, None] + 1.0) - gammaln(_I[None, :] + 1.0) - gammaln(np.maximum(ORDERS[:, None] - _I, 0) + 1.0),
    -np.inf,
)


def sample_rates(batch_size: int, data_sizes: np.ndarray) -> np.ndarray:
    """(K,) Poisson sampling rate q_k = min(1, batch_size / n_k) of devices holding ``data_sizes`` sequences."""
    return np.minimum(1.0, batch_size / np.asarray(data_sizes, dtype=np.float64))


def sgm_rdp(sample_rate: float | np.ndarray, noise_multiplier: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """Rényi DP of one step of the sampled Gaussian mechanism at integer ``orders`` (module docstring).

    Args:
        sample_rate: Poisson sampling rate q in [0, 1], scalar or (K,).
        noise_multiplier: sigma > 0, noise std over the L2 sensitivity (the clip norm).
        orders: integer orders alpha in [2, 256], (A,).

    Returns:
        (A,) or (K, A) RDP epsilon(alpha) of one step, in nats.
    """
    q = np.atleast_1d(np.asarray(sample_rate, dtype=np.float64))
    orders = np.asarray(orders)
    if np.any((q < 0) | (q > 1)) or not np.all(np.isfinite(q)):
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if orders.ndim != 1 or np.any(orders != np.round(orders)) or orders.min() < 2 or orders.max() > ORDERS[-1]:
        raise ValueError(f"orders must be integers in [2, {ORDERS[-1]}], got {orders}")
    a = orders.astype(np.int64)
    log_binom = _LOG_BINOM[a - 2]  # (A, I)
    quad = (_I * (_I - 1.0)) / (2.0 * noise_multiplier**2)  # (I,)
    out = np.zeros((q.size, a.size))
    for k, qk in enumerate(q):
        if qk == 0.0:
            continue
        if qk == 1.0:
            out[k] = a / (2.0 * noise_multiplier**2)
            continue
        with np.errstate(invalid="ignore"):  # -inf * 0 in the masked corner of log_binom
            terms = log_binom + _I * np.log(qk) + (a[:, None] - _I) * np.log1p(-qk) + quad
        terms = np.where(np.isfinite(log_binom), terms, -np.inf)
        out[k] = logsumexp(terms, axis=1) / (a - 1.0)
    return out[0] if np.ndim(sample_rate) == 0 else out


def rdp_to_epsilon(rdp: np.ndarray, delta: float, orders: np.ndarray = ORDERS) -> tuple[np.ndarray, np.ndarray]:
    """(epsilon, best order) of (..., A) accumulated RDP at ``orders`` for ``delta`` (Balle et al. 2020, Thm. 21).

    Returns arrays of the leading shape of ``rdp``; epsilon is exactly 0 where the RDP is 0
    at every order (the mechanism never ran).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    rdp = np.asarray(rdp, dtype=np.float64)
    a = np.asarray(orders, dtype=np.float64)
    eps = rdp + np.log((a - 1.0) / a) - (np.log(delta) + np.log(a)) / (a - 1.0)
    best = np.argmin(eps, axis=-1)
    eps_min = np.maximum(np.take_along_axis(eps, best[..., None], axis=-1)[..., 0], 0.0)
    return np.where(np.all(rdp == 0.0, axis=-1), 0.0, eps_min), a[best]


class RDPAccountant:
    """Privacy spent by each of K devices running DP-SGD (module docstring).

    Args:
        sample_rates: (K,) Poisson sampling rate q_k = min(1, batch_size / n_k) of each device.
        noise_multiplier: sigma of every device.
        delta: the delta of the reported (epsilon, delta).
    """

    def __init__(self, sample_rates: np.ndarray, noise_multiplier: float, delta: float) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = delta
        self.step_rdp = sgm_rdp(np.asarray(sample_rates, dtype=np.float64).reshape(-1), noise_multiplier)  # (K, A)
        self.rdp = np.zeros_like(self.step_rdp)  # (K, A) accumulated
        self.steps = np.zeros(self.step_rdp.shape[0], dtype=np.int64)  # (K,) DP-SGD steps run so far

    @classmethod
    def over(cls, step_rdp: np.ndarray, rdp: np.ndarray, steps: np.ndarray, delta: float) -> RDPAccountant:
        """An accountant over existing arrays (a batched state's rows): ``step_rdp`` and ``rdp`` (..., A), ``steps``
        (...,); :meth:`spend` writes ``rdp`` and ``steps`` in place."""
        acc = cls.__new__(cls)
        acc.delta, acc.step_rdp, acc.rdp, acc.steps = delta, step_rdp, rdp, steps
        return acc

    def spend(self, devices: np.ndarray, steps: int) -> None:
        """Charge ``steps`` DP-SGD steps to each device in the bool mask ``devices`` (the shape of ``self.steps``)."""
        devices = np.asarray(devices, dtype=bool)
        if devices.shape != self.steps.shape:
            raise ValueError(f"devices must be a bool mask of shape {self.steps.shape}, got {devices.shape}")
        self.rdp[devices] += steps * self.step_rdp[devices]
        self.steps[devices] += steps

    def epsilon(self) -> np.ndarray:
        """(K,) (or the shape of ``self.steps``) epsilon spent so far by each device at this accountant's delta
        (0 before its first step)."""
        return rdp_to_epsilon(self.rdp, self.delta)[0]


class LoRATape:
    """Records a forward pass through some :class:`LoRALinear` modules to give exact per-sample adapter gradients.

    Use as a context manager around the forward pass of a batch of independent sequences,
    then call :meth:`per_sample_grads` once with the summed per-sequence losses (or an
    intermediate tensor and its gradient).

    Args:
        modules: the adapters whose gradients are wanted; each must run at most once per pass.
    """

    def __init__(self, modules: Sequence[LoRALinear]) -> None:
        self.modules = list(modules)
        self._inputs: dict[int, torch.Tensor] = {}
        self._outputs: dict[int, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> LoRATape:
        self._inputs.clear()
        self._outputs.clear()
        for i, m in enumerate(self.modules):
            self._handles.append(m.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, i: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if i in self._outputs:
                raise ValueError(f"LoRATape: adapter {i} ran twice in one forward pass")
            self._inputs[i] = args[0].detach()
            self._outputs[i] = output

        return hook

    @property
    def params(self) -> list[nn.Parameter]:
        """The adapter parameters in the order of :meth:`per_sample_grads`: A_0, B_0, A_1, B_1, ..."""
        return [p for m in self.modules for p in (m.lora_A, m.lora_B)]

    def per_sample_grads(
        self, root: torch.Tensor, grad_root: torch.Tensor | None = None, extra: Sequence[torch.Tensor] = ()
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sample gradients ``(n, *param.shape)`` of :attr:`params` and the plain gradients of ``extra``.

        Args:
            root: the scalar sum of per-sequence losses, or a tensor whose gradient is ``grad_root``.
            grad_root: gradient w.r.t. ``root`` (None for a scalar loss).
            extra: other tensors of the graph whose gradient is also wanted (e.g. the received activations).
        """
        missing = [i for i in range(len(self.modules)) if i not in self._outputs]
        if missing:
            raise ValueError(f"LoRATape: adapters {missing} did not run in the recorded forward pass")
        import torch

        outs = [self._outputs[i] for i in range(len(self.modules))]
        grads = torch.autograd.grad(root, outs + list(extra), grad_outputs=grad_root)
        per_sample = []
        for i, m in enumerate(self.modules):
            x, g = self._inputs[i], grads[i]  # (n, T, in), (n, T, out)
            z = x @ m.lora_A.detach().T  # (n, T, r)
            per_sample.append(m.scaling * torch.einsum("ntr,nti->nri", g @ m.lora_B.detach(), x))  # dL/dA
            per_sample.append(m.scaling * torch.einsum("nto,ntr->nor", g, z))  # dL/dB
        return per_sample, list(grads[len(outs):])


def clip_per_sample(grads: Sequence[torch.Tensor], clip_norm: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Clip each sample's gradient (over all ``grads`` jointly) to L2 norm ``clip_norm``; returns the summed clipped
    gradients (one per parameter) and the (n,) per-sample norms before clipping."""
    import torch

    n = grads[0].shape[0]
    norms = torch.sqrt(sum(g.reshape(n, -1).pow(2).sum(dim=1) for g in grads))
    factor = (clip_norm / torch.clamp(norms, min=clip_norm))  # 1 / max(1, ||g|| / C)
    summed = [torch.einsum("n,n...->...", factor, g) for g in grads]
    return summed, norms


def noisy_mean(
    summed: Sequence[torch.Tensor], noise_std: float, expected_batch: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """(sum of clipped gradients + N(0, noise_std^2) per coordinate) / expected batch size, per parameter."""
    import torch

    return [
        (s + noise_std * torch.randn(s.shape, generator=generator, dtype=s.dtype).to(s.device)) / expected_batch
        for s in summed
    ]
