"""simgen.spread: the evenly spread picks every sampling step uses."""

import numpy as np

from simgen.spread import spread_indices


def test_spread_indices_cover_the_range_evenly():
    assert spread_indices(5, 24).tolist() == [0, 1, 2, 3, 4] == spread_indices(5, None).tolist()
    for n, k in ((150, 24), (7, 6), (1000, 48), (10, 2)):
        picked = spread_indices(n, k)
        assert len(picked) == k and picked[0] == 0 and picked[-1] == n - 1
        assert np.all(np.diff(picked) >= 1) and np.ptp(np.diff(picked)) <= 1  # distinct, evenly spaced
    assert spread_indices(10, 1).tolist() == [0]
    assert spread_indices(0, 3).tolist() == [] and spread_indices(4, 0).tolist() == []
    assert spread_indices(-1, None).dtype == np.int64
