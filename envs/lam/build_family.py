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

* ``device`` -- 2 layers, d_model 128 (the on-device / draft model)
* ``edge``   -- 4 layers, d_model 192
* ``cloud``  -- 8 layers, d_model 256 (about the largest 2 CPU cores train in an hour)
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
    "device": {"layers": 2, "d_model": 128, "ffn": 384, "lr": 2e-3},
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
def heldout_loss(model, heldout: np.ndarray) -> float:
    """Mean next-token cross-entropy (nats) over the held-out sequences."""
    model.eval()
    x = torch.from_numpy(heldout.astype(np.int64))
    total = 0.0
    for i in range(0, len(x), 20):
        total += float(model(input_ids=x[i : i + 20], labels=x[i : i + 20]).loss) * len(x[i : i + 20])
    return total / len(x)


def train_model(
    name: str, spec: dict, train_ids: np.ndarray, steps: int, seed: int, log, init_from: Path | None = None
) -> tuple:
    if init_from is None:
        model = make_model(spec, seed)
    else:  # continue training a saved model of the family (a second, lower-LR cosine cycle)
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
    data = torch.from_numpy(train_ids.astype(np.int64))
    model.train()
    t0 = time.time()
    for step in range(steps):
        starts = rng.integers(0, len(data) - SEQ_LEN - 1, size=BATCH)
        x = torch.stack([data[s : s + SEQ_LEN] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            log(f"{name} step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    files = corpus_files(args.stdlib)
    rels = [str(f.relative_to(args.stdlib)) for f in files]
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    train_texts = [t for r, t in zip(rels, texts, strict=True) if not is_heldout(r)]
    held_texts = [t for r, t in zip(rels, texts, strict=True) if is_heldout(r)]
    corpus_sha = hashlib.sha256("\n".join(rels).encode() + b"".join(t.encode() for t in texts)).hexdigest()
    log(f"corpus: {len(files)} files, {len(held_texts)} held out, sha256 {corpus_sha[:16]}")

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
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card.update(
        {
            "corpus": {
                "source": "CPython standard library Lib/*.py (non-test, < 300 kB, no encodings/pydoc_data)",
                "python_version": ".".join(map(str, __import__("sys").version_info[:3])),
                "files": len(files),
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
    )
    card.setdefault("models", {})
    for name in args.only:
        spec = dict(FAMILY[name], lr=args.lr or FAMILY[name]["lr"])
        model_dir = out / "models" / name
        previous = card["models"].get(name) if args.continue_training else None
        if args.continue_training and previous is None:
            raise SystemExit(f"--continue-training: no trained {name!r} in {card_path}")
        init = model_dir if args.continue_training else None
        model, secs = train_model(name, spec, train_ids, args.steps, args.seed, log, init_from=init)
        model.to(torch.float16).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        from transformers import LlamaForCausalLM

        reloaded = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        loss = heldout_loss(reloaded, heldout)
        stage = {"steps": args.steps, "seed": args.seed, "peak_lr": spec["lr"], "train_seconds": round(secs, 1)}
        stages = [*previous.get("stages", []), stage] if previous else [stage]
        card["models"][name] = {
            "layers": spec["layers"],
            "d_model": spec["d_model"],
            "ffn": spec["ffn"],
            "heads": spec["d_model"] // HEAD_DIM,
            "parameters": int(sum(p.numel() for p in reloaded.parameters())),
            "steps": sum(st["steps"] for st in stages),
            "train_tokens_seen": sum(st["steps"] for st in stages) * BATCH * SEQ_LEN,
            "stages": stages,
            "heldout_loss_nats": round(loss, 4),
            "heldout_bits_per_byte": round(loss / math.log(2) / bytes_per_token, 4),
            "stored_dtype": "float16",
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        log(f"{name}: held-out loss {loss:.4f} nats/token")


if __name__ == "__main__":
    main()
