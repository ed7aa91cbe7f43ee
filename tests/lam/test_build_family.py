"""build_family's training loop: resumable checkpoints and the distillation loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelam.envs.lam import build_family as bf

TINY = {"layers": 1, "d_model": 32, "ffn": 64, "lr": 1e-3}


def _data() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4096, size=3000).astype(np.uint16)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    steps = 5
    straight, _ = bf.train_model("tiny", TINY, _data(), steps, 3, lambda _m: None)
    ckpt = tmp_path / "tiny.pt"
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip_then_crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th step dies after the checkpoint of step 2 (every 2 steps)
            raise KeyboardInterrupt
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_then_crash)
    with pytest.raises(KeyboardInterrupt):
        bf.train_model("tiny", TINY, _data(), steps, 3, lambda _m: None, checkpoint=ckpt, checkpoint_every=2)
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    said: list[str] = []
    resumed, _ = bf.train_model("tiny", TINY, _data(), steps, 3, said.append, checkpoint=ckpt, checkpoint_every=2)
    assert any("resumed" in m and "step 2" in m for m in said)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint of other settings is refused, not silently continued
    with pytest.raises(SystemExit, match="another run"):
        bf.train_model("tiny", dict(TINY, lr=2e-3), _data(), steps, 3, lambda _m: None, checkpoint=ckpt)


def test_distillation_loss_is_kl_plus_cross_entropy():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 6, 11, generator=g)
    teacher = torch.randn(2, 6, 11, generator=g)
    labels = torch.randint(0, 11, (2, 6), generator=g)
    ce = torch.nn.functional.cross_entropy(student[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert bf.distillation_loss(student, teacher, labels, 0.0, 1.0) == pytest.approx(float(ce))
    assert float(bf.distillation_loss(teacher, teacher, labels, 1.0, 2.0)) == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(teacher[:, :-1] / 2.0, -1)
    kl = (p * (torch.log(p) - torch.log_softmax(student[:, :-1] / 2.0, -1))).sum(-1).mean()
    mixed = bf.distillation_loss(student, teacher, labels, 0.25, 2.0)
    assert float(mixed) == pytest.approx(float(0.25 * 4.0 * kl + 0.75 * ce), rel=1e-5)
