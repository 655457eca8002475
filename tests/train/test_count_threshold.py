"""The count-matched student threshold (:mod:`simgen.train.yolo.count_threshold`)."""

import numpy as np
import pandas as pd
import pytest

from simgen.errors import ParameterError
from simgen.train.yolo.count_threshold import count_matched_threshold, teacher_count_threshold


def test_count_matched_threshold_keeps_exactly_the_target_count():
    scores = [np.array([0.9, 0.2, 0.5]), np.array([]), np.array([0.7, 0.05])]
    for target, conf in ((1, 0.9), (2, 0.7), (3, 0.5), (4, 0.2), (5, 0.01)):  # 5: all there are (floor)
        t = count_matched_threshold(scores, target, floor=0.01)
        assert t == conf and sum(int((s >= t).sum()) for s in scores) == target
    assert count_matched_threshold(scores, 6, floor=0.01) == 0.01  # fewer detections than wanted: keep all
    t0 = count_matched_threshold(scores, 0, floor=0.01)
    assert t0 > 0.9 and all(int((s >= t0).sum()) == 0 for s in scores)
    assert count_matched_threshold(scores, 2, floor=0.8) == 0.8  # never below the detector's floor
    ties = [np.array([0.5, 0.5, 0.5, 0.1])]
    assert count_matched_threshold(ties, 2, floor=0.0) == 0.5  # ties are kept together
    with pytest.raises(ParameterError):
        count_matched_threshold(scores, -1, floor=0.01)


class _Images:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def image(self, k):
        return np.full((8, 8), k, np.float32)

    def name(self, k):
        return f"frame{k:02d}"


class _Detector:
    """Image k holds k + extra detections scoring 0.9, 0.8, ... (deterministic)."""
    conf = 0.01

    def __init__(self, extra):
        self.extra = extra

    def detect(self, image):
        k = int(image[0, 0])
        return pd.DataFrame({"score": 0.9 - 0.1 * np.arange(k + self.extra)})


def test_teacher_count_threshold_keeps_the_teachers_count_on_the_sample():
    teacher, student = _Detector(1), _Detector(2)
    res = teacher_count_threshold(student, teacher, 0.85, _Images(10), n_images=4)
    assert res["images"] == ["frame00", "frame03", "frame06", "frame09"]
    assert res["target"] == 4 and res["found"] == 4 and res["conf"] == pytest.approx(0.9)  # one 0.9 per image
    # at 0.55 the teacher keeps 1, 4, 4, 4 (its 0.9 ... 0.6); the student's 13th score is a 0.6 (3 tied: 14 kept)
    more = teacher_count_threshold(student, teacher, 0.55, _Images(10), n_images=4)
    assert more["target"] == 13 and more["found"] == 14 and more["conf"] == pytest.approx(0.6)
    assert more["teacher_conf"] == 0.55 and "no real label" in more["source"]
    with pytest.raises(ParameterError):
        teacher_count_threshold(student, teacher, 0.5, _Images(10), n_images=0)
