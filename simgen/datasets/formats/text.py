"""Reading the text files of annotation formats (COCO JSON, MOTChallenge) with one-line errors."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from simgen.errors import DataError

__all__ = ["read_text"]


def read_text(path: str | PathLike, what: str, kind: str = "text") -> str:
    """The content of the UTF-8 text file ``path``; a missing or non-text file raises a one-line
    :class:`DataError` naming ``what`` the file is (``"COCO file"``) and the ``kind`` of text expected."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder, not a {kind} file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a {kind} file") from None
