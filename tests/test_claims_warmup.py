"""The learning-rate warm-up does what docs/TRAINING.md says: ``--warmup N`` is a linear warm-up over N epochs.

Expected values are written out here (fractions of the base lr), not computed with the schedule's own functions.
"""

from __future__ import annotations

import math

import pytest
import torch

from ops.lr_schedule import EpochLR, warmup_factor
from tests.train_support import make_tiny_dataset, read_steps, train  # noqa: F401


def lrs_over(sched: EpochLR, epochs: int, steps: int) -> list[float]:
    out = []
    for epoch in range(epochs):
        for step in range(steps):
            sched.set_position(epoch, step)
            out.append(sched.get_last_lr()[0])
    return out


def scheduler(lr_type: str, warmup: float, epochs: int = 4, steps: int = 4) -> EpochLR:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return EpochLR(opt, 0.1, lr_type, epochs=epochs, steps_per_epoch=steps, lr_steps=[3], warmup=warmup)


def test_warmup_rises_linearly_from_one_step_over_n_epochs_then_follows_the_schedule():
    # 1.5 epochs of 4 steps = 6 warm-up steps: lr * 1/6, 2/6, ..., then lr; the step decay at epoch 3.
    expected = [0.1 * k / 6 for k in range(1, 6)] + [0.1] * 7 + [0.01] * 4
    assert lrs_over(scheduler("step", 1.5), 4, 4) == pytest.approx(expected, rel=1e-12)


def test_warmup_multiplies_the_cosine_schedule_at_each_step():
    # One epoch of 4 steps: step s (counted from 0) gets (s + 1) / 4 of the cosine at epoch s / 4 of 4.
    got = lrs_over(scheduler("cos", 1.0), 2, 4)
    cosine = [0.5 * (1 + math.cos(math.pi * (s / 4) / 4)) for s in range(8)]
    expected = [0.1 * cosine[s] * min(1.0, (s + 1) / 4) for s in range(8)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(0.025) and got[3] == pytest.approx(0.1 * cosine[3])


def test_no_warmup_means_the_full_rate_from_the_first_step():
    assert lrs_over(scheduler("step", 0.0), 1, 4) == [0.1] * 4
    assert warmup_factor(0, 4, 0.0) == 1.0


def test_main_applies_warmup_at_every_training_step(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")  # 8 videos, batch 2: 4 steps per epoch
    train(data, tmp_path, "--warmup", "1", "--lr_type", "step", "--lr_steps", "5")
    lrs = {key: lr for key, (_, lr) in read_steps(tmp_path / "log" / "run").items()}
    assert lrs == pytest.approx({(0, 0): 0.0025, (0, 1): 0.005, (0, 2): 0.0075, (0, 3): 0.01,
                                 (1, 0): 0.01, (1, 1): 0.01, (1, 2): 0.01, (1, 3): 0.01}, rel=1e-6)
