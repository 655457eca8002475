"""Plain `YOLO(best.pt).predict` on 8-bit frames vs simgen's YoloDetector (preprocessing stored in best.pt).

Usage: python tools/plain_predict_gap.py runs/s2r/yolo/best.pt ../shared/realdata/dev/dsva_fecral
"""
import json
import sys

import pandas as pd

from simgen.datasets.sources import open_source
from simgen.experiments.scoring import public, score_predictions
from simgen.experiments.sim2real_real import load_real
from simgen.train.yolo.offline import import_ultralytics
from simgen.train.yolo.predict import YoloDetector

weights, real_dir = sys.argv[1], sys.argv[2]
src = open_source(real_dir)
real = load_real(src)
det = YoloDetector(weights, threads=1)
rows_s, rows_p = [], []
ul = import_ultralytics()
plain = ul.YOLO(weights)
for k in range(len(src)):
    rows_s.append(det.detect(src.image(k)).assign(sample=k))
    path = str(src.path / "images" / src.file_name(k))
    r = plain.predict(path, conf=0.01, verbose=False, device="cpu")[0]  # the user's one-liner, imgsz 640 default
    b = r.boxes.xyxy.numpy()
    rows_p.append(pd.DataFrame({"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3], "class": 0,
                                "score": r.boxes.conf.numpy(), "sample": k}))
out = {}
for name, rows in (("simgen_detector", rows_s), ("plain_ultralytics_predict", rows_p)):
    pred = pd.concat(rows, ignore_index=True)
    s = public(score_predictions(pred, real.gt, det.conf_f1, len(real)))
    out[name] = {k: s[k] for k in ("precision", "recall", "f1", "ap", "peak_f1")}
print(json.dumps(out))
