"""The one FedFT simulator behind both env shells, at B = 1: :mod:`.dynamics` over one row, plus the live backend."""

from __future__ import annotations

import numpy as np

from edgelam.envs.fedft.config import FedFTConfig
from edgelam.envs.fedft.data import load_partition
from edgelam.envs.fedft.dynamics import (
    Costs,
    Outcome,
    Params,
    RoundCosts,
    State,
    Workspace,
    advance,
    draw_fading,
    draw_learning_noise,
    initial,
    learning_generator,
    state_costs,
)
from edgelam.envs.fedft.privacy import RDPAccountant

BACKENDS = ("replay", "live")

__all__ = ["BACKENDS", "Federation"]


class Federation:
    """State of a FedFT episode and the transition of one round: a one-row :class:`~.dynamics.State`.

    The round is :func:`.dynamics.advance` (the vector env and the batched game run the same
    function on B rows); this class adds what only one row has: the live backend, which
    really trains LoRA adapters on the devices' local data, and the attributes the baselines
    read (views of the state's row, copied).

    Randomness: devices, channel and fading come from the env's ``np_random``; learning
    randomness (live local batches, replay surrogate noise) from a generator seeded from it
    at :meth:`reset`, so both backends see the same devices and channels for one seed.
    """

    def __init__(self, cfg: FedFTConfig, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self.cfg = cfg
        self.backend = backend
        self.params = Params.build(cfg, backend)
        self.k = cfg.num_devices
        self.g = cfg.num_topics
        self.surrogate = self.params.surrogate
        self.cycles = self.params.cycles
        self.bits = self.params.bits
        self.downlink_bits = self.params.downlink_bits
        if self.params.model_costs is not None:
            self.model_costs = self.params.model_costs
        self.live = None
        self.pools: np.ndarray | None = None
        if backend == "live":
            from edgelam.envs.fedft.live import make_live

            part = load_partition()
            self.pools = part.train[: self.g]
            self.live = make_live(cfg, part.val[: self.g])
            if cfg.mode == "split":
                self._check_model_costs()
            if self.live.adapter_bits != self.surrogate.adapter_bits:
                raise ValueError(f"lora: adapters of {self.live.adapter_bits} bits differ from the surrogate's "
                                 f"{self.surrogate.adapter_bits}; refit the surrogate (profile_dir)")
        self.initial_topic_loss = self.params.initial_topic_loss.copy()
        self.initial_loss = self.params.initial_loss
        self.learn_rng = np.random.default_rng(0)
        self.state: State = initial(self.params, np.random.default_rng(0), 1)[0]  # replaced by reset()
        self.work = Workspace.of(self.params, 1)  # what a round writes (the shells copy what they hand out)
        self.local_data: list[np.ndarray] = []

    def _check_model_costs(self) -> None:
        """ValueError if the recorded costs the traffic and cycles come from are not the live model's."""
        from edgelam.envs.fedft.live import measure_model_costs

        mc = self.model_costs
        real = measure_model_costs(self.live.lm, mc.seq_len)
        recorded = {"num_layers": mc.num_layers, "hidden_size": mc.hidden_size, "layer_flops": mc.layer_flops.tolist(),
                    "head_flops": mc.head_flops, "lora_values_per_rank": mc.lora_values_per_rank.astype(int).tolist()}
        if real != recorded:
            raise ValueError(f"model: the recorded costs of {self.cfg.model!r} differ from the live model; re-record "
                             "them with `python -m edgelam.envs.fedft.profile --model-costs`")

    # -- the row's state, as the baselines and tests read it (copies) --------------------------------

    @property
    def t(self) -> int:
        """Rounds played in the episode."""
        return int(self.state.step[0])

    @property
    def queue(self) -> float:
        """Energy virtual queue Z in J."""
        return float(self.state.queue[0])

    @property
    def loss(self) -> float:
        """Current global validation loss (mean over topics, nats/token)."""
        return float(self.state.loss[0])

    @property
    def topic_loss(self) -> np.ndarray:
        """(G,) current validation loss of each topic."""
        return self.state.topic_loss[0].copy()

    @property
    def gains(self) -> np.ndarray:
        """(K,) link power gains of this round."""
        return self.state.gains[0].copy()

    @property
    def downlink_s(self) -> np.ndarray:
        """(K,) time each device spends receiving this round's downlink (split mode; zeros otherwise), s."""
        return self.state.downlink_s[0].copy()

    @property
    def distances_m(self) -> np.ndarray:
        """(K,) device distances to the base station drawn at reset, m."""
        return self.state.distances_m[0].copy()

    @property
    def cpu_freq_hz(self) -> np.ndarray:
        """(K,) device CPU frequencies, Hz."""
        return self.state.cpu_freq_hz[0].copy()

    @property
    def data_sizes(self) -> np.ndarray:
        """(K,) local sequences of each device."""
        return self.state.data_sizes[0].copy()

    @property
    def topic_counts(self) -> np.ndarray:
        """(K, G) local sequences of each topic on each device."""
        return self.state.topic_counts[0].copy()

    @property
    def last_participants(self) -> np.ndarray:
        """(K,) bool: whose update arrived in the previous round."""
        return self.state.last_participants[0].copy()

    @property
    def accountant(self) -> RDPAccountant | None:
        """The devices' privacy accountant (views of the state), or None without privacy."""
        if not self.params.private:
            return None
        s = self.state
        return RDPAccountant.over(s.step_rdp[0], s.rdp[0], s.dp_steps[0], self.cfg.privacy.delta)

    @property
    def compute_s(self) -> np.ndarray:
        """(K,) local computation time of each device in s."""
        return self.cycles / self.state.cpu_freq_hz[0]

    @property
    def upload_window_s(self) -> np.ndarray:
        """(K,) time left for the upload before the deadline, in s (0 if computation and download miss it)."""
        return np.clip(self.cfg.deadline_s - self.compute_s - self.state.downlink_s[0], 0.0, None)

    def full_band_snr_db(self) -> np.ndarray:
        """(K,) SNR in dB of each device alone on the whole band at p_max."""
        return 10.0 * np.log10(self.state.full_band_snr[0])

    # -- the round ------------------------------------------------------------------------------

    def reset(self, rng: np.random.Generator) -> None:
        """Draw devices (distances, CPU, local data) and the first round's channel (:func:`.dynamics.initial`)."""
        self.state, episode = initial(self.params, rng, 1)
        self.learn_rng = learning_generator(episode.learning_seeds)
        if self.live is not None:
            self.local_data = self._local_data(episode.pool_draws(self.params, self.state))
            self.state.topic_loss[0] = self.live.reset()
            self.state.loss[0] = self.state.topic_loss[0].mean()

    def _local_data(self, pool_draws: np.ndarray) -> list[np.ndarray]:
        """Each device's local sequences: its topics' pool rows at the drawn indices."""
        out, at = [], 0
        for counts in self.state.topic_counts[0]:
            parts = []
            for j, c in enumerate(counts):
                parts.append(self.pools[j][pool_draws[at: at + c]])
                at += c
            out.append(np.concatenate(parts))
        return out

    def costs(self, bandwidth_hz: np.ndarray, power_w: np.ndarray) -> RoundCosts:
        """Costs of an allocation in the current round (no state change)."""
        return self.costs_of(bandwidth_hz, power_w).row(0)

    def costs_of(self, bandwidth_hz: np.ndarray, power_w: np.ndarray) -> Costs:
        """:meth:`costs` as a one-row :class:`~.dynamics.Costs`."""
        b = np.ascontiguousarray(bandwidth_hz, dtype=np.float64).reshape(1, self.k)
        p = np.ascontiguousarray(power_w, dtype=np.float64).reshape(1, self.k)
        return state_costs(self.params, self.state, b, p)

    def _learning_noise(self, num_participants: np.ndarray) -> np.ndarray:
        return draw_learning_noise(self.learn_rng, self.params, num_participants)

    def _live_topic_loss(self, state: State, costs: Costs) -> np.ndarray:
        loss = self.live.round(self.local_data, costs.participants[0], state.data_sizes[0].astype(np.float64),
                               self.learn_rng)
        return np.asarray(loss, dtype=np.float64).reshape(1, self.g)

    def advance(self, bandwidth_hz: np.ndarray, power_w: np.ndarray, rng: np.random.Generator) -> Outcome:
        """Run one round with this allocation ((1, K) each), then draw the next round's fading from ``rng``.

        The outcome's arrays are :attr:`work`'s, overwritten by the next round.
        """
        live = None if self.live is None else self._live_topic_loss
        return advance(self.params, self.state, bandwidth_hz, power_w, draw_fading(rng, self.params, 1),
                       self._learning_noise, self.work, live)

    def device_epsilon(self) -> np.ndarray:
        """(K,) privacy spent so far by each device, epsilon at ``privacy.delta`` (zeros without privacy)."""
        return self.state.epsilon(self.params)[0]
