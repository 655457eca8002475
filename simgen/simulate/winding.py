"""Topological defects of a 2-D phase field from plaquette winding numbers.

The Chester–Tobochnik construction: walk around each elementary plaquette of
four lattice sites, wrap every angle difference into (−π, π], add them up and
divide by 2π.  The result is an integer (the topological charge enclosed by the
plaquette); it is exact whenever the field varies by less than π between
neighbouring sites away from defect cores.

Coordinates follow the simgen convention: site ``(r, c)`` (pixel centre) sits at
``x = c + 0.5, y = r + 0.5``; the plaquette with top-left site ``(r, c)`` has its
centre at ``x = c + 1, y = r + 1``.
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = ["wrap_angle", "plaquette_winding", "find_defects", "DEFECT_DTYPE"]

#: Record dtype of a defect list: position in pixels and integer charge.
DEFECT_DTYPE = np.dtype([("x", "f4"), ("y", "f4"), ("charge", "i1")])


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Wrap angles (radians) into (−π, π]."""
    return np.pi - np.mod(np.pi - a, 2.0 * np.pi)


def plaquette_winding(phi: np.ndarray, periodic: bool = False) -> np.ndarray:
    """Winding number of every plaquette of a phase field.

    Parameters
    ----------
    phi : (H, W) array
        Phase field in radians (any branch; only differences matter).
    periodic : bool
        If true the lattice wraps around and the result has shape ``(H, W)``
        (plaquette ``(r, c)`` uses sites ``r, r+1 mod H`` and ``c, c+1 mod W``);
        otherwise shape ``(H - 1, W - 1)``.

    Returns
    -------
    (H-1, W-1) or (H, W) int8 array
        Charge enclosed by each plaquette (normally −1, 0 or +1).
    """
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 2 or min(phi.shape) < 2:
        raise ParameterError(f"phase field must be 2-D with at least 2x2 sites, got shape {phi.shape}")
    if periodic:
        a = phi
        b = np.roll(phi, -1, axis=1)  # (r, c+1)
        c = np.roll(b, -1, axis=0)  # (r+1, c+1)
        d = np.roll(phi, -1, axis=0)  # (r+1, c)
    else:
        a, b = phi[:-1, :-1], phi[:-1, 1:]
        c, d = phi[1:, 1:], phi[1:, :-1]
    total = wrap_angle(b - a) + wrap_angle(c - b) + wrap_angle(d - c) + wrap_angle(a - d)
    return np.rint(total / (2.0 * np.pi)).astype(np.int8)


def find_defects(phi: np.ndarray, periodic: bool = False) -> np.ndarray:
    """List the defects of a phase field.

    Parameters
    ----------
    phi : (H, W) array
        Phase field in radians.
    periodic : bool
        Treat the lattice as periodic (thermal model) or open (random-defect model).

    Returns
    -------
    structured array with fields ``x``, ``y`` (pixels, plaquette centre) and ``charge``
        Sorted by row, then column.
    """
    w = plaquette_winding(phi, periodic=periodic)
    rows, cols = np.nonzero(w)
    out = np.empty(len(rows), DEFECT_DTYPE)
    out["x"] = cols + 1.0
    out["y"] = rows + 1.0
    out["charge"] = w[rows, cols]
    if periodic:  # the plaquette centre of the last row/column lies on the wrap-around seam
        out["x"] = np.mod(out["x"], phi.shape[1])
        out["y"] = np.mod(out["y"], phi.shape[0])
    return out
