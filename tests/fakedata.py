"""Small fake data sets shared by tests (importable because pytest's ``pythonpath`` includes tests/)."""

import numpy as np


def disc_folder(root, sizes):
    """A real-data-like YOLO folder: grey PNGs of the given (H, W) sizes with four dark discs each
    and their YOLO labels (class 0, "loop")."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("loop\n")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        img = np.full((h, w), 0.7) + rng.normal(0, 0.02, (h, w))
        yy, xx = np.mgrid[0:h, 0:w]
        lines = []
        for _ in range(4):
            cx, cy, r = rng.uniform(8, w - 8), rng.uniform(8, h - 8), rng.uniform(2.5, 4.5)
            img[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 < r * r] = 0.25
            lines.append(f"0 {cx / w:.6f} {cy / h:.6f} {2 * r / w:.6f} {2 * r / h:.6f}")
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"im{i}.png")
        (root / "labels" / f"im{i}.txt").write_text("\n".join(lines) + "\n")
    return root
