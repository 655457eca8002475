"""Shared by the epoch diagnostics (``epoch_trajectory.py``, ``checkpoint_average.py``): a run's kept
epoch checkpoints in order, and the raw real-set score of one network."""
import re
import sys
from pathlib import Path

from simgen.experiments.scoring import score_predictions
from simgen.experiments.sim2real_real import detect_real
from simgen.train.yolo.predict import YoloDetector


def epoch_number(path: Path) -> int:
    """``epochK.pt`` → K (Ultralytics counts from 0: epochK.pt is epoch K + 1)."""
    return int(re.sub(r"\D", "", path.stem))


def epoch_checkpoints(run: Path) -> list[Path]:
    """The ``epoch*.pt`` of ``run`` in training order; exits with one line when there are none."""
    weights = run / "ultralytics" / "weights"
    epochs = sorted(weights.glob("epoch*.pt"), key=epoch_number)
    if not epochs:
        sys.exit(f"Error: no epoch checkpoints in {weights} (train with --save-period 1)")
    return epochs


def raw_real_scores(weights, real) -> dict:
    """Scores of the raw network on the real set: no nested-box suppression, no flip TTA (those are
    picked at the end of training), 256 px tiles, IoU 0.15 matching as in sim2real."""
    det = YoloDetector(weights, tile=256, overlap=64, normalize="percentile", conf=0.01, nested=None, tta=False,
                       threads=1)
    return score_predictions(detect_real(det, real), real.gt, 0.5, len(real))
