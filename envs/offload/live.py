"""Live backend of Offload-v0 and MultiUserOffload-v0: the chosen tier's executed model really runs on the task."""

from __future__ import annotations


class LiveOffloadQuality:
    """Teacher-forced top-1 accuracy (and device confidence) of real model runs on held-out tasks.

    Calls :func:`edgelam.envs.lam.profile.profile_offload` -- the very function that
    records the ``offload`` replay profile -- on one model and one prompt. Task ``p`` is
    held-out prompt ``p`` (profiles record the first P held-out prompts in order).

    Args:
        executed_models: names of the models executing for (device, edge, cloud): models of
            the profile in ``profile_dir``, loaded from the folders its manifest records.
        cache: keep each (prompt, tier) result for the lifetime of this object, so a task
            executed twice runs its model once (the runs are deterministic, so the numbers
            are the same; MultiUserOffload-v0 uses it to keep N users per slot tractable).
            ``False`` (Offload-v0) runs the model on every call.
        profile_dir: the profile the replay backend reads (``None``: the shipped one); each
            model is fed the token ids it was profiled on (its own tokenizer's, for a family
            profiled from texts).
    """

    def __init__(self, executed_models: tuple[str, str, str], cache: bool = False,
                 profile_dir: str | None = None) -> None:
        from edgelam.envs.lam import load_profiled
        from edgelam.envs.lam.prompts import profile_tokens

        self.models = [load_profiled(name, profile_dir) for name in executed_models]
        self.tokens = [profile_tokens(model, profile_dir) for model in self.models]
        self.runs = 0  # real model executions so far
        self._cache: dict[tuple[int, int], tuple[float, float]] | None = {} if cache else None

    def run(self, prompt: int, tier: int) -> tuple[float, float]:
        """(top-1 accuracy, confidence) of ``tier``'s model on ``prompt``'s reference continuation."""
        key = (prompt, tier)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        from edgelam.envs.lam.profile import profile_offload

        out = profile_offload([self.models[tier]], [self.tokens[tier][prompt]])
        self.runs += 1
        result = float(out["ref_accuracy"][0, 0]), float(out["confidence"][0, 0])
        if self._cache is not None:
            self._cache[key] = result
        return result

    def device_run(self, prompt: int) -> tuple[float, float]:
        """(top-1 accuracy, confidence) of the device model on ``prompt``."""
        return self.run(prompt, 0)

    def accuracy(self, prompt: int, tier: int) -> float:
        """Top-1 accuracy of ``tier``'s model on ``prompt``'s reference continuation."""
        return self.run(prompt, tier)[0]
