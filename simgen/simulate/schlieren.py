"""Schlieren (polarised reflected-light) rendering of a smectic-C c-director field.

The c-director of a smectic-C film makes the in-plane angle φ.  Between
polariser and analyser the reflected intensity depends on φ relative to the
polariser axis.  Two regimes are rendered:

* ``"decrossed"`` (default, the regime of the film experiments): with the
  analyser rotated away from the crossed position the intensity is dominated by
  the term linear in the decrossing, ``I ∝ cos 2(φ − δ)``; a ±1 defect shows
  two dark and two bright brushes.  ``δ`` (the *decross angle*) rotates the
  extinction direction — the DC artifact of the augment pipeline.
* ``"crossed"``: ``I ∝ sin² 2(φ − δ)``; a ±1 defect shows four dark brushes.

Both are mapped to [0, 1]: ``I = (1 + cos 2(φ − δ)) / 2`` and ``I = sin² 2(φ − δ)``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["schlieren", "REGIMES"]

REGIMES = ("decrossed", "crossed")


def schlieren(phi: np.ndarray, decross: float = 0.0, regime: str = "decrossed") -> np.ndarray:
    """Render the Schlieren intensity of a phase field.

    Parameters
    ----------
    phi : (..., H, W) array
        c-director angle in radians.
    decross : float
        Decross angle δ in radians (rotation of the extinction direction).
    regime : {"decrossed", "crossed"}
        Optical regime, see module docstring.

    Returns
    -------
    (..., H, W) float32 array in [0, 1]
    """
    if regime not in REGIMES:
        raise ParameterError(f"unknown Schlieren regime {regime!r}; choose one of {', '.join(REGIMES)}")
    arg = 2.0 * (np.asarray(phi, dtype=np.float32) - np.float32(decross))
    if regime == "decrossed":
        out = 0.5 * (1.0 + np.cos(arg))
    else:
        out = np.sin(arg) ** 2
    return out.astype(np.float32, copy=False)
