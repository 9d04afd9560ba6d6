"""The paired bootstrap against cases with a known answer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from unified_lm.bench.bootstrap import hierarchical_bootstrap, paired_bootstrap, pool_runs


def _errors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(5, 20, n)
    return rng.binomial(ref, 0.3), ref


def test_identical_systems_give_a_degenerate_interval_at_zero():
    errors, ref = _errors(200, 0)
    b = paired_bootstrap(errors, errors, ref, num_samples=500)
    assert b.rel_change == 0.0
    assert b.ci_low == b.ci_high == 0.0
    assert b.p_better == 0.0  # never strictly better
    assert b.baseline_wer == b.system_wer == pytest.approx(errors.sum() / ref.sum())


def test_exactly_half_the_errors_is_minus_50_percent_on_every_resample():
    errors, ref = _errors(150, 1)
    errors = errors * 2  # even counts, so half is exact
    b = paired_bootstrap(errors, errors // 2, ref, num_samples=500)
    assert b.rel_change == pytest.approx(-0.5)
    assert b.ci_low == pytest.approx(-0.5) and b.ci_high == pytest.approx(-0.5)
    assert b.p_better == 1.0
    assert b.system_wer == pytest.approx(b.baseline_wer / 2)


def test_interval_matches_the_binomial_closed_form():
    # Baseline: one error on each of n one-word utterances. System: no error on the first k.
    # On a resample the relative change is (#drawn from the last n-k) / n - 1, a
    # Binomial(n, 1 - k/n) / n - 1 variable, whose quantiles are known exactly.
    n, k = 400, 60
    base = np.ones(n)
    system = np.r_[np.zeros(k), np.ones(n - k)]
    b = paired_bootstrap(base, system, np.ones(n), num_samples=20000, seed=3)
    dist = stats.binom(n, 1 - k / n)
    assert b.rel_change == pytest.approx(-k / n)
    assert b.ci_low == pytest.approx(dist.ppf(0.025) / n - 1, abs=1.5 / n)
    assert b.ci_high == pytest.approx(dist.ppf(0.975) / n - 1, abs=1.5 / n)
    assert b.p_better == 1.0  # the system is never worse on any utterance


def test_noisy_difference_interval_covers_the_truth_and_narrows_with_pairing():
    rng = np.random.default_rng(4)
    ref = rng.integers(5, 25, 300)
    hardness = rng.uniform(0.0, 0.6, 300)  # shared by both systems: what pairing exploits
    base = rng.binomial(ref, hardness)
    system = rng.binomial(ref, hardness * 0.9)
    b = paired_bootstrap(base, system, ref, num_samples=2000)
    assert b.ci_low < b.rel_change < b.ci_high
    assert b.ci_low < -0.1 < b.ci_high  # the expected change, 1 - 0.9
    assert b.ci_high < 0 and b.p_better > 0.975  # and the improvement is resolved
    # Unpaired: resample each system separately; its interval must be wider.
    idx_a, idx_b = rng.integers(0, 300, (2, 2000, 300))
    unpaired = system[idx_b].sum(1) / ref[idx_b].sum(1) / (base[idx_a].sum(1) / ref[idx_a].sum(1)) - 1
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert b.ci_high - b.ci_low < 0.6 * (hi - lo)


def test_seeds_are_pooled_by_averaging_per_utterance():
    errors, ref = _errors(50, 5)
    runs = np.stack([errors, errors + 2])  # two seeds of the baseline
    b = paired_bootstrap(runs, errors + 1, ref, num_samples=200)  # the system equals the seed average
    assert b.rel_change == pytest.approx(0.0)
    assert b.ci_low == pytest.approx(0.0) and b.ci_high == pytest.approx(0.0)
    np.testing.assert_allclose(pool_runs(runs), errors + 1)


def test_same_seed_same_interval_and_errorless_baseline_is_undefined():
    errors, ref = _errors(80, 6)
    a = paired_bootstrap(errors, errors + 1, ref, num_samples=300, seed=9)
    assert a == paired_bootstrap(errors, errors + 1, ref, num_samples=300, seed=9)
    none = paired_bootstrap(np.zeros(10), np.ones(10), np.ones(10), num_samples=50)
    assert math.isnan(none.rel_change) and math.isnan(none.ci_low)


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="utterance counts differ"):
        paired_bootstrap(np.ones(3), np.ones(4), np.ones(3))


# ---- the two-level bootstrap: seeds, then utterances -------------------------------------


def _exact_two_level(base: np.ndarray, sys_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every equally likely outcome of the two-level draw, enumerated: (relative changes,
    their probabilities). Seed positions are shared by both systems, then utterances."""
    seeds, utts = base.shape
    outcomes = {}
    for s_idx in itertools.product(range(seeds), repeat=seeds):
        b_mean, s_mean = base[list(s_idx)].mean(0), sys_[list(s_idx)].mean(0)
        for u_idx in itertools.product(range(utts), repeat=utts):
            rel = s_mean[list(u_idx)].sum() / b_mean[list(u_idx)].sum() - 1
            outcomes[rel] = outcomes.get(rel, 0) + 1
    rels = np.array(sorted(outcomes))
    return rels, np.array([outcomes[r] for r in rels]) / seeds**seeds / utts**utts


def test_two_level_bootstrap_matches_the_enumerated_distribution():
    # Two seeds x two utterances: 4 seed draws x 4 utterance draws, 16 outcomes by hand.
    # Seed 0 of the system halves the baseline's errors, seed 1 matches them.
    base = np.array([[2.0, 4.0], [2.0, 4.0]])
    sys_ = np.array([[1.0, 2.0], [2.0, 4.0]])
    rels, probs = _exact_two_level(base, sys_)
    # By hand: seeds {0,0} -> -50% on every utterance draw (1/4); {1,1} -> 0% (1/4);
    # {0,1} or {1,0} -> -25% (1/2). The utterance draw never matters here.
    assert rels == pytest.approx([-0.5, -0.25, 0.0]) and probs == pytest.approx([0.25, 0.5, 0.25])
    b = hierarchical_bootstrap(base, sys_, [3, 5], num_samples=20000, confidence=0.5, seed=1)
    assert b.rel_change == pytest.approx(-0.25)
    assert b.p_better == pytest.approx(0.75, abs=0.01)  # every outcome but {1,1}
    assert (b.ci_low, b.ci_high) == (pytest.approx(-0.5), pytest.approx(0.0))  # quartiles of the three atoms
    assert b.baseline_wer == pytest.approx(6 / 8) and b.system_wer == pytest.approx(4.5 / 8)


def test_two_level_bootstrap_matches_enumeration_when_utterances_matter():
    rng = np.random.default_rng(3)
    base = rng.integers(1, 6, size=(2, 3)).astype(float)
    sys_ = rng.integers(0, 6, size=(2, 3)).astype(float)
    rels, probs = _exact_two_level(base, sys_)
    b = hierarchical_bootstrap(base, sys_, [5, 5, 5], num_samples=40000, seed=2)
    assert b.p_better == pytest.approx(probs[rels < 0].sum(), abs=0.01)


def test_one_seed_each_is_the_paired_bootstrap():
    errors, ref = _errors(120, 4)
    other = np.maximum(errors - np.random.default_rng(5).integers(0, 2, errors.size), 0)
    h = hierarchical_bootstrap(errors, other, ref, num_samples=1000, seed=7)
    p = paired_bootstrap(errors, other, ref, num_samples=1000, seed=7)
    assert h.rel_change == pytest.approx(p.rel_change)
    assert abs(h.ci_low - p.ci_low) < 0.02 and abs(h.ci_high - p.ci_high) < 0.02


def _simulated_losses(planted: float, seeds: int = 3, utts: int = 300, seed: int = 0):
    """Per-utterance word errors of two "losses" trained with ``seeds`` seeds each: every seed
    shifts a model's error rate (training noise), every utterance has its own difficulty
    (test noise), and the system's rate is the baseline's times ``1 + planted``."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(5, 15, utts)
    difficulty = rng.beta(2, 5, utts)
    def losses(scale: float) -> np.ndarray:
        seed_shift = rng.normal(1.0, 0.05, size=(seeds, 1))  # +-5% relative from seed to seed
        p = np.clip(difficulty * seed_shift * scale, 0, 1)
        return rng.binomial(ref, p).astype(float)
    return losses(1.0), losses(1.0 + planted), ref


def test_a_planted_difference_is_told_apart_and_none_is_not():
    base, better, ref = _simulated_losses(-0.3)
    b = hierarchical_bootstrap(base, better, ref, num_samples=2000)
    assert b.ci_high < 0 and b.p_better > 0.975
    same_base, same, ref = _simulated_losses(0.0, seed=1)
    s = hierarchical_bootstrap(same_base, same, ref, num_samples=2000)
    assert s.ci_low < 0 < s.ci_high


def test_seed_noise_widens_the_interval():
    # Utterance errors identical in shape, but the system's seeds disagree by +-20%: the
    # two-level interval sees it, the utterance-only one (seeds pooled) does not.
    errors, ref = _errors(300, 6)
    base = np.stack([errors, errors, errors]).astype(float)
    sys_ = np.stack([errors * 0.8, errors * 1.0, errors * 1.2])
    h = hierarchical_bootstrap(base, sys_, ref, num_samples=2000)
    p = paired_bootstrap(base, sys_, ref, num_samples=2000)
    assert p.ci_high - p.ci_low < 1e-9  # pooled: every resample is exactly 0%
    assert h.ci_low < -0.1 and h.ci_high > 0.1


def test_two_level_bootstrap_refuses_mismatched_utterances():
    with pytest.raises(ValueError, match="utterance counts differ"):
        hierarchical_bootstrap(np.ones((2, 3)), np.ones((2, 4)), np.ones(3))
