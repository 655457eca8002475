import json

import h5py
import numpy as np
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.h5io import open_dataset


@pytest.fixture
def film(tmp_path):
    out = tmp_path / "film.h5"
    res = run("simulate", "film", "--n", 6, "--size", 64, "--seed", 3, "--box-size", 8, "--n-defects", "1-4",
              "--min-separation", 6, "--margin", 4, "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    return out


def test_simulate_info_preview_export(film, tmp_path):
    with open_dataset(film) as ds:
        assert ds.n == 6 and ds.image_shape == (64, 64) and ds.attrs["seed"] == 3
        assert ds.attrs["generator"]["config"]["box_size"] == 8
    res = run("info", film, "--json")
    assert res.exit_code == 0 and json.loads(res.output)["n_samples"] == 6
    res = run("info", film)
    assert "table points" in res.output
    res = run("preview", film, "-o", tmp_path / "p.png", "--n", 4)
    assert res.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 1000
    res = run("export", "yolo", film, "-o", tmp_path / "y")
    assert res.exit_code == 0 and (tmp_path / "y" / "data.yaml").exists()


def test_thermal_cli(tmp_path):
    res = run("simulate", "film", "--model", "thermal", "--n", 2, "--size", 32, "--steps", 20, "--no-progress",
              "-o", tmp_path / "t.h5")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "t.h5") as ds:
        pts = ds.table("points")
        assert pts.groupby("sample")["charge"].sum().eq(0).all()


@pytest.mark.parametrize(
    "args",
    [
        ["--backend", "cuda"],
        ["--size", "-5"],
        ["--n", "0"],
        ["--n-defects", "9-2"],
        ["--n-defects", "many"],
        ["--model", "lattice"],
        ["--box-size", "1000"],
        ["--seed", "-1"],
    ],
)
def test_bad_simulate_input(tmp_path, args):
    out = tmp_path / "bad.h5"
    res = run("simulate", "film", "--size", 64, "--n", 2, "--no-progress", "-o", out, *args)
    assert_one_line_error(res)
    assert not out.exists()


def test_existing_output_needs_overwrite(film):
    before = film.read_bytes()
    res = run("simulate", "film", "--n", 2, "--size", 32, "--no-progress", "-o", film)
    assert_one_line_error(res)
    assert "--overwrite" in res.output
    assert film.read_bytes() == before


def test_unreadable_and_foreign_files(tmp_path):
    garbage = tmp_path / "g.h5"
    garbage.write_bytes(b"garbage")
    assert_one_line_error(run("info", garbage))
    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(2)
    res = run("info", foreign)
    assert_one_line_error(res)
    assert "not a simgen dataset" in res.output
    assert_one_line_error(run("info", tmp_path / "missing.h5"))
    assert_one_line_error(run("preview", foreign, "-o", tmp_path / "p.png"))
    assert not (tmp_path / "p.png").exists()


def test_help_pages():
    for args in (["--help"], ["simulate", "film", "--help"], ["info", "--help"], ["export", "yolo", "--help"]):
        res = run(*args)
        assert res.exit_code == 0 and "Usage" in res.output


def test_closed_stdout_pipe_is_not_an_error():
    """`simgen augment codes | head -1`: the reader went away; no 'Error:' line, no traceback."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "simgen", "augment", "codes"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert "Error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_every_float_option_rejects_non_finite_numbers(value, tmp_path):
    out = tmp_path / "x.h5"
    res = run("simulate", "film", "--n", 1, "--size", 32, "--decross", value, "-o", out)
    assert_one_line_error(res, "--decross", "not a finite number")
    assert not out.exists()


def test_every_float_option_of_the_tree_is_guarded():
    """The guard is applied to the whole command tree, so a new float option cannot forget it."""
    import click

    from simgen.cli import main

    def walk(cmd, path):
        for p in cmd.params:
            if isinstance(p.type, click.types.FloatParamType):
                yield path, p
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    floats = list(walk(main, "simgen"))
    assert len(floats) > 20  # the tree really has float options
    for _path, p in floats:
        with pytest.raises(click.BadParameter, match="not a finite number"):
            p.type.convert("nan", p, None)


@pytest.mark.parametrize("args", [
    ["preview", "{film}", "-o", "{film}", "--overwrite"],
    ["track", "{film}", "-o", "{film}", "--overwrite"],
    ["augment", "{film}", "--spec", "GB", "-o", "{film}", "--overwrite"],
])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(film, args):
    before = film.read_bytes()
    res = run(*[a.format(film=film) for a in args])
    assert_one_line_error(res, "is also an input")
    assert film.read_bytes() == before


def test_an_output_reached_through_a_symlink_is_an_input_too(film, tmp_path):
    link = tmp_path / "link.h5"
    link.symlink_to(film)
    before = film.read_bytes()
    res = run("preview", film, "-o", link, "--overwrite")
    assert_one_line_error(res, "is also an input")
    assert film.read_bytes() == before
