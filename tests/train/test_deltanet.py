"""Siamese change detector: focal loss, networks, change-map algebra, training, resume, fusion, CLI."""

import math
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clitools import run

from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.video_io import write_filament
from simgen.errors import DataError, ParameterError
from simgen.evaluate.segmentation import CHANGE_CLASSES as EVAL_CLASSES
from simgen.simulate.filament import FilamentConfig, FilamentSampler, change_map
from simgen.train.changedet.config import CHANGE_CLASSES, PRESETS, DeltaNetConfig, get_config
from simgen.train.changedet.data import class_weights, open_pairs
from simgen.train.changedet.model import SiameseUNet, UNet, build_deltanet, focal_loss, swap_direction
from simgen.train.changedet.predict import (
    chain_probabilities,
    evaluate_deltanet,
    fuse_pair,
    predict_deltanet,
    predict_pair,
)
from simgen.train.changedet.trainer import train_deltanet


def make_pairs(path, n_seq=6, size=64, seed=0):
    """A small filament pair file from the real generator (64² frames, 4 frames per sequence,
    gaps 1 and 2, forward and backward pairs; faster fronts and wall thinning than the
    defaults so that the change classes are not vanishingly rare at this size)."""
    cfg = FilamentConfig(size=size, frames=4, gaps=(1, 2), pairing=("forward", "backward"), n_filaments=(1, 3),
                         radius=(3.0, 6.0), rate=4.0, thinning=0.4, core_growth=0.5)
    write_filament(path, FilamentSampler(cfg, seed=seed), n_seq)
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    return {"train": make_pairs(d / "train.h5", n_seq=6), "val": make_pairs(d / "val.h5", n_seq=3, seed=10), "dir": d}


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("delta_run") / "run"

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    with pytest.MonkeyPatch.context() as mp:  # from scratch: nothing is downloaded
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        res = train_deltanet(pairs["train"], out, val=pairs["val"], config=get_config("tiny", monitor="val_dice"),
                             epochs=12)
    return res, out


# -- focal loss --------------------------------------------------------------------------------------
def test_focal_loss_hand_computed():
    # pixel 0: logits (ln 3, 0, 0, 0), true class 0 -> p = 3/6 = 0.5
    # pixel 1: same logits, true class 1 -> p = 1/6
    logits = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0]] * 2).T.reshape(1, 4, 2)
    target = torch.tensor([[0, 1]])
    fl0 = 0.5**2 * math.log(2.0)
    fl1 = (5 / 6) ** 2 * math.log(6.0)
    assert float(focal_loss(logits, target, gamma=2.0)) == pytest.approx((fl0 + fl1) / 2, rel=1e-6)
    assert float(focal_loss(logits, target, gamma=2.0, reduction="sum")) == pytest.approx(fl0 + fl1, rel=1e-6)
    alpha = [0.25, 1.0, 1.0, 1.0]
    assert float(focal_loss(logits, target, gamma=2.0, alpha=alpha)) == pytest.approx((0.25 * fl0 + fl1) / 2, rel=1e-6)
    per = focal_loss(logits, target, gamma=1.0, reduction="none")
    assert per.shape == (1, 2) and float(per[0, 0]) == pytest.approx(0.5 * math.log(2.0), rel=1e-6)


def test_focal_loss_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 6, generator=g) * 3
    target = torch.randint(0, 4, (3, 5, 6), generator=g)
    assert float(focal_loss(logits, target, gamma=0.0)) == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-6)
    assert float(focal_loss(logits, target, gamma=2.0)) < float(F.cross_entropy(logits, target))
    with pytest.raises(ParameterError):
        focal_loss(logits, target[:, :4])
    with pytest.raises(ParameterError):
        focal_loss(logits, target, gamma=-1)
    with pytest.raises(ParameterError):
        focal_loss(logits, target, alpha=[1, 1])
    with pytest.raises(DataError):
        focal_loss(logits, target + 4)


# -- networks and change-map algebra ---------------------------------------------------------------
def test_networks_shapes_and_sharing():
    torch.manual_seed(0)
    assert tuple(EVAL_CLASSES) == CHANGE_CLASSES
    siam = build_deltanet("tiny")
    base = build_deltanet(get_config("tiny", arch="unet"))
    assert isinstance(siam, SiameseUNet) and isinstance(base, UNet)
    assert siam.encoder.blocks[0][0].in_channels == 1 and base.encoder.blocks[0][0].in_channels == 2
    a, b = torch.rand(2, 1, 32, 48), torch.rand(2, 1, 32, 48)
    for model in (siam, base):
        model.eval()
        out = model(a, b)
        assert set(out) == {"a1", "a2"} and all(v.shape == (2, 4, 32, 48) for v in out.values())
    with torch.no_grad():
        fwd, rev = siam(a, b)["a1"], siam(b, a)["a1"]
    assert not torch.allclose(fwd, rev)  # the signed difference makes the model order-aware
    # any frame size: padded to a multiple of 2**depth and cropped back
    probs = predict_pair(siam, np.random.rand(37, 50), np.random.rand(37, 50))
    assert probs["a1"].shape == (4, 37, 50)
    np.testing.assert_allclose(probs["a2"].sum(0), 1.0, rtol=1e-5)
    full = PRESETS["full"]
    assert (full.crop, full.batch_size, full.lr, full.arch) == (256, 16, 1e-3, "siamese")
    for bad in (dict(arch="transformer"), dict(crop=60), dict(depth=0), dict(alpha=(1, 2)), dict(reverse=2.0),
                dict(monitor="f1"), dict(norm="layer")):
        with pytest.raises(ParameterError):
            get_config("tiny", **bad)
    assert DeltaNetConfig.from_dict(get_config("tiny", alpha=(1, 2, 2, 1)).to_dict()).alpha == (1, 2, 2, 1)
    assert DeltaNetConfig.from_dict(get_config("tiny").to_dict()).alpha == "auto"


def test_class_weights():
    maps = [np.array([[0, 0, 0, 3], [0, 0, 3, 3], [0, 0, 3, 1], [0, 0, 0, 2]])] * 2
    w = np.array(class_weights(maps))
    f = np.array([10, 1, 1, 4]) / 16
    expect = f ** -0.5 / (f * f ** -0.5).sum()
    np.testing.assert_allclose(w, expect, rtol=1e-3)
    assert w[1] == w[2] > w[3] > w[0]
    assert class_weights([]) == (1.0, 1.0, 1.0, 1.0)


def test_swap_and_chain():
    lab = np.array([[0, 1], [2, 3]], np.uint8)
    np.testing.assert_array_equal(swap_direction(lab), [[0, 2], [1, 3]])
    p = np.random.default_rng(0).dirichlet(np.ones(4), size=(5, 6)).transpose(2, 0, 1)
    q = swap_direction(p, axis=0)
    np.testing.assert_array_equal(q[1], p[2])
    np.testing.assert_array_equal(swap_direction(q, axis=0), p)
    t = torch.from_numpy(p[None])
    assert torch.equal(swap_direction(t), torch.from_numpy(q[None]))
    # chain: present at t (first link says disappearing), absent at t+k... per pixel
    first = np.eye(4, dtype=np.float32)[[2, 0, 3, 1]].T[:, None, :]  # classes 2,0,3,1 at 4 pixels
    last = np.eye(4, dtype=np.float32)[[0, 1, 1, 3]].T[:, None, :]
    c = chain_probabilities(first, last)
    np.testing.assert_allclose(c.sum(0), 1.0)
    # presence at t: [1, 0, 1, 0]; presence at t+k: [0, 1, 1, 1] -> classes 2, 1, 3, 1
    assert c.argmax(0).ravel().tolist() == [2, 1, 3, 1]


# -- data, training, fusion ----------------------------------------------------------------------------
def test_open_pairs_layout_and_chain(pairs, tmp_path):
    with open_pairs(pairs["train"]) as src:
        assert src.targets == ("a1", "a2") and src.n == 6 * 10  # per sequence: 3 + 2 forward, 3 + 2 backward
        a, b = src.frames(1)
        assert a.shape == b.shape == (64, 64) and a.dtype == np.float32
        assert set(src.maps(0)) == {"a1", "a2"} and src.maps(0)["a1"].max() <= 3
        for p, (i, j) in enumerate(src.index):
            if j - i == 2:
                assert src.chain(p) == [i, i + 1, i + 2]
            if i - j == 2:  # backward pair: the chain runs back in time
                assert src.chain(p) == [i, i - 1, i - 2]
        # the generator's class ids are ours: 1 appearing, 2 disappearing, 3 present in both
        assert change_map(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])).tolist() == [0, 1, 2, 3]
    path = tmp_path / "no_pairs.h5"
    with DatasetWriter(path, kind="filament") as w:
        w.append(np.zeros((16, 16), np.float32))
    with pytest.raises(DataError, match="pairs/index"):
        open_pairs(path)
    bad = tmp_path / "bad_index.h5"
    with DatasetWriter(bad, kind="filament") as w:
        w.append(np.zeros((16, 16), np.float32))
        w.create_array("pairs/index", np.array([[0, 5]]))
    with pytest.raises(DataError, match="outside"):
        open_pairs(bad)


def test_pairs_read_frames_through_an_open_source(pairs, tmp_path):
    from simgen.datasets.sources import open_source

    with open_source(pairs["train"]) as frames:
        with open_pairs(frames) as src:
            assert src.source.dataset is frames.dataset and src.n_frames == len(frames)
            a, _ = src.frames(0)
            np.testing.assert_array_equal(a, frames.image(int(src.index[0, 0])))
        assert frames.image(0).shape == (64, 64)  # open_pairs did not close the caller's source
    folder = tmp_path / "frames"
    folder.mkdir()
    from simgen.datasets.imageio import write_image

    write_image(folder / "a.png", np.zeros((8, 8), np.float32))
    with pytest.raises(DataError, match="pairs/index"):  # frames without pairs: one-line error
        open_pairs(folder)
    with pytest.raises(DataError, match="does not exist"):
        open_pairs(tmp_path / "missing.h5")


def test_learns_toy_change_task(pairs, trained):
    res, out = trained
    hist = res["history"]
    assert hist[-1]["loss"] < 0.6 * hist[0]["loss"]
    # chance: "no change" everywhere scores Dice 0 on the three change classes; the untrained net ~0.02
    assert res["monitor"] == "val_dice" and res["best"]["val_dice"] > max(0.25, 4 * hist[0]["val_dice"])
    scores = evaluate_deltanet(out / "best.pt", pairs["val"])
    assert set(scores["fusion"]) == {"forward", "backward", "consecutive", "ensemble"}
    a1 = scores[(scores["target"] == "a1") & (scores["class"] > 0)].set_index(["fusion", "class"])["dice"]
    assert a1["ensemble", 3] > 0.6  # present in both frames
    assert a1["ensemble", 1] > 0.2 and a1["ensemble", 2] > 0.2, a1.to_dict()  # appearing, disappearing
    mean = a1.groupby(level="fusion").mean()
    assert mean["ensemble"] >= min(mean["forward"], mean["backward"]) - 0.02, mean.to_dict()


def test_resume_after_kill_matches_uninterrupted(pairs, tmp_path):
    cfg = get_config("tiny", reverse=0.5)
    full = train_deltanet(pairs["val"], tmp_path / "a", val=pairs["val"], config=cfg, epochs=2)
    train_deltanet(pairs["val"], tmp_path / "b", val=pairs["val"], config=cfg, epochs=2, stop_after=1)
    resumed = train_deltanet(pairs["val"], tmp_path / "b", val=pairs["val"], config=cfg, epochs=2, resume=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["model_type"] == "deltanet" and a["targets"] == ["a1", "a2"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert full["history"] == resumed["history"]


def test_baseline_unet_trains(pairs, tmp_path):
    res = train_deltanet(pairs["val"], tmp_path / "u", config=get_config("tiny", arch="unet", crop=32), epochs=2)
    assert res["epochs_run"] == 2 and np.isfinite(res["history"][-1]["loss"])


def test_fusion_and_predict_file(pairs, trained, tmp_path):
    _, out = trained
    from simgen.train.changedet.predict import load_deltanet

    model, cfg, _ = load_deltanet(out / "best.pt")
    with open_pairs(pairs["val"]) as src:
        p2 = next(p for p, (i, j) in enumerate(src.index) if j - i == 2)
        frames = [src.frame(i) for i in src.chain(p2)]
    assert len(frames) == 3
    fused = fuse_pair(model, frames, chain=True, depth=cfg.depth)
    assert set(fused) == {"forward", "backward", "consecutive", "ensemble"}
    ens = np.mean([fused[m]["a1"] for m in ("forward", "backward", "consecutive")], axis=0)
    np.testing.assert_allclose(fused["ensemble"]["a1"], ens, rtol=1e-6)
    assert set(fuse_pair(model, [frames[0], frames[-1]], depth=cfg.depth)) == {"forward", "backward", "ensemble"}
    with pytest.raises(ParameterError):
        fuse_pair(model, frames, modes=("sideways",))

    pred = tmp_path / "pred.h5"
    predict_deltanet(out / "best.pt", pairs["val"], pred)
    with open_dataset(pred) as p, open_pairs(pairs["val"]) as src, open_dataset(pairs["val"]) as ds:
        assert p.kind == "predictions" and p.attrs["model_type"] == "deltanet" and p.attrs["fusion"] == "ensemble"
        np.testing.assert_array_equal(p.array("pairs/index"), src.index)
        np.testing.assert_array_equal(p.array("pairs/direction"), ds.array("pairs/direction"))
        assert p.array("pairs/change_a1").shape == (src.n, 64, 64) and p.array("pairs/change_a1").max() <= 3
        np.testing.assert_array_equal(p.array("pairs/change_a2"), p.array("pairs/fusion/ensemble/change_a2"))
        for m in ("forward", "backward", "consecutive"):
            assert p.has(f"pairs/fusion/{m}/change_a1")
        # the ensemble file agrees with fuse_pair on the gap-2 pair
        np.testing.assert_array_equal(p.array("pairs/change_a1")[p2], fused["ensemble"]["a1"].argmax(0))
    before = pred.read_bytes()
    with pytest.raises(ParameterError):
        predict_deltanet(out / "best.pt", pairs["val"], pred)
    with pytest.raises(ParameterError):
        predict_deltanet(out / "best.pt", pairs["val"], tmp_path / "x.h5", fusion="median")
    assert pred.read_bytes() == before and not (tmp_path / "x.h5").exists()


# -- CLI --------------------------------------------------------------------------------------------------

def test_cli_train_predict(pairs, tmp_path):
    out = tmp_path / "run"
    res = run("train", "deltanet", "--data", pairs["val"], "--val", pairs["val"], "--config", "tiny", "--epochs", 1,
              "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    assert "val mean change Dice [ensemble]" in res.output and (out / "val_scores.csv").exists()
    res = run("predict", out / "best.pt", pairs["val"], "-o", tmp_path / "p.h5", "--fusion", "forward")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "p.h5") as p:
        assert p.attrs["fusion"] == "forward"


@pytest.mark.parametrize(
    "args",
    [
        ["--crop", "60"],
        ["--crop", "128"],  # larger than the 64² frames
        ["--arch", "vit"],
        ["--gamma", "-1"],
        ["--alpha", "1,2"],
        ["--alpha", "heavy"],
        ["--data", "missing.h5"],
    ],
)
def test_cli_bad_input(pairs, tmp_path, args):
    argv = ["train", "deltanet", "--config", "tiny", "--epochs", "1", "--no-progress", "-o", str(tmp_path / "r")]
    if "--data" not in args:
        argv += ["--data", str(pairs["val"])]
    res = run(*argv, *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert not (tmp_path / "r").exists()


def test_cli_trains_the_study_network(pairs, tmp_path):
    """--arch mtdn (the study's shared-U-Net network) trains and predicts through the ordinary commands."""
    out = tmp_path / "mtdn"
    res = run("train", "deltanet", "--data", pairs["val"], "--config", "tiny", "--arch", "mtdn", "--epochs", 1,
              "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    from simgen.runtime import load_checkpoint

    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["config"]["arch"] == "mtdn"
    res = run("predict", out / "best.pt", pairs["val"], "-o", tmp_path / "p.h5")
    assert res.exit_code == 0, res.output
