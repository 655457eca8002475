"""Benchmark: matching + trackpy linking + metrics on a synthetic defect video.

A seeded synthetic video (default 1000 frames, 200 defects per frame, 512 x 512
px, random walk with births and deaths) and noisy predictions (jitter, misses,
false positives, confidences).  Timed end to end, single thread:

1. detection evaluation (score-order matching for PR/AP + quality-order
   matching at the confidence threshold, per-class AP, PR curve);
2. trackpy linking of the kept predictions (search range 5, memory 2, adaptive
   search off) with the chosen ``--link-strategy``;
3. MOT metrics (CLEAR + identity, TrackEval definitions), lifetimes and their
   chi-square / KS comparison, position RMSE.

Then, on the first ``--ref-frames`` frames (default 200; both reference
libraries build dense (ids x ids) matrices whose memory explodes on the full
video): the same pipeline, py-motmetrics (accumulate + compute of MOTA, MOTP,
IDF1, MT, ML, IDSW, Frag) and TrackEval's CLEAR + Identity on the same linked
tracks, for the speed ratios.  Target: >= 28 frames/s end to end.  py-motmetrics is not a
simgen dependency (its IoU helper crashes on NumPy 2); its comparison runs only when it is
installed (``pip install motmetrics``) and is skipped with a note otherwise.

Usage::

    python benchmarks/evaluate.py            # 1000 frames x 200 defects
    python benchmarks/evaluate.py --quick    # 100 frames (< 1 min)

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def synthetic_video(n_frames: int, n_defects: int, size: int = 512, seed: int = 0):
    """Ground-truth tracks and predictions of a random-walk defect video."""
    rng = np.random.default_rng(seed)
    life = 50.0  # mean lifetime in frames
    pos = rng.uniform(0, size, (n_defects, 2))
    ids = np.arange(n_defects)
    half = rng.uniform(3, 7, n_defects)
    next_id = n_defects
    gt_rows = []
    for t in range(n_frames):
        pos = pos + rng.normal(0.0, 1.0, pos.shape)
        die = (rng.random(n_defects) < 1.0 / life) | (pos < 0).any(1) | (pos >= size).any(1)
        k = int(die.sum())
        pos[die] = rng.uniform(0, size, (k, 2))
        half[die] = rng.uniform(3, 7, k)
        ids[die] = np.arange(next_id, next_id + k)
        next_id += k
        gt_rows.append(pd.DataFrame({"sample": t, "track_id": ids.copy(), "x": pos[:, 0], "y": pos[:, 1],
                                     "x0": pos[:, 0] - half, "y0": pos[:, 1] - half,
                                     "x1": pos[:, 0] + half, "y1": pos[:, 1] + half, "class": 0}))
    gt = pd.concat(gt_rows, ignore_index=True)
    keep = rng.random(len(gt)) > 0.05
    pred = gt[keep].drop(columns=["track_id"]).copy()
    jitter = rng.normal(0.0, 0.6, (len(pred), 4))
    pred[["x0", "y0", "x1", "y1"]] += jitter
    pred["x"] = (pred["x0"] + pred["x1"]) / 2
    pred["y"] = (pred["y0"] + pred["y1"]) / 2
    pred["score"] = rng.uniform(0.4, 1.0, len(pred))
    n_fp = int(0.05 * len(gt))
    fp_xy = rng.uniform(0, size, (n_fp, 2))
    fp_h = rng.uniform(3, 7, n_fp)
    fp = pd.DataFrame({"sample": rng.integers(0, n_frames, n_fp), "x": fp_xy[:, 0], "y": fp_xy[:, 1],
                       "x0": fp_xy[:, 0] - fp_h, "y0": fp_xy[:, 1] - fp_h, "x1": fp_xy[:, 0] + fp_h,
                       "y1": fp_xy[:, 1] + fp_h, "class": 0, "score": rng.uniform(0.0, 0.6, n_fp)})
    pred = pd.concat([pred, fp], ignore_index=True).sort_values("sample", kind="stable").reset_index(drop=True)
    return pred, gt


def run_simgen(pred, gt, n_frames, link_strategy):
    from simgen.evaluate.detection import evaluate_detections
    from simgen.evaluate.lifetimes import compare_lifetimes, track_lifetimes
    from simgen.evaluate.tracking import link_tracks, mot_metrics

    times = {}
    t0 = time.perf_counter()
    det = evaluate_detections(pred, gt, threshold=0.15, conf=0.25, n_frames=n_frames)
    t1 = time.perf_counter()
    kept = pred[det.kept].reset_index(drop=True)
    tracks = link_tracks(kept, search_range=5.0, memory=2, link_strategy=link_strategy)
    t2 = time.perf_counter()
    mot = mot_metrics(tracks, gt, threshold=0.5, n_frames=n_frames)
    lt = compare_lifetimes(track_lifetimes(tracks)["lifetime"], track_lifetimes(gt)["lifetime"])
    t3 = time.perf_counter()
    times.update(detection_s=t1 - t0, linking_s=t2 - t1, mot_metrics_s=t3 - t2, total_s=t3 - t0)
    return det, tracks, mot, lt, times


def run_motmetrics(tracks, gt, n_frames):
    import motmetrics as mm

    from simgen.evaluate.matching import box_iou

    t0 = time.perf_counter()
    acc = mm.MOTAccumulator(auto_id=False)
    gs = gt["sample"].to_numpy()
    ps = tracks["sample"].to_numpy()
    gb = gt[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    pb = tracks[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    gid = gt["track_id"].to_numpy()
    pid = tracks["track_id"].to_numpy()
    glo, ghi = np.searchsorted(gs, np.arange(n_frames)), np.searchsorted(gs, np.arange(n_frames), "right")
    plo, phi = np.searchsorted(ps, np.arange(n_frames)), np.searchsorted(ps, np.arange(n_frames), "right")
    for t in range(n_frames):
        # mm.distances.iou_matrix uses np.asfarray (removed in NumPy 2): same distance computed here
        d = 1.0 - box_iou(gb[glo[t]:ghi[t]], pb[plo[t]:phi[t]])
        d[d > 0.5] = np.nan
        acc.update(gid[glo[t]:ghi[t]], pid[plo[t]:phi[t]], d, frameid=t)
    t1 = time.perf_counter()
    mh = mm.metrics.create()
    summary = mh.compute(acc, metrics=["mota", "motp", "idf1", "mostly_tracked", "mostly_lost", "num_switches",
                                       "num_fragmentations"], name="bench")
    t2 = time.perf_counter()
    return summary.iloc[0].to_dict(), {"accumulate_s": t1 - t0, "compute_s": t2 - t1, "total_s": t2 - t0}


def run_trackeval(tracks, gt, n_frames):
    from trackeval.metrics import CLEAR, Identity

    from simgen.evaluate.tracking import tracking_data

    t0 = time.perf_counter()
    data = tracking_data(tracks, gt, similarity="iou", n_frames=n_frames)
    t1 = time.perf_counter()
    clear = CLEAR({"PRINT_CONFIG": False}).eval_sequence(data)
    ident = Identity({"PRINT_CONFIG": False}).eval_sequence(data)
    t2 = time.perf_counter()
    return {**clear, **ident}, {"data_s": t1 - t0, "metrics_s": t2 - t1}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 frames instead of 1000")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--defects", type=int, default=200)
    ap.add_argument("--link-strategy", default="nonrecursive")
    ap.add_argument("--skip-motmetrics", action="store_true")
    ap.add_argument("--ref-frames", type=int, default=200,
                    help="frames for the TrackEval / motmetrics comparison (their memory grows with the square "
                         "of the number of track ids)")
    ap.add_argument("--compare-strategies", action="store_true", help="also time every trackpy link strategy")
    args = ap.parse_args(argv)
    n_frames = args.frames or (100 if args.quick else 1000)

    import trackpy

    trackpy.quiet()
    # warm-up (imports, numba compilation) outside the timing
    wp, wg = synthetic_video(5, 20, seed=1)
    run_simgen(wp, wg, 5, args.link_strategy)

    pred, gt = synthetic_video(n_frames, args.defects, seed=0)
    det, tracks, mot, lt, times = run_simgen(pred, gt, n_frames, args.link_strategy)
    fps = n_frames / times["total_s"]
    s = mot.summary
    print(f"{n_frames} frames x {args.defects} defects, {len(pred)} predictions, 1 thread")
    print(f"simgen: detection {times['detection_s']:.2f} s, linking {times['linking_s']:.2f} s, "
          f"MOT metrics {times['mot_metrics_s']:.2f} s, total {times['total_s']:.2f} s = {fps:.1f} frames/s")
    print(f"  mAP {det.summary['mAP']:.4f} F1 {det.summary['f1']:.4f} MOTA {s['MOTA']:.4f} MOTP {s['MOTP']:.4f} "
          f"IDF1 {s['IDF1']:.4f} IDSW {s['IDSW']} Frag {s['Frag']} MT {s['MT']} ML {s['ML']}")
    out = {"frames": n_frames, "defects_per_frame": args.defects, "threads": 1, "link_strategy": args.link_strategy,
           "frames_per_s": round(fps, 2), **{k: round(v, 3) for k, v in times.items()},
           "mAP": round(det.summary["mAP"], 4), "MOTA": round(s["MOTA"], 4), "IDF1": round(s["IDF1"], 4)}

    # The reference libraries build dense (G+T) x (G+T) matrices for the identity metrics (G, T =
    # number of ids): ~10k ids over 1000 frames need > 7 GB (measured: motmetrics at 7.4 GB RSS
    # before it was stopped).  They are therefore compared on the first --ref-frames frames.
    nr = min(n_frames, args.ref_frames)
    pp, gp = pred[pred["sample"] < nr].reset_index(drop=True), gt[gt["sample"] < nr].reset_index(drop=True)
    _, tr_p, mot_p, _, times_p = run_simgen(pp, gp, nr, args.link_strategy)
    ours_p = {**mot_p.summary}
    out["ref_frames"] = nr
    out["simgen_mot_metrics_ref_s"] = round(times_p["mot_metrics_s"], 3)
    out["simgen_frames_per_s_ref"] = round(nr / times_p["total_s"], 2)
    te, te_times = run_trackeval(tr_p, gp, nr)
    out["trackeval_metrics_s"] = round(te_times["metrics_s"], 3)
    out["trackeval_equal"] = bool(all(np.isclose(te[k], ours_p[k]) for k in te))
    print(f"first {nr} frames: simgen {times_p['total_s']:.2f} s end to end ({out['simgen_frames_per_s_ref']} "
          f"frames/s), MOT metrics step {times_p['mot_metrics_s']:.2f} s")
    print(f"  TrackEval CLEAR+Identity: {te_times['metrics_s']:.2f} s (+ {te_times['data_s']:.2f} s building its "
          f"input); all fields equal to simgen: {out['trackeval_equal']}")
    if not args.skip_motmetrics and importlib.util.find_spec("motmetrics") is None:
        print("  py-motmetrics not installed (not a simgen dependency): its comparison is skipped")
    elif not args.skip_motmetrics:
        mm_sum, mm_times = run_motmetrics(tr_p, gp, nr)
        out["motmetrics_s"] = round(mm_times["total_s"], 3)
        out["motmetrics_over_simgen_mot"] = round(mm_times["total_s"] / times_p["mot_metrics_s"], 1)
        mm_total = times_p["detection_s"] + times_p["linking_s"] + mm_times["total_s"]
        out["motmetrics_pipeline_frames_per_s_ref"] = round(nr / mm_total, 2)
        out["speedup_vs_motmetrics_pipeline"] = round(mm_total / times_p["total_s"], 2)
        print(f"  py-motmetrics: accumulate {mm_times['accumulate_s']:.2f} s + compute {mm_times['compute_s']:.2f} s "
              f"= {mm_times['total_s']:.2f} s ({out['motmetrics_over_simgen_mot']}x simgen's MOT step; pipeline "
              f"with motmetrics {out['motmetrics_pipeline_frames_per_s_ref']} frames/s); "
              f"MOTA {mm_sum['mota']:.4f} MOTP(1-IoU) {mm_sum['motp']:.4f} IDF1 {mm_sum['idf1']:.4f} "
              f"IDSW {mm_sum['num_switches']:.0f} Frag {mm_sum['num_fragmentations']:.0f} "
              f"MT {mm_sum['mostly_tracked']:.0f} ML {mm_sum['mostly_lost']:.0f} "
              f"(simgen: MOTA {ours_p['MOTA']:.4f} MOTP {ours_p['MOTP']:.4f} IDF1 {ours_p['IDF1']:.4f} "
              f"IDSW {ours_p['IDSW']} Frag {ours_p['Frag']} MT {ours_p['MT']} ML {ours_p['ML']})")

    if args.compare_strategies:
        from simgen.evaluate.tracking import link_tracks

        kept = pred[det.kept].reset_index(drop=True)
        for strat in ("nonrecursive", "numba", "recursive", "auto"):
            t0 = time.perf_counter()
            link_tracks(kept, search_range=5.0, memory=2, link_strategy=strat)
            dt = time.perf_counter() - t0
            out[f"link_{strat}_s"] = round(dt, 3)
            print(f"trackpy link_strategy={strat}: {dt:.2f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
