"""The named Table 1 grid of the smectic-film study: 21 rows, published figures, row selection, tiny training."""

import csv

import pytest
import yaml
from click.testing import CliRunner

from simgen.augment.spec import parse_spec
from simgen.cli import main
from simgen.errors import DataError, ParameterError
from simgen.experiments.ablation import grid_rows, load_grid, named_grids, run_ablation, select_combinations

BEST = "LG+L-FN+L-RV+L-RB+L-GB+L-DC+RD+LR"  # the study's best row, as quoted in issue 16
TINY = {"size": 48, "upsample": 1, "steps": 4, "box_size": 8, "min_separation": 6, "margin": 4, "n_defects": [1, 3]}


def _tiny_grid(tmp_path, **extra):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"base": "table1", "config": TINY, "n": 3, "eval_n": 2, **extra}))
    return path


def test_table1_is_21_distinct_valid_specs_with_the_published_rows():
    assert "table1" in named_grids()
    grid = load_grid("table1")
    rows = grid_rows(grid)  # builds every row's sampler: each spec is valid for the film simulator
    assert [r["row"] for r in rows] == list(range(1, 22))
    assert len({r["name"] for r in rows}) == 21 and len({r["spec"] for r in rows}) == 21
    assert rows[0]["name"] == BEST and rows[0]["published_peak_f1"] == 0.811 and rows[0]["published_ap"] == 0.818
    assert rows[1]["published_peak_f1"] == 0.817 and rows[1]["published_ap"] == 0.808
    assert parse_spec(rows[1]["spec"]).codes == parse_spec(BEST).without("LR").codes + ("ST",)
    assert sum("published_ap" in r for r in rows) == 2  # the others are the documented reconstruction
    lg = [r for r in rows if "LG" in parse_spec(r["spec"])]
    assert len(lg) == 19 and {r["name"] for r in rows if r not in lg} == {"L-FN+L-RV+L-RB+L-GB+L-DC+RD", "random"}
    # one-at-a-time: rows 5-9 are the best row minus each artifact
    best = set(parse_spec(BEST).codes)
    assert [best - set(parse_spec(r["spec"]).codes) for r in rows[4:9]] == [{c} for c in ("FN", "RV", "RB", "GB", "DC")]


def test_cli_list_rows_and_selection(tmp_path):
    res = CliRunner().invoke(main, ["ablate", "--grid", "table1", "--list"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 21 and lines[0].split()[:2] == ["1", BEST] and "published: peak_f1 0.811" in lines[0]
    grid = load_grid("table1")
    assert [name for _, name, _ in select_combinations(grid, rows=[2, 20])] == [
        "LG+L-FN+L-RV+L-RB+L-GB+L-DC+RD", "random"]
    assert [r for r, _, _ in select_combinations(grid, only=["random"], rows=[1])] == [1, 20]
    with pytest.raises(ParameterError, match="out of range"):
        select_combinations(grid, rows=[22])
    res = CliRunner().invoke(main, ["ablate", "--grid", "table1", "-o", str(tmp_path / "x"), "--rows", "0"])
    assert res.exit_code == 2 and "out of range" in res.output and not (tmp_path / "x").exists()
    res = CliRunner().invoke(main, ["ablate", "--grid", "table1", "--rows", "1"])
    assert res.exit_code == 2 and "--output" in res.output


def test_base_grid_merges_and_errors(tmp_path):
    grid = load_grid(_tiny_grid(tmp_path))
    assert grid.config["size"] == 48 and grid.config["regime"] == "analyzer" and grid.n == 3
    assert len(select_combinations(grid)) == 21 and grid.published[BEST]["ap"] == 0.818
    with pytest.raises(ParameterError, match="base must name a shipped grid"):
        load_grid(_tiny_grid(tmp_path, base="nope"))
    with pytest.raises(ParameterError, match="published names row"):
        load_grid(_tiny_grid(tmp_path, published={"no-such-row": {"ap": 0.5}}))
    with pytest.raises(DataError, match="named grids: .*table1"):
        load_grid(tmp_path / "missing.yaml")


def test_tiny_table1_rows_train_and_report_beside_published(tmp_path, monkeypatch):
    """`simgen ablate --grid <tiny table1> --rows 1 --train`: real YOLO training on the best row."""
    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["ablate", "--grid", str(_tiny_grid(tmp_path)), "-o", str(out), "--rows", "1",
                                    "--train", "--train-preset", "small", "--epochs", "1", "--no-progress"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with open(out / "ablation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["row"], r["name"]) for r in rows] == [("1", BEST)]
    assert rows[0]["published_peak_f1"] == "0.811" and rows[0]["published_ap"] == "0.818"
    assert 0 <= float(rows[0]["peak_f1"]) <= 1 and 0 <= float(rows[0]["ap"]) <= 1
    from simgen.datasets.h5io import open_dataset

    with open_dataset(out / "datasets" / f"{BEST}.h5") as ds:
        p = ds.provenance(0)
        assert ds.class_names == ["defect"] and p["model"] == "thermal" and {"RD", "LR", "DC"} <= set(p["augment"])
    with open_dataset(out / "eval" / "heldout.h5") as ds:
        assert ds.n == 2 and ds.provenance(0)["model"] == "thermal"
    assert "published_peak_f1" in (out / "ablation.md").read_text()


def test_run_ablation_rows_with_fake_hooks(tmp_path):
    def train_fn(train_h5, run_dir):
        return run_dir / "w.pt"

    res = run_ablation(_tiny_grid(tmp_path), tmp_path / "o", train=True, train_fn=train_fn,
                       eval_fn=lambda w, e: {"peak_f1": 0.5, "ap": 0.4}, rows=[2, 20])
    assert [(r["row"], r.get("published_ap"), r["ap"]) for r in res.rows] == [(2, 0.808, 0.4), (20, None, 0.4)]
    with open(tmp_path / "o" / "ablation.csv") as fh:
        assert [r["published_ap"] for r in csv.DictReader(fh)] == ["0.808", ""]
    assert (tmp_path / "o" / "ablation.png").exists()
