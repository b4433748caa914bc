"""Optimiser and learning-rate schedule registries."""

import pytest
import torch

from vqgan_core.optimizers import make_optimizer, optimizer_names
from vqgan_core.schedules import make_lr_schedule


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


def test_lr_schedules():
    assert make_lr_schedule("constant", 100).factor(99) == 1.0
    cos = make_lr_schedule("cosine", 101)
    assert cos.factor(0) == pytest.approx(1.0) and cos.factor(100) == pytest.approx(0.1)
    step = make_lr_schedule("step", 100)
    assert step.factor(74) == 1.0 and step.factor(75) == pytest.approx(0.1)
    pl = make_lr_schedule("plateau", 100, patience=2)
    for v in [1.0, 1.0, 1.0, 1.0]:
        pl.observe(v)
    assert pl.factor(0) == 0.5
    neg = make_lr_schedule("plateau", 100, patience=2)  # negative-weight prompts give negative losses
    for v in [-1.0, -0.9995, -0.9995, -0.9995]:  # slightly worse each time: a plateau, not progress
        neg.observe(v)
    assert neg.factor(0) == 0.5
    falling = make_lr_schedule("plateau", 100, patience=2)  # steady progress never lowers the rate
    for k in range(30):
        falling.observe(100.0 - 3 * k)
    assert falling.factor(0) == 1.0
    with pytest.raises(ValueError, match="valid names"):
        make_lr_schedule("warmup", 10)
