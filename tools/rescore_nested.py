"""Score a finished `simgen sim2real` run again with nested-box suppression picked on its synthetic validation.

Runs made before `YoloConfig.nested` existed store no choice in their checkpoint.  This tool makes
the choice the way training now makes it — `simgen.train.yolo.trainer.select_threshold` on the
run's *synthetic* validation images (its threshold re-picked with it; zero real labels) — applies
it to the run's stored real predictions (`pred_synthetic_yolo.h5`, raw boxes) and scores both
against the real labels.  Runs with `--adapt self_train` get the same for their self-trained
students (each fold's student picks on the synthetic validation set and is scored on the fold it
never adapted to, pooled as in the run's report).  One JSON object per run on stdout.

Usage: python tools/rescore_nested.py RUN_DIR REAL_DIR [RUN_DIR REAL_DIR ...]
  e.g. python tools/rescore_nested.py runs/s2r ../shared/realdata/dev/dsva_fecral
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.h5io import read_table
from simgen.datasets.sources import open_source
from simgen.experiments.scoring import pooled_scores, public, score_predictions
from simgen.experiments.sim2real_adapt import adaptation_folds
from simgen.experiments.sim2real_real import detect_real, load_real
from simgen.train.tiling import suppress_nested_boxes
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import select_threshold

KEYS = ("precision", "recall", "f1", "ap", "peak_f1", "conf")


def choose(weights: Path, val_h5: Path):
    """The detector (no suppression) and the off / auto choices made on the synthetic validation set."""
    det = YoloDetector(weights, threads=1, nested=None)
    with open_source(val_h5) as val:
        preds = pd.concat([det.detect(val.image(k)).assign(sample=k) for k in range(val.n)], ignore_index=True)
        gts = pd.concat([pd.DataFrame({c: np.asarray(val.boxes(k)[c], np.float32) for c in ("x0", "y0", "x1", "y1")})
                         .assign(sample=k, **{"class": 0}) for k in range(val.n)], ignore_index=True)
    preds = preds.assign(**{"class": 0})
    conf_off, f1_off, _ = select_threshold(preds, gts, n_frames=val.n, nested=None)
    conf, f1, nested = select_threshold(preds, gts, n_frames=val.n, nested="auto")
    return det, (conf_off, f1_off), (conf, f1, nested)


def rescore(run: Path, real_dir: str) -> dict:
    det, (conf_off, f1_off), (conf, f1, nested) = choose(run / "yolo" / "best.pt", run / "synthetic_val.h5")
    real = load_real(open_source(real_dir))
    raw = read_table(run / "pred_synthetic_yolo.h5", "boxes")
    out = {"run": str(run), "real": str(real_dir), "nested_iomin": nested,
           "synthetic_val_peak_f1": {"off": round(f1_off, 4), "chosen": round(f1, 4)}}
    for name, pred, c in (("off", raw, conf_off), ("with_nested", suppress_nested_boxes(raw, nested), conf)):
        s = public(score_predictions(pred, real.gt, c, len(real)))
        out[name] = {k: round(float(s[k]), 4) for k in KEYS}
    students = sorted((run / "adapt").glob("fold*/self_train/best.pt"))
    if students:
        folds = adaptation_folds(len(real), len(students))
        parts: dict[str, list] = {"off": [], "with_nested": []}
        for held, weights in zip(folds, students):
            det, (c_off, _), (c, _, iomin) = choose(weights, run / "synthetic_val.h5")
            raw = detect_real(det, real, indices=held)
            parts["off"].append((raw, raw[raw["score"] >= c_off]))
            cut = suppress_nested_boxes(raw, iomin)
            parts["with_nested"].append((cut, cut[cut["score"] >= c]))
            out.setdefault("self_train_nested_iomin", []).append(iomin)
        for name, p in parts.items():
            s = public(pooled_scores(p, real.gt, len(real)))
            out[f"self_train_{name}"] = {k: round(float(s[k]), 4) for k in KEYS if k != "conf"}
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for run, real_dir in zip(args[::2], args[1::2]):
        print(json.dumps(rescore(Path(run), real_dir)), flush=True)
