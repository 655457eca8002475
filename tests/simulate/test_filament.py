import numpy as np
import pytest

from simgen.errors import ParameterError
from simgen.simulate.filament import FilamentConfig, FilamentSampler, change_map, pair_list

CFG = FilamentConfig(size=96, frames=5, gaps=(1, 2), pairing=("forward", "backward", "consecutive"))


def test_change_map_classes():
    a = np.array([[0, 0, 1, 1]], bool)
    b = np.array([[0, 1, 0, 1]], bool)
    assert change_map(a, b).tolist() == [[0, 1, 2, 3]]
    assert change_map(b, a).tolist() == [[0, 2, 1, 3]]


def test_pair_list():
    pairs = pair_list(4, (1, 2), ("forward", "backward", "consecutive"))
    keys = [(p["first"], p["second"]) for p in pairs]
    assert len(keys) == len(set(keys))  # consecutive duplicates forward gap 1
    assert (0, 2) in keys and (2, 0) in keys and (0, 1) in keys
    assert all(p["direction"] == (1 if p["second"] > p["first"] else -1) for p in pairs)
    assert all(abs(p["second"] - p["first"]) == p["gap"] for p in pairs)


def test_sequence_targets_and_change_maps():
    s = FilamentSampler(CFG, seed=1)
    seq = s(0)
    a1, a2 = seq["a1"].astype(bool), seq["a2"].astype(bool)
    assert a1.shape == (5, 96, 96) and not (a2 & ~a1).any()  # the core lies inside the filament
    # gasification and wall thinning only remove filament: A1 never grows forward in time
    assert all(not (a1[t + 1] & ~a1[t]).any() for t in range(4))
    assert a1[-1].sum() < a1[0].sum()
    for pr in seq["pairs"]:
        i, j = pr["first"], pr["second"]
        assert np.array_equal(pr["change_a1"], change_map(a1[i], a1[j]))
        assert np.array_equal(pr["change_a2"], change_map(a2[i], a2[j]))
        if pr["direction"] > 0:
            assert not (pr["change_a1"] == 1).any()
    for t, frame in enumerate(seq["frames"]):
        assert np.array_equal(frame["mask"] > 0, a1[t])
        assert frame["image"].shape == (96, 96) and frame["image"].min() >= 0 and frame["image"].max() <= 1


def test_backward_pairs_mirror_forward_pairs():
    seq = FilamentSampler(CFG, seed=2)(0)
    by = {(p["first"], p["second"]): p for p in seq["pairs"]}
    swap = np.array([0, 2, 1, 3], np.uint8)
    for (i, j), p in by.items():
        if (j, i) in by:
            assert np.array_equal(swap[p["change_a1"]], by[(j, i)]["change_a1"])


def test_determinism():
    a, b = FilamentSampler(CFG, seed=3)(1), FilamentSampler(CFG, seed=3)(1)
    assert np.array_equal(a["a1"], b["a1"]) and np.array_equal(a["frames"][2]["image"], b["frames"][2]["image"])


@pytest.mark.parametrize("changes", [dict(gaps=(0,)), dict(gaps=(5,)), dict(pairing=("sideways",)),
                                     dict(n_filaments=(3, 1)), dict(size=16), dict(rate=-1.0)])
def test_bad_filament_parameters(changes):
    with pytest.raises(ParameterError):
        CFG.replace(**changes).validate()


# -- MultiTaskDeltaNet data: all pairs, one target filament, others masked out ------------------------------
def test_all_pairs_counts_and_the_study_arithmetic():
    for n in (2, 5, 9):
        pairs = pair_list(n, (), ("all",))
        assert len(pairs) == n * (n - 1) // 2
        assert all(p["first"] < p["second"] and p["direction"] == 1 for p in pairs)
        assert all(p["gap"] == p["second"] - p["first"] for p in pairs)
        with_self = pair_list(n, (), ("all", "self"))
        assert len(with_self) == n * (n + 1) // 2
        assert {(p["first"], p["second"]) for p in with_self if p["direction"] == 0} == {(t, t) for t in range(n)}
    # the study's splits: 41 frames = sequences of 27 + 14 -> 442 pairs, 64 = 46 + 18 -> 1188
    assert sum(len(pair_list(n, (), ("all",))) for n in (27, 14)) == 442
    assert sum(len(pair_list(n, (), ("all",))) for n in (46, 18)) == 1188
    # gaps play no part in all pairs: 3 frames with the default gaps (1, 2, 4) are fine
    seq = FilamentSampler(FilamentConfig(size=48, frames=3, pairing=("all",)), seed=0)(0)
    assert [(p["first"], p["second"]) for p in seq["pairs"]] == [(0, 1), (0, 2), (1, 2)]


def test_mask_others_keeps_one_target_filament():
    cfg = FilamentConfig(size=96, frames=4, pairing=("all",), n_filaments=(3, 3), radius=(3.0, 5.0))
    free = FilamentSampler(cfg, seed=4)(0)
    masked_cfg = cfg.replace(mask_others=True, diameter=12.0).validate()
    seq = FilamentSampler(masked_cfg, seed=4)(0)
    a1 = seq["a1"].astype(bool)
    assert a1[0].sum() > 0 and len(np.unique(free["frames"][0]["mask"])) > 2  # unmasked: several filaments
    for t, frame in enumerate(seq["frames"]):
        assert set(np.unique(frame["mask"])) <= {0, 1} and np.array_equal(frame["mask"] > 0, a1[t])
        assert set(frame["boxes"]["instance"].tolist()) <= {0, 1}
    # the target is 12 px wide: the largest inscribed radius of its area is ~6 px
    from scipy.ndimage import distance_transform_edt

    assert 4.5 <= distance_transform_edt(a1[0]).max() <= 7.0
    # the target always gasifies: its area shrinks
    assert a1[-1].sum() < a1[0].sum()
    # masked pixels (the other filaments) hold one constant value per frame, outside the target
    img = seq["frames"][0]["image"]
    values, counts = np.unique(img, return_counts=True)
    flat = values[counts.argmax()]
    patch = img == flat
    assert counts.max() > 50 and not (patch & a1[0]).any()
    assert np.array_equal(seq["pairs"][0]["change_a1"], change_map(a1[0], a1[1]))


@pytest.mark.parametrize("changes", [dict(diameter=10.0), dict(mask_others=True, diameter=80.0),
                                     dict(mask_others=True, diameter=float("nan")), dict(pairing=("all", "diagonal"))])
def test_bad_target_parameters(changes):
    with pytest.raises(ParameterError):
        CFG.replace(**changes).validate()


def test_cli_all_pairs_with_a_target(tmp_path):
    from clitools import assert_one_line_error, run

    from simgen.datasets.h5io import open_dataset

    res = run("simulate", "filament", "--n", 2, "--frames", 4, "--size", 48, "--pairing", "all", "--mask-others",
              "--diameter", 8, "--no-progress", "-o", tmp_path / "f.h5")
    assert res.exit_code == 0, res.output
    assert "6 x" not in res.output and "12 pairs" in res.output  # 2 sequences x 4 * 3 / 2
    with open_dataset(tmp_path / "f.h5") as ds:
        assert ds.array("pairs/index").tolist()[:3] == [[0, 1], [0, 2], [0, 3]]
        assert ds.mask(0).max() == 1  # the target only
    assert_one_line_error(run("simulate", "filament", "--diameter", 8, "-o", tmp_path / "bad.h5"), "mask_others")
    assert not (tmp_path / "bad.h5").exists()
