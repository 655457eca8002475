"""A self-trained student's confidence threshold, chosen on the unlabeled real images it adapted to.

Why: a student trained on synthetic + pseudo-labelled real tiles scores real defects higher than
synthetic ones, so the threshold that maximises F1 on *synthetic* validation (its ``conf_f1``)
over-detects on real images (dsva_fecral: 1.46 detections per annotated loop at 0.064-0.069, see
README).  The label-free alternative here keeps the teacher's operating point: the student's
threshold is the score at which it finds, on a sample of the unlabeled images it adapted to, as
many defects as the pseudo-labels it was trained on.  No real label is read: the pseudo-labels
come from the teacher at *its* synthetic-validation threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simgen.errors import ParameterError
from simgen.progress import track

__all__ = ["STUDENT_THRESHOLDS", "count_matched_threshold", "sample_indices", "pseudo_count_threshold"]

#: How a self-trained student's threshold is chosen: ``pseudo_count`` (here) or ``synthetic`` (its
#: synthetic-validation ``conf_f1``, as any synthetic model's).
STUDENT_THRESHOLDS = ("pseudo_count", "synthetic")


def count_matched_threshold(scores: Sequence[np.ndarray], target: int, floor: float) -> float:
    """The confidence at which ``scores`` hold ``target`` detections in all.

    Parameters
    ----------
    scores : sequence of arrays
        Detection scores, one array per image.
    target : int
        Number of detections wanted over all images (``>= 0``).
    floor : float
        Returned when there are ``target`` or fewer detections (the detector's lowest reported
        score: keep everything it found).

    Returns
    -------
    float
        The ``target``-th highest score (ties keep all tied detections); just above the highest
        score when ``target`` is 0.
    """
    if int(target) < 0:
        raise ParameterError(f"target count must be >= 0, got {target}")
    flat = np.sort(np.concatenate([np.asarray(s, np.float64).ravel() for s in scores] or [np.zeros(0)]))[::-1]
    if len(flat) <= int(target):
        return float(floor)
    if int(target) == 0:
        return float(np.nextafter(flat[0], np.inf))
    return float(max(flat[int(target) - 1], floor))


def sample_indices(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)`` (first and last included)."""
    if n <= 0 or k <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def pseudo_count_threshold(detector, images, counts: Sequence[int], *, n_images: int = 24,
                           progress: bool = False) -> dict:
    """The student's count-matched threshold on a sample of the images it adapted to.

    Parameters
    ----------
    detector : YoloDetector
        The student (its own tiling, TTA and post-processing, as it will be used).
    images : UnlabeledImages
        The unlabeled images of the round, in the order of ``counts``.
    counts : sequence of int
        Pseudo-label count of each image (what the student was trained to find).
    n_images : int
        Images sampled evenly over ``images`` (detection costs about as much as pseudo-labelling).

    Returns
    -------
    dict
        ``conf`` (the threshold), ``target`` (pseudo-labels on the sample), ``found`` (student
        detections at ``conf``), ``images`` (names of the sample), ``source``.
    """
    if len(counts) != len(images):
        raise ParameterError(f"{len(counts)} pseudo-label counts for {len(images)} images")
    if int(n_images) < 1:
        raise ParameterError(f"n_images must be >= 1, got {n_images}")
    pick = sample_indices(len(images), int(n_images))
    scores = [detector.detect(images.image(k))["score"].to_numpy(np.float64)
              for k in track(pick, total=len(pick), description="student threshold", enabled=progress)]
    target = int(sum(int(counts[k]) for k in pick))
    conf = count_matched_threshold(scores, target, detector.conf)
    return {"conf": conf, "target": target, "found": int(sum(int((s >= conf).sum()) for s in scores)),
            "images": [images.name(k) for k in pick],
            "source": "pseudo-label count on the unlabeled images (no real label read)"}
