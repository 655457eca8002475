"""The training engine every trainer shares: epoch loop, early stopping, checkpoints and resume, progress."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simgen.errors import ParameterError

__all__ = [
    "EarlyStopping",
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
        for key in ("best", "best_epoch", "last_epoch"):
            setattr(self, key, state[key])


def _fit_epochs(run, model, opt, sched, train_epoch, *, state, epochs, monitor, mode, patience, min_delta, header,
                logger, stop_after=None) -> dict:
    """Epoch loop shared by the trainers of this module: checkpoint, early stopping, resume.

    ``state`` is the resumed ``last.pt`` (or ``None``).  After every epoch ``last.pt`` holds
    model, optimizer, scheduler, torch RNG, early-stopping state and history, so a killed
    run restarted from it repeats exactly what the uninterrupted run would have done.
    """
    import torch

    stopper = EarlyStopping(patience=patience, mode=mode, min_delta=min_delta)
    history: list[dict] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():  # pragma: no cover - GPU only
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        history = list(state["history"])
        start = int(state["epoch"]) + 1
        if stopper.should_stop:
            logger.message(f"run had stopped early at epoch {start}; nothing to do")
            start = epochs
    run_now = 0
    for epoch in range(start, epochs):
        row = train_epoch(epoch)
        value = row.get(monitor, float("nan"))
        improved = stopper.step(value, epoch)
        row = {"epoch": epoch, **{k: float(v) for k, v in row.items()}, "lr": float(opt.param_groups[0]["lr"])}
        history.append(row)
        ckpt = {
            **header,
            "epoch": epoch,
            "state_dict": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "early_stopping": stopper.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "history": history,
            "monitor": monitor,
        }
        run.save(ckpt, best=improved)
        logger.epoch(epoch, **{k: v for k, v in row.items() if k != "epoch"}, best="*" if improved else "")
        run_now += 1
        if stopper.should_stop or (stop_after is not None and run_now >= stop_after):
            break
    return {
        "out_dir": str(run.path),
        "best": {"epoch": stopper.best_epoch, monitor: stopper.best},
        "monitor": monitor,
        "epochs_run": run_now,
        "stopped_early": stopper.should_stop,
        "history": history,
        "last": str(run.last),
        "best_checkpoint": str(run.best),
    }
