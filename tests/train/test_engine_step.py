"""`train.engine.optimizer_step`: the gradient step every torch trainer shares."""

import pytest

from simgen.errors import DataError
from simgen.train.engine import optimizer_step

torch = pytest.importorskip("torch")


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def test_step_moves_weights_clips_and_steps_the_scheduler():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    before = m.weight.detach().clone()
    loss = (m(torch.ones(4, 3)) * 1000).pow(2).mean()
    value = optimizer_step(loss, opt, sched, epoch=0, clip=(list(m.parameters()), 1.0))
    assert value == pytest.approx(float(loss.detach()))
    step = (m.weight.detach() - before).norm()
    assert 0 < float(step) <= 0.1 * 1.0 + 1e-6  # lr x clipped gradient norm
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_a_diverged_loss_is_one_line_and_leaves_the_weights():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    before = m.weight.detach().clone()
    loss = m(torch.ones(1, 3)).sum() * float("nan")
    with pytest.raises(DataError, match="diverged .* epoch 3; lower --lr"):
        optimizer_step(loss, opt, epoch=2)
    assert torch.equal(m.weight.detach(), before)


def test_fit_batches_weights_named_losses_by_batch_size_and_monitors_loss_without_validation(tmp_path):
    from types import SimpleNamespace

    from simgen.train.engine import fit_batches, open_run

    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: the weights, hence the losses, stay fixed
    x = torch.arange(15.0).reshape(5, 3)
    cfg = SimpleNamespace(epochs=2, monitor="val_f1", patience=0, min_delta=0.0)

    def batch_loss(b, epoch):
        out = m(x[b]).squeeze(1)
        return {"a": out.abs().mean(), "b": out.pow(2).mean()}

    run, state = open_run(tmp_path / "run")
    res = fit_batches(run, m, opt, None, batches=lambda epoch: [[0, 1, 2], [3, 4]], batch_loss=batch_loss,
                      validate=None, config=cfg, state=state, maximize="val_f1", header={}, name="toy",
                      message="toy")
    out = m(x).squeeze(1).detach()
    a = (3 * out[:3].abs().mean() + 2 * out[3:].abs().mean()) / 5
    b = (3 * out[:3].pow(2).mean() + 2 * out[3:].pow(2).mean()) / 5
    row = res.history[-1]
    assert list(row) == ["epoch", "a", "b", "loss", "lr"]
    assert row["a"] == pytest.approx(float(a)) and row["b"] == pytest.approx(float(b))
    assert row["loss"] == pytest.approx(float(a + b))
    assert res.monitor == "loss" and res.epochs_run == 2 and res.last.exists()

    f1 = iter([0.2, 0.5])  # with validation: config.monitor, maximised
    res = fit_batches(open_run(tmp_path / "val")[0], m, opt, None, batches=lambda epoch: [[0, 1, 2, 3, 4]],
                      batch_loss=lambda b, epoch: m(x[b]).abs().mean(), validate=lambda: {"val_f1": next(f1)},
                      config=cfg, state=None, maximize="val_f1", header={}, name="toy", message="toy")
    assert res.monitor == "val_f1" and res.best_epoch == 1 and list(res.history[-1]) == ["epoch", "loss", "val_f1", "lr"]
