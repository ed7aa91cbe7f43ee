"""Loading and verifying the replay profiles written by :mod:`.profile` (``edgelam profile``).

A profile folder (default: the shipped ``envs/lam/profiles/``) holds

* ``split_quality.npz``, ``acceptance.npz``, ``offload.npz`` -- arrays, each with a scalar
  ``format_version``;
* ``layer_times.json`` -- measured per-layer CPU times, with a ``format_version`` key;
* ``manifest.json`` -- ``format_version``, the SHA-256 of every file above (``files``) and of
  the weights of every model used (``models``: ``{name: {"weights_sha256", "layers", ...}}``),
  plus summary numbers (mean acceptance per draft variant, split quality per precision).

:func:`load_profile` checks the format version and the file's SHA-256 against the manifest,
and (by default) that the shipped model weights still hash to what the profile was recorded
with. Any missing, corrupt, stale or mismatched file raises :class:`ProfileError`, whose
message says to regenerate the profiles with ``edgelam profile``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import SHIPPED_MODELS, assets_dir

FORMAT_VERSION = 1
PROFILE_FILES = {
    "split_quality": "split_quality.npz",
    "acceptance": "acceptance.npz",
    "offload": "offload.npz",
    "layer_times": "layer_times.json",
}
MANIFEST = "manifest.json"
REGENERATE = "regenerate the profiles with `edgelam profile` (or `python -m edgelam.envs.lam.profile`)"

_LOADED: dict[tuple, dict[str, Any]] = {}
_WEIGHT_HASHES: dict[tuple, str] = {}


class ProfileError(ValueError):
    """A replay profile is missing, corrupt, of another format version, or stale."""


def profiles_dir() -> Path:
    """The shipped profile folder ``envs/lam/profiles/``."""
    return Path(__file__).resolve().parent / "profiles"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(folder: Path) -> str:
    """SHA-256 over a model folder's weight files (``*.safetensors``, ``*.bin``, ``*.index.json``)."""
    folder = Path(folder)
    files = sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")
    )
    if not files:
        raise FileNotFoundError(f"{folder} has no weight files")
    key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if key not in _WEIGHT_HASHES:
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode())
            digest.update(sha256_file(f).encode())
        _WEIGHT_HASHES[key] = digest.hexdigest()
    return _WEIGHT_HASHES[key]


def _error(folder: Path, what: str, problem: str) -> ProfileError:
    return ProfileError(f"replay profile {what} in {folder}: {problem}; {REGENERATE}")


def load_manifest(profile_dir: str | Path | None = None) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a profile folder (raises :class:`ProfileError`)."""
    folder = Path(profile_dir) if profile_dir is not None else profiles_dir()
    path = folder / MANIFEST
    if not path.exists():
        raise _error(folder, MANIFEST, "file is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(folder, MANIFEST, f"cannot be parsed ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise _error(folder, MANIFEST, f"format_version {version!r}, this edgelam reads {FORMAT_VERSION}")
    if not isinstance(manifest.get("files"), dict):
        raise _error(folder, MANIFEST, "has no 'files' table")
    return manifest


def _check_models(folder: Path, manifest: dict[str, Any]) -> None:
    for name, info in manifest.get("models", {}).items():
        model_dir = assets_dir() / "models" / name if name in SHIPPED_MODELS else Path(info.get("path", ""))
        if not (model_dir / "config.json").exists():
            continue  # weights not installed: nothing to compare against
        try:
            current = weights_sha256(model_dir)
        except FileNotFoundError:
            continue
        if current != info.get("weights_sha256"):
            raise _error(
                folder, MANIFEST, f"was recorded with other weights of model {name!r} than {model_dir} holds"
            )


def _read(path: Path, folder: Path, fname: str) -> dict[str, Any]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                data: dict[str, Any] = {k: npz[k] for k in npz.files}
            for arr in data.values():
                arr.setflags(write=False)
            version = int(data["format_version"]) if "format_version" in data else None
        else:
            data = json.loads(path.read_text())
            version = data.get("format_version")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise _error(folder, fname, f"cannot be read ({exc})") from exc
    if version != FORMAT_VERSION:
        raise _error(folder, fname, f"format_version {version!r}, this edgelam reads {FORMAT_VERSION}")
    return data


def load_profile(
    name: str, profile_dir: str | Path | None = None, verify_models: bool = True
) -> dict[str, Any]:
    """Load one replay profile after verifying it.

    Args:
        name: ``split_quality``, ``acceptance``, ``offload`` or ``layer_times`` (a file name
            with its extension is accepted too).
        profile_dir: folder written by ``edgelam profile --out``; default the shipped one.
        verify_models: also check that installed model weights match the manifest.

    Returns:
        For ``.npz`` profiles a dict of read-only numpy arrays; for ``layer_times`` the
        parsed JSON dict. Results are cached per file version.

    Raises:
        ProfileError: unknown name, or a missing, corrupt, stale or mismatched file.
    """
    stem = name.split(".")[0]
    if stem not in PROFILE_FILES:
        raise ProfileError(f"unknown replay profile {name!r}; known: {', '.join(PROFILE_FILES)}")
    fname = PROFILE_FILES[stem]
    folder = (Path(profile_dir) if profile_dir is not None else profiles_dir()).resolve()
    path = folder / fname
    manifest_path = folder / MANIFEST
    if not path.exists():
        raise _error(folder, fname, "file is missing")
    if not manifest_path.exists():
        raise _error(folder, MANIFEST, "file is missing")
    key = (
        str(path),
        path.stat().st_mtime_ns,
        path.stat().st_size,
        manifest_path.stat().st_mtime_ns,
        verify_models,
    )
    if key not in _LOADED:
        manifest = load_manifest(folder)
        expected = manifest["files"].get(fname)
        if expected is None:
            raise _error(folder, fname, "is not listed in manifest.json")
        if sha256_file(path) != expected:
            raise _error(folder, fname, "SHA-256 differs from manifest.json (corrupt or edited)")
        if verify_models:
            _check_models(folder, manifest)
        _LOADED[key] = _read(path, folder, fname)
    return dict(_LOADED[key])


def profile_models(profile_dir: str | Path | None = None) -> dict[str, Path]:
    """The models a profile was recorded with, smallest to largest, as ``{name: folder}``.

    Shipped names map to their folder under ``assets/models/``; other models to the ``path``
    the manifest records. The last entry is the executed (split) and target (speculative) model.
    A manifest without a model list (written by hand, or before ``edgelam profile`` recorded
    one) is of the shipped family.

    Raises:
        ProfileError: a malformed model list, or a model without its folder.
    """
    folder = Path(profile_dir) if profile_dir is not None else profiles_dir()
    manifest = load_manifest(folder)
    if "models" not in manifest.get("settings", {}):
        return {name: assets_dir() / "models" / name for name in SHIPPED_MODELS}
    names = manifest.get("settings", {}).get("models")
    info = manifest.get("models")
    if not isinstance(names, list) or not names or not isinstance(info, dict):
        raise _error(folder, MANIFEST, "lists no models (settings.models)")
    out: dict[str, Path] = {}
    for name in names:
        entry = info.get(name, {})
        if "path" in entry:
            out[name] = Path(entry["path"])
        elif name in SHIPPED_MODELS:
            out[name] = assets_dir() / "models" / name
        else:
            raise _error(folder, MANIFEST, f"records no folder (models.{name}.path) for model {name!r}")
    return out


def executed_model(profile_dir: str | Path | None = None) -> tuple[str, Path]:
    """``(name, folder)`` of the model a profile executed: the split model and the speculative target."""
    name, path = list(profile_models(profile_dir).items())[-1]
    return name, path
