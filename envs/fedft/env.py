"""edgelam/FedFTAllocation-v0 (Gymnasium) and edgelam/FedFTPower-v0 (PettingZoo parallel).

Both are thin shells over :class:`edgelam.envs.fedft.core.Federation`, one row of the batched
simulator :mod:`edgelam.envs.fedft.dynamics`: federated LoRA fine-tuning of the shipped
``edge`` model by K devices with non-IID data sharing one uplink band, either uploading
adapters (``mode: lora_fedavg``) or split between device and edge server (``mode: split``);
each step is one FedAvg round. The vector env and the batched game (:mod:`.vector`) run
the same functions on B rows.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from edgelam.envs.core.actions import check_box
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer, merge_agents
from edgelam.envs.fedft.config import FedFTConfig
from edgelam.envs.fedft.core import BACKENDS, Federation
from edgelam.envs.fedft.dynamics import (
    Outcome,
    Params,
    State,
    agent_observations,
    allocation,
    observation,
    requested_allocation,
)
from edgelam.envs.fedft.kernels import in_unit_box
from edgelam.envs.fedft.spec import ALLOCATION, POWER

GLOBAL_FEATURES = 3
_FEATURE_LOW = (-2.0, 0.0, 0.0, 0.0)
_FEATURE_HIGH = (3.0, 2.0, 1.0, 1.0)
_GLOBAL_HIGH = (2.0, 10.0, 1.0)

# what render_mode='rgb_array' draws, against the round index (edgelam.envs.core.render)
ALLOCATION_PANELS = (
    Panel("uplink bandwidth per device", ("bandwidth_hz",), "kHz", scale=1e-3),
    Panel("transmit power per device", ("power_w",), "mW", scale=1e3),
    Panel("held-out loss of the global model", ("loss",), "nats"),
    Panel("devices whose update arrived", ("num_participants",), steps=True),
    Panel("device energy of the round", ("energy_j",), "J"),
)
POWER_PANELS = (
    Panel("transmit power per device", ("power_w",), "mW", scale=1e3),
    Panel("uplink bandwidth per device", ("bandwidth_hz",), "kHz", scale=1e-3),
    Panel("held-out loss of the global model", ("loss",), "nats"),
    Panel("device energy of the round", ("energy_j",), "J"),
)


# units of info keys whose name does not state one (metadata["info_units"], read by plot-episode)
FEDFT_INFO_UNITS = {"virtual_queue": "J", "cost": "J", "loss": "nats/token", "topic_loss": "nats/token",
                    "loss_decrease": "nats/token"}


def allocation_space(num_devices: int) -> spaces.Box:
    """FedFTAllocation-v0's action space: 2K entries in [-1, 1] (bandwidth shares, then powers)."""
    return spaces.Box(-1.0, 1.0, shape=(2 * num_devices,), dtype=np.float32)


def allocation_observation_space(num_devices: int) -> spaces.Box:
    """FedFTAllocation-v0's observation space: 4K device features (device-major), then 3 global ones."""
    low = np.concatenate([np.tile(_FEATURE_LOW, num_devices), np.zeros(GLOBAL_FEATURES)]).astype(np.float32)
    high = np.concatenate([np.tile(_FEATURE_HIGH, num_devices), _GLOBAL_HIGH]).astype(np.float32)
    return spaces.Box(low, high, dtype=np.float32)


def power_action_space() -> spaces.Box:
    """One FedFTPower-v0 agent's action space: [power, bandwidth request] in [-1, 1]."""
    return spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


def power_observation_space() -> spaces.Box:
    """One FedFTPower-v0 agent's observation space: its 4 device features, then the 3 global ones."""
    low = np.concatenate([_FEATURE_LOW, np.zeros(GLOBAL_FEATURES)]).astype(np.float32)
    high = np.concatenate([_FEATURE_HIGH, _GLOBAL_HIGH]).astype(np.float32)
    return spaces.Box(low, high, dtype=np.float32)


def allocation_info(params: Params, state: State, out: Outcome, row: int) -> dict[str, Any]:
    """FedFTAllocation-v0's ``info`` of row ``row`` after a round (see the env's ``## Rewards``)."""
    c = out.costs
    energy, compute, upload, latency = c.sums[row].tolist()
    num_participants, num_dropped = c.counts[row].tolist()
    previous, loss, _ = out.table[row].tolist()
    info = {
        "loss": loss,
        "loss_decrease": previous - loss,
        "topic_loss": state.topic_loss[row].copy(),
        "participants": c.participants[row].copy(),
        "num_participants": num_participants,
        "num_dropped": num_dropped,
        "energy_j": energy,
        "compute_energy_j": compute,
        "upload_energy_j": upload,
        "latency_s": latency,
        "uplink_bits": params.bits,
        "downlink_bits": params.downlink_bits,
        "virtual_queue": state.queue[row].item(),
        "bandwidth_hz": c.bandwidth_hz[row].copy(),
        "power_w": c.power_w[row].copy(),
        "cost": energy,
    }
    if params.private:
        eps = state.epsilon(params)[row]
        info["epsilon"] = float(eps.max())
        info["device_epsilon"] = eps
    return info


def power_rewards_infos(
    params: Params, state: State, out: Outcome, row: int, agents: list[str]
) -> tuple[dict[str, float], dict[str, dict[str, Any]], dict[str, Any]]:
    """FedFTPower-v0's rewards and infos of every agent of row ``row`` after a round, and the shared info keys."""
    c = out.costs
    w = params.config.reward
    previous, loss, global_reward = out.table[row].tolist()
    shared = w.loss_scale * (previous - loss)
    energy = c.energy_j[row]
    glob = {
        "loss": loss,
        "num_participants": int(c.counts[row, 0]),
        "total_energy_j": c.sums[row, 0].item(),
        "round_latency_s": c.sums[row, 3].item(),
        "virtual_queue": state.queue[row].item(),
        "uplink_bits": params.bits,
        "downlink_bits": params.downlink_bits,
        "global_reward": global_reward,
        "cost": c.sums[row, 0].item(),
    }
    eps = state.epsilon(params)[row].tolist() if params.private else None
    if eps is not None:
        glob["max_epsilon"] = max(eps)
    columns = zip(agents, (shared - w.energy_weight_per_j * energy).tolist(), energy.tolist(),
                  c.device_latency_s[row].tolist(), c.participants[row].tolist(), c.bandwidth_hz[row].tolist(),
                  c.power_w[row].tolist(), strict=True)
    rewards, infos = {}, {}
    # each agent's info is a copy of one template (its own keys first, then the shared ones), filled in:
    # a dict copy costs half of building the dict anew, what a step of 1,024 agents spends most on
    template = {"energy_j": 0.0, "latency_s": 0.0, "participated": False, "bandwidth_hz": 0.0, "power_w": 0.0, **glob}
    for i, (a, reward, e, latency, participated, bandwidth, power) in enumerate(columns):
        rewards[a] = reward
        info = template.copy()
        info["energy_j"] = e
        info["latency_s"] = latency
        info["participated"] = participated
        info["bandwidth_hz"] = bandwidth
        info["power_w"] = power
        if eps is not None:
            info["epsilon"] = eps[i]
        infos[a] = info
    return rewards, infos, glob


class FedFTAllocationEnv(gym.Env):
    """Allocate uplink bandwidth and transmit power to K devices in each round of federated LoRA fine-tuning.

    Each round every scheduled device trains LoRA adapters (rank 4 on q/v of the shipped
    4-layer ``edge`` model) for a few local steps on its private, non-IID data (stdlib test
    suites of a Dirichlet mixture of packages, :mod:`.data`), then uploads them (their real
    fp16 size, 196,608 bits by default) over its FDMA share of the band; devices that miss
    the round deadline are dropped, the others are averaged by FedAvg weighted by data size.
    ``backend="live"`` really trains and validates the model in ``step()``;
    ``backend="replay"`` (default) draws the loss change from a surrogate fitted to live runs
    (:mod:`.profile`, parameters and measured error in ``surrogate.json``, see the
    ``Surrogate error`` section).

    ## Modes
    The scenario key ``mode`` picks how devices fine-tune:

    * ``lora_fedavg`` (default): as above; a device computes the whole model's forward and
      backward passes and uploads its adapters.
    * ``split`` (scenario ``split``; :class:`~.config.SplitConfig`): SplitFed V1 (Thapa et
      al., AAAI 2022) with LoRA (SplitLoRA, Lin et al., arXiv 2407.00952). The device keeps
      the token embedding and the first ``split.device_layers`` decoder layers (1 by default)
      with their adapters; the edge server runs the other layers with their adapters, the
      head and the loss. In every local step the device uploads the cut activations (B x T x
      d in ``split.wire_dtype``) and the labels (B x (T - 1) uint16) and downloads the
      gradient w.r.t. the activations; after the round it uploads its own adapters. Traffic
      per device and round with the defaults: 4,791,936 bits up (24x lora_fedavg) and
      4,718,592 bits down (3 x 8 x 64 x 192 x 16), the download on a separate band shared
      equally (``split.downlink_bandwidth_hz``; its time counts toward the deadline, at no
      device energy). The device computes its layers' share of the real forward FLOPs
      (17.5% for one of the ``edge`` model's 4 layers plus head, ``model_costs.json``), so its
      computation time and energy kappa * cycles * f^2 are 17.5% of lora_fedavg's. Live, the
      model really runs split: activations and gradients are cast to the wire dtype at the
      cut, and the server holds one adapter copy per device, averaged with the devices'
      adapters by FedAvg after the round (:class:`~.live.SplitLiveFederation`). That is the
      lora_fedavg update computed in two places, so the learning dynamics are the same up
      to the float16 rounding at the cut, and replay uses the same surrogate. Measured on 2
      live episodes x 30 rounds of 5 devices (seed 1, random and full participation, the
      same participants and batches in both modes; the runs the two ``--evaluate-only``
      commands of the ``Surrogate error`` section save with ``--save-runs``): the global loss
      of split and lora_fedavg differs by at most 0.0011 nats/token, their per-round
      decreases by 0.0002 on average (``tests/fedft/test_split.py`` checks the float32 split update equals the
      lora_fedavg one and 6 tiny live rounds agree within 0.002). ``info`` carries
      ``uplink_bits`` and ``downlink_bits`` per device and round in both modes.

    ## Privacy
    Scenario option ``privacy`` (:class:`~.config.PrivacyConfig`, off by default; scenario
    ``private`` = default + ``privacy: {enabled: true, noise_multiplier: 1.0, clip_norm: 0.5,
    delta: 1e-5}``): sample-level differential privacy of every device's local training by
    DP-SGD (Abadi et al., CCS 2016; :mod:`.privacy`): Poisson batches of expected size
    ``lora.batch_size``, each sequence's adapter gradient clipped to ``clip_norm``, Gaussian
    noise of std ``noise_multiplier * clip_norm`` on the sum. In ``lora_fedavg`` the uploaded
    adapters are private; in ``split`` mode the device's adapters and the server's copy for
    that device are (per-part clipping), but the cut activations and labels it uploads are not
    (the edge server is trusted with them), see :mod:`.live`. A Rényi-DP accountant of the
    sampled Gaussian mechanism (integer orders 2..256, Mironov et al. 2019) composes each
    device's local steps over the rounds it was *scheduled* in (a device dropped at the
    deadline trained and transmitted, so it pays too; an unscheduled one pays nothing) and
    converts to epsilon at ``delta`` (Balle et al. 2020); it matches Opacus' to 1e-6
    (``tests/fedft/test_privacy.py``). ``info`` then carries ``epsilon`` (the largest over
    devices so far) and ``device_epsilon`` (K,). With the ``private`` scenario and the equal
    policy (every device every round: 90 DP-SGD steps at q = 8 / n_k), seed 0 ends the
    episode at epsilon 4.51 (devices 2.8 to 4.5; 11.1 at noise multiplier 0.7, 1.35 at 2).
    Live, the noise really slows the loss: over 2 live episodes (random / full participation)
    the loss falls 0.146 nats/token without privacy (seed 0, key ``error``) and 0.013 at
    noise multiplier 0.7 (seed 1, key ``privacy``). Replay multiplies the
    surrogate's expected decrease by rho(sigma) = 1 / (1 + slowdown * sigma^exponent), fitted
    (``python -m edgelam.envs.fedft.profile --scenario private --privacy``, ``surrogate.json``
    key ``privacy``) to 2 live DP episodes (random / full participation) at each sigma in
    {0.5, 1, 2} for clip norm 0.5: slowdown 31.7, exponent 1.21, so rho(1) = 0.031. On 2 held-
    out live episodes (seed 1) at each of sigma 0.7 and 1.4 its open-loop trajectory error is
    0.0030 / 0.0032 nats/token mean (0.010 / 0.012 max; 23% / 113% of the live decrease of
    0.013 / 0.0028: at sigma 1.4 the live loss hardly moves), one-round MAE 0.0008 / 0.0008
    against a noise floor of 0.0008; the uncorrected surrogate errs by 0.100 / 0.106. Replay of another clip norm
    raises ValueError (refit, or use ``backend="live"``). The correction was fitted in
    ``lora_fedavg``; split replay with privacy uses it too, its error against live split
    DP-SGD (per-part clipping) is not measured.

    ## Action Space
    ``Box(-1, 1, (2K,), float32)``: entries 0..K-1 give bandwidth shares, the projection of
    (a + 1) / 2 onto the simplex (Euclidean, so all-equal entries give equal shares and
    small entries get no band); entries K..2K-1 give powers p = (a + 1) / 2 * p_max. A
    device with no band or no power is not scheduled this round (it does not train).

    ## Observation Space
    ``Box(float32, (4K + 3,))``: per device (device-major) its SNR in dB alone on the whole
    band at p_max / 40, its computation time (plus, in split mode, its gradient download
    time) / deadline, its data share, whether it took part
    in the last round; then the validation loss / initial loss, the energy virtual queue /
    (10 x budget), and the elapsed fraction of the episode. Channel state is known at the
    start of each round (block fading over the round).

    ## Rewards
    ``loss_scale * (previous validation loss - new validation loss) - energy_weight_per_j *
    energy_j`` with the validation loss the mean next-token cross-entropy (nats/token) over the
    topics' held-out sequences and ``energy_j`` the total device energy of the round
    (computation kappa * cycles * f^2 plus upload p * t). ``info`` carries ``loss``,
    ``participants`` (bool per device), ``num_participants``, ``num_dropped``, ``energy_j``,
    ``latency_s`` (time until the last scheduled device finished, capped at the deadline),
    ``virtual_queue`` Z(t+1) = max(Z + energy_j - energy_budget_j, 0) (Neely 2010),
    ``topic_loss``, ``bandwidth_hz`` and ``power_w``, and with ``privacy`` ``epsilon`` and
    ``device_epsilon`` (see ``## Privacy``).

    Cost (Safety-Gymnasium's convention): ``info["cost"]`` is the round's total device
    energy in J (``energy_j``, what the queue accumulates), reported every round. The
    per-episode limit, the spec's ``cost_limit(scenario)``, is ``energy_budget_j`` x
    ``episode_length`` J (60 J in scenario ``default``: 2 J x 30 rounds); every scenario has
    one (a budget of 0 J is a limit of 0 J).

    ## Hindsight
    Kind ``bound`` up to 6 devices (every shipped scenario but ``dense``, which is ``planner``);
    :mod:`edgelam.baselines.fedft_hindsight`. The baseline ``hindsight`` reads the episode's
    fading and surrogate noise from a fork of the env (the noise generator is drawn only in rounds
    with participants, so a round's noise block is the n-th, n the earlier rounds with any). Its
    value is a certified upper bound: the return is the mean over topics of per-topic returns, a
    round acts on a topic's loss by an affine map of the set of devices that arrive (read from the
    env's surrogate kernel), its energy is at least the set's computation energy plus a Lagrangian
    dual bound of its min-energy FDMA upload; letting every topic pick its own sets relaxes the
    problem into one exact DP per topic over (round, headroom, n), whose value functions are maxima
    of lines. It is loose, about 2x on the default episodes (bound 20.8 against 10.6 for the plan
    played, seeds 10000-10004), since each topic trains on the devices holding its data and rides
    its own noise. The plan played is a planner's: beam search over the rounds' participant sets,
    each with its least-energy allocation, then coordinate ascent, every round priced by
    :func:`.dynamics.advance`; its realised return is the rows' ``return``. Not exact: the final
    loss couples the rounds (32^30 set sequences by default). Replay backend only (``live``
    raises ValueError).

    ## Episode End
    Truncated after the scenario's ``episode_length`` rounds (30 by default; the id
    registers no ``max_episode_steps``, so an ``episode_length`` override is the episode
    length); never terminated.

    ## Physics and sources
    Round time/energy model of Yang et al., TWC 2021 (arXiv 1911.02417), see
    :mod:`.dynamics`; TR 38.901 path loss, shadowing and Rayleigh block fading from
    :mod:`edgelam.envs.core.channel`; LoRA (Hu et al., ICLR 2022), FedAvg (McMahan et al.,
    AISTATS 2017).

    ## Surrogate error and speed
    Measured by ``python -m edgelam.envs.fedft.profile`` (``surrogate.json``, key ``error``)
    on 2 live episodes x 30 rounds (one with random, one with full participation) not used
    for the fit (fit on 4 x 30 alike): one-round error of the global-loss decrease 0.0058
    nats/token (mean absolute; live SGD noise alone makes about 0.0067); open-loop surrogate
    trajectory vs live 0.0069 mean / 0.038 max nats/token, 5% of the live decrease over an
    episode (0.146). ``tests/fedft`` replays the surrogate on 3 live rounds of the equal
    policy from another seed. Replay runs the round compiled once (numba, :mod:`.kernels`) for
    this env and for B copies of it in the vector env (``gym.make_vec(id, num_envs,
    vectorization_mode="vector_entry_point")``, :class:`~.vector.FedFTAllocationVectorEnv`,
    replay only); ``edgelam bench`` measures both. Live runs
    0.3 steps/s (equal, 5 devices train) to 0.6 steps/s (lyapunov) on one core shared with
    other jobs. On 2 further live episodes from seed 1 (``python -m edgelam.envs.fedft.profile
    --scenario {default,split} --evaluate-only --test-episodes 2 --seed 1``, keys
    ``error_lora_fedavg`` / ``error_split`` of ``surrogate.json``) the shipped surrogate errs
    more, alike in both modes: one-round MAE 0.0097 (split) / 0.0096 (lora_fedavg) nats/token
    against a noise floor of 0.0072, open-loop trajectory 0.028 mean / 0.072 max (28% of the
    live decrease 0.100); live split rounds took 1.9-2.0 s (lora_fedavg 1.6-2.1 s) on one
    thread.

    ## Version History
    * v0: initial release (modes ``lora_fedavg`` and ``split``; scenario option ``privacy``, off by default).
    """

    metadata = {
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "metric_directions": {"loss": "min"},
        "info_sums": ("energy_j", "compute_energy_j", "upload_energy_j", "loss_decrease"),
        "info_units": FEDFT_INFO_UNITS,
    }

    def __init__(self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None,
                 **overrides):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self._renderer = Renderer("FedFTAllocation-v0", render_mode, ALLOCATION_PANELS)
        self.config: FedFTConfig = load_scenario(FedFTConfig, ALLOCATION.scenario_dir, scenario, overrides)
        self.backend = backend
        self.render_mode = render_mode
        self.fed = Federation(self.config, backend)
        k = self.fed.k
        self._renderer.entry_labels = tuple(f"device_{i}" for i in range(k))
        self.action_space = allocation_space(k)
        self.observation_space = allocation_observation_space(k)

    def allocation(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bandwidth_hz, power_w), (K,) each, of an in-space action (see ``## Action Space``)."""
        bandwidth, power = allocation(self.fed.params, self.fed.state, self._action(action).reshape(1, -1))
        return bandwidth[0], power[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self.fed.reset(self.np_random)
        return observation(self.fed.params, self.fed.state, self.fed.work)[0], {"loss": self.fed.loss,
                                                                 "distance_m": self.fed.distances_m}

    def _action(self, action: Any) -> np.ndarray:
        """(2K,) float64 of an in-space action (ValueError naming the problem otherwise)."""
        if type(action) is np.ndarray and action.shape == self.action_space.shape and action.dtype.kind == "f":
            a = action.astype(np.float64)
            if in_unit_box(a):
                return a
        return check_box(action, self.action_space, "bandwidth shares then powers of the devices")

    def step(self, action):
        a = self._action(action)
        fed = self.fed
        params, state = fed.params, fed.state
        bandwidth, power = allocation(params, state, a.reshape(1, -1), fed.work)
        out = fed.advance(bandwidth, power, self.np_random)
        info = allocation_info(params, fed.state, out, 0)
        reward = out.table[0, 2].item()
        truncated = bool(fed.state.step[0] >= self.config.episode_length)
        if self._renderer.history is not None:
            self._renderer.history.append(action, reward, info)
        return observation(params, state, fed.work)[0], reward, False, truncated, info

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent rounds (``rgb_array``)."""
        return self._renderer.render()


class FedFTPowerEnv(ParallelEnv):
    """Each device picks its own transmit power and bandwidth request in federated LoRA fine-tuning.

    Same simulator, data, model, backends, modes (``lora_fedavg``, ``split``) and round model
    as ``FedFTAllocation-v0`` (:class:`FedFTAllocationEnv`); the allocation is decentralised.
    Up to 1,024 devices (``num_devices``), with no Python loop per device in the round. The
    batched game :class:`~.vector.FedFTPowerGames` (``edgelam.envs.registration.make_batched``,
    replay only) plays B games of K devices in arrays; parameter sharing trains on its B x K
    agent rows (:func:`edgelam.agents.marl.batched_vec_env`).

    ## Action Space
    Per agent ``Box(-1, 1, (2,), float32)`` (identical spaces, so SuperSuit parameter
    sharing works): power p = (a[0] + 1) / 2 * p_max and bandwidth request r = (a[1] + 1) / 2;
    requests are normalised onto the band, b_k = B r_k / sum_j r_j (no band for anyone when
    every request is 0).

    ## Observation Space
    Per agent ``Box(float32, (7,))``: its own SNR alone on the whole band at p_max / 40,
    computation (plus split-mode download) time / deadline, data share, participation in the last round; the
    validation loss / initial loss, the energy virtual queue / (10 x budget) and the elapsed
    fraction of the episode.

    ## Rewards
    Per agent ``loss_scale * (previous - new validation loss) - energy_weight_per_j *
    own energy_j``: the shared improvement minus its own energy. Every agent's ``info``
    holds its own ``energy_j`` / ``latency_s`` / ``participated`` plus the global ``loss``,
    ``num_participants``, ``total_energy_j``, ``round_latency_s``, ``virtual_queue``,
    ``uplink_bits``, ``downlink_bits`` and ``global_reward`` (the FedFTAllocation-v0 reward of the round);
    with ``privacy`` also its own ``epsilon`` and the largest, ``max_epsilon``.

    Cost (Safety-Gymnasium's convention): the energy budget is shared, one virtual queue
    Z(t+1) = max(Z + total_energy_j - energy_budget_j, 0) for all devices, so every agent's
    ``info["cost"]`` is the same: the round's total device energy in J (``total_energy_j``,
    what the shared queue accumulates; an agent's own part is its ``energy_j``). The
    per-episode limit, the spec's ``cost_limit(scenario)``, is ``energy_budget_j`` x
    ``episode_length`` J (60 J in scenario ``default``: 2 J x 30 rounds), for each agent's
    episode cost (not their sum).

    ## Hindsight
    As FedFTAllocation-v0's (see there): kind ``bound`` up to 6 devices, ``planner`` beyond, over
    joint actions ``{agent: [power, band request]}``, for the return as the evaluation counts it
    (the mean over agents, so energy weighs 1/K). Bound 24.8 against 16.2 for the plan played
    (seeds 10000-10004). Replay backend only.

    ## Episode End
    All agents are truncated after ``episode_length`` rounds; never terminated.

    ## Physics and sources
    Those of FedFTAllocation-v0: the round time/energy model of Yang et al., TWC 2021 (arXiv
    1911.02417), TR 38.901 path loss, shadowing and Rayleigh block fading, LoRA (Hu et al.,
    ICLR 2022) and FedAvg (McMahan et al., AISTATS 2017); the decentralised band split is
    proportional to the devices' requests.

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "name": "fed_ft_power_v0",
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "is_parallelizable": True,
        "metric_directions": {"loss": "min"},
        "info_sums": ("energy_j", "total_energy_j"),
        # keys every agent reports with the round's team value (power_rewards_infos' shared keys)
        "info_team": ("loss", "num_participants", "total_energy_j", "round_latency_s", "virtual_queue",
                      "uplink_bits", "downlink_bits", "global_reward", "cost", "max_epsilon"),
        "info_units": FEDFT_INFO_UNITS,
    }

    def __init__(self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None,
                 **overrides):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self._renderer = Renderer("FedFTPower-v0", render_mode, POWER_PANELS)
        self.config: FedFTConfig = load_scenario(FedFTConfig, POWER.scenario_dir, scenario, overrides)
        self.env_id = POWER.id
        self.spec = None
        self.backend = backend
        self.render_mode = render_mode
        self.fed = Federation(self.config, backend)
        self.possible_agents = [f"device_{i}" for i in range(self.fed.k)]
        self._renderer.entry_labels = tuple(self.possible_agents)
        self.agents: list[str] = []
        obs_space, act_space = power_observation_space(), power_action_space()
        self.observation_spaces = dict.fromkeys(self.possible_agents, obs_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, act_space)
        self._np_random, _ = seeding.np_random(None)

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self.action_spaces[agent]

    def _observations(self) -> dict[str, np.ndarray]:
        return dict(zip(self.possible_agents, agent_observations(self.fed.params, self.fed.state, self.fed.work)[0],
                        strict=True))

    def _actions(self, actions: dict) -> np.ndarray:
        """(K, 2) float64 of one action per agent, checked against its space."""
        if not isinstance(actions, dict) or actions.keys() != set(self.agents):
            raise ValueError(f"actions: expected one action per live agent {self.agents}, got {actions!r}")
        values = [actions[ag] for ag in self.possible_agents]
        try:  # the fast path: numeric arrays stacking into one (K, 2) array in [-1, 1]; the rest agent by agent
            a = np.asarray(values) if {v.dtype.kind for v in values} <= {"f", "i", "u"} else None
        except (AttributeError, ValueError):  # not arrays, or arrays of different shapes
            a = None
        if a is not None and a.shape == (len(values), 2):
            a = a.astype(np.float64)
            if in_unit_box(a.reshape(-1)):
                return a
        return np.stack(
            [check_box(actions[ag], self.action_space(ag), "[power, bandwidth request]", f"action of {ag}")
             for ag in self.possible_agents]
        )

    def allocation(self, actions: dict) -> tuple[np.ndarray, np.ndarray]:
        """(bandwidth_hz, power_w), (K,) each, of one action per agent (see ``## Action Space``)."""
        bandwidth, power = requested_allocation(self.fed.params, self.fed.state, self._actions(actions)[None])
        return bandwidth[0], power[0]

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
        self.agents = list(self.possible_agents)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self.fed.reset(self._np_random)
        infos = {a: {"distance_m": d} for a, d in zip(self.possible_agents, self.fed.state.distances_m[0].tolist(),
                                                      strict=True)}
        return self._observations(), infos

    def step(self, actions: dict):
        if not self.agents:
            raise ValueError("step() after the episode ended; call reset()")
        fed = self.fed
        bandwidth, power = requested_allocation(fed.params, fed.state, self._actions(actions)[None], fed.work)
        out = fed.advance(bandwidth, power, self._np_random)
        rewards, infos, glob = power_rewards_infos(fed.params, fed.state, out, 0, self.possible_agents)
        truncated = bool(fed.state.step[0] >= self.config.episode_length)
        terminations = dict.fromkeys(self.possible_agents, False)
        truncations = dict.fromkeys(self.possible_agents, truncated)
        if self._renderer.history is not None:
            action, merged = merge_agents(actions, infos, self.possible_agents, shared=tuple(glob))
            # the mean over agents: the return edgelam compare and plot-episode report for a parallel env
            self._renderer.history.append(action, sum(rewards.values()) / len(rewards), merged)
        if truncated:
            self.agents = []
        return self._observations(), rewards, terminations, truncations, infos

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent rounds (``rgb_array``).

        The return in it is the sum of the devices' rewards.
        """
        return self._renderer.render()

    def close(self) -> None:
        """Nothing to release."""


def parallel_env(**kwargs: Any) -> FedFTPowerEnv:
    """Build FedFTPower-v0 (``scenario=``, ``backend=``, dotted overrides)."""
    return FedFTPowerEnv(**kwargs)
