"""Robust IO: each failure mode of the files an env reads gives a clear error, or a flagged fallback.

Every test works on copies under ``tmp_path``; the shipped files are never modified.
Failure modes covered elsewhere (not repeated here): corrupt / missing / stale profile
files through ``load_profile`` (``tests/lam/test_profiles.py``), a model folder without
weights (``tests/lam/test_model.py``), YAML parse errors of ``read_yaml``
(``tests/test_config.py``), an infeasible min-energy allocation (``tests/fedft/test_fedft.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cvxpy as cp
import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.baselines.fedft import min_energy_allocation
from edgelam.baselines.multi_user_offload import sqrt_allocation
from edgelam.envs import lam
from edgelam.envs.fedft.dynamics import upload_rate_bps
from edgelam.envs.lam import ProfileError, profiles_dir
from edgelam.envs.lam import model as model_mod
from edgelam.envs.lam import replay as replay_mod
from edgelam.envs.registration import ENV_IDS, GYM_ENVS, make_parallel

# the replay profile each env reads (``profile_dir=`` picks the folder)
PROFILE_OF = {
    "edgelam/SplitInference-v0": "split_quality.npz",
    "edgelam/Offload-v0": "offload.npz",
    "edgelam/MultiUserOffload-v0": "offload.npz",
    "edgelam/SpecDecode-v0": "acceptance.npz",
}


def make(env_id: str, **kwargs):
    return gym.make(env_id, **kwargs) if env_id in GYM_ENVS else make_parallel(env_id, **kwargs)


def copy_profiles(tmp_path: Path) -> Path:
    return Path(shutil.copytree(profiles_dir(), tmp_path / "profiles"))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# -- replay profiles through the envs -------------------------------------------------------------


def episode(env_id: str, seed: int = 0, **kwargs) -> list:
    """One whole episode (reset seed ``seed``, actions sampled from spaces seeded alike): every output."""
    env = make(env_id, **kwargs)
    if env_id in GYM_ENVS:
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        trace, done = [(obs, info)], False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            trace.append((obs, reward, terminated, truncated, info))
            done = terminated or truncated
    else:
        for i, agent in enumerate(env.possible_agents):
            env.action_space(agent).seed(seed + i)
        obs, info = env.reset(seed=seed)
        trace = [(obs, info)]
        while env.agents:
            out = env.step({a: env.action_space(a).sample() for a in env.agents})
            trace.append(out)
    env.close()
    return trace


def same(a, b) -> bool:
    """Bit-for-bit equality of nested episode outputs (dicts, sequences, arrays, floats)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


@pytest.mark.parametrize("env_id", sorted(PROFILE_OF))
def test_env_on_a_profile_copy_builds_and_steps(env_id, tmp_path):
    """The control: on an intact copy of the shipped profiles, an episode is that of the shipped files."""
    shipped = episode(env_id)
    copied = episode(env_id, profile_dir=str(copy_profiles(tmp_path)))
    assert len(copied) > 2
    assert same(copied, shipped)


@pytest.mark.parametrize("env_id", sorted(PROFILE_OF))
def test_env_on_a_corrupt_profile_raises_profile_error(env_id, tmp_path):
    folder = copy_profiles(tmp_path)
    flip_byte(folder / PROFILE_OF[env_id])
    with pytest.raises(ProfileError, match=rf"{PROFILE_OF[env_id]}.*SHA-256 differs.*edgelam profile"):
        make(env_id, profile_dir=str(folder))


@pytest.mark.parametrize("env_id", sorted(PROFILE_OF))
def test_env_on_a_missing_profile_raises_profile_error(env_id, tmp_path):
    folder = copy_profiles(tmp_path)
    (folder / PROFILE_OF[env_id]).unlink()
    with pytest.raises(ProfileError, match=rf"{PROFILE_OF[env_id]}.*missing.*edgelam profile"):
        make(env_id, profile_dir=str(folder))
    with pytest.raises(ProfileError, match=r"missing.*edgelam profile"):
        make(env_id, profile_dir=str(tmp_path / "no_such_folder"))


@pytest.mark.parametrize("env_id", sorted(PROFILE_OF))
def test_env_on_a_truncated_profile_with_a_matching_manifest_raises_profile_error(env_id, tmp_path):
    """A file cut short whose SHA-256 was re-recorded: the hash passes, reading it must not crash."""
    folder = copy_profiles(tmp_path)
    path = folder / PROFILE_OF[env_id]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][path.name] = replay_mod.sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ProfileError, match=rf"{path.name}.*cannot be read.*edgelam profile"):
        make(env_id, profile_dir=str(folder))


@pytest.mark.parametrize("env_id", ["edgelam/FedFTAllocation-v0", "edgelam/FedFTPower-v0"])
def test_corrupt_or_missing_fedft_surrogate_raises_a_clear_value_error(env_id, tmp_path):
    shipped = Path(lam.__file__).resolve().parents[1] / "fedft" / "surrogate.json"
    path = tmp_path / "surrogate.json"
    path.write_text(shipped.read_text())
    make(env_id, profile_dir=str(tmp_path)).close()  # the control: an intact copy builds
    path.write_text(shipped.read_text()[:100])
    with pytest.raises(ValueError, match=r"surrogate\.json is corrupt \(JSONDecodeError.*fedft\.profile"):
        make(env_id, profile_dir=str(tmp_path))
    data = json.loads(shipped.read_text())
    del data["params"]["sigma"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"surrogate\.json is corrupt \(KeyError: 'sigma'"):
        make(env_id, profile_dir=str(tmp_path))
    path.unlink()
    with pytest.raises(ValueError, match=r"surrogate\.json is missing.*fedft\.profile"):
        make(env_id, profile_dir=str(tmp_path))


def test_corrupt_microservice_catalog_raises_a_clear_value_error(tmp_path):
    shipped = Path(lam.__file__).resolve().parents[1] / "microservice_routing" / "catalog.json"
    bad = tmp_path / "catalog.json"
    bad.write_text(shipped.read_text()[:200])
    with pytest.raises(ValueError, match=r"catalog.*catalog\.json"):
        gym.make("edgelam/MicroserviceRouting-v0", catalog_path=str(bad))
    bad.write_text(json.dumps({"microservices": {}}))
    with pytest.raises(ValueError, match=r"catalog.*catalog\.json has no 'executed_lm'"):
        gym.make("edgelam/MicroserviceRouting-v0", catalog_path=str(bad))
    data = json.loads(shipped.read_text())
    for entry in data["microservices"].values():
        del entry["weight_bytes"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"catalog.*catalog\.json is malformed \(KeyError.*weight_bytes"):
        gym.make("edgelam/MicroserviceRouting-v0", catalog_path=str(bad))
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"catalog.*cannot read.*catalog\.json"):
        gym.make("edgelam/MicroserviceRouting-v0", catalog_path=str(bad))
    with pytest.raises(ValueError, match=r"catalog.*cannot read"):
        gym.make("edgelam/MicroserviceRouting-v0", catalog_path=str(tmp_path / "missing.json"))


# -- shipped weights and assets -------------------------------------------------------------------


@pytest.fixture
def assets_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped assets folder (files symlinked) that the runtime reads instead."""
    src = lam.assets_dir()
    dst = Path(shutil.copytree(src, tmp_path / "assets", copy_function=os.symlink))
    for module in (lam, model_mod, replay_mod):
        monkeypatch.setattr(module, "assets_dir", lambda: dst)
    return dst


def test_missing_shipped_weights_raise_a_clear_error(assets_copy):
    (assets_copy / "models" / "edge" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shipped model 'edge' is missing .*model\.safetensors.*build_family"):
        lam.load("edge")
    assert lam.load("device", fresh=True).num_layers >= 1  # the rest of the copy still loads
    with pytest.raises(FileNotFoundError, match=r"edge.*model\.safetensors.*build_family"):
        gym.make("edgelam/Offload-v0", backend="live")


def test_replay_needs_no_weights(assets_copy, tmp_path):
    """Replay reads only the profiles: with every weight file gone it still builds and steps."""
    shipped = episode("edgelam/SplitInference-v0", seed=3)  # before: a cached profile would hide a re-read
    profile_dir = str(copy_profiles(tmp_path))
    for name in lam.SHIPPED_MODELS:
        (assets_copy / "models" / name / "model.safetensors").unlink()
    without_weights = episode("edgelam/SplitInference-v0", seed=3, profile_dir=profile_dir)
    assert len(without_weights) == len(shipped) > 2
    assert same(without_weights, shipped)


def test_missing_prompts_and_model_card_raise_a_clear_error(assets_copy):
    (assets_copy / "prompts.jsonl").unlink()
    (assets_copy / "family.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"prompts\.jsonl is missing.*build_family"):
        lam.load_prompts()
    with pytest.raises(FileNotFoundError, match=r"family\.json is missing.*build_family"):
        lam.family_card()


# -- scenario files -------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_bad_scenario_files_raise_value_error(env_id, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("episode_length: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad YAML in .*bad\.yaml"):
        make(env_id, scenario=str(bad))
    bad.write_text("- episode_length\n- 5\n")
    with pytest.raises(ValueError, match="expected a YAML mapping"):
        make(env_id, scenario=str(bad))
    bad.write_text("episode_length: 5\nno_such_key: 1\n")
    with pytest.raises(ValueError, match="unknown config key 'no_such_key'"):
        make(env_id, scenario=str(bad))
    bad.write_bytes(b"episode_length: \xff\xfe\n")
    with pytest.raises(ValueError, match=r"cannot read config file .*bad\.yaml.*utf-8"):
        make(env_id, scenario=str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        make(env_id, scenario=str(tmp_path / "missing.yaml"))


# -- solver failures ------------------------------------------------------------------------------


def _solver_fails(monkeypatch) -> None:
    def solve(self, *args, **kwargs):
        raise cp.error.SolverError("solver crashed (injected by the test)")

    monkeypatch.setattr(cp.Problem, "solve", solve)


def _solver_returns_nothing(monkeypatch) -> None:
    monkeypatch.setattr(cp.Problem, "solve", lambda self, *args, **kwargs: None)


N0 = 10 ** (-174 / 10) / 1000


@pytest.mark.parametrize("failure", [_solver_fails, _solver_returns_nothing])
def test_min_energy_solver_failure_gives_the_flagged_feasible_fallback(failure, monkeypatch):
    gains = np.array([1e-11, 3e-12, 1e-12])
    bits, deadline, band, p_max = 1e5, 2.0, 2e5, 0.2
    b_ok, _, status = min_energy_allocation(gains, bits, deadline, band, N0, p_max, return_status=True)
    assert status == "optimal"
    failure(monkeypatch)
    b, p, status = min_energy_allocation(gains, bits, deadline, band, N0, p_max, return_status=True)
    assert status.startswith("fallback: solver status")
    np.testing.assert_allclose(b, band / 3)  # the equal baseline: fair band at full power
    np.testing.assert_allclose(p, p_max)
    assert b.sum() <= band * (1 + 1e-12) and np.all(b > 0) and np.all((p > 0) & (p <= p_max))
    assert np.all(upload_rate_bps(b, p, gains, N0) * deadline >= bits)  # feasible here: every deadline made
    assert not np.allclose(b, b_ok)  # the solver's optimum was not equal shares: the fallback really ran


def test_fedft_min_energy_policy_flags_the_fallback_and_the_env_steps(monkeypatch):
    env = gym.make("edgelam/FedFTAllocation-v0")
    policy = baselines.make("min_energy", env)
    obs, _ = env.reset(seed=0)
    policy.predict(obs)
    assert policy.solver_status.startswith("optimal")
    _solver_fails(monkeypatch)
    action, _ = policy.predict(obs)
    assert policy.solver_status.startswith("fallback")
    assert env.action_space.contains(action)
    _, reward, _, _, info = env.step(action)
    assert np.isfinite(reward) and info["bandwidth_hz"].sum() <= env.unwrapped.config.bandwidth_hz * (1 + 1e-9)


@pytest.mark.parametrize("failure", [_solver_fails, _solver_returns_nothing])
def test_multi_user_cvxpy_solver_failure_gives_the_flagged_closed_form(failure, monkeypatch):
    env = make_parallel("edgelam/MultiUserOffload-v0")
    policy = baselines.make("cvxpy", env)
    obs, _ = env.reset(seed=0)
    policy.predict(obs)
    assert policy.solver_status == "optimal"
    failure(monkeypatch)
    actions, _ = policy.predict(obs)
    assert policy.solver_status.startswith("fallback: relaxation")
    assert "allocation solver failed" in policy.solver_status or "relaxation status" in policy.solver_status
    band, compute = env._allocation
    tiers = np.array([actions[a] for a in env.possible_agents])
    a, s, _ = policy._split(tiers)
    off, edge = tiers != 0, tiers == 1
    if off.any():
        np.testing.assert_allclose(band[off], sqrt_allocation(a[off]))
    if edge.any():
        np.testing.assert_allclose(compute[edge], sqrt_allocation(s[edge]))
    assert band.sum() <= 1 + 1e-9 and compute.sum() <= 1 + 1e-9
    _, rewards, _, _, infos = env.step(actions)
    assert all(np.isfinite(r) for r in rewards.values())
    assert not any(info["allocation_projected"] for info in infos.values())
