"""Fit the replay surrogate of the FedFT envs to live federated LoRA runs and measure its error.

Runs real FedAvg rounds of the scenario's model (:class:`.live.LiveFederation`) on devices
drawn as the env draws them, alternating episodes of random participation (each round every
device takes part with a probability drawn uniformly in [0.15, 1]) and of full participation
(every device every round, the regime where the loss saturates), fits :class:`.dynamics.Surrogate` by
least squares on the first ``--fit-episodes`` episodes and measures its error on the
remaining ``--test-episodes``:

* ``one_round_mae``: mean absolute error of the predicted decrease of the global loss in
  one round (live loss before the round given), nats/token;
* ``trajectory_mae`` / ``trajectory_max``: mean / max absolute error of the global loss
  when the surrogate's expected trajectory is run open loop from the initial loss under the
  live participation sequence, nats/token; ``trajectory_rel`` = trajectory_mae / mean live loss
  decrease at the end of those episodes;
* ``one_round_noise_floor``: the error a perfect mean predictor would still make in one
  round, E|N(0, sigma^2 / (m G))| = sqrt(2 / pi) sigma / sqrt(m G), averaged over the rounds
  (live SGD noise of the global loss, with sigma the fitted per-topic noise).

Writes ``surrogate.json`` (the shipped one by default)::

    python -m edgelam.envs.fedft.profile [--scenario default] [--out DIR]

``--evaluate-only`` fits nothing: it runs ``--test-episodes`` live episodes of the
scenario's mode (e.g. ``--scenario split``, real split learning) and stores the existing
surrogate's error against them under the key ``error_<mode>`` of its ``surrogate.json``.
``--model-costs`` records the shapes and forward FLOPs of the shipped models that split
mode prices its traffic and device computation with (``model_costs.json``).

``--privacy`` fits the DP-SGD correction of the existing surrogate (:meth:`.dynamics.Surrogate.private`)
to live DP-SGD episodes of a scenario with ``privacy`` (e.g. ``--scenario private``):
``--fit-episodes`` episodes at each noise multiplier of ``--fit-sigmas`` (the scenario's clip
norm), then measures its error (the keys above) on ``--test-episodes`` new episodes at each
of ``--test-sigmas`` (another seed), and stores both under the key ``privacy`` of that
``surrogate.json``::

    python -m edgelam.envs.fedft.profile --scenario private --privacy --fit-sigmas 0.5,1,2 --test-sigmas 0.7,1.4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from edgelam.envs.core.config import load_scenario
from edgelam.envs.fedft.config import FedFTConfig
from edgelam.envs.fedft.data import SEQ_LEN, load_partition
from edgelam.envs.fedft.dynamics import MODEL_COSTS_FILE, SURROGATE_FILE, Surrogate, load_surrogate, topic_weights
from edgelam.envs.fedft.spec import ALLOCATION


def _devices(cfg: FedFTConfig, pools: np.ndarray, rng: np.random.Generator):
    g = pools.shape[0]
    sizes = rng.integers(cfg.samples_per_device[0], cfg.samples_per_device[1] + 1, size=cfg.num_devices)
    mixtures = rng.dirichlet(np.full(g, cfg.dirichlet_alpha), size=cfg.num_devices)
    counts = np.stack([rng.multinomial(n, p) for n, p in zip(sizes, mixtures, strict=True)])
    data = [np.concatenate([pools[j][rng.integers(pools.shape[1], size=c)] for j, c in enumerate(row)])
            for row in counts]
    return sizes, counts, data


def run_live(cfg: FedFTConfig, episodes: int, rounds: int, seed: int, log=print) -> list[dict]:
    """Live episodes (of the scenario's mode) with random participation; per episode the arrays of losses, weights,
    counts."""
    from edgelam.envs.fedft.live import make_live

    part = load_partition()
    g = cfg.num_topics
    fed = make_live(cfg, part.val[:g])
    rng = np.random.default_rng(seed)
    out = []
    for ep in range(episodes):
        sizes, counts, data = _devices(cfg, part.train[:g], rng)
        losses = [fed.reset()]
        weights, members = [], []
        t0 = time.time()
        for _ in range(rounds):
            q = rng.uniform(0.15, 1.0) if ep % 2 == 0 else 1.0
            participants = rng.random(cfg.num_devices) < q
            losses.append(fed.round(data, participants, sizes.astype(np.float64), rng))
            weights.append(topic_weights(participants, sizes, counts))
            members.append(int(participants.sum()))
        log(f"episode {ep}: loss {losses[0].mean():.4f} -> {losses[-1].mean():.4f} "
            f"({(time.time() - t0) / rounds:.2f} s/round)")
        out.append({"loss": np.stack(losses), "weights": np.stack(weights), "m": np.asarray(members)})
    return out


def _stack(episodes: list[dict]) -> tuple[np.ndarray, ...]:
    before = np.concatenate([e["loss"][:-1] for e in episodes])
    after = np.concatenate([e["loss"][1:] for e in episodes])
    w = np.concatenate([e["weights"] for e in episodes])
    m = np.concatenate([e["m"] for e in episodes])
    keep = m > 0
    return before[keep], after[keep], w[keep], m[keep]


def open_loop(s: Surrogate, episode: dict) -> np.ndarray:
    """Expected per-topic losses (rounds, topics) after each round of a live ``episode``, run from its
    initial losses under its live participation (weights and participant counts), never reset to live."""
    losses, out = episode["loss"][0], []
    for t in range(len(episode["m"])):
        losses = losses - s.mean_decrease(losses, episode["weights"][t], episode["m"][t])
        out.append(losses)
    return np.array(out)


def fit(episodes: list[dict]) -> dict:
    """Parameters (gain_own, gain_shared, noise_cost, headroom) minimising the open-loop error.

    Least squares over every topic's loss along each episode's expected surrogate
    trajectory (run from the initial losses under the live participation), which is what
    replay must reproduce; one-round fits drift over an episode. ``sigma`` is then the
    standard deviation of the one-round residuals scaled by sqrt(m).
    """
    initial = episodes[0]["loss"][0]

    def surrogate(x) -> Surrogate:
        a, c, e, h = x
        return Surrogate(a, c, e, h, 0.0, initial, 0, {}, {})

    def residual(x):
        s = surrogate(x)
        return np.concatenate([(open_loop(s, ep) - ep["loss"][1:]).ravel() for ep in episodes])

    sol = least_squares(residual, x0=[0.05, 0.05, 0.0, 0.3], bounds=([-10, -10, -1, 0.0], [10, 10, 1, 5.0]))
    a, c, e, h = (float(v) for v in sol.x)
    before, after, w, m = _stack(episodes)
    r = (before - after - surrogate(sol.x).mean_decrease(before, w, m)) * np.sqrt(m)[:, None]
    return {"gain_own": a, "gain_shared": c, "noise_cost": e, "headroom": h, "sigma": float(np.std(r))}


def evaluate(params: dict, episodes: list[dict]) -> dict:
    """Error of the surrogate (see the module docstring) on live ``episodes``."""
    s = Surrogate(**params, initial_loss=episodes[0]["loss"][0], adapter_bits=0, settings={}, error={})
    if any(not np.array_equal(e["loss"][0], s.initial_loss) for e in episodes):
        raise ValueError("live episodes must start from the same initial losses")
    one, traj, final_drop, floor = [], [], [], []
    for e in episodes:
        m = np.maximum(e["m"], 1)
        floor.extend((np.sqrt(2.0 / np.pi) * s.sigma / np.sqrt(m * e["weights"].shape[1]) * (e["m"] > 0)).tolist())
        live = e["loss"]
        pred = s.mean_decrease(live[:-1], e["weights"], e["m"])
        one.extend(np.abs(pred.mean(axis=1) - (live[:-1] - live[1:]).mean(axis=1)).tolist())
        traj.extend(np.abs(open_loop(s, e).mean(axis=1) - live[1:].mean(axis=1)).tolist())
        final_drop.append(float(live[0].mean() - live[-1].mean()))
    mae = float(np.mean(traj))
    return {
        "one_round_mae": float(np.mean(one)),
        "one_round_noise_floor": float(np.mean(floor)),
        "trajectory_mae": mae,
        "trajectory_max": float(np.max(traj)),
        "trajectory_rel": mae / max(float(np.mean(final_drop)), 1e-12),
        "live_final_decrease": float(np.mean(final_drop)),
        "episodes": len(episodes),
        "rounds": int(sum(len(e["m"]) for e in episodes)),
    }


def _with_sigma(cfg: FedFTConfig, sigma: float) -> FedFTConfig:
    return dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, enabled=True, noise_multiplier=sigma))


def fit_privacy(base: Surrogate, runs: dict[float, list[dict]]) -> dict:
    """DP-SGD correction (slowdown, exponent, sigma) of ``base`` fitted to live DP runs {noise multiplier: episodes}.

    ``slowdown`` and ``exponent`` of rho(sigma) = 1 / (1 + slowdown * sigma^exponent), the factor
    on ``base``'s expected decrease, minimise the open-loop trajectory error as :func:`fit` does
    (``base``'s other parameters fixed); ``sigma`` is the std of the one-round residuals scaled by
    sqrt(m), as in :func:`fit`.
    """
    initial = next(iter(runs.values()))[0]["loss"][0]
    s0 = dataclasses.replace(base, initial_loss=initial, sigma=0.0)

    def scaled(x, noise_multiplier: float) -> Surrogate:
        return dataclasses.replace(s0, decrease_scale=1.0 / (1.0 + x[0] * noise_multiplier ** x[1]))

    def residual(x):
        out = []
        for nm, episodes in runs.items():
            s = scaled(x, nm)
            out.extend((open_loop(s, ep) - ep["loss"][1:]).ravel() for ep in episodes)
        return np.concatenate(out)

    sol = least_squares(residual, x0=[1.0, 1.0], bounds=([0.0, 0.1], [1e3, 4.0]))
    r = []
    for nm, episodes in runs.items():
        before, after, w, m = _stack(episodes)
        r.append((before - after - scaled(sol.x, nm).mean_decrease(before, w, m)) * np.sqrt(m)[:, None])
    return {"slowdown": float(sol.x[0]), "exponent": float(sol.x[1]), "sigma": float(np.std(np.concatenate(r)))}


def fit_privacy_live(cfg: FedFTConfig, fit_sigmas: list[float], test_sigmas: list[float], fit_episodes: int,
                     test_episodes: int, rounds: int, seed: int, out: Path | None, save_runs: Path | None) -> dict:
    """Run the live DP episodes, fit the correction, measure its error and store it under ``privacy`` in
    ``out``'s (or the shipped) ``surrogate.json``; returns that block."""
    path = (SURROGATE_FILE.parent if out is None else out) / "surrogate.json"
    base = load_surrogate(path.parent)
    fit_runs = {nm: run_live(_with_sigma(cfg, nm), fit_episodes, rounds, seed) for nm in fit_sigmas}
    test_runs = {nm: run_live(_with_sigma(cfg, nm), test_episodes, rounds, seed + 1) for nm in test_sigmas}
    if save_runs is not None:
        for tag, runs in (("fit", fit_runs), ("test", test_runs)):
            for nm, eps in runs.items():
                _save_runs(save_runs.with_name(f"{save_runs.stem}_{tag}_{nm:g}.npz"), eps)
    block = {"clip_norm": cfg.privacy.clip_norm, **fit_privacy(base, fit_runs),
             "fit_noise_multipliers": list(fit_sigmas), "fit_episodes": fit_episodes, "seed": seed}
    params = {k: getattr(base, k) for k in ("gain_own", "gain_shared", "noise_cost", "headroom")}
    block["error"] = {}
    for nm, eps in test_runs.items():
        rho = 1.0 / (1.0 + block["slowdown"] * nm ** block["exponent"])
        err = evaluate({**params, "sigma": block["sigma"], "decrease_scale": rho}, eps)
        no_dp = evaluate({**params, "sigma": base.sigma}, eps)  # the uncorrected surrogate on the same runs
        block["error"][f"{nm:g}"] = {**err, "uncorrected_trajectory_mae": no_dp["trajectory_mae"]}
    data = json.loads(path.read_text())
    data["privacy"] = block
    path.write_text(json.dumps(data, indent=2) + "\n")
    return block


def record_model_costs(models: tuple[str, ...] | None = None, path: Path = MODEL_COSTS_FILE) -> dict:
    """Write ``model_costs.json``: per shipped model its shapes and forward FLOPs per ``SEQ_LEN``-token sequence."""
    from edgelam.envs.fedft.live import measure_model_costs
    from edgelam.envs.lam import SHIPPED_MODELS, load

    data = {"seq_len": SEQ_LEN,
            "models": {name: measure_model_costs(load(name), SEQ_LEN) for name in models or SHIPPED_MODELS}}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def _save_runs(path: Path, eps: list[dict]) -> None:
    np.savez_compressed(path, **{f"{k}_{i}": v for i, e in enumerate(eps) for k, v in e.items()})


def evaluate_only(
    cfg: FedFTConfig, episodes: int, rounds: int, seed: int, out: Path | None, save_runs: Path | None = None
) -> dict:
    """Error of the existing surrogate (``out`` or the shipped one) on new live episodes of ``cfg``'s mode.

    Stores it under ``error_<mode>`` in that ``surrogate.json`` and returns it; ``save_runs``
    also saves the live runs (.npz). The live runs draw participation and batches from
    ``seed`` alike in every mode, so two modes' runs of one seed can be compared round by round.
    """
    path = (SURROGATE_FILE.parent if out is None else out) / "surrogate.json"
    s = load_surrogate(path.parent)
    eps = run_live(cfg, episodes, rounds, seed)
    if save_runs is not None:
        _save_runs(save_runs, eps)
    params = {k: getattr(s, k) for k in ("gain_own", "gain_shared", "noise_cost", "headroom", "sigma")}
    error = evaluate(params, eps)
    error["seed"] = seed
    data = json.loads(path.read_text())
    data[f"error_{cfg.mode}"] = error
    path.write_text(json.dumps(data, indent=2) + "\n")
    return error


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="default", help="a fed_ft_allocation scenario name or YAML path")
    ap.add_argument("--fit-episodes", type=int, default=4)
    ap.add_argument("--test-episodes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="folder for surrogate.json (default: the shipped one)")
    ap.add_argument("--save-runs", type=Path, default=None, help="also save the live runs (.npz) for offline fits")
    ap.add_argument("--from-runs", type=Path, default=None, help="fit to live runs saved by --save-runs")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="measure the existing surrogate on --test-episodes new live episodes of the scenario's mode")
    ap.add_argument("--model-costs", action="store_true", help="record model_costs.json of the shipped models")
    ap.add_argument("--privacy", action="store_true",
                    help="fit the DP-SGD correction of the existing surrogate to live DP runs of the scenario")
    ap.add_argument("--fit-sigmas", default="0.5,1,2", help="noise multipliers of the --privacy fit runs")
    ap.add_argument("--test-sigmas", default="0.7,1.4", help="noise multipliers of the --privacy test runs")
    args = ap.parse_args(argv)
    import torch

    from edgelam.envs.fedft.live import LiveFederation

    torch.set_num_threads(args.threads)
    if args.model_costs:
        data = record_model_costs()
        print(json.dumps(data, indent=2))
        print(f"wrote {MODEL_COSTS_FILE}")
        return
    cfg = load_scenario(FedFTConfig, ALLOCATION.scenario_dir, args.scenario)
    if args.privacy:
        fit_s, test_s = ([float(v) for v in a.split(",")] for a in (args.fit_sigmas, args.test_sigmas))
        block = fit_privacy_live(cfg, fit_s, test_s, args.fit_episodes, args.test_episodes, args.rounds, args.seed,
                                 args.out, args.save_runs)
        print(json.dumps({"privacy": block}, indent=2))
        return
    if args.evaluate_only:
        error = evaluate_only(cfg, args.test_episodes, args.rounds, args.seed, args.out, args.save_runs)
        print(json.dumps({f"error_{cfg.mode}": error}, indent=2))
        return
    lo = cfg.lora
    full = LiveFederation(cfg.model, lo.rank, lo.alpha, lo.lr, lo.local_steps, lo.batch_size, load_partition().val)
    initial = full.reset()
    t0 = time.time()
    if args.from_runs is not None:
        with np.load(args.from_runs) as z:
            n = len([k for k in z.files if k.startswith("loss_")])
            eps = [{k: z[f"{k}_{i}"] for k in ("loss", "weights", "m")} for i in range(n)]
        if n != args.fit_episodes + args.test_episodes:
            raise SystemExit(f"{args.from_runs} holds {n} episodes, not --fit-episodes + --test-episodes")
    else:
        eps = run_live(cfg, args.fit_episodes + args.test_episodes, args.rounds, args.seed)
    seconds = time.time() - t0
    if args.save_runs is not None:
        _save_runs(args.save_runs, eps)
    params = fit(eps[: args.fit_episodes])
    error = evaluate(params, eps[args.fit_episodes :])
    error["fit_in_sample"] = evaluate(params, eps[: args.fit_episodes])["trajectory_mae"]
    data = {
        "settings": {"model": cfg.model, "rank": lo.rank, "alpha": lo.alpha, "lr": lo.lr,
                     "local_steps": lo.local_steps, "batch_size": lo.batch_size, "num_topics": cfg.num_topics,
                     "num_devices": cfg.num_devices, "dirichlet_alpha": cfg.dirichlet_alpha,
                     "samples_per_device": list(cfg.samples_per_device), "seed": args.seed},
        "initial_loss": initial.tolist(),
        "adapter_bits": full.adapter_bits,
        "params": params,
        "error": error,
        "live_seconds_per_round": None if args.from_runs else seconds / (len(eps) * args.rounds),
        "torch_threads": args.threads,
    }
    path = (Path(__file__).resolve().parent if args.out is None else args.out) / "surrogate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({"params": params, "error": error}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
