import csv
import json

import pytest
import yaml
from click.testing import CliRunner

from simgen.cli import main
from simgen.datasets.h5io import open_dataset
from simgen.datasets.imageio import write_image
from simgen.errors import ParameterError, SpecError
from simgen.experiments.ablation import (
    AblationGrid,
    expand_combinations,
    load_grid,
    resolve_training_hooks,
    run_ablation,
)

TINY = {"size": 48, "n_defects": [1, 2], "min_separation": 6, "margin": 4, "box_size": 8, "steps": 3}


def _grid(tmp_path, **extra):
    g = {"sampler": "film", "config": TINY, "n": 2, "seed": 1,
         "table1": {"artifacts": ["GB", "RB"], "models": ["RD"]}, **extra}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


def test_table1_expansion_and_shipped_example():
    g = AblationGrid(table1={"artifacts": ["FN", "RV", "RB", "GB", "DC", "islands"], "models": ["RD", "LR"]})
    names = [n for n, _ in expand_combinations(g)]
    assert names[:2] == ["raw", "FN"] and "FN+RV" in names and "L-all" in names and "all+LR" in names
    assert len(names) == 1 + 8 + 15 + 1 + 1 + 2
    specs = dict(expand_combinations(g))
    assert specs["L-all"] == "L-FN+L-RV+L-RB+L-GB+L-DC+L-islands" and specs["raw"] == "none"
    from pathlib import Path

    import simgen

    shipped = load_grid(Path(simgen.__file__).parent / "configs" / "ablation.yaml")
    assert len(expand_combinations(shipped)) >= 28


def test_grid_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler: film\ncolour: red\n")
    with pytest.raises(ParameterError, match="unknown grid key"):
        load_grid(bad)
    with pytest.raises(SpecError, match="unknown augmentation code"):
        load_grid(_grid(tmp_path, combinations={"x": "GB+QQ"}))
    with pytest.raises(ParameterError, match="no combinations"):
        AblationGrid().validate()


def test_generation_resume_and_fake_training(tmp_path):
    grid = _grid(tmp_path)
    real = tmp_path / "real" / "images"
    import numpy as np

    for k in range(2):
        write_image(real / f"r{k}.png", np.random.default_rng(k).random((48, 48)))
    calls = []

    def train_fn(train_h5, out_dir):
        calls.append(train_h5.name)
        (out_dir / "w.pt").write_text("weights")
        return out_dir / "w.pt"

    def eval_fn(weights, real_dir):
        return {"peak_f1": 0.5, "ap": 0.25, "n": 3}

    out = tmp_path / "runs"
    res = run_ablation(grid, out, train=True, eval_dir=tmp_path / "real", train_fn=train_fn, eval_fn=eval_fn)
    names = [r["name"] for r in res["rows"]]
    assert names == ["raw", "GB", "RB", "RD", "GB+RB", "all", "L-all", "all+RD"]
    assert len(calls) == len(names)
    with open(out / "ablation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["peak_f1"] == "0.5" and "psd_distance" in rows[0]
    assert (out / "ablation.md").read_text().startswith("| name |")
    assert (out / "ablation.png").stat().st_size > 3000
    with open_dataset(out / "datasets" / "all+RD.h5") as ds:
        assert ds.n == 2 and ds.attrs["ablation_spec"] == "RD+RB+GB+ST"
    # paired datasets: GB's sample 0 blur equals all's sample 0 blur
    with open_dataset(out / "datasets" / "GB.h5") as a, open_dataset(out / "datasets" / "all.h5") as b:
        assert a.provenance(0)["augment"]["GB"] == b.provenance(0)["augment"]["GB"]
    # resume: nothing is regenerated, the same datasets are reused
    stamp = (out / "datasets" / "GB.h5").stat().st_mtime_ns
    run_ablation(grid, out)
    assert (out / "datasets" / "GB.h5").stat().st_mtime_ns == stamp
    assert json.loads((out / "ablation.json").read_text())["rows"][0]["name"] == "raw"
    # a changed grid is not silently mixed with old datasets
    with pytest.raises(ParameterError, match="different settings"):
        run_ablation(_grid(tmp_path, seed=2), out)


def test_training_needs_a_trainer(tmp_path):
    with pytest.raises(ParameterError, match="does not exist yet"):
        resolve_training_hooks("simgen.train.no_such_trainer")
    with pytest.raises(ParameterError, match="--eval-on"):
        run_ablation(_grid(tmp_path), tmp_path / "o", train=True, train_fn=print, eval_fn=print)


def test_cli_ablate(tmp_path):
    grid = _grid(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["ablate", "--grid", str(grid), "-o", str(tmp_path / "o"), "--only", "raw,GB",
                               "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "datasets" / "GB.h5").exists() and not (tmp_path / "o" / "datasets" / "RB.h5").exists()
    res = runner.invoke(main, ["ablate", "--grid", str(grid), "-o", str(tmp_path / "p"), "--train", "--eval-on",
                               str(tmp_path), "--hooks", "simgen.train.no_such_trainer"], catch_exceptions=False)
    assert res.exit_code == 2 and res.output.startswith("Error: --train needs a detector trainer"), res.output
    assert not (tmp_path / "p").exists()
    res = runner.invoke(main, ["ablate", "--grid", str(grid), "-o", str(tmp_path / "q"), "--only", "nope"])
    assert res.exit_code == 2 and "unknown combination" in res.output
