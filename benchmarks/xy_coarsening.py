"""Coarsening exponent of the thermal XY model after a quench (numba backend).

Quenches an L x L periodic lattice from a random start for several seeds, counts the
defects (plaquette winding numbers) at log-spaced times, averages over seeds and fits
(:func:`simgen.simulate.xy.coarsening_fit`)

* ``log n`` vs ``log(t / ln t)`` — theory ``n ∝ (t / ln t)^−1`` gives slope −1;
* ``log n`` vs ``log t`` — plain power law ``n ∝ t^−a`` (effective ``a`` < 1).

Times are in units of the dynamics (``t = steps · Δt``, κ = 1).  The fit window
``t ∈ [10, 1000]`` starts after the initial transient and ends before finite size matters
(~20 defects left at L = 256).  At T = 0 the coarsening stops on the lattice (defects far
apart get pinned by the Peierls barrier of the discrete lattice), so the default is the
film default T = 0.05; the full run also reports the T = 0 counts to show the pinning.

Usage: ``python benchmarks/xy_coarsening.py [--quick]``; the last line printed is one JSON object.
Threads: numba uses ``NUMBA_NUM_THREADS`` (1 if unset here).
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="L = 128, 2 seeds (< 1 minute)")
    ap.add_argument("--temperature", type=float, default=0.05)
    args = ap.parse_args(argv)

    import numba

    from simgen.simulate.xy import coarsening_fit, defect_counts

    L, seeds = (128, range(2)) if args.quick else (256, range(8))
    dt, kappa, T = 0.1, 1.0, args.temperature
    t_lo, t_hi = 10.0, (300.0 if args.quick else 1000.0)
    steps = np.unique(np.geomspace(t_lo / dt, t_hi / dt, 16).round().astype(int))
    print(f"L={L}, seeds={len(seeds)}, T={T}, dt={dt}, kappa={kappa}, numba threads={numba.get_num_threads()}")
    t0 = time.perf_counter()
    counts = defect_counts(L, steps, seeds=seeds, dt=dt, kappa=kappa, temperature=T, backend="numba")
    wall = time.perf_counter() - t0
    n = counts.mean(0)
    t = steps * dt
    for ti, ni, si in zip(t, n, counts.std(0)):
        print(f"t={ti:8.1f}  n={ni:8.1f} ± {si:.1f}")
    fit = coarsening_fit(t, n)
    print(f"log n vs log(t/ln t): exponent {fit['exponent_t_over_log_t']:.3f} ± "
          f"{fit['exponent_t_over_log_t_stderr']:.3f} (theory 1)")
    print(f"plain power law n ~ t^-a: a = {fit['exponent_power_law']:.3f} ± {fit['exponent_power_law_stderr']:.3f}")
    out = {"L": L, "seeds": len(seeds), "temperature": T, "dt": dt, "kappa": kappa,
           "t_min": float(t[0]), "t_max": float(t[-1]), "wall_s": round(wall, 2),
           **{k: round(v, 4) for k, v in fit.items()},
           "n_at_t_min": float(n[0]), "n_at_t_max": float(n[-1])}
    if not args.quick:
        late = np.array([1000, 4000]) * 10
        c0 = defect_counts(L, late, seeds=seeds, dt=dt, kappa=kappa, temperature=0.0, backend="numba").mean(0)
        cT = defect_counts(L, late, seeds=seeds, dt=dt, kappa=kappa, temperature=T, backend="numba").mean(0)
        print(f"pinning: T=0 n(t=1000)={c0[0]:.1f}, n(t=4000)={c0[1]:.1f}; "
              f"T={T} n(t=1000)={cT[0]:.1f}, n(t=4000)={cT[1]:.1f}")
        out.update(T0_n_t1000=float(c0[0]), T0_n_t4000=float(c0[1]), n_t4000=float(cT[1]))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
