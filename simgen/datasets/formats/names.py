"""File names for exported samples: safe inside the output folder, unique, and stable.

Sample names come from files and HDF5 ``/names`` entries and are untrusted: they may hold
folders (``a/x.png``), ``..``, absolute paths, backslashes, control characters or names a
file system reserves.  Every exporter (YOLO, COCO, MOT) turns them into file stems here:

1. **Clean** (:func:`clean_stem`): keep the last path component (``/`` and ``\\`` both
   separate; ``.``, ``..`` and empty components are skipped), drop its extension, replace every
   character other than letters, digits, ``-``, ``_`` and ``.`` by ``_`` (control characters,
   spaces, ``:`` ...), strip leading and trailing dots, prefix Windows device names (``CON``,
   ``NUL``, ``COM1`` ...) with ``_``, cut to :data:`MAX_STEM_BYTES` UTF-8 bytes; an empty result
   becomes ``unnamed``.  The stem never contains a separator, so ``folder / f"{stem}.png"``
   stays inside ``folder``.
2. **Make unique** (:func:`export_stems`): stems are compared ignoring case (two files
   ``X.png`` and ``x.png`` are one file on macOS and Windows).  A stem that no other sample
   of the export shares is used as it is, so ``a/x.png`` alone exports as ``x.png``, the
   stem :mod:`simgen.evaluate.io` matches by.  When several samples share a stem, *each*
   of them gets ``_`` + the first 8 hex digits of the SHA-1 of its full original name
   (``a/x.png`` → ``x_<8 hex>``, ``b/x.png`` → ``x_<other 8 hex>``).  Samples with the very
   same original name (duplicates) get ``-2``, ``-3`` ... in sample order.

The result depends only on the list of names, so the same source always exports to the same
file names.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import PurePosixPath

__all__ = ["MAX_STEM_BYTES", "clean_stem", "export_stems"]

#: Longest stem (UTF-8 bytes) an exporter writes; leaves room for a hash, a split suffix and an
#: extension under the 255-byte name limit of common file systems.
MAX_STEM_BYTES = 120

#: Names Windows reserves for devices, with or without an extension.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}

#: Stem of names that clean to nothing (``..``, ``/``, ``""``).
EMPTY_STEM = "unnamed"


def clean_stem(name: str, *, strip_suffix: bool = True) -> str:
    """A safe file stem for one sample name (see the module notes).

    Parameters
    ----------
    name : str
        Untrusted name (a relative or absolute path, a bare name, anything).
    strip_suffix : bool
        Drop the last ``.ext`` of the final component (image names); off for names that are
        not file names (a MOT sequence name like ``MOT17-02.v2``).

    Returns
    -------
    str
        Non-empty, without path separators or control characters, not ``.``/``..``, at most
        :data:`MAX_STEM_BYTES` bytes in UTF-8.
    """
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    base = parts[-1] if parts else ""
    if strip_suffix and base:
        base = PurePosixPath(base).stem
    base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base).strip(".")
    if base.split(".")[0].casefold() in _RESERVED:
        base = "_" + base
    base = base.encode("utf-8")[:MAX_STEM_BYTES].decode("utf-8", errors="ignore").rstrip(".")
    return base or EMPTY_STEM


def _digest(name: str) -> str:
    return hashlib.sha1(str(name).encode("utf-8", errors="surrogatepass")).hexdigest()[:8]


def export_stems(names: Iterable[str], *, strip_suffix: bool = True) -> list[str]:
    """Unique, safe file stems for the samples of one export, in order (see the module notes).

    Parameters
    ----------
    names : iterable of str
        Sample names, one per sample (``Source.names``).
    strip_suffix : bool
        See :func:`clean_stem`.

    Returns
    -------
    list of str
        One stem per name; no two equal ignoring case.
    """
    names = [str(n) for n in names]
    cleaned = [clean_stem(n, strip_suffix=strip_suffix) for n in names]
    shared = Counter(c.casefold() for c in cleaned)
    wanted = [c if shared[c.casefold()] == 1 else f"{c}_{_digest(n)}" for c, n in zip(cleaned, names)]
    taken: set[str] = set()
    out = []
    for stem in wanted:
        unique, k = stem, 2
        while unique.casefold() in taken:  # the same original name twice (or a digest meeting a name)
            unique, k = f"{stem}-{k}", k + 1
        taken.add(unique.casefold())
        out.append(unique)
    return out
