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
