"""Exact speculative sampling (Leviathan et al., ICML 2023; Chen et al., 2023).

Each round the draft q proposes ``gamma`` tokens autoregressively; the target p scores all
``gamma + 1`` positions in one pass; draft token ``x_i`` is accepted with probability
``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection one token is drawn from the residual
``norm(max(0, p_i - q_i))``, and if all are accepted a bonus token is drawn from
``p_{gamma+1}``. The output distribution equals the target's exactly. Both models keep a
``transformers.DynamicCache``, cropped back to the accepted prefix after each round
(:func:`~.model.crop_cache`).

``temperature`` scales both models' logits (``softmax(logits / T)``); ``temperature = 0``
is greedy: the draft proposes its argmax and a token is accepted iff it equals the target's
argmax, so the output equals greedy target decoding token for token. ``gamma = 0`` is plain
target decoding.

Draft and target must mean the same tokens by the same ids (:func:`shares_vocabulary`); where one
tokenizer's embeddings are padded to different sizes, rounds draft and verify over the ids both
models hold.

Draft variants (:func:`make_draft`): an independent small model by name (``device``,
``edge`` or any model folder), ``early_exit:<k>`` (the target's first ``k`` layers + its final
norm and head) and ``int8`` (the target with per-channel int8 fake-quantised weights).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .model import LM, crop_cache, load

if TYPE_CHECKING:
    from transformers import DynamicCache

DRAFT_VARIANTS = ("device", "edge", "early_exit:<k>", "int8")


@dataclass(frozen=True)
class RoundStats:
    """One draft-then-verify round.

    Attributes:
        proposed: draft tokens proposed (``gamma``, fewer near ``max_new_tokens``).
        accepted: draft tokens accepted.
        emitted: tokens appended to the output (``accepted + 1``, fewer when cut at the end).
        draft_time_s: wall-clock seconds of the draft's ``proposed`` forward passes.
        verify_time_s: wall-clock seconds of the target's verification pass.
    """

    proposed: int
    accepted: int
    emitted: int
    draft_time_s: float
    verify_time_s: float


def make_draft(target: LM, variant: str) -> LM:
    """Draft model for ``target``: ``device``/``edge``/any model name or folder,
    ``early_exit:<k>`` or ``int8`` (see the module docstring). Derived drafts are cached on
    the target.
    """
    if variant.startswith("early_exit:"):
        try:
            k = int(variant.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"early-exit draft must be 'early_exit:<k>', got {variant!r}") from None
        return target.truncated(k)
    if variant == "int8":
        return target.fake_quantized(8)
    try:
        draft = load(variant)
    except FileNotFoundError as exc:
        raise ValueError(f"unknown draft variant {variant!r}; use one of {DRAFT_VARIANTS} ({exc})") from exc
    if not shares_vocabulary(target, draft):
        raise ValueError(
            f"draft {variant!r} has vocab {draft.vocab_size}, target {target.vocab_size}: must share one"
        )
    return draft


def shares_vocabulary(target: LM, draft: LM) -> bool:
    """Whether the two models' token ids mean the same tokens: equal embedding sizes, or one
    tokenizer whose embeddings are padded to different sizes (e.g. Qwen2.5-0.5B's 151,936 rows and
    Qwen2.5-7B's 152,064), compared over the ids both hold. Speculative rounds then draft and
    verify over those shared ids (:func:`speculative_round`)."""
    if draft.vocab_size == target.vocab_size:
        return True
    if draft.tokenizer is None or target.tokenizer is None:
        return False
    from .prompts import tokenizer_sha256

    shared = min(draft.vocab_size, target.vocab_size)
    return tokenizer_sha256(draft.tokenizer, shared) == tokenizer_sha256(target.tokenizer, shared)


def _check(max_new_tokens: int, temperature: float, gamma: int = 0) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def _generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed()))
    return gen


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sampling distribution (float64) of logits ``(..., V)`` at a temperature > 0."""
    return torch.softmax(logits.double() / temperature, dim=-1)


def _sample(probs: torch.Tensor, gen: torch.Generator) -> int:
    """One draw from ``probs`` by the CPU generator ``gen`` (CUDA probabilities are copied to the CPU first)."""
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


def _accepts(p_x: float, q_x: float, gen: torch.Generator) -> bool:
    """Accept a draft token ``x`` with probability ``min(1, p(x) / q(x))`` (``q(x) > 0``)."""
    return float(torch.rand((), generator=gen, dtype=torch.float64)) * q_x < p_x


def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Distribution to resample from after a rejection: ``norm(max(0, p - q))``."""
    res = (p - q).clamp_min(0.0)
    total = res.sum()
    return res / total if total > 0 else p


def acceptance_probability(
    p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-position acceptance probability ``beta = sum_x min(p(x), q(x))`` of the
    temperature-scaled distributions, shape ``p_logits.shape[:-1]``; at temperature 0,
    1.0 where the argmaxes agree and 0.0 elsewhere.
    """
    if temperature == 0:
        return (p_logits.argmax(-1) == q_logits.argmax(-1)).double()
    return torch.minimum(_probs(p_logits, temperature), _probs(q_logits, temperature)).sum(-1)


@torch.no_grad()
def target_sample(
    target: LM,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int | None = None,
    eos_token_id: int | None = None,
) -> list[int]:
    """Plain autoregressive sampling from ``target`` (greedy at ``temperature = 0``), KV-cached."""
    _check(max_new_tokens, temperature)
    gen = _generator(seed)
    cache = target.new_cache()
    out: list[int] = []
    feed = [int(t) for t in prompt_ids]
    while len(out) < max_new_tokens:
        logits = target.logits(feed, cache, last=1)[0, -1]
        token = int(logits.argmax()) if temperature == 0 else _sample(_probs(logits, temperature), gen)
        out.append(token)
        feed = [token]
        if token == eos_token_id:
            break
    return out


@torch.no_grad()
def speculative_round(
    target: LM,
    draft: LM,
    seq: Sequence[int],
    t_cache: DynamicCache,
    d_cache: DynamicCache,
    n_draft: int,
    temperature: float,
    gen: torch.Generator,
) -> tuple[int, list[int], float, float]:
    """One draft-then-verify round of exact speculative sampling (Leviathan et al. 2023, Algorithm 1).

    The draft proposes ``n_draft`` tokens after ``seq`` (its KV cache ``d_cache``), the target
    scores all ``n_draft + 1`` positions in one pass (``t_cache``); draft token ``x`` is kept with
    probability ``min(1, p(x) / q(x))``, the first rejection is replaced by a sample of
    ``norm(max(0, p - q))``, and if all are kept a bonus token is drawn from the target.
    Greedy at ``temperature = 0``. Both caches are cropped to ``len(seq) + accepted``;
    ``seq`` itself is not changed (the caller appends ``new``).

    Returns:
        ``(accepted, new, draft_s, verify_s)``: accepted draft tokens, the ``accepted + 1``
        tokens the round emits, and the wall-clock seconds of drafting and verification.
    """
    greedy = temperature == 0
    shared = min(draft.vocab_size, target.vocab_size)  # the ids both hold (see shares_vocabulary)
    t0 = time.perf_counter()
    drafted: list[int] = []
    q_dists: list[torch.Tensor] = []
    for _ in range(n_draft):
        known = [*seq, *drafted]
        logits = draft.logits(known[draft.cached_tokens(d_cache) :], d_cache, last=1)[0, -1, :shared]
        if greedy:
            drafted.append(int(logits.argmax()))
        else:
            q = _probs(logits, temperature)
            q_dists.append(q)
            drafted.append(_sample(q, gen))
    t1 = time.perf_counter()
    known = [*seq, *drafted]
    p_logits = target.logits(known[target.cached_tokens(t_cache) :], t_cache, last=n_draft + 1)[0, :, :shared]
    t2 = time.perf_counter()
    accepted = 0
    new: list[int] = []
    for i, x in enumerate(drafted):
        if greedy:
            best = int(p_logits[i].argmax())
            if x != best:
                new.append(best)
                break
        else:
            p = _probs(p_logits[i], temperature)
            q = q_dists[i]
            if not _accepts(float(p[x]), float(q[x]), gen):
                new.append(_sample(_residual(p, q), gen))
                break
        accepted += 1
        new.append(x)
    else:
        last = p_logits[n_draft]
        new.append(int(last.argmax()) if greedy else _sample(_probs(last, temperature), gen))
    crop_cache(t_cache, len(seq) + accepted)
    crop_cache(d_cache, len(seq) + accepted)
    return accepted, new, t1 - t0, t2 - t1


@torch.no_grad()
def speculative_generate(
    target: LM,
    draft: LM,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    gamma: int,
    temperature: float = 1.0,
    seed: int | None = None,
    eos_token_id: int | None = None,
) -> tuple[list[int], list[RoundStats]]:
    """Generate ``max_new_tokens`` tokens from ``target`` by speculative sampling with ``draft``.

    Args:
        target, draft: models over the same vocabulary (see :func:`make_draft`).
        prompt_ids: non-empty prompt token ids.
        max_new_tokens: tokens to generate (rounds near the end propose fewer tokens).
        gamma: draft tokens per round; 0 = plain target decoding.
        temperature: sampling temperature of both models; 0 = greedy.
        seed: seeds the one ``torch.Generator`` all draws come from.
        eos_token_id: stop after emitting this token (``None``: never stop early).

    Returns:
        ``(token_ids, rounds)``: the generated ids (without the prompt) and per-round stats.
    """
    _check(max_new_tokens, temperature, gamma)
    if not shares_vocabulary(target, draft):
        raise ValueError(f"draft vocab {draft.vocab_size} != target vocab {target.vocab_size}")
    seq = [int(t) for t in prompt_ids]
    if not seq:
        raise ValueError("prompt_ids must be non-empty")
    gen = _generator(seed)
    t_cache, d_cache = target.new_cache(), draft.new_cache()
    out: list[int] = []
    rounds: list[RoundStats] = []
    while len(out) < max_new_tokens and not (out and out[-1] == eos_token_id):
        n_draft = min(gamma, max_new_tokens - len(out) - 1)
        accepted, new, draft_s, verify_s = speculative_round(target, draft, seq, t_cache, d_cache, n_draft,
                                                             temperature, gen)
        if eos_token_id is not None and eos_token_id in new:
            new = new[: new.index(eos_token_id) + 1]
        new = new[: max_new_tokens - len(out)]
        seq.extend(new)
        out.extend(new)
        rounds.append(RoundStats(n_draft, accepted, len(new), draft_s, verify_s))
    return out, rounds
