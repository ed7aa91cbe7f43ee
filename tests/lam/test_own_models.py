"""Bring your own models and prompts: a tiny random HF family (Llama and Qwen2, its own freshly trained
tokenizer) profiled by ``edgelam profile --models ... --prompts ...`` into files the loaders read, the
live runs reproducing them, the tokenizer and prompt-file errors, resume, and ``model_card: auto``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgelam.agents.cli import main
from edgelam.envs.core.model_cards import auto_model_card, resolve_model_card, safetensors_param_count
from edgelam.envs.lam import (
    acceptance_probability,
    load,
    load_manifest,
    load_profile,
    load_profiled,
    run_profile,
    split_quality_grid,
    target_sample,
)
from edgelam.envs.lam import profile as profile_mod
from edgelam.envs.lam.profile import CHECKPOINT_DIR, profile_offload
from edgelam.envs.lam.prompts import profile_tokens, read_prompts
from edgelam.envs.lam.replay import executed_model, profile_models, sha256_file
from edgelam.envs.lam.tiny_family import (
    build_tiny_family,
    shipped_texts,
    train_tokenizer,
    write_demo_prompts,
)

from . import require_shipped

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Folders of the tiny family (tiny-llama-s, tiny-qwen2-m, tiny-llama-l), a Llama with another
    tokenizer, and a prompt file of 6 records."""
    root = tmp_path_factory.mktemp("family")
    small, medium, large = build_tiny_family(root)
    (foreign,) = build_tiny_family(
        root, seed=7, family=(("tiny-llama-foreign", "llama", 2, 32),),
        tokenizer=train_tokenizer(shipped_texts()[::3], vocab_size=400),
    )
    prompts = write_demo_prompts(root / "prompts.jsonl", 6)
    return {"small": small, "medium": medium, "large": large, "foreign": foreign, "prompts": prompts, "root": root}


@pytest.fixture(scope="module")
def own_profile(family, tmp_path_factory):
    """``edgelam profile`` of the family on the prompt file (quick: the first 4 records)."""
    out = tmp_path_factory.mktemp("own") / "profile"
    argv = ["profile", "--models", str(family["small"]), str(family["medium"]), str(family["large"]),
            "--drafts", "tiny-llama-s", "--prompts", str(family["prompts"]), "--out", str(out), "--quick", "--json"]
    assert main(argv) == 0
    return out


def test_cli_profile_of_own_family_writes_files_the_loaders_read(own_profile, family, capsys):
    names = ["tiny-llama-s", "tiny-qwen2-m", "tiny-llama-l"]
    sq = load_profile("split_quality", own_profile)
    assert str(sq["model"]) == "tiny-llama-l" and sq["top1_agreement"].shape == (4, 5, 3)
    assert np.all(sq["top1_agreement"][:, [0, 4]] == 1.0) and np.all(sq["kl_nats"] >= 0)
    acc = load_profile("acceptance", own_profile)
    assert list(acc["variants"]) == ["tiny-llama-s", "early_exit:2", "int8"] and str(acc["target"]) == "tiny-llama-l"
    assert acc["beta"].shape == (3, 2, 4, 32) and int(acc["tokens"].max()) < 512
    assert np.all((acc["beta"] >= 0) & (acc["beta"] <= 1 + 1e-6))
    off = load_profile("offload", own_profile)
    assert list(off["models"]) == names and off["ref_accuracy"].shape == (4, 3)
    # the Qwen2 tokenizer class splits the same texts differently: each model's own token counts are kept
    assert off["prompt_len_per_model"].shape == (4, 3)
    assert np.array_equal(off["prompt_len_per_model"][:, 0], off["prompt_len_per_model"][:, 2])
    assert not np.array_equal(off["prompt_len_per_model"][:, 1], off["prompt_len_per_model"][:, 2])
    assert np.array_equal(off["prompt_len"], off["prompt_len_per_model"][:, 2])
    times = load_profile("layer_times", own_profile)
    assert len(times["models"]["tiny-llama-l"]["prefill"]["32"]["layer_s"]) == 4
    manifest = load_manifest(own_profile)
    assert manifest["prompts"]["sha256"] == sha256_file(family["prompts"]) and manifest["prompts"]["records"] == 4
    assert manifest["files"]["prompts.jsonl"] == sha256_file(own_profile / "prompts.jsonl")
    for name, folder in zip(names, (family["small"], family["medium"], family["large"]), strict=True):
        entry = manifest["models"][name]
        assert entry["path"] == str(folder.resolve())
        assert entry["config_sha256"] == sha256_file(folder / "config.json") and len(entry["weights_sha256"]) == 64
    assert manifest["models"]["tiny-qwen2-m"]["architecture"] == "qwen2"
    assert manifest["hardware"]["device"] == "cpu" and manifest["settings"]["drafts"] == ["tiny-llama-s"]
    assert list(profile_models(own_profile)) == names
    assert executed_model(own_profile) == ("tiny-llama-l", family["large"].resolve())
    assert not (own_profile / CHECKPOINT_DIR).exists()


def test_live_runs_on_the_folders_reproduce_the_replay_rows(own_profile, family):
    target, draft, medium = load(family["large"]), load(family["small"]), load(family["medium"])
    assert load_profiled("tiny-llama-l", own_profile) is target and load_profiled("cloud").name == "cloud"
    with pytest.raises(ValueError, match=r"'int8' is not a model of the profile.*tiny-llama-s, tiny-qwen2-m"):
        load_profiled("int8", own_profile)
    recs = profile_tokens(target, own_profile)
    assert recs[0]["prompt_ids"][0] == target.tokenizer.bos_token_id
    sq = load_profile("split_quality", own_profile)
    grid = split_quality_grid(target, recs[2]["prompt_ids"], recs[2]["reference_ids"])
    assert np.array_equal(sq["kl_nats"][2], grid["kl_nats"].astype(np.float32))
    off = load_profile("offload", own_profile)
    live = profile_offload([medium], recs[:4], [profile_tokens(medium, own_profile)[:4]])
    assert np.array_equal(off["ref_accuracy"][:, 1], live["ref_accuracy"][:, 0])
    acc = load_profile("acceptance", own_profile)
    rec, temp = recs[1], 1.0
    gen = target_sample(target, rec["prompt_ids"], 32, temp, seed=int(acc["seeds"][1, 1]))
    assert list(acc["tokens"][1, 1]) == gen
    ids = rec["prompt_ids"] + gen[:-1]
    beta = acceptance_probability(target.logits(ids, last=32)[0], draft.logits(ids, last=32)[0], temp)
    assert np.allclose(acc["beta"][0, 1, 1], beta.numpy(), atol=1e-6)


def test_qwen2_executed_model_profiles_with_its_own_variants_only(family, tmp_path):
    paths = run_profile(tmp_path, [str(family["small"]), str(family["medium"])], n_prompts=2, quick=True, log=None,
                        prompts=family["prompts"], drafts=[])
    assert paths[-1].name == "manifest.json"
    sq = load_profile("split_quality", tmp_path)
    assert str(sq["model"]) == "tiny-qwen2-m" and sq["top1_agreement"].shape == (2, 3, 3)
    assert list(load_profile("acceptance", tmp_path)["variants"]) == ["early_exit:1", "int8"]
    assert "prompt_len_per_model" in load_profile("offload", tmp_path)


def test_a_draft_that_tokenizes_unlike_the_target_is_refused_naming_both(family, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"draft 'tiny-qwen2-m'.*target 'tiny-llama-l'.*tokenize prompt id 0"):
        run_profile(tmp_path, [str(family["medium"]), str(family["large"])], quick=True, log=None,
                    prompts=family["prompts"])
    argv = ["profile", "--models", str(family["foreign"]), str(family["large"]), "--prompts", str(family["prompts"]),
            "--out", str(tmp_path), "--quick"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'tiny-llama-foreign'" in err and "'tiny-llama-l'" in err and "different tokenizers" in err
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "def f(x):"}', "'reference' must be a non-empty string"),
        ('{"prompt": "def f(x):", "reference": "  "}', "'reference' must be a non-empty string"),
        ('{"prompt": "a", "reference": "b", "answer": "c"}', r"unknown key\(s\) \['answer'\]"),
        ('{"prompt": "a", "reference": "b", "id": 0}', "id 0 repeats the id of line 1"),
        ('{"prompt": "a", "reference": "b", "id": -1}', "'id' must be an integer >= 0"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"prompt": "a", "reference": ', "not a JSON object"),
    ],
)
def test_a_bad_prompt_record_names_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": 0, "prompt": "x = 1", "reference": "\\ny = 2"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"prompts\.jsonl:3: {problem}"):
        read_prompts(path)


def test_the_cli_reports_a_bad_record_with_its_line_and_exit_2(family, tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "x = 1", "reference": "\\ny = 2"}\n{"prompt": "x"}\n')
    argv = ["profile", "--models", str(family["small"]), str(family["large"]), "--prompts", str(path),
            "--out", str(tmp_path / "p"), "--quick"]
    assert main(argv) == 2
    assert f"{path}:2: 'reference' must be a non-empty string" in capsys.readouterr().err


def test_folders_without_tokenizer_or_with_clashing_names_are_refused(family, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(family["small"], bare)
    for f in bare.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(ValueError, match=r"'bare'.*has no tokenizer"):
        run_profile(tmp_path / "p", [str(bare), str(family["large"])], quick=True, log=None, prompts=family["prompts"])
    twin = tmp_path / "twin" / "tiny-llama-l"
    shutil.copytree(family["small"], twin)
    with pytest.raises(ValueError, match=r"both named 'tiny-llama-l'.*rename one folder"):
        run_profile(tmp_path / "p", [str(twin), str(family["large"])], quick=True, log=None, prompts=family["prompts"])
    cloud = tmp_path / "cloud"
    shutil.copytree(family["large"], cloud)
    with pytest.raises(ValueError, match="named like the shipped model 'cloud'"):
        run_profile(tmp_path / "p", [str(family["small"]), str(cloud)], quick=True, log=None, prompts=family["prompts"])
    with pytest.raises(ValueError, match=r"drafts: \['tiny-qwen2-m'\] are not among"):
        run_profile(tmp_path / "p", [str(family["small"]), str(family["large"])], quick=True, log=None,
                    prompts=family["prompts"], drafts=["tiny-qwen2-m"])


def test_an_interrupted_profile_resumes_from_its_checkpoints(family, tmp_path, monkeypatch):
    models = [str(family["small"]), str(family["large"])]
    kwargs = {"n_prompts": 3, "quick": True, "log": None, "prompts": family["prompts"]}
    ref = tmp_path / "ref"
    run_profile(ref, models, **kwargs)
    out = tmp_path / "out"
    monkeypatch.setattr(profile_mod, "CHECKPOINT_S", 0.0)
    real_split_row = profile_mod._split_row
    calls = {"split": 0, "offload": 0}

    def interrupted(lm, rec):
        if calls["split"] == 2:
            raise KeyboardInterrupt
        calls["split"] += 1
        return real_split_row(lm, rec)

    monkeypatch.setattr(profile_mod, "_split_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_profile(out, models, **kwargs)
    state = json.loads((out / CHECKPOINT_DIR / "state.json").read_text())
    assert list(state["stages"]) == ["offload.npz"] and not (out / "manifest.json").exists()
    with np.load(out / CHECKPOINT_DIR / "split_quality.npz.rows.npz") as rows:
        assert len(rows["kl_nats"]) == 2
    real_offload_row = profile_mod._offload_row

    def counted(*args):
        calls["offload"] += 1
        return real_offload_row(*args)

    monkeypatch.setattr(profile_mod, "_split_row", real_split_row)
    monkeypatch.setattr(profile_mod, "_offload_row", counted)
    calls["split"] = 0
    run_profile(out, models, **kwargs)
    assert calls["offload"] == 0  # the finished stage was not run again
    assert not (out / CHECKPOINT_DIR).exists()
    for name in ("offload", "split_quality", "acceptance"):
        a, b = load_profile(name, ref), load_profile(name, out)
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), name
    assert load_manifest(out)["files"]["split_quality.npz"] == load_manifest(ref)["files"]["split_quality.npz"]


def _hand_count(config: dict) -> dict:
    """Per-layer parameters, FLOPs of one token attending to n keys, and totals, from config.json by hand."""
    d, heads, kv = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    hd, ffn, vocab = d // heads, config["intermediate_size"], config["vocab_size"]
    bias = heads * hd + 2 * kv * hd if config["model_type"] == "qwen2" else 0
    layer = d * heads * hd + 2 * d * kv * hd + heads * hd * d + bias + 3 * d * ffn + 2 * d
    total = config["num_hidden_layers"] * layer + vocab * d + d  # tied head
    return {"layer": layer, "total": total, "flops": lambda n: 2 * layer + 4 * n * heads * hd}


@pytest.mark.parametrize("member", ["small", "medium", "large"])
def test_auto_model_card_equals_a_hand_count_from_the_config(family, member):
    folder = family[member]
    config = json.loads((folder / "config.json").read_text())
    hand = _hand_count(config)
    card = auto_model_card(folder)
    assert card.name == folder.name and card.num_layers == config["num_hidden_layers"]
    for n in (0, 1, 100):
        assert card.flops_per_token(n) == hand["flops"](n)
    assert card.weight_bytes_per_layer(16) == 2 * hand["layer"] and card.weight_bytes_per_layer(8) == hand["layer"]
    assert card.total_params == hand["total"] == safetensors_param_count(folder) == card.params_reported
    lm = load(folder)  # and the real weights agree with the count
    assert np.all(lm.layer_param_bytes(16) == 2 * hand["layer"]) and lm.num_params == hand["total"]


def test_model_card_auto_resolves_to_the_profile_executed_model(own_profile, family, tmp_path):
    assert resolve_model_card("auto", profile_dir=own_profile) == auto_model_card(family["large"], "tiny-llama-l")
    assert resolve_model_card("auto").name == "cloud"  # the shipped profiles executed the shipped cloud model
    assert resolve_model_card("Qwen2.5-0.5B").num_layers == 24
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 32}))
    with pytest.raises(ValueError, match="'gpt2' model; auto cards price Llama-style"):
        auto_model_card(gpt2)


def test_profile_prompts_option_takes_a_file_or_the_old_count(tmp_path):
    from edgelam.agents.cli import _profile_prompts

    assert _profile_prompts(None, None) == (300, None)
    assert _profile_prompts("40", None) == (40, None)  # `--prompts N` still counts shipped prompts
    assert _profile_prompts("mine.jsonl", None) == (None, Path("mine.jsonl"))
    assert _profile_prompts("mine.jsonl", 10) == (10, Path("mine.jsonl"))
    with pytest.raises(ValueError, match="give it or --n-prompts, not both"):
        _profile_prompts("40", 10)
    with pytest.raises(ValueError, match="--n-prompts must be >= 1"):
        _profile_prompts("mine.jsonl", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where torch sees no GPU")
def test_device_cuda_without_a_gpu_is_a_clear_error(family, tmp_path, capsys):
    argv = ["profile", "--models", str(family["small"]), str(family["large"]), "--prompts", str(family["prompts"]),
            "--out", str(tmp_path), "--quick", "--device", "cuda"]
    assert main(argv) == 2
    assert "sees no CUDA GPU; use --device cpu" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"device: 'tpu' is not a torch device"):
        load(family["small"], device="tpu")


def test_one_tokenizer_with_padded_embeddings_drafts_over_the_shared_ids(family, tmp_path):
    from transformers import AutoTokenizer

    from edgelam.envs.lam import speculative_generate
    from edgelam.envs.lam.tiny_family import random_model

    tok = AutoTokenizer.from_pretrained(family["large"])
    padded = tmp_path / "tiny-llama-padded"
    random_model("llama", len(tok) + 64, 4, 64, seed=3).save_pretrained(padded)
    tok.save_pretrained(padded)
    target, draft = load(padded), load(family["small"])
    assert target.vocab_size == draft.vocab_size + 64
    prompt = target.tokenizer("def f(x):")["input_ids"]
    greedy, _ = speculative_generate(target, draft, prompt, 12, gamma=0, temperature=0.0)
    drafted, rounds = speculative_generate(target, draft, prompt, 12, gamma=3, temperature=0.0)
    assert drafted == greedy and max(drafted) < draft.vocab_size and any(r.proposed for r in rounds)
    with pytest.raises(ValueError, match="draft vocab 400 != target vocab 576"):
        speculative_generate(target, load(family["foreign"]), prompt[:1], 4, gamma=2)


def test_the_shipped_path_still_feeds_the_shipped_ids_and_reproduces_the_shipped_rows():
    from edgelam.envs.lam import SHIPPED_MODELS, load_prompts
    from edgelam.envs.lam.profile import profile_split

    for name in SHIPPED_MODELS:
        require_shipped(name)
    lms = [load(name) for name in SHIPPED_MODELS]
    shipped = load_prompts()[:3]
    for lm in lms:  # each shipped model is fed the shipped token ids, not a re-tokenization of the texts
        assert [(r["prompt_ids"], r["reference_ids"]) for r in profile_tokens(lm)[:3]] == [
            (r["prompt_ids"], r["reference_ids"]) for r in shipped
        ]
    off = load_profile("offload")
    rows = profile_offload(lms, shipped)
    assert "prompt_len_per_model" not in off and "prompt_len_per_model" not in rows
    for key in ("ref_accuracy", "nll_nats", "confidence"):
        assert np.allclose(rows[key], off[key][:3], atol=1e-5), key
    split = profile_split(lms[-1], shipped[:1])
    assert np.allclose(split["top1_agreement"], load_profile("split_quality")["top1_agreement"][:1], atol=1e-6)


def test_the_shipped_prompt_set_is_retokenized_for_a_model_with_its_own_tokenizer(family, tmp_path):
    from edgelam.envs.lam import load_prompts

    run_profile(tmp_path, [str(family["small"]), str(family["large"])], n_prompts=2, quick=True, log=None,
                prompts=None, max_prompt_tokens=40)
    off = load_profile("offload", tmp_path)
    lm = load(family["large"])
    recs = profile_tokens(lm, tmp_path)
    texts = load_prompts()[:2]
    assert recs[0]["prompt_ids"] == lm.tokenizer(texts[0]["prompt"])["input_ids"][-40:]  # not the shipped ids
    assert recs[0]["prompt_ids"] != texts[0]["prompt_ids"][-40:]
    assert list(off["prompt_len"]) == [len(r["prompt_ids"]) for r in recs] == [40, 40]
    assert load_manifest(tmp_path)["settings"]["max_prompt_tokens"] == 40


def _tiers(own_profile) -> dict:
    """Offload / MultiUserOffload tiers on the own family: its three models, each priced from its own config."""
    tiers = {"profile_dir": str(own_profile), "episode_length": 40}
    for tier, model in zip(("device", "edge", "cloud"), ("tiny-llama-s", "tiny-qwen2-m", "tiny-llama-l"), strict=True):
        tiers[f"{tier}.executed_model"] = model
        tiers[f"{tier}.card"] = "auto"
    return tiers


@pytest.mark.parametrize("env_id", ["edgelam/Offload-v0", "edgelam/MultiUserOffload-v0"])
def test_offload_envs_run_the_own_family_and_replay_equals_live(own_profile, env_id):
    import gymnasium as gym

    from edgelam.envs import make_parallel

    stats = {}
    for backend in ("replay", "live"):
        rows = []
        if env_id == "edgelam/Offload-v0":
            env = gym.make(env_id, backend=backend, **_tiers(own_profile))
            env.action_space.seed(0)
            env.reset(seed=0)
            rows = [env.step(env.action_space.sample())[4] for _ in range(40)]
        else:
            env = make_parallel(env_id, backend=backend, **_tiers(own_profile))
            env.reset(seed=0)
            for agent in env.possible_agents:
                env.action_space(agent).seed(len(rows) + hash(agent) % 1000)
            for _ in range(40):
                infos = env.step({a: env.action_space(a).sample() for a in env.agents})[4]
                rows += [infos[a] for a in env.possible_agents]
        stats[backend] = (np.mean([r["quality"] for r in rows]), np.mean([r["latency_s"] for r in rows]))
        env.close()
    (q_replay, l_replay), (q_live, l_live) = stats["replay"], stats["live"]
    assert q_replay > 0 and abs(q_live - q_replay) <= 0.05 * q_replay
    assert abs(l_live - l_replay) <= 0.05 * l_replay


def test_card_auto_prices_each_offload_tier_with_its_own_executed_model(own_profile, family):
    from edgelam.envs.core.hardware import load_hardware_catalog
    from edgelam.envs.offload.dynamics import build_tables
    from edgelam.envs.offload.env import offload_tables
    from edgelam.envs.registration import find_spec

    spec = find_spec("edgelam/Offload-v0")
    cfg = spec.load_config("default", _tiers(own_profile))
    tables = offload_tables(cfg)
    prof = load_profile("offload", own_profile)
    catalog = load_hardware_catalog()
    tiers = [cfg.device, cfg.edge, cfg.cloud]
    expected = build_tables(
        tuple(auto_model_card(family[k]) for k in ("small", "medium", "large")),
        tuple(catalog[t.hardware] for t in tiers), tuple(t.weight_bits for t in tiers),
        np.asarray(prof["prompt_len"]), cfg.decode_tokens, cfg.token_id_bytes, cfg.request_overhead_bytes,
        cfg.cloud_price_usd_per_token, cfg.channel.tx_power_w, cfg.edge_rtt_s, cfg.downlink_rate_bps,
        np.asarray(prof["ref_accuracy"], dtype=np.float64), np.asarray(prof["confidence"], dtype=np.float64)[:, 0])
    assert np.array_equal(tables.compute_s, expected.compute_s)
    named = offload_tables(spec.load_config("default", {**_tiers(own_profile), "device.card": "Qwen2.5-0.5B"}))
    assert named.compute_s[0, 0] > 100 * tables.compute_s[0, 0]  # a 0.5B card vs the tiny model's own


def test_split_inference_runs_the_own_family_and_replay_equals_live(own_profile, family):
    import gymnasium as gym

    kw = {"profile_dir": str(own_profile), "executed_model": "tiny-llama-l", "model_card": "auto",
          "episode_length": 40}
    env = gym.make("edgelam/SplitInference-v0", **kw)
    assert env.unwrapped.num_layers == auto_model_card(family["large"]).num_layers  # priced as the model itself
    stats = {}
    for backend in ("replay", "live"):
        env = gym.make("edgelam/SplitInference-v0", backend=backend, **kw)
        env.action_space.seed(0)
        env.reset(seed=0)
        rows = [env.step(env.action_space.sample())[4] for _ in range(40)]
        stats[backend] = np.array([[r["quality"], r["latency_s"]] for r in rows]).mean(axis=0)
    assert np.all(np.abs(stats["live"] - stats["replay"]) <= 0.05 * np.abs(stats["replay"]))
    with pytest.raises(ValueError, match="is of 'tiny-llama-l', not 'cloud'"):
        gym.make("edgelam/SplitInference-v0", profile_dir=str(own_profile))


def test_spec_decode_runs_the_own_family_and_replay_equals_live(own_profile, family):
    import gymnasium as gym

    kw = {"profile_dir": str(own_profile), "draft_variants": ["tiny-llama-s", "early_exit:2", "int8"],
          "draft_cards": ["auto", "target", "target"], "draft_layer_fraction": [1.0, 0.5, 1.0],
          "draft_weight_bits": [16, 16, 8], "target_card": "auto", "temperature": 1.0, "episode_length": 600,
          "requests_per_episode": 1000}
    env = gym.make("edgelam/SpecDecode-v0", **kw)
    assert env.unwrapped.executed_target == "tiny-llama-l"
    stats = {}
    for backend in ("replay", "live"):
        env = gym.make("edgelam/SpecDecode-v0", backend=backend, **kw)
        env.reset(seed=0)
        accepted = []
        for _ in range(600):  # gamma 4 with the independent draft, every round
            _, _, terminated, truncated, info = env.step(np.array([4, 0]))
            accepted.append(info["accepted_tokens"])
            if terminated or truncated:
                break
        stats[backend] = float(np.mean(accepted))
    assert stats["replay"] > 0.2  # the tiny draft is accepted on part of its tokens
    assert abs(stats["live"] - stats["replay"]) <= 0.05 * stats["replay"]
    with pytest.raises(ValueError, match="draft 'early_exit:2' is not one"):
        gym.make("edgelam/SpecDecode-v0", **{**kw, "draft_cards": ["auto", "auto", "target"]})
