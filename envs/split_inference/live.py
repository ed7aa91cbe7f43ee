"""Live backend of SplitInference-v0: the executed model really runs the split inside ``step()``."""

from __future__ import annotations

from edgelam.envs.split_inference.dynamics import executed_layer_map


class LiveSplitQuality:
    """Quality loss of a (card split layer, bits) on one held-out prompt, by real split execution.

    Runs ``edgelam.envs.lam.split_quality`` -- the same function ``edgelam
    profile`` records into the replay profile -- on the executed model: the model of the
    profile in ``profile_dir`` (``None``: the shipped one), loaded from the folder its manifest
    records and fed the token ids it was profiled on.
    """

    def __init__(self, executed_model: str, card_layers: int, profile_dir: str | None = None) -> None:
        from edgelam.envs.lam import load_profiled
        from edgelam.envs.lam.prompts import profile_tokens

        self.lm = load_profiled(executed_model, profile_dir)
        self.prompts = profile_tokens(self.lm, profile_dir)
        self.layer_map = executed_layer_map(card_layers, self.lm.num_layers)

    def quality_loss(self, prompt: int, card_layer: int, bits: int) -> float:
        from edgelam.envs.lam import split_quality

        p = self.prompts[prompt]
        result = split_quality(
            self.lm, p["prompt_ids"], p["reference_ids"], int(self.layer_map[card_layer]), bits
        )
        return 1.0 - float(result["top1_agreement"])
