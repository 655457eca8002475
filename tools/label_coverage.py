"""How completely the annotators of a real set labelled its dark, defect-like blobs, by blob depth.

A diagnostic of the *labels*, for the README: the synthetic renderer labels every visible defect,
so a detector trained on it calls every deep, defect-sized dark blob a defect.  Where the real
annotators labelled only some of them (another label rule: e.g. loops but not black dots, or a
subset of a crowded frame), those detections count as false positives and no detector that sees
blobs can pass a ceiling.  For every image the dark blobs of ``diameter_px`` are found without
labels (:func:`simgen.evaluate.blob_census.defect_sized_blobs`, the blob census's candidates); a blob counts as labelled
when its centre lies inside an annotated box.  Printed per depth bin: blobs per Mpx and the labelled
share, the labelled share of the blobs at least 0.45 deep by diameter, and the share of annotated
boxes that hold a blob at least 0.3 deep.

Usage: python tools/label_coverage.py REAL_DIR [REAL_DIR ...]
"""
import sys

import numpy as np

from simgen.datasets.sources import open_source
from simgen.evaluate.blob_census import DEPTH_EDGES, defect_sized_blobs
from simgen.experiments.sim2real_real import load_real

DIAMETER_PX = (5.0, 45.0)
edges = np.asarray(DEPTH_EDGES)
size_edges = np.array([5, 8, 12, 18, 27, 45.0])
for real_dir in sys.argv[1:]:
    counts, labelled = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    boxes, boxes_with_deep, mpx = 0, 0, 0.0
    by_size, by_size_labelled = np.zeros(len(size_edges) - 1), np.zeros(len(size_edges) - 1)
    with open_source(real_dir) as src:
        real = load_real(src)
        for k in range(len(real)):
            img = real.image(k)
            blobs = defect_sized_blobs(img, DIAMETER_PX)
            gt = real.gt[real.gt["sample"] == k][["x0", "y0", "x1", "y1"]].to_numpy(float)
            x, y = blobs["x"][:, None], blobs["y"][:, None]
            inside = (x >= gt[:, 0]) & (x <= gt[:, 2]) & (y >= gt[:, 1]) & (y <= gt[:, 3])  # (blobs, boxes)
            b = np.digitize(blobs["depth"], edges) - 1
            ok = (b >= 0) & (b < len(counts))
            np.add.at(counts, b[ok], 1)
            np.add.at(labelled, b[ok], inside.any(axis=1)[ok])
            deep = blobs["depth"] >= 0.45
            s = np.clip(np.digitize(2 * np.sqrt(2) * blobs["sigma"][deep], size_edges) - 1, 0, len(by_size) - 1)
            np.add.at(by_size, s, 1)
            np.add.at(by_size_labelled, s, inside.any(axis=1)[deep])
            boxes += len(gt)
            boxes_with_deep += int(inside[blobs["depth"] >= 0.3].any(axis=0).sum())
            mpx += np.asarray(img).size / 1e6
    print(f"== {real_dir}: {len(real)} images, {boxes} boxes, {mpx:.2f} Mpx; "
          f"boxes holding a blob >= 0.3 deep: {boxes_with_deep / max(boxes, 1):.0%}")
    for lo, hi, n, m in zip(edges[:-1], edges[1:], counts, labelled):
        print(f"  depth {lo:.2f}-{hi:.2f}: {n / mpx:7.1f} blobs/Mpx, labelled {m / max(n, 1):5.1%}")
    for lo, hi, n, m in zip(size_edges[:-1], size_edges[1:], by_size, by_size_labelled):
        print(f"  depth >= 0.45, diameter {lo:.0f}-{hi:.0f} px: {n / mpx:6.1f} blobs/Mpx, labelled {m / max(n, 1):5.1%}")
