"""Mask-conditioned LDM: configs, masks, model shapes, training, conditioning, determinism, resume, CLI.

One small model is trained once per module (dark discs on grey noise, a reduced
architecture — see ``micro_config``) and shared by the tests that need a trained
generator.  The tiny preset's own conditioning check on the same toy set is the
documented long command ``python benchmarks/ldm.py --check`` (see docs/ldm.md).
"""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from simgen.augment.ldm import (
    LDMConfig,
    MaskLDM,
    MaskStatistics,
    class_map_from_instances,
    instance_classes_from_map,
    instance_properties,
    load_ldm,
    one_hot_masks,
    toy_pairs,
)
from simgen.augment.ldm.masks import mask_source_from_spec, tem_mask_source
from simgen.augment.ldm.quality import conditioning_contrast, quality_report
from simgen.cli import main
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.ldm_io import boxes_from_mask, read_pairs
from simgen.errors import DataError, ParameterError
from simgen.train.ldm import train_ldm


def micro_config(**kw) -> LDMConfig:
    """The tiny preset shrunk to 32² crops and narrow networks: trains in well under a minute."""
    base = {"crop_size": 32, "vae_channels": (8, 16, 16), "unet_channels": (16, 32), "unet_attention_levels": 0,
            "mask_channels": 4, "batch_size": 8, "warmup": 20, "vae_lr": 2e-3, "unet_lr": 1e-3,
            "latent_stat_crops": 32, "vae_steps": 250, "unet_steps": 300, "sample_steps": 20, "guidance": 1.0,
            "log_every": 50, "checkpoint_every": 1000, **kw}
    return LDMConfig.preset("tiny", **base)


@pytest.fixture(scope="module")
def toy():
    return toy_pairs(24, 64, seed=0, noise=0.02)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy):
    run = tmp_path_factory.mktemp("ldm") / "run"
    summary = train_ldm(toy, micro_config(), run, seed=0)
    return run, summary


# -- config ---------------------------------------------------------------------
def test_presets_validate_and_derived_sizes():
    tiny, full = LDMConfig.preset("tiny"), LDMConfig.preset("full")
    assert tiny.validate() is tiny and full.validate() is full
    assert tiny.crop_size == 64 and tiny.downsample == 4 and tiny.latent_size == 16
    assert full.crop_size == 256 and full.latent_size == 64
    assert LDMConfig.from_dict(tiny.to_dict()) == tiny


def test_max_steps_splits_phases():
    tiny = LDMConfig.preset("tiny")
    cfg = tiny.with_max_steps(40)
    assert cfg.vae_steps + cfg.unet_steps == 40 and cfg.vae_steps == round(40 * tiny.vae_steps / tiny.total_steps)
    cfg = LDMConfig.preset("tiny").with_max_steps(2)
    assert (cfg.vae_steps, cfg.unet_steps) == (1, 1)
    with pytest.raises(ParameterError):
        LDMConfig.preset("tiny").with_max_steps(1)


@pytest.mark.parametrize("changes, match", [
    ({"crop_size": 60}, "multiple"),
    ({"scheduler": "euler"}, "scheduler"),
    ({"vae_channels": (10, 22)}, "GroupNorm"),
    ({"cfg_dropout": 0.0}, "guidance"),
    ({"unet_attention_levels": 5}, "attention"),
])
def test_bad_configs_rejected(changes, match):
    with pytest.raises(ParameterError, match=match):
        LDMConfig.preset("tiny", **changes).validate()
    with pytest.raises(ParameterError, match="unknown"):
        LDMConfig.preset("tiny", colour=3)
    with pytest.raises(ParameterError, match="unknown LDM config"):
        LDMConfig.preset("huge")


# -- masks ------------------------------------------------------------------------
def test_class_maps_and_instance_classes_roundtrip():
    inst = np.zeros((10, 12), np.uint16)
    inst[1:3, 1:4] = 1
    inst[5:9, 6:11] = 2
    inst[0, 11] = 3
    cmap = class_map_from_instances(inst, [1, 0, 2])
    assert cmap[1, 1] == 2 and cmap[6, 7] == 1 and cmap[0, 11] == 3 and cmap[4, 4] == 0
    np.testing.assert_array_equal(instance_classes_from_map(inst, cmap), [1, 0, 2])
    props = instance_properties(inst, [1, 0, 2])
    np.testing.assert_array_equal(props["area"], [6, 20, 1])
    np.testing.assert_array_equal(np.c_[props["x0"], props["y0"], props["x1"], props["y1"]],
                                  [[1, 1, 4, 3], [6, 5, 11, 9], [11, 0, 12, 1]])
    assert list(props["touches_border"]) == [False, False, True]


def test_mask_statistics_fit_sample_roundtrip(toy):
    stats = MaskStatistics.fit(toy.instance_masks, toy.class_maps, 1)
    assert stats.n_shapes > 50 and stats.summary()["defects_per_1000px"] > 0
    again = MaskStatistics.from_state(stats.to_state())
    a = stats.sample(np.random.default_rng(3), (64, 64))
    b = again.sample(np.random.default_rng(3), (64, 64))
    np.testing.assert_array_equal(a[0], b[0])
    counts, areas = [], []
    real_areas = np.concatenate([instance_properties(m)["area"] for m in toy.instance_masks])
    for k in range(40):
        inst, cls = stats.sample(np.random.default_rng(k), (64, 64))
        assert inst.dtype == np.uint16 and len(cls) == inst.max() and np.all(cls == 0)
        props = instance_properties(inst)
        counts.append(len(props["area"]))
        areas.extend(props["area"][~props["touches_border"]].tolist())
        # defects keep a background gap: no two labels touch (4-neighbourhood)
        for dy, dx in ((0, 1), (1, 0)):
            p, q = inst[: 64 - dy, : 64 - dx], inst[dy:, dx:]
            assert not np.any((p > 0) & (q > 0) & (p != q))
    real_counts = [m.max() for m in toy.instance_masks]
    assert abs(np.mean(counts) - np.mean(real_counts)) < 2.0
    assert abs(np.median(areas) - np.median(real_areas)) / np.median(real_areas) < 0.35


def test_tem_mask_source_and_spec(toy):
    src = tem_mask_source("ti", scale=0.25, n_classes=1)
    inst, cls = src.sample(np.random.default_rng(0), (64, 64))
    assert inst.shape == (64, 64) and len(cls) == inst.max() and np.all(cls == 0)
    stats = MaskStatistics.fit(toy.instance_masks, toy.class_maps, 1)
    assert mask_source_from_spec("learned", stats, 1) is stats
    for bad in ("gan", "tem:ti:x", "tem:nope"):
        with pytest.raises(ParameterError):
            mask_source_from_spec(bad, stats, 1)


# -- model --------------------------------------------------------------------------
def test_model_shapes_and_one_hot():
    torch.manual_seed(0)
    cfg = LDMConfig.preset("tiny")
    model = MaskLDM(cfg, n_classes=2).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, 4, 16, 16)
        assert model.decode(z).shape == (2, 1, 64, 64)
        maps = torch.randint(0, 3, (2, 64, 64))
        hot = one_hot_masks(maps, 2)
        assert hot.shape == (2, 3, 64, 64) and torch.all(hot.sum(1) == 1)
        feats = model.denoiser.encode_mask(hot)
        assert feats.shape == (2, cfg.mask_channels, 16, 16)
        eps = model.denoiser(z, torch.tensor([10, 500]), feats)
        assert eps.shape == z.shape
        out = model.generate(maps, torch.randn(2, 4, 16, 16), steps=2, guidance=2.0)
        assert out.shape == (2, 64, 64) and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ParameterError):
        one_hot_masks(torch.full((1, 4, 4), 3), 2)
    with pytest.raises(ParameterError, match="multiples"):
        model.generate(torch.zeros(1, 60, 60, dtype=torch.long), torch.randn(1, 4, 15, 15))


# -- training and sampling -------------------------------------------------------------
def test_vae_beats_constant_and_checkpoint(trained):
    run, summary = trained
    vae = summary["vae"]
    assert vae["recon_mae"] < 0.7 * vae["constant_mae"], vae
    assert (run / "last.pt").exists() and json.loads((run / "config.json").read_text())["seed"] == 0
    assert summary["steps"] == {"vae": 250, "unet": 300}


def test_conditioning_puts_dark_defects_where_the_mask_says(trained):
    run, _ = trained
    model = load_ldm(run, device="cpu")
    # 64² (trained on 32² crops: the networks are convolutional) so that every image holds several discs
    samples = list(model.sample(12, seed=1, size=64, batch_size=12))
    c = conditioning_contrast([s["image"] for s in samples], [s["class_map"] for s in samples])
    # toy: discs at 0.2 on a 0.6 background; a working model is clearly darker inside the masks
    # (measured over 3 training seeds: contrast 0.20-0.32, every image darker inside)
    assert c["n"] >= 10 and c["fraction_darker"] >= 0.8 and c["contrast"] > 0.12, c
    # same noise, empty mask: no dark disc there (measured difference 0.13-0.15)
    maps = np.stack([s["class_map"] for s in samples[:4]])
    cond = model.generate_images(maps, range(4), seed=1)
    empty = model.generate_images(np.zeros_like(maps), range(4), seed=1)
    fg = maps > 0
    assert cond[fg].mean() < empty[fg].mean() - 0.06


def test_sampling_is_deterministic_and_batch_independent(trained):
    run, _ = trained
    model = load_ldm(run, device="cpu")
    a = list(model.sample(3, seed=5, batch_size=3, steps=5))
    b = list(model.sample(3, seed=5, batch_size=1, steps=5))
    c = list(model.sample(1, seed=5, start=2, steps=5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["mask"], y["mask"])
        np.testing.assert_allclose(x["image"], y["image"], atol=2e-4)
    np.testing.assert_allclose(a[2]["image"], c[0]["image"], atol=2e-4)
    d = list(model.sample(1, seed=6, steps=5))
    assert not np.array_equal(a[0]["mask"], d[0]["mask"])
    dpm = list(model.sample(1, seed=5, steps=5, scheduler="dpm", guidance=1.5))
    assert dpm[0]["image"].shape == (32, 32) and dpm[0]["provenance"]["scheduler"] == "dpm"


def test_quality_report(trained, toy):
    run, _ = trained
    model = load_ldm(run, device="cpu")
    samples = list(model.sample(8, seed=2, size=64))
    from simgen.augment.ldm import TrainingPairs

    gen = TrainingPairs([s["image"] for s in samples], [s["class_map"] for s in samples],
                        [s["mask"] for s in samples], ["disc"])
    rep = quality_report(gen, toy)
    assert set(rep) >= {"masks", "realism", "conditioning"}
    disc = rep["masks"]["disc"]
    assert 0 <= disc["diameter"]["ks"] <= 1 and disc["density"]["generated"]["n"] == 8
    assert rep["realism"]["generated_vs_reference"]["psd"] >= 0
    assert rep["conditioning"]["reference"]["fraction_darker"] == 1.0


def test_resume_continues_exactly(tmp_path, toy):
    cfg = micro_config(vae_steps=2, unet_steps=4, checkpoint_every=2, latent_stat_crops=8)
    train_ldm(toy, cfg, tmp_path / "straight", seed=3)
    train_ldm(toy, cfg.replace(unet_steps=2), tmp_path / "split", seed=3)
    with pytest.raises(ParameterError, match="--resume"):
        train_ldm(toy, cfg, tmp_path / "split", seed=3)
    res = train_ldm(toy, cfg, tmp_path / "split", seed=3, resume=True)
    assert res["resumed_from"] == {"vae": 2, "unet": 2} and res["steps"] == {"vae": 2, "unet": 4}
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(ParameterError, match="architecture"):
        train_ldm(toy, cfg.replace(mask_channels=8), tmp_path / "split", seed=3, resume=True)


def test_full_config_runs_two_steps_on_cpu(tmp_path):
    pairs = toy_pairs(2, 256, seed=1, count=(8, 12))
    cfg = LDMConfig.preset("full", batch_size=1, vae_batch_size=1, latent_stat_crops=2).with_max_steps(2)
    res = train_ldm(pairs, cfg, tmp_path / "full", seed=0, device="cpu")
    assert res["steps"] == {"vae": 1, "unet": 1}
    model = load_ldm(tmp_path / "full", device="cpu")
    (s,) = list(model.sample(1, seed=0, steps=2))
    assert s["image"].shape == (256, 256) and s["mask"].shape == (256, 256)


def test_training_input_errors(tmp_path, toy):
    small = toy_pairs(2, 24, seed=0)
    with pytest.raises(DataError, match="smaller"):
        train_ldm(small, micro_config(), tmp_path / "r")
    empty = toy_pairs(2, 64, seed=0, count=(0, 0))
    with pytest.raises(DataError, match="no defects"):
        train_ldm(empty, micro_config(), tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(DataError, match="no LDM checkpoint"):
        load_ldm(tmp_path)


# -- CLI --------------------------------------------------------------------------------
def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(res):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, toy):
    path = tmp_path_factory.mktemp("pairs") / "pairs.h5"
    with DatasetWriter(path, kind="toy", class_names=["disc"]) as w:
        for img, inst in zip(toy.images, toy.instance_masks):
            w.append(img, mask=inst, boxes=boxes_from_mask(inst))
    return path


def test_cli_train_sample_quality(tmp_path, pairs_file, trained):
    run = tmp_path / "run"
    res = run_cli("ldm", "train", "--data", pairs_file, "--config", "tiny", "--max-steps", 4, "--set", "batch_size=2",
                  "--set", "latent_stat_crops=4", "--no-progress", "-o", run)
    assert res.exit_code == 0, res.output
    assert "trained 1 VAE + 3 denoiser steps" in res.output
    out = tmp_path / "gen.h5"
    res = run_cli("ldm", "sample", trained[0], "--n", 3, "--steps", 3, "--seed", 4, "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.n == 3 and ds.kind == "ldm" and ds.image_shape == (32, 32) and ds.class_names == ["disc"]
        assert ds.attrs["seed"] == 4 and ds.attrs["generator"]["config"]["crop_size"] == 32
        assert ds.provenance(1)["index"] == 1 and ds.provenance(1)["steps"] == 3
        for i in range(3):
            boxes, mask = ds.rows("boxes", i), ds.mask(i)
            assert len(boxes) == mask.max() and list(boxes["instance"]) == list(range(1, len(boxes) + 1))
    pairs = read_pairs(out)
    assert len(pairs) == 3 and pairs.class_names == ["disc"]
    res = run_cli("ldm", "sample", trained[0], "--n", 2, "--steps", 2, "--size", 64, "--masks", "tem:ti:0.25",
                  "--no-progress", "-o", tmp_path / "gen_tem.h5")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "gen_tem.h5") as ds:
        assert ds.image_shape == (64, 64) and ds.provenance(0)["mask_source"]["source"] == "tem"
    res = run_cli("ldm", "quality", out, "--real", pairs_file, "-o", tmp_path / "q.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "q.json").read_text())["n_generated"] == 3


def test_cli_bad_inputs_exit_2(tmp_path, pairs_file, trained):
    no_masks = tmp_path / "nomask.h5"
    with DatasetWriter(no_masks, kind="t") as w:
        w.append(np.zeros((64, 64)))
    existing = tmp_path / "exists.h5"
    existing.write_bytes(b"keep")
    cases = [
        ["ldm", "train", "--data", tmp_path / "missing.h5", "-o", tmp_path / "r1"],
        ["ldm", "train", "--data", no_masks, "-o", tmp_path / "r2"],
        ["ldm", "train", "--data", pairs_file, "--config", "huge", "-o", tmp_path / "r3"],
        ["ldm", "train", "--data", pairs_file, "--set", "crop_size=50", "-o", tmp_path / "r4"],
        ["ldm", "train", "--data", pairs_file, "--set", "nonsense", "-o", tmp_path / "r5"],
        ["ldm", "train", "--data", pairs_file, "--max-steps", 1, "-o", tmp_path / "r6"],
        ["ldm", "train", "--data", pairs_file, "--config", "full", "-o", tmp_path / "r7"],  # 64² images < 256² crops
        ["ldm", "train", "--data", pairs_file, "-o", trained[0]],  # holds a run, no --resume
        ["ldm", "sample", tmp_path / "norun", "--n", 2, "-o", tmp_path / "g1.h5"],
        ["ldm", "sample", trained[0], "--n", 2, "--size", 30, "-o", tmp_path / "g2.h5"],
        ["ldm", "sample", trained[0], "--n", 2, "--masks", "gan", "-o", tmp_path / "g3.h5"],
        ["ldm", "sample", trained[0], "--n", 2, "-o", existing],
        ["ldm", "import-real", tmp_path / "nofolder", "-o", tmp_path / "p.h5"],
        ["ldm", "quality", tmp_path / "missing.h5", "--real", pairs_file],
        ["ldm", "fewshot", "--real", tmp_path / "nofolder", "-o", tmp_path / "s1"],
        ["ldm", "fewshot", "--real", tmp_path, "--shots", "10,a", "-o", tmp_path / "s2"],
        ["ldm", "fewshot", "--real", tmp_path, "--conditions", "real,gan", "-o", tmp_path / "s3"],
    ]
    for args in cases:
        _one_line_error(run_cli(*args))
    assert existing.read_bytes() == b"keep"
    for name in ("r1", "r2", "r3", "r4", "r5", "r6", "r7", "g1.h5", "g2.h5", "g3.h5", "p.h5", "s1", "s2", "s3"):
        assert not (tmp_path / name).exists(), name


# -- few-shot study (smoke) ------------------------------------------------------------------
def _disc_folder(root, n=4, size=64):
    from PIL import Image

    for sub in ("images", "labels", "masks"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("loop\n")
    pairs = toy_pairs(n, size, seed=7, noise=0.02)
    for k, (img, inst) in enumerate(zip(pairs.images, pairs.instance_masks)):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(root / "images" / f"f{k}.png")
        Image.fromarray(inst.astype(np.uint8)).save(root / "masks" / f"f{k}.png")
        b = boxes_from_mask(inst)
        lines = [f"0 {(r.x0 + r.x1) / 2 / size} {(r.y0 + r.y1) / 2 / size} {(r.x1 - r.x0) / size} {(r.y1 - r.y0) / size}"
                 for r in b.itertuples()]
        (root / "labels" / f"f{k}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_fewshot_smoke_holds_out_whole_images(tmp_path):
    from simgen.experiments.fewshot_ldm import FewShotConfig, run_fewshot

    folder = _disc_folder(tmp_path / "real")
    cfg = FewShotConfig(tile=32, scale=1.0, shots=(2,), n_splits=1, test_images=1, conditions=("real+ldm",),
                        n_extra=2, ldm_max_steps=2, ldm_overrides={"batch_size": 2, "latent_stat_crops": 2,
                                                                   "crop_size": 32, "unet_channels": [16, 32],
                                                                   "vae_channels": [8, 16, 16],
                                                                   "unet_attention_levels": 0},
                        ldm_sample_steps=2, train_iterations=2)
    out = tmp_path / "study"
    summary = run_fewshot(folder, out, cfg, device="cpu")
    (row,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert row["condition"] == "real+ldm" and row["k"] == 2 and row["n_train"] == 4 and 0 <= row["det_f1"] <= 1
    held = set(row["held_out"])
    with open_dataset(out / "split0" / "test.h5") as ds:
        assert {ds.provenance(i)["source_image"] for i in range(ds.n)} == held
    with open_dataset(out / "split0" / "k2" / "train_real_ldm.h5") as ds:
        origins = [ds.provenance(i) for i in range(ds.n)]
    assert sum(p["origin"] == "ldm" for p in origins) == 2
    assert not {p["source_image"] for p in origins if p["origin"] == "real"} & held
    ldm_source = json.loads((out / "split0" / "k2" / "ldm" / "config.json").read_text())["source"]
    with open_dataset(out / "real_tiles.h5") as ds:
        assert not {ds.provenance(i)["source_image"] for i in ldm_source["indices"]} & held
    assert summary["table"][0]["condition"] == "real+ldm" and (out / "results.md").exists()
    with pytest.raises(ParameterError, match="--resume"):
        run_fewshot(folder, out, cfg, device="cpu")
