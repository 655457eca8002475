"""Numba CPU kernels of the thermal XY dynamics (and the random-defect phase field).

Public entry points
-------------------
``evolve_numba(phi, steps, dt, kappa, temperature, seed, step0)``
    Same contract as :func:`simgen.simulate.xy.evolve` with ``backend="numba"``
    (arguments are assumed validated by the caller).
``random_defect_phase_numba(xs, ys, charges, shape, phi0)``
    Same field as :func:`simgen.simulate.film.random_defect_phase`.

Design of the XY step (one fused, branch-free pass per step, float32 throughout)
--------------------------------------------------------------------------------
* **Stencil.** ``Σ_j sin(φ_i − φ_j) = sin φ_i Σ_j cos φ_j − cos φ_i Σ_j sin φ_j``: one
  sin/cos pair per site and step instead of four ``sin`` calls.  Each row block keeps
  the sin/cos of three rows (above, current, below) in small padded row buffers
  (``L + 2`` entries, the periodic column neighbours copied into the pads), so the
  inner loop is contiguous, has no modulo and vectorises (AVX2/AVX-512).
* **sin/cos.** This numba build has no vectorised libm ``sin``, so a polynomial is
  used: with the half angle ``y = φ/2 ∈ [−π/2, π/2]`` (φ is kept wrapped),
  ``s = y·P4(y²) ≈ sin y`` and ``c = Q5(y²) ≈ cos y`` (minimax-fitted, errors
  4e-9 and 3e-10 in exact arithmetic) and ``sin φ = 2sc``, ``cos φ = 2c² − 1``.
  Max. abs. error in float32 on [−π, π]: ~2e-7 (tested < 1e-6).
* **Noise.** Counter-based: the 64-bit key of step ``t`` is
  ``k_t = mix(seed + mix(t + G))`` and site ``i = r·L + c`` gets the 64 bits
  ``h = mix(k_t + (i + 1)·G)`` (``mix`` = the SplitMix64 finaliser, ``G`` = its golden
  gamma, i.e. site ``i`` reads element ``i`` of a SplitMix64 stream seeded by ``k_t``).
  The four 16-bit fields of ``h`` are four independent uniforms; their centred, scaled
  sum (Irwin–Hall n = 4) ``z = √3 (ΣU_k − 2)`` has mean 0, variance 1 (to 2e-10),
  excess kurtosis −0.3 and |z| ≤ 2√3.  The noise is ``η = σ z`` with
  ``σ² = 2T/Δt``: Euler–Maruyama needs only the first two moments, the higher ones
  change the discretisation error at the same O(Δt) order as the scheme itself.  The
  noise of step ``t`` depends only on ``(seed, t)`` — not on the thread count,
  blocking or ``step0`` — so runs can be continued exactly.
* **Wrap.** ``φ ← π − ((π − φ) mod 2π)`` into (−π, π] after every step, branch-free.
* **Parallelism.** ``prange`` over contiguous row blocks (one block per thread; a
  block recomputes the sin/cos of its two halo rows, so the result does not depend
  on the number of threads).  Double-buffered (``src → dst``) so blocks never race.
  The step loop runs inside compiled code.  The thread count is numba's
  (``NUMBA_NUM_THREADS`` / :func:`numba.set_num_threads`), never changed here.

Memory model: per site and step the kernel reads φ (4 B) and writes φ (4 B) = 8 B of
unavoidable traffic (12 B actually moved with the write-allocate read); everything else
lives in L1-resident row buffers.  At ~0.9 G site-updates/s per core that is ~11 GB/s, half
of this machine's copy bandwidth, so the kernel is nearly compute bound on one core; the
temporally blocked variant (:mod:`.kernels_blocked`, several steps per pass, the same
per-site code via :func:`update_row`/:func:`fill_row`) removes the per-step pass over
memory and the per-step thread barrier.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = ["evolve_numba", "sincos_poly", "noise_field", "random_defect_phase_numba"]

_F = np.float32
#: LLVM fast-math flags of the XY step: everything but ``reassoc``, so the float32 result of
#: every site update is fixed by the source (no reordering of sums); the reference and the
#: temporally blocked kernel (:mod:`.kernels_blocked`) then agree bit for bit, whatever
#: the compilation context.  ``contract`` (fused multiply-add) stays on.
FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}
PI = _F(np.pi)
TWO_PI = _F(2 * np.pi)
INV_TWO_PI = _F(1 / (2 * np.pi))
HALF = _F(0.5)
ONE = _F(1.0)
TWO = _F(2.0)

# sin(y) ≈ y (S0 + S1 z + S2 z² + S3 z³ + S4 z⁴), cos(y) ≈ C0 + C1 z + ... + C5 z⁵, z = y²,
# minimax (Lawson) fits on |y| <= 1.02 π/2.
S0 = _F(9.99999972e-01)
S1 = _F(-1.66666444e-01)
S2 = _F(8.33284599e-03)
S3 = _F(-1.97976371e-04)
S4 = _F(2.58400848e-06)
C0 = _F(1.00000000e00)
C1 = _F(-4.99999992e-01)
C2 = _F(4.16666311e-02)
C3 = _F(-1.38882958e-03)
C4 = _F(2.47568097e-05)
C5 = _F(-2.59922943e-07)

# SplitMix64 constants
_U = np.uint64
GOLDEN = _U(0x9E3779B97F4A7C15)
M1 = _U(0xBF58476D1CE4E5B9)
M2 = _U(0x94D049BB133111EB)
SH30 = _U(30)
SH27 = _U(27)
SH31 = _U(31)
SH16 = _U(16)
SH32 = _U(32)
SH48 = _U(48)
MASK16 = _U(0xFFFF)
ONE_U = _U(1)
#: mean of the sum of four uniform 16-bit integers
IH_MEAN = np.int64(2 * 65535)
#: √3 / 65536 · (exact correction so that Var z = 1 for the discrete uniforms)
IH_SCALE = float(np.sqrt(3.0) / 65536.0 / np.sqrt(1.0 - 1.0 / 65536.0**2))


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _sincos(x):
    """(sin x, cos x) for float32 x in about [−π, π] (half-angle polynomial)."""
    y = x * HALF
    z = y * y
    s = y * (S0 + z * (S1 + z * (S2 + z * (S3 + z * S4))))
    c = C0 + z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * C5))))
    return TWO * s * c, TWO * c * c - ONE


@njit(inline="always", cache=True)
def _mix64(z):
    """SplitMix64 finaliser (a bijection of uint64 with full avalanche)."""
    z = (z ^ (z >> SH30)) * M1
    z = (z ^ (z >> SH27)) * M2
    return z ^ (z >> SH31)


@njit(cache=True)
def step_key(seed, t):
    """64-bit noise key of step ``t`` (depends only on ``(seed, t)``)."""
    return _mix64(_U(seed) + _mix64(_U(t) + GOLDEN))


@njit(inline="always", cache=True)
def _irwin_hall4(key, site):
    """Centred sum of the four 16-bit uniforms of ``mix(key + (site+1) G)`` as int64 (|.| < 2^17)."""
    h = _mix64(key + (_U(site) + ONE_U) * GOLDEN)
    s = (h & MASK16) + ((h >> SH16) & MASK16) + ((h >> SH32) & MASK16) + (h >> SH48)
    return np.int64(s) - IH_MEAN


@njit(cache=True)
def sincos_poly(x):
    """Vectorised polynomial (sin x, cos x) of a float32 array (for tests)."""
    x = x.ravel()
    s = np.empty(x.size, np.float32)
    c = np.empty(x.size, np.float32)
    for i in range(x.size):
        s[i], c[i] = _sincos(x[i])
    return s, c


def noise_field(seed, t, L):
    """The standard-unit noise ``z`` (mean 0, variance 1) the kernel adds at step ``t`` on an L×L lattice.

    ``η = σ z`` with ``σ² = 2T/Δt``; ``seed`` is taken mod 2^64.
    """
    return _noise_field(np.uint64(int(seed) % 2**64), np.int64(t), int(L))


@njit(cache=True)
def _noise_field(seed, t, L):
    key = step_key(seed, t)
    scale = np.float32(IH_SCALE)
    out = np.empty((L, L), np.float32)
    for r in range(L):
        for c in range(L):
            out[r, c] = np.float32(_irwin_hall4(key, r * L + c)) * scale
    return out


@njit(inline="always", fastmath=FASTMATH, cache=True)
def fill_row(src_row, s, c, L):
    for j in range(L):
        s[j + 1], c[j + 1] = _sincos(src_row[j])
    s[0] = s[L]
    c[0] = c[L]
    s[L + 1] = s[1]
    c[L + 1] = c[1]


@njit(inline="always", fastmath=FASTMATH, cache=True)
def update_row(row, su, cu, sm, cm, sd, cd, out, a, b, key, noisy, base, L):
    """One row of one step: ``out = wrap(row − a·force − b·z)``.

    ``row``/``out``: (L,) φ of this row at the old / new time level; ``s*``/``c*``: (L + 2,)
    padded sin/cos rows above (u), at (m) and below (d) at the old level; ``base = r·L``
    the flat index of the row's first site (for the noise).  Shared by every XY kernel so
    that they do the same float32 operations per site.
    """
    for j in range(L):
        sum_s = su[j + 1] + sd[j + 1] + sm[j] + sm[j + 2]
        sum_c = cu[j + 1] + cd[j + 1] + cm[j] + cm[j + 2]
        force = sm[j + 1] * sum_c - cm[j + 1] * sum_s
        v = row[j] - a * force
        if noisy:
            v -= b * np.float32(_irwin_hall4(key, base + j))
        u = PI - v
        u = u - TWO_PI * np.floor(u * INV_TWO_PI)
        v = PI - u
        out[j] = v + TWO_PI if v <= -PI else v


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _step(src, dst, a, b, key, noisy, nblocks):
    """One step ``src → dst``: dst = wrap(src − a·force − b·z); a = Δt κ, b = Δt σ √3/65536 (·corr)."""
    L = src.shape[0]
    for blk in prange(nblocks):
        r0 = blk * L // nblocks
        r1 = (blk + 1) * L // nblocks
        if r1 <= r0:
            continue
        su = np.empty(L + 2, np.float32)
        cu = np.empty(L + 2, np.float32)
        sm = np.empty(L + 2, np.float32)
        cm = np.empty(L + 2, np.float32)
        sd = np.empty(L + 2, np.float32)
        cd = np.empty(L + 2, np.float32)
        fill_row(src[(r0 - 1 + L) % L], su, cu, L)
        fill_row(src[r0], sm, cm, L)
        for r in range(r0, r1):
            fill_row(src[(r + 1) % L], sd, cd, L)
            update_row(src[r], su, cu, sm, cm, sd, cd, dst[r], a, b, key, noisy, r * L, L)
            su, cu, sm, cm, sd, cd = sm, cm, sd, cd, su, cu


@njit(cache=True)
def _evolve(phi, steps, a, b, seed, step0, noisy, nblocks):
    src = phi
    dst = np.empty_like(phi)
    for t in range(step0, step0 + steps):
        key = step_key(seed, t)
        _step(src, dst, a, b, key, noisy, nblocks)
        src, dst = dst, src
    return src


def evolve_numba(phi, steps, dt, kappa, temperature, seed, step0):
    """Numba backend of :func:`simgen.simulate.xy.evolve` (see the module docstring).

    Returns a new float32 array; the input is not modified.  ``seed`` may be any
    Python int (it is reduced mod 2^64).
    """
    phi = np.array(phi, dtype=np.float32, order="C")  # copy: the kernel works in place-ish
    sigma = np.sqrt(2.0 * temperature / dt) if temperature > 0 else 0.0
    a = np.float32(dt * kappa)
    b = np.float32(dt * sigma * IH_SCALE)
    noisy = bool(temperature > 0)
    nblocks = max(1, min(get_num_threads(), phi.shape[0] // 4))
    if steps == 0:
        return phi
    return _evolve(phi, int(steps), a, b, np.uint64(int(seed) % 2**64), np.int64(step0), noisy, nblocks)


# atan(q) ≈ q·A(q²) on [0, 1], minimax (Lawson) fit, max error 3.7e-8 rad in exact arithmetic.
HALF_PI = _F(np.pi / 2)
A0 = _F(0.9999993355777924)
A1 = _F(-0.33329860782239173)
A2 = _F(0.19946565627973703)
A3 = _F(-0.13908629434678868)
A4 = _F(0.09642197034096732)
A5 = _F(-0.055912322741389846)
A6 = _F(0.02186295505669329)
A7 = _F(-0.004054566423309726)
ZERO = _F(0.0)


@njit(inline="always", fastmath=True, cache=True)
def _atan2(y, x):
    """Branch-free float32 atan2 (octant reduction + polynomial), max error ~2e-7 rad; atan2(0, 0) = 0."""
    ax = np.abs(x)
    ay = np.abs(y)
    mx = max(ax, ay)
    mn = min(ax, ay)
    q = mn / mx if mx > ZERO else ZERO
    z = q * q
    p = q * (A0 + z * (A1 + z * (A2 + z * (A3 + z * (A4 + z * (A5 + z * (A6 + z * A7)))))))
    p = HALF_PI - p if ay > ax else p
    p = PI - p if x < ZERO else p
    return -p if y < ZERO else p


@njit(cache=True)
def atan2_poly(y, x):
    """Vectorised polynomial atan2 of two float32 arrays (for tests)."""
    y = y.ravel()
    x = x.ravel()
    out = np.empty(x.size, np.float32)
    for i in range(x.size):
        out[i] = _atan2(y[i], x[i])
    return out


@njit(parallel=True, fastmath=True, cache=True)
def _defect_phase(xs, ys, pos, h, w, c0, s0):
    out = np.empty((h, w), np.float32)
    n = xs.size
    for r in prange(h):
        re = np.empty(w, np.float32)
        im = np.empty(w, np.float32)
        dx = np.empty(w, np.float32)
        for j in range(w):
            re[j] = c0
            im[j] = s0
        y = np.float32(r) + HALF
        for k in range(n):
            dy = y - ys[k] if pos[k] else ys[k] - y  # conj(z − z_k) for negative charges
            xk = xs[k]
            for j in range(w):
                dx[j] = (np.float32(j) + HALF) - xk
            for j in range(w):
                a = re[j] * dx[j] - im[j] * dy
                im[j] = re[j] * dy + im[j] * dx[j]
                re[j] = a
            if k % 4 == 3:  # renormalise (keeps the product inside float32 range)
                for j in range(w):
                    m = np.sqrt(re[j] * re[j] + im[j] * im[j])
                    inv = ONE / m if m > ZERO else ONE
                    re[j] *= inv
                    im[j] *= inv
        for j in range(w):
            out[r, j] = _atan2(im[j], re[j])
    return out


def random_defect_phase_numba(xs, ys, charges, shape, phi0=0.0):
    """Phase field of a superposition of point defects (numba, parallel over rows).

    Same result as :func:`simgen.simulate.film.random_defect_phase` (to ~1e-6 mod 2π):
    ``φ(x, y) = Σ_k s_k atan2(y − y_k, x − x_k) + φ0`` at pixel centres ``(c + ½, r + ½)``,
    evaluated as the argument of ``e^{iφ0} Π_k (z − z_k)^{s_k}`` (``s_k = sign(charge)``,
    conjugate factor for ``s_k <= 0``) with a polynomial atan2 at the end.

    Parameters
    ----------
    xs, ys : (n,) arrays
        Defect positions in pixels (x = column, y = row).
    charges : (n,) array
        Defect charges (> 0 counts as +1, otherwise −1).
    shape : (H, W)
    phi0 : float
        Global phase (radians).

    Returns
    -------
    (H, W) float32 array in [−π, π]
    """
    h, w = (int(v) for v in shape)
    xs = np.ascontiguousarray(xs, dtype=np.float32).ravel()
    ys = np.ascontiguousarray(ys, dtype=np.float32).ravel()
    pos = np.ascontiguousarray(np.asarray(charges).ravel() > 0)
    c0, s0 = np.cos(phi0), np.sin(phi0)
    return _defect_phase(xs, ys, pos, h, w, np.float32(c0), np.float32(s0))
