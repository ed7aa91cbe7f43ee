"""A toy ``offload`` replay profile with known numbers, written to a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgelam.envs.lam.replay import FORMAT_VERSION, sha256_file

# 6 tasks; tier quality rises with model size, the device confidence tracks the device accuracy
CONFIDENCE = np.array([0.9, 0.8, 0.6, 0.4, 0.2, 0.1])
QUALITY = np.stack([CONFIDENCE * 0.8, np.full(6, 0.55), np.full(6, 0.7)], axis=1)


def write_toy_profile(folder: Path) -> str:
    """Write ``offload.npz`` + ``manifest.json`` for models (device, edge, cloud); return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "offload.npz"
    np.savez(
        path,
        format_version=np.int64(FORMAT_VERSION),
        models=np.array(["device", "edge", "cloud"]),
        ref_accuracy=QUALITY.astype(np.float32),
        nll_nats=np.ones((6, 3), np.float32),
        confidence=np.stack([CONFIDENCE] * 3, axis=1).astype(np.float32),
        prompt_len=np.array([32, 64, 96, 128, 48, 80]),
        ref_len=np.full(6, 32),
        prompt_index=np.arange(6),
    )
    manifest = {"format_version": FORMAT_VERSION, "files": {"offload.npz": sha256_file(path)}, "models": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)
