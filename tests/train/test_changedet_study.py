"""MultiTaskDeltaNet as in the study: the network, single-frame U-Net baseline, init from it, linear lr decay,
blur/brightness augmentation, single-task heads, sequence scoring, and the leave-one-diameter-out study command."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from clitools import assert_one_line_error, run

from simgen.datasets.h5io import open_dataset
from simgen.datasets.video_io import write_filament
from simgen.errors import DataError, ParameterError
from simgen.experiments.changedet_study import StudyConfig, parse_variant
from simgen.simulate.filament import FilamentConfig, FilamentSampler
from simgen.train.changedet.config import PRESETS, get_config
from simgen.train.changedet.data import _PairSamples, open_pairs, photometric
from simgen.train.changedet.model import MTDN, SegUNet, build_deltanet, init_from_segmenter
from simgen.train.changedet.recover import evaluate_changedet, evaluate_segmenter
from simgen.train.changedet.segment import load_segmenter, train_segmenter
from simgen.train.changedet.trainer import make_scheduler, train_deltanet

TINY = dict(width=4, depth=2, crop=32, batch_size=4, steps_per_epoch=2, epochs=1)


@pytest.fixture(scope="module")
def allpairs(tmp_path_factory):
    """All-pairs file: 3 sequences x 4 frames of one 8 px wide target filament, 32² px."""
    cfg = FilamentConfig(size=32, frames=4, pairing=("all",), mask_others=True, diameter=8.0, n_filaments=(1, 2),
                         radius=(1.5, 3.0), rate=4.0, thinning=0.4, core_growth=0.5)
    path, n = write_filament(tmp_path_factory.mktemp("allpairs") / "pairs.h5", FilamentSampler(cfg, seed=1), 3)
    assert n == 3 * 6
    return path


@pytest.fixture(scope="module")
def segrun(allpairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "run"
    cfg = get_config("study", **{**TINY, "width": 8, "epochs": 8, "steps_per_epoch": 4, "lr": 3e-3})
    return train_segmenter(allpairs, out, val=allpairs, config=cfg), out


def test_study_preset_and_mtdn_network():
    study = PRESETS["study"]
    assert (study.arch, study.crop, study.batch_size, study.lr, study.schedule, study.width) == \
        ("mtdn", 256, 16, 9.5e-4, "linear", 32)
    assert study.blur > 0 and study.brightness > 0 and study.augment and study.gamma == 2.0
    torch.manual_seed(0)
    model = build_deltanet(get_config("study", width=4, depth=2))
    assert isinstance(model, MTDN) and len(model.heads) == 2
    assert model.heads[0][0].in_channels == 2 * 4  # the two final feature maps, concatenated
    assert not any(n.startswith("encoder") for n, _ in model.named_parameters())  # one U-Net, shared
    model.eval()
    a, b = torch.rand(2, 1, 16, 20), torch.rand(2, 1, 16, 20)
    with torch.no_grad():
        out, rev = model(a, b), model(b, a)
    assert set(out) == {"a1", "a2"} and all(v.shape == (2, 4, 16, 20) for v in out.values())
    assert not torch.allclose(out["a1"], rev["a1"])  # concatenation order makes it order-aware
    single = build_deltanet(get_config("study", width=4, depth=2, tasks=("a2",)), targets=("a2",))
    assert len(single.heads) == 1
    seg = build_deltanet(get_config("study", arch="segunet", width=4, depth=2))
    assert isinstance(seg, SegUNet) and seg(torch.rand(1, 1, 16, 16))["a1"].shape == (1, 2, 16, 16)
    for bad in (dict(schedule="cosine"), dict(blur=2.0), dict(brightness=1.0), dict(init="x.pt", arch="siamese"),
                dict(tasks=("a1", "a1"))):
        with pytest.raises(ParameterError):
            get_config("study", **bad)


def test_linear_lr_decay():
    cfg = get_config("study", epochs=2)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([w], lr=cfg.lr)
    sched = make_scheduler(opt, cfg, steps_per_epoch=3)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, [9.5e-4 * (1 - k / 6) for k in range(6)], rtol=1e-6)
    assert make_scheduler(opt, get_config("full"), 3) is None


def test_blur_and_brightness_augmentation():
    rng = np.random.default_rng(0)
    a = (rng.random((32, 32)) > 0.5).astype(np.float32)
    b = a.copy()
    state = rng.bit_generator.state
    same = photometric((a, b), rng)
    assert rng.bit_generator.state == state and np.array_equal(same[0], a)  # off: no draw, no change
    blurred = photometric((a, b), np.random.default_rng(1), blur=1.0)
    assert np.abs(np.diff(blurred[0], axis=1)).mean() < 0.6 * np.abs(np.diff(a, axis=1)).mean()
    np.testing.assert_allclose(blurred[0], blurred[1])  # one sigma for both frames
    bright = photometric((a, b), np.random.default_rng(2), brightness=0.3)
    assert not np.allclose(bright[0], bright[1])  # drawn per frame
    assert all(f.min() >= 0 and f.max() <= 1 for f in bright)


def test_pairs_from_per_frame_masks(allpairs):
    with open_pairs(allpairs) as src:
        samples = _PairSamples(src, 32, 2, train=True)
        for p in range(src.n):  # derived on demand, equal to the stored maps
            stored = src.maps(p)
            assert all(np.array_equal(samples.maps[p][t], stored[t]) for t in ("a1", "a2"))
        only = _PairSamples(src, 32, 2, train=True, tasks=("a2",))
        assert only.targets == ("a2",) and set(only.maps[0]) == {"a2"}
        with pytest.raises(DataError, match="a3"):
            _PairSamples(src, 32, 2, train=True, tasks=("a3",))


def test_single_frame_unet_learns_and_scores(allpairs, segrun):
    res, out = segrun
    hist = res["history"]
    assert res["n_train"] == 12 and hist[-1]["loss"] < 0.7 * hist[0]["loss"]
    assert hist[-1]["lr"] < hist[0]["lr"]  # linear decay
    model, cfg, targets = load_segmenter(out / "best.pt")
    assert cfg.arch == "segunet" and targets == ("a1", "a2")
    scores = evaluate_segmenter(out / "best.pt", allpairs)
    table = pd.DataFrame(scores.mask_table()).set_index("task")
    assert set(table["method"]) == {"direct"} and len(scores.frames) == 12 * 2
    assert table.loc["a1", "f1_macro"] > 0.6, table  # well above an empty prediction (~0.45)
    with pytest.raises(ParameterError):
        train_deltanet(allpairs, out.parent / "wrong", config=get_config("study", arch="segunet", **TINY))


def test_mtdn_from_the_unet_single_task_and_recovery(allpairs, segrun, tmp_path):
    _, seg = segrun
    seg_state = torch.load(seg / "best.pt", weights_only=True)["state_dict"]
    model = build_deltanet(get_config("study", width=8, depth=2))
    assert init_from_segmenter(model, seg_state) == len(model.body.state_dict())
    for k, v in model.body.state_dict().items():
        assert torch.equal(v, seg_state[f"body.{k}"]), k
    with pytest.raises(ParameterError, match="layout"):
        init_from_segmenter(build_deltanet(get_config("study", width=4, depth=2)), seg_state)
    with pytest.raises(ParameterError, match="width/depth/norm"):  # refused before the run folder exists
        train_deltanet(allpairs, tmp_path / "bad", config=get_config("study", **TINY, init=str(seg / "best.pt")))
    assert not (tmp_path / "bad").exists()

    tiny8 = {**TINY, "width": 8}
    cfg = get_config("study", **tiny8, tasks=("a2",), init=str(seg / "best.pt"))
    res = train_deltanet(allpairs, tmp_path / "a2", val=allpairs, config=cfg)
    scratch = train_deltanet(allpairs, tmp_path / "a2s", val=allpairs, config=get_config("study", **tiny8,
                                                                                          tasks=("a2",)))
    assert res["history"][0]["loss"] != scratch["history"][0]["loss"]
    ck = torch.load(tmp_path / "a2" / "best.pt", weights_only=True)
    assert ck["targets"] == ["a2"] and ck["config"]["init"].endswith("best.pt")
    scores = evaluate_changedet(tmp_path / "a2" / "best.pt", allpairs)
    assert set(scores.change) == {"a2"} and scores.change["a2"].sum() == 18 * 32 * 32  # every stored pair
    methods = {m for m, _ in scores.masks}
    assert methods == {"forward", "backward", "consecutive", "ensemble"}
    for (_, t), cm in scores.masks.items():
        assert t == "a2" and cm.sum() == 12 * 32 * 32  # every frame, once per method
    with pytest.raises(DataError, match="sequence"):  # a file without sequences cannot be recovered
        from simgen.train.changedet.recover import sequences_of

        class NoSeq:
            sequence = None
            path = "x.h5"

        sequences_of(NoSeq())


def test_mtdn_learns_changes_and_recovers_masks(allpairs, tmp_path):
    cfg = get_config("study", **{**TINY, "width": 8, "epochs": 8, "steps_per_epoch": 4, "lr": 3e-3})
    res = train_deltanet(allpairs, tmp_path / "m", config=cfg)
    assert res["history"][-1]["loss"] < 0.7 * res["history"][0]["loss"]
    scores = evaluate_changedet(tmp_path / "m" / "last.pt", allpairs)
    change = pd.DataFrame(scores.change_table()).set_index("task")
    masks = pd.DataFrame(scores.mask_table()).set_index(["method", "task"])
    # untrained: ~0.0-0.1 change macro-F1 (one class everywhere), ~0.45 mask macro-F1 (empty masks)
    assert change.loc["a1", "f1_macro"] > 0.45, change
    assert masks.loc[("ensemble", "a1"), "f1_macro"] > 0.65, masks
    assert masks.loc[("ensemble", "a2"), "f1_macro"] > 0.6, masks
    # the MTDN checkpoint goes through `simgen predict` like the other change detectors
    res = run("predict", tmp_path / "m" / "last.pt", allpairs, "--fusion", "forward", "-o", tmp_path / "pred.h5")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "pred.h5") as pred:
        assert pred.array("pairs/change_a1").shape == (18, 32, 32) and pred.attrs["fusion"] == "forward"


def test_segmenter_resume_matches_uninterrupted(allpairs, tmp_path):
    cfg = get_config("study", **{**TINY, "epochs": 2})
    full = train_segmenter(allpairs, tmp_path / "a", config=cfg)
    train_segmenter(allpairs, tmp_path / "b", config=cfg, stop_after=1)
    resumed = train_segmenter(allpairs, tmp_path / "b", config=cfg, resume=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert full["history"] == resumed["history"]


def test_variants_and_study_config():
    assert parse_variant("MTDN-a2-pre") == {"name": "mtdn-a2-pre", "model": "mtdn", "tasks": ("a2",),
                                            "init": "pretrained", "budget": 1}
    assert parse_variant("unet")["tasks"] == ("a1", "a2") and parse_variant("unet")["budget"] == 1
    assert parse_variant("unet-x2") == {"name": "unet-x2", "model": "unet", "tasks": ("a1", "a2"), "init": "scratch",
                                        "budget": 2}
    assert parse_variant("mtdn-a1-pre-x3")["budget"] == 3
    for bad in ("unet-pre", "mtdn-a3", "vit", "mtdn-pre-a1", "unet-x1", "unet-x11", "unet-x2-pre", "unet-xx"):
        with pytest.raises(ParameterError):
            parse_variant(bad)
    c = StudyConfig(scale="tiny", variants=("mtdn-pre",)).resolved()
    assert c.variants == ("unet", "mtdn-pre") and c.diameters == (6.0, 8.0) and c.epochs == 1
    for bad in (dict(diameters=(6,)), dict(diameters=(6, 40)), dict(methods=("median",)), dict(scale="huge"),
                dict(variants=("mtdn", "mtdn"))):
        with pytest.raises(ParameterError):
            StudyConfig(**{"scale": "tiny", **bad}).resolved()


def test_study_command_tiny(tmp_path):
    out = tmp_path / "study"
    res = run("changedet", "study", "--scale", "tiny", "--variants", "unet,mtdn-pre,mtdn-a2", "--no-progress",
              "-o", out)
    assert res.exit_code == 0, res.output
    assert "A2 macro-F1: mtdn-pre" in res.output and "target" in res.output
    report = (out / "report.md").read_text()
    for heading in ("## Segmentation of every test frame", "## Change maps of the test pairs",
                    "## Leave-one-diameter-out", "## Target", "## A2 change classes of mtdn-pre", "## Time"):
        assert heading in report, heading
    results = pd.read_csv(out / "results.csv")
    assert set(results["held_out"]) == {6.0, 8.0}
    assert set(results["variant"]) == {"unet", "mtdn-pre", "mtdn-a2"}
    mask = results[results["kind"] == "mask"]
    assert set(mask[mask["variant"] == "mtdn-pre"]["method"]) == {"forward", "backward", "consecutive", "ensemble"}
    assert set(mask[mask["variant"] == "mtdn-a2"]["task"]) == {"a2"}
    assert set(results[results["kind"] == "change"]["variant"]) == {"mtdn-pre", "mtdn-a2"}
    with open(out / "fold_d6" / "mtdn-pre" / "config.json") as f:
        assert json.load(f)["config"]["init"].endswith("fold_d6/unet/best.pt")
    assert (out / "examples.png").stat().st_size > 1000 and "![examples](examples.png)" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["mtdn"] == "mtdn-pre" and len(summary["timing"]) == 6
    # resume keeps the finished runs (no retraining) and rewrites the same tables
    stamp = (out / "fold_d8" / "unet" / "scores.json").stat().st_mtime_ns
    res = run("changedet", "study", "--scale", "tiny", "--variants", "unet,mtdn-pre,mtdn-a2", "--no-progress",
              "--resume", "-o", out)
    assert res.exit_code == 0, res.output
    assert (out / "fold_d8" / "unet" / "scores.json").stat().st_mtime_ns == stamp
    assert pd.read_csv(out / "results.csv").equals(results)
    # the equal-budget U-Net added later: twice the epochs, and the verdict for mtdn-pre uses it
    res = run("changedet", "study", "--scale", "tiny", "--variants", "unet,unet-x2,mtdn-pre,mtdn-a2", "--no-progress",
              "--resume", "-o", out)
    assert res.exit_code == 0, res.output
    assert "equal budget (unet-x2)" in res.output
    with open(out / "fold_d6" / "unet-x2" / "config.json") as f:
        assert json.load(f)["config"]["epochs"] == 2 * StudyConfig(scale="tiny").resolved().epochs
    summary = json.loads((out / "summary.json").read_text())["target"]
    x2 = pd.read_csv(out / "results.csv")
    x2 = x2[(x2["variant"] == "unet-x2") & (x2["kind"] == "mask") & (x2["task"] == "a2")]["f1_macro"].mean()
    assert summary["baseline"] == "unet-x2" and summary["equal_budget_unet_a2"] == pytest.approx(x2)
    assert summary["met"] == summary["equal_budget_met"]
    report = (out / "report.md").read_text()
    assert "U-Net (single frame), 2x epochs" in report and "as many steps as mtdn-pre had in all" in report
    # a later --resume may add or leave out variants (own rows on the same data and folds): no retraining
    res = run("changedet", "study", "--scale", "tiny", "--variants", "unet,mtdn-a2", "--no-progress", "--resume",
              "-o", out)
    assert res.exit_code == 0, res.output
    assert (out / "fold_d8" / "unet" / "scores.json").stat().st_mtime_ns == stamp
    assert set(pd.read_csv(out / "results.csv")["variant"]) == {"unet", "mtdn-a2"}
    assert_one_line_error(run("changedet", "study", "--scale", "tiny", "-o", out), "exists")
    assert_one_line_error(run("changedet", "study", "--scale", "tiny", "--seed", "3", "--resume", "-o", out),
                          "other settings")
    assert_one_line_error(run("changedet", "study", "--scale", "tiny", "--variants", "vit", "-o", tmp_path / "v"),
                          "vit")
    assert_one_line_error(run("changedet", "study", "--scale", "tiny", "--diameters", "6", "-o", tmp_path / "d"),
                          "2 distinct diameters")
    assert not (tmp_path / "v").exists() and not (tmp_path / "d").exists()
