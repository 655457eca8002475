"""SDEdit translation with the LDM, unlabelled real imports, and the label-visibility check.

The model is the micro config of ``test_ldm.py`` trained for a handful of steps: the
properties tested here (labels copied, strength 0 = VAE reconstruction, monotone
change with strength, seeding, padding of odd sizes) hold for any weights.
"""

import json

import numpy as np
import pytest
import torch
from augment.test_ldm import micro_config
from click.testing import CliRunner

from simgen.augment.ldm import load_ldm, toy_pairs
from simgen.augment.ldm.translate import start_step, translate
from simgen.augment.ldm.visibility import box_cnr, label_visibility, visibility_summary
from simgen.cli import main
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.ldm_io import boxes_from_mask, read_pairs
from simgen.errors import DataError, ParameterError
from simgen.train.ldm import train_ldm

FAST = {"vae_steps": 3, "unet_steps": 3, "latent_stat_crops": 4, "batch_size": 2, "vae_batch_size": 2, "warmup": 0}


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(res):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ldm") / "run"
    train_ldm(toy_pairs(4, 32, seed=0, noise=0.02), micro_config(**FAST), path, seed=0)
    return path


@pytest.fixture(scope="module")
def model(run):
    return load_ldm(run, device="cpu")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Two 40x36 'renders' (not multiples of the model's factor 8) with masks and boxes."""
    pairs = toy_pairs(2, 40, seed=3, noise=0.02, count=(3, 4))
    path = tmp_path_factory.mktemp("synth") / "renders.h5"
    with DatasetWriter(path, kind="tem", class_names=["disc"], generator={"function": "test"}) as w:
        for k, (img, inst) in enumerate(zip(pairs.images, pairs.instance_masks)):
            w.append(img[:, :36], mask=inst[:, :36], boxes=boxes_from_mask(inst[:, :36]),
                     provenance={"render": k})
    return path


def test_strength_zero_is_the_vae_reconstruction(model):
    imgs = np.stack(toy_pairs(2, 32, seed=5).images)
    out = translate(model, imgs, strength=0, texture_noise=False)
    with torch.no_grad():
        rec = model.model.decode(model.model.encode(torch.from_numpy(imgs[:, None])))[:, 0].numpy()
    np.testing.assert_allclose(out, rec, atol=1e-5)
    assert start_step(0.3, 25) == 8 and start_step(1.0, 25) == 25 and start_step(0.0, 25) == 0


def test_more_strength_changes_more_and_is_seeded(model):
    pairs = toy_pairs(2, 40, seed=5)
    imgs, maps = np.stack(pairs.images)[:, :, :36], np.stack(pairs.class_maps)[:, :, :36]
    base = translate(model, imgs, strength=0, steps=8, texture_noise=False)
    change = [np.abs(translate(model, imgs, maps, strength=s, steps=8, seed=1, texture_noise=False) - base).mean()
              for s in (0.25, 0.5, 1.0)]
    assert 0 < change[0] < change[1] < change[2], change
    a = translate(model, imgs, maps, strength=0.5, steps=8, seed=1)
    b = translate(model, imgs, maps, strength=0.5, steps=8, seed=1, batch_size=1)
    c = translate(model, imgs[1:], maps[1:], strength=0.5, steps=8, seed=1, start=1)
    assert a.shape == (2, 40, 36) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=2e-4)
    np.testing.assert_allclose(a[1], c[0], atol=2e-4)
    assert np.abs(a - translate(model, imgs, maps, strength=0.5, steps=8, seed=2)).max() > 1e-3
    none = translate(model, imgs, None, strength=0.5, steps=8, seed=1)  # null condition
    assert none.shape == a.shape and np.all((none >= 0) & (none <= 1))


def test_translate_bad_arguments(model):
    imgs = np.full((1, 32, 32), 0.5, np.float32)
    for kwargs, match in [({"strength": 1.5}, "strength"), ({"steps": 5000}, "steps"), ({"guidance": -1}, "guidance"),
                          ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ParameterError, match=match):
            translate(model, imgs, **kwargs)
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        translate(model, imgs * 3)
    with pytest.raises(ParameterError, match="class map"):
        translate(model, imgs, np.full((1, 32, 32), 2))
    with pytest.raises(ParameterError, match="shape"):
        translate(model, imgs, np.zeros((1, 16, 16), int))


def test_box_contrast_and_visibility():
    rng = np.random.default_rng(0)
    img = 0.6 + rng.normal(0, 0.02, (40, 40))
    img[10:16, 10:16] = 0.2
    boxes = np.array([[10, 10, 16, 16], [25, 25, 31, 31], [50, 50, 60, 60]], float)
    cnr = box_cnr(img, boxes)
    assert cnr[0] < -10 and abs(cnr[1]) < 0.5 and np.isnan(cnr[2])
    flat = 0.6 + rng.normal(0, 0.02, (40, 40))
    rep = label_visibility([img, img], [img, flat], [boxes, boxes])
    assert rep["n_labels"] == 6 and rep["visible_before"] == pytest.approx(2 / 6)
    assert rep["kept"] == 0.5 and rep["per_image"] == [[1, 1], [1, 0]]
    assert visibility_summary([-2.0, 1.0], [2.0, 1.0])["kept"] == 0.5  # a dark defect turned bright is lost
    with pytest.raises(ParameterError):
        visibility_summary([1.0], [1.0, 2.0])


def test_cli_translate_copies_labels_and_reports(tmp_path, run, synth):
    from PIL import Image

    real = tmp_path / "real"
    real.mkdir()
    for k, img in enumerate(toy_pairs(2, 48, seed=9).images):
        Image.fromarray((img * 255).astype(np.uint8)).save(real / f"r{k}.png")
    before = synth.read_bytes()
    out, rep = tmp_path / "t.h5", tmp_path / "t.json"
    res = run_cli("ldm", "translate", run, synth, "-o", out, "--strength", 0.5, "--steps", 4, "--seed", 3,
                  "--real", real, "--report", rep, "--no-progress")
    assert res.exit_code == 0, res.output
    assert synth.read_bytes() == before
    report = json.loads(rep.read_text())
    assert report["condition"] == "mask" and report["steps_run"] == 2 and report["n"] == 2
    assert report["labels"]["n_labels"] >= 6 and report["labels"]["visible_before"] == 1.0
    assert 0 <= report["labels"]["kept"] <= 1
    assert set(report["realism"]) >= {"before_vs_real", "after_vs_real", "psd_change"}
    with open_dataset(synth) as a, open_dataset(out) as b:
        assert b.n == 2 and b.image_shape == (40, 36) and b.kind == "tem" and b.class_names == ["disc"]
        assert b.attrs["seed"] == 3 and b.attrs["generator"]["strength"] == 0.5
        assert b.attrs["generator"]["model"]["checkpoint"].endswith("last.pt")
        for i in range(2):
            np.testing.assert_array_equal(a.mask(i), b.mask(i))
            assert a.rows("boxes", i).equals(b.rows("boxes", i))
            prov = b.provenance(i)
            assert prov["render"] == i and prov["translate"]["strength"] == 0.5 and prov["translate"]["index"] == i
            assert np.abs(a.image(i) - b.image(i)).mean() > 0.005


def test_cli_translate_bad_inputs_exit_2(tmp_path, run, synth):
    existing = tmp_path / "exists.h5"
    existing.write_bytes(b"keep")
    before = synth.read_bytes()
    cases = [
        ["ldm", "translate", run, synth, "-o", synth, "--overwrite"],  # never the input
        ["ldm", "translate", run, synth, "-o", existing],
        ["ldm", "translate", run, synth, "-o", tmp_path / "a.h5", "--strength", 1.5],
        ["ldm", "translate", run, synth, "-o", tmp_path / "b.h5", "--steps", 5000],
        ["ldm", "translate", tmp_path / "norun", synth, "-o", tmp_path / "c.h5"],
        ["ldm", "translate", run, tmp_path / "missing.h5", "-o", tmp_path / "d.h5"],
        ["ldm", "translate", run, synth, "-o", tmp_path / "e.h5", "--report", synth, "--overwrite"],
        ["ldm", "translate", run, synth, "-o", tmp_path / "f.h5", "--real", tmp_path / "nothing"],
        ["ldm", "import-real", tmp_path, "--max-images", 3, "-o", tmp_path / "g.h5"],
    ]
    for args in cases:
        one_line_error(run_cli(*args))
    assert synth.read_bytes() == before and existing.read_bytes() == b"keep"
    for name in "abcdefg":
        assert not (tmp_path / f"{name}.h5").exists(), name


@pytest.fixture(scope="module")
def unlabeled_file(tmp_path_factory):
    """An unlabelled pairs file imported by the CLI from a folder whose labels/ and masks/ are garbage."""
    from PIL import Image

    import simgen.datasets.ldm_io as ldm_io

    tmp_path = tmp_path_factory.mktemp("unlabeled")
    folder = tmp_path / "frames"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "masks").mkdir()
    for k, img in enumerate(toy_pairs(3, 48, seed=4).images):
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / "images" / f"f{k}.png")
        (folder / "labels" / f"f{k}.txt").write_text("this is not a label file\n")
        Image.fromarray(np.full((48, 48), 7, np.uint8)).save(folder / "masks" / f"f{k}.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ldm_io, "open_yolo_folder", lambda *a, **k: pytest.fail("labels were opened"))
        out = tmp_path / "unlabeled.h5"
        res = run_cli("ldm", "import-real", folder, "--unlabeled", "--tile", 32, "--max-images", 2, "-o", out)
    assert res.exit_code == 0, res.output
    return out, res.output


def test_unlabeled_import_writes_empty_masks(unlabeled_file):
    out, output = unlabeled_file
    assert "wrote 8 unlabelled tiles from 2 images" in output
    with open_dataset(out) as ds:
        assert ds.n == 8 and ds.attrs["unlabeled"] and ds.kind == "real-unlabeled"
        assert all(not ds.mask(i).any() and len(ds.rows("boxes", i)) == 0 for i in range(ds.n))
        assert {ds.provenance(i)["source_image"] for i in range(ds.n)} == {"f0.png", "f2.png"}
    pairs = read_pairs(out)
    assert pairs.unlabeled and pairs.source["unlabeled"] and pairs.validate(32) is pairs
    assert pairs.subset([0]).unlabeled
    marked = toy_pairs(2, 32, seed=0)
    marked.unlabeled = True
    with pytest.raises(DataError, match="unlabeled"):
        marked.validate(32)


def test_unlabeled_model_translates_unconditionally(tmp_path, unlabeled_file, synth):
    pairs = read_pairs(unlabeled_file[0])
    run_dir = tmp_path / "run_unlabeled"
    train_ldm(pairs, micro_config(**FAST), run_dir, seed=1)
    res = run_cli("ldm", "translate", run_dir, synth, "-o", tmp_path / "t.h5", "--strength", 0.3, "--steps", 4,
                  "--no-progress")
    assert res.exit_code == 0, res.output
    assert "(none, strength 0.3" in res.output
    one_line_error(run_cli("ldm", "translate", run_dir, synth, "-o", tmp_path / "t2.h5", "--condition", "mask"))
