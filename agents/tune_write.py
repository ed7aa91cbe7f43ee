"""Writing a finished ``edgelam tune`` study back: the best trial into the algorithm's hyperparameter
file (the study's numbers in a comment above the entry) and the study's record into
``configs/agents/tuning/``, from which docs/results.md's Tuning section is generated."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from edgelam.agents import hyperparams as hp
from edgelam.agents import lagrangian
from edgelam.agents.common import env_dir
from edgelam.agents.tune import VALIDATION_SEED, TuneResult, TuneSettings
from edgelam.envs.core.config import configs_dir


def _policy_kwargs_text(policy_kwargs: dict[str, Any]) -> str | dict[str, Any]:
    """``policy_kwargs`` as the file writes it: rl-zoo3's string form when it names an activation."""
    if "activation_fn" not in policy_kwargs:
        return policy_kwargs
    names = {v: k for k, v in hp._NN_NAMES.items()}
    parts = [f"{k}={v!r}" for k, v in policy_kwargs.items() if k != "activation_fn"]
    parts.append(f"activation_fn=nn.{names[policy_kwargs['activation_fn']]}")
    return f"dict({', '.join(parts)})"


def record_path(env_id: str, algo: str, folder: Path | None = None) -> Path:
    """Where :func:`write_best` keeps a study's record: ``configs/agents/tuning/<env>.<algo>.json``."""
    return (folder or configs_dir() / "agents" / "tuning") / f"{env_dir(env_id)}.{algo}.json"


def default_path(algo: str) -> Path:
    """The file a study of ``algo`` writes: ``configs/agents/hyperparams/<algo>.yml`` (rarl: its own ``rarl.yml``,
    so that RARL's entry leaves the env's plain PPO entry in ``ppo.yml`` as it is)."""
    if algo == lagrangian.ALGO:
        return lagrangian.hyperparams_file()
    if algo == hp.RARL:
        return hp.rarl_file()
    return hp.hyperparams_file(algo)


def current_entry(env_id: str, algo: str, path: Path) -> dict[str, Any]:
    """The keys the written entry starts from: the env's entry (else ``default``) of ``path``; rarl: its own
    entry only (``{}`` where it has none: the rest stays ``ppo.yml``'s)."""
    if algo == lagrangian.ALGO:
        ppo, settings = lagrangian.resolve(env_id, path=path)
        return {**ppo, **asdict(settings)}
    if algo == hp.RARL:
        return hp.rarl_overrides(env_id, path)
    return hp.entry(env_id, algo, path)


def _check(algo: str, entry: dict[str, Any], source: str) -> None:
    if algo == lagrangian.ALGO:
        lagrangian.split_entry(entry, source)
    else:
        hp.validate("ppo" if algo == hp.RARL else algo, entry, source=source)


def _read(algo: str, path: Path) -> None:
    if algo == lagrangian.ALGO:
        lagrangian.read_file(path)
    elif algo == hp.RARL:
        hp.rarl_overrides("default", path)
    else:
        hp.read_file(path, algo)


def write_best(
    result: TuneResult,
    command: str,
    path: Path | None = None,
    records: Path | None = None,
    settings: TuneSettings | None = None,
) -> Path:
    """Replace (or add) the env's entry in the algorithm's file with the best trial, the study in a comment;
    the study's record (scores, held-out gain, command, and the study's ``settings`` when given) goes to
    :func:`record_path` (in ``records``)."""
    path = path or default_path(result.algo)
    entry = {**current_entry(result.env_id, result.algo, path), **result.best_params, "n_timesteps": result.budget}
    if "policy_kwargs" in entry:
        entry["policy_kwargs"] = _policy_kwargs_text(entry["policy_kwargs"])
    entry = {k: float(v) if isinstance(v, float) else v for k, v in entry.items()}
    _check(result.algo, entry, f"{path}: {result.env_id}")  # what is written reads back
    date = datetime.date.today().strftime("%-d %B %Y")
    b, u = result.best, result.untuned
    comment = [
        f"Tuned by `{command}` ({date}): {result.complete} trials completed, {result.pruned} pruned,",
        f"{result.wall_s / 60:.1f} min; {result.budget:,} steps per trial. "
        f"Validation return (seeds {VALIDATION_SEED}+i):",
        f"best trial {b['trial']} {b['mean']:.4g} ± {b['ci95']:.2g}; the entry before tuning {u['mean']:.4g} ± "
        f"{u['ci95']:.2g}.",
    ]
    if result.constraint is not None:
        c = result.constraint
        comment.append(
            f"Constrained selection: the best return among trials over the cost limit on <= "
            f"{c['max_violation']:.0%} of the validation episodes; best trial's share {b['violation']:.0%}"
            + ("." if c["feasible"] else " (no trial was feasible: the lowest share).")
        )
    if result.test is not None:
        t = result.test
        comment.append(
            f"Test split ({t['episodes']} episodes from seed {t['seed']}): {t['tuned']['mean']:.4g} ± "
            f"{t['tuned']['ci95']:.2g} against {t['untuned']['mean']:.4g} ± {t['untuned']['ci95']:.2g}, paired gain "
            f"{t['gain']['mean']:.4g} ± {t['gain']['ci95']:.2g} (Wilcoxon: tuned {t['verdict']} untuned)."
        )

    def flow(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()

    lines = [f"{result.env_id}:"]
    for key, value in entry.items():
        if isinstance(value, dict):
            lines += [f"  {key}:", *(f"    {k}: {flow(v)}" for k, v in value.items())]
        else:
            lines.append(f"  {key}: {flow(value)}")
    body = "\n".join(lines) + "\n"
    block = "".join(f"# {line}\n" for line in comment) + body
    text = path.read_text()
    # an entry is its comment lines, its top-level key line and its indented lines
    pattern = re.compile(rf"(?m)(^#[^\n]*\n)*^{re.escape(result.env_id)}:[^\n]*\n(^[ \t]+[^\n]*\n)*")
    match = pattern.search(text)
    if match:
        text = text[: match.start()] + block + text[match.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
    _read(result.algo, path)
    record = record_path(result.env_id, result.algo, records)
    record.parent.mkdir(parents=True, exist_ok=True)
    document = {k: v for k, v in asdict(result).items() if k != "folder"}
    if settings is not None:
        document["settings"] = {
            **{k: v for k, v in asdict(settings).items() if k != "out"},
            "vectorized": settings.vectorized,
        }
    record.write_text(
        json.dumps(
            {**document, "command": command, "date": date, "validation_gain": result.gain}, indent=2, default=str
        )
        + "\n"
    )
    return path
