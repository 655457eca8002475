"""A self-trained student's confidence threshold, chosen on the unlabeled real images it adapted to.

Why: a student trained on synthetic + pseudo-labelled real tiles scores real defects higher than
synthetic ones, so the threshold that maximises F1 on *synthetic* validation (its ``conf_f1``)
can over-detect on real images (dsva_fecral: 1.46 detections per annotated loop at 0.064-0.069).
The label-free alternative here keeps the synthetic teacher's operating point: the
student's threshold is the score at which it finds, on a sample of the unlabeled images it adapted
to, as many defects as the teacher finds there at *its* synthetic-validation threshold.  No real
label is read.  Measured (README): it lifts F1 where the synthetic model over-counts (dsva_fecral
0.736 -> 0.802) and lowers it where it does not (creme_316L 0.610 -> 0.561, ti_anneal 0.401 ->
0.387), so :func:`~simgen.train.yolo.self_train.self_train` keeps the synthetic one by default.

Why the teacher's detections and not the pseudo-labels (the first version, commit 7d29fc1): the
teacher's count at its synthetic threshold *is* the operating point synthetic validation chose;
the pseudo-labels are a subset of it shaped by the pseudo-labelling settings (flip consistency,
per-image caps, empty images skipped).  With a flip-TTA teacher the two nearly agree (dsva_fecral:
the same 2932 and 2893 on the two folds' samples; creme_316L fold 0: 34 pseudo-labels, 43 teacher
detections).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simgen.errors import ParameterError
from simgen.progress import track
from simgen.spread import spread_indices

__all__ = ["STUDENT_THRESHOLDS", "check_student_conf", "count_matched_threshold", "teacher_count_threshold"]

#: How a self-trained student's threshold is chosen: ``teacher_count`` (here) or ``synthetic`` (its
#: synthetic-validation ``conf_f1``, as any synthetic model's).
STUDENT_THRESHOLDS = ("teacher_count", "synthetic")


def check_student_conf(rule: str) -> str:
    """``rule`` if it is one of :data:`STUDENT_THRESHOLDS`, else a :class:`ParameterError`."""
    if rule not in STUDENT_THRESHOLDS:
        raise ParameterError(f"student_conf must be one of {', '.join(STUDENT_THRESHOLDS)}, got {rule!r}")
    return rule


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


def teacher_count_threshold(student, teacher, teacher_conf: float, images, *, n_images: int = 24,
                            progress: bool = False, cache: dict | None = None) -> dict:
    """The student's threshold that keeps the teacher's detection count on a sample of ``images``.

    Parameters
    ----------
    student, teacher : YoloDetector
        The self-trained student and the synthetic model it started from, each with its own
        tiling, TTA and post-processing (as they are used).
    teacher_conf : float
        The teacher's threshold (chosen on synthetic validation).
    images : UnlabeledImages
        The unlabeled images the student adapted to.
    n_images : int
        Images sampled evenly over ``images`` (each is detected on by both models).
    cache : dict, optional
        Holds the teacher's count on the sample between calls (several rounds' students are
        matched to the same teacher): filled on the first call, reused when its sample and
        threshold are the same.

    Returns
    -------
    dict
        ``conf`` (the threshold), ``target`` (teacher detections at ``teacher_conf`` on the
        sample), ``found`` (student detections at ``conf``), ``images`` (names of the sample),
        ``source``.
    """
    if int(n_images) < 1:
        raise ParameterError(f"n_images must be >= 1, got {n_images}")
    pick = spread_indices(len(images), int(n_images)).tolist()
    key = (tuple(pick), float(teacher_conf))
    known = cache is not None and cache.get("key") == key
    scores, target = [], int(cache["target"]) if known else 0
    for k in track(pick, total=len(pick), description="student threshold", enabled=progress):
        img = images.image(k)
        if not known:
            target += int((teacher.detect(img)["score"].to_numpy(np.float64) >= float(teacher_conf)).sum())
        scores.append(student.detect(img)["score"].to_numpy(np.float64))
    if cache is not None:
        cache.update(key=key, target=target)
    conf = count_matched_threshold(scores, target, student.conf)
    return {"conf": conf, "target": target, "found": int(sum(int((s >= conf).sum()) for s in scores)),
            "images": [images.name(k) for k in pick], "teacher_conf": float(teacher_conf),
            "source": "the teacher's detection count at its synthetic threshold on the unlabeled images "
                      "(no real label read)"}
