"""Tests of the real-model runtime ``edgelam.envs.lam``; shared helpers below."""

from __future__ import annotations

import copy

import pytest
import torch

from edgelam.envs.lam import SHIPPED_MODELS, assets_dir


def shipped_available(name: str) -> bool:
    """Whether the shipped model ``name`` has been built."""
    return (assets_dir() / "models" / name / "model.safetensors").exists()


def require_shipped(name: str) -> None:
    """Skip (naming the rebuild command) when a shipped model has not been built yet."""
    if not shipped_available(name):
        pytest.skip(f"shipped model {name!r} not built yet (python -m edgelam.envs.lam.build_family)")


def largest_shipped() -> str:
    """The largest shipped model that exists (cloud once the family is complete)."""
    built = [n for n in SHIPPED_MODELS if shipped_available(n)]
    if not built:
        pytest.skip("no shipped model built yet (python -m edgelam.envs.lam.build_family)")
    return built[-1]


def tiny_hf(
    seed: int = 0,
    vocab: int = 4096,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    init: float = 0.02,
    attn: str = "sdpa",
    tie: bool = True,
):
    """A randomly initialised ``LlamaForCausalLM`` (eval mode, frozen), GQA by default."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        initializer_range=init,
        attn_implementation=attn,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.requires_grad_(False)
    return model


def tiny_lm(seed: int = 0, **kwargs):
    """:class:`LM` over :func:`tiny_hf`."""
    from edgelam.envs.lam import LM

    return LM(tiny_hf(seed, **kwargs), None, f"tiny{seed}")


def perturbed(lm, scale: float, seed: int):
    """Copy of ``lm`` with every weight multiplied by ``1 + scale * N(0, 1)`` noise."""
    from edgelam.envs.lam import LM

    model = copy.deepcopy(lm.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=gen))
    return LM(model, None, f"{lm.name}-perturbed")
