"""Score trained models on whole sequences: change maps of the pairs, and per-frame A1/A2 masks
recovered from change maps by fusion (forward, backward, consecutive, ensemble) or segmented
directly by the single-frame U-Net.

The fusion rules and scores are :mod:`simgen.evaluate.changedet`; this module runs the
networks.  A sequence's pairs are predicted once each (class labels, uint8), so the change
scores and every recovery method share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simgen.errors import DataError
from simgen.evaluate.changedet import (
    RECOVERY,
    binary_scores,
    mask_confusion,
    multiclass_scores,
    recover_masks,
    recovery_pairs,
)
from simgen.evaluate.segmentation import confusion_matrix
from simgen.progress import track
from simgen.train.changedet.config import CHANGE_CLASSES
from simgen.train.changedet.data import PairSource, open_pairs
from simgen.train.changedet.predict import load_deltanet, predict_pair
from simgen.train.changedet.segment import load_segmenter, segment_frame

__all__ = ["SequenceScores", "sequences_of", "evaluate_changedet", "evaluate_segmenter", "recover_sequence"]


@dataclass
class SequenceScores:
    """Pooled confusion matrices and per-frame rows of one model on one data file.

    Attributes
    ----------
    change : dict
        ``{task: (4, 4) C[true, predicted]}`` over the file's pairs (empty for the segmenter).
    masks : dict
        ``{(method, task): (2, 2)}`` over every frame; ``method`` is a recovery method or
        ``"direct"`` (single-frame U-Net).
    frames : list of dict
        One row per frame, method and task: ``sequence, frame, method, task, f1_macro, iou``.
    """

    change: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)

    def change_table(self) -> list[dict]:
        """``task, f1_macro, miou, f1_<class>`` rows of the change maps."""
        return [{"task": t, **multiclass_scores(cm)} for t, cm in self.change.items()]

    def mask_table(self) -> list[dict]:
        """``method, task, f1_macro, iou, miou, f1_fg`` rows (pooled over frames)."""
        return [{"method": m, "task": t, **binary_scores(cm)} for (m, t), cm in self.masks.items()]

    def _add_frame(self, seq, t, method, task, pred, truth) -> None:
        cm = mask_confusion(pred, truth)
        self.masks[method, task] = self.masks.get((method, task), np.zeros((2, 2), np.int64)) + cm
        s = binary_scores(cm)
        self.frames.append({"sequence": int(seq), "frame": int(t), "method": method, "task": task,
                            "f1_macro": s["f1_macro"], "iou": s["iou"]})


def sequences_of(src: PairSource) -> list[np.ndarray]:
    """Frame indices of every sequence of a pair file, in time order."""
    if src.sequence is None:
        raise DataError(f"{src.path} has no /filament/sequence and /filament/frame: sequences unknown")
    out = []
    for s in np.unique(src.sequence):
        idx = np.nonzero(src.sequence == s)[0]
        idx = idx[np.argsort(src.time[idx], kind="stable")]
        if np.any(np.diff(src.time[idx]) != 1):
            raise DataError(f"{src.path}: sequence {s} does not hold consecutive frames")
        out.append(idx)
    return out


def _truth(src: PairSource, task: str, i: int) -> np.ndarray:
    ds = src.source.dataset
    if not ds.has(f"filament/{task}"):
        raise DataError(f"{src.path} has no per-frame masks /filament/{task}")
    return np.asarray(ds.file[f"filament/{task}"][int(i)]) > 0


def _pair_labels(model, cfg, frame, pairs) -> dict:
    """``{(i, j): {task: (H, W) uint8 change classes}}`` of the model on ``(frame(i), frame(j))``."""
    out = {}
    for i, j in pairs:
        probs = predict_pair(model, frame(i), frame(j), cfg.depth, normalize=cfg.normalize)
        out[i, j] = {t: p.argmax(0).astype(np.uint8) for t, p in probs.items()}
    return out


def recover_sequence(model, cfg, frames, methods=RECOVERY) -> dict:
    """Per-frame masks ``{method: {task: (T, H, W) bool}}`` of a sequence of (H, W) frames, recovered
    from the change detector's maps of the pairs each method reads (``model, cfg`` as returned by
    :func:`~simgen.train.changedet.predict.load_deltanet`)."""
    frames = list(frames)
    labels = _pair_labels(model, cfg, frames.__getitem__, recovery_pairs(len(frames), methods))
    tasks = next(iter(labels.values())).keys()
    return {m: {t: recover_masks({p: lab[t] for p, lab in labels.items()}, len(frames), m) for t in tasks}
            for m in methods}


def evaluate_changedet(checkpoint, data, *, methods=RECOVERY, device: str = "auto",
                       progress: bool = False) -> SequenceScores:
    """Change-map and recovered-mask scores of a change detector on every sequence of ``data``.

    Every pair a recovery method reads (``(i, j)``, ``i <= j``, self pairs included) and every
    pair stored in the file is predicted once (the model on ``(frame i, frame j)``); change
    maps are scored against the file's maps, recovered masks against ``/filament/<task>``.
    """
    model, cfg, targets = load_deltanet(checkpoint, device)
    methods = tuple(methods)
    n = len(CHANGE_CLASSES)
    out = SequenceScores(change={t: np.zeros((n, n), np.int64) for t in targets})
    with open_pairs(data) as src:
        missing = [t for t in targets if t not in src.targets]
        if missing:
            raise DataError(f"{data} has no change maps of {', '.join(missing)}")
        pair_of = {(int(i), int(j)): p for p, (i, j) in enumerate(src.index)}
        for s, idx in enumerate(track(sequences_of(src), description="sequences", enabled=progress)):
            where = {int(g): t for t, g in enumerate(idx)}
            wanted = {(int(idx[i]), int(idx[j])) for i, j in recovery_pairs(len(idx), methods)}
            wanted |= {p for p in pair_of if p[0] in where and p[1] in where}
            labels = _pair_labels(model, cfg, src.frame, sorted(wanted))
            for (i, j), lab in labels.items():
                if (i, j) in pair_of:
                    truth = src.maps(pair_of[i, j])
                    for t in targets:
                        out.change[t] += confusion_matrix(lab[t], truth[t], n)
            for t in targets:
                truths = [_truth(src, t, g) for g in idx]
                local = {(a, b): labels[int(idx[a]), int(idx[b])][t] for a, b in recovery_pairs(len(idx), methods)}
                for m in methods:
                    masks = recover_masks(local, len(idx), m)
                    for k in range(len(idx)):
                        out._add_frame(s, k, m, t, masks[k], truths[k])
    return out


def evaluate_segmenter(checkpoint, data, *, device: str = "auto", progress: bool = False) -> SequenceScores:
    """Per-frame mask scores (method ``"direct"``) of the single-frame U-Net on every frame of ``data``."""
    model, cfg, targets = load_segmenter(checkpoint, device)
    out = SequenceScores()
    with open_pairs(data, require_maps=False) as src:
        for s, idx in enumerate(track(sequences_of(src), description="sequences", enabled=progress)):
            for k, g in enumerate(idx):
                probs = segment_frame(model, src.frame(int(g)), cfg)
                for t in targets:
                    out._add_frame(s, k, "direct", t, probs[t] >= 0.5, _truth(src, t, g))
    return out
