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
        variants: draft variants (``make_draft`` names, or models of the profile), indexed by the action.
        temperature: sampling temperature of both models (0 = greedy).
        profile_dir: the profile the replay backend reads (``None``: the shipped one); its models
            are loaded from the folders its manifest records, its prompts as the target was fed them.
    """

    def __init__(self, target: str, variants: Sequence[str], temperature: float,
                 profile_dir: str | None = None) -> None:
        from edgelam.envs.lam import load_profiled, make_draft
        from edgelam.envs.lam.model import profiled_source
        from edgelam.envs.lam.prompts import profile_tokens
        from edgelam.envs.lam.replay import profile_models

        models = profile_models(profile_dir)  # drafts that are models of the profile; the others are derived
        self.target = load_profiled(target, profile_dir)
        self.drafts = [make_draft(self.target, str(profiled_source(v, profile_dir)) if v in models else v)
                       for v in variants]
        self.temperature = float(temperature)
        self.prompts = {int(p["id"]): p["prompt_ids"] for p in profile_tokens(self.target, profile_dir)}
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
