"""Adaptation images and scored images stay disjoint: by name and by near copy (neighbouring video frames)."""

import json

import numpy as np
from fakedata import disc_folder
from PIL import Image

from simgen.datasets.sources import open_source
from simgen.experiments.sim2real_adapt import adaptation_folds, adaptation_study
from simgen.experiments.sim2real_disjoint import exclude_scored
from simgen.experiments.sim2real_real import load_real
from simgen.experiments.sim2real_tem import Sim2RealConfig, generate_synthetic, match_look, train_synthetic


def test_exclude_scored_drops_same_name_and_near_copies_only():
    rng = np.random.default_rng(3)
    scored = rng.normal(0.5, 0.1, (64, 80)).astype(np.float32)
    next_frame = scored + rng.normal(0, 0.01, scored.shape)  # correlation ≈ 0.99
    moved = np.roll(scored, 9, axis=1)  # same scene shifted: correlation ≈ 0
    kept, left_out = exclude_scored([("a/s0.png", next_frame), ("s0.tif", moved), ("x.png", moved),
                                     ("y.png", next_frame[:32])], {"s0": scored}, 0.95)
    assert [name for name, _ in kept] == ["x.png", "y.png"]  # another shape is never a near copy
    assert left_out == {"a/s0.png": "named like scored image s0", "s0.tif": "named like scored image s0"}
    kept, left_out = exclude_scored([("f1.png", next_frame)], {"s0": scored}, 0.95)
    assert kept == [] and left_out == {"f1.png": "near copy of scored image s0"}
    kept, _ = exclude_scored([("f1.png", next_frame)], {"s0": scored}, 0.999)  # a stricter cut keeps it
    assert [name for name, _ in kept] == ["f1.png"]


def test_adaptation_pool_leaves_out_near_copies_of_each_folds_scored_images(tmp_path):
    """``--adapt-to`` frames that are near copies of a scored image are not adapted to in that image's fold."""
    real_dir = disc_folder(tmp_path / "real", ((96, 96), (96, 112), (112, 96), (96, 112)))
    video = tmp_path / "video"
    video.mkdir()
    im0 = np.asarray(Image.open(real_dir / "images" / "im0.png"), np.float32)
    rng = np.random.default_rng(1)
    Image.fromarray(np.clip(im0 + rng.normal(0, 1, im0.shape), 0, 255).astype(np.uint8)).save(video / "f0481.png")
    Image.fromarray(rng.integers(100, 200, (96, 96)).astype(np.uint8)).save(video / "f0600.png")
    Image.open(real_dir / "images" / "im1.png").save(video / "im1.png")  # the video holds a frame of the real set
    cfg = Sim2RealConfig.preset("small").replace(n_train=8, n_val=4, match_images=1, adapt=("bn",),
                                                 adapt_to=str(video)).validate()
    out = tmp_path / "out"
    with open_source(real_dir) as src:
        real = load_real(src)
        data = generate_synthetic(out, match_look(real, cfg), cfg, progress=False)
        weights = train_synthetic(data, out, cfg, progress=False)
        rows = adaptation_study(real, cfg, weights, data.train, data.val, out, progress=False)
    records = rows["synthetic_yolo_bn"]["adaptation"]
    assert "student_conf" not in rows["synthetic_yolo_bn"]  # a threshold rule of self-trained students only
    for i, held in enumerate(adaptation_folds(len(real), cfg.adapt_folds)):
        scored = {real.names[k] for k in held}
        used = {name.rsplit(".", 1)[0] for name in records[i]["adapted_on"]}
        assert not used & scored and "f0600" in used
        if "im0" in scored:
            assert "f0481" not in used and records[i]["left_out"]["f0481.png"] == "near copy of scored image im0"
        else:
            assert "f0481" in used
        if "im1" not in scored:  # adapted to once, under the real set's file
            assert "im1" in used and records[i]["left_out"]["im1.png"] == "same name as im1.png"
            assert records[i]["adapted_on"].count("im1") + records[i]["adapted_on"].count("im1.png") == 1
    json.dumps(records)  # the record goes into report.json as is
