"""Offline, quiet, project-owned Ultralytics: call :func:`setup_ultralytics` before ``import ultralytics``.

Ultralytics reaches for the network in several places even when nothing needs
to be downloaded: telemetry ("sync") and hub callbacks, the online check at
import, the font download for plots and dataset checks (``Arial.ttf``, asked for
even with ``plots=False``), the AMP check (downloads ``yolo11n.pt``), pretrained
weights when a model is named ``*.pt`` and pip auto-install of missing
requirements.  It also writes ``settings.json`` to ``~/.config/Ultralytics``.

:func:`setup_ultralytics` closes every one of those doors, *before* the first
import (Ultralytics reads its environment at import time):

* ``YOLO_CONFIG_DIR`` → a project-owned folder (default ``~/.cache/simgen/ultralytics``,
  override with ``SIMGEN_ULTRALYTICS_DIR``), so nothing lands in ``~/.config``;
* ``YOLO_OFFLINE=1`` (no online check), ``YOLO_AUTOINSTALL=0`` (no pip), ``YOLO_VERBOSE=0``
  (quiet, unless ``verbose=True``);
* matplotlib's ``DejaVuSans.ttf`` copied to ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf``
  (and ``Arial.Unicode.ttf``) so the font check finds a local file;
* ``settings.json`` pre-written with ``sync`` and every integration (ClearML, Comet,
  DVC, MLflow, Ray Tune, TensorBoard, W&B) off and all directories inside the config
  folder; after import the same values are applied through ``settings.update``.

The trainers in :mod:`simgen.train.yolo` then build models only from ``.yaml`` and
train with ``pretrained=False, amp=False``.

Use :func:`import_ultralytics` to get the module with all of that done.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from simgen.errors import ParameterError

__all__ = ["setup_ultralytics", "import_ultralytics", "config_dir", "OFFLINE_SETTINGS", "ENV_DIR"]

#: Environment variable that overrides the project-owned Ultralytics config folder.
ENV_DIR = "SIMGEN_ULTRALYTICS_DIR"

#: Settings forced on Ultralytics (all network integrations off).
OFFLINE_SETTINGS = {
    "sync": False,
    "api_key": "",
    "openai_api_key": "",
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}

_DONE: Path | None = None


def config_dir() -> Path:
    """The project-owned Ultralytics config folder (``$SIMGEN_ULTRALYTICS_DIR`` or ``~/.cache/simgen/ultralytics``)."""
    env = os.environ.get(ENV_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "simgen" / "ultralytics"


def _settings_defaults(root: Path) -> dict:
    """A complete settings.json for Ultralytics' settings schema 0.0.8 with our values.

    Unknown future keys are filled in by Ultralytics itself (it keeps valid values of
    ours); ``setup_ultralytics`` re-applies :data:`OFFLINE_SETTINGS` after import.
    """
    return {
        "settings_version": "0.0.8",
        "datasets_dir": str(root / "datasets"),
        "weights_dir": str(root / "weights"),
        "runs_dir": str(root / "runs"),
        "uuid": "simgen-offline",  # anonymous, constant: nothing is ever sent
        **OFFLINE_SETTINGS,
    }


def setup_ultralytics(directory=None, *, verbose: bool = False, threads: int | None = None) -> Path:
    """Prepare the environment so that importing and running Ultralytics never touches the network.

    Must run before the first ``import ultralytics`` in the process.  Idempotent.

    Parameters
    ----------
    directory : path-like, optional
        Config folder (default :func:`config_dir`).  ``$YOLO_CONFIG_DIR`` is set to it;
        Ultralytics' files go to ``<directory>/Ultralytics``.
    verbose : bool
        Keep Ultralytics' own console output (default: errors only).
    threads : int, optional
        Value for ``OMP_NUM_THREADS`` if it is not set yet (Ultralytics would set 1).

    Returns
    -------
    The ``Ultralytics`` settings folder.

    Raises
    ------
    ParameterError
        If Ultralytics was already imported with a different configuration (the
        environment can no longer take effect).
    """
    global _DONE
    root = Path(directory).expanduser() if directory is not None else config_dir()
    user_dir = root / "Ultralytics"
    if _DONE is not None and user_dir == _DONE:
        return user_dir
    if "ultralytics" in sys.modules:
        current = os.environ.get("YOLO_CONFIG_DIR")
        if current is None or Path(current).expanduser() != root or os.environ.get("YOLO_OFFLINE") != "1":
            raise ParameterError(
                "ultralytics was imported before simgen.train.offline.setup_ultralytics(); "
                "call it first (it must configure Ultralytics' environment before import)"
            )
    try:
        user_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create Ultralytics config folder {user_dir}: {exc.strerror}") from None

    os.environ["YOLO_CONFIG_DIR"] = str(root)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_VERBOSE"] = "1" if verbose else "0"
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or 1))
    # Other libraries Ultralytics may pull in: keep them quiet and offline too.
    for var, value in (("WANDB_MODE", "disabled"), ("COMET_MODE", "disabled"), ("CLEARML_OFFLINE_MODE", "1"),
                       ("MLFLOW_TRACKING_URI", ""), ("HF_HUB_OFFLINE", "1"), ("RAY_USAGE_STATS_ENABLED", "0")):
        if value == "":
            os.environ.pop(var, None)
        else:
            os.environ.setdefault(var, value)

    _install_fonts(user_dir)
    _write_settings(user_dir, root)
    _DONE = user_dir
    return user_dir


def _install_fonts(user_dir: Path) -> None:
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dst = user_dir / name
        if dst.exists() and dst.stat().st_size > 0:
            continue
        if not src.exists():  # pragma: no cover - matplotlib always ships DejaVu
            raise ParameterError(f"matplotlib font {src} not found; cannot provide {name} offline")
        tmp = dst.with_name(f".{name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _write_settings(user_dir: Path, root: Path) -> None:
    path = user_dir / "settings.json"
    wanted = _settings_defaults(root)
    current = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            current = {}
    merged = {**wanted, **{k: v for k, v in current.items() if k not in wanted}}
    # keep our own values authoritative for everything network- or path-related
    if current == merged:
        return
    tmp = path.with_name(f".settings.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=2))
    os.replace(tmp, path)


def import_ultralytics(directory=None, *, verbose: bool = False):
    """:func:`setup_ultralytics`, then ``import ultralytics``; returns the module.

    After import the offline settings are re-applied via ``settings.update`` (covers
    schema changes in newer Ultralytics) and Ultralytics' CPU thread override is
    aligned with simgen's thread count.
    """
    setup_ultralytics(directory, verbose=verbose)
    import ultralytics
    from ultralytics.utils import SETTINGS

    changes = {k: v for k, v in OFFLINE_SETTINGS.items() if k in SETTINGS and SETTINGS.get(k) != v}
    if changes:
        SETTINGS.update(changes)
    if not verbose:
        _quiet_progress_bars()
    try:  # select_device() resets torch threads to NUM_THREADS on CPU; use ours instead
        from ultralytics.utils import torch_utils

        from simgen.runtime import default_threads

        torch_utils.NUM_THREADS = default_threads()
    except (ImportError, AttributeError):  # pragma: no cover - layout of other versions
        pass
    return ultralytics


def _quiet_progress_bars() -> None:
    """Silence Ultralytics' progress bars that ignore ``YOLO_VERBOSE`` (e.g. 'Caching images')."""
    try:
        from ultralytics.utils.tqdm import TQDM
    except ImportError:  # pragma: no cover - other versions
        return
    if getattr(TQDM.__init__, "_simgen_quiet", False):
        return
    original = TQDM.__init__

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    __init__._simgen_quiet = True
    TQDM.__init__ = __init__
