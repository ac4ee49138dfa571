"""Learning-rate schedules of the published trainer, evaluated at every optimizer step.

The published ``adjust_learning_rate`` set, once per epoch,

* ``step``: ``lr * 0.1 ** (number of lr_steps already passed)``,
* ``cos``:  ``0.5 * lr * (1 + cos(pi * epoch / epochs))``,

and gave each parameter group ``lr * lr_mult`` and ``weight_decay * decay_mult``.
Here the same factor is evaluated at the fractional epoch
``epoch + step_in_epoch / steps_per_epoch`` before every optimizer step, so
``step`` is identical to the published schedule (its factor only changes at
whole epochs) and ``cos`` is its smooth version (equal at the first step of
each epoch). An optional linear warm-up over the first ``warmup`` epochs
multiplies the factor (see :func:`warmup_factor`).

The scheduler's position is ``(epoch, step_in_epoch)``, not a global step
count, so a run resumed with another batch size (hence another number of steps
per epoch) still continues at the right point of the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

LR_TYPES = ("step", "cos")


def lr_factor(
    epoch: float,
    lr_type: str,
    epochs: int,
    lr_steps: Sequence[float] = (),
) -> float:
    """Multiplier of the base learning rate at fractional epoch ``epoch`` (no warm-up).

    Example: ``lr_factor(35.0, "step", 80, [30, 60]) == 0.1``;
    ``lr_factor(40.0, "cos", 80) == 0.5``.
    """
    if lr_type == "step":
        passed = sum(1 for s in lr_steps if epoch >= s)
        factor = 0.1**passed
    elif lr_type == "cos":
        factor = 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    else:
        raise ValueError(f"unknown lr_type {lr_type!r}; choose one of {', '.join(LR_TYPES)}")
    return factor


def warmup_factor(step: int, steps_per_epoch: int, warmup: float) -> float:
    """Linear warm-up over ``warmup`` epochs: ``(step + 1) / warmup_steps``, then 1.

    ``step`` counts optimizer steps from the start of training; counting from
    1 keeps the first step's learning rate above zero.
    """
    warmup_steps = warmup * steps_per_epoch
    if warmup_steps <= 0 or step + 1 >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def build_param_groups(policies: list[dict], lr: float, weight_decay: float) -> list[dict]:
    """Optimizer groups from ``model.get_optim_policies()``: ``lr * lr_mult``, ``wd * decay_mult``.

    Empty groups are dropped (the optimizer rejects nothing, but they clutter
    the saved state); each group keeps its multipliers for the scheduler.
    """
    groups = []
    for policy in policies:
        if not policy["params"]:
            continue
        groups.append(
            {
                "params": policy["params"],
                "lr": lr * policy["lr_mult"],
                "weight_decay": weight_decay * policy["decay_mult"],
                "lr_mult": float(policy["lr_mult"]),
                "decay_mult": float(policy["decay_mult"]),
                "name": policy["name"],
            }
        )
    return groups


class EpochLR:
    """Sets every group's ``lr = base_lr * lr_mult * lr_factor(...)`` at each step.

    Use: ``scheduler.set_position(epoch, step_in_epoch)`` (done by ``step()``
    automatically), then ``optimizer.step()``. ``state_dict()`` holds plain
    types only; ``load_state_dict`` restores the position.

    Args:
        optimizer: groups carry ``lr_mult`` (see :func:`build_param_groups`).
        base_lr: the ``--lr`` value.
        steps_per_epoch: optimizer steps in one epoch (>= 1).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        lr_type: str,
        epochs: int,
        steps_per_epoch: int,
        lr_steps: Sequence[float] = (),
        warmup: float = 0.0,
    ) -> None:
        if lr_type not in LR_TYPES:
            raise ValueError(f"unknown lr_type {lr_type!r}; choose one of {', '.join(LR_TYPES)}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.lr_type = lr_type
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.lr_steps = [float(s) for s in lr_steps]
        self.warmup = float(warmup)
        self.epoch = 0
        self.step_in_epoch = 0
        self.set_position(0, 0)

    def factor(self) -> float:
        t = self.epoch + self.step_in_epoch / self.steps_per_epoch
        step = self.epoch * self.steps_per_epoch + self.step_in_epoch
        return lr_factor(t, self.lr_type, self.epochs, self.lr_steps) * warmup_factor(
            step, self.steps_per_epoch, self.warmup
        )

    def set_position(self, epoch: int, step_in_epoch: int) -> None:
        """Move to optimizer step ``step_in_epoch`` of ``epoch`` and set the groups' lr."""
        self.epoch, self.step_in_epoch = int(epoch), int(step_in_epoch)
        lr = self.base_lr * self.factor()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def step(self) -> None:
        """Advance by one optimizer step (call after ``optimizer.step()``)."""
        if self.step_in_epoch + 1 >= self.steps_per_epoch:
            self.set_position(self.epoch + 1, 0)
        else:
            self.set_position(self.epoch, self.step_in_epoch + 1)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    @property
    def lr(self) -> float:
        """The base learning rate times the current factor (a group with ``lr_mult`` 1)."""
        return self.base_lr * self.factor()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "base_lr": self.base_lr,
            "lr_type": self.lr_type,
            "epochs": self.epochs,
            "lr_steps": list(self.lr_steps),
            "warmup": self.warmup,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the position; the schedule's settings stay those of this run.

        ``step_in_epoch`` is rescaled when this run has another number of steps
        per epoch (an allowed batch-size change).
        """
        step = int(state["step_in_epoch"])
        saved_steps = int(state.get("steps_per_epoch", self.steps_per_epoch))
        if saved_steps != self.steps_per_epoch and step:
            step = step * self.steps_per_epoch // saved_steps
        self.set_position(int(state["epoch"]), step)
