"""Optimiser and learning-rate schedule registries."""

import pytest
import torch

from vqgan_core.engine.optim_spec import ScheduleFactor
from vqgan_core.engine.optimizers import make_optimizer, optimizer_names


@pytest.mark.parametrize("name", optimizer_names())
def test_every_optimizer_steps(name):
    z = torch.ones(4, requires_grad=True)
    opt = make_optimizer(name, [z], lr=0.1)
    z.sum().backward()
    opt.step()
    assert (z < 1).all()


def test_classic_names_and_unknown_rejected():
    assert {"adam", "adamw", "adagrad", "adamax", "rmsprop", "radam", "sgd", "adamp"} <= set(optimizer_names())
    make_optimizer("AdamW", [torch.zeros(1, requires_grad=True)], lr=0.1)  # case-insensitive like the classic names
    with pytest.raises(ValueError, match="valid names: .*adam.*sgd"):
        make_optimizer("DiffGrad", [torch.zeros(1, requires_grad=True)], lr=0.1)


def _factors(sched, n, losses=None):
    out = []
    for k in range(n):
        out.append(sched.factor())
        sched.step()
        if losses is not None:
            sched.observe(losses[k])
    return out


def test_lr_schedules_are_torch_schedulers():
    """The run's learning-rate multiplier comes from torch.optim.lr_scheduler (on a unit optimiser)."""
    from torch.optim import lr_scheduler

    const = ScheduleFactor("constant", 100)
    assert _factors(const, 100)[-1] == 1.0
    cos = ScheduleFactor("cosine", 101)
    assert isinstance(cos.scheduler, lr_scheduler.CosineAnnealingLR)
    f = _factors(cos, 101)
    assert f[0] == pytest.approx(1.0) and f[100] == pytest.approx(0.1) and f[50] == pytest.approx(0.55)
    step = ScheduleFactor("step", 100)
    f = _factors(step, 100)
    assert f[74] == 1.0 and f[75] == pytest.approx(0.1)
    pl = ScheduleFactor("plateau", 100, patience=2)
    assert isinstance(pl.scheduler, lr_scheduler.ReduceLROnPlateau)
    for v in [1.0, 1.0, 1.0, 1.0]:
        pl.observe(v)
    assert pl.factor() == 0.5
    neg = ScheduleFactor("plateau", 100, patience=2)  # negative-weight prompts give negative losses
    for v in [-1.0, -0.9995, -0.9995, -0.9995]:  # slightly worse each time: a plateau, not progress
        neg.observe(v)
    assert neg.factor() == 0.5
    falling = ScheduleFactor("plateau", 100, patience=2)  # steady progress never lowers the rate
    for k in range(30):
        falling.observe(100.0 - 3 * k)
    assert falling.factor() == 1.0
    with pytest.raises(ValueError, match="valid names"):
        ScheduleFactor("warmup", 10)


def test_schedule_state_survives_json():
    """A schedule's state goes into latent files as JSON and comes back to the same position."""
    import json

    for name in ("cosine", "step", "plateau"):
        a = ScheduleFactor(name, 20)
        _factors(a, 16, [1.0] * 16)
        b = ScheduleFactor(name, 20)
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        assert _factors(a, 4, [1.0] * 4) == _factors(b, 4, [1.0] * 4), name
