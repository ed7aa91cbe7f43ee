"""The edge model toolbox: one LoRA adapter per task on the shared ``edge`` backbone, and the measured
quality of every model of the family on every task (the model set of an edge model cache, issue #17).

Tian et al.'s edge-cloud BAIM framework keeps, at each edge server, a toolbox of compact task
models derived from the large cloud model; an edge serves a request with the model of its task if
it holds it, with another model otherwise, or forwards it to the cloud. edgelam's toolbox is real:

* **Tasks** are partitions of the family's corpus (the CPython standard library, see
  :mod:`.build_family`) by top-level package (:data:`TASKS`, :func:`task_of`): GUI code, packaging
  tools, concurrency, web and mail protocols, and the core library (everything else).
* **Task models** are LoRA adapters (Hu et al., ICLR 2022; :mod:`.lora`, rank 8 on every attention
  and MLP projection) trained on the task's training files on a private copy of ``edge``; the
  backbone is shared, so a cache holding several task models stores it once and an adapter's size
  is :func:`.lora.lora_bytes` of its state.
* **Quality** (:func:`measure_quality`) is the next-token top-1 accuracy and the cross-entropy
  (nats per token) of each model -- ``device``, ``edge`` (the general edge model), ``edge`` with each
  task's adapter, and ``cloud`` -- on each task's held-out tokens: the family's held-out files
  (``crc32(path) % 40 == 0``, never trained on by any model) of that task, cut into 256-token
  windows. The general models differ by size; a task adapter is the specialist of its own task.

The shipped build (``python -m edgelam.envs.lam.toolbox``: 120 steps per task, seed 0, about 7 min a
task on one core) measures, top-1 accuracy on a task of its own adapter against the general edge
model: GUI 0.347 / 0.332, packaging 0.383 / 0.366, concurrency 0.397 / 0.374, web 0.317 / 0.312,
core 0.303 / 0.304 (cross-entropy 3.534 / 3.580, 3.215 / 3.307, 3.276 / 3.364, 3.709 / 3.705,
3.784 / 3.788 nats); ``device`` scores 0.258-0.323 and ``cloud`` 0.359-0.433 on the five. An adapter
costs 1-5 points of top-1 on the other tasks. Web and core code is closest to the rest of the
corpus, which the general model was trained on, so there the specialist gains nothing.

``python -m edgelam.envs.lam.toolbox`` (needs the corpus, i.e. the standard library of the Python
that built the family, and torch) trains the adapters and writes
``assets/toolbox/adapters.npz`` (float16 states), ``assets/toolbox/heldout.npz`` (each task's
held-out token ids) and ``profiles/toolbox_quality.npz`` (the quality tables) with a manifest.
:func:`load_quality` reads the shipped tables without torch; :func:`measure_quality` recomputes
them from the shipped adapters and tokens, which is what tests/lam/test_toolbox.py checks.
:func:`toolbox_catalogue` prices the cacheable models at the size of real model cards, as a
:class:`~edgelam.envs.core.caching.Catalogue` whose task models share their backbone.
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.envs.core.caching import Catalogue
from edgelam.envs.core.model_cards import LORA_PROJECTIONS, ModelCard

from . import assets_dir

# task -> the top-level packages of the standard library it holds ("core": every file no other task claims)
TASKS: dict[str, tuple[str, ...]] = {
    "gui": ("idlelib", "tkinter", "turtledemo", "curses"),
    "packaging": ("distutils", "lib2to3", "importlib", "ensurepip", "venv"),
    "concurrency": ("asyncio", "multiprocessing", "concurrent"),
    "web": ("email", "http", "urllib", "xml", "xmlrpc", "html", "wsgiref", "json"),
    "core": (),
}
GENERAL_MODELS = ("device", "edge", "cloud")
LORA_RANK = 8
LORA_ALPHA = 16.0
LORA_TARGETS = LORA_PROJECTIONS  # every attention and MLP projection of each layer
SEQ_LEN = 256
BATCH = 16
STEPS = 120
LR = 2e-3


def task_of(rel: str) -> str:
    """The task of a corpus file given its path relative to the standard library (``a/b.py``)."""
    top = rel.split("/", 1)[0] if "/" in rel else ""
    for task, packages in TASKS.items():
        if top in packages:
            return task
    return "core"


def toolbox_dir() -> Path:
    return assets_dir() / "toolbox"


def quality_path() -> Path:
    return Path(__file__).resolve().parent / "profiles" / "toolbox_quality.npz"


@dataclass(frozen=True)
class Quality:
    """The measured tables: ``models`` (rows: the general models, then ``edge+<task>`` per task), ``tasks``
    (columns, :data:`TASKS` order), ``top1`` and ``loss`` ``(models, tasks)``, ``tokens`` per task (held-out
    positions scored) and ``adapter_bytes`` per task (its fp16 state)."""

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    top1: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray
    adapter_bytes: np.ndarray

    def row(self, model: str) -> int:
        if model not in self.models:
            raise ValueError(f"unknown toolbox model {model!r} (known: {', '.join(self.models)})")
        return self.models.index(model)


def load_quality(path: str | Path | None = None) -> Quality:
    """The shipped quality tables (no torch needed)."""
    p = Path(path) if path is not None else quality_path()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no toolbox quality profile; run python -m edgelam.envs.lam.toolbox")
    with np.load(p) as z:
        return Quality(
            models=tuple(str(m) for m in z["models"]),
            tasks=tuple(str(t) for t in z["tasks"]),
            top1=z["top1"].astype(np.float64),
            loss=z["loss"].astype(np.float64),
            tokens=z["tokens"].astype(np.int64),
            adapter_bytes=z["adapter_bytes"].astype(np.int64),
        )


def load_heldout(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Each task's held-out token ids, ``(windows, SEQ_LEN)`` uint16."""
    p = Path(path) if path is not None else toolbox_dir() / "heldout.npz"
    with np.load(p) as z:
        return {task: z[task] for task in TASKS}


def load_adapters(path: str | Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Each task's adapter state (``"<module>.lora_A"`` / ``".lora_B"`` -> float16 array)."""
    p = Path(path) if path is not None else toolbox_dir() / "adapters.npz"
    out: dict[str, dict[str, np.ndarray]] = {task: {} for task in TASKS}
    with np.load(p) as z:
        for key in z.files:
            task, _, name = key.partition("/")
            out[task][name] = z[key]
    return out


def toolbox_catalogue(tasks: tuple[str, ...] | list[str], backbone: ModelCard, small: ModelCard,
                      weight_bits: int = 16, adapter_bits: int = 16, *, big: ModelCard | None = None,
                      merged: bool = False) -> Catalogue:
    """The cacheable models of the toolbox of ``tasks`` priced at real size: ``device`` is the ``small``
    card's weights, ``edge`` the ``backbone`` card's, ``edge+<task>`` the backbone with that task's LoRA
    adapter (:meth:`~edgelam.envs.core.model_cards.ModelCard.lora_params` at :data:`LORA_RANK` on
    :data:`LORA_TARGETS`, ``adapter_bits`` per parameter) and, with ``big``, ``cloud`` the big card's
    weights cached at the edge. The backbone is one block that ``edge`` and every task model share;
    ``merged=True`` deploys each task model instead as its own copy of the backbone with the adapter
    merged into the weights (its own block, the backbone's size). Model order: ``device``, ``edge``, the
    task models in ``tasks`` order, then ``cloud``."""
    for bits, key in ((weight_bits, "weight_bits"), (adapter_bits, "adapter_bits")):
        if bits not in (4, 8, 16, 32):
            raise ValueError(f"{key}: {bits!r} is not one of 4, 8, 16, 32")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"tasks: unknown toolbox task(s) {unknown} (known: {', '.join(TASKS)})")
    n = len(tasks)
    weights = int(backbone.total_weight_bytes(weight_bits))
    adapter = int(backbone.lora_params(LORA_RANK, LORA_TARGETS) * adapter_bits // 8)
    blocks = [weights, int(small.total_weight_bytes(weight_bits)), *((weights if merged else adapter,) * n)]
    task_blocks = tuple((2 + j,) if merged else (0, 2 + j) for j in range(n))
    models = [(1,), (0,), *task_blocks]
    names = ["device", "edge", *(f"edge+{t}" for t in tasks)]
    if big is not None:
        blocks.append(int(big.total_weight_bytes(weight_bits)))
        models.append((2 + n,))
        names.append("cloud")
    return Catalogue(tuple(blocks), tuple(models), tuple(names))


def _windows(ids: np.ndarray) -> np.ndarray:
    n = len(ids) // SEQ_LEN
    return ids[: n * SEQ_LEN].reshape(n, SEQ_LEN)


def measure_quality(
    adapters: dict[str, dict[str, np.ndarray]] | None = None,
    heldout: dict[str, np.ndarray] | None = None,
    tasks: tuple[str, ...] | None = None,
) -> Quality:
    """Run every model of the toolbox on each task's held-out windows (see the module docstring).

    ``tasks`` limits the columns (and the adapter rows) measured; default all of :data:`TASKS`."""
    import torch

    from .build_family import heldout_metrics
    from .lora import lora_bytes

    adapters = load_adapters() if adapters is None else adapters
    heldout = load_heldout() if heldout is None else heldout
    tasks = tuple(TASKS) if tasks is None else tasks
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown toolbox task(s) {unknown} (known: {', '.join(TASKS)})")
    models = [*GENERAL_MODELS, *(f"edge+{t}" for t in tasks)]
    top1 = np.zeros((len(models), len(tasks)))
    loss = np.zeros_like(top1)
    tokens = np.zeros(len(tasks), dtype=np.int64)
    torch.manual_seed(0)
    for i, name in enumerate(models):
        lm = toolbox_model(name, adapters)
        for j, task in enumerate(tasks):
            loss[i, j], top1[i, j] = heldout_metrics(lm.model, heldout[task])
            tokens[j] = heldout[task].shape[0] * (SEQ_LEN - 1)
    adapter_bytes = np.array(
        [lora_bytes({k: torch.as_tensor(v) for k, v in adapters[t].items()}, bits=16) for t in tasks], dtype=np.int64
    )
    return Quality(tuple(models), tasks, top1, loss, tokens, adapter_bytes)


# the models of the per-window profile, in the order of the edge model cache's catalogue (envs/model_cache)
WINDOW_MODELS: tuple[str, ...] = ("device", "edge", *(f"edge+{t}" for t in TASKS), "cloud")


def windows_path() -> Path:
    return Path(__file__).resolve().parent / "profiles" / "toolbox_windows.npz"


def toolbox_model(name: str, adapters: dict[str, dict[str, np.ndarray]] | None = None):
    """The model ``name`` of :data:`WINDOW_MODELS` as an ``LM``: a shipped general model, or a private copy
    of ``edge`` with the task's shipped adapter attached (``edge+<task>``)."""
    import torch

    from .lora import attach_lora, load_lora_state
    from .model import load

    if name not in WINDOW_MODELS:
        raise ValueError(f"unknown toolbox model {name!r} (known: {', '.join(WINDOW_MODELS)})")
    if "+" not in name:
        return load(name)
    adapters = load_adapters() if adapters is None else adapters
    lm = load("edge", fresh=True)
    attach_lora(lm, rank=LORA_RANK, alpha=LORA_ALPHA, targets=LORA_TARGETS)
    state = adapters[name.split("+", 1)[1]]
    load_lora_state(lm, {k: torch.as_tensor(v.astype(np.float32)) for k, v in state.items()})
    return lm


def window_top1(model, windows: np.ndarray) -> np.ndarray:
    """Teacher-forced next-token top-1 accuracy of ``model`` on each window (rows of ``windows``), shape (n,).

    The mean over a task's windows is that task's column of :func:`measure_quality` (every window
    scores ``SEQ_LEN - 1`` positions)."""
    import torch

    model.eval()
    x = torch.from_numpy(np.asarray(windows).astype(np.int64))
    out = np.empty(len(x))
    with torch.no_grad():
        for i in range(0, len(x), 20):
            batch = x[i : i + 20]
            logits = model(input_ids=batch).logits
            out[i : i + len(batch)] = (logits[:, :-1].argmax(-1) == batch[:, 1:]).double().mean(-1).numpy()
    return out


@dataclass(frozen=True)
class Windows:
    """The per-window profile: ``top1[m, w]`` of model ``models[m]`` on held-out window w; window w is of
    task ``task[w]`` (index into ``tasks``) and is that task's window ``index[w]``."""

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    top1: np.ndarray
    task: np.ndarray
    index: np.ndarray

    def windows_of(self, task: int) -> np.ndarray:
        """Indices w of the windows of task ``task``."""
        return np.flatnonzero(self.task == task)


def measure_windows(heldout: dict[str, np.ndarray] | None = None,
                    adapters: dict[str, dict[str, np.ndarray]] | None = None) -> Windows:
    """Run every model of :data:`WINDOW_MODELS` on every held-out window of every task (torch)."""
    import torch

    heldout = load_heldout() if heldout is None else heldout
    torch.manual_seed(0)
    task = np.concatenate([np.full(len(heldout[t]), j) for j, t in enumerate(TASKS)]).astype(np.int64)
    index = np.concatenate([np.arange(len(heldout[t])) for t in TASKS]).astype(np.int64)
    windows = np.concatenate([heldout[t] for t in TASKS])
    top1 = np.stack([window_top1(toolbox_model(m, adapters).model, windows) for m in WINDOW_MODELS])
    return Windows(WINDOW_MODELS, tuple(TASKS), top1, task, index)


def load_windows(path: str | Path | None = None) -> Windows:
    """The shipped per-window profile (no torch needed)."""
    p = Path(path) if path is not None else windows_path()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no toolbox window profile; run python -m edgelam.envs.lam.toolbox --windows")
    with np.load(p) as z:
        return Windows(tuple(str(m) for m in z["models"]), tuple(str(t) for t in z["tasks"]),
                       z["top1"].astype(np.float64), z["task"].astype(np.int64), z["index"].astype(np.int64))


def save_windows(w: Windows, path: str | Path | None = None) -> Path:
    p = Path(path) if path is not None else windows_path()
    np.savez_compressed(p, models=np.array(w.models), tasks=np.array(w.tasks), top1=w.top1, task=w.task,
                        index=w.index)
    return p


def build(stdlib: Path, steps: int, seed: int, out_assets: Path, out_profile: Path, log=print) -> dict[str, Any]:
    """Train every task's adapter, measure the tables and write them (see the module docstring)."""
    import torch

    from .build_family import encode_stream, is_heldout, read_corpus
    from .lora import attach_lora, lora_state, train_lora_steps
    from .model import load

    rels, texts, corpus_sha = read_corpus(stdlib)
    tokenizer = load("edge").tokenizer
    train_ids: dict[str, np.ndarray] = {}
    heldout: dict[str, np.ndarray] = {}
    counts: dict[str, dict[str, int]] = {}
    for task in TASKS:
        mine = [(r, t) for r, t in zip(rels, texts, strict=True) if task_of(r) == task]
        train_ids[task] = encode_stream(tokenizer, [t for r, t in mine if not is_heldout(r)])
        heldout[task] = _windows(encode_stream(tokenizer, [t for r, t in mine if is_heldout(r)]))
        counts[task] = {"files": len(mine), "heldout_files": sum(is_heldout(r) for r, _ in mine),
                        "train_tokens": len(train_ids[task]), "heldout_windows": len(heldout[task])}
        log(f"toolbox: {task}: {counts[task]}")
    adapters: dict[str, dict[str, np.ndarray]] = {}
    curves: dict[str, list[float]] = {}
    for k, task in enumerate(TASKS):
        began = time.perf_counter()
        rng = np.random.default_rng(seed + k)
        ids = train_ids[task]
        starts = rng.integers(0, len(ids) - SEQ_LEN - 1, size=(steps, BATCH))
        batches = [np.stack([ids[s : s + SEQ_LEN] for s in row]).astype(np.int64) for row in starts]
        lm = load("edge", fresh=True)
        attach_lora(lm, rank=LORA_RANK, alpha=LORA_ALPHA, targets=LORA_TARGETS, seed=seed + k)
        torch.manual_seed(seed + k)
        curves[task] = train_lora_steps(lm, batches, steps, lr=LR)
        adapters[task] = {name: t.numpy().astype(np.float16) for name, t in lora_state(lm).items()}
        log(f"toolbox: {task}: {steps} steps, loss {curves[task][0]:.3f} -> {np.mean(curves[task][-20:]):.3f}, "
            f"{time.perf_counter() - began:.0f} s")
    out_assets.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_assets / "adapters.npz",
                        **{f"{task}/{name}": v for task, state in adapters.items() for name, v in state.items()})
    np.savez_compressed(out_assets / "heldout.npz", **heldout)
    q = measure_quality(load_adapters(out_assets / "adapters.npz"), load_heldout(out_assets / "heldout.npz"))
    out_profile.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_profile, models=np.array(q.models), tasks=np.array(q.tasks), top1=q.top1, loss=q.loss,
             tokens=q.tokens, adapter_bytes=q.adapter_bytes)
    manifest = {
        "command": f"python -m edgelam.envs.lam.toolbox --steps {steps} --seed {seed}",
        "corpus_sha256": corpus_sha,
        "tasks": {t: {"packages": list(p) or "every other file", **counts[t]} for t, p in TASKS.items()},
        "lora": {"rank": LORA_RANK, "alpha": LORA_ALPHA, "targets": list(LORA_TARGETS), "steps": steps,
                 "batch": BATCH, "seq_len": SEQ_LEN, "lr": LR, "seed": seed},
        "train_loss": {t: {"first": c[0], "last20": float(np.mean(c[-20:]))} for t, c in curves.items()},
    }
    out_profile.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    save_windows(measure_windows(load_heldout(out_assets / "heldout.npz"), load_adapters(out_assets / "adapters.npz")),
                 out_profile.parent / windows_path().name)
    return manifest


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS, help="LoRA optimiser steps per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--windows", action="store_true",
                    help="only (re)record the per-window profile from the shipped adapters and held-out windows")
    args = ap.parse_args(argv)
    if args.windows:
        torch.set_num_threads(args.threads)
        print(f"wrote {save_windows(measure_windows())}")
        return
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    build(args.stdlib, args.steps, args.seed, toolbox_dir(), quality_path())
    q = load_quality()
    print("model".ljust(18) + "".join(t.rjust(13) for t in q.tasks))
    for i, m in enumerate(q.models):
        print(m.ljust(18) + "".join(f"{q.top1[i, j]:13.4f}" for j in range(len(q.tasks))))


if __name__ == "__main__":
    main()
