"""Unsupervised adaptation of a trained detector to a folder of unlabeled real images.

One entry point for the levers of ``docs/adapt.md`` so that ``simgen train yolo --adapt-to DIR``
and the sim2real experiment (per fold) adapt the same way:

* ``bn`` — BatchNorm statistics re-estimated on the real tiles (:func:`adapt_batchnorm`);
* ``self_train`` — pseudo-labels + fine-tuning on synthetic + pseudo-labelled real images
  (:func:`self_train`), starting from the trained model;
* ``all`` — ``bn`` first, then self-training from the BatchNorm-adapted model.

No real label is read: ``unlabeled`` holds pixels only, and every threshold is chosen on the
synthetic validation data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from simgen.errors import ParameterError
from simgen.train.yolo.adapt_batchnorm import adapt_batchnorm
from simgen.train.yolo.config import YoloConfig
from simgen.train.yolo.self_train import self_train

__all__ = ["LEVER_NAMES", "adapt_detector", "adapt_levers"]

LEVER_NAMES = ("bn", "self_train", "all")


def adapt_levers(levers: Sequence[str]) -> tuple[str, ...]:
    """``levers`` without duplicates, checked against :data:`LEVER_NAMES`."""
    levers = tuple(dict.fromkeys(levers))
    unknown = [lv for lv in levers if lv not in LEVER_NAMES]
    if not levers or unknown:
        raise ParameterError(f"adaptation levers must be among {', '.join(LEVER_NAMES)}, got {', '.join(levers)}")
    return levers


def adapt_detector(weights, unlabeled, output, *, levers: Sequence[str] = ("self_train",), synthetic=None,
                   synthetic_val=None, rounds: int = 1, epochs: int = 5, config: YoloConfig | None = None,
                   student_conf: str = "synthetic", seed: int = 0, device: str = "auto", threads: int | None = None,
                   resume: bool = False, progress: bool = True) -> dict[str, tuple[Path, dict]]:
    """Adapt ``weights`` to ``unlabeled`` real images with each lever of ``levers``.

    Parameters
    ----------
    weights : path
        The trained detector (``best.pt``).
    unlabeled : path, sequence of paths or UnlabeledImages
        Unlabeled real images (folders or files); their labels, if any, are never read.
    output : path
        Folder: ``bn.pt`` and ``self_train/`` / ``all/`` (:func:`self_train` runs).
    levers : sequence of {"bn", "self_train", "all"}
    synthetic, synthetic_val : path or list of paths
        The synthetic training and validation data; needed by ``self_train`` and ``all``
        (self-training keeps the synthetic data in every batch and picks thresholds on it).
    rounds, epochs : int
        Self-training rounds and student epochs per round.
    config : YoloConfig, optional
        Student settings (default: the teacher's stored training config).
    student_conf : {"teacher_count", "synthetic"}
        How the student's threshold is chosen (see :func:`self_train`).

    Returns
    -------
    dict
        lever → (adapted weights, record of what the adaptation did).
    """
    levers = adapt_levers(levers)
    if {"self_train", "all"} & set(levers) and (synthetic is None or synthetic_val is None):
        raise ParameterError("self-training needs the synthetic training data and a synthetic validation set "
                             "(--val): every threshold it uses is chosen on synthetic data")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    done: dict[str, tuple[Path, dict]] = {}
    bn_path = output / "bn.pt"
    if {"bn", "all"} & set(levers):
        if not (resume and bn_path.exists()):
            adapt_batchnorm(weights, unlabeled, bn_path, seed=seed, device=device, threads=threads,
                            overwrite=True, progress=False)
        if "bn" in levers:
            done["bn"] = (bn_path, {"images": len(unlabeled)} if hasattr(unlabeled, "__len__") else {})
    for lever, start in (("self_train", weights), ("all", bn_path)):
        if lever not in levers:
            continue
        res = self_train(start, synthetic, unlabeled, output / lever, synthetic_val=synthetic_val, rounds=rounds,
                         epochs=epochs, config=config, student_conf=student_conf, seed=seed, device=device, resume=resume,
                         overwrite=not resume, progress=progress, threads=threads)
        done[lever] = (Path(res.weights), {"rounds": res.rounds, "stopped": res.stopped})
    return done
