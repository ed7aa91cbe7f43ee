"""RobustRouting-v0 defined once: a bounded demand adversary over the MicroserviceRouting-v0 simulator.

The state, the step, the observation and the router's reward are those of
:mod:`edgelam.envs.microservice_routing.dynamics` (:class:`~.State`, :func:`~.initial`,
:func:`~.advance`, :func:`~.view`). What this module adds, over a batch of B rows (games):

* :func:`apply_adversary`: the adversary's action a in [-1, 1]^(P + 1 + K) (clipped) sets
  the demand of each row's next arrival (Pinto et al., ICML 2017: a bounded adversary):
  mix' = (1 - mix_budget) mix + mix_budget softmax(3 a_mix), rate' = rate (1 + rate_budget a_rate),
  and with probability ``cell_budget`` the request's user is moved to a cell drawn from
  softmax(3 a_cell) (uniform without a cell budget);
* :func:`adversary_reward`: the zero-sum reward of the adversary;
* :data:`OUTCOME_INFO` and :func:`step_info`: the ``info`` of a step.

The PettingZoo env is B = 1 (:class:`~.env.RobustRoutingEnv`), the batched game B
(:class:`~.vector.RobustRoutingGames`); both call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelam.envs.microservice_routing.dynamics import OUTCOME_COLUMNS, Outcome, Params, State
from edgelam.envs.robust_routing import kernels
from edgelam.envs.robust_routing.config import RobustRoutingConfig

LOGIT_SCALE = 3.0  # softmax temperature of the adversary's logits

# the info keys a step takes from the simulator's outcome table: (key, column, is a 0/1 flag)
OUTCOME_INFO: tuple[tuple[str, int, bool], ...] = tuple(
    (key, OUTCOME_COLUMNS.index(key), flag)
    for key, flag in (("latency_s", False), ("energy_j", False), ("e2e_latency_s", False), ("slo_violated", True),
                      ("completed", True), ("infeasible_action", True))
)
# every info key of a step, both agents (the router's also carries ``action_mask``)
STEP_KEYS = (*(key for key, _, _ in OUTCOME_INFO), "arrival_rate_hz", "queue_lengths_s")
REWARD_COLUMN = OUTCOME_COLUMNS.index("reward")


@dataclass(frozen=True)
class AdversaryParams:
    """What the scenario fixes of the adversary (P pipelines, K servers)."""

    num_pipelines: int  # P
    num_servers: int  # K
    base_mix: np.ndarray  # (P,) the scenario's pipeline mix, normalised
    consts: np.ndarray  # (5,) arrival rate 1/s, mix budget, rate budget, cell budget, logit scale

    @classmethod
    def build(cls, config: RobustRoutingConfig, params: Params) -> AdversaryParams:
        """The adversary of ``config`` over the simulator's ``params``."""
        adv = config.adversary
        return cls(
            num_pipelines=len(params.tables.pipelines),
            num_servers=params.num_servers,
            base_mix=params.base_mix,
            consts=np.array([config.demand.arrival_rate_hz, adv.mix_budget, adv.rate_budget, adv.cell_budget,
                             LOGIT_SCALE]),
        )

    @property
    def action_dim(self) -> int:
        """P + 1 + K: pipeline-mix logits, arrival-rate shift, cell logits."""
        return self.num_pipelines + 1 + self.num_servers


def apply_adversary(adversary: AdversaryParams, state: State, actions: np.ndarray) -> None:
    """Set the demand of every row's next arrival from the adversary's actions, in place.

    Args:
        adversary: the scenario's budgets.
        state: the rows; their ``rate_hz``, ``mix``, ``override_prob`` and ``override_cells`` are written.
        actions: (B, P + 1 + K) float64, finite (already checked); clipped to [-1, 1] here.
    """
    p = adversary.num_pipelines
    logits = np.empty((actions.shape[0], p + adversary.num_servers))
    kernels.shift_logits(actions, p, adversary.consts, logits, state.rate_hz, state.override_prob)
    kernels.mix_and_cells(np.exp(logits, out=logits), adversary.base_mix, adversary.consts, state.mix,
                          state.override_cells)


def adversary_reward(router_reward: np.ndarray | float) -> np.ndarray | float:
    """The adversary's zero-sum reward: minus the router's (+0.0 where the router's is zero)."""
    return 0.0 - router_reward


def step_info(outcome: Outcome, state: State, queue: np.ndarray) -> dict[str, np.ndarray]:
    """The (B,) ``info`` arrays of a step (:data:`STEP_KEYS`; ``queue_lengths_s`` is ``queue`` (B, K))."""
    table = outcome.table
    info = {key: table[:, col] > 0.0 if flag else table[:, col].copy() for key, col, flag in OUTCOME_INFO}
    info["arrival_rate_hz"] = state.rate_hz.copy()
    info["queue_lengths_s"] = queue
    return info
