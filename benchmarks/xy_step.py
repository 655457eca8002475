"""Speed of the thermal XY step: site-updates/s of every backend, ratios, bandwidth fractions.

Measures ``simgen.simulate.xy.evolve`` *including the thermal noise* (T = 0.05, Δt = 0.1,
κ = 1) at L = 256, 512, 1024 for: numpy (1 thread), numba with 1 thread, numba with 2
threads (``numba.set_num_threads``), jax (XLA:CPU, 1 intra-op thread unless XLA_FLAGS
says otherwise); numba at T = 0 is also given (stencil without noise).  The numba rows are
the reference kernel (``steps_per_pass=1``, one pass over memory per step); the
``numba_blocked_*`` rows are the temporally blocked kernel (``steps_per_pass=K``, default
``xy.STEPS_PER_PASS``; bit-identical results) measured in the same run, with the ratio
blocked / reference, and at L = 512 a sweep of K on one thread (how the default was chosen).  Each figure is the
best of a few repeats (the machine is shared); next to the wall-clock rate the rate per
CPU-second of the process is printed ("M/CPU-s", threads summed), which stays meaningful
when other jobs share the two cores (the load average is printed at start and end).

Memory model: a step must read φ (4 B) and write φ (4 B) per site = 8 B/site-update (the
unavoidable traffic of one sweep; write-allocate can add 4 B).  The machine's bandwidth is
measured as a large-array copy (``np.copyto``, 2 x bytes per copy / time, like STREAM
"copy"), so the bound is ``bandwidth / 8 B`` site-updates/s and each backend's fraction of
it is reported (with 2 threads against the same, whole-machine, bandwidth).

Usage: ``python benchmarks/xy_step.py [--quick]``; the last line printed is one JSON object.
"""

from __future__ import annotations

import os

# Must precede the numba/jax imports: this benchmark deliberately measures 1 and 2 numba threads.
os.environ["NUMBA_NUM_THREADS"] = "2"
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

BYTES_PER_SITE = 8


def copy_bandwidth(mbytes: int, repeats: int) -> float:
    """GB/s of a large float32 array copy, counting read + write (2 x size)."""
    n = mbytes * 2**20 // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best / 1e9


def rate(fn, phi, target_s: float, repeats: int) -> tuple[float, float]:
    """Best site-updates/s of ``fn(phi, steps)`` by wall clock and per CPU-second of this process.

    ``steps`` is chosen so one run takes ~target_s.  The CPU-time figure (``time.process_time``,
    summed over the process's threads) is robust against other jobs sharing the cores.
    """
    fn(phi, 2)  # compile / warm up
    t = time.perf_counter()
    fn(phi, 2)
    per_step = max((time.perf_counter() - t) / 2, 1e-6)
    steps = max(2, int(target_s / per_step))
    wall = cpu = np.inf
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn(phi, steps)
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return phi.size * steps / wall, phi.size * steps / cpu


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (< 1 minute)")
    args = ap.parse_args(argv)

    import numba

    from simgen.simulate.xy import STEPS_PER_PASS, evolve, random_start

    quick = args.quick
    sizes = (256, 512, 1024)
    target, repeats = (0.15, 2) if quick else (0.6, 3)
    T, dt, kappa = 0.05, 0.1, 1.0

    load0 = os.getloadavg()[0]
    print(f"machine: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
          f"load average {load0:.2f}; numba {numba.__version__} "
          f"(threading layer chosen at first parallel call), numpy {np.__version__}")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}; numpy 1 thread; numba 1 and 2 threads")
    bw = copy_bandwidth(128 if quick else 512, 3 if quick else 5)
    bound = bw * 1e9 / BYTES_PER_SITE
    print(f"memory bandwidth (array copy, read+write): {bw:.1f} GB/s -> stencil bound "
          f"{bound / 1e6:.0f} M site-updates/s at {BYTES_PER_SITE} B/site-update")

    def numpy_fn(p, n):
        return evolve(p, n, dt=dt, kappa=kappa, temperature=T, seed=1, backend="numpy")

    def numba_fn(p, n, temp=T, k=1):
        return evolve(p, n, dt=dt, kappa=kappa, temperature=temp, seed=1, backend="numba", steps_per_pass=k)

    def blocked_fn(k):
        return lambda p, n: numba_fn(p, n, k=k)

    def jax_fn(p, n):
        return evolve(p, n, dt=dt, kappa=kappa, temperature=T, seed=1, backend="jax")

    figures: dict = {"memory_bandwidth_GBps": round(bw, 2), "bound_Msites_per_s": round(bound / 1e6, 1),
                     "bytes_per_site_update": BYTES_PER_SITE, "temperature": T, "dt": dt, "kappa": kappa,
                     "cpu_count": os.cpu_count(), "quick": quick, "load_average_start": round(load0, 2),
                     "machine": platform.processor() or platform.machine(), "steps_per_pass": STEPS_PER_PASS,
                     "numba_version": numba.__version__}
    print(f"{'L':>5} {'backend':<24} {'M site-upd/s':>13} {'x numpy':>8} {'% of bound':>10} {'M/CPU-s':>9}")
    for L in sizes:
        phi = random_start(L, np.random.default_rng(0))
        res = {"numpy": rate(numpy_fn, phi, target, repeats)}
        numba.set_num_threads(1)
        res["numba_1thread"] = rate(numba_fn, phi, target, repeats)
        res["numba_blocked_1thread"] = rate(blocked_fn(STEPS_PER_PASS), phi, target, repeats)
        res["numba_1thread_T0"] = rate(lambda p, n: numba_fn(p, n, 0.0), phi, target, repeats)
        res["numba_blocked_1thread_T0"] = rate(lambda p, n: numba_fn(p, n, 0.0, STEPS_PER_PASS), phi, target, repeats)
        numba.set_num_threads(2)
        res["numba_2threads"] = rate(numba_fn, phi, target, repeats)
        res["numba_blocked_2threads"] = rate(blocked_fn(STEPS_PER_PASS), phi, target, repeats)
        numba.set_num_threads(1)
        res["jax"] = rate(jax_fn, phi, target, repeats)
        for name, (r, rc) in res.items():
            ratio = r / res["numpy"][0]
            print(f"{L:>5} {name:<24} {r / 1e6:>13.1f} {ratio:>8.1f} {100 * r / bound:>9.1f}% {rc / 1e6:>9.1f}")
            figures[f"{name}_Msites_per_s_L{L}"] = round(r / 1e6, 1)
            figures[f"{name}_Msites_per_cpu_s_L{L}"] = round(rc / 1e6, 1)
            if name != "numpy":
                figures[f"{name}_vs_numpy_L{L}"] = round(ratio, 2)
            figures[f"{name}_bound_fraction_L{L}"] = round(r / bound, 4)
        for name in ("1thread", "1thread_T0", "2threads"):  # same run, same load: the ratio is the figure
            ratio = res[f"numba_blocked_{name}"][0] / res[f"numba_{name}"][0]
            ratio_cpu = res[f"numba_blocked_{name}"][1] / res[f"numba_{name}"][1]
            figures[f"blocked_vs_reference_{name}_L{L}"] = round(ratio, 3)
            figures[f"blocked_vs_reference_{name}_cpu_L{L}"] = round(ratio_cpu, 3)
        print(f"{L:>5} blocked (K={STEPS_PER_PASS}) / reference, 1 thread: "
              f"{figures[f'blocked_vs_reference_1thread_L{L}']:.3f} wall, "
              f"{figures[f'blocked_vs_reference_1thread_cpu_L{L}']:.3f} per CPU-s")
    numba.set_num_threads(1)
    phi = random_start(512, np.random.default_rng(0))
    sweep = {k: rate(blocked_fn(k), phi, target, repeats) for k in (1, 2, 4, 8, 16)}
    print("K sweep, L = 512, 1 thread, M site-upd/s (wall / per CPU-s): "
          + ", ".join(f"K={k}: {r / 1e6:.0f} / {rc / 1e6:.0f}" for k, (r, rc) in sweep.items()))
    for k, (r, rc) in sweep.items():
        figures[f"sweep_K{k}_Msites_per_s_L512"] = round(r / 1e6, 1)
        figures[f"sweep_K{k}_Msites_per_cpu_s_L512"] = round(rc / 1e6, 1)
    figures["threads_main_comparison"] = 1
    figures["load_average_end"] = round(os.getloadavg()[0], 2)
    figures["numba_vs_numpy_L512"] = figures["numba_1thread_vs_numpy_L512"]
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
