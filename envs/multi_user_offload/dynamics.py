"""Pure cost model of one slot of N users offloading into a shared uplink and edge server.

User i with task ``p_i`` picks tier k_i (0 device, 1 edge, 2 cloud). The uplink band
B is split by FDMA: an offloading user gets a fraction x_i of it and transmits at a
fixed power spectral density P_max / B (uplink power control scales the power with the
allocated bandwidth, 3GPP TS 38.213 Sec. 7.1.1), so its spectral efficiency
se_i = log2(1 + SNR_i) does not depend on x_i and

    upload time  = a_i / x_i,   a_i = up_bits_i / (B se_i),
    edge compute = s_i / (y_i (1 - u)),  s_i = the task's time on an unloaded edge,

with y_i the user's share of the edge's free capacity (processor sharing). The
transmit energy P_max x_i a_i / x_i = P_max a_i does not depend on the split. The rest
(compute, RTTs, downlink, cloud price) is priced as in Offload-v0
(:mod:`edgelam.envs.offload.dynamics`). Minimising total latency over the split,
min sum_i a_i / x_i s.t. sum_i x_i <= 1, gives x_i = sqrt(a_i) / sum_j sqrt(a_j)
(Lagrange; e.g. Boyd & Vandenberghe, Convex Optimization, 2004, Sec. 5.5.3), and
the total becomes (sum_i sqrt(a_i))^2.
"""

from __future__ import annotations

import numpy as np

from edgelam.envs.core.queues import processor_sharing_time_s
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE, TierTables


def equal_shares(tiers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal split: every offloading user gets 1 / n_offload of the band, every edge user 1 / n_edge."""
    off = tiers != DEVICE
    edge = tiers == EDGE
    return off / max(int(off.sum()), 1), edge / max(int(edge.sum()), 1)


def slot_costs(
    t: TierTables,
    prompts: np.ndarray,
    tiers: np.ndarray,
    spectral_eff: np.ndarray,
    band_share: np.ndarray,
    compute_share: np.ndarray,
    bandwidth_hz: float,
    edge_util: float,
    cloud_rtt_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(latency_s, device energy_j, cloud_cost_usd, upload time coefficient a) per user, each (N,).

    ``band_share`` / ``compute_share`` (N,) are the fractions of the band / free edge
    capacity of each user (only offloading / edge users' entries are read; they must be > 0).
    """
    off = tiers != DEVICE
    edge = tiers == EDGE
    comp = t.compute_s[prompts, tiers]
    a = t.up_bits[prompts] / (bandwidth_hz * spectral_eff)
    up_s = np.where(off, a / np.where(off, band_share, 1.0), 0.0)
    comp = np.where(edge, processor_sharing_time_s(comp, edge_util, np.where(edge, compute_share, 1.0)), comp)
    latency = comp + up_s + off * t.down_s + edge * t.edge_rtt_s + (tiers == CLOUD) * cloud_rtt_s
    energy = np.where(off, t.tx_power_w * a + t.dev_idle_w * (latency - up_s), t.dev_active_w * comp)
    usd = (tiers == CLOUD) * t.cloud_usd[prompts]
    return latency, energy, usd, a


__all__ = ["CLOUD", "DEVICE", "EDGE", "equal_shares", "slot_costs"]
