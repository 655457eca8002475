"""False positives and misses by box size (the sim2real report's diagnosis of where a detector loses)."""

import numpy as np
import pandas as pd
import pytest

from simgen.errors import ParameterError
from simgen.evaluate.errors_by_size import errors_by_size


def _boxes(rows, score=None):
    df = pd.DataFrame(rows, columns=["sample", "x0", "y0", "x1", "y1"]).assign(**{"class": 0})
    return df if score is None else df.assign(score=score)


def test_counts_fall_in_the_bins_of_their_own_size():
    gt = _boxes([(0, 10, 10, 15, 15),      # 5 px: missed
                 (0, 40, 40, 50, 50),      # 10 px: found
                 (1, 0, 0, 40, 40)])       # 40 px: found by a 30 px box (IoU 0.56)
    pred = _boxes([(0, 41, 41, 50, 50),    # 9 px, matches the 10 px defect
                   (0, 80, 80, 87, 87),    # 7 px speck: false positive
                   (1, 5, 5, 35, 35),      # 30 px, matches the 40 px defect
                   (1, 60, 60, 62, 62)],   # below conf: dropped before matching
                  score=[0.9, 0.8, 0.7, 0.01])
    t = errors_by_size(pred, gt, conf=0.1, bins=(0, 6, 8, 12, 32, np.inf))
    assert list(t["n_pred"]) == [0, 1, 1, 1, 0] and list(t["fp"]) == [0, 1, 0, 0, 0]
    assert list(t["n_gt"]) == [1, 0, 1, 0, 1] and list(t["missed"]) == [1, 0, 0, 0, 0]
    assert t["side_hi"].iloc[-1] == np.inf
    # a stricter IoU turns the loose 30 px match into a false positive and a miss
    strict = errors_by_size(pred, gt, conf=0.1, threshold=0.6, bins=(0, 6, 8, 12, 32, np.inf))
    assert strict["fp"].sum() == 2 and strict["missed"].sum() == 2
    with pytest.raises(ParameterError, match="increasing"):
        errors_by_size(pred, gt, conf=0.1, bins=(0, 8, 6))


def test_box_side_is_the_geometric_mean_of_width_and_height():
    from simgen.evaluate.matching import box_side

    assert np.allclose(box_side([[0, 0, 4, 9], [2, 2, 2, 5], [5, 5, 3, 8]]), [6.0, 0.0, 0.0])
