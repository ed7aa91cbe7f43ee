"""Hardware catalog, model cards and roofline pricing against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.hardware import (
    active_energy_j,
    compute_precision,
    fits_in_memory,
    get_hardware,
    idle_energy_j,
    layer_flops_bytes,
    lm_head_cost,
    load_hardware_catalog,
    memory_bound,
    model_cost,
    roofline_time_s,
    transformer_layer_cost,
)
from edgelam.envs.core.model_cards import ModelCard, get_model_card, load_model_cards

# -- catalog -------------------------------------------------------------------------------------------


def test_catalog_has_every_class_with_datasheet_values():
    cat = load_hardware_catalog()
    kinds = {hw.kind for hw in cat.values()}
    assert kinds == {"device", "edge", "cloud"}
    for name in ("phone_npu", "jetson_agx_orin", "edge_gpu_l4", "edge_gpu_a10", "cloud_a100", "cloud_h100"):
        assert name in cat and cat[name].name == name and cat[name].source
    a100 = cat["cloud_a100"]
    assert (a100.peak_flops_fp16, a100.peak_flops_fp32, a100.peak_flops_int8) == (312e12, 19.5e12, 624e12)
    assert (a100.memory_bandwidth_bytes_per_s, a100.power_active_w, a100.memory_bytes) == (2.039e12, 400.0, 80e9)
    l4 = cat["edge_gpu_l4"]
    assert (l4.peak_flops_fp16, l4.memory_bandwidth_bytes_per_s, l4.power_active_w) == (121e12, 300e9, 72.0)
    assert cat["jetson_agx_orin"].memory_bandwidth_bytes_per_s == 204.8e9
    assert all(hw.power_idle_w <= hw.power_active_w for hw in cat.values())
    cat["cloud_a100"] = None  # the returned dict is a copy: the cache stays intact
    assert load_hardware_catalog()["cloud_a100"] == a100


def test_unknown_hardware_lists_names():
    with pytest.raises(ValueError, match=r"unknown hardware 'tpu_v5'.*phone_npu.*cloud_h100"):
        get_hardware("tpu_v5")


GOOD_ENTRY = """
  kind: edge
  peak_flops_fp32: 1.0e+12
  peak_flops_fp16: 2.0e+12
  peak_flops_int8: 4.0e+12
  memory_bandwidth_bytes_per_s: 1.0e+11
  memory_bytes: 8.0e+9
  power_active_w: 10.0
  power_idle_w: 1.0
  source: test datasheet
"""


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ("  peak_tflops: 3\n", r"unknown config key 'box\.peak_tflops'"),
        ("  kind: fog\n", r"box\.kind: 'fog' is not allowed"),
        ("  memory_efficiency: 1.5\n", r"box\.memory_efficiency: 1\.5 is out of range"),
        ("  memory_efficiency: 0.0\n", r"box\.memory_efficiency: 0\.0 is out of range"),
        ("  power_active_w: 100000.5\n", r"box\.power_active_w: 100000\.5 is out of range"),
        ("  power_idle_w: 20.0\n", r"box\.power_idle_w: 20\.0 W exceeds power_active_w"),
        ("  source: ''\n", r"box\.source: every hardware entry must cite"),
        ("  name: other\n", r"unknown config key 'box\.name'"),
    ],
)
def test_bad_hardware_yaml_names_the_key(tmp_path, extra, pattern):
    # a later duplicate key overrides the good value in YAML, so each case replaces one field
    lines = [ln for ln in GOOD_ENTRY.splitlines() if ln and not ln.startswith(extra.split(":")[0])]
    path = tmp_path / "hw.yaml"
    path.write_text("box:\n" + "\n".join(lines) + "\n" + extra)
    with pytest.raises(ValueError, match=pattern):
        load_hardware_catalog(path)


def test_good_tmp_catalog_and_bad_yaml(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("box:" + GOOD_ENTRY)
    hw = load_hardware_catalog(path)["box"]
    assert hw.compute_efficiency == 0.5 and hw.memory_efficiency == 0.85
    path.write_text("box:" + GOOD_ENTRY + "  memory_efficiency: 0.5\n")
    assert load_hardware_catalog(path)["box"].memory_efficiency == 0.5
    path.write_text("box: [1, 2\n")
    with pytest.raises(ValueError, match="bad YAML"):
        load_hardware_catalog(path)


# -- model cards ---------------------------------------------------------------------------------------


def test_cards_load_and_params_match_reported():
    cards = load_model_cards()
    assert set(cards) >= {"Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B", "Llama-2-7B", "Qwen2.5-0.5B", "Qwen2.5-7B"}
    for card in cards.values():
        assert card.total_params == pytest.approx(card.params_reported, rel=0.01), card.name
    # Llama-3.1-8B by hand: per layer 2*4096*4096 + 2*4096*1024 + 3*4096*14336 + 2*4096 = 218,112,000;
    # 32 layers + 2 * 128256 * 4096 + 4096 = 8,030,261,248
    llama8 = cards["Llama-3.1-8B"]
    assert llama8.params_per_layer == 218_112_000 and llama8.total_params == 8_030_261_248
    assert llama8.kv_bytes_per_token_per_layer(16) == 2 * 8 * 128 * 2
    assert cards["Llama-2-7B"].activation_bytes(1, 16) == 8192  # 4096 x 2 B = 8 KiB per token
    assert cards["Llama-2-7B"].activation_bytes(np.array([1, 10]), 8).tolist() == [4096, 40960]


def test_lora_params_are_what_peft_reports():
    """PEFT prints "trainable params: 24,313,856" for Llama-3.2-3B with r = 16 on every linear layer
    of the decoder (q, k, v, o, gate, up, down): 28 layers x 16 x 54,272 (in + out summed)."""
    l3 = get_model_card("Llama-3.2-3B")
    assert l3.lora_params(16) == 24_313_856
    assert l3.lora_params(8) == 12_156_928
    # attention only, q and v (the original LoRA setting): 28 x 8 x ((3072 + 3072) + (3072 + 1024))
    assert l3.lora_params(8, ("q_proj", "v_proj")) == 28 * 8 * 10_240
    with pytest.raises(ValueError, match="rank"):
        l3.lora_params(0)
    with pytest.raises(ValueError, match="targets"):
        l3.lora_params(8, ("lm_head",))


def test_flops_per_token_are_two_per_weight_plus_attention():
    cards = load_model_cards()
    l2 = cards["Llama-2-7B"]
    total = l2.num_layers * l2.flops_per_token(1) + l2.lm_head_flops_per_token
    assert total == pytest.approx(2 * l2.total_params, rel=0.05)
    # untied Llama-3.1-8B: the 0.53 B input-embedding lookup costs no FLOPs
    l3 = cards["Llama-3.1-8B"]
    total = l3.num_layers * l3.flops_per_token(1) + l3.lm_head_flops_per_token
    assert total == pytest.approx(2 * (l3.total_params - l3.embedding_params), rel=0.05)
    # attention: 4 n H hd per layer and token (PaLM convention)
    assert l3.flops_per_token(1000) - l3.flops_per_token(0) == 4 * 1000 * 32 * 128
    np.testing.assert_allclose(l3.flops_per_token(np.array([0, 10])), [2 * 218_112_000, 2 * 218_112_000 + 40 * 4096])


LLAMA_32_1B_HF = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "tie_word_embeddings": True,
    "vocab_size": 128256,
    "attention_bias": False,
}


def test_card_from_hf_config_matches_yaml_card():
    card = ModelCard.from_hf_config(LLAMA_32_1B_HF, "Llama-3.2-1B")
    yaml_card = get_model_card("Llama-3.2-1B")
    assert card.total_params == yaml_card.total_params
    assert card.flops_per_token(64) == yaml_card.flops_per_token(64)
    qwen = ModelCard.from_hf_config(
        {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
         "num_hidden_layers": 24, "num_key_value_heads": 2, "tie_word_embeddings": True, "vocab_size": 151936},
        "q",
    )  # fmt: skip
    assert qwen.qkv_bias and qwen.total_params == get_model_card("Qwen2.5-0.5B").total_params
    # Llama's and Qwen2's configs default to an untied head (transformers' LlamaConfig, Qwen2Config)
    untied = ModelCard.from_hf_config({k: v for k, v in LLAMA_32_1B_HF.items() if k != "tie_word_embeddings"}, "u")
    assert not untied.tied_embeddings
    assert untied.total_params == yaml_card.total_params + yaml_card.lm_head_params
    # the activation handed over at a split is 16-bit unless said otherwise: d x 2 bytes per token
    assert yaml_card.activation_bytes(3) == 3 * 2048 * 2


def test_card_from_transformers_config_object():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(**{k: v for k, v in LLAMA_32_1B_HF.items() if k != "architectures"})
    card = ModelCard.from_hf_config(cfg, "x")
    assert card.total_params == get_model_card("Llama-3.2-1B").total_params


def test_card_errors(tmp_path):
    with pytest.raises(ValueError, match="lacks hidden_size"):
        ModelCard.from_hf_config({k: v for k, v in LLAMA_32_1B_HF.items() if k != "hidden_size"}, "x")
    with pytest.raises(ValueError, match=r"unknown model card 'GPT-5'.*Llama-2-7B"):
        get_model_card("GPT-5")
    path = tmp_path / "cards.yaml"
    path.write_text("m:\n  num_layers: 2\n  d_model: 8\n  num_heads: 2\n  num_kv_heads: 2\n  ffn_dim: 16\n"
                    "  vocab_size: 10\n  layers: 3\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown config key 'm\.layers'"):
        load_model_cards(path)
    path.write_text("m:\n  num_layers: 2\n  d_model: 8\n  num_heads: 2\n  num_kv_heads: 3\n  ffn_dim: 16\n"
                    "  vocab_size: 10\n")  # fmt: skip
    with pytest.raises(ValueError, match="num_kv_heads"):
        load_model_cards(path)
    # the smallest shapes are allowed, a reported size below one parameter is not
    path.write_text("m:\n  num_layers: 1\n  d_model: 1\n  num_heads: 1\n  num_kv_heads: 1\n  ffn_dim: 1\n"
                    "  vocab_size: 1\n")  # fmt: skip
    assert load_model_cards(path)["m"].total_params == 1 * (2 * 1 + 2 * 1 + 3 * 1 + 2) + 1 + 1 + 1
    path.write_text("m:\n  num_layers: 2\n  d_model: 8\n  num_heads: 2\n  num_kv_heads: 2\n  ffn_dim: 16\n"
                    "  vocab_size: 10\n  params_reported: 0.5\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"m\.params_reported: 0\.5 is out of range"):
        load_model_cards(path)


# -- roofline ---------------------------------------------------------------------------------------------


def test_roofline_is_max_of_compute_and_memory_terms():
    hw = get_hardware("cloud_a100")
    # compute term 312e12 * 0.5 = 1.56e14 FLOP/s; memory term 2.039e12 * 0.85 = 1.73315e12 B/s
    t = roofline_time_s(hw, np.array([1.56e14, 0.0]), np.array([0.0, 1.73315e12]), "fp16")
    np.testing.assert_allclose(t, [1.0, 1.0])
    assert roofline_time_s(hw, 1.56e14, 1.73315e12 * 2) == pytest.approx(2.0)
    assert roofline_time_s(hw, 624e12 * 0.5, 0.0, "int8") == pytest.approx(1.0)
    assert memory_bound(hw, 1.0, 1.0) and not memory_bound(hw, 1e6, 1.0)
    assert hw.ridge_point("fp16") == pytest.approx(1.56e14 / 1.73315e12)
    assert active_energy_j(hw, 2.0) == 800.0 and idle_energy_j(hw, 2.0) == 100.0
    assert fits_in_memory(hw, 79e9) and not fits_in_memory(hw, 81e9)
    with pytest.raises(ValueError, match="precision"):
        roofline_time_s(hw, 1.0, 1.0, "fp8")
    with pytest.raises(ValueError, match="flops"):
        roofline_time_s(hw, -1.0, 1.0)


def test_compute_precision():
    assert compute_precision(16, 16) == "fp16"
    assert compute_precision(4, 16) == "fp16"  # weight-only quantisation computes in fp16
    assert compute_precision(8, 8) == "int8"
    assert compute_precision(16, 32) == "fp32"
    with pytest.raises(ValueError, match="weight_bits"):
        compute_precision(5, 16)


def test_decode_of_7b_on_a100_is_memory_bound_at_weight_bandwidth():
    hw, card = get_hardware("cloud_a100"), get_model_card("Llama-2-7B")
    flops, moved = layer_flops_bytes(card, "decode", 1, 128)
    assert memory_bound(hw, flops, moved)
    per_token_s, energy = model_cost(hw, card, "decode", 1, 128, include_head=True)
    weights_s = card.total_weight_bytes(16) / hw.memory_bandwidth_bytes_per_s  # 13.48 GB / 2.039 TB/s = 6.6 ms
    assert per_token_s == pytest.approx(weights_s, rel=0.20)
    # exactly: (weights + KV of 128 keys + hidden in/out) / (bandwidth * 0.85), plus the head
    layer_bytes = card.weight_bytes_per_layer(16) + 128 * card.kv_bytes_per_token_per_layer(16) + 2 * 4096 * 2
    head_s, _ = lm_head_cost(hw, card)
    expected = 32 * layer_bytes / (2.039e12 * 0.85) + head_s
    assert per_token_s == pytest.approx(expected, rel=1e-12)
    assert energy == pytest.approx(400.0 * per_token_s)
    # the head alone: its energy is the active power over its own time
    head_7_s, head_7_j = lm_head_cost(hw, card, 7)
    assert head_7_s > head_s and head_7_j == pytest.approx(400.0 * head_7_s, rel=1e-12)


def test_prefill_of_long_prompt_is_compute_bound():
    hw, card = get_hardware("cloud_a100"), get_model_card("Llama-2-7B")
    flops, moved = layer_flops_bytes(card, "prefill", 2048, 2048)
    assert not memory_bound(hw, flops, moved)
    # causal prefill: token i attends to i keys, mean (2048 + 1) / 2
    assert flops == pytest.approx(2048 * (2 * card.params_per_layer + 4 * 1024.5 * 4096))
    t, _ = transformer_layer_cost(hw, card, "prefill", 2048, 2048)
    assert t == pytest.approx(flops / (312e12 * 0.5))
    # per token, prefill is far cheaper than decode (weights are read once for all tokens)
    t_dec, _ = transformer_layer_cost(hw, card, "decode", 1, 2048)
    assert t / 2048 < t_dec / 10


def test_layer_cost_vectorises_over_tokens_and_split_points():
    hw, card = get_hardware("phone_npu"), get_model_card("Qwen2.5-0.5B")
    tokens = np.array([1, 16, 256])
    t_vec, e_vec = transformer_layer_cost(hw, card, "prefill", tokens, tokens, 8)
    for i, n in enumerate(tokens):
        t_one, e_one = transformer_layer_cost(hw, card, "prefill", int(n), int(n), 8)
        assert t_vec[i] == pytest.approx(t_one) and e_vec[i] == pytest.approx(e_one)
    # decode of t tokens = t sequential steps at contexts C - t + 1 .. C
    t_many, _ = transformer_layer_cost(hw, card, "decode", 4, 100)
    f_steps, b_steps = layer_flops_bytes(card, "decode", np.ones(4), np.arange(97, 101))
    assert t_many == pytest.approx(roofline_time_s(hw, f_steps.sum(), b_steps.sum()))
    # split: device layers [0, l) + edge layers [l, L) = whole model on each side's hardware
    L = card.num_layers
    dev_s, _ = model_cost(hw, card, "decode", 1, 64, 0, np.arange(L + 1))
    assert dev_s.shape == (L + 1,) and dev_s[0] == 0.0
    np.testing.assert_allclose(np.diff(dev_s), dev_s[1])
    edge = get_hardware("edge_gpu_l4")
    edge_s, _ = model_cost(edge, card, "decode", 1, 64, np.arange(L + 1), L)
    assert edge_s[-1] == 0.0 and edge_s[0] == pytest.approx(model_cost(edge, card, "decode", 1, 64)[0])
    with pytest.raises(ValueError, match="start/end"):
        model_cost(hw, card, "decode", 1, 64, 3, 2)
    with pytest.raises(ValueError, match="context_len"):
        transformer_layer_cost(hw, card, "prefill", 10, 5)
    with pytest.raises(ValueError, match="phase"):
        transformer_layer_cost(hw, card, "train", 1, 5)


def test_shipped_model_can_be_priced():
    """The shipped ``device`` model on ``phone_npu``, priced by hand from its config.json and the catalog."""
    card = get_model_card("device")  # shipped with the package: no skip
    shape = (card.num_layers, card.d_model, card.num_heads, card.num_kv_heads, card.ffn_dim, card.vocab_size)
    assert shape == (1, 128, 4, 4, 384, 4096) and card.tied_embeddings and not card.qkv_bias
    # per layer: q, k, v, o 4 d^2 + SwiGLU 3 d ffn + two RMSNorms 2 d; + embedding V d (tied head) + final norm
    per_layer = 4 * 128 * 128 + 3 * 128 * 384 + 2 * 128  # 213_248
    assert card.total_params == per_layer + 4096 * 128 + 128 == 737_664
    flops_s = 0.5 * 17.0e12  # FP16 NPU peak x compute efficiency
    bytes_s = 0.85 * 76.8e9  # LPDDR5X x memory efficiency
    kv = 2 * 128 * 2  # K and V of one token, fp16
    head_bytes = 4096 * 128 * 2 + (128 + 4096) * 2  # head matrix + hidden in, logits out
    hw = get_hardware("phone_npu")
    # prefill of 32 tokens: mean 16.5 keys; 13.9 MFLOP vs 459 kB per layer: memory-bound
    flops = 32 * (2 * per_layer + 4 * 16.5 * 128)
    moved = 2 * per_layer + 32 * kv + 32 * 2 * 128 * 2
    assert (flops, moved) == (13_918_208, 459_264) and moved / bytes_s > flops / flops_s
    t, e = model_cost(hw, card, "prefill", 32, 32, include_head=True)
    assert t == pytest.approx((moved + head_bytes) / bytes_s, rel=1e-12)  # one layer + the head
    assert e == pytest.approx(5.0 * t, rel=1e-12)
    # 4 decode steps ending at 36 tokens: each step reads the weights and 34.5 cached tokens on average
    moved = 4 * (2 * per_layer + 34.5 * kv + 2 * 128 * 2)
    t, _ = model_cost(hw, card, "decode", 4, 36, include_head=True)
    assert t == pytest.approx((moved + 4 * head_bytes) / bytes_s, rel=1e-12)
    # a 2048-token prefill is compute-bound: 2048 (2 p + 4 x 1024.5 x 128) FLOP per layer
    flops = 2048 * (2 * per_layer + 4 * 1024.5 * 128)
    moved = 2 * per_layer + 2048 * kv + 2048 * 2 * 128 * 2
    assert flops / flops_s > moved / bytes_s
    t, _ = model_cost(hw, card, "prefill", 2048, 2048, start=0, end=1)
    assert t == pytest.approx(flops / flops_s, rel=1e-12)
    with pytest.raises(ValueError, match="start/end"):
        model_cost(hw, card, "prefill", 2048, 2048, start=-1, end=1)
