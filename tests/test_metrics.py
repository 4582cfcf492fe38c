import math

import pytest

from tasks.metrics import (
    accuracy_with_ci,
    mean_with_ci,
    paired_bootstrap_ci,
    pass_at_k,
    pass_at_ks,
    wilson_interval,
)


def test_wilson_interval_matches_hand_computation_for_8_of_10():
    # p = 0.8, z^2 = 3.8415; denom = 1.38415; centre = (0.8 + 0.19207) / 1.38415 = 0.71680
    # half = 1.96 * sqrt(0.016 + 0.0096037) / 1.38415 = 0.22658  ->  [0.4902, 0.9434]
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9434, abs=1e-4)


def test_wilson_interval_is_exact_at_the_ends():
    assert wilson_interval(500, 500)[1] == 1.0
    assert wilson_interval(0, 500)[0] == 0.0
    # 500/500: lower end = n / (n + z^2) = 500 / 503.8415 = 0.99238
    assert wilson_interval(500, 500)[0] == pytest.approx(0.99238, abs=1e-5)


def test_accuracy_excludes_unscorable_verdicts():
    acc, ci = accuracy_with_ci([True, False, None, True])
    assert acc == pytest.approx(2 / 3)
    assert ci[0] < acc < ci[1]


def test_accuracy_of_nothing_is_nan_not_zero():
    acc, _ = accuracy_with_ci([None, None])
    assert math.isnan(acc)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 0, 1, 0.0),  # no correct sample
        (3, 3, 3, 1.0),  # all correct
        (4, 1, 1, 0.25),  # pass@1 = c/n
        (10, 3, 5, 1 - 21 / 252),  # C(7,5)=21, C(10,5)=252
    ],
)
def test_pass_at_k_unbiased_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_reports_only_ks_every_problem_supports():
    # problem A has 5 samples, B only 2 -> pass@5 is not reported
    res = pass_at_ks([(5, 1), (2, 2)], ks=(1, 2, 5))
    assert set(res) == {"pass@1", "pass@2"}
    assert res["pass@1"] == pytest.approx((1 / 5 + 1.0) / 2)
    # pass@2: A = 1 - C(4,2)/C(5,2) = 1 - 6/10 = 0.4; B = 1 -> mean 0.7
    assert res["pass@2"] == pytest.approx(0.7)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 5)


def test_paired_bootstrap_of_identical_scores_is_zero_with_zero_width():
    gain, ci = paired_bootstrap_ci([1, 0, 1, 0], [1, 0, 1, 0])
    assert gain == 0 and ci == [0.0, 0.0]


def test_paired_bootstrap_of_a_clear_gain_excludes_zero():
    before = [0] * 100 + [1] * 100
    after = [1] * 60 + [0] * 40 + [1] * 100  # 60 of 200 problems fixed, none broken -> +0.30
    gain, ci = paired_bootstrap_ci(before, after, seed=1)
    assert gain == pytest.approx(0.30)
    assert 0 < ci[0] < 0.30 < ci[1]


def test_mean_with_ci_normal_approximation():
    # mean 2, sd 1 (values 1,2,3), half-width 1.96 * 1 / sqrt(3) = 1.1316
    m, (lo, hi) = mean_with_ci([1, 2, 3])
    assert m == 2
    assert hi - m == pytest.approx(1.1316, abs=1e-4)


def test_git_hash_is_declared_only_where_the_tree_is_no_checkout(monkeypatch):
    import subprocess

    from harness import results

    monkeypatch.setenv("HARNESS_GIT_HASH", "0123abc")
    assert "declared" not in (results.git_hash() or "")  # in a checkout the checkout's commit wins

    class NoRepo:
        returncode, stdout = 128, ""

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: NoRepo())
    assert results.git_hash() == "0123abc-declared"
    monkeypatch.delenv("HARNESS_GIT_HASH")
    assert results.git_hash() is None
