"""Run a trained YOLO through an exported model: ONNX Runtime or OpenVINO, exported once per checkpoint.

Runtimes (:data:`RUNTIMES`) of :class:`~simgen.train.yolo.predict.YoloDetector`:

* ``torch`` — the checkpoint itself;
* ``onnx`` — Ultralytics' ONNX export (``dynamic=True``, no graph simplifier), predicted through
  ONNX Runtime (``onnx`` and ``onnxruntime``, the ``onnx`` extra);
* ``openvino`` — Ultralytics' OpenVINO export (fp32 IR, dynamic shapes), predicted through the
  OpenVINO runtime compiled for the CPU with ``threads`` inference threads, the ``LATENCY``
  hint (one request at a time, one stream) and fp32 precision — OpenVINO would otherwise run
  in bf16 on CPUs that have it and move scores by ~1e-2 (the ``openvino`` extra);
* ``openvino-int8`` — that IR quantized to INT8 by NNCF post-training quantization
  (:mod:`simgen.train.yolo.quantize`: calibrated on synthetic images only, detection head kept
  in float).  Faster, but detections differ a little from fp32 (the ``int8`` extra: openvino
  and nncf).

:func:`exported_model` exports once into ``$SIMGEN_CACHE_DIR/yolo-<runtime>/<key>/`` — the key
hashes the checkpoint's bytes, the input size and the Ultralytics version (plus the OpenVINO /
NNCF versions and the calibration recipe for OpenVINO), so a changed checkpoint is exported
again — and returns the path ``ultralytics.YOLO`` opens; it then predicts with the same pre-
and post-processing (letterbox, NMS) as the torch model, so the detector tiles and merges
exactly as with torch.  The checkpoint is never modified: it is copied into a temporary folder
of the cache, exported there and the folder renamed into place when complete.

OpenVINO and NNCF send usage telemetry unless told not to: everything that imports or calls
them here runs inside :func:`openvino_offline`.  A missing package raises a
:class:`~simgen.errors.ParameterError` naming the extra (Ultralytics would try to pip-install it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simgen.errors import ParameterError
from simgen.train.yolo.data import cache_root
from simgen.train.yolo.offline import import_ultralytics
from simgen.train.yolo.quantize import CALIBRATION, quantize_openvino

__all__ = ["RUNTIMES", "require_runtime", "exported_model", "exported_detector", "openvino_offline"]

#: Inference runtimes of :class:`~simgen.train.yolo.predict.YoloDetector`.
RUNTIMES = ("torch", "onnx", "openvino", "openvino-int8")


@dataclass(frozen=True)
class _Exported:
    packages: tuple[str, ...]  # importable modules the runtime needs
    extra: str  # the simgen extra that installs them
    artefact: str  # the file or folder, inside a cache entry, that ultralytics.YOLO opens
    options: tuple[tuple[str, object], ...] = ()  # format-specific arguments of Ultralytics' export


_EXPORTED = {
    "onnx": _Exported(("onnx", "onnxruntime"), "onnx", "model.onnx", (("simplify", False),)),
    "openvino": _Exported(("openvino",), "openvino", "model_openvino_model", (("int8", False),)),
    "openvino-int8": _Exported(("openvino", "nncf"), "int8", "model_int8_openvino_model"),
}


def require_runtime(runtime: str, *, packages: bool = True) -> None:
    """Raise :class:`ParameterError` for an unknown runtime, or (``packages``) one whose packages are missing."""
    if runtime not in RUNTIMES:
        raise ParameterError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch" or not packages:
        return
    spec = _EXPORTED[runtime]
    missing = [name for name in spec.packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ParameterError(f"--runtime {runtime} needs {' and '.join(missing)}: pip install 'simgen[{spec.extra}]'")


@contextlib.contextmanager
def openvino_offline():
    """Import and call OpenVINO / NNCF inside this block: their usage telemetry stays off.

    Both send telemetry (Google Analytics) unless the user opted out or ``CI=true``, which they
    check whenever they set it up (importing ``openvino``, every model conversion, importing
    ``nncf``); ``CI`` is set for the duration of the block only.
    """
    old = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = old


def _quantize_offline(fp32, out, **kwargs) -> None:
    with openvino_offline():
        quantize_openvino(fp32, out, **kwargs)


def _in_fresh_process(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh (spawned) interpreter; its exceptions re-raise here.

    Why: importing ``nncf`` breaks ``torch.save`` for the rest of the process (measured with
    nncf 3.4 / torch 2.14: every later checkpoint write fails with "unexpected pos"), so the
    quantization runs where nothing else will ever save a checkpoint.
    """
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _key(weights: Path, imgsz: int, version: str, tag: str = "") -> str:
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(f"|imgsz={int(imgsz)}|ultralytics={version}|dynamic{tag}".encode())
    return h.hexdigest()[:20]


def _cached(final: Path, artefact: str, build: Callable[[Path], None]) -> Path:
    """``final/artefact``, built by ``build(tmp)`` into a temporary sibling folder renamed to ``final``."""
    if (final / artefact).exists():
        return final / artefact
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    try:
        build(tmp)
        if not (tmp / artefact).exists():  # pragma: no cover - Ultralytics reports its own errors
            raise ParameterError(f"export into {final} produced no {artefact}")
        try:
            os.replace(tmp, final)
        except OSError:  # another process exported it meanwhile
            if not (final / artefact).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / artefact


def exported_model(weights, imgsz: int, runtime: str = "onnx", *, normalize: str = "percentile",
                   scale: float = 1.0, cache_dir=None) -> Path:
    """The export of ``weights`` for ``runtime`` and inputs of ``imgsz`` pixels (exported once, then cached).

    Parameters
    ----------
    weights : path
        An Ultralytics detection checkpoint (already checked by the caller).
    imgsz : int
        Input side the model will see (a multiple of 32; the batch size and side stay dynamic).
    runtime : {"onnx", "openvino", "openvino-int8"}
        Which export (see the module docstring).
    normalize, scale : str, float
        ``openvino-int8`` only: the detector's contrast normalisation and resize factor, applied
        to the synthetic calibration images (:func:`~simgen.train.yolo.quantize.calibration_tiles`).
    cache_dir : path, optional
        Cache root holding one ``yolo-<runtime>`` folder per runtime (default
        ``$SIMGEN_CACHE_DIR`` or ``~/.cache/simgen``).

    Returns
    -------
    Path of ``model.onnx`` or of the OpenVINO model folder (``*_openvino_model``, an IR
    ``model.xml`` / ``model.bin`` and Ultralytics' ``metadata.yaml``).
    """
    require_runtime(runtime)
    if runtime == "torch":
        raise ParameterError("runtime torch has no export")
    weights = Path(weights)
    spec = _EXPORTED[runtime]
    ultralytics = import_ultralytics()
    root = Path(cache_dir) if cache_dir is not None else cache_root().parent
    tag = ""
    if runtime.startswith("openvino"):
        tag = f"|openvino={importlib.metadata.version('openvino')}"
    if runtime == "openvino-int8":
        tag += f"|nncf={importlib.metadata.version('nncf')}|{CALIBRATION}|normalize={normalize}|scale={float(scale)!r}"
    final = root / f"yolo-{runtime}" / _key(weights, imgsz, ultralytics.__version__, tag)

    if runtime == "openvino-int8":
        def build(tmp: Path) -> None:
            fp32 = exported_model(weights, imgsz, "openvino", cache_dir=root)
            _in_fresh_process(_quantize_offline, fp32, tmp / spec.artefact, imgsz=int(imgsz),
                              normalize=normalize, scale=scale)
    else:
        def build(tmp: Path) -> None:
            shutil.copyfile(weights, tmp / "model.pt")
            model = ultralytics.YOLO(str(tmp / "model.pt"), task="detect")
            with openvino_offline():
                model.export(format=runtime, imgsz=int(imgsz), dynamic=True, half=False, device="cpu", verbose=False,
                             **dict(spec.options))
            (tmp / "model.pt").unlink()
    return _cached(final, spec.artefact, build)


def exported_detector(path, imgsz: int, threads: int, runtime: str = "onnx"):
    """``ultralytics.YOLO`` on an exported model, its runtime limited to ``threads`` CPU threads.

    Ultralytics opens an ONNX Runtime session or compiles an OpenVINO model with the runtime's
    defaults (one thread per core; OpenVINO in bf16 where the CPU has it) and offers no option;
    after one warm-up prediction the session is reopened with ``intra_op_num_threads`` /
    the model recompiled with ``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT=LATENCY``,
    ``NUM_STREAMS=1`` and ``INFERENCE_PRECISION_HINT=f32``.
    """
    import numpy as np

    ultralytics = import_ultralytics()
    with openvino_offline():
        model = ultralytics.YOLO(str(path), task="detect")
        model.predict([np.zeros((imgsz, imgsz), np.uint8)], imgsz=imgsz, device="cpu", verbose=False)
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    if runtime == "onnx" and backend is not None and hasattr(backend, "session"):
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        backend.session = onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    elif runtime.startswith("openvino") and backend is not None and hasattr(backend, "ov_compiled_model"):
        with openvino_offline():
            import openvino

        core = openvino.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": "f32"}
        backend.compile_model = functools.partial(core.compile_model, device_name="CPU", config=config)
        backend.ov_compiled_model = backend.compile_model(core.read_model(str(Path(path) / "model.xml")))
    return model
