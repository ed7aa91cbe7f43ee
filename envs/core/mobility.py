"""User mobility in one cell around a base station at the origin, vectorised over users.

Positions are (N, 2) arrays in metres; distances to the BS are clamped below at
``min_distance_m`` (default 10 m, the lower validity limit of the 3GPP TR 38.901
path loss formulas). Randomness comes from a ``numpy.random.Generator`` passed in.

Sources:
    * Random walk and random waypoint models: Camp, Boleng & Davies, "A survey of
      mobility models for ad hoc network research", Wireless Commun. Mob. Comput. 2(5), 2002.
    * A strictly positive minimum speed avoids the speed decay of random waypoint:
      Yoon, Liu & Noble, "Random waypoint considered harmful", IEEE INFOCOM 2003.
    * Default pedestrian speeds around 3 km/h (0.83 m/s), the TR 38.901 UE speed for
      indoor/pedestrian users (3GPP TR 38.901 Table 7.8-1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from edgelam.envs.core.config import bounds, choices


@dataclass(frozen=True)
class MobilityConfig:
    """Mobility of the users of one cell (validated by :func:`edgelam.envs.core.config.build`).

    Attributes:
        model: ``"random_walk"``, ``"random_waypoint"`` or ``"static"``.
        cell_shape: ``"disc"`` of radius ``cell_radius_m`` or ``"square"`` of half side ``cell_radius_m``.
        cell_radius_m: cell radius (disc) or half side (square) in m.
        min_distance_m: users are kept (disc/reflection) or priced (distance clamp) at
            least this far from the BS, in m.
        speed_min_mps: lowest user speed in m/s.
        speed_max_mps: highest user speed in m/s; each leg (waypoint) or step (walk)
            draws a speed uniformly in [min, max].
        pause_s: random waypoint pause at each waypoint, in s.
    """

    model: str = field(default="random_walk", metadata=choices("random_walk", "random_waypoint", "static"))
    cell_shape: str = field(default="disc", metadata=choices("disc", "square"))
    cell_radius_m: float = field(default=250.0, metadata=bounds(20.0, 10_000.0))
    min_distance_m: float = field(default=10.0, metadata=bounds(1.0, 1_000.0))
    speed_min_mps: float = field(default=0.5, metadata=bounds(0.0, 60.0))
    speed_max_mps: float = field(default=1.5, metadata=bounds(0.0, 60.0))
    pause_s: float = field(default=0.0, metadata=bounds(0.0, 3_600.0))

    def validate(self) -> None:
        """Cross-field checks -> ``ValueError`` naming the key."""
        if self.min_distance_m >= self.cell_radius_m / 2:
            raise ValueError(
                f"min_distance_m: {self.min_distance_m!r} must be below half the cell radius "
                f"({self.cell_radius_m / 2!r} m)"
            )
        if self.speed_min_mps > self.speed_max_mps:
            raise ValueError(f"speed_min_mps: {self.speed_min_mps!r} exceeds speed_max_mps {self.speed_max_mps!r}")
        if self.model == "random_waypoint" and self.speed_max_mps <= 0:
            raise ValueError("speed_max_mps: random_waypoint needs a positive speed")


class Mobility(ABC):
    """Base class: user positions in a cell, vectorised over N users.

    Attributes:
        positions_m: (N, 2) user positions in m, BS at the origin.
    """

    def __init__(self, config: MobilityConfig) -> None:
        self.config = config
        self.positions_m = np.zeros((0, 2))

    @property
    def distances_m(self) -> np.ndarray:
        """(N,) 2-D distances to the BS in m, at least ``min_distance_m``."""
        return np.maximum(np.hypot(self.positions_m[:, 0], self.positions_m[:, 1]), self.config.min_distance_m)

    def sample_positions(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 2) positions uniform over the cell minus the disc of radius ``min_distance_m``."""
        cfg = self.config
        r_min, r_max = cfg.min_distance_m, cfg.cell_radius_m
        if cfg.cell_shape == "disc":
            u, theta = rng.random(n), rng.uniform(0.0, 2.0 * math.pi, n)
            r = np.sqrt(u * (r_max**2 - r_min**2) + r_min**2)
            return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        pos = rng.uniform(-r_max, r_max, (n, 2))
        inside = np.hypot(pos[:, 0], pos[:, 1]) < r_min
        while np.any(inside):
            pos[inside] = rng.uniform(-r_max, r_max, (int(inside.sum()), 2))
            inside = np.hypot(pos[:, 0], pos[:, 1]) < r_min
        return pos

    def _keep_inside(self, pos: np.ndarray) -> np.ndarray:
        """Reflect positions at the cell border and off the inner disc of radius ``min_distance_m``."""
        cfg = self.config
        r_min, r_max = cfg.min_distance_m, cfg.cell_radius_m
        if cfg.cell_shape == "square":
            y = np.mod(pos + r_max, 4.0 * r_max)
            pos = np.where(y > 2.0 * r_max, 4.0 * r_max - y, y) - r_max
        r = np.hypot(pos[:, 0], pos[:, 1])
        target, r_out = r, r_max * math.sqrt(2.0)
        if cfg.cell_shape == "disc":
            target, r_out = np.where(r > r_max, 2.0 * r_max - r, r), r_max
        target = np.clip(np.where(target < r_min, 2.0 * r_min - target, target), r_min, r_out)
        scale = np.divide(target, r, out=np.ones_like(r), where=r > 0)
        pos = pos * scale[:, None]
        at_origin = r == 0
        if np.any(at_origin):
            pos[at_origin] = [r_min, 0.0]
        return pos

    def reset(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Place ``n`` users uniformly in the cell; return (positions (n, 2) m, distances (n,) m)."""
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n: expected a positive number of users, got {n!r}")
        self.positions_m = self.sample_positions(rng, int(n))
        return self.positions_m, self.distances_m

    def step(self, rng: np.random.Generator, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Move every user for ``dt_s`` seconds; return (positions (N, 2) m, distances (N,) m)."""
        if not (dt_s >= 0 and math.isfinite(dt_s)):
            raise ValueError(f"dt_s: expected a finite time >= 0 s, got {dt_s!r}")
        self.positions_m = self._move(rng, float(dt_s))
        return self.positions_m, self.distances_m

    @abstractmethod
    def _move(self, rng: np.random.Generator, dt_s: float) -> np.ndarray:
        """New (N, 2) positions after ``dt_s`` seconds."""


class StaticUsers(Mobility):
    """Users that never move (positions drawn at reset)."""

    def _move(self, rng: np.random.Generator, dt_s: float) -> np.ndarray:
        return self.positions_m


class RandomWalk(Mobility):
    """Random walk (Camp et al. 2002): every step a uniform heading and a uniform speed.

    Each user moves v dt in direction theta, v ~ U[speed_min, speed_max],
    theta ~ U[0, 2 pi), then reflects at the cell border and off the inner disc of
    radius ``min_distance_m``.
    """

    def _move(self, rng: np.random.Generator, dt_s: float) -> np.ndarray:
        cfg = self.config
        n = self.positions_m.shape[0]
        speed = rng.uniform(cfg.speed_min_mps, cfg.speed_max_mps, n)
        theta = rng.uniform(0.0, 2.0 * math.pi, n)
        step = (speed * dt_s)[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
        return self._keep_inside(self.positions_m + step)


class RandomWaypoint(Mobility):
    """Random waypoint (Camp et al. 2002): walk straight to a uniform waypoint, pause, repeat.

    Each leg draws a waypoint uniformly in the cell and a speed v ~ U[speed_min,
    speed_max] (keep speed_min > 0, Yoon et al. 2003). A user reaching its waypoint
    within a step stops there for ``pause_s`` seconds; the remainder of that step is
    not used. A straight leg may cross the inner disc: distances are clamped at
    ``min_distance_m``. Every step draws N waypoints and N speeds (used only by users
    starting a new leg), so the random stream does not depend on who arrived.

    Attributes:
        waypoints_m: (N, 2) current destinations in m.
        speeds_mps: (N,) speeds of the current legs in m/s.
        pause_left_s: (N,) remaining pause time in s.
    """

    def __init__(self, config: MobilityConfig) -> None:
        super().__init__(config)
        self.waypoints_m = np.zeros((0, 2))
        self.speeds_mps = np.zeros(0)
        self.pause_left_s = np.zeros(0)

    def reset(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Place ``n`` users uniformly, then draw each one's first waypoint and speed."""
        positions, distances = super().reset(rng, n)
        self.waypoints_m = self.sample_positions(rng, int(n))
        self.speeds_mps = rng.uniform(self.config.speed_min_mps, self.config.speed_max_mps, int(n))
        self.pause_left_s = np.zeros(int(n))
        return positions, distances

    def _move(self, rng: np.random.Generator, dt_s: float) -> np.ndarray:
        cfg = self.config
        n = self.positions_m.shape[0]
        new_waypoints = self.sample_positions(rng, n)
        new_speeds = rng.uniform(cfg.speed_min_mps, cfg.speed_max_mps, n)
        paused = self.pause_left_s > 0
        self.pause_left_s = np.maximum(self.pause_left_s - dt_s, 0.0)
        vec = self.waypoints_m - self.positions_m
        dist = np.hypot(vec[:, 0], vec[:, 1])
        travel = np.where(paused, 0.0, self.speeds_mps * dt_s)
        arrived = ~paused & (travel >= dist)
        frac = np.divide(travel, dist, out=np.zeros_like(dist), where=dist > 0)
        pos = np.where(arrived[:, None], self.waypoints_m, self.positions_m + frac[:, None] * vec)
        self.pause_left_s = np.where(arrived, cfg.pause_s, self.pause_left_s)
        self.waypoints_m = np.where(arrived[:, None], new_waypoints, self.waypoints_m)
        self.speeds_mps = np.where(arrived, new_speeds, self.speeds_mps)
        return pos


MOBILITY_MODELS: dict[str, type[Mobility]] = {
    "random_walk": RandomWalk,
    "random_waypoint": RandomWaypoint,
    "static": StaticUsers,
}


def make_mobility(config: MobilityConfig) -> Mobility:
    """The mobility model named by ``config.model``."""
    if config.model not in MOBILITY_MODELS:
        raise ValueError(f"model: unknown mobility model {config.model!r} (known: {', '.join(MOBILITY_MODELS)})")
    return MOBILITY_MODELS[config.model](config)
