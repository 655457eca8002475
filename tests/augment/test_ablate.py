import csv
import json
from pathlib import Path

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
    res = run_ablation(grid, out, train=True, eval_on=tmp_path / "real", train_fn=train_fn, eval_fn=eval_fn)
    names = [r["name"] for r in res.rows]
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


def test_hooks_module_must_exist_and_provide_both_hooks(tmp_path):
    with pytest.raises(ParameterError, match="no such module"):
        resolve_training_hooks("simgen.train.no_such_trainer")
    with pytest.raises(ParameterError, match="must provide train_for_ablation"):
        resolve_training_hooks("simgen.errors")
    train_fn, eval_fn = resolve_training_hooks()  # the built-in YOLO hooks exist
    assert train_fn.__name__ == "train_for_ablation" and eval_fn.__name__ == "eval_for_ablation"


def test_training_without_eval_set_scores_on_a_held_out_synthetic_set(tmp_path):
    seen = []

    def train_fn(train_h5, out_dir):
        return out_dir / "w.pt"

    def eval_fn(weights, eval_on):
        seen.append(eval_on)
        return {"peak_f1": 0.5, "ap": 0.25}

    out = tmp_path / "o"
    res = run_ablation(_grid(tmp_path), out, train=True, train_fn=train_fn, eval_fn=eval_fn, only=["raw", "GB"])
    assert res.eval_on == out / "eval" / "heldout.h5" and set(seen) == {res.eval_on}
    assert "psd_distance" not in res.rows[0]  # realism distances are to real images only
    with open_dataset(res.eval_on) as held, open_dataset(out / "datasets" / "GB.h5") as gb:
        assert held.n == 2 and held.attrs["ablation_spec"] == "RB+GB+ST"  # all table1 artifacts together
        assert held.attrs["generator"] != gb.attrs["generator"]  # another seed
    assert json.loads((out / "ablation.json").read_text())["eval_on"] == str(res.eval_on)
    stamp = res.eval_on.stat().st_mtime_ns
    run_ablation(_grid(tmp_path), out, train=True, train_fn=train_fn, eval_fn=eval_fn, only=["raw"])
    assert res.eval_on.stat().st_mtime_ns == stamp  # reused
    with pytest.raises(ParameterError, match="eval_seed must differ"):
        load_grid(_grid(tmp_path, eval_seed=1))


def test_cli_ablate(tmp_path):
    grid = _grid(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["ablate", "--grid", str(grid), "-o", str(tmp_path / "o"), "--only", "raw,GB",
                               "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "datasets" / "GB.h5").exists() and not (tmp_path / "o" / "datasets" / "RB.h5").exists()
    res = runner.invoke(main, ["ablate", "--grid", str(grid), "-o", str(tmp_path / "p"), "--train", "--eval-on",
                               str(tmp_path), "--hooks", "simgen.train.no_such_trainer"], catch_exceptions=False)
    assert res.exit_code == 2 and res.output.startswith("Error: --hooks simgen.train.no_such_trainer: no such module")
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "p").exists()
    res = runner.invoke(main, ["ablate", "--grid", str(grid), "-o", str(tmp_path / "q"), "--only", "nope"])
    assert res.exit_code == 2 and "unknown combination" in res.output


def test_cli_ablate_trains_yolo_with_the_built_in_hooks(tmp_path, monkeypatch):
    """`simgen ablate --train` without --hooks or --eval-on: a YOLO per combination, scored on the held-out set."""
    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))
    config = {"size": 64, "n_defects": [2, 4], "min_separation": 12, "margin": 8, "box_size": 12, "steps": 3}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"sampler": "film", "config": config, "n": 8, "seed": 0,
                                    "combinations": {"raw": "none", "GB": "L-GB"}}, sort_keys=False))
    res = CliRunner().invoke(main, ["ablate", "--grid", str(grid), "-o", str(tmp_path / "o"), "--train",
                                    "--train-preset", "small", "--epochs", "1", "--no-progress"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with open(tmp_path / "o" / "ablation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["raw", "GB"]
    for r in rows:
        assert 0 <= float(r["peak_f1"]) <= 1 and 0 <= float(r["ap"]) <= 1
        assert (tmp_path / "o" / r["weights"]).exists() or Path(r["weights"]).exists()
    assert (tmp_path / "o" / "eval" / "heldout.h5").exists() and (tmp_path / "o" / "ablation.png").exists()
    assert "peak_f1" in (tmp_path / "o" / "ablation.md").read_text()


def test_film_detections_match_by_centre_distance_within_half_a_box():
    """Film defects are points: on films a 3× too large box (IoU 0.11) and a box 6 px off centre
    with the other sign's class both count (within 8 px, class-agnostic); at IoU 0.15 neither does."""
    import pandas as pd

    from simgen.experiments.ablation_yolo import ablation_scores

    gt = pd.DataFrame({"sample": [0, 0], "x0": [20.0, 80.0], "y0": [20.0, 80.0], "x1": [36.0, 96.0],
                       "y1": [36.0, 96.0], "class": [0, 1]})
    # one loose box on the first defect (centre 1 px off) and one off-centre box on the second, wrong class
    pred = pd.DataFrame({"sample": [0, 0], "x0": [5.0, 86.0], "y0": [5.0, 80.0], "x1": [53.0, 102.0],
                         "y1": [53.0, 96.0], "class": [0, 0], "score": [0.9, 0.8]})
    film = ablation_scores(pred, gt, 0.5, 1, film=True)
    assert film["f1"] == 1.0 and film["match"].startswith("centre distance <= 8 px")
    boxes = ablation_scores(pred, gt, 0.5, 1, film=False)
    assert boxes["f1"] == 0.0 and boxes["match"] == "IoU >= 0.15"  # loose box IoU 0.11, other class differs
    assert ablation_scores(pred, gt, 0.5, 1, film=False, agnostic=True)["f1"] == 0.5


def test_an_interrupted_trained_ablation_leaves_its_finished_rows(tmp_path):
    """A long run that stops (here: the third row's evaluation fails) keeps the table of the rows
    it finished, and each finished row's metrics are logged as it ends."""
    lines, calls = [], []

    def train_fn(train_h5, out_dir):
        return out_dir / "w.pt"

    def eval_fn(weights, eval_on):
        calls.append(weights)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return {"peak_f1": 0.5 + 0.1 * len(calls), "ap": 0.25, "f1": 0.4}

    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        run_ablation(_grid(tmp_path), out, train=True, train_fn=train_fn, eval_fn=eval_fn, log=lines.append)
    with open(out / "ablation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["raw", "GB"] and rows[1]["peak_f1"] == "0.7"
    assert any(line.endswith("GB: peak_f1 0.700, ap 0.250, f1 0.400") for line in lines), lines
