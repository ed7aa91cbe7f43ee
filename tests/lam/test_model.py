"""Loading, the shipped family's quality, and exact layer-by-layer composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgelam.envs.lam as lam
from edgelam.envs.lam import LM, SHIPPED_MODELS, crop_cache, family_card, load, load_prompts
from edgelam.envs.lam import model as model_mod

from . import require_shipped, tiny_hf

torch.set_num_threads(1)


@torch.no_grad()
def heldout_metrics(lm: LM) -> tuple[float, float]:
    """Mean next-token cross-entropy and teacher-forced top-1 accuracy over heldout_tokens.npy,
    through embed/forward_layers/head."""
    tokens = torch.from_numpy(np.load(lam.assets_dir() / "heldout_tokens.npy").astype(np.int64))
    total, hits = 0.0, 0
    for i in range(0, len(tokens), 20):
        x = tokens[i : i + 20]
        logits = lm.head(lm.forward_layers(lm.embed(x), 0, lm.num_layers))
        total += float(
            torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, lm.vocab_size), x[:, 1:].reshape(-1))
        )
        hits += int((logits[:, :-1].argmax(-1) == x[:, 1:]).sum())
    return total / len(range(0, len(tokens), 20)), hits / tokens[:, 1:].numel()


_METRICS: dict[str, tuple[float, float]] = {}


def recomputed(name: str) -> tuple[float, float]:
    if name not in _METRICS:
        _METRICS[name] = heldout_metrics(load(name))
    return _METRICS[name]


def recomputed_loss(name: str) -> float:
    return recomputed(name)[0]


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_loads_offline_and_matches_its_card(name, monkeypatch):
    require_shipped(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load(name)
    card = family_card()["models"][name]
    assert (lm.num_layers, lm.hidden_size, lm.vocab_size) == (card["layers"], card["d_model"], 4096)
    assert lm.num_params == card["parameters"]
    assert lm.param_bytes == 2 * card["parameters"]
    assert lm.tokenizer is not None and lm.tokenizer.decode(lm.tokenizer("def f(x):")["input_ids"]) == "def f(x):"
    assert next(lm.model.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in lm.model.parameters())
    loss, top1 = recomputed(name)
    assert loss == pytest.approx(card["heldout_loss_nats"], rel=0.02)
    assert top1 == pytest.approx(card["heldout_top1"], rel=0.02)
    assert load(name) is lm  # cached per name


def test_bigger_models_have_lower_heldout_loss():
    for name in SHIPPED_MODELS:
        require_shipped(name)
    losses = [recomputed_loss(n) for n in SHIPPED_MODELS]
    assert losses[2] < losses[1] < losses[0], dict(zip(SHIPPED_MODELS, losses, strict=True))


def test_the_three_tiers_differ_in_quality():
    """The family's contract (issue #22): held-out teacher-forced top-1 accuracy of cloud is at
    least 6 points above device, and edge lies strictly between, at least 1.5 points from each."""
    for name in SHIPPED_MODELS:
        require_shipped(name)
    device, edge, cloud = (recomputed(n)[1] for n in SHIPPED_MODELS)
    assert cloud - device >= 0.06, (device, edge, cloud)
    assert device + 0.015 <= edge <= cloud - 0.015, (device, edge, cloud)


def test_prompt_set_and_card():
    prompts = load_prompts()
    assert len(prompts) == 300
    assert all(len(p["reference_ids"]) == 32 and 32 <= len(p["prompt_ids"]) <= 128 for p in prompts)
    assert max(max(p["prompt_ids"] + p["reference_ids"]) for p in prompts) < 4096
    assert family_card()["tokenizer"]["vocab_size"] == 4096


def test_unknown_name_and_missing_files_raise_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="neither a shipped model"):
        load("no-such-model")
    folder = tmp_path / "m"
    tiny_hf().save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights \(expected one of model.safetensors"):
        load(folder)
    monkeypatch.setattr(model_mod, "assets_dir", lambda: tmp_path / "assets")
    (tmp_path / "assets" / "models" / "cloud").mkdir(parents=True)
    (tmp_path / "assets" / "models" / "cloud" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"cloud.*model.safetensors.*python -m edgelam.envs.lam.build_family"):
        model_mod.resolve_path("cloud")


def test_a_folder_with_only_pickle_weights_is_refused(tmp_path):
    """DESIGN.md: safetensors only; a pytorch_model.bin is never unpickled."""
    folder = tmp_path / "pickled"
    model = tiny_hf(seed=2)
    model.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the legacy format (a pickle)
    (folder / "model.safetensors").unlink()
    assert (folder / "pytorch_model.bin").exists() and not (folder / "model.safetensors").exists()
    with pytest.raises(ValueError, match=r"only pickle weights.*safetensors.*save_pretrained"):
        load(folder)
    both = tmp_path / "both"
    tiny_hf(seed=2).save_pretrained(both)
    (both / "pytorch_model.bin").write_bytes(b"not a pickle: never read")
    assert load(both, fresh=True).num_layers == tiny_hf(seed=2).config.num_hidden_layers


def test_non_llama_folder_is_rejected(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a Llama-style causal LM"):
        load(tmp_path)


def test_local_folder_loads_fresh_copies(tmp_path):
    tiny_hf(seed=3).save_pretrained(tmp_path)
    lm = load(tmp_path)
    assert lm.name == tmp_path.name and lm.tokenizer is None
    assert load(tmp_path) is lm
    other = load(tmp_path, fresh=True)
    assert other is not lm and other.model is not lm.model
    ids = [[1, 2, 3, 4]]
    with torch.no_grad():
        assert torch.equal(other.logits(ids), lm.logits(ids))


@pytest.fixture(params=["tiny-gqa-sdpa", "tiny-gqa-eager", "tiny-untied", "device"])
def lm(request) -> LM:
    if request.param == "device":
        require_shipped("device")
        return load("device")
    kwargs = {"tiny-gqa-sdpa": {"attn": "sdpa"}, "tiny-gqa-eager": {"attn": "eager"}}.get(
        request.param, {"tie": False, "kv_heads": 4}
    )
    return LM(tiny_hf(seed=1, **kwargs))


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 4096, size=(2, n)))


@torch.no_grad()
def test_embed_layers_head_equal_hf_logits(lm):
    ids = _ids(40)
    ref = lm.model(input_ids=ids).logits
    ours = lm.head(lm.forward_layers(lm.embed(ids), 0, lm.num_layers))
    assert torch.allclose(ours, ref, atol=1e-4)
    assert torch.allclose(lm.logits(ids), ref, atol=1e-4)
    assert torch.allclose(lm.logits(ids, last=3), ref[:, -3:], atol=1e-4)


@torch.no_grad()
def test_split_composition_equals_full_run(lm):
    ids = _ids(33, seed=1)
    h0 = lm.embed(ids)
    full = lm.forward_layers(h0, 0, lm.num_layers)
    for split in range(lm.num_layers + 1):
        h = lm.forward_layers(lm.forward_layers(h0, 0, split), split, lm.num_layers)
        assert torch.allclose(h, full, atol=1e-5), split


@torch.no_grad()
def test_kv_cache_decoding_equals_full_recompute(lm):
    ids = _ids(30, seed=2)
    ref = lm.model(input_ids=ids).logits
    cache = lm.new_cache()
    chunks = [lm.logits(ids[:, :11], cache)]
    for start, end in ((11, 12), (12, 17), (17, 18), (18, 30)):
        chunks.append(lm.logits(ids[:, start:end], cache))
    assert torch.allclose(torch.cat(chunks, 1), ref, atol=1e-4)
    assert lm.cached_tokens(cache) == 30
    crop_cache(cache, 17)  # roll back, then decode the same tokens again
    again = lm.logits(ids[:, 17:30], cache)
    assert torch.allclose(again, ref[:, 17:30], atol=1e-4)


@torch.no_grad()
def test_split_run_with_cache_and_explicit_positions(lm):
    ids = _ids(20, seed=3)
    ref = lm.model(input_ids=ids).logits
    split = max(1, lm.num_layers // 2)
    cache = lm.new_cache()
    h = lm.forward_layers(lm.embed(ids[:, :12]), 0, split, cache)
    first = lm.head(lm.forward_layers(h, split, lm.num_layers, cache))
    h = lm.forward_layers(lm.embed(ids[:, 12:]), 0, split, cache, positions=torch.arange(12, 20))
    second = lm.head(lm.forward_layers(h, split, lm.num_layers, cache))
    assert torch.allclose(torch.cat([first, second], 1), ref, atol=1e-4)
    wrong = lm.head(lm.forward_layers(lm.embed(ids[:, 12:]), 0, lm.num_layers, positions=torch.arange(8)))
    assert not torch.allclose(wrong, ref[:, 12:], atol=1e-3)  # positions matter


def test_bad_inputs_raise(lm):
    h = lm.embed([1, 2, 3])
    with pytest.raises(ValueError, match="layer range"):
        lm.forward_layers(h, 1, lm.num_layers + 1)
    with pytest.raises(ValueError, match="hidden states"):
        lm.forward_layers(h[0], 0, 1)
    with pytest.raises(ValueError, match="token ids"):
        lm.embed([1, 4096])


def test_layer_flops_from_real_shapes():
    lm = LM(tiny_hf(hidden=32, heads=4, kv_heads=2, layers=3))
    d, f, kv = 32, 64, 16  # kv_heads * head_dim
    linear = d * d * 2 + 2 * d * kv + 3 * d * f  # q, o, k, v, gate/up/down
    flops = lm.layer_flops(10)
    assert flops.shape == (3,)
    assert flops[0] == 2 * 10 * linear + 4 * 55 * 4 * 8
    decode = lm.layer_flops(1, context_len=99)
    assert decode[0] == 2 * linear + 4 * 100 * 4 * 8
    assert lm.head_flops(10) == 2 * 10 * d * 4096


def test_activation_and_parameter_bytes():
    lm = LM(tiny_hf(hidden=32))
    assert lm.activation_bytes(10, 16) == 10 * 32 * 2
    assert lm.activation_bytes(10, 8) == 10 * 32 + 2 * 10
    assert lm.activation_bytes(10, 4) == 10 * 16 + 2 * 10
    with pytest.raises(ValueError, match="bits"):
        lm.activation_bytes(10, 3)
    unique = sum(p.numel() for p in lm.model.parameters())  # tied head counted once
    assert lm.num_params == unique and lm.param_bytes == 2 * unique
    assert lm.layer_param_bytes(16).sum() == 2 * sum(p.numel() for p in lm.model.model.layers.parameters())


@torch.no_grad()
def test_early_exit_and_int8_views():
    lm = LM(tiny_hf(seed=4, layers=3))
    early = lm.truncated(2)
    ids = _ids(9)
    assert early.num_layers == 2 and early.model is lm.model
    assert torch.allclose(early.logits(ids), lm.head(lm.forward_layers(lm.embed(ids), 0, 2)))
    q = lm.fake_quantized(8)
    w, wq = lm.model.model.layers[0].mlp.up_proj.weight, q.model.model.layers[0].mlp.up_proj.weight
    scale = w.abs().amax(1, keepdim=True) / 127
    assert torch.all((w - wq).abs() <= scale / 2 + 1e-7) and not torch.equal(w, wq)
    assert torch.allclose(torch.round(wq / scale), wq / scale, atol=1e-4)  # on the int8 grid
    assert torch.equal(lm.model.model.layers[0].mlp.up_proj.weight, w)  # original untouched
    assert q.model.lm_head.weight is q.model.model.embed_tokens.weight  # tying preserved
    with pytest.raises(ValueError, match="early exit"):
        lm.truncated(3)


def test_prompt_set_is_parsed_afresh():
    prompts = load_prompts()
    prompts[0]["prompt_ids"].append(-1)
    assert load_prompts()[0]["prompt_ids"][-1] != -1
