"""Speculative sampling is exact: greedy equals greedy, sampling matches the target's distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from edgelam.envs.lam import (
    acceptance_probability,
    load,
    load_prompts,
    make_draft,
    speculative_generate,
    target_sample,
)
from edgelam.envs.lam import speculative as spec

from . import largest_shipped, perturbed, shipped_available, tiny_lm

torch.set_num_threads(1)

N_SAMPLES = 5000
PROMPT = [1, 5, 3]
VOCAB = 10


@pytest.fixture(scope="module")
def pair():
    """A tiny target and a draft close enough to accept about 60% of the time (vocab 10)."""
    target = tiny_lm(1, vocab=VOCAB, hidden=16, layers=1, heads=2, kv_heads=1, init=0.3, tie=False)
    return target, perturbed(target, 0.5, seed=7)


@torch.no_grad()
def exact_marginals(lm, prompt, n: int, temperature: float = 1.0) -> list[np.ndarray]:
    """Exact marginal distribution of each of the first ``n`` generated tokens (enumerating prefixes)."""
    prefixes, weights, out = [[]], torch.ones(1, dtype=torch.float64), []
    for _ in range(n):
        logits = lm.logits([prompt + p for p in prefixes], last=1)[:, -1]
        joint = weights[:, None] * torch.softmax(logits.double() / temperature, -1)
        out.append(joint.sum(0).numpy())
        prefixes = [[*p, v] for p in prefixes for v in range(lm.vocab_size)]
        weights = joint.reshape(-1)
    return out


def chi2_pvalue(samples: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square goodness of fit; cells expected below 5 are pooled into one."""
    counts = np.bincount(samples, minlength=len(probs)).astype(float)
    expected = probs * len(samples)
    small = expected < 5
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return float(stats.chisquare(counts, expected * counts.sum() / expected.sum()).pvalue)


def speculative_samples(target, draft, n_tokens: int = 3, gamma: int = 3) -> np.ndarray:
    runs = [
        speculative_generate(target, draft, PROMPT, n_tokens, gamma, 1.0, seed=s) for s in range(N_SAMPLES)
    ]
    return np.array([tokens for tokens, _ in runs])


@pytest.fixture(scope="module")
def spec_samples(pair):
    return speculative_samples(*pair)


def test_the_pair_is_a_nontrivial_case(pair):
    target, draft = pair
    p, q = exact_marginals(target, PROMPT, 1)[0], exact_marginals(draft, PROMPT, 1)[0]
    beta = np.minimum(p, q).sum()
    assert 0.3 < beta < 0.9 and p.max() < 0.8 and q.max() < 0.8


def test_speculative_sampling_matches_the_target_distribution(pair, spec_samples):
    target, _ = pair
    exact = exact_marginals(target, PROMPT, 3)
    for pos in range(3):
        assert chi2_pvalue(spec_samples[:, pos], exact[pos]) > 0.01, pos
    # the joint of the first two tokens too (100 cells)
    joint = (exact_marginals(target, PROMPT, 1)[0][:, None] * _second_given_first(target)).reshape(-1)
    assert chi2_pvalue(spec_samples[:, 0] * VOCAB + spec_samples[:, 1], joint) > 0.01


@torch.no_grad()
def _second_given_first(lm) -> np.ndarray:
    logits = lm.logits([[*PROMPT, v] for v in range(VOCAB)], last=1)[:, -1]
    return torch.softmax(logits.double(), -1).numpy()


def test_plain_target_sampling_matches_the_exact_marginal(pair):
    target, _ = pair
    exact = exact_marginals(target, PROMPT, 1)[0]
    samples = np.array([target_sample(target, PROMPT, 1, 1.0, seed=s)[0] for s in range(N_SAMPLES)])
    assert chi2_pvalue(samples, exact) > 0.01


def test_the_statistic_has_power_against_wrong_implementations(pair):
    """Outputs of two classic bugs, drawn from their exact distributions, fail the same test."""
    target, draft = pair
    p, q = exact_marginals(target, PROMPT, 1)[0], exact_marginals(draft, PROMPT, 1)[0]
    rng = np.random.default_rng(0)
    always_accept = q  # first token of a verifier that accepts every draft token
    resample_from_p = np.minimum(p, q) + (1 - np.minimum(p, q).sum()) * p  # no residual on rejection
    for wrong in (always_accept, resample_from_p):
        samples = rng.choice(VOCAB, size=N_SAMPLES, p=wrong / wrong.sum())
        assert chi2_pvalue(samples, p) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("bug", ["always_accept", "resample_from_p"])
def test_buggy_speculative_sampling_is_rejected(pair, monkeypatch, bug):
    target, draft = pair
    if bug == "always_accept":
        monkeypatch.setattr(spec, "_accepts", lambda p_x, q_x, gen: True)
    else:
        monkeypatch.setattr(spec, "_residual", lambda p, q: p)
    samples = speculative_samples(target, draft, n_tokens=2, gamma=1)
    assert chi2_pvalue(samples[:, 0], exact_marginals(target, PROMPT, 1)[0]) < 0.01


def test_round_statistics_are_consistent(pair):
    target, draft = pair
    tokens, rounds = speculative_generate(target, draft, PROMPT, 20, 4, 1.0, seed=11)
    assert len(tokens) == 20 == sum(r.emitted for r in rounds)
    assert all(0 <= r.accepted <= r.proposed <= 4 and r.emitted <= r.accepted + 1 for r in rounds)
    assert any(r.accepted < r.proposed for r in rounds) and any(r.accepted > 0 for r in rounds)
    assert all(r.draft_time_s >= 0 and r.verify_time_s > 0 for r in rounds)
    again, again_rounds = speculative_generate(target, draft, PROMPT, 20, 4, 1.0, seed=11)
    assert again == tokens and [r.accepted for r in again_rounds] == [r.accepted for r in rounds]


def test_gamma_zero_is_plain_target_sampling(pair):
    target, draft = pair
    for temperature in (0.0, 0.7, 1.0):
        tokens, rounds = speculative_generate(target, draft, PROMPT, 12, 0, temperature, seed=5)
        assert tokens == target_sample(target, PROMPT, 12, temperature, seed=5)
        assert all(r.proposed == 0 and r.emitted == 1 for r in rounds)


@pytest.fixture(scope="module")
def shipped_target():
    return load(largest_shipped())


def _draft_variants(target) -> list[str]:
    names = [n for n in ("device", "edge") if n != target.name and shipped_available(n)]
    return [*names, f"early_exit:{min(2, target.num_layers - 1)}", "int8"]


def test_greedy_speculative_equals_greedy_target(shipped_target):
    prompts = load_prompts()[:2]
    for rec in prompts:
        greedy = target_sample(shipped_target, rec["prompt_ids"], 24, 0.0)
        for variant in _draft_variants(shipped_target):
            draft = make_draft(shipped_target, variant)
            for gamma in (1, 3, 6):
                tokens, rounds = speculative_generate(shipped_target, draft, rec["prompt_ids"], 24, gamma, 0)
                assert tokens == greedy, (variant, gamma)
                assert sum(r.emitted for r in rounds) == 24


def test_acceptance_probability():
    p = torch.tensor([[2.0, 1.0, 0.0]])
    q = torch.tensor([[0.0, 1.0, 2.0]])
    assert acceptance_probability(p, p, 1.0).item() == pytest.approx(1.0)
    pp, qq = torch.softmax(p.double(), -1), torch.softmax(q.double(), -1)
    assert acceptance_probability(p, q, 1.0).item() == pytest.approx(float(torch.minimum(pp, qq).sum()))
    assert acceptance_probability(p, q, 0.0).item() == 0.0
    assert acceptance_probability(p, p + 1.0, 0.0).item() == 1.0


def test_make_draft_variants_and_errors(pair):
    target, _ = pair
    assert make_draft(target, "int8").name == f"{target.name}:int8"
    with pytest.raises(ValueError, match="early exit"):
        make_draft(target, "early_exit:1")  # the tiny target has a single layer
    with pytest.raises(ValueError, match="early_exit:<k>"):
        make_draft(target, "early_exit:two")
    with pytest.raises(ValueError, match="unknown draft variant"):
        make_draft(target, "no-such-draft")
    with pytest.raises(ValueError, match="gamma"):
        speculative_generate(target, target, PROMPT, 4, -1)
    with pytest.raises(ValueError, match="vocab"):
        other = tiny_lm(2, vocab=12, hidden=16, layers=1, heads=2, kv_heads=1)
        speculative_generate(target, other, PROMPT, 4, 2)
