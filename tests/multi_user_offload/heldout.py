"""A reduced held-out set: the shipped ``offload`` replay profile cut to its first ``n`` tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgelam.envs.lam import load_manifest, load_profile
from edgelam.envs.lam.replay import MANIFEST, PROFILE_FILES, sha256_file


def write_heldout_subset(folder: Path, n: int) -> str:
    """Write the first ``n`` rows of the shipped ``offload.npz`` (and a manifest naming the same weights).

    The numbers are the shipped replay numbers, untouched, so live runs on these tasks must
    reproduce them. Returns the folder, for ``profile_dir=``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prof = load_profile("offload")
    fname = PROFILE_FILES["offload"]
    per_task = {k for k, v in prof.items() if v.ndim >= 1 and len(v) == len(prof["prompt_len"]) and k != "models"}
    np.savez(folder / fname, **{k: (v[:n] if k in per_task else v) for k, v in prof.items()})
    manifest = load_manifest()
    (folder / MANIFEST).write_text(json.dumps({
        "format_version": manifest["format_version"],
        "files": {fname: sha256_file(folder / fname)},
        "models": manifest["models"],
    }))
    return str(folder)
