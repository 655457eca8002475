"""LG (thermal) film data with RD and LR, single-class labels, and why the sign is not identifiable."""

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from simgen.augment import AugmentedSampler
from simgen.augment.spec import parse_spec
from simgen.cli import main
from simgen.datasets.h5io import open_dataset
from simgen.errors import ParameterError
from simgen.simulate.film import FilmConfig, FilmSampler, defect_boxes, random_defect_phase
from simgen.simulate.schlieren import schlieren
from simgen.simulate.winding import DEFECT_DTYPE, find_defects
from simgen.simulate.xy import quench, random_start

THERMAL = FilmConfig(model="thermal", size=48, steps=40, box_size=6)


def _counts(sampler, n=8):
    outs = [sampler(i) for i in range(n)]
    return np.array([len(o["points"]) for o in outs]), outs


def test_rd_spreads_the_defect_count_of_the_lg_model():
    """Without RD every sample is the same quench run for the same time (counts within ~10 %);
    RD draws the quench's correlation length per sample, so counts spread over a decade."""
    base = FilmSampler(THERMAL, seed=3)
    fixed, outs = _counts(base)
    assert {o["provenance"]["quench_length"] for o in outs} == {0.0}
    assert fixed.std() / fixed.mean() < 0.25 and fixed.min() > 20
    spread, outs = _counts(AugmentedSampler(base, "LG+RD"))
    lengths = [o["provenance"]["quench_length"] for o in outs]
    assert len(set(lengths)) == 8 and all(0.5 <= q <= 24 for q in lengths)
    assert spread.std() / spread.mean() > 2 * fixed.std() / fixed.mean()
    assert spread.max() >= 4 * max(spread.min(), 1)
    assert np.all([o["provenance"]["steps"] == THERMAL.steps for o in outs])  # RD leaves the run length alone


def test_lr_draws_log_uniform_stopping_times_and_lowers_the_count():
    base = FilmSampler(THERMAL, seed=3)
    plain, _ = _counts(base)
    long, outs = _counts(AugmentedSampler(base, "LG+LR"))
    steps = np.array([o["provenance"]["steps"] for o in outs])
    assert np.all((steps >= THERMAL.steps) & (steps <= 100 * THERMAL.steps)) and len(set(steps)) > 4
    assert long.mean() < 0.5 * plain.mean()
    # the factor is log-uniform: its log is uniform on [0, log 100] (mean log 50 = 0.5 log 100)
    factors = [AugmentedSampler(base, "LR").pipeline.simulation_params(k)["LR"]["factor"] for k in range(400)]
    assert abs(np.mean(np.log(factors)) / np.log(100) - 0.5) < 0.05
    assert parse_spec("L-LR").item("LR").ranges()["factor"] == (1, 10)


def test_correlated_quench_start_has_fewer_defects():
    rng = np.random.default_rng(0)
    n = [len(find_defects(random_start(64, np.random.default_rng(0), xi), periodic=True)) for xi in (0, 2, 8)]
    assert n[0] > 3 * n[1] > 9 * n[2] > 0
    assert random_start(16, rng).tobytes() != random_start(16, rng, 1.0).tobytes()
    a = quench(16, [0], seed=4)[0]  # the default start is the uncorrelated one, bit for bit
    assert a.tobytes() == quench(16, [0], seed=4, correlation=0.0)[0].tobytes()
    with pytest.raises(ParameterError, match="correlation length"):
        quench(16, [1], correlation=-1.0)
    with pytest.raises(ParameterError, match="quench_length"):
        THERMAL.replace(quench_length=float("nan")).validate()


def test_cli_lg_spec_with_rd_lr_and_image_codes(tmp_path):
    """`simulate film --model thermal --spec "DC+RD+LR+FN+GB"` (exited 2 before) and the LG term."""
    runner = CliRunner()
    out = tmp_path / "lg.h5"
    res = runner.invoke(main, ["simulate", "film", "--model", "thermal", "--spec", "DC+RD+LR+FN+GB", "--n", "3",
                               "--size", "32", "--steps", "5", "--box-size", "6", "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.class_names == ["defect"]
        for i in range(ds.n):
            p = ds.provenance(i)
            assert p["model"] == "thermal" and set(p["augment"]) >= {"DC", "RD", "LR", "FN", "GB"}
            assert p["quench_length"] == p["augment"]["RD"]["quench"] and p["steps"] >= 5
    row = tmp_path / "row.h5"  # a Table 1 row as one spec on the default (random) model
    res = runner.invoke(main, ["simulate", "film", "--spec", "LG+L-FN+L-RV+L-RB+L-GB+L-DC+RD+LR", "--n", "2",
                               "--size", "32", "--steps", "5", "--box-size", "6", "-o", str(row), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "thermal-model" in res.output
    with open_dataset(row) as ds:
        assert ds.provenance(0)["model"] == "thermal"


def test_single_class_by_default_charge_kept_two_class_option(tmp_path):
    s = FilmSampler(FilmConfig(size=64, n_defects=(4, 6)), seed=1)(0)
    assert FilmSampler().class_names == ["defect"] and set(s["boxes"]["class"]) == {0}
    assert set(np.unique(s["points"]["charge"])) <= {-1, 1} and len(s["points"]) == len(s["boxes"])
    two = FilmSampler(FilmConfig(size=64, n_defects=(4, 6), single_class=False), seed=1)(0)
    assert np.array_equal(two["boxes"]["class"], np.where(two["points"]["charge"] > 0, 0, 1))
    runner = CliRunner()
    for flag, names in (([], {0: "defect"}), (["--two-class"], {0: "plus", 1: "minus"})):
        h5, folder = tmp_path / f"f{len(flag)}.h5", tmp_path / f"y{len(flag)}"
        res = runner.invoke(main, ["simulate", "film", "--n", "2", "--size", "32", "--n-defects", "2",
                                   "--min-separation", "6", "--margin", "4", "--box-size", "6", "-o", str(h5),
                                   "--no-progress", *flag])
        assert res.exit_code == 0, res.output
        res = runner.invoke(main, ["export", "yolo", str(h5), "-o", str(folder)])
        assert res.exit_code == 0, res.output
        meta = yaml.safe_load((folder / "data.yaml").read_text())
        assert meta["names"] == names


@pytest.mark.parametrize("regime, decross", [("decrossed", 0.0), ("decrossed", 0.3), ("crossed", 0.2),
                                              ("analyzer", 0.4)])
def test_isolated_plus_and_minus_defects_render_alike(regime, decross):
    """The identifiability caveat of two-class film labels, computed: an isolated +1 defect with phase c
    renders exactly like an isolated -1 defect with another phase, and is the mirror image of a -1."""
    one = np.zeros(1, DEFECT_DTYPE)
    one["x"], one["y"] = 32.0, 32.0  # on a pixel corner: the row mirror y -> 64 - y maps the grid onto itself

    def render(charge, phase):
        one["charge"] = charge
        return schlieren(random_defect_phase(one, (64, 64), phase), decross, regime)

    c = 0.7
    plus = render(1, c)
    # f(2φ) with f symmetric about u0 = 2δ (decrossed, crossed) or π/2 (analyzer): the -1 twin has c' = u0 - c
    u0 = np.pi / 2 if regime == "analyzer" else 2 * decross
    minus_twin = render(-1, u0 - c)
    np.testing.assert_allclose(plus, minus_twin, atol=2e-5)
    np.testing.assert_allclose(plus[::-1], render(-1, c), atol=2e-5)  # mirror image (rows flipped)
    assert np.abs(plus - render(-1, c)).max() > 0.1  # yet not the same image at the same phase


def test_defect_boxes_two_class_mapping_unchanged():
    pts = np.array([(1.0, 2.0, 1), (5.0, 6.0, -1)], DEFECT_DTYPE)
    assert list(defect_boxes(pts, 4, (16, 16))["class"]) == [0, 1]
