"""Realism of synthetic TEM images vs the real annotated dev sets (figure + numbers).

For each real set in ``../shared/realdata/dev`` (creme_316L, dsva_fecral, ti_anneal)
and the matching preset (creme, dsva, ti):

* power spectrum: radially averaged PSD of ``I / mean − 1`` (512² tiles), compared
  as the rms of ``log10(P_syn / P_real)`` over log-spaced bins from 1/256 to 1/2
  cycles/px ("psd_dex", 0 = identical; 0.3 = a factor 2);
* intensity histogram: 1-D Wasserstein distance between the pooled pixel values
  ("hist_w1", in grey levels of [0, 1]) and the 1/50/99 % percentiles;
* defect sizes: longer box side (px) percentiles of labels, their median ratio and the
  Kolmogorov–Smirnov distance of the log sizes; densities per Mpx; box darkness
  (``simgen.simulate.match.box_depth``).

``--derive`` prints the dataset-level statistics the presets were derived from;
``--match-check`` measures ``simgen simulate tem --match`` on every dev image (its
estimates against the labels, and the spectrum of matched synthetic images against
the image).
Writes ``docs/figures/tem_realism.png`` (``--out``) and prints one JSON object of
figures as its last line.  Single-threaded.

Usage::

    python benchmarks/realism_tem.py            # 24 synthetic 512² images per preset
    python benchmarks/realism_tem.py --quick    # 6 per preset, < 1 min
    python benchmarks/realism_tem.py --derive   # preset statistics from the dev sets
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simgen.datasets.formats.yolo import open_yolo_folder  # noqa: E402
from simgen.simulate.match import box_depth, estimate, label_statistics, radial_psd  # noqa: E402
from simgen.simulate.tem import PRESETS, TemConfig, TemSampler  # noqa: E402

REAL = ROOT.parent / "shared" / "realdata" / "dev"
SETS = {"creme": "creme_316L", "dsva": "dsva_fecral", "ti": "ti_anneal"}


def _real(name):
    f = open_yolo_folder(REAL / SETS[name])
    images, boxes = [], []
    for i in range(len(f)):
        images.append(f.image(i))
        boxes.append(f.boxes(i)[["x0", "y0", "x1", "y1"]].to_numpy())
    return images, boxes


def _synthetic(name, n, size=512, seed=0):
    s = TemSampler(TemConfig.from_preset(name, size=size), seed=seed)
    images, boxes = [], []
    for i in range(n):
        o = s(i)
        images.append(o["image"])
        b = o["boxes"]
        boxes.append(np.stack([b["x0"], b["y0"], b["x1"], b["y1"]], 1))
    return images, boxes


def _psd(images):
    k = None
    acc = []
    for img in images:
        kk, p = radial_psd(img, n_bins=24)
        if k is None or len(kk) == len(k):
            k = kk
            acc.append(p)
    return k, np.mean(acc, axis=0)


def _pixels(images, cap=2_000_000, seed=0):
    px = np.concatenate([np.asarray(i, np.float32).ravel() for i in images])
    if px.size > cap:
        px = np.random.default_rng(seed).choice(px, cap, replace=False)
    return px


def _w1(a, b):
    qs = np.linspace(0.0005, 0.9995, 2000)
    return float(np.mean(np.abs(np.quantile(a, qs) - np.quantile(b, qs))))


def _ks(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def derive() -> dict:
    """Dataset-level statistics of the dev sets (what the presets were derived from)."""
    out = {}
    for name in SETS:
        images, boxes = _real(name)
        st = label_statistics(images, boxes)
        est = [estimate(img, boxes=b) for img, b in zip(images, boxes)]  # background with the labels inpainted

        def med(key, est=est):
            return float(np.median([e[key] for e in est]))

        st.update(
            level=med("level"), blur=med("blur"), dose=med("dose"), read_noise=med("read_noise"),
            noise_std=med("noise_std"), anisotropy=med("anisotropy"), texture_skew=med("texture_skew"),
            match_size=med("defect_size_px"),
            match_contrast=med("contrast"),
            texture=[float(x) for x in np.median([e["texture"] for e in est], axis=0)],
        )
        out[name] = {k: (np.round(v, 4).tolist() if isinstance(v, (list, np.ndarray)) else
                         (round(v, 4) if isinstance(v, float) else v)) for k, v in st.items()}
    return out


def compare(n: int) -> tuple[dict, dict]:
    figures, curves = {}, {}
    for name in SETS:
        t0 = time.perf_counter()
        r_img, r_box = _real(name)
        s_img, s_box = _synthetic(name, n)
        kr, pr = _psd(r_img)
        ks, ps = _psd(s_img)
        m = min(len(kr), len(ks))
        dex = np.log10(ps[:m] / pr[:m])
        rpx, spx = _pixels(r_img), _pixels(s_img)
        rs, ss = label_statistics(r_img, r_box), label_statistics(s_img, s_box)
        r_maj = np.concatenate([np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) for b in r_box if len(b)])
        s_maj = np.concatenate([np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) for b in s_box if len(b)])
        figures[name] = {
            "psd_dex": round(float(np.sqrt(np.mean(dex**2))), 3),
            "psd_dex_max": round(float(np.max(np.abs(dex))), 3),
            "hist_w1": round(_w1(rpx, spx), 4),
            "pct_real": [round(float(x), 3) for x in np.percentile(rpx, [1, 50, 99])],
            "pct_syn": [round(float(x), 3) for x in np.percentile(spx, [1, 50, 99])],
            "size_median_real": round(rs["major_pct"][2], 1),
            "size_median_syn": round(ss["major_pct"][2], 1),
            "size_pct_real": [round(x, 1) for x in rs["major_pct"]],
            "size_pct_syn": [round(x, 1) for x in ss["major_pct"]],
            "size_ks": round(_ks(np.log(r_maj), np.log(s_maj)), 3),
            "density_real": [round(x, 1) for x in rs["density_per_mpx"]],
            "density_syn": [round(x, 1) for x in ss["density_per_mpx"]],
            "depth_median_real": round(rs["depth_pct"][2], 3),
            "depth_median_syn": round(ss["depth_pct"][2], 3),
            "n_real_images": len(r_img),
            "n_syn_images": n,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        curves[name] = {"k": kr[:m], "psd_real": pr[:m], "psd_syn": ps[:m], "px_real": rpx, "px_syn": spx,
                        "maj_real": r_maj, "maj_syn": s_maj, "img_real": r_img[0], "img_syn": s_img[0]}
    return figures, curves


def match_check(n_syn: int = 3) -> dict:
    """How well ``--match`` works: estimates from each real image (no labels) vs its labels,
    and the spectrum of images simulated from the matched config vs the real image."""
    from simgen.simulate.tem import config_from_match

    out = {}
    for name in SETS:
        rows = []
        images, boxes = _real(name)
        for img, b in zip(images, boxes):
            est = estimate(img)
            maj = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
            cfg = config_from_match(est, TemConfig(size=512, single_class="loop"))
            s = TemSampler(cfg, seed=0)
            syn = [s(i)["image"] for i in range(n_syn)]
            kr, pr = _psd([img])
            ks, ps = _psd(syn)
            m = min(len(kr), len(ks))
            rows.append({
                "size_ratio": est["defect_size_px"] / float(np.median(maj)) if len(maj) else float("nan"),
                "density_ratio": est["density_per_mpx"] / (len(b) / (img.size / 1e6)) if len(b) else float("nan"),
                "contrast": est["contrast"],
                "label_depth": float(np.median(box_depth(img, b))) if len(b) else float("nan"),
                "psd_dex": float(np.sqrt(np.mean(np.log10(ps[:m] / pr[:m]) ** 2))),
            })
        out[name] = {k: round(float(np.nanmedian([r[k] for r in rows])), 3) for k in rows[0]}
        out[name]["size_ratio_range"] = [round(float(np.nanmin([r["size_ratio"] for r in rows])), 2),
                                         round(float(np.nanmax([r["size_ratio"] for r in rows])), 2)]
        out[name]["density_ratio_range"] = [round(float(np.nanmin([r["density_ratio"] for r in rows])), 2),
                                            round(float(np.nanmax([r["density_ratio"] for r in rows])), 2)]
    return out


def figure(curves: dict, figures: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 5, figsize=(17, 3.3 * len(curves)))
    for row, (name, c) in enumerate(curves.items()):
        f = figures[name]
        ax = axes[row]
        real = c["img_real"]
        crop = real[:512, :512]
        ax[0].imshow(crop, cmap="gray", vmin=0, vmax=1)
        ax[0].set_title(f"real {SETS[name]} (512² crop)", fontsize=8)
        ax[1].imshow(c["img_syn"], cmap="gray", vmin=0, vmax=1)
        ax[1].set_title(f"synthetic --preset {name}", fontsize=8)
        for a in ax[:2]:
            a.set_axis_off()
        ax[2].loglog(c["k"], c["psd_real"], "k-", label="real")
        ax[2].loglog(c["k"], c["psd_syn"], "r--", label="synthetic")
        ax[2].set_xlabel("k (cycles/px)", fontsize=8)
        ax[2].set_title(f"power spectrum (rms {f['psd_dex']:.2f} dex)", fontsize=8)
        ax[2].legend(fontsize=7)
        bins = np.linspace(0, 1, 101)
        ax[3].hist(c["px_real"], bins=bins, density=True, histtype="step", color="k", label="real")
        ax[3].hist(c["px_syn"], bins=bins, density=True, histtype="step", color="r", ls="--", label="synthetic")
        ax[3].set_title(f"intensity histogram (W1 {f['hist_w1']:.3f})", fontsize=8)
        ax[3].legend(fontsize=7)
        sb = np.geomspace(2, 128, 30)
        ax[4].hist(c["maj_real"], bins=sb, density=True, histtype="step", color="k", label="real labels")
        ax[4].hist(c["maj_syn"], bins=sb, density=True, histtype="step", color="r", ls="--", label="synthetic labels")
        ax[4].set_xscale("log")
        ax[4].set_xlabel("box longer side (px)", fontsize=8)
        ax[4].set_title(f"defect sizes (median {f['size_median_real']:.0f} vs {f['size_median_syn']:.0f} px, "
                        f"KS {f['size_ks']:.2f})", fontsize=8)
        ax[4].legend(fontsize=7)
        for a in ax[2:]:
            a.tick_params(labelsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 synthetic images per preset")
    ap.add_argument("--n", type=int, default=24, help="synthetic images per preset")
    ap.add_argument("--derive", action="store_true", help="print the dev-set statistics behind the presets")
    ap.add_argument("--match-check", action="store_true", help="accuracy of --match on every dev image")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "tem_realism.png"))
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(json.dumps({"error": f"real data not found at {REAL}"}))
        return 2
    if args.derive:
        stats = derive()
        for name, st in stats.items():
            print(name, json.dumps(st))
        print(json.dumps({"threads": 1, "derived": stats}))
        return 0
    if args.match_check:
        res = match_check(2 if args.quick else 3)
        for name, r in res.items():
            print(name, json.dumps(r))
        print(json.dumps({"threads": 1, "match_check": res}))
        return 0
    n = 6 if args.quick else args.n
    figures, curves = compare(n)
    figure(curves, figures, Path(args.out))
    for name, f in figures.items():
        print(name, json.dumps(f))
    print(json.dumps({"threads": 1, "figure": str(Path(args.out).relative_to(ROOT)) if Path(args.out).is_relative_to(ROOT)
                      else args.out, "presets": list(PRESETS), **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
