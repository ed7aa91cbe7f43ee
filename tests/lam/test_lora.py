"""LoRA adapters: a no-op at attachment, trainable, exact state round trips and averages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelam.envs.lam import (
    LM,
    assets_dir,
    attach_lora,
    average_lora_states,
    load,
    load_lora_state,
    lora_bytes,
    lora_state,
    train_lora_steps,
)
from edgelam.envs.lam.lora import LoRALinear

from . import shipped_available, tiny_hf

torch.set_num_threads(1)


def _model() -> LM:
    """The shipped device model (a private copy) once built, else a tiny random one."""
    return load("device", fresh=True) if shipped_available("device") else LM(tiny_hf(seed=0, hidden=64))


def _batches(n: int = 2, length: int = 64) -> list[torch.Tensor]:
    tokens = np.load(assets_dir() / "heldout_tokens.npy").astype(np.int64)
    return [torch.from_numpy(tokens[2 * i : 2 * i + 2, :length]) for i in range(n)]


@torch.no_grad()
def test_attaching_changes_nothing_and_freezes_the_base():
    lm = _model()
    ids = _batches(1)[0]
    before = lm.logits(ids)
    attach_lora(lm, rank=4, alpha=8)
    assert torch.equal(lm.logits(ids), before)  # B = 0
    trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert all(".q_proj." in n or ".v_proj." in n for n in trainable)
    assert len(trainable) == 2 * 2 * lm.num_layers
    with pytest.raises(ValueError, match="already attached"):
        attach_lora(lm, rank=4, alpha=8)


def test_training_lowers_the_loss_and_only_moves_adapters():
    lm = _model()
    base = {n: p.clone() for n, p in lm.model.named_parameters()}
    attach_lora(lm, rank=8, alpha=16, targets=("q_proj", "v_proj", "o_proj"))
    batch = _batches(1)
    losses = train_lora_steps(lm, batch, steps=12, lr=1e-2)
    assert len(losses) == 12 and all(np.isfinite(losses))
    with torch.no_grad():
        after = float(lm.model(input_ids=batch[0], labels=batch[0]).loss)
    assert after < losses[0] - 0.05
    for name, p in lm.model.named_parameters():
        if "lora_" not in name:
            original = base[name.replace(".base.", ".")]
            assert torch.equal(p, original), name
    assert not lm.model.training


def test_state_round_trip_and_averaging_are_exact():
    a, b = _model(), _model()
    attach_lora(a, rank=4, alpha=8, seed=0)
    attach_lora(b, rank=4, alpha=8, seed=1)
    train_lora_steps(a, _batches(1), steps=2, lr=1e-2)
    state = lora_state(a)
    assert not torch.equal(state[next(iter(state))], lora_state(b)[next(iter(state))])
    load_lora_state(b, state)
    ids = _batches(1)[0]
    with torch.no_grad():
        assert torch.equal(a.logits(ids), b.logits(ids))
    sb = {k: v + 1.0 for k, v in state.items()}
    assert all(torch.equal(v, state[k]) for k, v in average_lora_states([state, state]).items())
    assert all(torch.equal(v, state[k]) for k, v in average_lora_states([state, sb], [5, 0]).items())
    mixed = average_lora_states([state, sb], [1, 3])
    assert all(torch.allclose(v, state[k] + 0.75, atol=1e-6) for k, v in mixed.items())
    with pytest.raises(ValueError, match="same keys"):
        average_lora_states([state, {"x": torch.zeros(1)}])
    with pytest.raises(ValueError, match="mismatch"):
        load_lora_state(b, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="weights"):
        average_lora_states([state, sb], [1, -1])


def test_lora_bytes_and_module():
    lm = LM(tiny_hf(hidden=32, kv_heads=2))  # q: 32 -> 32, v: 32 -> 16
    attach_lora(lm, rank=4, alpha=8)
    state = lora_state(lm)
    per_layer = 4 * (32 + 32) + 4 * (32 + 16)
    assert lora_bytes(state, 16) == 2 * 2 * per_layer
    assert lora_bytes(state, 32) == 4 * 2 * per_layer
    with pytest.raises(ValueError, match="16 or 32"):
        lora_bytes(state, 8)
    q = lm.model.model.layers[0].self_attn.q_proj
    assert isinstance(q, LoRALinear) and (q.in_features, q.out_features) == (32, 32)
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        attach_lora(LM(tiny_hf()), targets=("nope",))
    with pytest.raises(ValueError, match="attach_lora first"):
        lora_state(LM(tiny_hf()))


def test_fresh_copy_keeps_the_shared_model_untouched():
    if not shipped_available("device"):
        pytest.skip("shipped model 'device' not built yet")
    shared = load("device")
    private = attach_lora(load("device", fresh=True), rank=2, alpha=4)
    assert not any(isinstance(m, LoRALinear) for m in shared.model.modules())
    assert any(isinstance(m, LoRALinear) for m in private.model.modules())
