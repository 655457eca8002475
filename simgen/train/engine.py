"""The training engine every simgen trainer shares: run folder and resume, exact training state, loops.

A trainer describes *what* one epoch (or one step) does; the engine does the rest the same way for
every model:

* :func:`open_run` opens the run folder (:class:`~simgen.runtime.RunDir`: ``config.json``,
  ``last.pt``, ``best.pt``, ``metrics.jsonl``) and reads the checkpoint to resume from, refusing one
  of another model; :func:`resumed_config` applies the resume policy to the run's config (the stored
  config wins, only the epoch count may change); :func:`load_trained` reads a finished checkpoint for
  prediction.
* :func:`capture_state` / :func:`restore_state` turn the *parts* of a run — modules, optimizers,
  schedulers, :class:`EarlyStopping`, :class:`GlobalRNG`, NumPy and torch generators — into one
  checkpoint dict of tensors and plain containers and back (checkpoints load with
  ``weights_only=True``, see :func:`simgen.runtime.load_checkpoint`).
* :func:`fit` is the epoch loop (Mask R-CNN, change detector): ``last.pt`` after every epoch with
  model, optimizer, scheduler, torch RNG, early-stopping state and history, ``best.pt`` when the
  monitored value improves, early stopping, one log line and one ``metrics.jsonl`` row per epoch.
  A killed run restarted from ``last.pt`` repeats exactly what the uninterrupted run would have done.
  :func:`fit_batches` is :func:`fit` with the usual epoch: one :func:`optimizer_step` per batch, the
  mean loss, validation, the monitored metric and the log lines (Mask R-CNN, change detector, U-Net).
* :func:`fit_steps` is the step loop of step-based trainers (the LDM's two phases): loss history
  every ``log_every`` steps, a checkpoint every ``checkpoint_every`` steps, a progress bar.

YOLO is trained by Ultralytics' own loop (:mod:`simgen.train.yolo`) and does not use this module.

Examples
--------
An epoch-based trainer::

    run, state = open_run(out_dir, model_type="mymodel", resume=resume, overwrite=overwrite)
    cfg = resumed_config(state, cfg, epochs)
    seed_everything(cfg.seed)
    model = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)

    def train_epoch(epoch: int) -> dict:
        ...                                    # one pass over the data, then validation
        return {"loss": loss, "val_f1": f1}

    result = fit(run, model, opt, None, train_epoch, state=state, epochs=cfg.epochs, monitor="val_f1",
                 mode="max", patience=cfg.patience, header={"model_type": "mymodel", "config": cfg.to_dict()})
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from simgen.errors import DataError, ParameterError
from simgen.progress import ProgressLog, track
from simgen.runtime import RunDir, load_checkpoint

__all__ = [
    "EarlyStopping",
    "FitResult",
    "GlobalRNG",
    "StepsResult",
    "capture_state",
    "fit",
    "fit_batches",
    "fit_steps",
    "load_trained",
    "open_run",
    "optimizer_step",
    "restore_state",
    "resumed_config",
]


# -- early stopping ----------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Stop when a validation value has not improved for ``patience`` epochs.

    Parameters
    ----------
    patience : int
        Epochs without improvement before :attr:`should_stop` turns true (0 disables).
    mode : {"max", "min"}
        Whether larger (F1, AP) or smaller (loss) values are better.
    min_delta : float
        Minimum change that counts as an improvement.
    """

    patience: int = 10
    mode: str = "max"
    min_delta: float = 0.0
    best: float = field(default=float("nan"))
    best_epoch: int = -1
    last_epoch: int = -1

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ParameterError(f"early-stopping mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience < 0:
            raise ParameterError(f"patience must be >= 0, got {self.patience}")
        if self.min_delta < 0:
            raise ParameterError(f"min_delta must be >= 0, got {self.min_delta}")

    def step(self, value: float, epoch: int | None = None) -> bool:
        """Record the value of ``epoch``; returns ``True`` when it is a new best."""
        epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self.last_epoch = epoch
        value = float(value)
        if math.isnan(value):
            return False
        if math.isnan(self.best):
            better = True
        elif self.mode == "max":
            better = value > self.best + self.min_delta
        else:
            better = value < self.best - self.min_delta
        if better:
            self.best, self.best_epoch = value, epoch
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.best_epoch >= 0 and self.last_epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict:
        return {"patience": self.patience, "mode": self.mode, "min_delta": self.min_delta,
                "best": self.best, "best_epoch": self.best_epoch, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.last_epoch = float(state["best"]), int(state["best_epoch"]), int(state["last_epoch"])


# -- run folder and resume ----------------------------------------------------------
def optimizer_step(loss, optimizer, scheduler=None, *, epoch: int, clip=None) -> float:
    """One gradient step of a torch trainer; returns the loss as a float.

    Refuses a non-finite ``loss`` (a diverged run) with one line before touching the weights;
    ``clip = (parameters, max_norm)`` clips the gradient norm; ``scheduler`` steps per batch.
    """
    import torch

    if not torch.isfinite(loss):
        raise DataError(f"training diverged (loss {float(loss)}) in epoch {epoch + 1}; lower --lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None and clip[1] > 0:
        torch.nn.utils.clip_grad_norm_(clip[0], clip[1])
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach())


def open_run(out_dir, *, resume: bool = False, overwrite: bool = False, model_type: str | None = None,
             check: Callable[[dict, Path], object] | None = None) -> tuple[RunDir, dict | None]:
    """Open (create) a run folder and read the state to resume from.

    Parameters
    ----------
    out_dir : path-like
        The run folder.
    resume, overwrite : bool
        Continue the run in the folder / start afresh there (see :class:`~simgen.runtime.RunDir`;
        a folder holding a run with neither is a :class:`ParameterError`).
    model_type : str, optional
        The ``model_type`` a resumed ``last.pt`` must carry.
    check : callable, optional
        ``check(state, path)`` raises when a resumed state does not belong to this trainer
        (for checkpoints that identify themselves differently, e.g. the LDM's ``format``).

    Returns
    -------
    ``(run, state)``: the :class:`~simgen.runtime.RunDir` and the resumed ``last.pt`` (``None`` on a
    fresh run, or when a resumed run was killed before its first checkpoint).
    """
    run = RunDir(out_dir, resume=resume, overwrite=overwrite)
    state = run.resume_state()
    if state is not None:
        if model_type is not None:
            _check_model_type(state, run.last, model_type)
        if check is not None:
            check(state, run.last)
    return run, state


def resumed_config(state: dict | None, config, epochs: int | None = None):
    """The config a run trains with: ``config`` on a fresh run; on a resumed one the config stored in
    its checkpoint (architecture, data handling and schedule as first trained), with ``epochs``
    (when given) replacing its epoch count so that a finished run can be continued.

    ``config`` is a frozen dataclass with ``from_dict``, ``validate`` and an ``epochs`` field.
    """
    if state is None:
        return config
    stored = type(config).from_dict(state["config"])
    return replace(stored, epochs=stored.epochs if epochs is None else int(epochs)).validate()


def load_trained(path, model_type: str) -> dict:
    """A finished checkpoint (``last.pt`` / ``best.pt``) of ``model_type``, read safely for prediction.

    Raises
    ------
    DataError
        Missing or unreadable file.
    ParameterError
        The checkpoint belongs to another model type.
    """
    return _check_model_type(load_checkpoint(path), path, model_type)


def _check_model_type(state: dict, path, model_type: str) -> dict:
    if not isinstance(state, dict) or state.get("model_type") != model_type:
        found = state.get("model_type") if isinstance(state, dict) else None
        raise ParameterError(f"{path} is a {found!r} checkpoint, not {model_type!r}")
    return state


# -- training state -------------------------------------------------------------------
class GlobalRNG:
    """torch's global random generators (CPU, and CUDA when present) as a checkpoint part.

    Models draw from them internally (e.g. Mask R-CNN's proposal sampling), so an exact resume
    restores them.
    """

    def state_dict(self) -> dict:
        import torch

        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state_dict(self, state: dict) -> None:
        import torch

        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and torch.cuda.is_available():  # pragma: no cover - GPU only
            torch.cuda.set_rng_state_all(state["cuda"])


def capture_state(parts: Mapping[str, object]) -> dict:
    """``{key: state}`` of every part of a run, for a checkpoint.

    A part is anything with ``state_dict()`` (modules, optimizers, schedulers, :class:`EarlyStopping`,
    :class:`GlobalRNG`), a :class:`numpy.random.Generator` or a :class:`torch.Generator` (their
    generator state), or a mapping of parts (captured recursively).  ``None`` parts are left out.
    Tensors are the live ones ``state_dict()`` returns: save the state before training on.
    """
    out = {}
    for key, part in parts.items():
        if part is None:
            continue
        if isinstance(part, Mapping):
            out[key] = capture_state(part)
        elif isinstance(part, np.random.Generator):
            out[key] = part.bit_generator.state
        elif hasattr(part, "state_dict"):
            out[key] = part.state_dict()
        else:  # a torch.Generator
            out[key] = part.get_state()
    return out


def restore_state(state: Mapping, parts: Mapping[str, object]) -> None:
    """Load what :func:`capture_state` captured back into the same parts (``None`` parts are skipped).

    Restore after the model is on its device: optimizers move their state to their parameters.

    Raises
    ------
    DataError
        If the state lacks a part.
    """
    for key, part in parts.items():
        if part is None:
            continue
        if key not in state:
            raise DataError(f"the resume state has no {key!r}; it was written by another trainer or version")
        if isinstance(part, Mapping):
            restore_state(state[key], part)
        elif isinstance(part, np.random.Generator):
            part.bit_generator.state = state[key]
        elif hasattr(part, "load_state_dict"):
            part.load_state_dict(state[key])
        else:  # a torch.Generator
            part.set_state(state[key])


# -- the epoch loop ----------------------------------------------------------------------
@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes
    ----------
    run_dir : Path
    monitor : str
        The metric early stopping and ``best.pt`` follow.
    best_epoch : int
        0-based epoch of the best value (-1 when no epoch gave a number).
    best_value : float
    epochs_run : int
        Epochs trained by this call (a resumed run counts only the new ones).
    stopped_early : bool
    history : list of dict
        One row per epoch of the whole run: ``epoch``, the metrics ``train_epoch`` returned, ``lr``.
    last, best : Path
        ``last.pt`` and ``best.pt`` (the latter exists once an epoch improved).
    """

    run_dir: Path
    monitor: str
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    history: list
    last: Path
    best: Path

    def to_dict(self) -> dict:
        """The trainers' summary: ``out_dir``, ``best`` (``{"epoch": e, monitor: value}``), ``monitor``,
        ``epochs_run``, ``stopped_early``, ``history``, ``last``, ``best_checkpoint``."""
        return {
            "out_dir": str(self.run_dir),
            "best": {"epoch": self.best_epoch, self.monitor: self.best_value},
            "monitor": self.monitor,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "history": list(self.history),
            "last": str(self.last),
            "best_checkpoint": str(self.best),
        }


def fit(
    run: RunDir,
    model,
    optimizer,
    scheduler,
    train_epoch: Callable[[int], dict],
    *,
    state: dict | None,
    epochs: int,
    monitor: str,
    mode: str = "min",
    patience: int = 0,
    min_delta: float = 0.0,
    header: dict | None = None,
    logger: ProgressLog | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Train for ``epochs`` epochs (or until early stopping), checkpointing after every epoch.

    Parameters
    ----------
    run : RunDir
        From :func:`open_run`.
    model, optimizer : torch objects
        Built and on their device; their state is replaced by ``state`` when resuming.
    scheduler : torch LR scheduler or None
        Stepped by ``train_epoch`` (the engine only saves and restores it); ``None`` for a constant rate.
    train_epoch : callable
        ``train_epoch(epoch) -> {metric: value}``: one epoch of training (and validation) for the
        0-based ``epoch``.  It should derive its randomness from the epoch (e.g.
        :func:`simgen.rng.sample_rng`) or the global torch RNG, which the engine restores.
    state : dict or None
        The resume state from :func:`open_run` (``None``: a fresh run).
    epochs : int
        Total epochs of the run (a resumed run continues up to it).
    monitor : str
        Metric of ``train_epoch``'s rows that early stopping and ``best.pt`` follow (a missing or NaN
        value never improves).
    mode : {"min", "max"}
    patience : int
        Epochs without improvement before stopping (0 = never stop early).
    min_delta : float
        Smallest change that counts as an improvement.
    header : dict, optional
        Stored in every checkpoint (``model_type``, ``config``, class names, ...).
    logger : ProgressLog, optional
        Epoch lines and ``metrics.jsonl`` (default: ``metrics.jsonl`` in the run folder, no lines).
    stop_after : int, optional
        Stop after this many epochs of this call (tests simulate a kill with it).

    Returns
    -------
    FitResult

    Notes
    -----
    Every ``last.pt`` holds ``header`` plus ``epoch``, ``state_dict`` (the model), ``optimizer``,
    ``scheduler``, ``early_stopping``, ``rng`` (:class:`GlobalRNG`), ``history`` and ``monitor``.
    """
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise ParameterError(f"epochs must be a positive integer, got {epochs!r}")
    if stop_after is not None and (int(stop_after) != stop_after or stop_after < 1):
        raise ParameterError(f"stop_after must be a positive integer, got {stop_after!r}")
    epochs = int(epochs)
    logger = logger or ProgressLog(run.path / "metrics.jsonl", total_epochs=epochs, enabled=False)
    stopper = EarlyStopping(patience=patience, mode=mode, min_delta=min_delta)
    parts = {"state_dict": model, "optimizer": optimizer, "scheduler": scheduler, "early_stopping": stopper,
             "rng": GlobalRNG()}
    history: list[dict] = []
    start = 0
    if state is not None:
        restore_state(state, parts)
        history = list(state["history"])
        start = int(state["epoch"]) + 1
        if stopper.should_stop:
            logger.message(f"run had stopped early at epoch {start}; nothing to do")
            start = epochs
    run_now = 0
    for epoch in range(start, epochs):
        row = train_epoch(epoch)
        improved = stopper.step(row.get(monitor, float("nan")), epoch)
        row = {"epoch": epoch, **{k: float(v) for k, v in row.items()}, "lr": float(optimizer.param_groups[0]["lr"])}
        history.append(row)
        run.save({**(header or {}), "epoch": epoch, **capture_state(parts), "history": history, "monitor": monitor},
                 best=improved)
        logger.epoch(epoch, **{k: v for k, v in row.items() if k != "epoch"}, best="*" if improved else "")
        run_now += 1
        if stopper.should_stop or (stop_after is not None and run_now >= stop_after):
            break
    return FitResult(run_dir=run.path, monitor=monitor, best_epoch=stopper.best_epoch, best_value=stopper.best,
                     epochs_run=run_now, stopped_early=stopper.should_stop, history=history, last=run.last,
                     best=run.best)


def fit_batches(
    run: RunDir,
    model,
    optimizer,
    scheduler,
    *,
    batches: Callable[[int], Sequence],
    batch_loss: Callable[[Sequence, int], object],
    validate: Callable[[], dict] | None,
    config,
    state: dict | None,
    maximize: str,
    header: dict,
    name: str,
    message: str,
    clip=None,
    log: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
) -> FitResult:
    """:func:`fit` for a trainer whose epoch is a list of batches, one :func:`optimizer_step` each.

    Epoch ``e`` puts ``model`` in training mode, steps on ``batch_loss(batch, e)`` for every batch of
    ``batches(e)`` and returns the batch-size-weighted mean loss (``loss``, after the named losses
    when ``batch_loss`` returns them), updated with ``validate()``.

    Parameters
    ----------
    run, model, optimizer, scheduler, state, header, stop_after
        As in :func:`fit` (``scheduler`` steps per batch).
    batches : callable
        ``batches(epoch) -> sequence of index arrays`` (drawn from the epoch's seed).
    batch_loss : callable
        ``batch_loss(batch, epoch)``: a scalar loss tensor, or a dict of named loss tensors whose sum
        is optimised (each one is logged too).
    validate : callable or None
        ``validate() -> {metric: value}`` after every epoch; ``None`` (no validation data) monitors
        the training ``loss`` instead of ``config.monitor``.
    config : dataclass
        Settings with ``epochs``, ``monitor``, ``patience`` and ``min_delta``.
    maximize : str
        The metric that is better when larger (e.g. ``"val_f1"``); every other one is minimised.
    name : str
        Prefix of the log lines (``"maskrcnn"``).
    message : str
        First log line (data and settings); ``"; monitoring <metric>"`` is appended.
    clip : (parameters, max_norm), optional
        Gradient-norm clipping (see :func:`optimizer_step`).
    log, progress : bool
        One line per epoch on stderr; a progress bar over the batches.
    """
    def train_epoch(epoch: int) -> dict:
        model.train()
        sums: dict[str, float] = {}
        seen = 0
        for b in track(batches(epoch), description=f"epoch {epoch + 1}/{config.epochs}", enabled=progress):
            loss, parts = batch_loss(b, epoch), {}
            if isinstance(loss, Mapping):  # named losses: optimise their sum, log each
                parts, loss = loss, sum(loss.values())
            value = optimizer_step(loss, optimizer, scheduler, epoch=epoch, clip=clip)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(b)
            sums["loss"] = sums.get("loss", 0.0) + value * len(b)
            seen += len(b)
        row = {k: v / seen for k, v in sums.items()}
        if validate is not None:
            row.update(validate())
        return row

    monitor = config.monitor if validate is not None else "loss"
    logger = ProgressLog(run.path / "metrics.jsonl", total_epochs=config.epochs, enabled=log, prefix=f"{name} ")
    logger.message(f"{message}; monitoring {monitor}")
    return fit(run, model, optimizer, scheduler, train_epoch, state=state, epochs=config.epochs, monitor=monitor,
               mode="max" if monitor == maximize else "min", patience=config.patience, min_delta=config.min_delta,
               header=header, logger=logger, stop_after=stop_after)


# -- the step loop -------------------------------------------------------------------------
@dataclass
class StepsResult:
    """What :func:`fit_steps` did: ``step`` (steps done in total), ``steps_run`` (by this call), ``seconds``."""

    step: int
    steps_run: int
    seconds: float

    @property
    def steps_per_s(self) -> float | None:
        return self.steps_run / self.seconds if self.steps_run and self.seconds > 0 else None


def fit_steps(
    step: Callable[[int], float],
    *,
    start: int,
    stop: int,
    name: str,
    history: list,
    save: Callable[[int], None],
    checkpoint_every: int,
    log_every: int,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    description: str | None = None,
) -> StepsResult:
    """Run ``loss = step(i)`` for the 0-based steps ``i = start .. stop - 1`` of a step-based trainer.

    Parameters
    ----------
    step : callable
        One optimiser step; returns its loss.  Its randomness must come from generators that are
        parts of the checkpoint, so that a resumed run draws what the uninterrupted one would have.
    start, stop : int
        Steps already done and the step target (nothing happens when ``start >= stop``).
    name : str
        Label of the ``[name, steps_done, mean_loss]`` rows appended to ``history`` every ``log_every``
        steps and at ``stop`` (the mean covers the last ``log_every`` steps of this call).
    save : callable
        ``save(steps_done)`` writes the checkpoint; called every ``checkpoint_every`` steps before
        ``stop`` (the trainer saves at the end of a phase itself, with whatever it adds then).
    log : callable, optional
        Receives one line per history row (``"<name> step <done>/<stop>  loss <mean>"``).
    progress : bool
        Progress bar on stderr, labelled ``description`` (default ``name``).
    """
    description = description or name
    losses: list[float] = []
    t0 = time.perf_counter()
    done = start
    for i in track(range(start, max(start, stop)), total=max(0, stop - start), description=description,
                   enabled=progress):
        losses.append(float(step(i)))
        done = i + 1
        if done % log_every == 0 or done == stop:
            history.append([name, done, float(np.mean(losses[-log_every:]))])
            if log is not None:
                log(f"{name} step {done}/{stop}  loss {history[-1][2]:.4f}")
        if done % checkpoint_every == 0 and done < stop:
            save(done)
    return StepsResult(step=done, steps_run=done - start, seconds=time.perf_counter() - t0)
