"""Live backend of the FedFT envs: real federated LoRA fine-tuning of a shipped model.

Every round each participating device starts from the global adapters, runs
``local_steps`` AdamW steps on batches drawn (from the env's ``np_random``) from its own
local sequences, and uploads its adapters; the server averages them weighted by data size
(FedAvg over the A and B factors, :func:`edgelam.envs.lam.average_lora_states`) and
measures the real validation loss of each topic. Devices that miss the deadline never
reach the average, so they are not trained here (their discarded update cannot change the
result). Deterministic for a seed on a fixed torch build and thread count.
"""

from __future__ import annotations

import numpy as np
import torch

from edgelam.envs.lam import attach_lora, average_lora_states, load, load_lora_state, lora_bytes, lora_state
from edgelam.envs.lam import train_lora_steps as _train

LORA_TARGETS = ("q_proj", "v_proj")


class LiveFederation:
    """Global LoRA adapters on a private copy of ``model`` and the per-topic validation batch.

    Args:
        model: shipped model name (``edge``) or a local HF causal-LM folder.
        rank: LoRA rank on the q/v projections.
        alpha: LoRA scaling numerator.
        lr: local AdamW learning rate.
        local_steps: local optimiser steps per round.
        batch_size: sequences per local step.
        val_tokens: validation sequences per topic, (G, V, T) token ids.
    """

    def __init__(
        self, model: str, rank: int, alpha: float, lr: float, local_steps: int, batch_size: int, val_tokens: np.ndarray
    ) -> None:
        self.lm = load(model, fresh=True)
        attach_lora(self.lm, rank=rank, alpha=alpha, targets=LORA_TARGETS, seed=0)
        self.initial_state = lora_state(self.lm)
        self.lr = lr
        self.local_steps = local_steps
        self.batch_size = batch_size
        self.val = torch.as_tensor(val_tokens.astype(np.int64))
        self.global_state = self.initial_state

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
        for k in idx:
            data = local_data[k]
            picks = rng.integers(len(data), size=(self.local_steps, self.batch_size))
            load_lora_state(self.lm, self.global_state)
            _train(self.lm, [data[p] for p in picks], self.local_steps, lr=self.lr)
            states.append(lora_state(self.lm))
        self.global_state = average_lora_states(states, weights[idx])
        load_lora_state(self.lm, self.global_state)
        return self.validation_loss()
