"""Score every kept epoch of a YOLO run on an annotated real folder: how the real AP moves during training.

A diagnostic for the README, never a model choice: it reads the real labels, so nothing it prints may pick
an epoch, a threshold or a setting of a sim2real model (that would be training on the real labels).
The run must have been trained with ``save_period`` (``simgen train yolo --save-period 1``); each epoch's
raw network is scored (no nested-box suppression, no flip TTA: those are picked at the end of training),
next to its synthetic validation mAP50 from Ultralytics' ``results.csv``.

Usage: python tools/epoch_trajectory.py RUN_DIR REAL_DIR [OUT.csv [EVERY]]   (EVERY: score every n-th epoch and the last)
"""
import sys
from pathlib import Path

import pandas as pd
from _epochs import epoch_checkpoints, epoch_number, raw_real_scores

from simgen.datasets.sources import open_source
from simgen.experiments.sim2real_real import load_real

run, real_dir = Path(sys.argv[1]), sys.argv[2]
epochs = epoch_checkpoints(run)
every = int(sys.argv[4]) if len(sys.argv) > 4 else 1
epochs = [p for i, p in enumerate(epochs) if (len(epochs) - 1 - i) % every == 0]
synthetic = pd.read_csv(run / "ultralytics" / "results.csv")
synthetic.columns = [c.strip() for c in synthetic.columns]
rows = []
with open_source(real_dir) as src:
    real = load_real(src)
    for path in epochs:
        k = epoch_number(path)
        s = raw_real_scores(path, real)
        match = synthetic[synthetic["epoch"] == k + 1]
        rows.append({"epoch": k + 1, "real_ap": round(s["ap"], 4), "real_peak_f1": round(s["peak_f1"], 4),
                     "synthetic_val_map50": float(match["metrics/mAP50(B)"].iloc[0]) if len(match) else None})
        print(rows[-1], flush=True)
table = pd.DataFrame(rows)
print(table.to_string(index=False))
if len(sys.argv) > 3:
    table.to_csv(sys.argv[3], index=False)
