"""Diffraction-contrast structures of the TEM renderer and the annotator-like label rules (issue 15).

Each structure is present when its parameter is on and absent when off (a computed
property, not a picture), the label rule drops invisible defects, and ``label_noise``
tells clean labels from noisy ones.  Tiny images only.
"""

import math

import numpy as np
import pytest

from simgen.errors import ParameterError
from simgen.rng import sample_rng
from simgen.simulate.match import _anisotropy, label_noise, streak_statistics
from simgen.simulate.tem import (
    PRESETS,
    TemConfig,
    TemSampler,
    config_from_match,
    draw_defects,
    draw_image_params,
    simulate_tem,
)
from simgen.simulate.tem_labels import _default_sigmas, _free_mask, scale_space, visibility
from simgen.simulate.tem_render import DEFECT_DTYPE, render_patch, texture_field
from simgen.simulate.tem_structures import (
    bend_contours,
    dark_patches,
    render_dislocations,
    rocking_curve,
    thickness_fringes,
)

QUIET = dict(size=192, density=0.0, lines=0, specks=0.0, bend_count=0, gradient=0.0, dose=0.0, read_noise=0.0,
             blur=0.0, texture=(0.0, 0.02, 0.02, 0.0, 0.0, 0.0), texture_skew=0.0, anisotropy=0.0)


def _background(cfg, seed=0):
    return simulate_tem(sample_rng(seed, 0), cfg, layers=True).layers["background"]


# -- 3: streaks ---------------------------------------------------------------------------------
def test_streaks_raise_the_spectral_anisotropy_along_their_direction():
    off = TemConfig(**{**QUIET, "size": 256})
    on = off.replace(streak_amp=0.08, streak_scale=6.0, streak_length=5.0, streak_angle=0.6)
    an_off, _ = _anisotropy(_background(off))
    an_on, ang = _anisotropy(_background(on))
    assert an_off < 0.15 < 0.4 < an_on
    assert abs(math.remainder(ang - 0.6, math.pi)) < 0.15


def test_streak_statistics_recovers_the_renderers_streaks():
    rng = np.random.default_rng(0)
    f = texture_field(rng, (512, 512), [(16.0, 0.05), (8.0, 0.06, 3.0, 2.8)])
    est = streak_statistics(0.5 * (1 + f) + rng.normal(0, 0.01, f.shape))
    assert abs(math.remainder(est["streak_angle"] - 2.8, math.pi)) < 0.1
    assert 0.035 < est["streak_amp"] < 0.08  # within ~40 % (the fit under-reads short streaks)
    assert 6.0 <= est["streak_scale"] <= 11.0 and 2.0 <= est["streak_length"] <= 4.0
    iso = streak_statistics(0.5 * (1 + texture_field(rng, (512, 512), [(16.0, 0.05), (8.0, 0.06)])))
    assert iso["streak_amp"] < 0.03


def test_match_moves_streak_power_out_of_the_isotropic_texture():
    est = {"texture": [0.0, 0.04, 0.08, 0.07, 0.05, 0.03], "streak_amp": 0.06, "streak_scale": 16.0,
           "streak_length": 2.0, "streak_angle": 2.6, "anisotropy": 0.2, "anisotropy_angle": 2.6}
    cfg = config_from_match(est, TemConfig(size=128))
    assert cfg.streak_amp[0] < 0.06 < cfg.streak_amp[1] and cfg.streak_angle[0] < 2.6 < cfg.streak_angle[1]
    before = sum(t * t for t in est["texture"])
    after = sum(t * t for t in cfg.texture)
    assert after == pytest.approx(before - 0.06**2, rel=1e-6)
    weak = config_from_match({**est, "streak_amp": 0.01}, TemConfig(size=128))
    assert weak.streak_amp == (0.0, 0.0)


# -- 1: dislocations and edge-on loops ----------------------------------------------------------
def _straight_line(length=200, y=40.0):
    x = np.arange(length, dtype=np.float32) + 20
    return [np.stack([x, np.full_like(x, y)], 1)]


def test_inclined_dislocation_oscillates_and_splits():
    plain = np.zeros((80, 240), np.float32)
    beaded = np.zeros_like(plain)
    double = np.zeros_like(plain)
    render_dislocations(plain.shape, _straight_line(), [0.3], [1.5], plain)
    render_dislocations(beaded.shape, _straight_line(), [0.3], [1.5], beaded, beads=[1.0], periods=[20.0])
    render_dislocations(double.shape, _straight_line(), [0.3], [1.5], double, doubles=[0.8])
    along_plain = plain[36:45, 40:200].max(0)
    along_beaded = beaded[36:45, 40:200].max(0)
    assert along_plain.std() < 0.01 * along_plain.mean()  # uniform line
    spec = np.abs(np.fft.rfft(along_beaded - along_beaded.mean()))
    assert np.argmax(spec) == pytest.approx(160 / 20.0, abs=1)  # beads at the extinction period
    assert along_beaded.min() < 0.3 * along_beaded.max()
    # a double image: a second, parallel line 2.5 widths away
    across = double[30:55, 100]
    peaks = np.flatnonzero((across[1:-1] > across[:-2]) & (across[1:-1] >= across[2:]) & (across[1:-1] > 0.1))
    assert len(peaks) == 2 and 3 <= peaks[1] - peaks[0] <= 5  # 2.5 x 1.5 px apart
    one = plain[30:55, 100]
    assert ((one[1:-1] > one[:-2]) & (one[1:-1] >= one[2:]) & (one[1:-1] > 0.1)).sum() == 1


def test_lines_render_line_pixels_only_when_on():
    cfg = TemConfig(**QUIET, line_amp=0.4, line_width=1.5, line_beads=(0.5, 1.0))
    on = simulate_tem(sample_rng(2, 0), cfg.replace(lines=3), layers=True).layers["negatives"]
    off = simulate_tem(sample_rng(2, 0), cfg, layers=True).layers["negatives"]
    assert (on > 0.1).sum() > 100 and not off.any()


def test_edge_on_loops_are_thin_dark_lines():
    cfg = TemConfig(size=256, classes=("loop111",), size_nm=8.0, pixel_nm=0.4, min_aspect=0.3)
    p = draw_image_params(np.random.default_rng(0), cfg)
    none = draw_defects(np.random.default_rng(1), cfg, p, 300)
    p_on = {**p, "edge_on": 1.0}
    all_on = draw_defects(np.random.default_rng(1), cfg, p_on, 300)
    assert np.all(none["b"] / none["a"] >= 0.3 - 1e-6)
    assert np.median(all_on["b"] / all_on["a"]) < 0.25


# -- 2: bend contours and thickness fringes ------------------------------------------------------
def test_rocking_curve_has_subsidiary_fringes_only_with_visibility():
    w = np.linspace(0, 4, 801)
    smooth = rocking_curve(w, 3.0, 0.0)
    fringed = rocking_curve(w, 3.0, 0.9)
    assert np.all(np.diff(smooth) <= 1e-7)  # one Lorentzian band
    assert (np.diff(np.sign(np.diff(fringed))) != 0).sum() >= 4  # subsidiary maxima and minima
    factor = bend_contours(np.random.default_rng(0), (128, 128), 2, 0.4, 0.15)
    assert factor.min() < 0.75 and factor.max() <= 1.0 + 1e-6


def test_thickness_fringes_have_the_extinction_period():
    f = thickness_fringes(np.random.default_rng(3), (256, 256), 0.3, 16.0, 6.0)
    assert f.min() < 0.9 and f.max() > 1.0
    on = simulate_tem(sample_rng(0, 0), TemConfig(**QUIET, fringes=1.0, fringe_amp=0.3, fringe_period=16.0,
                                                   fringe_count=6.0), layers=True).layers["background"]
    off = simulate_tem(sample_rng(0, 0), TemConfig(**QUIET), layers=True).layers["background"]
    assert on.std() > 2 * off.std()
    # the profile along the thickness gradient oscillates with the period (any direction: 2-D spectrum peak)
    spec = np.abs(np.fft.fft2(f - f.mean()))
    ky, kx = np.unravel_index(np.argmax(spec), spec.shape)
    k = math.hypot(min(ky, 256 - ky), min(kx, 256 - kx)) / 256
    assert 1 / k == pytest.approx(16.0, rel=0.15)


# -- 4: black-white lobes and the dark tail --------------------------------------------------------
def _dot(**kw):
    rec = dict(zip(DEFECT_DTYPE.names, np.zeros(1, DEFECT_DTYPE)[0].tolist()))
    rec.update(x=20.5, y=20.5, a=3.0, b=3.0, contrast=0.5, fill=1.0, edge=0.8, halo_ext=1.0, g_angle=0.0, **kw)
    return rec


def _at(rec, rows, cols):
    r0, c0, _, val = render_patch(rec)
    return val[np.asarray(rows) - r0, np.asarray(cols) - c0]


def test_black_white_lobes_have_a_no_contrast_line_perpendicular_to_g():
    plain, bw = _dot(), _dot(bw=1.2)  # g along +x; pixel column 20 has its centre on x = 20.5
    r0, c0, _, val = render_patch(bw)
    assert render_patch(plain)[3].min() >= 0
    assert val.min() < -0.1  # a bright lobe ...
    assert val.max() > render_patch(plain)[3].max()  # ... and a darker one
    rows = np.arange(14, 27)
    # on the line through the centre perpendicular to g the dipole adds nothing
    assert np.allclose(_at(bw, rows, np.full(13, 20)), _at(plain, rows, np.full(13, 20)), atol=1e-6)
    # along g it is antisymmetric: darker on the +g side, brighter on the -g side by the same amount
    for k in (1, 2, 3, 4):
        plus = _at(bw, [20], [20 + k])[0] - _at(plain, [20], [20 + k])[0]
        minus = _at(bw, [20], [20 - k])[0] - _at(plain, [20], [20 - k])[0]
        assert plus > 0.02 and plus == pytest.approx(-minus, abs=1e-5)


def test_contrast_tail_darkens_the_top_of_the_contrast_distribution():
    cfg = TemConfig(size=256, contrast=0.4, contrast_spread=0.1)
    p = draw_image_params(np.random.default_rng(0), cfg)
    base = draw_defects(np.random.default_rng(1), cfg, p, 2000)["contrast"]
    tail = draw_defects(np.random.default_rng(1), cfg, {**p, "contrast_tail": 0.6}, 2000)["contrast"]
    assert np.percentile(tail, 95) > np.percentile(base, 95) + 0.15
    assert abs(np.mean(tail) - np.mean(base)) < 0.08  # the tail, not the level, changes


# -- 5: dark patches ---------------------------------------------------------------------------------
def test_dark_patches_cover_their_area_fraction():
    for frac in (0.1, 0.3):
        f = dark_patches(np.random.default_rng(0), (256, 256), frac, 0.5, 30.0)
        assert abs((f < 0.75).mean() - frac) < 0.1
    cfg = TemConfig(**QUIET, patch_amp=0.5, patch_scale=25.0)
    off = _background(cfg)
    on = _background(cfg.replace(patch_frac=0.25))
    lvl = np.median(off)
    assert (on < 0.7 * lvl).mean() > 0.12 > 0.01 > (off < 0.7 * lvl).mean()


# -- determinism ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_with_structures_are_deterministic(name):
    cfg = TemConfig.from_preset(name, size=160)
    a, b = TemSampler(cfg, seed=4), TemSampler(cfg, seed=4)
    x, y = a(1), b(1)
    assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["mask"], y["mask"])
    assert np.array_equal(x["boxes"], y["boxes"])
    assert not np.array_equal(x["image"], a(2)["image"])


def test_everything_on_is_deterministic_and_consistent():
    cfg = TemConfig(size=160, density=(1500.0, 2500.0), lines=2, line_beads=0.8, line_double=0.5, edge_on=0.5,
                    bend_count=1, bend_fringes=0.5, fringes=1.0, streak_amp=0.05, black_white=(0.3, 0.8),
                    contrast_tail=0.3, patch_frac=0.2, label_extent=0.35, min_snr=2.0, lookalikes="label")
    s1 = simulate_tem(sample_rng(9, 3), cfg)
    s2 = simulate_tem(sample_rng(9, 3), cfg)
    assert np.array_equal(s1.image, s2.image) and np.array_equal(s1.boxes, s2.boxes)
    assert set(np.unique(s1.mask)) - {0} == set(s1.boxes["instance"].tolist())
    assert len(s1.defects) == len(s1.boxes)


def test_bad_structure_parameters():
    for kw, match in ((dict(fringes=1.5), "fringes"), (dict(lookalikes="hide"), "lookalikes"),
                      (dict(min_snr=-1.0), "min_snr"), (dict(label_extent=1.0), "label_extent"),
                      (dict(patch_frac=0.9), "patch_frac"), (dict(streak_length=0.5), "streak_length")):
        with pytest.raises(ParameterError, match=match):
            TemConfig(**kw).validate()


# -- 6: labels follow what an annotator sees -----------------------------------------------------------
FAINT = dict(size=192, classes=("black_dot",), density=(1500.0, 1500.0), size_nm=(4.0, 4.0), pixel_nm=0.4,
             contrast=(0.25, 0.25), contrast_spread=0.9, dose=(20.0, 20.0), lines=0, specks=0.0, bend_count=0,
             halo=0.0, lobe=0.0, bean=0.0)


def test_visibility_rule_drops_invisible_defects():
    cfg = TemConfig(**FAINT)
    all_lab = simulate_tem(sample_rng(5, 0), cfg)
    ruled = simulate_tem(sample_rng(5, 0), cfg.replace(min_snr=3.0), layers=True)
    p = ruled.params
    assert p["n_invisible"] > 0 and p["n_labels"] == p["n_defects"] - p["n_invisible"] == len(ruled.boxes)
    assert len(all_lab.boxes) == p["n_defects"]  # same rendering, every defect labelled without the rule
    assert np.array_equal(all_lab.image, ruled.image)  # the rule changes labels, not pixels ("keep")
    # every dropped defect is still rendered (its deficit is in the defect layer) but unlabelled
    kept = {(round(float(x), 3), round(float(y), 3)) for x, y in zip(ruled.defects["x"], ruled.defects["y"])}
    dropped = [d for d in all_lab.defects if (round(float(d["x"]), 3), round(float(d["y"]), 3)) not in kept]
    assert len(dropped) == p["n_invisible"]
    for d in dropped:
        r, c = min(int(d["y"]), 191), min(int(d["x"]), 191)
        assert ruled.layers["defects"][r, c] > 0 and ruled.mask[r, c] == 0
    # the kept ones pass the rule on the final image, the dropped ones fail it
    b = ruled.boxes
    tight = np.stack([b["tx0"], b["ty0"], b["tx1"], b["ty1"]], 1)
    ab = all_lab.boxes
    every = np.stack([ab["tx0"], ab["ty0"], ab["tx1"], ab["ty1"]], 1)
    size = np.maximum(every[:, 2] - every[:, 0], every[:, 3] - every[:, 1])
    ss = scale_space(ruled.image, _default_sigmas(size.min(), size.max()))
    ss.set_background(_free_mask(ruled.image.shape, every, 2.0))
    assert np.all(visibility(ss, tight)[0] >= 3.0 - 1e-4)


def test_lookalike_rules_reduce_unlabelled_lookalikes():
    cfg = TemConfig.from_preset("ti", size=256)
    counts = {}
    for mode in ("keep", "suppress", "label"):
        n = 0
        for i in range(2):
            s = simulate_tem(sample_rng(1, i), cfg.replace(lookalikes=mode))
            b = s.boxes
            n += label_noise(s.image, np.stack([b["tx0"], b["ty0"], b["tx1"], b["ty1"]], 1))["n_lookalikes"]
            if mode == "label":
                assert s.params["n_lookalike_labels"] > 0 or s.params["n_lookalikes"] == 0
        counts[mode] = n
    assert counts["keep"] >= 3
    # suppress flattens them; label turns them into labels (the size range of the labels then
    # shifts a little, so a few new ones count), both leave far fewer unlabelled look-alikes
    assert counts["suppress"] <= 0.5 * counts["keep"] and counts["label"] < counts["keep"]


def _blob_image(rng, centres, depth=0.3, sigma=2.5, size=160):
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    img = np.full((size, size), 0.5, np.float32)
    for i, (x, y) in enumerate(centres):
        d = depth * (2.0 if i == 0 else 1.0)  # the first blob is the darkest
        img -= (0.5 * d * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))).astype(np.float32)
    return img + rng.normal(0, 0.01, img.shape).astype(np.float32)


def test_label_noise_tells_clean_from_noisy_labels():
    rng = np.random.default_rng(0)
    centres = [(30, 30), (90, 40), (130, 120), (40, 120), (100, 90)]
    img = _blob_image(rng, centres)
    r = 5.0
    boxes = np.array([(x - r, y - r, x + r, y + r) for x, y in centres])
    clean = label_noise(img, boxes)
    assert clean["n_invisible"] == 0 and clean["n_lookalikes"] == 0
    assert np.all(clean["snr"] > 5)
    # noisy: one label on empty background (invisible), one real blob left unlabelled (look-alike)
    noisy_boxes = np.concatenate([boxes[1:], [(140 - r, 20 - r, 140 + r, 20 + r)]])
    noisy = label_noise(img, noisy_boxes)
    assert noisy["n_invisible"] == 1 and noisy["invisible"][-1]
    assert noisy["n_lookalikes"] == 1
    look = noisy["lookalikes"][0]
    assert abs(look["x"] - 30) < 3 and abs(look["y"] - 30) < 3
    assert noisy["invisible_fraction"] == pytest.approx(1 / 5)


# -- 6b: the rule once more on the final (augmented) image ----------------------------------------------
def test_relabel_final_follows_noise_added_after_rendering():
    """Noise added after rendering hides faint defects: the rule on the final image drops their
    labels (renumbering mask and boxes together); without the rule the labels stay."""
    from simgen.simulate.tem import relabel_final

    cfg = TemConfig(**{**FAINT, "dose": (0.0, 0.0)}, min_snr=2.5)
    s = TemSampler(cfg, seed=2)(0)
    assert len(s["boxes"]) >= 4
    same = relabel_final(s["image"], s["mask"], s["boxes"], cfg)
    assert same[3]["n_invisible"] == 0 and len(same[2]) == len(s["boxes"])  # clean: the render's rule holds
    noisy = np.clip(s["image"] + np.random.default_rng(0).normal(0, 0.08, s["image"].shape), 0, 1).astype(np.float32)
    image, mask, boxes, info = relabel_final(noisy, s["mask"], s["boxes"], cfg)
    assert 0 < info["n_invisible"] < len(s["boxes"]) and len(boxes) == len(s["boxes"]) - info["n_invisible"]
    assert np.array_equal(boxes["instance"], np.arange(1, len(boxes) + 1)) and int(mask.max()) == len(boxes)
    for b in boxes:  # each kept box is the tight box of its instance's pixels in the new mask
        rows, cols = np.nonzero(mask == b["instance"])
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (b["tx0"], b["ty0"], b["tx1"], b["ty1"])
    assert np.array_equal(image, noisy)  # lookalikes="keep": pixels untouched
    kept = relabel_final(noisy, s["mask"], s["boxes"], cfg.replace(min_snr=0.0))
    assert len(kept[2]) == len(s["boxes"])


def test_relabel_final_flattens_lookalikes_of_a_fixed_size_range():
    """A dark blob far larger than the image's labelled defects is a look-alike only within a fixed
    ``lookalike_px`` range (the sizes a detector is trained for), and is flattened then."""
    from simgen.simulate.tem import BOX_DTYPE, relabel_final

    img = _blob_image(np.random.default_rng(1), [(40, 40), (120, 40), (40, 120)], sigma=2.0)
    yy, xx = np.mgrid[0:160, 0:160] + 0.5
    img -= (0.3 * np.exp(-((xx - 115) ** 2 + (yy - 115) ** 2) / (2 * 6.0**2))).astype(np.float32)  # big blob
    mask = np.zeros((160, 160), np.int32)
    boxes = np.zeros(3, BOX_DTYPE)
    for i, (x, y) in enumerate([(40, 40), (120, 40), (40, 120)]):
        mask[y - 3:y + 3, x - 3:x + 3] = i + 1
        for cols in (("tx0", "ty0", "tx1", "ty1"), ("x0", "y0", "x1", "y1")):
            for c, v in zip(cols, (x - 3, y - 3, x + 3, y + 3)):
                boxes[c][i] = v
    boxes["instance"] = np.arange(1, 4)
    rule = TemConfig(min_snr=2.0, lookalikes="suppress")
    own = relabel_final(img, mask, boxes, rule)
    fixed = relabel_final(img, mask, boxes, rule.replace(lookalike_px=(5.0, 45.0)))
    assert own[3]["n_lookalikes"] == 0 and np.array_equal(own[0], img)
    assert fixed[3]["n_lookalikes"] >= 1 and len(fixed[2]) == 3
    assert fixed[0][115, 115] > img[115, 115] + 0.1  # the big blob is flattened, the labelled ones are not
    assert abs(float(fixed[0][40, 40]) - float(img[40, 40])) < 0.02
    with pytest.raises(ParameterError, match="lookalike_px"):
        rule.replace(lookalike_px=(10.0, 5.0)).validate()
    with pytest.raises(ParameterError, match="label"):
        relabel_final(img, mask, boxes, rule.replace(lookalikes="label"))
    with pytest.raises(ParameterError, match="does not match"):
        relabel_final(img, mask, boxes[:2], rule)


def test_augmented_sampler_relabels_after_the_augmentation():
    from simgen.augment import AugmentedSampler
    from simgen.simulate.film import FilmSampler

    cfg = TemConfig(**{**FAINT, "dose": (0.0, 0.0)}, min_snr=2.5)
    plain = AugmentedSampler(TemSampler(cfg, seed=4), "GN", seed=4)
    ruled = AugmentedSampler(TemSampler(cfg, seed=4), "GN", seed=4, relabel=True)
    n_plain = n_ruled = 0
    for i in range(3):
        a, b = plain(i), ruled(i)
        n_plain, n_ruled = n_plain + len(a["boxes"]), n_ruled + len(b["boxes"])
        assert b["provenance"]["relabel"]["n_invisible"] == len(a["boxes"]) - len(b["boxes"])
        assert int(b["mask"].max()) == len(b["boxes"])
    assert n_ruled < n_plain  # GN hides some of the faint defects
    assert ruled.describe()["augment"]["relabel"] is True
    assert np.array_equal(ruled(1)["image"], ruled(1)["image"])  # deterministic
    with pytest.raises(ParameterError, match="relabel"):
        AugmentedSampler(FilmSampler(), "GN", relabel=True)
