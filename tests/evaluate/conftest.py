"""Fixtures of the evaluation tests: seeded synthetic boxes and tracks.

The builders are handed to tests through the ``ev`` fixture (the suite runs with
``--import-mode=importlib``, so test modules cannot import each other).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest


def boxes_df(sample, x0, y0, x1, y1, cls=0, score=None) -> pd.DataFrame:
    df = pd.DataFrame({"sample": np.asarray(sample, np.int64), "x0": np.asarray(x0, float),
                       "y0": np.asarray(y0, float), "x1": np.asarray(x1, float), "y1": np.asarray(y1, float)})
    df["class"] = np.broadcast_to(np.asarray(cls, np.int64), (len(df),)).copy()
    if score is not None:
        df["score"] = np.broadcast_to(np.asarray(score, float), (len(df),)).copy()
    return df


def random_box_sets(rng, n_img=6, n_cls=2, max_gt=15):
    """Ground truth and noisy predictions (jittered copies + random false positives)."""
    g, p = [], []
    for i in range(n_img):
        ng = int(rng.integers(0, max_gt))
        xy = rng.uniform(0, 100, (ng, 2))
        wh = rng.uniform(4, 20, (ng, 2))
        gb = np.c_[xy, xy + wh]
        gc = rng.integers(0, n_cls, ng)
        g.append(boxes_df(np.full(ng, i), *gb.T, cls=gc))
        keep = rng.random(ng) < 0.8
        jb = gb[keep] + rng.normal(0, 2.5, (int(keep.sum()), 4))
        jb[:, 2:] = np.maximum(jb[:, 2:], jb[:, :2] + 0.5)
        nf = int(rng.integers(0, 6))
        xy = rng.uniform(0, 100, (nf, 2))
        wh = rng.uniform(4, 20, (nf, 2))
        pb = np.r_[jb, np.c_[xy, xy + wh]]
        pc = np.r_[gc[keep], rng.integers(0, n_cls, nf)]
        p.append(boxes_df(np.full(len(pb), i), *pb.T, cls=pc, score=rng.random(len(pb))))
    return pd.concat(p, ignore_index=True), pd.concat(g, ignore_index=True)


def random_tracks(rng, n_frames=30, n_obj=8, half=4.0, fp=10, empty_frames=2, size=60.0):
    """Ground-truth tracks with gaps and predictions with misses, id changes, false positives."""
    rows = []
    for k in range(n_obj):
        t0 = int(rng.integers(0, n_frames - 3))
        t1 = int(rng.integers(t0 + 1, n_frames))
        xy = rng.uniform(0, size, 2)
        for t in range(t0, t1):
            xy = xy + rng.normal(0, 2, 2)
            if rng.random() < 0.9:
                rows.append((t, k, *xy))
    gt = pd.DataFrame(rows, columns=["sample", "track_id", "x", "y"])
    pr = gt[rng.random(len(gt)) < 0.85].copy()
    pr[["x", "y"]] += rng.normal(0, 1.5, (len(pr), 2))
    switch = rng.integers(0, n_frames, len(pr))
    pr["track_id"] = pr["track_id"] * 10 + (pr["sample"].to_numpy() > switch).astype(int)
    extra = pd.DataFrame({"sample": rng.integers(0, n_frames, fp), "track_id": 1000 + np.arange(fp),
                          "x": rng.uniform(0, size, fp), "y": rng.uniform(0, size, fp)})
    pr = pd.concat([pr, extra], ignore_index=True)
    pr = pr[~pr["sample"].isin(rng.integers(0, n_frames, empty_frames))]
    for df in (gt, pr):
        df["x0"], df["y0"], df["x1"], df["y1"] = df.x - half, df.y - half, df.x + half, df.y + half
    return pr.sample(frac=1, random_state=int(rng.integers(1 << 30))).reset_index(drop=True), gt


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def ev():
    """The builders above: ``ev.boxes_df``, ``ev.random_box_sets``, ``ev.random_tracks``."""
    return SimpleNamespace(boxes_df=boxes_df, random_box_sets=random_box_sets, random_tracks=random_tracks)
