"""The sim2real report (the last step of :func:`simgen.experiments.sim2real_tem.run_sim2real`):
score lines, verdict, ``report.md`` / ``report.json`` and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_path, atomic_write_text
from simgen.datasets.h5io import open_dataset
from simgen.evaluate.report import to_jsonable
from simgen.experiments.scoring import IOU
from simgen.progress import format_duration

__all__ = ["LABELS", "method_label", "score_line", "verdict", "realism_line", "summary_text", "markdown", "write_figures",
           "write_report"]

LABELS = {
    "synthetic_yolo": "YOLO, synthetic only (threshold from synthetic validation)",
    "synthetic_yolo_loo_threshold": "YOLO, synthetic only (threshold from real labels, leave-one-image-out)",
    "log_baseline": "LoG baseline (tuned, leave-one-image-out)",
    "log_baseline_insample": "LoG baseline (tuned and scored on the same images; optimistic)",
    "real_kfold_yolo": "YOLO trained on real images (k-fold)",
    "synthetic_plus_few_real": "YOLO synthetic + few real (fine-tuned, k-fold)",
    "log_synthetic": "LoG tuned on synthetic images only (zero real labels)",
    "fused_log": "YOLO + synthetic-tuned LoG, fused (scores calibrated on synthetic validation, equal weights)",
    "synthetic_yolo_bn": "YOLO synthetic + BatchNorm adaptation (unlabeled real, held-out folds)",
    "synthetic_yolo_self_train": "YOLO synthetic + self-training (pseudo-labels, held-out folds)",
    "synthetic_yolo_adapted": "YOLO synthetic + BatchNorm + self-training (held-out folds)",
    "synthetic_yolo_backgrounds": "YOLO synthetic + fine-tuned on renders on the other folds' real images (held-out folds)",
}


#: How a row names a student threshold that is not the synthetic-validation one (``student_conf``).
STUDENT_CONF_LABELS = {"teacher_count": "student threshold: the synthetic model's count on the unlabeled images"}


def method_label(key: str, m: dict) -> str:
    """The report name of method ``key`` (with its self-training rounds and student-threshold rule when
    they are not the defaults)."""
    label = LABELS.get(key, key)
    rounds = int(m.get("self_train_rounds") or 1)
    if rounds > 1:
        label = f"{label}, {rounds} rounds"
    rule = STUDENT_CONF_LABELS.get(m.get("student_conf"))
    return f"{label} — {rule}" if rule else label


def score_line(name: str, m: dict) -> str:
    def g(k):
        v = m.get(k)
        return "n/a" if v is None else f"{v:.3f}"

    return f"{name}: P {g('precision')} R {g('recall')} F1 {g('f1')} AP {g('ap')} peak F1 {g('peak_f1')}"


def verdict(methods: dict) -> str:
    """Like-for-like comparison with the LoG baseline: F1 with thresholds from held-out real labels
    (leave-one-image-out for both) and AP (threshold-free)."""
    s = methods.get("synthetic_yolo_loo_threshold") or methods.get("synthetic_yolo", {})
    b = methods.get("log_baseline")
    if not b or s.get("f1") is None or b.get("f1") is None:
        return "no baseline comparison"
    text = (f"synthetic-only YOLO {_against(s, b)} the tuned LoG baseline: F1 {s['f1']:.3f} vs {b['f1']:.3f} "
            f"({s['f1'] - b['f1']:+.3f}; thresholds from held-out real labels for both), AP {s.get('ap') or 0:.3f} vs "
            f"{b.get('ap') or 0:.3f} ({(s.get('ap') or 0.0) - (b.get('ap') or 0.0):+.3f})")
    for key, what in ZERO_LABEL_VARIANTS.items():  # no real-label threshold for them: their own, zero-label one
        m = methods.get(key)
        if m and m.get("f1") is not None:
            text += (f"; {what} it {_against(m, b)} it: F1 {m['f1']:.3f} at its zero-label threshold vs "
                     f"{b['f1']:.3f}, AP {m.get('ap') or 0:.3f} vs {b.get('ap') or 0:.3f}")
    return text


#: Zero-label variants of the synthetic model that the verdict also sets against the tuned LoG.
ZERO_LABEL_VARIANTS = {
    "fused_log": "fused with the synthetic-tuned LoG",
    "synthetic_yolo_bn": "with BatchNorm adaptation",
    "synthetic_yolo_self_train": "self-trained",
    "synthetic_yolo_adapted": "with BatchNorm adaptation and self-training",
    "synthetic_yolo_backgrounds": "fine-tuned on real backgrounds",
}


def _against(s: dict, b: dict) -> str:
    """``beats``, ``is mixed against`` or ``does not beat``: F1 and AP of ``s`` against ``b``."""
    d_f1 = s["f1"] - b["f1"]
    d_ap = (s.get("ap") or 0.0) - (b.get("ap") or 0.0)
    if d_f1 > 0 and d_ap > 0:
        return "beats"
    if d_f1 > 0 or d_ap > 0:
        return "is mixed against"
    return "does not beat"


def realism_line(realism: dict) -> str:
    """The report's line on the realism judge (``realism``: the ``realism`` entry of ``report.json``)."""
    return (f"Realism judge: synthetic training images vs the real images, AUC {realism['auc']:.3f} ± "
            f"{realism['auc_std']:.3f} (0.5 = cannot tell)")


def summary_text(report: dict) -> str:
    lines = [score_line(method_label(k, v), v) for k, v in report["methods"].items()]
    lines.append(report["verdict"])
    if report.get("realism"):
        lines.append(realism_line(report["realism"]))
    lines.append(f"total time {format_duration(report['timing']['total'])}, {report['threads']} thread(s)")
    return "\n".join(lines)


def fmt(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    name = Path(report["real"]).name
    lines = [f"# sim2real on `{name}`", "",
             f"{report['n_real_images']} real images, {report['n_gt']} annotated defects; matching at IoU "
             f"{report['iou']} (greedy); P/R/F1 at the confidence threshold chosen on validation data "
             "(synthetic validation images for synthetic models), AP = COCO 101-point, peak F1 = best threshold in "
             "hindsight.", "",
             "| method | P | R | F1 | AP | peak F1 |", "|---|---|---|---|---|---|"]
    for key, m in report["methods"].items():
        lines.append(f"| {method_label(key, m)} | {fmt(m.get('precision'))} | {fmt(m.get('recall'))} | "
                     f"{fmt(m.get('f1'))} | {fmt(m.get('ap'))} | {fmt(m.get('peak_f1'))} |")
    lines += ["", f"**{report['verdict']}**", ""]
    if report.get("realism"):
        lines += [f"{realism_line(report['realism'])}; spectrum distance "
                  f"{report['realism']['spectrum_distance']:.3f} dec, histogram distance "
                  f"{report['realism']['histogram_distance']:.4f} ([judge report]({report['realism']['report']})).", ""]
    for note in report.get("notes") or []:
        lines += [f"_Note: {note}._", ""]
    if report["robustness"]:
        lines += ["## Robustness (skimage `random_noise` defaults on the real images)", "",
                  "| noise | F1 YOLO | drop | F1 LoG | drop |", "|---|---|---|---|---|"]
        for k, v in report["robustness"].items():
            lines.append(f"| {k} | {fmt(v['f1'])} | {fmt(v['drop'], '.1%')} | {fmt(v.get('log_f1'))} | "
                         f"{fmt(v.get('log_drop'), '.1%')} |")
        lines.append("")
    per_image = report["methods"].get("synthetic_yolo", {}).get("per_image", [])
    if per_image:
        lines += ["## Synthetic-only YOLO per image", "", "| image | n_gt | P | R | F1 |", "|---|---|---|---|---|"]
        for r in per_image:
            lines.append(f"| {r['image']} | {r['n_gt']} | {fmt(r['precision'])} | {fmt(r['recall'])} | "
                         f"{fmt(r['f1'])} |")
        lines.append("")
    by_size = report["methods"].get("synthetic_yolo", {}).get("errors_by_size", [])
    if by_size:
        lines += ["## Synthetic-only YOLO: errors by box size", "",
                  "Box side √(w h) in px; predictions at the synthetic threshold binned by their own size, "
                  "annotated defects by theirs (where the false positives and the misses are).", "",
                  "| side (px) | predicted | false positives | annotated | missed |", "|---|---|---|---|---|"]
        for r in by_size:
            hi = "∞" if r["side_hi"] is None else f"{r['side_hi']:g}"
            lines.append(f"| {r['side_lo']:g}–{hi} | {r['n_pred']} | {r['fp']} | {r['n_gt']} | {r['missed']} |")
        lines.append("")
    sc = report["scale"]
    lines += ["## Scale", "",
              f"Tiles of {sc['tile']} px at native resolution. Defect size estimated from the real images: "
              f"{fmt(sc.get('defect_size_px_estimate'), '.1f')} px; synthetic boxes (side, px): "
              f"{json.dumps({k: round(v, 1) for k, v in (sc.get('synthetic_box_size_px') or {}).items()})}.", "",
              "## Timing", "", ", ".join(f"{k} {format_duration(v)}" for k, v in report["timing"].items()) +
              f"; {report['threads']} thread(s); real-image inference {report['fps_real']:.2f} images/s.", "",
              "![PR curves](pr_curves.png)", "", "![examples](examples.png)", "",
              "![synthetic examples](synthetic_examples.png)", ""]
    return "\n".join(lines)


def write_report(result, real, preds, log=None) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the figures of a :class:`~simgen.experiments.sim2real_tem.Sim2RealResult`.

    ``real`` is the :class:`~simgen.experiments.sim2real_real.RealSet` and ``preds`` the
    synthetic model's :class:`~simgen.experiments.sim2real_real.RealPredictions` (for the
    example frame).  Returns the files written.
    """
    out = Path(result.output)
    files = write_figures(out, result.methods, real, preds, result.synthetic.train)
    report = result.to_dict()
    files.append(atomic_write_text(out / "report.json", json.dumps(to_jsonable(report), indent=2) + "\n",
                                   overwrite=True))
    files.append(atomic_write_text(out / "report.md", markdown(report), overwrite=True))
    return files


def write_figures(out: Path, methods: dict, real, preds, synthetic_train) -> list[Path]:
    """``pr_curves.png`` (every method with a curve), ``examples.png`` (the real image with the most
    annotations: truth vs synthetic-only predictions) and ``synthetic_examples.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = [out / "pr_curves.png", out / "examples.png", out / "synthetic_examples.png"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for key, m in methods.items():
        c = m.get("_curve")
        if c is None or not len(c):
            continue
        ax.plot(c["recall"], c["precision"], label=f"{LABELS.get(key, key).split(' (')[0]} (AP {fmt(m.get('ap'))})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{real.path.name}: IoU ≥ {IOU}")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    _save(fig, files[0], dpi=120)

    gt = real.gt
    k = int(gt["sample"].value_counts().idxmax()) if len(gt) else 0
    img = real.image(k)
    p = preds.pred[(preds.pred["sample"] == k) & (preds.pred["score"] >= preds.conf)]
    g = gt[gt["sample"] == k]
    h, w = img.shape
    side = min(h, w, 512)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.7))
    for ax, boxes, colour, title in ((axes[0], g, "lime", "annotation"),
                                     (axes[1], p, "red", "YOLO, synthetic only")):
        ax.imshow(img[:side, :side], cmap="gray", vmin=0, vmax=1)
        for r in boxes.itertuples():
            if r.x0 < side and r.y0 < side:
                ax.add_patch(plt.Rectangle((r.x0 - 0.5, r.y0 - 0.5), r.x1 - r.x0, r.y1 - r.y0, fill=False,
                                           ec=colour, lw=0.8))
        ax.set_title(f"{real.names[k]}: {title}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    _save(fig, files[1], dpi=110)

    with open_dataset(synthetic_train) as ds:
        n = min(4, ds.n)
        fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2))
        for i, ax in enumerate(np.atleast_1d(axes)):
            ax.imshow(ds.image(i), cmap="gray", vmin=0, vmax=1)
            b = ds.rows("boxes", i)
            if b is not None:
                for r in b.itertuples():
                    ax.add_patch(plt.Rectangle((r.x0 - 0.5, r.y0 - 0.5), r.x1 - r.x0, r.y1 - r.y0, fill=False,
                                               ec="lime", lw=0.6))
            ax.axis("off")
    fig.suptitle("synthetic training images (TEM simulator + augmentation)", fontsize=9)
    fig.tight_layout()
    _save(fig, files[2], dpi=110)
    return files


def _save(fig, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
