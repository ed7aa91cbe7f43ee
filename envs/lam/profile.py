"""Profile the real models into replay files (``edgelam profile``; ``python -m edgelam.envs.lam.profile``).

Every number comes from executing the models -- the shipped family by default, or any local
Hugging Face Llama-style causal-LM folders (``--models``) -- on a prompt set: the shipped held-out
one (:func:`~edgelam.envs.lam.load_prompts`) or a user's JSONL file of ``prompt`` / ``reference``
texts (``--prompts``; :mod:`.prompts`), which each model tokenizes with its own tokenizer. ``models``
lists the family from smallest to largest; the last one is the executed/target model (``cloud`` by
default). Independent speculative drafts (``drafts``: by default every other model) must tokenize
like the target (:func:`check_same_tokens`; a mismatched pair is refused naming both).

Models run on ``device`` (``cpu``, or ``cuda`` where torch sees a GPU). Each stage shows a progress
bar and checkpoints its per-prompt rows every :data:`CHECKPOINT_S` seconds into
``<out>/.profile-checkpoint/``; rerunning the same command resumes an interrupted run (finished files
are kept when their SHA-256 still matches), and a run of other models, prompts or settings starts
afresh. Files written (all ``.npz`` carry a scalar ``format_version``; ``P`` prompts, ``L`` layers of
the executed model; ``prompt_len`` / ``ref_len`` count the executed model's tokens):

``split_quality.npz`` (executed model split after layer ``l``, hidden state at 4/8/16 bits,
per-token scales, no bit errors; see :mod:`.split`)
    ``model`` (str), ``split_layers`` (L+1,), ``bits`` (3,) = [4, 8, 16],
    ``bytes_per_token`` (3,) payload bytes per token incl. the fp16 scale,
    ``top1_agreement``, ``kl_nats``, ``ref_accuracy`` (P, L+1, 3), ``ref_accuracy_full`` (P,),
    ``prompt_len`` (P,), ``ref_len`` (P,), ``prompt_index`` (P,).

``acceptance.npz`` (speculative decoding; :func:`.speculative.acceptance_probability`)
    ``target`` (str), ``variants`` (V,) = [device, edge, early_exit:2, int8],
    ``temperatures`` (T,) = [0.0, 1.0], ``beta`` (V, T, P, N) per-position acceptance
    probability ``sum_x min(p, q)`` (T = 0: 1.0 iff the argmaxes agree) along the target's
    own generation of ``N = 32`` tokens sampled at that temperature with seed
    ``seeds[t, p]``, ``tokens`` (T, P, N) that generation, ``seeds`` (T, P),
    ``mean_acceptance`` (V, T) = mean of ``beta`` over prompts and positions,
    ``prompt_len`` (P,), ``prompt_index`` (P,).

``offload.npz`` (each model alone, teacher-forced on the 32 reference tokens)
    ``models`` (M,) = [device, edge, cloud], ``ref_accuracy`` (P, M) top-1 accuracy,
    ``nll_nats`` (P, M) mean negative log-likelihood, ``confidence`` (P, M) mean max softmax
    probability, ``prompt_len`` (P,), ``ref_len`` (P,), ``prompt_index`` (P,); where the models
    are fed different tokens (different tokenizers), also ``prompt_len_per_model`` and
    ``ref_len_per_model`` (P, M).

``layer_times.json``
    ``format_version``, ``torch_version``, ``threads``, ``cpu``, ``repeats`` (``device``, the GPU's
    name, when not run on the CPU), and per model
    ``models[name]``: ``layers``, ``hidden_size``, ``prefill[seq_len]`` ->
    ``{"layer_s": [L], "embed_s", "head_s"}`` (median wall-clock CPU seconds of one
    prefill of ``seq_len`` tokens), ``decode`` -> ``{"context_len", "layer_s": [L], "embed_s",
    "head_s"}`` (seconds per decoded token with a KV cache of ``context_len`` tokens).

``prompts.jsonl`` (only with a prompt file): the records profiled, so the live backends and
:func:`~.prompts.profile_tokens` feed each model exactly what it was profiled on.

``manifest.json``: ``format_version``, SHA-256 of every file (``files``); per model (``models``)
the SHA-256 of its weights and ``config.json``, its folder (``path``, for non-shipped models),
architecture, vocabulary, parameters and tokenizer hash; the prompt set (``prompts``: source,
SHA-256, records), the hardware (``hardware``: device and its name, CPU, threads, platform), the
time (``created_utc``), the run's settings, timings and a ``summary`` (mean acceptance per draft
variant and temperature, mean split quality per precision, offload quality).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import SHIPPED_MODELS, assets_dir
from .model import LM, crop_cache, load, torch_device, weights_sha256
from .prompts import (
    MAX_PROMPT_TOKENS,
    MAX_REFERENCE_TOKENS,
    PROMPTS_FILE,
    model_records,
    read_prompts,
    shipped_records,
    tokenizer_sha256,
    uses_shipped_ids,
    write_prompts,
)
from .quantize import BITS, payload_bytes
from .replay import FORMAT_VERSION, MANIFEST, PROFILE_FILES, profiles_dir, sha256_file
from .speculative import acceptance_probability, make_draft, target_sample
from .split import split_quality_grid

TEMPERATURES = (0.0, 1.0)
GEN_TOKENS = 32
PREFILL_LENS = (32, 128, 256)
DECODE_CONTEXT = 128
CHECKPOINT_DIR = ".profile-checkpoint"  # inside --out while a run is unfinished; removed when it completes
CHECKPOINT_S = 30.0  # seconds between per-prompt checkpoints of a stage

Row = dict[str, np.ndarray]


@torch.no_grad()
def _teacher_forced(lm: LM, prompt: Sequence[int], continuation: Sequence[int]) -> torch.Tensor:
    """Logits ``(len(continuation), V)`` predicting ``continuation`` after ``prompt``."""
    ids = list(prompt) + list(continuation[:-1])
    return lm.logits(ids, last=len(continuation))[0]


def _offload_row(models: Sequence[LM], recs: Sequence[dict]) -> Row:
    """Teacher-forced quality of each model on one prompt, ``recs[j]`` as model ``j`` is fed it."""
    acc, nll, conf = np.zeros(len(models)), np.zeros(len(models)), np.zeros(len(models))
    for j, (lm, rec) in enumerate(zip(models, recs, strict=True)):
        ref = torch.tensor(rec["reference_ids"], device=lm.device)
        logp = torch.log_softmax(_teacher_forced(lm, rec["prompt_ids"], rec["reference_ids"]).double(), -1)
        acc[j] = float((logp.argmax(-1) == ref).double().mean())
        nll[j] = float(-logp.gather(-1, ref[:, None]).mean())
        conf[j] = float(logp.exp().amax(-1).mean())
    return {"ref_accuracy": acc, "nll_nats": nll, "confidence": conf}


def _offload_arrays(models: Sequence[LM], tokens: Sequence[Sequence[dict]], rows: Sequence[Row]) -> dict:
    """The ``offload.npz`` arrays from per-prompt rows; ``prompt_len`` / ``ref_len`` are of the last
    model's tokens, and ``(P, M)`` ``prompt_len_per_model`` / ``ref_len_per_model`` are added when the
    models are fed different tokens."""
    out = {
        "models": np.asarray([lm.name for lm in models]),
        **{k: np.stack([r[k] for r in rows]).astype(np.float32) for k in ("ref_accuracy", "nll_nats", "confidence")},
        **_prompt_arrays(tokens[-1]),
    }
    if any(_ids(t) != _ids(tokens[-1]) for t in tokens):
        for key, field in (("prompt_len_per_model", "prompt_ids"), ("ref_len_per_model", "reference_ids")):
            out[key] = np.asarray([[len(t[i][field]) for t in tokens] for i in range(len(tokens[-1]))])
    return out


def profile_offload(
    models: Sequence[LM], prompts: Sequence[dict], tokens: Sequence[Sequence[dict]] | None = None
) -> dict[str, np.ndarray]:
    """Quality of each model alone on each prompt's reference (see the module docstring).

    ``tokens[j]`` are the records as model ``j`` is fed them (default: ``prompts`` for every model).
    """
    per_model = list(tokens) if tokens is not None else [prompts] * len(models)
    rows = [_offload_row(models, [t[i] for t in per_model]) for i in range(len(prompts))]
    return _offload_arrays(models, per_model, rows)


SPLIT_KEYS = ("top1_agreement", "kl_nats", "ref_accuracy")


def _split_row(lm: LM, rec: dict) -> Row:
    grid = split_quality_grid(lm, rec["prompt_ids"], rec["reference_ids"], bits=BITS)
    return {**{k: grid[k] for k in SPLIT_KEYS}, "ref_accuracy_full": np.asarray(grid["ref_accuracy_full"])}


def _split_arrays(lm: LM, prompts: Sequence[dict], rows: Sequence[Row]) -> dict[str, np.ndarray]:
    return {
        "model": np.asarray(lm.name),
        "split_layers": np.arange(lm.num_layers + 1),
        "bits": np.asarray(BITS),
        "bytes_per_token": np.asarray([payload_bytes(1, lm.hidden_size, b) for b in BITS]),
        **{k: np.stack([r[k] for r in rows]).astype(np.float32) for k in SPLIT_KEYS},
        "ref_accuracy_full": np.asarray([r["ref_accuracy_full"] for r in rows], dtype=np.float32),
        **_prompt_arrays(prompts),
    }


def profile_split(lm: LM, prompts: Sequence[dict]) -> dict[str, np.ndarray]:
    """Split quality of ``lm`` for every prompt, split layer and precision."""
    return _split_arrays(lm, prompts, [_split_row(lm, rec) for rec in prompts])


def _shared_logits(p_logits: torch.Tensor, q_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both logits over the ids the two models share: the first ``min(V_p, V_q)`` (one tokenizer whose
    embeddings are padded to different sizes, e.g. Qwen2.5-0.5B's 151,936 rows and 7B's 152,064)."""
    v = min(p_logits.shape[-1], q_logits.shape[-1])
    return p_logits[..., :v], q_logits[..., :v]


def _acceptance_row(target: LM, drafts: Sequence[LM], rec: dict, temp: float, seed: int, n_tokens: int) -> Row:
    """The target's own generation of ``n_tokens`` after one prompt and each draft's acceptance along it."""
    gen = target_sample(target, rec["prompt_ids"], n_tokens, temp, seed=seed)
    p_logits = _teacher_forced(target, rec["prompt_ids"], gen)
    beta = np.zeros((len(drafts), n_tokens))
    for v, draft in enumerate(drafts):
        q_logits = _teacher_forced(draft, rec["prompt_ids"], gen)
        beta[v] = acceptance_probability(*_shared_logits(p_logits, q_logits), temp).cpu().numpy()
    return {"beta": beta, "tokens": np.asarray(gen), "seeds": np.asarray(seed)}


def _acceptance_seed(rec: dict, seed: int) -> int:
    return 100_000 * seed + int(rec["id"])


def _acceptance_arrays(
    target: LM, names: Sequence[str], prompts: Sequence[dict], temperatures: Sequence[float], rows: Sequence[Row]
) -> dict[str, np.ndarray]:
    """The ``acceptance.npz`` arrays from rows ordered temperature-major (``t * P + i``)."""
    shape = (len(temperatures), len(prompts))
    beta = np.stack([r["beta"] for r in rows]).reshape(*shape, len(names), -1).transpose(2, 0, 1, 3)
    beta = np.ascontiguousarray(beta, dtype=np.float32)
    return {
        "target": np.asarray(target.name),
        "variants": np.asarray(list(names)),
        "temperatures": np.asarray(temperatures, dtype=np.float64),
        "beta": beta,
        "mean_acceptance": beta.mean(axis=(2, 3)),
        "tokens": np.stack([r["tokens"] for r in rows]).reshape(*shape, -1).astype(np.int32),
        "seeds": np.asarray([r["seeds"] for r in rows], dtype=np.int64).reshape(shape),
        "prompt_len": np.asarray([len(r["prompt_ids"]) for r in prompts]),
        "prompt_index": np.asarray([int(r["id"]) for r in prompts]),
    }


def profile_acceptance(
    target: LM,
    drafts: dict[str, LM],
    prompts: Sequence[dict],
    temperatures: Sequence[float] = TEMPERATURES,
    n_tokens: int = GEN_TOKENS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-position acceptance probability of each draft along the target's own generations."""
    rows = [
        _acceptance_row(target, list(drafts.values()), rec, temp, _acceptance_seed(rec, seed), n_tokens)
        for temp in temperatures
        for rec in prompts
    ]
    return _acceptance_arrays(target, list(drafts), prompts, temperatures, rows)


def _ids(records: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    return [(list(r["prompt_ids"]), list(r["reference_ids"])) for r in records]


def check_same_tokens(target: LM, draft: LM, target_records: Sequence[dict], draft_records: Sequence[dict]) -> None:
    """Refuse a speculative draft/target pair whose token ids do not mean the same tokens.

    They must have the same vocabulary over the ids both embeddings hold (folders without a
    tokenizer: the same embedding size) and feed identical ids for every prompt.

    Raises:
        ValueError: naming both models and what differs.
    """
    pair = f"draft {draft.name!r} ({draft.path}) and target {target.name!r} ({target.path})"
    fix = "speculative decoding needs one tokenizer; choose drafts that share the target's (--drafts)"
    if draft.tokenizer is not None and target.tokenizer is not None:
        shared = min(draft.vocab_size, target.vocab_size)
        if tokenizer_sha256(draft.tokenizer, shared) != tokenizer_sha256(target.tokenizer, shared):
            raise ValueError(f"{pair} have different tokenizers (their vocabularies differ); {fix}")
    elif draft.vocab_size != target.vocab_size:
        raise ValueError(
            f"{pair} have {draft.vocab_size}- and {target.vocab_size}-token vocabularies and no tokenizer to "
            f"compare; {fix}"
        )
    for t_rec, d_rec in zip(target_records, draft_records, strict=True):
        if _ids([t_rec]) != _ids([d_rec]):
            raise ValueError(f"{pair} tokenize prompt id {t_rec['id']} into different ids; {fix}")


def _synchronize(device: torch.device) -> None:
    """Wait for queued CUDA kernels, so a wall-clock reading covers the work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[..., object], repeats: int, *args, device: torch.device | None = None) -> float:
    """Median wall-clock seconds of ``fn(*args)`` over ``repeats`` calls (after one warm-up)."""
    dev = device or torch.device("cpu")
    fn(*args)
    times = []
    for _ in range(repeats):
        _synchronize(dev)
        t0 = time.perf_counter()
        fn(*args)
        _synchronize(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _model_times(lm: LM, stream: list[int], seq_lens: Sequence[int], repeats: int) -> dict:
    dev = lm.device
    prefill = {}
    for n in seq_lens:
        ids = stream[:n]
        h = lm.embed(ids)
        prefill[str(n)] = {
            "layer_s": [
                _median_time(lm.forward_layers, repeats, h, i, i + 1, device=dev) for i in range(lm.num_layers)
            ],
            "embed_s": _median_time(lm.embed, repeats, ids, device=dev),
            "head_s": _median_time(lm.head, repeats, h, device=dev),
        }
    cache = lm.new_cache()
    lm.logits(stream[:DECODE_CONTEXT], cache, last=1)
    token = stream[DECODE_CONTEXT : DECODE_CONTEXT + 1]
    per_layer = np.zeros((repeats + 1, lm.num_layers))
    for r in range(repeats + 1):  # the first pass warms up
        h = lm.embed(token)
        for i in range(lm.num_layers):
            _synchronize(dev)
            t0 = time.perf_counter()
            h = lm.forward_layers(h, i, i + 1, cache)
            _synchronize(dev)
            per_layer[r, i] = time.perf_counter() - t0
        crop_cache(cache, DECODE_CONTEXT)
    return {
        "layers": lm.num_layers,
        "hidden_size": lm.hidden_size,
        "prefill": prefill,
        "decode": {
            "context_len": DECODE_CONTEXT,
            "layer_s": np.median(per_layer[1:], axis=0).tolist(),
            "embed_s": _median_time(lm.embed, repeats, token, device=dev),
            "head_s": _median_time(lm.head, repeats, h, device=dev),
        },
    }


def _token_stream(prompts: Sequence[dict], need: int) -> list[int]:
    stream = [t for rec in prompts for t in rec["prompt_ids"] + rec["reference_ids"]]
    return (stream * (need // max(1, len(stream)) + 1))[:need]


@torch.no_grad()
def profile_layer_times(
    models: Sequence[LM],
    prompts: Sequence[dict],
    seq_lens: Sequence[int] = PREFILL_LENS,
    repeats: int = 10,
    tokens: Sequence[Sequence[dict]] | None = None,
) -> dict:
    """Median seconds per layer for prefill and per decoded token (see the module docstring), on the
    models' device; ``tokens[j]`` are the records as model ``j`` is fed them (default: ``prompts``)."""
    per_model = list(tokens) if tokens is not None else [prompts] * len(models)
    need = max(max(seq_lens), DECODE_CONTEXT + 1)
    return {
        "format_version": FORMAT_VERSION,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "repeats": repeats,
        "models": {
            lm.name: _model_times(lm, _token_stream(recs, need), seq_lens, repeats)
            for lm, recs in zip(models, per_model, strict=True)
        },
        **({"device": _device_name(models[-1].device)} if models[-1].device.type != "cpu" else {}),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()


def _prompt_arrays(prompts: Sequence[dict]) -> dict[str, np.ndarray]:
    return {
        "prompt_len": np.asarray([len(r["prompt_ids"]) for r in prompts]),
        "ref_len": np.asarray([len(r["reference_ids"]) for r in prompts]),
        "prompt_index": np.asarray([int(r["id"]) for r in prompts]),
    }


def _write_atomic(path: Path, write: Callable[[object], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        write(fh)
    os.replace(tmp, path)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    _write_atomic(
        path, lambda fh: np.savez_compressed(fh, format_version=np.asarray(FORMAT_VERSION), **arrays)
    )


def _write_json(path: Path, data: dict) -> None:
    _write_atomic(path, lambda fh: fh.write((json.dumps(data, indent=2) + "\n").encode()))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "format_version"}


def draft_variants(models: Sequence[LM], drafts: Sequence[str] | None = None) -> list[str]:
    """Draft variants profiled against the last model: the other models (or the names in ``drafts``),
    an early exit and int8."""
    target = models[-1]
    independent = [m.name for m in models[:-1]] if drafts is None else list(drafts)
    return [*independent, f"early_exit:{min(2, target.num_layers - 1)}", "int8"]


class _Checkpoint:
    """What an unfinished run has done, in ``<out>/.profile-checkpoint/``: finished stage files
    (by SHA-256) and the per-prompt rows of the stage under way. A run of other models, prompts or
    settings (another ``key``) starts afresh; a completed run removes the folder."""

    def __init__(self, folder: Path, key: str, resume: bool) -> None:
        self.folder = folder
        self.dir = folder / CHECKPOINT_DIR
        self.key = key
        state = self.dir / "state.json"
        loaded = None
        if resume and state.is_file():
            try:
                loaded = json.loads(state.read_text())
            except (OSError, json.JSONDecodeError):
                loaded = None
        if not isinstance(loaded, dict) or loaded.get("key") != key:
            shutil.rmtree(self.dir, ignore_errors=True)
            loaded = {"key": key, "stages": {}}
        self.state = loaded
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_json(state, self.state)

    def finished(self, fname: str) -> float | None:
        """Seconds the finished stage writing ``fname`` took, or ``None`` when it is not (intact) on disk."""
        entry = self.state["stages"].get(fname)
        path = self.folder / fname
        if entry is None or not path.is_file() or sha256_file(path) != entry["sha256"]:
            return None
        return float(entry["seconds"])

    def finish(self, fname: str, seconds: float) -> None:
        self.state["stages"][fname] = {"sha256": sha256_file(self.folder / fname), "seconds": seconds}
        _write_json(self.dir / "state.json", self.state)
        (self.dir / f"{fname}.rows.npz").unlink(missing_ok=True)

    def rows(self, fname: str) -> list[Row]:
        path = self.dir / f"{fname}.rows.npz"
        if not path.is_file():
            return []
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError):
            return []
        n = len(next(iter(arrays.values())))
        return [{k: v[i] for k, v in arrays.items()} for i in range(n)]

    def save_rows(self, fname: str, rows: Sequence[Row]) -> None:
        stacked = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
        _write_atomic(self.dir / f"{fname}.rows.npz", lambda fh: np.savez(fh, **stacked))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _run_rows(
    name: str, n: int, row: Callable[[int], Row], ckpt: _Checkpoint, fname: str, bars: bool
) -> list[Row]:
    """``[row(0), ..., row(n - 1)]``, continuing the checkpointed rows of ``fname``, with a progress bar."""
    from tqdm.auto import tqdm

    rows = ckpt.rows(fname)[:n]
    last = time.perf_counter()
    with tqdm(total=n, initial=len(rows), desc=name, unit="prompt", disable=not bars, leave=False) as bar:
        for i in range(len(rows), n):
            rows.append(row(i))
            bar.update(1)
            if time.perf_counter() - last >= CHECKPOINT_S and i + 1 < n:
                ckpt.save_rows(fname, rows)
                last = time.perf_counter()
    return rows


def _check_names(lms: Sequence[LM]) -> None:
    """Model names key every profile: they must be distinct and not a shipped name or a draft variant."""
    seen: dict[str, LM] = {}
    for lm in lms:
        if lm.name in seen:
            raise ValueError(
                f"models {seen[lm.name].path} and {lm.path} are both named {lm.name!r} (a folder's name names its "
                "model in the profiles); rename one folder"
            )
        seen[lm.name] = lm
        shipped = assets_dir() / "models" / lm.name
        if lm.name in SHIPPED_MODELS and Path(lm.path).resolve() != shipped.resolve():
            raise ValueError(f"model folder {lm.path} is named like the shipped model {lm.name!r}; rename the folder")
        if lm.name == "int8" or lm.name.startswith("early_exit:"):
            raise ValueError(f"model folder {lm.path} is named like a draft variant ({lm.name!r}); rename the folder")


def _config_sha256(lm: LM) -> str | None:
    config = Path(lm.path) / "config.json" if lm.path is not None else None
    return sha256_file(config) if config is not None and config.is_file() else None


def _model_entry(lm: LM) -> dict[str, Any]:
    return {
        "weights_sha256": weights_sha256(lm.path),
        "layers": lm.num_layers,
        "hidden_size": lm.hidden_size,
        **({} if lm.name in SHIPPED_MODELS else {"path": str(lm.path)}),
        "config_sha256": _config_sha256(lm),
        "architecture": str(getattr(lm.config, "model_type", "")),
        "vocab_size": lm.vocab_size,
        "parameters": lm.num_params,
        "tokenizer_sha256": tokenizer_sha256(lm.tokenizer) if lm.tokenizer is not None else None,
    }


def _hardware(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": _device_name(device),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "platform": platform.platform(),
        "python_version": platform.python_version(),
    }


def run_profile(
    out_dir: str | Path | None = None,
    models: Sequence[str] = SHIPPED_MODELS,
    n_prompts: int | None = 300,
    quick: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    *,
    prompts: str | Path | None = None,
    drafts: Sequence[str] | None = None,
    device: str = "cpu",
    resume: bool = True,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_reference_tokens: int = MAX_REFERENCE_TOKENS,
) -> list[Path]:
    """Execute the models and write the replay profiles (see the module docstring).

    Args:
        out_dir: destination folder; default the shipped ``envs/lam/profiles/``.
        models: shipped names or local Hugging Face causal-LM folders, smallest to largest; the
            last is the executed (split) and target (speculative) model.
        n_prompts: at most this many prompts, the first ones (``None``: all).
        quick: at most 4 prompts and 2 timing repeats at one sequence length (smoke runs).
        seed: base of the per-prompt generation seeds.
        log: progress printer, and progress bars on stderr (``None``: silent).
        prompts: a prompt JSONL file (:mod:`.prompts`; each model tokenizes its texts with its
            own tokenizer); ``None``: the shipped held-out set.
        drafts: the models (names as in the profile: shipped name or folder name) profiled as
            independent speculative drafts of the target (default: every model but the last).
            Each must tokenize like the target.
        device: ``cpu`` or ``cuda[:i]``: where the models run and are timed.
        resume: continue an unfinished run of the same models, prompts and settings in
            ``out_dir`` (finished files and per-prompt checkpoints); ``False`` starts afresh.
        max_prompt_tokens, max_reference_tokens: truncation of a model's own tokenization
            (the shipped ids are used as they are).

    Returns:
        Paths of the written files (a prompt file's copy ``prompts.jsonl`` after the profiles),
        manifest last.

    Raises:
        ValueError: fewer than two models, a bad prompt record (file and line), a draft that
            tokenizes unlike the target (both named), clashing model names, or a device that
            cannot run here.
    """
    say = log or (lambda _msg: None)
    if len(models) < 2:
        raise ValueError(f"need at least two models (drafts and a target), got {list(models)}")
    if n_prompts is not None and n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    dev = torch_device(device)
    limit = min(n_prompts or 4, 4) if quick else n_prompts
    if prompts is None:
        source, records = None, shipped_records(limit)
    else:
        source = Path(prompts).expanduser().resolve()
        records = read_prompts(source)[:limit]
    lms = [load(m, device=dev) for m in models]
    _check_names(lms)
    target = lms[-1]
    where = str(source) if source is not None else ""
    tokens = [model_records(lm, records, source is None, max_prompt_tokens, max_reference_tokens, where) for lm in lms]
    by_name = dict(zip([lm.name for lm in lms], tokens, strict=True))
    draft_names = [lm.name for lm in lms[:-1]] if drafts is None else [str(d) for d in drafts]
    unknown = [d for d in draft_names if d not in by_name or d == target.name]
    if unknown:
        raise ValueError(
            f"drafts: {unknown} are not among the models before the target {target.name!r} "
            f"({', '.join(lm.name for lm in lms[:-1])})"
        )
    for name in draft_names:
        check_same_tokens(target, lms[[lm.name for lm in lms].index(name)], tokens[-1], by_name[name])
    folder = Path(out_dir) if out_dir is not None else profiles_dir()
    folder.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "models": [lm.name for lm in lms],
        "n_prompts": len(records),
        "quick": quick,
        "seed": seed,
    }
    if source is not None or drafts is not None or dev.type != "cpu":
        settings.update(drafts=draft_names, device=str(dev))
    if source is not None or not all(uses_shipped_ids(lm.tokenizer) for lm in lms):  # some model tokenized texts
        settings.update(max_prompt_tokens=max_prompt_tokens, max_reference_tokens=max_reference_tokens)
    prompts_sha = sha256_file(source) if source is not None else sha256_file(assets_dir() / "prompts.jsonl")
    entries = {lm.name: _model_entry(lm) for lm in lms}
    key_data = {"format_version": FORMAT_VERSION, "settings": settings, "models": entries, "prompts": prompts_sha,
                "device": str(dev), "drafts": draft_names}
    ckpt = _Checkpoint(folder, hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest(), resume)
    bars = log is not None
    timings: dict[str, float] = {}
    start = time.perf_counter()
    written: list[Path] = []

    def stage(name: str, rows: int, row: Callable[[int], Row], arrays: Callable[[list[Row]], dict]) -> dict:
        fname = PROFILE_FILES[name]
        path = folder / fname
        done = ckpt.finished(fname)
        if done is not None:
            timings[name] = done
            say(f"{name}: resumed from {path}")
            written.append(path)
            return _read_npz(path)
        t0 = time.perf_counter()
        data = arrays(_run_rows(name, rows, row, ckpt, fname, bars))
        _write_npz(path, data)
        timings[name] = round(time.perf_counter() - t0, 2)
        ckpt.finish(fname, timings[name])
        written.append(path)
        say(f"{name}: {timings[name]:.1f} s")
        return data

    n = len(records)
    offload = stage(
        "offload",
        n,
        lambda i: _offload_row(lms, [t[i] for t in tokens]),
        lambda rows: _offload_arrays(lms, tokens, rows),
    )
    split = stage(
        "split_quality",
        n,
        lambda i: _split_row(target, tokens[-1][i]),
        lambda rows: _split_arrays(target, tokens[-1], rows),
    )
    variants = {name: lms[[lm.name for lm in lms].index(name)] for name in draft_names}
    variants.update({v: make_draft(target, v) for v in draft_variants(lms, draft_names) if v not in variants})
    drafts_lms = list(variants.values())
    accept = stage(
        "acceptance",
        len(TEMPERATURES) * n,
        lambda r: _acceptance_row(
            target, drafts_lms, tokens[-1][r % n], TEMPERATURES[r // n], _acceptance_seed(tokens[-1][r % n], seed),
            GEN_TOKENS,
        ),
        lambda rows: _acceptance_arrays(target, list(variants), tokens[-1], TEMPERATURES, rows),
    )
    path = folder / PROFILE_FILES["layer_times"]
    done = ckpt.finished(path.name)
    if done is None:
        t0 = time.perf_counter()
        times = profile_layer_times(lms, records, (32,) if quick else PREFILL_LENS, 2 if quick else 10, tokens)
        _write_json(path, times)
        timings["layer_times"] = round(time.perf_counter() - t0, 2)
        ckpt.finish(path.name, timings["layer_times"])
        say(f"layer_times: {timings['layer_times']:.1f} s")
    else:
        timings["layer_times"] = done
        say(f"layer_times: resumed from {path}")
    written.append(path)
    if source is not None:
        copy = folder / PROMPTS_FILE
        write_prompts(copy, records)
        written.append(copy)
    timings["total"] = round(time.perf_counter() - start, 2)  # this run's; a resumed stage keeps its own time
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "torch_version": torch.__version__,
        "transformers_version": __import__("transformers").__version__,
        "threads": torch.get_num_threads(),
        "hardware": _hardware(dev),
        "prompts": {
            "source": str(source) if source is not None else "shipped held-out set (assets/prompts.jsonl)",
            "sha256": prompts_sha,
            "records": len(records),
            **({"file": PROMPTS_FILE} if source is not None else {}),
        },
        "models": entries,
        "files": {p.name: sha256_file(p) for p in written},
        "summary": summarize(offload, split, accept),
        "timings_s": timings,
    }
    path = folder / MANIFEST
    _write_json(path, manifest)
    written.append(path)
    ckpt.close()
    return written


def summarize(offload: dict, split: dict, accept: dict) -> dict:
    """Headline numbers for the manifest: mean acceptance, split quality per precision, offload."""
    inner = slice(1, len(split["split_layers"]) - 1)  # l = 0 and l = L send no hidden state
    return {
        "target": str(accept["target"]),
        "mean_acceptance": {
            str(v): {
                str(float(t)): _sig(accept["mean_acceptance"][i, j])
                for j, t in enumerate(accept["temperatures"])
            }
            for i, v in enumerate(accept["variants"])
        },
        "split_quality": {
            str(int(b)): {
                k: _sig(split[k][:, inner, j].mean()) for k in ("top1_agreement", "kl_nats", "ref_accuracy")
            }
            for j, b in enumerate(split["bits"])
        },
        "split_ref_accuracy_full": _sig(split["ref_accuracy_full"].mean()),
        "offload": {
            str(m): {k: _sig(offload[k][:, j].mean()) for k in ("ref_accuracy", "nll_nats", "confidence")}
            for j, m in enumerate(offload["models"])
        },
    }


def _sig(x: float, digits: int = 5) -> float:
    return float(f"{float(x):.{digits}g}")


def format_summary(summary: dict) -> str:
    """Human-readable table of a manifest summary."""
    lines = [f"mean acceptance against {summary['target']} (sum_x min(p, q) along its own generations):"]
    for variant, by_temp in summary["mean_acceptance"].items():
        lines.append(f"  {variant:<14}" + "".join(f"  T={t}: {a:.3f}" for t, a in by_temp.items()))
    lines.append("split quality (mean over inner split layers):")
    for bits, q in summary["split_quality"].items():
        lines.append(
            f"  {bits:>2} bit  top1 agreement {q['top1_agreement']:.4f}  KL {q['kl_nats']:.2e} nats"
            f"  ref accuracy {q['ref_accuracy']:.4f}"
        )
    lines.append("offload (teacher-forced on the references):")
    for model, q in summary["offload"].items():
        lines.append(
            f"  {model:<8} accuracy {q['ref_accuracy']:.3f}  NLL {q['nll_nats']:.3f} nats"
            f"  confidence {q['confidence']:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Profile the real models into edgelam replay files.")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the shipped profiles)")
    ap.add_argument(
        "--models", nargs="+", default=list(SHIPPED_MODELS), help="smallest to largest; last = target"
    )
    ap.add_argument("--prompts", type=Path, default=None, help="prompt JSONL file (default: the shipped set)")
    ap.add_argument("--n-prompts", type=int, default=None, help="first N prompts (default: all; shipped: 300)")
    ap.add_argument("--drafts", nargs="*", default=None, help="independent drafts (default: all but the last)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    ap.add_argument("--no-resume", action="store_true", help="start afresh")
    ap.add_argument("--quick", action="store_true", help="4 prompts, few timing repeats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n_prompts = args.n_prompts if args.n_prompts is not None or args.prompts is not None else 300
    paths = run_profile(
        args.out, args.models, n_prompts, args.quick, args.seed,
        prompts=args.prompts, drafts=args.drafts, device=args.device, resume=not args.no_resume,
    )
    manifest = json.loads(paths[-1].read_text())
    print(format_summary(manifest["summary"]))
    print(
        f"wrote {', '.join(p.name for p in paths)} to {paths[-1].parent}"
        f" in {manifest['timings_s']['total']:.0f} s"
    )


if __name__ == "__main__":
    main()
