"""Microservice catalog of MicroserviceRouting-v0, profiled from real torch modules.

A multimodal LAM is decomposed into microservices (modality encoders, input
projector, LM backbone, output projector, modality decoders; NExT-GPT style,
Wu et al., ICML 2024). Every one is a real ``torch.nn.Module``:

* ``text_encoder``: the shipped ``edge`` LM's token embedding + its first decoder block.
* ``backbone``: all decoder blocks of the ``edge`` LM: prefill of the stage's input
  tokens, then ``DECODE_TOKENS`` one-token decode steps.
* ``text_decoder``: the ``edge`` LM's final norm + LM head over the generated tokens.
* ``image_encoder``: a ViT-style patch encoder (Dosovitskiy et al., ICLR 2021):
  16x16 conv patch embedding of a 224x224 RGB image + pre-norm transformer blocks.
* ``audio_encoder``: a Whisper-style conv stem (Radford et al., 2022): two Conv1d over
  80-bin log-mel frames (the second with stride 2) + one transformer block.
* ``input_projector``: a two-layer MLP from the encoder width to the LM width (LLaVA-1.5).
* ``output_projector``: a Linear from the LM width to the speech decoder width.
* ``speech_decoder``: ConvTranspose1d upsampling + Conv1d to 80-bin mel frames.

The weights of the image/audio/speech modules are random (untrained): their FLOPs
and tensor shapes are what matters here and those are real. FLOPs are counted
analytically from each layer's real shapes by forward hooks during a real forward
pass on dummy input (``2 * in * out`` per token for a Linear, ``2 * C_in/groups * k *
C_out`` per output position for a convolution, ``4 * N^2 * width`` for bidirectional
attention scores + weighted values, :meth:`LM.layer_flops` for the LM blocks; biases,
norms and activations are neglected as in ``edgelam.envs.lam``). The output shapes
recorded are those of that forward pass.

``python -m edgelam.envs.microservice_routing.catalog`` writes ``catalog.json`` beside
this file; the env reads the JSON (``backend="replay"``) or re-profiles at
construction (``backend="live"``), so ``step()`` never touches torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CATALOG_PATH = Path(__file__).with_name("catalog.json")
CATALOG_KEYS = ("executed_lm", "decode_tokens", "microservices", "pipelines")
REGENERATE = "regenerate it with `python -m edgelam.envs.microservice_routing.catalog`"
EXECUTED_LM = "edge"
ACT_BYTES = 2  # fp16 activations and weights
TOKEN_ID_BYTES = 4
IMAGE_SIZE = 224
PATCH = 16
ENCODER_WIDTH = 256
MEL_BINS = 80
MEL_FRAMES = 400  # 4 s of audio at a 10 ms hop
TEXT_PROMPT_TOKENS = 32
DECODE_TOKENS = 32
SPEECH_DECODER_WIDTH = 128

MICROSERVICES = (
    "text_encoder",
    "image_encoder",
    "audio_encoder",
    "input_projector",
    "backbone",
    "output_projector",
    "text_decoder",
    "speech_decoder",
)
PIPELINES: dict[str, tuple[str, ...]] = {
    "text_chat": ("text_encoder", "backbone", "text_decoder"),
    "image_captioning": ("image_encoder", "input_projector", "backbone", "text_decoder"),
    "speech_qa": ("audio_encoder", "input_projector", "backbone", "output_projector", "speech_decoder"),
}


def _torch_modules(width: int = ENCODER_WIDTH):
    """Build the non-LM modules (torch imported here only)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class SelfAttention(nn.Module):
        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, d = x.shape
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v)
            return self.proj(y.transpose(1, 2).reshape(b, n, d))

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int, mlp: int) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = SelfAttention(dim, heads)
            self.norm2 = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, mlp)
            self.fc2 = nn.Linear(mlp, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class PatchEncoder(nn.Module):
        def __init__(self, dim: int, depth: int = 2) -> None:
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, PATCH, stride=PATCH)
            self.pos = nn.Parameter(torch.zeros(1, (IMAGE_SIZE // PATCH) ** 2, dim))
            self.blocks = nn.Sequential(*[Block(dim, 4, 4 * dim) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(image).flatten(2).transpose(1, 2) + self.pos
            return self.norm(self.blocks(x))

    class ConvAudioEncoder(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv1d(MEL_BINS, dim, 3, padding=1)
            self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
            self.block = Block(dim, 4, 4 * dim)

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            x = F.gelu(self.conv2(F.gelu(self.conv1(mel))))
            return self.block(x.transpose(1, 2))

    class Projector(nn.Module):
        def __init__(self, d_in: int, d_out: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(d_in, d_out)
            self.fc2 = nn.Linear(d_out, d_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(F.gelu(self.fc1(x)))

    class SpeechDecoder(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.up = nn.ConvTranspose1d(dim, dim, 4, stride=2, padding=1)
            self.out = nn.Conv1d(dim, MEL_BINS, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(F.gelu(self.up(x.transpose(1, 2))))

    return SelfAttention, PatchEncoder, ConvAudioEncoder, Projector, SpeechDecoder


def module_flops(module, inputs: tuple) -> tuple[float, tuple[int, ...]]:
    """FLOPs of one real forward pass of ``module`` on ``inputs``, counted by hooks, and its output shape.

    Linear: ``2 * in_features * out_features`` per row; Conv1d/Conv2d: ``2 * C_in / groups *
    prod(kernel) * C_out`` per output position; ConvTranspose1d: ``2 * C_in * k * C_out / groups``
    per input position; modules with a ``heads`` attribute and ``(B, N, d)`` input (bidirectional
    self-attention): ``4 * B * N^2 * d`` for scores and weighted values.
    """
    import torch
    from torch import nn

    total = [0.0]

    def hook(mod, args, out) -> None:
        x = args[0]
        if isinstance(mod, nn.Linear):
            total[0] += 2.0 * mod.in_features * mod.out_features * (x.numel() // x.shape[-1])
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            k = int(np.prod(mod.kernel_size))
            positions = out.numel() // out.shape[1]
            total[0] += 2.0 * mod.in_channels // mod.groups * k * mod.out_channels * positions
        elif isinstance(mod, nn.ConvTranspose1d):
            positions = x.numel() // x.shape[1]
            total[0] += 2.0 * mod.in_channels * mod.kernel_size[0] * mod.out_channels // mod.groups * positions
        elif hasattr(mod, "heads"):
            b, n, d = x.shape
            total[0] += 4.0 * b * n * n * d

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d)) or hasattr(m, "heads")
    ]
    try:
        with torch.no_grad():
            out = module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0], tuple(int(s) for s in out.shape)


def _params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _stage(flops: float, weight_bytes: float, in_bytes: float, out_shape, out_elem_bytes: int, passes: int = 1):
    out_bytes = float(np.prod(out_shape) * out_elem_bytes)
    return {
        "flops": float(flops),
        "mem_bytes": float(passes * weight_bytes + in_bytes + out_bytes),
        "in_bytes": float(in_bytes),
        "out_bytes": out_bytes,
        "out_shape": list(out_shape),
    }


def profile_catalog(lm_name: str = EXECUTED_LM, seed: int = 0) -> dict[str, Any]:
    """Instantiate every microservice, run it on dummy input and count its FLOPs and tensor sizes.

    Returns the catalog as written to ``catalog.json``: per microservice its parameter
    count and fp16 weight bytes; per pipeline the ordered stages with FLOPs, roofline
    memory bytes (fp16 weights read once per pass + input + output), input/output bytes
    and output shape; and the shape of the executed LM (for model-card scaling).
    """
    import torch

    from edgelam.envs.lam import load

    torch.manual_seed(seed)
    _, PatchEncoder, ConvAudioEncoder, Projector, SpeechDecoder = _torch_modules()
    lm = load(lm_name)
    h = lm.hidden_size
    image_enc = PatchEncoder(ENCODER_WIDTH).eval()
    audio_enc = ConvAudioEncoder(ENCODER_WIDTH).eval()
    in_proj = Projector(ENCODER_WIDTH, h).eval()
    out_proj = torch.nn.Linear(h, SPEECH_DECODER_WIDTH).eval()
    speech_dec = SpeechDecoder(SPEECH_DECODER_WIDTH).eval()

    lm_block = sum(p.numel() for p in lm._layers[0].parameters())
    lm_blocks = sum(p.numel() for layer in lm._layers for p in layer.parameters())
    embed = lm._embed_tokens.weight.numel()
    head = lm._lm_head.weight.numel() + sum(p.numel() for p in lm._norm.parameters())
    params = {
        "text_encoder": int(embed + lm_block),
        "image_encoder": _params(image_enc),
        "audio_encoder": _params(audio_enc),
        "input_projector": _params(in_proj),
        "backbone": int(lm_blocks),
        "output_projector": _params(out_proj),
        "text_decoder": int(head),
        "speech_decoder": _params(speech_dec),
    }
    weights = {k: float(v * ACT_BYTES) for k, v in params.items()}

    def encoder_stage(name: str, module, dummy, in_bytes: float):
        flops, shape = module_flops(module, (dummy,))
        return flops, shape, _stage(flops, weights[name], in_bytes, shape, ACT_BYTES)

    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    mel = torch.randn(1, MEL_BINS, MEL_FRAMES)
    _, img_shape, img_stage = encoder_stage("image_encoder", image_enc, image, 3 * IMAGE_SIZE**2)  # uint8 RGB
    _, aud_shape, aud_stage = encoder_stage("audio_encoder", audio_enc, mel, MEL_BINS * MEL_FRAMES * ACT_BYTES)

    def projector_stage(enc_shape, enc_bytes: float):
        flops, shape = module_flops(in_proj, (torch.randn(*enc_shape),))
        return shape, _stage(flops, weights["input_projector"], enc_bytes, shape, ACT_BYTES)

    img_proj_shape, img_proj = projector_stage(img_shape, img_stage["out_bytes"])
    aud_proj_shape, aud_proj = projector_stage(aud_shape, aud_stage["out_bytes"])

    ids = torch.randint(0, lm.vocab_size, (1, TEXT_PROMPT_TOKENS))
    with torch.no_grad():
        text_h = lm.forward_layers(lm.embed(ids), 0, 1)
    text_enc = _stage(
        float(lm.layer_flops(TEXT_PROMPT_TOKENS)[0]),
        weights["text_encoder"] - embed * ACT_BYTES + TEXT_PROMPT_TOKENS * h * ACT_BYTES,  # rows looked up
        TEXT_PROMPT_TOKENS * TOKEN_ID_BYTES,
        tuple(text_h.shape),
        ACT_BYTES,
    )

    def backbone_stage(in_shape, in_bytes: float):
        tokens = int(in_shape[1])
        prefill = float(lm.layer_flops(tokens).sum())
        decode = sum(float(lm.layer_flops(1, tokens + i).sum()) for i in range(DECODE_TOKENS))
        with torch.no_grad():
            out = lm.forward_layers(torch.randn(*in_shape), 0, lm.num_layers)[:, -1:, :]
        shape = (1, DECODE_TOKENS, int(out.shape[-1]))
        stage = _stage(prefill + decode, weights["backbone"], in_bytes, shape, ACT_BYTES, passes=1 + DECODE_TOKENS)
        stage["prefill_tokens"] = tokens
        return shape, stage

    def text_decoder_stage(in_shape, in_bytes: float):
        with torch.no_grad():
            logits = lm.head(torch.randn(*in_shape))
        shape = tuple(logits.shape[:2])  # one token id per position after sampling
        flops = float(lm.head_flops(int(in_shape[1])))
        return _stage(flops, weights["text_decoder"], in_bytes, shape, TOKEN_ID_BYTES, passes=int(in_shape[1]))

    def speech_stages(in_shape, in_bytes: float):
        flops, shape = module_flops(out_proj, (torch.randn(*in_shape),))
        proj = _stage(flops, weights["output_projector"], in_bytes, shape, ACT_BYTES)
        flops_d, shape_d = module_flops(speech_dec, (torch.randn(*shape),))
        return [proj, _stage(flops_d, weights["speech_decoder"], proj["out_bytes"], shape_d, ACT_BYTES)]

    text_bb_shape, text_bb = backbone_stage(tuple(text_h.shape), text_enc["out_bytes"])
    img_bb_shape, img_bb = backbone_stage(img_proj_shape, img_proj["out_bytes"])
    aud_bb_shape, aud_bb = backbone_stage(aud_proj_shape, aud_proj["out_bytes"])
    stages = {
        "text_chat": [text_enc, text_bb, text_decoder_stage(text_bb_shape, text_bb["out_bytes"])],
        "image_captioning": [img_stage, img_proj, img_bb, text_decoder_stage(img_bb_shape, img_bb["out_bytes"])],
        "speech_qa": [aud_stage, aud_proj, aud_bb, *speech_stages(aud_bb_shape, aud_bb["out_bytes"])],
    }
    for name, pipeline in PIPELINES.items():
        for stage, service in zip(stages[name], pipeline, strict=True):
            stage["microservice"] = service
    return {
        "executed_lm": {
            "name": lm_name,
            "num_layers": lm.num_layers,
            "hidden_size": h,
            "block_params": int(lm_blocks),
            "head_params": int(lm._lm_head.weight.numel()),
            "vocab_size": lm.vocab_size,
        },
        "decode_tokens": DECODE_TOKENS,
        "microservices": {k: {"params": params[k], "weight_bytes": weights[k]} for k in MICROSERVICES},
        "pipelines": stages,
    }


def load_catalog(path: Path | str | None = None) -> dict[str, Any]:
    """Read a catalog JSON (default: the shipped ``catalog.json``)."""
    p = Path(path) if path is not None else CATALOG_PATH
    try:
        catalog = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad UTF-8 or JSON
        raise ValueError(f"catalog: cannot read {p} ({exc}); {REGENERATE}") from None
    missing = [k for k in CATALOG_KEYS if not isinstance(catalog, dict) or k not in catalog]
    if missing:
        raise ValueError(f"catalog: {p} has no {missing[0]!r} (expected keys {', '.join(CATALOG_KEYS)}); {REGENERATE}")
    return catalog


def main() -> None:
    """Profile the modules and write ``catalog.json`` beside this file."""
    catalog = profile_catalog()
    CATALOG_PATH.write_text(json.dumps(catalog, indent=1) + "\n")
    print(f"wrote {CATALOG_PATH}")


if __name__ == "__main__":
    main()
