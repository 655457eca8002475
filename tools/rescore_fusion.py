"""Score finished `simgen sim2real` runs with the `--fuse-log` lever, which they predate.

For each run: its synthetic-only YOLO (with the post-processing picked on its synthetic validation,
as `tools/rescore_nested.py` does) fused with the LoG tuned on its synthetic validation images
(`report.json`'s `log_synthetic` parameters) — `simgen.experiments.sim2real_compare.log_fusion`,
calibrated on the run's synthetic validation set, zero real labels — and scored on the real images.
Runs with `--adapt self_train` also get each fold's self-trained student fused the same way and
scored on the fold it never adapted to (pooled as in the run's report).  One JSON object per run.

Usage: python tools/rescore_fusion.py RUN_DIR REAL_DIR [RUN_DIR REAL_DIR ...]
"""
import json
from pathlib import Path

from rescore_nested import choose, run_pairs  # the same post-processing choice, the same command line

from simgen.datasets.sources import open_source
from simgen.experiments.scoring import pooled_scores, public, score_predictions
from simgen.experiments.sim2real_adapt import adaptation_folds
from simgen.experiments.sim2real_compare import log_fusion
from simgen.experiments.sim2real_real import detect_real, load_real

KEYS = ("precision", "recall", "f1", "ap", "peak_f1", "conf")


def rescore(run: Path, real_dir: str) -> dict:
    val = run / "synthetic_val.h5"
    log_params = json.loads((run / "report.json").read_text())["methods"]["log_synthetic"]["params"]
    real = load_real(open_source(real_dir))
    fused = log_fusion(choose(run / "yolo" / "best.pt", val)[2], log_params, val)
    s = public(score_predictions(detect_real(fused, real), real.gt, fused.conf_f1, len(real)))
    out = {"run": str(run), "real": str(real_dir), "iou": fused.iou,
           "fused_log": {k: round(float(s[k]), 4) for k in KEYS}}
    students = sorted((run / "adapt").glob("fold*/self_train/best.pt"))
    if students:
        parts = []
        for held, weights in zip(adaptation_folds(len(real), len(students)), students):
            fused = log_fusion(choose(weights, val)[2], log_params, val)
            pred = detect_real(fused, real, indices=held)
            parts.append((pred, pred[pred["score"] >= fused.conf_f1]))
        s = public(pooled_scores(parts, real.gt, len(real)))
        out["self_train_fused_log"] = {k: round(float(s[k]), 4) for k in KEYS if k != "conf"}
    return out


if __name__ == "__main__":
    run_pairs(rescore, __doc__)
