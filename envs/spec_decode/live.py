"""Live backend of SpecDecode-v0: one real draft-then-verify round per ``step()``.

Each step runs :func:`edgelam.envs.lam.speculative_round` -- the same exact speculative
sampling round (Leviathan et al. 2023) that :func:`edgelam.envs.lam.speculative_generate`
loops over -- on the request's real context, so the env can choose a new gamma and draft
every round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class LiveSpeculation:
    """Speculative decoding of the current request with a per-round gamma and draft.

    Args:
        target: executed target model name (the acceptance profile's ``target``).
        variants: draft variants (``make_draft`` names), indexed by the action.
        temperature: sampling temperature of both models (0 = greedy).
    """

    def __init__(self, target: str, variants: Sequence[str], temperature: float) -> None:
        from edgelam.envs.lam import load, load_prompts, make_draft

        self.target = load(target)
        self.drafts = [make_draft(self.target, v) for v in variants]
        self.temperature = float(temperature)
        self.prompts = {int(p["id"]): p["prompt_ids"] for p in load_prompts()}
        self.seq: list[int] = []
        self.generated: list[int] = []

    def start(self, prompt_id: int, seed: int) -> None:
        """Begin a request on held-out prompt ``prompt_id``; ``seed`` seeds all its draws."""
        self.seq = [int(t) for t in self.prompts[prompt_id]]
        self.generated = []
        self.gen = torch.Generator()
        self.gen.manual_seed(seed)
        self.t_cache = self.target.new_cache()
        self.d_caches = [d.new_cache() for d in self.drafts]

    def round(self, variant: int, n_draft: int) -> int:
        """Run one round with ``n_draft`` tokens of draft ``variant``; return the accepted count.

        Appends ``accepted + 1`` tokens (the correction or bonus token included) to the request.
        """
        from edgelam.envs.lam import speculative_round

        accepted, new, _, _ = speculative_round(
            self.target, self.drafts[variant], self.seq, self.t_cache, self.d_caches[variant], n_draft,
            self.temperature, self.gen,
        )
        self.seq.extend(new)
        self.generated.extend(new)
        return accepted
