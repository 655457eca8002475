"""Score a finished `simgen sim2real` run again with the post-processing training now picks on its
synthetic validation: nested-box suppression and flip test-time augmentation.

Runs made before `YoloConfig.nested` / `YoloConfig.tta` existed store no choice in their checkpoint.
This tool makes the choice the way training now makes it — `simgen.train.yolo.trainer.select_threshold`
on the run's *synthetic* validation images (its threshold re-picked with it; zero real labels) —,
predicts the real images with it and scores both that and the run's stored predictions
(`pred_synthetic_yolo.h5`, threshold re-picked without either) against the real labels.  Runs with `--adapt self_train` get the same for their self-trained
students (each fold's student picks on the synthetic validation set and is scored on the fold it
never adapted to, pooled as in the run's report).  One JSON object per run on stdout.

Usage: python tools/rescore_nested.py RUN_DIR REAL_DIR [RUN_DIR REAL_DIR ...]
  e.g. python tools/rescore_nested.py runs/s2r ../shared/realdata/dev/dsva_fecral
"""
import json
import sys
from pathlib import Path

from simgen.datasets.h5io import read_table
from simgen.datasets.sources import open_source
from simgen.experiments.scoring import pooled_scores, public, score_predictions
from simgen.experiments.sim2real_adapt import adaptation_folds
from simgen.experiments.sim2real_real import detect_real, load_real
from simgen.train.yolo.postprocess_calibrate import validation_choice
from simgen.train.yolo.predict import YoloDetector

KEYS = ("precision", "recall", "f1", "ap", "peak_f1", "conf")


def choose(weights: Path, val_h5: Path):
    """The off and the auto choice made on the synthetic validation set, and the chosen detector."""
    with open_source(val_h5) as val:
        off, auto = validation_choice(weights, val, threads=1)
    return off, auto, YoloDetector(weights, threads=1, nested=auto[2], tta=auto[3])


def rescore(run: Path, real_dir: str) -> dict:
    off, auto, det = choose(run / "yolo" / "best.pt", run / "synthetic_val.h5")
    real = load_real(open_source(real_dir))
    raw = read_table(run / "pred_synthetic_yolo.h5", "boxes")
    out = {"run": str(run), "real": str(real_dir), "nested_iomin": auto[2], "tta": auto[3],
           "synthetic_val_peak_f1": {"off": round(off[1], 4), "chosen": round(auto[1], 4)}}
    for name, pred, c in (("off", raw, off[0]), ("chosen", detect_real(det, real), auto[0])):
        s = public(score_predictions(pred, real.gt, c, len(real)))
        out[name] = {k: round(float(s[k]), 4) for k in KEYS}
    students = sorted((run / "adapt").glob("fold*/self_train/best.pt"))
    if students:
        folds = adaptation_folds(len(real), len(students))
        parts: dict[str, list] = {"off": [], "chosen": []}
        for held, weights in zip(folds, students):
            s_off, s_auto, det = choose(weights, run / "synthetic_val.h5")
            raw = detect_real(YoloDetector(weights, threads=1, nested=None, tta=False), real, indices=held)
            parts["off"].append((raw, raw[raw["score"] >= s_off[0]]))
            chosen = detect_real(det, real, indices=held)
            parts["chosen"].append((chosen, chosen[chosen["score"] >= s_auto[0]]))
            out.setdefault("self_train_choice", []).append({"nested": s_auto[2], "tta": s_auto[3]})
        for name, p in parts.items():
            s = public(pooled_scores(p, real.gt, len(real)))
            out[f"self_train_{name}"] = {k: round(float(s[k]), 4) for k in KEYS if k != "conf"}
    return out


def run_pairs(rescore_one, usage: str) -> None:
    """``RUN_DIR REAL_DIR`` pairs from the command line, one JSON line per run (shared by the rescore tools)."""
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(usage)
    for run, real_dir in zip(args[::2], args[1::2]):
        print(json.dumps(rescore_one(Path(run), real_dir)), flush=True)


if __name__ == "__main__":
    run_pairs(rescore, __doc__)
