"""Weight averaging of the last epochs of a YOLO run, scored on an annotated real folder.

Tests checkpoint averaging as a label-free lever against the epoch-to-epoch spread of the real AP
(README, *Real backgrounds*): the EMA weights (BatchNorm statistics included) of the last K kept
epochs are averaged into one network, which is scored raw on the real images (no nested-box
suppression, no flip TTA), for each K.  K is fixed in advance (the tool prints every K asked for;
choosing one by its real score would be training on the real labels): a diagnostic for the README.
The run must have been trained with ``save_period`` (``simgen train yolo --save-period 1``).

Usage: python tools/checkpoint_average.py RUN_DIR REAL_DIR [K ...]   (default K: 1 5 10 15)
"""
import copy
import sys
import tempfile
from pathlib import Path

import torch
from _epochs import epoch_checkpoints, raw_real_scores

from simgen.datasets.sources import open_source
from simgen.experiments.sim2real_real import load_real
from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint


def average_checkpoints(paths, out: Path) -> Path:
    """Mean of the EMA state dicts of ``paths`` (integer buffers from the last), written to ``out``."""
    ckpts = [load_yolo_checkpoint(p) for p in paths]
    states = [c["ema"].float().state_dict() for c in ckpts]
    mean = {k: torch.stack([s[k] for s in states]).mean(0) if t.is_floating_point() else t
            for k, t in states[-1].items()}
    net = copy.deepcopy(ckpts[-1]["ema"]).float()
    net.load_state_dict(mean)
    save_yolo_checkpoint(out, {**ckpts[-1], "ema": net.half()})
    return out


run, real_dir = Path(sys.argv[1]), sys.argv[2]
lasts = [int(k) for k in sys.argv[3:]] or [1, 5, 10, 15]
epochs = epoch_checkpoints(run)
if len(epochs) < max(lasts):
    sys.exit(f"Error: {len(epochs)} epoch checkpoints in {run}, need {max(lasts)} (train with --save-period 1)")
with open_source(real_dir) as src, tempfile.TemporaryDirectory() as tmp:
    real = load_real(src)
    for k in lasts:
        path = average_checkpoints(epochs[-k:], Path(tmp) / f"last{k}.pt")
        s = raw_real_scores(path, real)
        print({"last_epochs": k, "real_ap": round(s["ap"], 4), "real_peak_f1": round(s["peak_f1"], 4)}, flush=True)
