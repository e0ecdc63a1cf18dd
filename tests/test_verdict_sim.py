"""Seeded simulations of the whole verdict (``verdict_sim``): how often it says "fine-tune" when nothing differs
(at most 5%, with one and with several fine-tuned candidates), how often it calls a real 8-point gap
equivalent (at most 2.5%), and its power at a stated effect. A few seconds here; the full figures, quoted in
docs/verdict.md, come from the slow test (or ``python tests/verdict_sim.py``)."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

import verdict_sim as V


def at_most(rate: float, count: int, sims: int) -> bool:
    """The observed count is consistent with a true rate of at most ``rate`` (one-sided exact test, 1%)."""
    return binomtest(count, sims, rate, alternative="greater").pvalue > 0.01


@pytest.mark.parametrize("tuned", [1, 3])
def test_false_fine_tune_rate_under_the_null(tuned):
    r = V.simulate(100, [V.NULL], [V.NULL] * tuned, sims=100, seed=11)
    assert at_most(0.05, r["verdicts"].get("fine-tune", 0), r["sims"]), r


def test_power_at_a_stated_effect():
    # Format adherence 85% -> 97% (accuracy given the format unchanged), 100 examples: "fine-tune" most times.
    r = V.simulate(100, [V.NULL], [(0.97, 0.8)], sims=60, seed=12)
    assert r["fine_tune"] >= 0.6, r


def test_a_real_gap_is_rarely_called_equivalent():
    r = V.simulate(20, [(0.82, 0.8)], [(0.90, 0.8)], sims=60, seed=13)
    assert at_most(0.025, round(r["equivalent_format"] * r["sims"]), r["sims"]), r


@pytest.mark.slow
@pytest.mark.parametrize(("label", "n", "prompting", "tuned"), V.CASES, ids=[c[0] for c in V.CASES])
def test_simulated_rates(label, n, prompting, tuned):
    r = V.simulate(n, prompting, tuned, sims=1000, seed=1)
    if label.startswith("null"):
        assert at_most(0.05, r["verdicts"].get("fine-tune", 0), r["sims"]), r
    elif label.startswith("power"):
        assert r["fine_tune"] >= 0.7, r
    else:
        assert at_most(0.025, round(r["equivalent_format"] * r["sims"]), r["sims"]), r
