"""Train and ship edgelam's own family of small Llama-style causal LMs.

The envs need a *real* model that really executes, and no weights may be
downloaded at run time, so edgelam trains its own family on a corpus that exists
offline on every machine: the source code of the CPython standard library (code
completion is a realistic assistant workload). The shipped assets were built from
CPython 3.11.7's ``Lib/`` (the file list and its SHA-256 are in ``family.json``).

Run ``python -m edgelam.envs.lam.build_family`` to rebuild everything under
``envs/lam/assets`` (tokenizer, three HF causal-LM folders, held-out tokens, the
held-out prompt set and the model card ``family.json``). Same seed, same corpus,
same torch build -> same weights.

Models (``transformers.LlamaForCausalLM``, tied embeddings, one shared byte-level
BPE tokenizer trained with ``tokenizers``):

* ``device`` -- 1 layer, d_model 128, distilled from ``cloud`` (Hinton et al., 2015, the
  way the edge-cloud BAIM framework derives compact edge models; a distilled draft also
  keeps speculative acceptance realistic): 10x fewer parameters than ``cloud``
* ``edge``   -- 4 layers, d_model 192
* ``cloud``  -- 8 layers, d_model 256

Training is resumable: every 50 steps the model, optimiser, schedule and data generator are
checkpointed under ``--checkpoints`` (``runs/family_checkpoints``), and the same command
started again continues from there. ``--continue-training`` runs a further cosine cycle on a
saved model; ``--evaluate-only`` recomputes the card's held-out metrics. Each training run
appends its command to the card's ``rebuild`` list, so ``docs/model_card.md``
(:mod:`.card`) lists the commands that rebuild the family in order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sysconfig
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent / "assets"
VOCAB_SIZE = 4096
EOS = "<|endoftext|>"
SEQ_LEN = 256
BATCH = 16
HELDOUT_MOD = 40  # a file is held out when crc32(relative path) % 40 == 0
HELDOUT_SEQS = 100  # held-out loss is measured on 100 x 256 tokens
N_PROMPTS = 300
CONTINUATION_TOKENS = 32

FAMILY = {
    # the on-device draft: 10x fewer parameters than cloud, distilled from it (Hinton et al., 2015)
    "device": {
        "layers": 1,
        "d_model": 128,
        "ffn": 384,
        "lr": 3e-3,
        "distill_from": "cloud",
        "kd_alpha": 0.5,
        "kd_temperature": 1.0,
    },
    "edge": {"layers": 4, "d_model": 192, "ffn": 512, "lr": 1.5e-3},
    "cloud": {"layers": 8, "d_model": 256, "ffn": 704, "lr": 2.5e-3},
}
HEAD_DIM = 32


def corpus_files(stdlib: Path) -> list[Path]:
    """Non-test ``.py`` files of the standard library, sorted, below 300 kB."""
    skip = ("site-packages", "test", "tests", "idle_test", "pydoc_data", "encodings")
    out = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if any(part in skip for part in rel.parts[:-1]) or rel.name.startswith("_sysconfigdata"):
            continue
        if path.stat().st_size > 300_000:
            continue
        out.append(path)
    return out


def read_corpus(stdlib: Path) -> tuple[list[str], list[str], str]:
    """(relative paths, texts, sha256 digest) of :func:`corpus_files`: the digest the card records."""
    files = corpus_files(stdlib)
    rels = [str(f.relative_to(stdlib)) for f in files]
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    digest = hashlib.sha256("\n".join(rels).encode() + b"".join(t.encode() for t in texts)).hexdigest()
    return rels, texts, digest


def is_heldout(rel: str) -> bool:
    return zlib.crc32(rel.encode()) % HELDOUT_MOD == 0


def train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def encode_stream(tokenizer, texts: list[str]) -> np.ndarray:
    eos = tokenizer.convert_tokens_to_ids(EOS)
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t)["input_ids"])
        ids.append(eos)
    return np.asarray(ids, dtype=np.uint16)


def make_model(spec: dict, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=spec["d_model"],
        intermediate_size=spec["ffn"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["d_model"] // HEAD_DIM,
        num_key_value_heads=spec["d_model"] // HEAD_DIM,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def heldout_metrics(model, heldout: np.ndarray) -> tuple[float, float]:
    """Mean next-token cross-entropy (nats) and teacher-forced top-1 accuracy on the held-out sequences."""
    model.eval()
    x = torch.from_numpy(heldout.astype(np.int64))
    total, hits = 0.0, 0
    for i in range(0, len(x), 20):
        batch = x[i : i + 20]
        out = model(input_ids=batch, labels=batch)
        total += float(out.loss) * len(batch)
        hits += int((out.logits[:, :-1].argmax(-1) == batch[:, 1:]).sum())
    return total / len(x), hits / x[:, 1:].numel()


def distillation_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float):
    """Hinton et al. (2015) knowledge distillation: ``alpha * T^2 * KL(teacher_T || student_T)
    + (1 - alpha) * CE(labels)`` over next-token positions (logits at t predict token t + 1)."""
    s = student_logits[:, :-1].reshape(-1, student_logits.shape[-1]).float()
    t = teacher_logits[:, :-1].reshape(-1, teacher_logits.shape[-1]).float()
    ce = torch.nn.functional.cross_entropy(s, labels[:, 1:].reshape(-1))
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(s / temperature, -1),
        torch.log_softmax(t / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce


def train_model(
    name: str,
    spec: dict,
    train_ids: np.ndarray,
    steps: int,
    seed: int,
    log,
    init_from: Path | None = None,
    teacher=None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 50,
) -> tuple:
    """Train one model; with ``teacher``, by distillation (:func:`distillation_loss`).

    With ``checkpoint``, the model, optimiser, LR schedule, data generator and step are saved
    there every ``checkpoint_every`` steps (atomically), and a run started again with the same
    settings resumes from the last one: an interrupted run ends with the same weights as an
    uninterrupted one.
    """
    if init_from is None:
        model = make_model(spec, seed)
    else:  # continue training a saved model of the family (a further, lower-LR cosine cycle)
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(init_from, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng(seed)
    run_key = {
        "name": name,
        "steps": steps,
        "seed": seed,
        "lr": spec["lr"],
        "layers": spec["layers"],
        "d_model": spec["d_model"],
        "teacher": spec.get("distill_from") if teacher is not None else None,
    }
    first, elapsed = 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        if state["run"] != run_key:
            raise SystemExit(f"{checkpoint} belongs to another run ({state['run']}); delete it or change --checkpoints")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        first, elapsed = int(state["step"]), float(state["elapsed"])
        log(f"{name}: resumed from {checkpoint} at step {first}")
    data = torch.from_numpy(train_ids.astype(np.int64))
    model.train()
    t0 = time.time() - elapsed
    for step in range(first, steps):
        starts = rng.integers(0, len(data) - SEQ_LEN - 1, size=BATCH)
        x = torch.stack([data[s : s + SEQ_LEN] for s in starts])
        if teacher is None:
            loss = model(input_ids=x, labels=x).loss
        else:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=x).logits
            loss = distillation_loss(
                model(input_ids=x).logits, teacher_logits, x, spec["kd_alpha"], spec["kd_temperature"]
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            log(f"{name} step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step == steps - 1):
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "run": run_key,
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "rng": rng.bit_generator.state,
                    "step": step + 1,
                    "elapsed": time.time() - t0,
                },
                tmp,
            )
            tmp.replace(checkpoint)
    return model, time.time() - t0


def build_prompts(tokenizer, heldout_texts: list[str], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    docs = [tokenizer(t)["input_ids"] for t in heldout_texts]
    docs = [d for d in docs if len(d) > 200]
    prompts = []
    while len(prompts) < N_PROMPTS:
        doc = docs[int(rng.integers(len(docs)))]
        plen = int(rng.integers(32, 129))
        start = int(rng.integers(0, len(doc) - plen - CONTINUATION_TOKENS))
        p = doc[start : start + plen]
        c = doc[start + plen : start + plen + CONTINUATION_TOKENS]
        prompts.append(
            {
                "id": len(prompts),
                "prompt_ids": p,
                "reference_ids": c,
                "prompt": tokenizer.decode(p),
                "reference": tokenizer.decode(c),
            }
        )
    return prompts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=800, help="optimiser steps per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--only", nargs="*", choices=list(FAMILY), default=list(FAMILY))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--continue-training",
        action="store_true",
        help="start from the saved weights of each --only model (a further cosine cycle at --lr)",
    )
    ap.add_argument("--lr", type=float, help="peak learning rate (default: the family's per-model value)")
    ap.add_argument(
        "--evaluate-only",
        action="store_true",
        help="train nothing: recompute the held-out loss and top-1 accuracy of the --only models in --out",
    )
    ap.add_argument(
        "--checkpoints",
        type=Path,
        default=Path("runs") / "family_checkpoints",
        help="folder of resumable training checkpoints (one per model); a rerun with the same settings resumes",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    rels, texts, corpus_sha = read_corpus(args.stdlib)
    train_texts = [t for r, t in zip(rels, texts, strict=True) if not is_heldout(r)]
    held_texts = [t for r, t in zip(rels, texts, strict=True) if is_heldout(r)]
    log(f"corpus: {len(rels)} files, {len(held_texts)} held out, sha256 {corpus_sha[:16]}")

    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(train_texts)
        tokenizer.save_pretrained(tok_dir)
    train_ids = encode_stream(tokenizer, train_texts)
    held_ids = encode_stream(tokenizer, held_texts)
    held_bytes = sum(len(t.encode()) for t in held_texts)
    bytes_per_token = held_bytes / len(held_ids)
    heldout = held_ids[: HELDOUT_SEQS * SEQ_LEN].reshape(HELDOUT_SEQS, SEQ_LEN)
    np.save(out / "heldout_tokens.npy", heldout)
    log(f"train tokens {len(train_ids)}, held-out tokens {len(held_ids)}, {bytes_per_token:.3f} B/token")

    prompts_path = out / "prompts.jsonl"
    if not prompts_path.exists():
        with prompts_path.open("w") as fh:
            for p in build_prompts(tokenizer, held_texts, args.seed):
                fh.write(json.dumps(p) + "\n")

    card_path = out / "family.json"
    header = {
        "corpus": {
            "source": "CPython standard library Lib/*.py (non-test, < 300 kB, no encodings/pydoc_data)",
            "licence": "PSF-2.0 (Python Software Foundation License Version 2, CPython's LICENSE)",
            "python_version": ".".join(map(str, __import__("sys").version_info[:3])),
            "files": len(rels),
            "heldout_files": len(held_texts),
            "heldout_rule": f"crc32(relative path) % {HELDOUT_MOD} == 0",
            "sha256": corpus_sha,
            "train_tokens": len(train_ids),
            "heldout_bytes_per_token": bytes_per_token,
        },
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": VOCAB_SIZE, "eos": EOS},
        "training": {
            "seq_len": SEQ_LEN,
            "batch": BATCH,
            "optimizer": "AdamW(0.9, 0.95), wd 0.1, cosine to 10%, clip 1.0; per-model stages list seeds/LRs",
        },
        "heldout_eval": {"sequences": HELDOUT_SEQS, "seq_len": SEQ_LEN, "file": "heldout_tokens.npy"},
    }

    def read_card() -> dict:
        """The card as it is on disk now (another run may have written a model since this one began)."""
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        card.update(header)
        card.setdefault("models", {})
        return card

    from transformers import LlamaForCausalLM

    def evaluated(name: str) -> tuple[Any, dict]:
        """The saved model ``name`` of ``out`` (float32) and its card's held-out metrics."""
        model = LlamaForCausalLM.from_pretrained(out / "models" / name, dtype=torch.float32)
        loss, top1 = heldout_metrics(model, heldout)
        log(f"{name}: held-out loss {loss:.4f} nats/token, top-1 {top1:.4f}")
        metrics = {
            "heldout_loss_nats": round(loss, 4),
            "heldout_top1": round(top1, 4),
            "heldout_bits_per_byte": round(loss / math.log(2) / bytes_per_token, 4),
        }
        return model, metrics

    if args.evaluate_only:
        card = read_card()
        for name in args.only:
            if name not in card["models"]:
                raise SystemExit(f"--evaluate-only: no trained {name!r} in {card_path}")
            card["models"][name].update(evaluated(name)[1])
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        return
    # a distilled model needs its teacher first: teachers train before their students
    order = sorted(args.only, key=lambda n: FAMILY[n].get("distill_from") is not None)
    for name in order:
        spec = dict(FAMILY[name], lr=args.lr or FAMILY[name]["lr"])
        model_dir = out / "models" / name
        previous = read_card()["models"].get(name) if args.continue_training else None
        if args.continue_training and previous is None:
            raise SystemExit(f"--continue-training: no trained {name!r} in {card_path}")
        init = model_dir if args.continue_training else None
        teacher = None
        if spec.get("distill_from"):
            teacher_dir = out / "models" / spec["distill_from"]
            if not (teacher_dir / "model.safetensors").exists():
                raise SystemExit(f"{name} is distilled from {spec['distill_from']!r}: build that first ({teacher_dir})")
            from .replay import weights_sha256

            teacher_sha = weights_sha256(teacher_dir)  # before training: the teacher as it was read
            teacher = LlamaForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
        ckpt = args.checkpoints / f"{name}-{'continue' if init else 'scratch'}-seed{args.seed}.pt"
        model, secs = train_model(
            name, spec, train_ids, args.steps, args.seed, log, init_from=init, teacher=teacher, checkpoint=ckpt
        )
        model.to(torch.float16).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        reloaded, metrics = evaluated(name)
        stage = {"steps": args.steps, "seed": args.seed, "peak_lr": spec["lr"], "train_seconds": round(secs, 1)}
        if teacher is not None:
            stage.update(
                distilled_from=spec["distill_from"],
                teacher_weights_sha256=teacher_sha,
                kd_alpha=spec["kd_alpha"],
                kd_temperature=spec["kd_temperature"],
            )
        stages = [*previous.get("stages", []), stage] if previous else [stage]
        card = read_card()
        command = f"--only {name} --steps {args.steps} --seed {args.seed}"
        if args.continue_training:
            command += " --continue-training"
        if args.lr is not None:
            command += f" --lr {args.lr:g}"
        card["rebuild"] = [*card.get("rebuild", []), command]  # the order the family was built in
        card["models"][name] = {
            "layers": spec["layers"],
            "d_model": spec["d_model"],
            "ffn": spec["ffn"],
            "heads": spec["d_model"] // HEAD_DIM,
            "parameters": int(sum(p.numel() for p in reloaded.parameters())),
            "steps": sum(st["steps"] for st in stages),
            "train_tokens_seen": sum(st["steps"] for st in stages) * BATCH * SEQ_LEN,
            "stages": stages,
            **metrics,
            "stored_dtype": "float16",
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
