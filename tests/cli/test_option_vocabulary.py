"""One option vocabulary: -o everywhere, --batch-size, one meaning per name; old spellings warn for a release."""

import numpy as np
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.datasets.h5io import DatasetWriter


@pytest.fixture()
def tiny_h5(tmp_path):
    path = tmp_path / "tiny.h5"
    rng = np.random.default_rng(0)
    with DatasetWriter(path, kind="tem", class_names=["loop"]) as w:
        for i in range(3):
            b = np.array([[4, 4, 12, 12]], np.float32)
            w.append(rng.random((32, 32)).astype(np.float32), name=f"s{i}",
                     boxes={"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3],
                            "class": np.zeros(1, np.int16)})
    return path


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_export_takes_dash_o_and_the_old_positional_with_a_warning(tiny_h5, tmp_path, fmt):
    runner = CliRunner()
    r = runner.invoke(main, ["export", fmt, str(tiny_h5), "-o", str(tmp_path / "new")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "new").is_dir() and "deprecated" not in r.output
    r = runner.invoke(main, ["export", fmt, str(tiny_h5), str(tmp_path / "old")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "old").is_dir() and "positional OUT_DIR is deprecated" in r.output
    r = runner.invoke(main, ["export", fmt, str(tiny_h5), str(tmp_path / "a"), "-o", str(tmp_path / "b")])
    assert r.exit_code == 2 and "once" in r.output and not (tmp_path / "a").exists()
    r = runner.invoke(main, ["export", fmt, str(tiny_h5)])
    assert r.exit_code == 2 and "Missing option '-o'" in r.output


def test_export_mot_takes_dash_o(tmp_path):
    runner = CliRunner()
    video = tmp_path / "v.h5"
    r = runner.invoke(main, ["simulate", "video", "--frames", "3", "--size", "64", "-o", str(video), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["export", "mot", str(video), "-o", str(tmp_path / "SIM-01"), "--no-images"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "SIM-01" / "gt" / "gt.txt").exists()


@pytest.mark.parametrize("args, new", [
    (["realism", "x.h5", "--real", ".", "-o", "r", "--batch", "8", "--batch-size", "8"], "--batch-size"),
    (["ldm", "sample", "run", "-o", "s.h5", "--scheduler", "ddim", "--sampler", "ddim"], "--sampler"),
    (["train", "yolo", "--data", "x.h5", "-o", "r", "--workers", "0", "--loader-workers", "0"], "--loader-workers"),
    (["train", "yolo", "--data", "x.h5", "-o", "r", "--batch", "2", "--batch-size", "2"], "--batch-size"),
])
def test_old_and_new_spelling_together_is_a_usage_error(args, new, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and f"give {new} only" in r.output and "Traceback" not in r.output


def test_old_spelling_warns_and_still_means_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --data x.h5 does not exist: the command fails after the options are read
    r = CliRunner().invoke(main, ["train", "yolo", "--data", "missing.h5", "-o", "r", "--batch", "2"])
    assert "--batch is deprecated" in r.output and "use --batch-size" in r.output
    assert r.exit_code == 2 and "Error:" in r.output


@pytest.mark.parametrize("extra, names", [(["--single-class"], ["defect"]), (["--single-class", "loop"], ["loop"])])
def test_single_class_means_one_class_in_tem_as_in_film(tmp_path, extra, names):
    from simgen.datasets.h5io import open_dataset

    out = tmp_path / "t.h5"
    r = CliRunner().invoke(main, ["simulate", "tem", "--n", "1", "--size", "64", *extra, "-o", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    with open_dataset(out) as ds:
        assert ds.class_names == names


def test_pixel_size_is_named_the_same_in_simulate_tem(tmp_path):
    from simgen.datasets.h5io import open_dataset

    runner = CliRunner()
    new, old = tmp_path / "new.h5", tmp_path / "old.h5"
    r = runner.invoke(main, ["simulate", "tem", "--n", "1", "--size", "64", "--pixel-size", "0.5", "-o", str(new),
                             "--no-progress"])
    assert r.exit_code == 0 and "deprecated" not in r.output, r.output
    r = runner.invoke(main, ["simulate", "tem", "--n", "1", "--size", "64", "--pixel-nm", "0.5", "-o", str(old),
                             "--no-progress"])
    assert r.exit_code == 0 and "--pixel-nm is deprecated" in r.output, r.output
    with open_dataset(new) as a, open_dataset(old) as b:
        np.testing.assert_array_equal(a.image(0), b.image(0))
