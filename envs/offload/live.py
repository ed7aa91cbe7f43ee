"""Live backend of Offload-v0: the chosen tier's executed model really runs on the task inside ``step()``."""

from __future__ import annotations


class LiveOffloadQuality:
    """Teacher-forced top-1 accuracy (and device confidence) of real model runs on held-out tasks.

    Calls :func:`edgelam.envs.lam.profile.profile_offload` -- the very function that
    records the ``offload`` replay profile -- on one model and one prompt.

    Args:
        executed_models: names of the models executing for (device, edge, cloud).
    """

    def __init__(self, executed_models: tuple[str, str, str]) -> None:
        from edgelam.envs.lam import load, load_prompts

        self.models = [load(name) for name in executed_models]
        self.prompts = load_prompts()

    def _run(self, prompt: int, tier: int) -> dict:
        from edgelam.envs.lam.profile import profile_offload

        return profile_offload([self.models[tier]], [self.prompts[prompt]])

    def device_run(self, prompt: int) -> tuple[float, float]:
        """(top-1 accuracy, confidence) of the device model on ``prompt``."""
        out = self._run(prompt, 0)
        return float(out["ref_accuracy"][0, 0]), float(out["confidence"][0, 0])

    def accuracy(self, prompt: int, tier: int) -> float:
        """Top-1 accuracy of ``tier``'s model on ``prompt``'s reference continuation."""
        return float(self._run(prompt, tier)["ref_accuracy"][0, 0])
