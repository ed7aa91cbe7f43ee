"""Live backend of SpecDecode-v0: one real draft-then-verify round per ``step()``.

The round is the loop body of :func:`edgelam.envs.lam.speculative_generate` (exact
speculative sampling, Leviathan et al. 2023), run one round at a time on the request's
real context with the runtime's public pieces (:func:`~edgelam.envs.lam.load`,
:func:`~edgelam.envs.lam.make_draft`, the KV-cached ``LM.logits``), so the env can choose a
new gamma and draft every round. ``envs/lam`` is not modified.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.double() / temperature, dim=-1)


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

    def _pick(self, probs_or_logits: torch.Tensor, greedy: bool) -> int:
        if greedy:
            return int(probs_or_logits.argmax())
        return int(torch.multinomial(probs_or_logits, 1, generator=self.gen))

    @torch.no_grad()
    def round(self, variant: int, n_draft: int) -> int:
        """Run one round with ``n_draft`` tokens of draft ``variant``; return the accepted count.

        Appends ``accepted + 1`` tokens (the correction or bonus token included) to the request.
        """
        greedy = self.temperature == 0
        temp = self.temperature
        draft, d_cache, t_cache = self.drafts[variant], self.d_caches[variant], self.t_cache
        seq = self.seq
        drafted: list[int] = []
        q_dists: list[torch.Tensor] = []
        for _ in range(n_draft):
            known = seq + drafted
            logits = draft.logits(known[draft.cached_tokens(d_cache) :], d_cache, last=1)[0, -1]
            if greedy:
                drafted.append(int(logits.argmax()))
            else:
                q = _probs(logits, temp)
                q_dists.append(q)
                drafted.append(self._pick(q, False))
        known = seq + drafted
        p_logits = self.target.logits(known[self.target.cached_tokens(t_cache) :], t_cache, last=n_draft + 1)[0]
        accepted = 0
        new: list[int] = []
        for i, x in enumerate(drafted):
            if greedy:
                best = int(p_logits[i].argmax())
                if x != best:
                    new.append(best)
                    break
            else:
                p, q = _probs(p_logits[i], temp), q_dists[i]
                if float(torch.rand((), generator=self.gen, dtype=torch.float64)) * float(q[x]) >= float(p[x]):
                    residual = (p - q).clamp_min(0.0)
                    total = residual.sum()
                    new.append(self._pick(residual / total if total > 0 else p, False))
                    break
            accepted += 1
            new.append(x)
        else:
            last = p_logits[n_draft]
            new.append(self._pick(last if greedy else _probs(last, temp), greedy))
        t_cache.crop(len(seq) + accepted)
        d_cache.crop(min(draft.cached_tokens(d_cache), len(seq) + accepted))
        seq.extend(new)
        self.generated.extend(new)
        return accepted
