"""Figure: a real frame before / after `clear_blobs`, and synthetic images rendered on cleared backgrounds.

Usage: python tools/backgrounds_sheet.py FRAME.jpg SYNTHETIC_TRAIN.h5 OUT.png
(SYNTHETIC_TRAIN.h5: a `simgen sim2real --backgrounds` training set; its composites are the samples whose
provenance names a background.)
"""
import sys

import matplotlib.pyplot as plt
import numpy as np

from simgen.datasets.h5io import open_dataset
from simgen.datasets.imageio import read_image
from simgen.simulate.tem_backgrounds import clear_blobs

frame_path, train_h5, out = sys.argv[1:4]
frame = read_image(frame_path)  # (H, W) luminance
cleared, n = clear_blobs(frame)
crop = (slice(0, 384), slice(0, 512))
fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
for ax, img, title in ((axes[0, 0], frame[crop], "real frame (crop)"),
                       (axes[0, 1], cleared[crop], f"blobs painted over ({n} in the frame)")):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
shown = 0
with open_dataset(train_h5) as ds:
    for i in range(len(ds)):
        if shown == 6:
            break
        if not ds.provenance(i).get("background"):
            continue
        ax = axes.flat[2 + shown]
        img = np.asarray(ds.image(i), np.float32)
        img = img / 255 if img.max() > 1.5 else img
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        b = ds.rows("boxes", i)
        for x0, y0, x1, y1 in zip(b["x0"], b["y0"], b["x1"], b["y1"]):
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="r", lw=0.8))
        ax.set_title(f"training image {i} on {ds.provenance(i)['background']}")
        shown += 1
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
fig.savefig(out, dpi=70)
print(out)
