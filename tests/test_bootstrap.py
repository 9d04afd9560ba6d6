"""The paired bootstrap against cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from unified_lm.bench.bootstrap import paired_bootstrap, pool_runs


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
