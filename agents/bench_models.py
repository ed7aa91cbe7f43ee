"""Forward time per decoded token of each shipped model, through edgelam's wrapper and raw torch.

``edgelam bench --models`` decodes ``tokens`` tokens after a ``context``-token prompt
with a KV cache, one token per forward pass, twice per model: through
:class:`edgelam.envs.lam.LM` (``logits(ids, cache)``) and through the Hugging Face
module itself (``model(input_ids, cache=DynamicCache(), use_cache=True)``; ``past_key_values``
on transformers before 5.24), and reports the median seconds per token of each and their
ratio (the wrapper's overhead).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch


@torch.no_grad()
def _decode_wrapper(lm, prompt: torch.Tensor, tokens: int) -> float:
    cache = lm.new_cache()
    logits = lm.logits(prompt, cache=cache, last=1)
    t0 = time.perf_counter()
    for _ in range(tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        logits = lm.logits(nxt, cache=cache)
    return (time.perf_counter() - t0) / tokens


@torch.no_grad()
def _decode_raw(model, prompt: torch.Tensor, tokens: int) -> float:
    from transformers import DynamicCache

    from edgelam.envs.lam.model import cache_argument

    cache = {cache_argument(model): DynamicCache()}  # filled in place by every forward
    logits = model(input_ids=prompt, use_cache=True, **cache).logits
    t0 = time.perf_counter()
    for _ in range(tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        logits = model(input_ids=nxt, use_cache=True, **cache).logits
    return (time.perf_counter() - t0) / tokens


def bench_models(
    names: Sequence[str] = ("device", "edge", "cloud"), tokens: int = 32, context: int = 64, repeats: int = 5
) -> list[dict[str, Any]]:
    """Median seconds per decoded token, wrapper vs raw, for each model (see the module docstring)."""
    from edgelam.envs.lam import load

    rows = []
    gen = torch.Generator().manual_seed(0)
    for name in names:
        lm = load(name)
        prompt = torch.randint(0, lm.vocab_size, (1, context), generator=gen)
        wrapper, raw = [], []
        for _ in range(repeats):  # interleaved, so load on the machine hits both alike
            wrapper.append(_decode_wrapper(lm, prompt, tokens))
            raw.append(_decode_raw(lm.model, prompt, tokens))
        w, r = statistics.median(wrapper), statistics.median(raw)
        rows.append(
            {
                "model": name,
                "layers": lm.num_layers,
                "parameters": lm.num_params,
                "wrapper_s_per_token": w,
                "raw_s_per_token": r,
                "overhead": w / r,
                "torch_threads": torch.get_num_threads(),
            }
        )
    return rows


def bench_speculative(
    target: str = "cloud",
    draft: str = "device",
    gammas: Sequence[int] = range(9),
    prompts: int = 4,
    tokens: int = 32,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Wall-clock tokens/s of live speculative decoding per gamma beside Leviathan et al.'s prediction.

    gamma = 0 is plain target sampling (``target_sample``). For gamma >= 1 the
    prediction is ``tokens/s(gamma = 0) * expected_speedup(alpha, gamma, c)`` with
    alpha the draft's measured mean acceptance at this temperature (from the shipped
    acceptance profile) and c = draft / target seconds per decoded token, measured
    here with the KV-cached decode of :func:`bench_models`.
    """
    import numpy as np

    from edgelam.baselines.spec_decode import expected_speedup
    from edgelam.envs.lam import load, load_profile, load_prompts, make_draft, speculative_generate, target_sample

    tgt = load(target)
    drf = make_draft(tgt, draft)
    prof = load_profile("acceptance")
    v = [str(x) for x in prof["variants"]].index(draft)
    t = [float(x) for x in prof["temperatures"]].index(temperature)
    alpha = float(np.asarray(prof["mean_acceptance"])[v, t])
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, tgt.vocab_size, (1, 64), generator=gen)
    c = _decode_wrapper(drf, prompt, tokens) / _decode_wrapper(tgt, prompt, tokens)
    records = load_prompts()[:prompts]
    rows = []
    base = None
    for gamma in gammas:
        start = time.perf_counter()
        emitted = 0
        for i, rec in enumerate(records):
            if gamma == 0:
                emitted += len(target_sample(tgt, rec["prompt_ids"], tokens, temperature, seed=i))
            else:
                out, _ = speculative_generate(tgt, drf, rec["prompt_ids"], tokens, gamma, temperature, seed=i)
                emitted += len(out)
        rate = emitted / (time.perf_counter() - start)
        base = rate if gamma == 0 else base
        predicted = rate if gamma == 0 else base * expected_speedup(alpha, gamma, c)
        rows.append({"gamma": gamma, "tokens_per_s": rate, "predicted_tokens_per_s": predicted})
    return {"target": target, "draft": draft, "temperature": temperature, "alpha": alpha, "c": c, "rows": rows}
