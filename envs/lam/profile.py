"""Profile the real models into replay files (``edgelam profile``; ``python -m edgelam.envs.lam.profile``).

Every number comes from executing the shipped models on the held-out prompt set
(:func:`~edgelam.envs.lam.load_prompts`). ``models`` lists the family from smallest to largest;
the last one is the executed/target model (``cloud`` by default). Files written (all ``.npz``
carry a scalar ``format_version``; ``P`` prompts, ``L`` layers of the executed model):

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
    probability, ``prompt_len`` (P,), ``ref_len`` (P,), ``prompt_index`` (P,).

``layer_times.json``
    ``format_version``, ``torch_version``, ``threads``, ``cpu``, ``repeats``, and per model
    ``models[name]``: ``layers``, ``hidden_size``, ``prefill[seq_len]`` ->
    ``{"layer_s": [L], "embed_s", "head_s"}`` (median wall-clock CPU seconds of one
    prefill of ``seq_len`` tokens), ``decode`` -> ``{"context_len", "layer_s": [L], "embed_s",
    "head_s"}`` (seconds per decoded token with a KV cache of ``context_len`` tokens).

``manifest.json``: ``format_version``, SHA-256 of every file (``files``) and of each model's
weights (``models``), the run's settings, timings and a ``summary`` (mean acceptance per
draft variant and temperature, mean split quality per precision, offload quality).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from . import SHIPPED_MODELS, load_prompts
from .model import LM, crop_cache, load, weights_sha256
from .quantize import BITS, payload_bytes
from .replay import FORMAT_VERSION, MANIFEST, PROFILE_FILES, profiles_dir, sha256_file
from .speculative import acceptance_probability, make_draft, target_sample
from .split import split_quality_grid

TEMPERATURES = (0.0, 1.0)
GEN_TOKENS = 32
PREFILL_LENS = (32, 128, 256)
DECODE_CONTEXT = 128


@torch.no_grad()
def _teacher_forced(lm: LM, prompt: Sequence[int], continuation: Sequence[int]) -> torch.Tensor:
    """Logits ``(len(continuation), V)`` predicting ``continuation`` after ``prompt``."""
    ids = list(prompt) + list(continuation[:-1])
    return lm.logits(ids, last=len(continuation))[0]


def profile_offload(models: Sequence[LM], prompts: Sequence[dict]) -> dict[str, np.ndarray]:
    """Quality of each model alone on each prompt's reference (see the module docstring)."""
    shape = (len(prompts), len(models))
    acc, nll, conf = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, rec in enumerate(prompts):
        ref = torch.tensor(rec["reference_ids"])
        for j, lm in enumerate(models):
            logp = torch.log_softmax(
                _teacher_forced(lm, rec["prompt_ids"], rec["reference_ids"]).double(), -1
            )
            acc[i, j] = float((logp.argmax(-1) == ref).double().mean())
            nll[i, j] = float(-logp.gather(-1, ref[:, None]).mean())
            conf[i, j] = float(logp.exp().amax(-1).mean())
    return {
        "models": np.asarray([lm.name for lm in models]),
        "ref_accuracy": acc.astype(np.float32),
        "nll_nats": nll.astype(np.float32),
        "confidence": conf.astype(np.float32),
        **_prompt_arrays(prompts),
    }


def profile_split(lm: LM, prompts: Sequence[dict]) -> dict[str, np.ndarray]:
    """Split quality of ``lm`` for every prompt, split layer and precision."""
    keys = ("top1_agreement", "kl_nats", "ref_accuracy")
    shape = (len(prompts), lm.num_layers + 1, len(BITS))
    out = {k: np.zeros(shape, dtype=np.float32) for k in keys}
    full = np.zeros(len(prompts), dtype=np.float32)
    for i, rec in enumerate(prompts):
        grid = split_quality_grid(lm, rec["prompt_ids"], rec["reference_ids"], bits=BITS)
        for k in keys:
            out[k][i] = grid[k]
        full[i] = grid["ref_accuracy_full"]
    return {
        "model": np.asarray(lm.name),
        "split_layers": np.arange(lm.num_layers + 1),
        "bits": np.asarray(BITS),
        "bytes_per_token": np.asarray([payload_bytes(1, lm.hidden_size, b) for b in BITS]),
        **out,
        "ref_accuracy_full": full,
        **_prompt_arrays(prompts),
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
    beta = np.zeros((len(drafts), len(temperatures), len(prompts), n_tokens), dtype=np.float32)
    tokens = np.zeros((len(temperatures), len(prompts), n_tokens), dtype=np.int32)
    seeds = np.zeros((len(temperatures), len(prompts)), dtype=np.int64)
    for t, temp in enumerate(temperatures):
        for i, rec in enumerate(prompts):
            seeds[t, i] = 100_000 * seed + int(rec["id"])
            gen = target_sample(target, rec["prompt_ids"], n_tokens, temp, seed=int(seeds[t, i]))
            tokens[t, i] = gen
            p_logits = _teacher_forced(target, rec["prompt_ids"], gen)
            for v, draft in enumerate(drafts.values()):
                q_logits = _teacher_forced(draft, rec["prompt_ids"], gen)
                beta[v, t, i] = acceptance_probability(p_logits, q_logits, temp).numpy()
    return {
        "target": np.asarray(target.name),
        "variants": np.asarray(list(drafts)),
        "temperatures": np.asarray(temperatures, dtype=np.float64),
        "beta": beta,
        "mean_acceptance": beta.mean(axis=(2, 3)),
        "tokens": tokens,
        "seeds": seeds,
        "prompt_len": np.asarray([len(r["prompt_ids"]) for r in prompts]),
        "prompt_index": np.asarray([int(r["id"]) for r in prompts]),
    }


def _median_time(fn: Callable[..., object], repeats: int, *args) -> float:
    """Median wall-clock seconds of ``fn(*args)`` over ``repeats`` calls (after one warm-up)."""
    fn(*args)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _model_times(lm: LM, stream: list[int], seq_lens: Sequence[int], repeats: int) -> dict:
    prefill = {}
    for n in seq_lens:
        ids = stream[:n]
        h = lm.embed(ids)
        prefill[str(n)] = {
            "layer_s": [_median_time(lm.forward_layers, repeats, h, i, i + 1) for i in range(lm.num_layers)],
            "embed_s": _median_time(lm.embed, repeats, ids),
            "head_s": _median_time(lm.head, repeats, h),
        }
    cache = lm.new_cache()
    lm.logits(stream[:DECODE_CONTEXT], cache, last=1)
    token = stream[DECODE_CONTEXT : DECODE_CONTEXT + 1]
    per_layer = np.zeros((repeats + 1, lm.num_layers))
    for r in range(repeats + 1):  # the first pass warms up
        h = lm.embed(token)
        for i in range(lm.num_layers):
            t0 = time.perf_counter()
            h = lm.forward_layers(h, i, i + 1, cache)
            per_layer[r, i] = time.perf_counter() - t0
        crop_cache(cache, DECODE_CONTEXT)
    return {
        "layers": lm.num_layers,
        "hidden_size": lm.hidden_size,
        "prefill": prefill,
        "decode": {
            "context_len": DECODE_CONTEXT,
            "layer_s": np.median(per_layer[1:], axis=0).tolist(),
            "embed_s": _median_time(lm.embed, repeats, token),
            "head_s": _median_time(lm.head, repeats, h),
        },
    }


@torch.no_grad()
def profile_layer_times(
    models: Sequence[LM], prompts: Sequence[dict], seq_lens: Sequence[int] = PREFILL_LENS, repeats: int = 10
) -> dict:
    """Median CPU seconds per layer for prefill and per decoded token (see the module docstring)."""
    stream = [t for rec in prompts for t in rec["prompt_ids"] + rec["reference_ids"]]
    need = max(max(seq_lens), DECODE_CONTEXT + 1)
    stream = (stream * (need // max(1, len(stream)) + 1))[:need]
    return {
        "format_version": FORMAT_VERSION,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "repeats": repeats,
        "models": {lm.name: _model_times(lm, stream, seq_lens, repeats) for lm in models},
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def draft_variants(models: Sequence[LM]) -> list[str]:
    """Draft variants profiled against the last model: the other models, an early exit, int8."""
    target = models[-1]
    return [*(m.name for m in models[:-1]), f"early_exit:{min(2, target.num_layers - 1)}", "int8"]


def run_profile(
    out_dir: str | Path | None = None,
    models: Sequence[str] = SHIPPED_MODELS,
    n_prompts: int = 300,
    quick: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> list[Path]:
    """Execute the models and write the replay profiles (see the module docstring).

    Args:
        out_dir: destination folder; default the shipped ``envs/lam/profiles/``.
        models: model names or folders from smallest to largest; the last is the executed
            (split) and target (speculative) model.
        n_prompts: first ``n_prompts`` of the held-out prompt set.
        quick: at most 4 prompts and 2 timing repeats at one sequence length (smoke runs).
        seed: base of the per-prompt generation seeds.
        log: progress printer (``None``: silent).

    Returns:
        Paths of the written files, manifest last.
    """
    say = log or (lambda _msg: None)
    if len(models) < 2:
        raise ValueError(f"need at least two models (drafts and a target), got {list(models)}")
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    folder = Path(out_dir) if out_dir is not None else profiles_dir()
    folder.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts()[: min(n_prompts, 4) if quick else n_prompts]
    lms = [load(m) for m in models]
    target = lms[-1]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    written: list[Path] = []

    def stage(name: str, fn: Callable[[], dict]) -> dict:
        t0 = time.perf_counter()
        data = fn()
        timings[name] = round(time.perf_counter() - t0, 2)
        say(f"{name}: {timings[name]:.1f} s")
        return data

    offload = stage("offload", lambda: profile_offload(lms, prompts))
    split = stage("split_quality", lambda: profile_split(target, prompts))
    drafts = {lm.name: lm for lm in lms[:-1]}
    drafts.update({v: make_draft(target, v) for v in draft_variants(lms) if v not in drafts})
    accept = stage("acceptance", lambda: profile_acceptance(target, drafts, prompts, seed=seed))
    times = stage(
        "layer_times",
        lambda: profile_layer_times(lms, prompts, (32,) if quick else PREFILL_LENS, 2 if quick else 10),
    )
    for name, data in (("offload", offload), ("split_quality", split), ("acceptance", accept)):
        path = folder / PROFILE_FILES[name]
        _write_npz(path, data)
        written.append(path)
    path = folder / PROFILE_FILES["layer_times"]
    _write_json(path, times)
    written.append(path)
    timings["total"] = round(time.perf_counter() - start, 2)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "models": [lm.name for lm in lms],
            "n_prompts": len(prompts),
            "quick": quick,
            "seed": seed,
        },
        "torch_version": torch.__version__,
        "transformers_version": __import__("transformers").__version__,
        "threads": torch.get_num_threads(),
        "models": {
            lm.name: {
                "weights_sha256": weights_sha256(lm.path),
                "layers": lm.num_layers,
                "hidden_size": lm.hidden_size,
                **({} if lm.name in SHIPPED_MODELS else {"path": str(lm.path)}),
            }
            for lm in lms
        },
        "files": {p.name: sha256_file(p) for p in written},
        "summary": summarize(offload, split, accept),
        "timings_s": timings,
    }
    path = folder / MANIFEST
    _write_json(path, manifest)
    written.append(path)
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
    ap.add_argument("--n-prompts", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="4 prompts, few timing repeats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    paths = run_profile(args.out, args.models, args.n_prompts, args.quick, args.seed)
    manifest = json.loads(paths[-1].read_text())
    print(format_summary(manifest["summary"]))
    print(
        f"wrote {', '.join(p.name for p in paths)} to {paths[-1].parent}"
        f" in {manifest['timings_s']['total']:.0f} s"
    )


if __name__ == "__main__":
    main()
