"""``docs/model_card.md``, written from the shipped card (``family.json``) and profiles.

``python -m edgelam.envs.lam.card [--out docs/model_card.md]`` renders the machine-readable
card of the family (corpus, licence, sizes, training stages, held-out loss and top-1
accuracy, wall time) and the summary of the replay profiles (``profiles/manifest.json``:
draft acceptance, split quality, offload tiers) as one Markdown page, so no number in the
page is typed by hand. ``tests/lam/test_card.py`` checks that the committed page is this
function's output for the shipped files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import SHIPPED_MODELS, family_card
from .replay import load_manifest

DOC = Path("docs") / "model_card.md"


def _stage_text(stage: dict) -> str:
    text = f"{stage['steps']} steps at peak LR {stage['peak_lr']:g} (seed {stage['seed']})"
    if stage.get("distilled_from"):
        text += (
            f", distilled from `{stage['distilled_from']}` (teacher weights"
            f" `{stage['teacher_weights_sha256'][:12]}`; alpha {stage['kd_alpha']:g},"
            f" T {stage['kd_temperature']:g})"
        )
    return text


def render(card: dict | None = None, manifest: dict | None = None) -> str:
    """The Markdown page for ``card`` (default: the shipped one) and ``manifest`` (the shipped profiles)."""
    card = family_card() if card is None else card
    manifest = load_manifest() if manifest is None else manifest
    corpus, models = card["corpus"], card["models"]
    tokens = card["training"]["seq_len"] * card["training"]["batch"]
    lines = [
        "# edgelam's shipped model family",
        "",
        "<!-- written by `python -m edgelam.envs.lam.card` from envs/lam/assets/family.json and"
        " envs/lam/profiles/manifest.json; edit those (by rebuilding), not this page -->",
        "",
        f"Three Llama-style causal LMs (`transformers.LlamaForCausalLM`, tied embeddings, one byte-level BPE"
        f" tokenizer of {card['tokenizer']['vocab_size']:,} tokens) trained from scratch on CPU by"
        f" `python -m edgelam.envs.lam.build_family` on {corpus['source']} (Python {corpus['python_version']},"
        f" {corpus['files']} files, {corpus['train_tokens']:,} training tokens; {corpus['heldout_files']} files"
        f" held out by `{corpus['heldout_rule']}`). Licence of the corpus: {corpus['licence']}."
        " The machine-readable card is `envs/lam/assets/family.json`.",
        "",
        "Held-out metrics are teacher-forced over `heldout_tokens.npy`"
        f" ({card['heldout_eval']['sequences']} x {card['heldout_eval']['seq_len']} tokens of the held-out files);"
        " `tests/lam/test_model.py` recomputes them and holds the card to 2%.",
        "",
        "| model | layers x d_model | parameters | training (batches of"
        f" {tokens:,} tokens) | wall time | held-out loss (nats/token) | held-out top-1 | bits/byte |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SHIPPED_MODELS:
        m = models[name]
        stages = "; then ".join(_stage_text(s) for s in m["stages"])
        wall = sum(s["train_seconds"] for s in m["stages"]) / 60
        lines.append(
            f"| `{name}` | {m['layers']} x {m['d_model']} | {m['parameters'] / 1e6:.2f} M | {stages} |"
            f" {wall:.0f} min | {m['heldout_loss_nats']:.3f} | {m['heldout_top1']:.3f} |"
            f" {m['heldout_bits_per_byte']:.3f} |"
        )
    lines += [
        "",
        "Wall time is the sum of the stages' training time on the 2-core build machine (stages that ran"
        " side by side shared its cores).",
        "",
        "Rebuild the family, in this order (each command reads the card and weights the previous ones wrote):",
        "",
        "```bash",
        *(f"python -m edgelam.envs.lam.build_family {cmd}" for cmd in card["rebuild"]),
        "```",
        "",
    ]
    summary = manifest["summary"]
    acc = summary["mean_acceptance"]
    temps = list(next(iter(acc.values())))
    lines += [
        f"## Draft acceptance against `{summary['target']}` (speculative decoding)",
        "",
        f"Mean of beta = sum_x min(p(x), q(x)) over {manifest['settings']['n_prompts']} held-out prompts x 32"
        f" positions of `{summary['target']}`'s own generations (temperature 0: 1 when the argmaxes agree)."
        " Measured by `edgelam profile` (summary in `envs/lam/profiles/manifest.json`).",
        "",
        "| draft | " + " | ".join(f"T = {float(t):g}" for t in temps) + " |",
        "|---|" + "---|" * len(temps),
        *(f"| `{variant}` | " + " | ".join(f"{by_t[t]:.3f}" for t in temps) + " |" for variant, by_t in acc.items()),
        "",
        f"## Split quality of `{summary['target']}` (split inference)",
        "",
        "Hidden state after layer l quantised per token (symmetric absmax; 16 bits = fp16), mean over the"
        " inner split layers and the prompts, teacher-forced over the 32 reference tokens (`edgelam profile`):",
        "",
        "| bits | top-1 agreement with the unsplit run | KL (nats) | reference top-1 accuracy |",
        "|---|---|---|---|",
        *(
            f"| {bits} | {q['top1_agreement']:.4f} | {q['kl_nats']:.1e} | {q['ref_accuracy']:.3f} |"
            for bits, q in summary["split_quality"].items()
        ),
        "",
        f"Unsplit reference top-1 accuracy: {summary['split_ref_accuracy_full']:.3f}.",
        "",
        "## Offload tiers",
        "",
        "Each model alone, teacher-forced on the 32 reference tokens of every prompt (`edgelam profile`):",
        "",
        "| model | reference top-1 accuracy | NLL (nats/token) | mean confidence |",
        "|---|---|---|---|",
        *(
            f"| `{m}` | {q['ref_accuracy']:.3f} | {q['nll_nats']:.3f} | {q['confidence']:.3f} |"
            for m, q in summary["offload"].items()
        ),
        "",
        *_toolbox_lines(),
    ]
    return "\n".join(lines)


def _toolbox_lines() -> list[str]:
    """The edge model toolbox's quality tables (:mod:`.toolbox`), if it has been built."""
    from .toolbox import LORA_RANK, load_quality, quality_path

    if not quality_path().is_file():
        return []
    q = load_quality()
    manifest = json.loads(quality_path().with_suffix(".json").read_text())
    steps = manifest["lora"]["steps"]
    lines = [
        "## The edge model toolbox (task adapters)",
        "",
        f"Five tasks partition the corpus by top-level package; each has a LoRA adapter (rank {LORA_RANK}, every"
        f" projection of `edge`, {steps} steps, {q.adapter_bytes[0]:,} bytes in fp16) trained on its training files by"
        f" `{manifest['command']}`. Top-1 accuracy, teacher-forced on each task's held-out 256-token windows"
        " (`envs/lam/profiles/toolbox_quality.npz`; `tests/lam/test_toolbox.py` remeasures a column):",
        "",
        "| model | " + " | ".join(f"{t} ({n:,} tokens)" for t, n in zip(q.tasks, q.tokens, strict=True)) + " |",
        "|---|" + "---|" * len(q.tasks),
    ]
    adapters = [q.row(f"edge+{t}") for t in q.tasks]
    best_of_column, best_adapter = q.top1.max(axis=0), q.top1[adapters].max(axis=0)
    for i, m in enumerate(q.models):
        bold = (q.top1[i] == best_of_column) | ((i in adapters) & (q.top1[i] == best_adapter))
        cells = [f"**{v:.3f}**" if b else f"{v:.3f}" for v, b in zip(q.top1[i], bold, strict=True)]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    lines += ["", "Bold: the best of a column, and the best adapter of a column.", ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write docs/model_card.md from the shipped card and profiles.")
    ap.add_argument("--out", type=Path, default=DOC)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
