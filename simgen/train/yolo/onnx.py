"""Run a trained YOLO through ONNX Runtime: Ultralytics' ONNX export, cached per checkpoint.

:func:`onnx_model` exports ``best.pt`` once (``model.export(format="onnx", dynamic=True)``,
no graph simplifier) into ``$SIMGEN_CACHE_DIR/yolo-onnx/<key>/model.onnx`` — the key hashes
the checkpoint's bytes, the input size and the Ultralytics version — and returns that path;
``ultralytics.YOLO(path)`` then predicts through ONNX Runtime with the same pre- and
post-processing (letterbox, NMS) as the torch model, so :class:`~simgen.train.yolo.predict.YoloDetector`
(``runtime="onnx"``) tiles and merges exactly as before.  The checkpoint is never modified: it
is copied into the cache folder and exported there.

Needs ``onnx`` (export) and ``onnxruntime`` (prediction), the ``onnx`` extra; without them a
:class:`~simgen.errors.ParameterError` says so (Ultralytics would try to pip-install them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from simgen.errors import ParameterError
from simgen.train.yolo.data import cache_root
from simgen.train.yolo.offline import import_ultralytics

__all__ = ["RUNTIMES", "require_onnx", "onnx_model", "onnx_detector"]

#: Inference runtimes of :class:`~simgen.train.yolo.predict.YoloDetector`.
RUNTIMES = ("torch", "onnx")


def require_onnx() -> None:
    """Raise :class:`ParameterError` unless onnx and onnxruntime can be imported (Ultralytics checks both)."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ParameterError(f"--runtime onnx needs {' and '.join(missing)}: pip install 'simgen[onnx]'")


def _key(weights: Path, imgsz: int, version: str) -> str:
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(f"|imgsz={int(imgsz)}|ultralytics={version}|dynamic".encode())
    return h.hexdigest()[:20]


def onnx_model(weights, imgsz: int, *, cache_dir=None) -> Path:
    """The ONNX export of ``weights`` for inputs of ``imgsz`` pixels (exported once, then cached).

    Parameters
    ----------
    weights : path
        An Ultralytics detection checkpoint (already checked by the caller).
    imgsz : int
        Input side the model will see (a multiple of 32; the batch size and side stay dynamic).
    cache_dir : path, optional
        Cache folder (default ``$SIMGEN_CACHE_DIR/yolo-onnx`` or ``~/.cache/simgen/yolo-onnx``).

    Returns
    -------
    Path of ``model.onnx``.
    """
    require_onnx()
    weights = Path(weights)
    ultralytics = import_ultralytics()
    root = Path(cache_dir) if cache_dir is not None else cache_root().with_name("yolo-onnx")
    final = root / _key(weights, imgsz, ultralytics.__version__)
    if (final / "model.onnx").is_file():
        return final / "model.onnx"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        shutil.copyfile(weights, tmp / "model.pt")
        model = ultralytics.YOLO(str(tmp / "model.pt"), task="detect")
        model.export(format="onnx", imgsz=int(imgsz), dynamic=True, simplify=False, half=False, device="cpu",
                     verbose=False)
        if not (tmp / "model.onnx").is_file():  # pragma: no cover - Ultralytics reports its own errors
            raise ParameterError(f"ONNX export of {weights} produced no model")
        (tmp / "model.pt").unlink()
        try:
            os.replace(tmp, final)
        except OSError:  # another process exported it meanwhile
            if not (final / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "model.onnx"


def onnx_detector(path, imgsz: int, threads: int):
    """``ultralytics.YOLO`` on an exported model, its ONNX Runtime session limited to ``threads`` threads.

    Ultralytics opens the session with ONNX Runtime's default (one thread per core) and offers no
    option; after one warm-up prediction the session is reopened with ``intra_op_num_threads``.
    """
    import numpy as np
    import onnxruntime

    ultralytics = import_ultralytics()
    model = ultralytics.YOLO(str(path), task="detect")
    model.predict([np.zeros((imgsz, imgsz), np.uint8)], imgsz=imgsz, device="cpu", verbose=False)
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    if backend is not None and hasattr(backend, "session"):
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        backend.session = onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return model
