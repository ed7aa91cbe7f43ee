"""Live backend of the FedFT envs: real federated LoRA fine-tuning of a shipped model.

Every round each participating device starts from the global adapters, runs
``local_steps`` AdamW steps on batches drawn (from the env's ``np_random``) from its own
local sequences, and uploads its adapters; the server averages them weighted by data size
(FedAvg over the A and B factors, :func:`edgelam.envs.lam.average_lora_states`) and
measures the real validation loss of each topic. Devices that miss the deadline never
reach the average, so they are not trained here (their discarded update cannot change the
result). Deterministic for a seed on a fixed torch build and thread count.

:class:`SplitLiveFederation` runs the same rounds split between device and edge server
(SplitFed V1, Thapa et al., AAAI 2022; with LoRA, SplitLoRA, Lin et al., arXiv
2407.00952): for each local step the device runs the embedding and its first
``device_layers`` layers, the activations cross to the server cast to the wire dtype, the
server runs the rest of the model, the loss and the backward pass and steps its adapters,
and the gradient w.r.t. the received activations crosses back (cast again) for the
device's backward pass and step. The server keeps one copy of its adapters per device,
trained in parallel from the round's global adapters; at the end of the round the server
copies and the devices' adapters are averaged by FedAvg with the same data-size weights.
That is, per device, the update of :class:`LiveFederation` computed in two places; it
differs from it only by the rounding of the exchanged tensors (none with ``float32``), so
both modes follow the same learning dynamics (tested) and replay uses one surrogate.

With ``noise_multiplier`` set (scenario ``privacy.enabled``), local steps are DP-SGD
(:mod:`.privacy`): Poisson-sampled batches of expected size ``batch_size``, per-sequence
gradients clipped to ``clip_norm``, Gaussian noise, then the same AdamW step. In
``lora_fedavg`` the device clips each sequence's gradient over all adapters, so what it
uploads is private. In ``split`` mode every adapter trained on a device's sequences is
privatised: the device's own layers' adapters and the server's copy for that device, each
part clipped to ``clip_norm / sqrt(2)`` (per-layer clipping, McMahan et al., ICLR 2018,
so the joint sensitivity is ``clip_norm``; ``clip_norm`` alone for the server part when
``device_layers`` is 0) and noised with std ``noise_multiplier * clip_norm``, so the
adapters that reach FedAvg, hence the global model, are private. The cut activations and
labels the device uploads in every step are *not* privatised (the edge server is trusted
with them; noise on activations is out of scope). Split traffic with privacy is priced at
the expected batch size (the env's ``uplink_bits``); ``last_traffic_bits`` counts the
sampled batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from edgelam.envs.fedft.privacy import LoRATape, clip_per_sample, noisy_mean, sample_rates
from edgelam.envs.lam import attach_lora, average_lora_states, load, load_lora_state, lora_bytes, lora_state
from edgelam.envs.lam import train_lora_steps as _train
from edgelam.envs.lam.lora import LoRALinear

if TYPE_CHECKING:
    from edgelam.envs.fedft.config import FedFTConfig

LORA_TARGETS = ("q_proj", "v_proj")
WIRE_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class LiveFederation:
    """Global LoRA adapters on a private copy of ``model`` and the per-topic validation batch.

    Args:
        model: shipped model name (``edge``) or a local HF causal-LM folder.
        rank: LoRA rank on the q/v projections.
        alpha: LoRA scaling numerator.
        lr: local AdamW learning rate.
        local_steps: local optimiser steps per round.
        batch_size: sequences per local step (the expected Poisson batch with privacy).
        val_tokens: validation sequences per topic, (G, V, T) token ids.
        noise_multiplier: DP-SGD noise multiplier sigma; None trains without privacy.
        clip_norm: DP-SGD per-sequence clip norm C (with ``noise_multiplier``).
    """

    def __init__(
        self, model: str, rank: int, alpha: float, lr: float, local_steps: int, batch_size: int,
        val_tokens: np.ndarray, noise_multiplier: float | None = None, clip_norm: float = 1.0,
    ) -> None:
        self.lm = load(model, fresh=True)
        attach_lora(self.lm, rank=rank, alpha=alpha, targets=LORA_TARGETS, seed=0)
        self.initial_state = lora_state(self.lm)
        self.lr = lr
        self.local_steps = local_steps
        self.batch_size = batch_size
        self.val = torch.as_tensor(val_tokens.astype(np.int64))
        self.global_state = self.initial_state
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.adapters = [m for m in self.lm.model.modules() if isinstance(m, LoRALinear)]

    @property
    def adapter_bits(self) -> int:
        """Bits of one uploaded adapter state in float16 (its real size)."""
        return lora_bytes(self.initial_state, bits=16) * 8

    def reset(self) -> np.ndarray:
        """Back to the initial adapters (B = 0: the base model); returns the per-topic validation loss (G,)."""
        self.global_state = self.initial_state
        load_lora_state(self.lm, self.global_state)
        return self.validation_loss()

    @torch.no_grad()
    def validation_loss(self) -> np.ndarray:
        """Mean next-token cross-entropy in nats of each topic's validation sequences, (G,)."""
        g, v, t = self.val.shape
        module = self.lm.model
        module.eval()
        x = self.val.reshape(g * v, t)
        logits = module(input_ids=x).logits[:, :-1]
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
        )
        return ce.reshape(g, v * (t - 1)).mean(dim=1).double().numpy()

    def local_update(self, batches: list[np.ndarray]) -> None:
        """Train the loaded adapters on ``batches`` ((B, T) token ids, one per local step) in place."""
        _train(self.lm, batches, self.local_steps, lr=self.lr)

    def private_local_update(self, batches: list[np.ndarray], generator: torch.Generator) -> None:
        """DP-SGD local update on Poisson batches ((b_i, T) token ids, one per local step; b_i may be 0), in place."""
        tape = LoRATape(self.adapters)
        opt = torch.optim.AdamW(tape.params, lr=self.lr, weight_decay=0.0)
        module = self.lm.model
        was_training = module.training
        module.train()
        try:
            for ids in batches[: self.local_steps]:
                summed = [torch.zeros_like(p) for p in tape.params]
                if len(ids):
                    x = self.lm.as_ids(ids)
                    with tape:
                        logits = module(input_ids=x).logits
                    grads, _ = tape.per_sample_grads(per_sequence_loss(logits, x[:, 1:]).sum())
                    summed, _ = clip_per_sample(grads, self.clip_norm)
                self._private_step(opt, tape.params, summed, generator)
        finally:
            module.train(was_training)

    def _private_step(self, opt: torch.optim.Optimizer, params: list[nn.Parameter], summed: list[torch.Tensor],
                      generator: torch.Generator) -> None:
        noisy = noisy_mean(summed, self.noise_multiplier * self.clip_norm, self.batch_size, generator)
        for p, g in zip(params, noisy, strict=True):
            p.grad = g
        opt.step()

    def round(
        self, local_data: list[np.ndarray], participants: np.ndarray, weights: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One FedAvg round; returns the new per-topic validation loss (G,).

        Args:
            local_data: per device its sequences, (n_k, T) token ids.
            participants: (K,) bool, devices whose update reaches the server in time.
            weights: (K,) aggregation weights (data sizes).
            rng: source of the local batch indices (the env's ``np_random``).
        """
        idx = np.flatnonzero(participants)
        if idx.size == 0:
            return self.validation_loss()
        states = []
        rates = sample_rates(self.batch_size, np.array([len(d) for d in local_data]))
        for k in idx:
            data = local_data[k]
            load_lora_state(self.lm, self.global_state)
            if self.noise_multiplier is None:
                picks = rng.integers(len(data), size=(self.local_steps, self.batch_size))
                self.local_update([data[p] for p in picks])
            else:
                picks = rng.random((self.local_steps, len(data))) < rates[k]  # Poisson sampling
                generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
                self.private_local_update([data[p] for p in picks], generator)
            states.append(lora_state(self.lm))
        self.global_state = average_lora_states(states, weights[idx])
        load_lora_state(self.lm, self.global_state)
        return self.validation_loss()


class SplitLiveFederation(LiveFederation):
    """:class:`LiveFederation` whose local updates run split between device and edge server (module docstring).

    Args:
        device_layers: decoder layers (with their adapters) on the device, in [0, L - 1].
        wire_dtype: ``float16``, ``bfloat16`` or ``float32``, the dtype of the exchanged tensors.
        The others as :class:`LiveFederation`.

    ``last_traffic_bits`` holds the (uplink, downlink) bits of the last device's local update,
    counted from the tensors that really crossed the cut (activations, labels, gradients and
    the device's adapters uploaded for FedAvg).
    """

    def __init__(
        self, model: str, rank: int, alpha: float, lr: float, local_steps: int, batch_size: int,
        val_tokens: np.ndarray, device_layers: int, wire_dtype: str, noise_multiplier: float | None = None,
        clip_norm: float = 1.0,
    ) -> None:
        super().__init__(model, rank, alpha, lr, local_steps, batch_size, val_tokens, noise_multiplier, clip_norm)
        if not 0 <= device_layers < self.lm.num_layers:
            raise ValueError(f"split.device_layers: {device_layers} must be in [0, {self.lm.num_layers - 1}]")
        if wire_dtype not in WIRE_TORCH_DTYPES:
            raise ValueError(f"split.wire_dtype: {wire_dtype!r} is not one of {tuple(WIRE_TORCH_DTYPES)}")
        self.device_layers = device_layers
        self.wire_dtype = WIRE_TORCH_DTYPES[wire_dtype]
        layers = list(self.lm.model.model.layers)[: self.lm.num_layers]
        self.device_params = _trainable(layers[:device_layers])
        self.server_params = _trainable(layers[device_layers:])
        self.device_adapters = [m for layer in layers[:device_layers] for m in layer.modules()
                                if isinstance(m, LoRALinear)]
        self.server_adapters = [m for layer in layers[device_layers:] for m in layer.modules()
                                if isinstance(m, LoRALinear)]
        self.last_traffic_bits = (0, 0)

    def local_update(self, batches: list[np.ndarray]) -> None:
        """SplitFed local update of one device on ``batches``, in place on the loaded adapters."""
        lm, cut = self.lm, self.device_layers
        device_opt = torch.optim.AdamW(self.device_params, lr=self.lr, weight_decay=0.0) if cut > 0 else None
        server_opt = torch.optim.AdamW(self.server_params, lr=self.lr, weight_decay=0.0)
        up = down = 0
        module = lm.model
        was_training = module.training
        module.train()
        try:
            for step in range(self.local_steps):
                ids = batches[step % len(batches)]
                x = lm.as_ids(ids)
                labels = np.ascontiguousarray(np.asarray(ids)[:, 1:], dtype=np.uint16)  # sent with the activations
                # device: embedding and its layers
                h = lm.forward_layers(lm.embed(x), 0, cut)
                sent = h.detach().to(self.wire_dtype)
                up += _bits(sent) + labels.nbytes * 8
                # server: the rest of the model, loss, backward, step of its adapter copy
                received = sent.to(h.dtype).requires_grad_(cut > 0)
                logits = lm.head(lm.forward_layers(received, cut, lm.num_layers))
                target = torch.as_tensor(labels.astype(np.int64), device=logits.device)
                loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1))
                server_opt.zero_grad(set_to_none=True)
                loss.backward()
                server_opt.step()
                if device_opt is None:
                    continue
                # device: backward of its layers from the returned gradient, step of its adapters
                grad = received.grad.to(self.wire_dtype)
                down += _bits(grad)
                device_opt.zero_grad(set_to_none=True)
                h.backward(grad.to(h.dtype))
                device_opt.step()
        finally:
            module.train(was_training)
        up += sum(p.numel() for p in self.device_params) * 16  # the device's adapters, float16, for FedAvg
        self.last_traffic_bits = (up, down)

    def private_local_update(self, batches: list[np.ndarray], generator: torch.Generator) -> None:
        """Split DP-SGD local update (module docstring): per-part clipping of the device's and the server's adapters."""
        lm, cut = self.lm, self.device_layers
        device_tape, server_tape = LoRATape(self.device_adapters), LoRATape(self.server_adapters)
        device_opt = torch.optim.AdamW(device_tape.params, lr=self.lr, weight_decay=0.0) if cut > 0 else None
        server_opt = torch.optim.AdamW(server_tape.params, lr=self.lr, weight_decay=0.0)
        part_clip = self.clip_norm / np.sqrt(2.0) if cut > 0 else self.clip_norm
        up = down = 0
        module = lm.model
        was_training = module.training
        module.train()
        try:
            for ids in batches[: self.local_steps]:
                server_sum = [torch.zeros_like(p) for p in server_tape.params]
                device_sum = [torch.zeros_like(p) for p in device_tape.params]
                if len(ids):
                    x = lm.as_ids(ids)
                    labels = np.ascontiguousarray(np.asarray(ids)[:, 1:], dtype=np.uint16)
                    with device_tape:
                        h = lm.forward_layers(lm.embed(x), 0, cut)
                    sent = h.detach().to(self.wire_dtype)
                    up += _bits(sent) + labels.nbytes * 8
                    received = sent.to(h.dtype).requires_grad_(cut > 0)
                    with server_tape:
                        logits = lm.head(lm.forward_layers(received, cut, lm.num_layers))
                    target = torch.as_tensor(labels.astype(np.int64), device=logits.device)
                    extra = [received] if cut > 0 else []
                    grads, back = server_tape.per_sample_grads(per_sequence_loss(logits, target).sum(), extra=extra)
                    server_sum, _ = clip_per_sample(grads, part_clip)
                    if cut > 0:
                        grad = back[0].to(self.wire_dtype)
                        down += _bits(grad)
                        grads, _ = device_tape.per_sample_grads(h, grad.to(h.dtype))
                        device_sum, _ = clip_per_sample(grads, part_clip)
                self._private_step(server_opt, server_tape.params, server_sum, generator)
                if device_opt is not None:
                    self._private_step(device_opt, device_tape.params, device_sum, generator)
        finally:
            module.train(was_training)
        up += sum(p.numel() for p in self.device_params) * 16
        self.last_traffic_bits = (up, down)


def per_sequence_loss(logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
    """(n,) mean next-token cross-entropy (nats) of each sequence; ``logits`` (n, T, V), ``next_ids`` (n, T - 1)."""
    n, t = next_ids.shape
    ce = nn.functional.cross_entropy(logits[:, :-1].reshape(n * t, -1), next_ids.reshape(-1), reduction="none")
    return ce.reshape(n, t).mean(dim=1)


def _trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def _bits(t: torch.Tensor) -> int:
    return t.numel() * t.element_size() * 8


def measure_model_costs(lm, seq_len: int) -> dict:
    """Shapes and forward FLOPs of a loaded model (``LM``) for one sequence (the fields of ``model_costs.json``)."""
    layers = list(lm.model.model.layers)[: lm.num_layers]
    lora = [
        sum(m.in_features + m.out_features for name, m in layer.named_modules()
            if isinstance(m, (nn.Linear, LoRALinear)) and name.rsplit(".", 1)[-1] in LORA_TARGETS)
        for layer in layers
    ]
    return {
        "num_layers": int(lm.num_layers),
        "hidden_size": int(lm.hidden_size),
        "layer_flops": [float(f) for f in lm.layer_flops(seq_len)],
        "head_flops": float(lm.head_flops(seq_len)),
        "lora_values_per_rank": [int(v) for v in lora],
    }


def make_live(cfg: FedFTConfig, val_tokens: np.ndarray) -> LiveFederation:
    """The live backend of a scenario's ``mode`` (``lora_fedavg`` or ``split``)."""
    lo, dp = cfg.lora, cfg.privacy
    args = (cfg.model, lo.rank, lo.alpha, lo.lr, lo.local_steps, lo.batch_size, val_tokens)
    private = {"noise_multiplier": dp.noise_multiplier if dp.enabled else None, "clip_norm": dp.clip_norm}
    if cfg.mode == "split":
        return SplitLiveFederation(*args, device_layers=cfg.split.device_layers, wire_dtype=cfg.split.wire_dtype,
                                   **private)
    return LiveFederation(*args, **private)
