"""Replay profiles: documented shapes, verification, and agreement with live execution."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgelam.envs.lam import (
    ProfileError,
    acceptance_probability,
    family_card,
    load,
    load_manifest,
    load_profile,
    load_prompts,
    make_draft,
    profiles_dir,
    run_profile,
    split_quality_grid,
    target_sample,
)
from edgelam.envs.lam.replay import PROFILE_FILES

from . import tiny_hf

torch.set_num_threads(1)

NAMES = tuple(PROFILE_FILES)


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory):
    """Profiles of two tiny random models written by a quick run."""
    root = tmp_path_factory.mktemp("quick")
    tiny_hf(seed=0, hidden=32, layers=2).save_pretrained(root / "small")
    tiny_hf(seed=1, hidden=48, layers=3, heads=4, kv_heads=4).save_pretrained(root / "big")
    paths = run_profile(root / "profiles", [str(root / "small"), str(root / "big")], quick=True, log=None)
    assert [p.name for p in paths] == [
        "offload.npz",
        "split_quality.npz",
        "acceptance.npz",
        "layer_times.json",
        "manifest.json",
    ]
    return root / "profiles"


def test_quick_run_writes_verified_files_with_documented_shapes(quick_dir):
    sq = load_profile("split_quality", quick_dir)
    assert int(sq["format_version"]) == 1 and str(sq["model"]) == "big"
    assert sq["top1_agreement"].shape == (4, 4, 3) and list(sq["bits"]) == [4, 8, 16]
    acc = load_profile("acceptance.npz", quick_dir)
    assert list(acc["variants"]) == ["small", "early_exit:2", "int8"]
    assert acc["beta"].shape == (3, 2, 4, 32) and acc["tokens"].shape == (2, 4, 32)
    assert np.allclose(acc["mean_acceptance"], acc["beta"].mean(axis=(2, 3)))
    off = load_profile("offload", quick_dir)
    assert list(off["models"]) == ["small", "big"] and off["nll_nats"].shape == (4, 2)
    times = load_profile("layer_times", quick_dir)
    assert len(times["models"]["big"]["prefill"]["32"]["layer_s"]) == 3
    assert len(times["models"]["small"]["decode"]["layer_s"]) == 2
    manifest = load_manifest(quick_dir)
    assert set(manifest["files"]) == set(PROFILE_FILES.values())
    assert set(manifest["models"]) == {"small", "big"} and manifest["settings"]["quick"]
    assert set(manifest["summary"]["mean_acceptance"]) == {"small", "early_exit:2", "int8"}
    with pytest.raises(ValueError):  # read-only arrays: replay users cannot corrupt the cache
        sq["kl_nats"][0, 0, 0] = 1.0


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", NAMES)
def test_corrupt_or_missing_file_raises(quick_dir, tmp_path, name):
    folder = _copy(quick_dir, tmp_path / "p")
    path = folder / PROFILE_FILES[name]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ProfileError, match="edgelam profile"):
        load_profile(name, folder)
    path.unlink()
    with pytest.raises(ProfileError, match=r"missing.*edgelam profile"):
        load_profile(name, folder)


def test_manifest_problems_raise(quick_dir, tmp_path):
    folder = _copy(quick_dir, tmp_path / "p")
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ProfileError, match=r"format_version 99.*edgelam profile"):
        load_profile("offload", folder)
    models = {k: {**v, "weights_sha256": "0" * 64} for k, v in manifest["models"].items()}
    manifest_path.write_text(json.dumps({**manifest, "models": models}))
    with pytest.raises(ProfileError, match=r"other weights.*edgelam profile"):
        load_profile("offload", folder)
    assert load_profile("offload", folder, verify_models=False)["nll_nats"].shape == (4, 2)
    manifest_path.write_text("{not json")
    with pytest.raises(ProfileError, match="cannot be parsed"):
        load_profile("offload", folder)
    manifest_path.unlink()
    with pytest.raises(ProfileError, match=r"manifest\.json.*missing"):
        load_profile("offload", folder)
    with pytest.raises(ProfileError, match="unknown replay profile"):
        load_profile("speedup", folder)


def test_npz_of_another_format_version_raises(quick_dir, tmp_path):
    folder = _copy(quick_dir, tmp_path / "p")
    path = folder / "offload.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["format_version"] = np.asarray(0)
    np.savez_compressed(path, **arrays)
    manifest = json.loads((folder / "manifest.json").read_text())
    from edgelam.envs.lam.replay import sha256_file

    manifest["files"]["offload.npz"] = sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ProfileError, match="format_version 0"):
        load_profile("offload", folder)


# --- the shipped profiles --------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return {name: load_profile(name) for name in NAMES}


def test_shipped_profiles_have_the_documented_shapes(shipped):
    n_layers = family_card()["models"]["cloud"]["layers"]
    sq, acc, off = shipped["split_quality"], shipped["acceptance"], shipped["offload"]
    assert str(sq["model"]) == "cloud" and list(sq["split_layers"]) == list(range(n_layers + 1))
    for key in ("top1_agreement", "kl_nats", "ref_accuracy"):
        assert sq[key].shape == (300, n_layers + 1, 3)
    assert sq["ref_accuracy_full"].shape == sq["prompt_len"].shape == sq["ref_len"].shape == (300,)
    assert np.all(sq["top1_agreement"][:, [0, -1]] == 1.0)
    assert sq["top1_agreement"][:, :, 2].mean() >= 0.99
    assert str(acc["target"]) == "cloud"
    assert list(acc["variants"]) == ["device", "edge", "early_exit:2", "int8"]
    assert list(acc["temperatures"]) == [0.0, 1.0] and acc["beta"].shape == (4, 2, 300, 32)
    assert np.all((acc["beta"] >= 0) & (acc["beta"] <= 1 + 1e-6))
    assert list(off["models"]) == ["device", "edge", "cloud"] and off["ref_accuracy"].shape == (300, 3)
    nll = off["nll_nats"].mean(0)
    assert nll[2] < nll[1] < nll[0]
    assert set(shipped["layer_times"]["models"]) == {"device", "edge", "cloud"}
    manifest = load_manifest()
    assert manifest["settings"]["n_prompts"] == 300 and not manifest["settings"]["quick"]
    summary = manifest["summary"]["mean_acceptance"]
    assert set(summary) == {"device", "edge", "early_exit:2", "int8"} and all(
        set(v) == {"0.0", "1.0"} for v in summary.values()
    )
    assert sum(p.stat().st_size for p in profiles_dir().iterdir()) < 5e6


def test_shipped_family_has_a_real_quality_stake(shipped):
    """Issue #22's contract on the profiles: the device draft is accepted often but not always
    against cloud (T = 1: 0.5..0.85), int8 cloud is nearly the target itself, and picking the
    best tier per task (the per-task oracle of Offload-v0) gains >= 6 points of top-1 accuracy
    over always running the device model."""
    summary = load_manifest()["summary"]["mean_acceptance"]
    assert 0.5 <= summary["device"]["1.0"] <= 0.85, summary["device"]
    assert summary["int8"]["1.0"] >= 0.98 and summary["int8"]["0.0"] >= 0.98, summary["int8"]
    acc = shipped["acceptance"]
    assert acc["beta"][list(acc["variants"]).index("device"), 1].mean() == pytest.approx(
        summary["device"]["1.0"], rel=1e-4
    )
    quality = shipped["offload"]["ref_accuracy"]  # (prompts, [device, edge, cloud])
    device, edge, cloud = quality.mean(0)
    assert device < edge < cloud, (device, edge, cloud)
    assert quality.max(1).mean() - device >= 0.06


def test_shipped_profiles_reproduce_live_execution(shipped):
    cloud = load("cloud")
    rec = load_prompts()[0]
    grid = split_quality_grid(cloud, rec["prompt_ids"], rec["reference_ids"])
    sq = shipped["split_quality"]
    for key in ("top1_agreement", "ref_accuracy"):
        assert np.allclose(sq[key][0], grid[key], atol=1e-6)
    # KL is a sum of p (log p - log q) with q within a quantisation step of p: in float32 the log
    # difference cancels to ~1e-7 nats (a few ulps of an O(1) log-probability), so the absolute
    # tolerance sits just above that floor (1e-7 failed by 1.6e-7 on one 2.7e-5 entry with this
    # session's fresh install); a wrong bit width moves the 1e-2 and 1e-5 entries far more
    assert np.allclose(sq["kl_nats"][0], grid["kl_nats"], rtol=1e-3, atol=1e-6)
    acc = shipped["acceptance"]
    variants = list(acc["variants"])
    for t, temperature in enumerate(acc["temperatures"]):
        tokens = target_sample(cloud, rec["prompt_ids"], 32, float(temperature), seed=int(acc["seeds"][t, 0]))
        assert tokens == acc["tokens"][t, 0].tolist()
        with torch.no_grad():
            ids = rec["prompt_ids"] + tokens[:-1]
            p = cloud.logits(ids, last=32)[0]
            q = make_draft(cloud, "int8").logits(ids, last=32)[0]
        beta = acceptance_probability(p, q, float(temperature)).numpy()
        assert np.allclose(acc["beta"][variants.index("int8"), t, 0], beta, atol=1e-5)


def test_corrupting_a_shipped_profile_copy_raises(tmp_path):
    folder = _copy(profiles_dir(), tmp_path / "p")
    path = folder / "acceptance.npz"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ProfileError, match="edgelam profile"):
        load_profile("acceptance", folder)
    assert load_profile("offload", folder)["ref_accuracy"].shape == (300, 3)
