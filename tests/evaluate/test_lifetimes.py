"""Track lifetimes and their chi-square / KS comparison."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from simgen.errors import ParameterError
from simgen.evaluate.lifetimes import compare_lifetimes, doane_bins, track_lifetimes


def test_lifetimes_span_gaps_and_flag_censoring():
    t = pd.DataFrame({"sample": [0, 1, 4, 2, 3, 5, 5], "track_id": [1, 1, 1, 2, 2, 3, 3]})
    lt = track_lifetimes(t.drop_duplicates(), frame_interval=0.5)
    assert lt.loc[1, "lifetime"] == 2.5  # frames 0..4, gap bridged
    assert lt.loc[2, "lifetime"] == 1.0
    assert lt.loc[1, "n_detections"] == 3
    assert lt["censored"].tolist() == [True, False, True]  # starts at 0 / ends in the last frame
    assert track_lifetimes(t, drop_censored=True).index.tolist() == [2]
    with pytest.raises(ParameterError):
        track_lifetimes(t, frame_interval=0)


def test_doane_bins_are_numpys():
    x = np.random.default_rng(0).exponential(10, 200)
    np.testing.assert_array_equal(doane_bins(x), np.histogram_bin_edges(x, "doane"))


def test_compare_matches_scipy_and_detects_a_difference(rng):
    a = rng.exponential(20, 300)
    b = rng.exponential(20, 250)
    c = rng.exponential(60, 250)
    same = compare_lifetimes(a, b)
    diff = compare_lifetimes(a, c)
    ks = stats.ks_2samp(a, b)
    assert same["ks"] == pytest.approx(ks.statistic) and same["ks_p"] == pytest.approx(ks.pvalue)
    edges = np.histogram_bin_edges(np.r_[a, b], "doane")
    table = np.vstack([np.histogram(a, edges)[0], np.histogram(b, edges)[0]])
    table = table[:, table.sum(0) > 0]
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert same["chi2"] == pytest.approx(chi2) and same["chi2_p"] == pytest.approx(p) and same["chi2_dof"] == dof
    assert same["ks_p"] > 0.01 and same["chi2_p"] > 0.01
    assert diff["ks_p"] < 1e-6 and diff["chi2_p"] < 1e-6
    assert sum(same["counts_pred"]) == 300 and sum(same["counts_gt"]) == 250


def test_identical_samples_and_degenerate_inputs():
    x = np.arange(1, 40, dtype=float)
    r = compare_lifetimes(x, x)
    assert r["ks"] == 0 and r["ks_p"] == pytest.approx(1.0) and r["chi2"] == pytest.approx(0.0)
    r = compare_lifetimes([3.0], [1.0, 2.0])
    assert np.isnan(r["ks_p"]) and np.isnan(r["chi2_p"])
