"""Unsupervised adaptation to unlabeled real images: BatchNorm statistics, flip-consistent pseudo-labels,
self-training — and that no label of an adaptation folder is ever read."""

import contextlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.normalize import normalize_image, to_uint8
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import box_iou
from simgen.train.tiling import pad_to, tile_windows
from simgen.train.yolo.adapt_batchnorm import adapt_batchnorm
from simgen.train.yolo.checkpoint import load_yolo_checkpoint
from simgen.train.yolo.config import PRESETS
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.pseudo_label import flip_consistent, pseudo_label
from simgen.train.yolo.self_train import box_limits, count_change, self_train
from simgen.train.yolo.trainer import train_yolo
from simgen.train.yolo.unlabeled import open_unlabeled

COLS = ["x0", "y0", "x1", "y1", "class", "score"]


# -- data -----------------------------------------------------------------------------------------
def _discs(rng, h, w, n=5, bg=0.7, dark=0.25, noise=0.02):
    """A grey image with ``n`` dark discs and their boxes."""
    img = np.full((h, w), bg, np.float32) + rng.normal(0, noise, (h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    boxes = []
    for _ in range(n):
        cx, cy, r = rng.uniform(8, w - 8), rng.uniform(8, h - 8), rng.uniform(3, 5)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = dark
        boxes.append((cx - r, cy - r, cx + r, cy + r))
    b = np.array(boxes, np.float32)
    return np.clip(img, 0, 1), {"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3],
                                "class": np.zeros(len(b), np.int16)}


def _synthetic(path, n=16, seed=0):
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, kind="tem", class_names=["loop"]) as w:
        for i in range(n):
            img, boxes = _discs(rng, 64, 64)
            w.append(img, boxes=boxes, name=f"syn{i:02d}")
    return path


POISON_CLASS = 5


def _real_folder(root, n=3, shape=(80, 96), seed=1):
    """A real-looking YOLO folder (another look than the synthetic data) whose labels/ is poisoned:
    one unparsable file, one directory where a label file should be, the rest valid lines with a
    class id and boxes nothing else produces."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("loop\n")
    images = []
    for i in range(n):
        img, _ = _discs(rng, *shape, bg=0.55, dark=0.3, noise=0.05)
        img = to_uint8(img)
        Image.fromarray(img).save(root / "images" / f"real{i}.png")
        images.append(img.astype(np.float32) / 255)
        if i == 0:
            (root / "labels" / f"real{i}.txt").write_text("this is not a label\n")
        elif i == 1:
            (root / "labels" / f"real{i}.txt").mkdir()
        else:
            (root / "labels" / f"real{i}.txt").write_text(f"{POISON_CLASS} 0.123 0.456 0.05 0.07\n" * 40)
    return root, images


# -- an audit hook that sees every file a test opens or lists under a folder ------------------------
_WATCHED: list[str] = []
_SEEN: list[str] = []
_HOOKED = False


def _audit(event, args):
    if not _WATCHED or event not in ("open", "os.listdir", "os.scandir") or not args:
        return
    target = args[0]
    if isinstance(target, (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(target))
        if any(path == w or path.startswith(w + os.sep) for w in _WATCHED):
            _SEEN.append(f"{event} {path}")


@contextlib.contextmanager
def never_touched(folder):
    """Fail if anything inside ``folder`` is opened or listed in the block."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    _SEEN.clear()
    _WATCHED[:] = [os.path.abspath(folder)]
    try:
        yield _SEEN
    finally:
        _WATCHED.clear()
    assert not _SEEN, f"read from {folder}: {_SEEN[:3]}"


def test_the_label_watch_and_the_poison_work(tmp_path):
    """The checks below could fail: reading the poisoned folder as a labelled source is seen and raises."""
    root, _ = _real_folder(tmp_path / "real")
    with pytest.raises(AssertionError, match="read from"), never_touched(root / "labels"), open_source(root) as src, \
            pytest.raises(DataError):
        src.boxes(0)


# -- unlabeled images ------------------------------------------------------------------------------------
def test_open_unlabeled_reads_images_only(tmp_path):
    root, images = _real_folder(tmp_path / "real")
    with never_touched(root / "labels"), open_unlabeled(root) as src:
        assert src.names == ["real0", "real1", "real2"] and src.shape(1) == (80, 96)
        np.testing.assert_array_equal(src.image(2), images[2])
    with open_unlabeled(root, exclude=["real1", "not_there"]) as src:
        assert src.names == ["real0", "real2"] and src.excluded == ["real1"]
    # an unlabeled video folder (frames/), an HDF5 file (its boxes table is never read), arrays
    (tmp_path / "video" / "frames").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(to_uint8(images[0])).convert("RGB").save(tmp_path / "video" / "frames" / "frame0400.jpg")
    with open_unlabeled(tmp_path / "video") as src:
        assert src.names == ["frame0400"] and src.image(0).ndim == 2
    h5 = _synthetic(tmp_path / "syn.h5", n=3)
    with open_unlabeled(h5, names=["syn02"]) as src:
        assert len(src) == 1 and src.image(0).shape == (64, 64)
    assert open_unlabeled(np.stack(images)).names == ["000000", "000001", "000002"]
    with pytest.raises(DataError, match="no images left"):
        open_unlabeled(root, exclude=["real0", "real1", "real2"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        open_unlabeled(tmp_path / "empty")


# -- flip consistency --------------------------------------------------------------------------------------
def _df(rows):
    arr = np.array(rows, np.float64).reshape(-1, 6)
    return pd.DataFrame({"x0": arr[:, 0].astype(np.float32), "y0": arr[:, 1].astype(np.float32),
                         "x1": arr[:, 2].astype(np.float32), "y1": arr[:, 3].astype(np.float32),
                         "class": arr[:, 4].astype(np.int16), "score": arr[:, 5].astype(np.float32)})


def test_flip_consistent_matches_one_to_one_and_takes_the_min_score():
    base = _df([[10, 10, 20, 20, 0, 0.9],    # found in both views → kept, score 0.6
                [40, 40, 50, 50, 0, 0.8],    # second view has it with the other class → dropped
                [11, 11, 21, 21, 0, 0.7],    # competes for the same partner as row 0 → dropped
                [70, 70, 80, 80, 0, 0.95]])  # second view shifted (IoU 0.33 < 0.5) → dropped
    view1 = _df([[10, 10, 20, 20, 0, 0.6], [40, 40, 50, 50, 0, 0.9], [70, 70, 80, 80, 0, 0.9]])
    view2 = _df([[10.5, 10, 20.5, 20, 0, 0.99], [40, 40, 50, 50, 1, 0.9], [75, 70, 85, 80, 0, 0.9]])
    out = flip_consistent(base, [view1, view2], iou=0.5)
    assert len(out) == 1 and out[["x0", "y0"]].iloc[0].tolist() == [10, 10]
    assert out["score"].iloc[0] == pytest.approx(0.6)
    assert len(flip_consistent(base, [view1, view2], iou=0.3)) == 2  # the shifted one passes a looser IoU
    assert len(flip_consistent(base, [view1.iloc[:0]], iou=0.5)) == 0
    with pytest.raises(ParameterError):
        flip_consistent(base, [view1], iou=0)


class BlobDetector:
    """A real detector for dark discs (connected components), plus a fixed false box that does not
    follow the image under flips, like an artefact of one position; scores depend on where a blob is."""

    def __init__(self, conf_f1=0.5, artefact=(2.0, 2.0, 14.0, 12.0), threshold=0.45, min_size=4):
        self.meta = {"conf_f1": conf_f1}
        self.artefact = artefact
        self.threshold, self.min_size = threshold, min_size
        self.calls = 0

    def detect(self, image):
        from scipy import ndimage

        self.calls += 1
        h, w = image.shape
        lab, n = ndimage.label(image < self.threshold)
        rows = []
        for sl in ndimage.find_objects(lab):
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            if min(y1 - y0, x1 - x0) < self.min_size:
                continue
            cx = (x0 + x1) / 2
            rows.append([x0, y0, x1, y1, 0, 0.95 - 0.5 * cx / w])  # brighter on the left: flips change it
        rows.append([*self.artefact, 0, 0.99])
        return _df(rows)


def test_pseudo_label_keeps_only_flip_consistent_confident_boxes(tmp_path):
    rng = np.random.default_rng(3)
    img, truth = _discs(rng, 90, 120, n=6)
    truth = pd.DataFrame(truth)
    truth = truth[box_iou(truth[["x0", "y0", "x1", "y1"]], [[0, 0, 16, 16]]).max(axis=1) == 0]  # clear of the artefact
    det = BlobDetector(conf_f1=0.0)
    plain = pseudo_label(det, [img], flip_consistency=False)[0]
    assert ((plain["x0"] == 2) & (plain["y0"] == 2)).sum() == 1  # the artefact is a confident detection
    out = pseudo_label(det, [img])[0]
    assert det.calls == 1 + 3  # original + horizontal + vertical
    assert not ((out["x0"] == 2) & (out["y0"] == 2)).any()  # ... but not flip-consistent
    iou = box_iou(out[["x0", "y0", "x1", "y1"]], truth[["x0", "y0", "x1", "y1"]])
    assert len(out) >= len(truth) - 1 and (iou.max(axis=1) > 0.5).all()
    # score = min over the views: the h-flipped view sees the blob at x -> W - x
    cx = (out["x0"] + out["x1"]).to_numpy() / 2
    expected = np.minimum(0.95 - 0.5 * cx / 120, 0.95 - 0.5 * (120 - cx) / 120)
    np.testing.assert_allclose(out["score"], expected, atol=1e-5)
    assert out["score"].is_monotonic_decreasing
    # the default threshold is the synthetic-validation one in the detector's meta
    strict = pseudo_label(BlobDetector(conf_f1=0.8), [img])[0]
    assert len(strict) < len(out) and (strict["score"] >= 0.8).all()
    assert len(pseudo_label(BlobDetector(conf_f1=0.8), [img], conf=0.0)[0]) == len(out)
    no_threshold = BlobDetector()
    no_threshold.meta = {}
    with pytest.raises(ParameterError, match="synthetic validation"):
        pseudo_label(no_threshold, [img])
    with pytest.raises(ParameterError, match="flips"):
        pseudo_label(det, [img], flips=("diagonal",))


# -- a tiny synthetic teacher ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapt")
    syn = _synthetic(tmp / "syn.h5")
    best = train_yolo(syn, tmp / "teacher", config=PRESETS["small"], progress=False, cache_dir=tmp / "cache")
    return {"tmp": tmp, "syn": syn, "best": best}


def test_pseudo_label_through_yolo_detector_tiling(teacher, tmp_path, monkeypatch):
    """The real YoloDetector path (normalize, tiles, seams, flips): a network stand-in that finds the
    discs of each tile and also reports a false box at a fixed tile position; only the discs survive."""
    root, images = _real_folder(tmp_path / "real", n=2, shape=(100, 140))
    det = YoloDetector(teacher["best"])
    blobs = BlobDetector(conf_f1=0.0, artefact=(1.0, 1.0, 9.0, 9.0), threshold=0.2)  # crops are contrast-normalized

    def run(crops):
        return [blobs.detect(c.astype(np.float32) / 255) for c in crops]

    monkeypatch.setattr(det, "_run", run)
    plain = pseudo_label(det, root, flip_consistency=False, conf=0.5)
    kept = pseudo_label(det, root, conf=0.5)
    for p, k in zip(plain, kept):
        artefacts = (p["x1"] - p["x0"] == 8) & (p["y1"] - p["y0"] == 8) & (p["score"] > 0.98)
        assert artefacts.sum() >= 1  # there was something to reject
        assert not ((k["x1"] - k["x0"] == 8) & (k["y1"] - k["y0"] == 8) & (k["score"] > 0.98)).any()
        assert 0 < len(k) <= len(p) - artefacts.sum()
        assert (k["score"] >= 0.5).all()


# -- lever 1: BatchNorm statistics -----------------------------------------------------------------------
def _first_bn_input(net, images, tile=64, overlap=16):
    """Conv output feeding the first BatchNorm, on the detector's real tiles (computed independently)."""
    import torch

    crops = []
    for image in images:
        img = normalize_image(image, "percentile")
        for win in tile_windows(img.shape, tile, overlap):
            c = win.crop(img)
            crops.append(to_uint8(pad_to(c, (max(c.shape[0], tile), max(c.shape[1], tile)))))
    x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32) / 255)
    with torch.no_grad():
        y = net.model[0].conv.float()(x)
    return y.mean(dim=(0, 2, 3)).numpy(), y.transpose(0, 1).reshape(y.shape[1], -1).var(dim=1).numpy()


def test_adapt_batchnorm_moves_statistics_to_the_real_tiles(teacher, tmp_path):
    import torch
    import ultralytics

    root, images = _real_folder(tmp_path / "real", n=3, shape=(80, 96))
    out = tmp_path / "bn.pt"
    with never_touched(root / "labels"):
        adapt_batchnorm(teacher["best"], root, out, batch=64, device="auto")
    src_ck, new_ck = load_yolo_checkpoint(teacher["best"]), load_yolo_checkpoint(out)
    src_net, new_net = src_ck["model"], new_ck["model"]
    bn = lambda net: [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]  # noqa: E731
    assert len(bn(new_net)) == len(bn(src_net)) > 10
    for a, b in zip(bn(src_net), bn(new_net)):
        assert not torch.equal(a.running_mean, b.running_mean) and b.momentum == a.momentum
    mean, var = _first_bn_input(src_net, images)
    m0, m1 = bn(src_net)[0].running_mean.float().numpy(), bn(new_net)[0].running_mean.float().numpy()
    v1 = bn(new_net)[0].running_var.float().numpy()
    np.testing.assert_allclose(m1, mean, rtol=2e-2, atol=2e-3)  # one batch of all tiles: exactly their stats
    np.testing.assert_allclose(v1, var, rtol=2e-2, atol=2e-4)
    assert np.abs(m1 - mean).sum() < 0.1 * np.abs(m0 - mean).sum()
    # weights untouched, metadata kept plus a record; loads with Ultralytics and the simgen detector
    for (name, p), (_, q) in zip(src_net.named_parameters(), new_net.named_parameters()):
        assert torch.equal(p, q), name
    assert new_ck["simgen"]["conf_f1"] == src_ck["simgen"]["conf_f1"]
    rec = new_ck["simgen"]["adaptation"][-1]
    assert rec["method"] == "batchnorm" and rec["n_tiles"] == 3 * 4 and rec["images"]["names"] == ["real0", "real1",
                                                                                                      "real2"]
    assert len(ultralytics.YOLO(str(out)).predict(np.zeros((64, 64, 1), np.uint8), verbose=False)) == 1
    det = YoloDetector(out)
    assert det.conf_f1 == src_ck["simgen"]["conf_f1"] and list(det.detect(images[0]).columns) == COLS
    # partial adaptation is the blend; seeded subsets/flips are repeatable
    half = tmp_path / "half.pt"
    adapt_batchnorm(teacher["best"], images, half, batch=64, weight=0.5)
    mh = bn(load_yolo_checkpoint(half)["model"])[0].running_mean.float().numpy()
    np.testing.assert_allclose(mh, (m0 + m1) / 2, atol=2e-3)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    for p in (a, b):
        adapt_batchnorm(teacher["best"], images, p, passes=2, batch=4, max_tiles=6, seed=7)
    assert all(torch.equal(x.running_var, y.running_var) for x, y in zip(bn(load_yolo_checkpoint(a)["model"]),
                                                                          bn(load_yolo_checkpoint(b)["model"])))
    # bad calls change nothing
    stamp = out.stat().st_mtime_ns
    with pytest.raises(ParameterError, match="exists"):
        adapt_batchnorm(teacher["best"], images, out)
    with pytest.raises(ParameterError, match="input"):
        adapt_batchnorm(out, images, out, overwrite=True)
    with pytest.raises(ParameterError, match="weight"):
        adapt_batchnorm(teacher["best"], images, tmp_path / "x.pt", weight=0)
    assert out.stat().st_mtime_ns == stamp and not (tmp_path / "x.pt").exists()


# -- lever 3: self-training --------------------------------------------------------------------------------
def test_self_train_round_end_to_end_without_reading_labels(teacher, tmp_path, monkeypatch):
    root, images = _real_folder(tmp_path / "real", n=3, shape=(80, 96))
    out = tmp_path / "self"
    kw = dict(epochs=1, conf=0.01, cache_dir=teacher["tmp"] / "cache", progress=False)
    with never_touched(root / "labels"):
        res = self_train(teacher["best"], teacher["syn"], root, out, rounds=1, student_conf="teacher_count", **kw)
    (rec,) = res.rounds
    assert rec["status"] == "trained" and res.stopped is None, rec
    assert rec["n_boxes"] > 0 and rec["n_images"] == 3 and rec["train_seconds"] > 0
    assert 0.01 <= rec["mean_score"] <= 1 and rec["conf"] == 0.01
    # the pseudo-label file: the real pixels, the teacher's boxes, nothing from labels/
    with open_dataset(out / "round1" / "pseudo.h5") as ds:
        assert ds.kind == "pseudo_labels" and ds.class_names == ["loop"]
        names = [ds.name(i) for i in range(ds.n)]
        for i, name in enumerate(names):
            np.testing.assert_array_equal(ds.image(i), images[int(name[-1])])
        boxes = ds.table("boxes")
    assert len(boxes) == rec["n_boxes"] and set(boxes["class"]) == {0} and (boxes["score"] >= 0.01).all()
    poison_x = 0.123 * 96
    assert not np.isclose((boxes["x0"] + boxes["x1"]) / 2, poison_x, atol=0.01).any()
    # the student trained on synthetic + pseudo, validated (best epoch, threshold) on synthetic only
    meta = json.loads((out / "round1" / "student" / "simgen.json").read_text())
    assert meta["val"] == [str(teacher["syn"])]
    export = json.loads((Path(meta["data_yaml"]).parent / "source.json").read_text())
    assert export["val_paths"] == [str(teacher["syn"])]
    assert str(out / "round1" / "pseudo.h5") in export["train_paths"]
    # the student's threshold: as many detections on the unlabeled images as the teacher at its threshold
    final = load_yolo_checkpoint(res.weights)["simgen"]
    assert final["adaptation"][-1]["method"] == "self_train" and final["conf_f1_synthetic"] == rec["student_conf_f1"]
    threshold = final["adaptation"][-1]["threshold"]
    student_det, teacher_det = YoloDetector(res.weights), YoloDetector(teacher["best"])
    assert student_det.conf_f1 == final["conf_f1"] == threshold["conf"] and threshold["teacher_conf"] == 0.01
    assert len(threshold["images"]) == 3 and set(names) <= set(threshold["images"])  # all 3 (count_images 24)
    shown = [images[int(n[-1])] for n in threshold["images"]]
    target = sum(int((teacher_det.detect(img)["score"] >= 0.01).sum()) for img in shown)
    found = sum(int((student_det.detect(img)["score"] >= student_det.conf_f1).sum()) for img in shown)
    assert target == threshold["target"] and found == threshold["found"]
    assert found >= target or student_det.conf_f1 == student_det.conf
    state = json.loads((out / "adapt.json").read_text())
    assert state["result"]["rounds"][0]["n_boxes"] == rec["n_boxes"] and state["threshold"] == threshold

    # resume: the finished round is skipped (no new training); then round 2 with a drifting teacher stops
    student = out / "round1" / "student" / "best.pt"
    stamp = student.stat().st_mtime_ns
    with pytest.raises(ParameterError, match="--resume"):
        self_train(teacher["best"], teacher["syn"], root, out, rounds=1, **kw)
    again = self_train(teacher["best"], teacher["syn"], root, out, rounds=1, resume=True,
                       **kw)  # the threshold rule (default: synthetic) is chosen after training: a resume may change it
    assert again.rounds[0]["n_boxes"] == rec["n_boxes"] and student.stat().st_mtime_ns == stamp
    assert YoloDetector(again.weights).conf_f1 == rec["student_conf_f1"]
    with pytest.raises(ParameterError, match="settings differ"):
        self_train(teacher["best"], teacher["syn"], root, out, rounds=2, resume=True, **{**kw, "iou": 0.6})

    def drifting(self, image):  # the round-1 student suddenly sees a box every 8 pixels
        h, w = image.shape  # a grid symmetric under both flips (80 x 96 images), so flip-consistent
        ys, xs = np.meshgrid(np.arange(1, h - 6, 8), np.arange(1, w - 6, 8), indexing="ij")
        ys, xs = ys.ravel().astype(np.float32), xs.ravel().astype(np.float32)
        return pd.DataFrame({"x0": xs, "y0": ys, "x1": xs + 6, "y1": ys + 6, "class": np.zeros(len(xs), np.int16),
                             "score": np.full(len(xs), 0.9, np.float32)})

    monkeypatch.setattr(YoloDetector, "detect", drifting)
    two = self_train(teacher["best"], teacher["syn"], root, out, rounds=2, resume=True, **kw)
    assert [r["status"] for r in two.rounds] == ["trained", "stopped"]
    assert two.rounds[1]["change"] > 0.5 and "changed by" in two.stopped
    stats = json.loads((out / "round2" / "pseudo.json").read_text())
    first = json.loads((out / "round1" / "pseudo.json").read_text())["per_image_raw"]
    assert stats["per_image"] == [min(n, math.ceil(1.5 * f)) for n, f in zip(stats["per_image_raw"], first)]
    assert stats["n_capped"] > 0 and not (out / "round2" / "student").exists()
    assert load_yolo_checkpoint(two.weights)["simgen"]["conf_f1_synthetic"] == rec["student_conf_f1"]  # round 1 stays


def test_teacher_count_rule_sets_every_later_rounds_pseudo_label_threshold(teacher, tmp_path, monkeypatch):
    """Round 2's teacher (the round-1 student) pseudo-labels at the score where it finds as many
    defects as the synthetic model at its own threshold, not at its synthetic-validation one; the
    synthetic model's count is taken once; a resume with another rule is refused."""
    root, images = _real_folder(tmp_path / "real", n=3, shape=(80, 96))
    t_conf = YoloDetector(teacher["best"]).conf_f1
    calls = {"teacher": 0}

    def grid(self, image):  # the synthetic model: half the grid above its threshold; students: graded scores
        h, w = image.shape
        ys, xs = np.meshgrid(np.arange(1, h - 6, 8), np.arange(1, w - 6, 8), indexing="ij")
        ys, xs = ys.ravel().astype(np.float32), xs.ravel().astype(np.float32)
        d = np.hypot(xs + 3 - w / 2, ys + 3 - h / 2)  # scores by distance to the centre: the same under flips
        d = d / d.max()
        if Path(self.weights) == Path(teacher["best"]):
            calls["teacher"] += 1
            score = np.where(d < 0.6, (1 + t_conf) / 2, t_conf / 2)
        else:
            score = 0.95 - 0.65 * d
        return pd.DataFrame({"x0": xs, "y0": ys, "x1": xs + 6, "y1": ys + 6, "class": np.zeros(len(xs), np.int16),
                             "score": score.astype(np.float32)})

    monkeypatch.setattr(YoloDetector, "detect", grid)
    out = tmp_path / "self"
    kw = dict(epochs=1, cache_dir=teacher["tmp"] / "cache", progress=False, max_count_change=None)
    res = self_train(teacher["best"], teacher["syn"], root, out, rounds=2, student_conf="teacher_count", **kw)
    assert [r["status"] for r in res.rounds] == ["trained", "trained"], res.rounds
    counted = calls["teacher"]
    target = 3 * int((grid(YoloDetector(teacher["best"]), images[0])["score"] >= t_conf).sum())
    student = grid(YoloDetector(res.weights), images[0])["score"].to_numpy(np.float64)
    expected = float(np.sort(np.tile(student, 3))[::-1][target - 1])
    assert 0 < target < 3 * len(student)
    one, two = (json.loads((out / f"round{r}" / "pseudo.json").read_text()) for r in (1, 2))
    assert one["conf"] == pytest.approx(t_conf) and one["threshold_rule"] == "teacher_count"
    assert two["conf"] == pytest.approx(expected) and two["conf_source"].startswith("teacher_count")
    assert two["conf"] != pytest.approx(res.rounds[0]["student_conf_f1"])
    final = load_yolo_checkpoint(res.weights)["simgen"]["adaptation"][-1]["threshold"]
    assert final["target"] == target and final["conf"] == pytest.approx(expected)
    # the synthetic model's 3 images were counted once for both students (+ its own pseudo-labelling passes)
    assert counted == 3 + 3 * 3, counted  # three count images once; round 1: three images x (as is, h, v)
    state = (out / "adapt.json").read_bytes()
    with pytest.raises(ParameterError, match="pseudo-labelled with the teacher_count threshold"):
        self_train(teacher["best"], teacher["syn"], root, out, rounds=2, resume=True, **kw)
    assert (out / "adapt.json").read_bytes() == state  # refused before anything was written


def test_self_train_stops_when_nothing_passes_and_validates_first(teacher, tmp_path):
    root, _ = _real_folder(tmp_path / "real", n=2)
    out = tmp_path / "self"
    res = self_train(teacher["best"], teacher["syn"], root, out, rounds=2, epochs=1, conf=0.999, progress=False,
                     cache_dir=teacher["tmp"] / "cache")
    assert [r["status"] for r in res.rounds] == ["stopped"] and "no pseudo box" in res.stopped
    assert not (out / "round1" / "student").exists()
    final = load_yolo_checkpoint(res.weights)["simgen"]
    assert final["conf_f1"] == load_yolo_checkpoint(teacher["best"])["simgen"]["conf_f1"]  # the teacher, unchanged
    for bad in ({"rounds": 0}, {"max_box_growth": 0.5}, {"pseudo_ratio": 0}, {"iou": 0}, {"flips": ()},
                {"student_conf": "real"}, {"count_images": 0}):
        with pytest.raises(ParameterError):
            self_train(teacher["best"], teacher["syn"], root, tmp_path / "bad", **{"progress": False, **bad})
    with pytest.raises(ParameterError, match="holds the input"):
        self_train(teacher["best"], teacher["syn"], root, teacher["tmp"], progress=False)
    with pytest.raises(ParameterError, match="inside the unlabeled"):
        self_train(teacher["best"], teacher["syn"], root, root / "run", progress=False)
    assert not (root / "run").exists()
    assert not (tmp_path / "bad").exists()


def test_drift_guard_helpers():
    assert box_limits([0, 1, 4, 10], 1.5) == [0, 2, 6, 15]
    assert box_limits([3], None) == [None]
    assert count_change(100, 140) == pytest.approx(0.4) and count_change(0, 3) == 3.0


def test_open_unlabeled_takes_an_open_source_and_leaves_it_open(tmp_path):
    h5 = _synthetic(tmp_path / "syn.h5", n=3)
    with open_source(h5) as src:
        with open_unlabeled(src, exclude=["syn00"]) as u:
            assert u.names == ["syn01", "syn02"] and u.image(0).shape == (64, 64)
        assert src.image(0).shape == (64, 64)  # still open


def test_train_yolo_adapt_to_cli_adapts_without_labels(tmp_path):
    from click.testing import CliRunner

    from simgen.cli import main

    syn = _synthetic(tmp_path / "syn.h5", n=8)
    val = _synthetic(tmp_path / "val.h5", n=4, seed=3)
    root, _ = _real_folder(tmp_path / "real", n=2)
    out = tmp_path / "run"
    runner = CliRunner()
    base = ["train", "yolo", "--data", str(syn), "--config", "small", "--epochs", "1", "--no-progress",
            "--cache-dir", str(tmp_path / "cache")]
    # refused before any training: no synthetic validation to choose thresholds on, or a bad lever
    r = runner.invoke(main, [*base, "--adapt-to", str(root), "-o", str(out)])
    assert r.exit_code == 2 and "needs --val" in r.output and not out.exists()
    r = runner.invoke(main, [*base, "--val", str(val), "--adapt-to", str(root), "--adapt", "bn,magic", "-o", str(out)])
    assert r.exit_code == 2 and "levers must be among" in r.output and not out.exists()
    with never_touched(root / "labels"):
        r = runner.invoke(main, [*base, "--val", str(val), "--adapt-to", str(root), "--adapt", "bn,self_train",
                                 "--self-train-epochs", "1", "--student-conf", "teacher_count", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "best.pt").exists() and (out / "adapt" / "bn.pt").exists()
    assert (out / "adapt" / "self_train" / "adapt.json").exists() and "adapted (self_train)" in r.output
    state = json.loads((out / "adapt" / "self_train" / "adapt.json").read_text())
    assert state["result"]["rounds"] and state["settings"]["student_conf"] == "teacher_count", state
    # the BatchNorm-adapted checkpoint loads and differs from the trained one in its statistics only
    a, b = load_yolo_checkpoint(out / "best.pt"), load_yolo_checkpoint(out / "adapt" / "bn.pt")
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    moved = [k for k in sa if k.endswith("running_mean") and not np.allclose(sa[k].float(), sb[k].float())]
    assert moved and all(np.allclose(sa[k].float(), sb[k].float()) for k in sa if k.endswith(".weight"))
