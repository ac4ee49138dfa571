"""One training epoch and one validation pass, with everything passed in as arguments.

Shapes: a batch is ``x [B, T*m*3, H, W]`` (``T`` segments of ``m`` frames,
see :mod:`ops.modalities`) and ``labels [B]``; the model returns ``[B, C]``.

Both functions work in one process or under ``torchrun``: training reduces a
few numbers per step across processes (mean loss, a non-finite flag, bad-data
counts) so that every process takes the same decision at the same step;
validation sums correct predictions and counts over processes, each video
being evaluated by exactly one of them.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from ops.bad_samples import BadSampleMonitor
from ops.errors import PanError
from ops.lr_schedule import EpochLR
from ops.run_folder import RunFolder
from ops.runtime import DistInfo, autocast, gather_objects, sum_over_processes
from ops.temporal_shift import clips_as_one_stream

logger = logging.getLogger(__name__)


class NonFiniteLossError(PanError, RuntimeError):
    """The loss became NaN or infinite; nothing after the last good checkpoint was saved."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"loss is {value} at epoch {epoch}, step {step}: stopping. No checkpoint was written with these "
            "weights; the last good one is kept. Lower --lr, use --clip-gradient, or check the data."
        )


@dataclass
class StepSettings:
    """How each training step is run (from the command line)."""

    amp: bool = False
    iter_size: int = 1
    clip_gradient: float = 0.0
    channels_last: bool = False
    freeze_bn: bool = False
    print_freq: int = 20
    train_history: bool = False  # shift each batch as one stream (ops.temporal_shift.clips_as_one_stream)


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics); their affine parameters still train."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def correct_counts(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k scores, for each k.

    Args:
        output: ``[B, C]`` scores. target: ``[B]`` labels.
    """
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    hits = pred.eq(target.view(-1, 1))
    return [int(hits[:, : min(k, maxk)].any(dim=1).sum()) for k in topk]


def forward_loss(model: nn.Module, criterion: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                 device: torch.device, settings: StepSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward half of a training or validation step: ``(output [B, C], loss)`` in its layout and autocast.

    ``x [B, T*m*3, H, W]`` and ``labels [B]`` are on ``device``; the loss is
    computed in fp32 whatever the autocast dtype.
    """
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, settings.amp):
        output = model(x)
    return output, criterion(output.float(), labels)


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None, iter_size: int) -> None:
    """Accumulate the gradient of ``loss / iter_size`` (scaled when there is a gradient scaler)."""
    if scaler is not None:
        scaler.scale(loss / iter_size).backward()
    else:
        (loss / iter_size).backward()


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                   clip_gradient: float) -> None:
    """Unscale, clip the total gradient norm at ``clip_gradient`` (0: no clipping), step, zero the gradients."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_gradient:
        nn.utils.clip_grad_norm_(model.parameters(), clip_gradient)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _progress(total: int, initial: int, desc: str, is_main: bool) -> tqdm:
    # A bar only on a terminal: in a log file it would be thousands of lines.
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                disable=not (is_main and sys.stderr.isatty()))


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: EpochLR,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    epoch: int,
    *,
    steps_in_epoch: int,
    start_step: int = 0,
    scaler: torch.amp.GradScaler | None = None,
    settings: StepSettings,
    dist_info: DistInfo,
    run: RunFolder,
    monitor: BadSampleMonitor,
    on_step_end: Callable[[int], None] | None = None,
) -> dict:
    """Train ``model`` for the rest of ``epoch``, starting after batch ``start_step``.

    ``loader`` yields ``(x, labels, reports)`` (see :func:`ops.bad_samples.collate_with_reports`)
    for the batches not yet done; ``steps_in_epoch`` is the epoch's full batch
    count. After every batch ``i`` (0-based), ``on_step_end(i + 1)`` is called
    on every process (it may write a mid-epoch checkpoint).

    Raises:
        NonFiniteLossError: NaN/inf loss on any process, before its backward pass.
        TooManyBadSamples: the bad-data share crossed ``--max-bad-fraction``.

    Returns: ``{"loss", "top1", "top5"}`` over this process's batches.
    """
    model.train()
    if settings.freeze_bn:
        freeze_batchnorm(model)
    iter_size = settings.iter_size
    optimizer_steps = math.ceil(steps_in_epoch / iter_size)
    loss_sum = top1 = top5 = seen = 0.0
    end = time.perf_counter()
    bar = _progress(steps_in_epoch, start_step, f"epoch {epoch}", dist_info.is_main)
    step = start_step
    for step, (x, labels, reports) in enumerate(loader, start=start_step):
        data_time = time.perf_counter() - end
        x = x.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with clips_as_one_stream(model, len(x)) if settings.train_history else nullcontext():
            output, loss = forward_loss(model, criterion, x, labels, device, settings)

        loss_value = float(loss.detach())
        finite = math.isfinite(loss_value)
        # One reduction per step: every process learns the mean loss, whether
        # any loss was non-finite, and the bad-data counts, and so stops at the
        # same step as the others.
        mean_loss, non_finite, loads, bad = sum_over_processes(
            [loss_value if finite else 0.0, 0.0 if finite else 1.0, float(len(labels) + len(reports)),
             float(len(reports))],
            device, dist_info,
        )
        mean_loss /= dist_info.world_size
        if non_finite:
            raise NonFiniteLossError(epoch, step, loss_value if not finite else float("nan"))
        if bad:
            for r in (r for part in gather_objects(reports, dist_info) for r in part):
                run.log_bad_sample(epoch, step, r.index, r.path, r.reason, r.replacement)
                logger.warning("bad training sample %s (%s); replaced by item %d", r.path, r.reason, r.replacement)
        monitor.update(int(loads), int(bad))
        monitor.check()

        backward(loss, scaler, iter_size)

        boundary = (step + 1) % iter_size == 0 or step + 1 == steps_in_epoch
        if boundary:
            scheduler.set_position(epoch, min(step // iter_size, optimizer_steps - 1))
            optimizer_step(model, optimizer, scaler, settings.clip_gradient)
            run.log_step(epoch, step, mean_loss, scheduler.lr)

        c1, c5 = correct_counts(output.detach(), labels)
        n = len(labels)
        loss_sum += loss_value * n
        top1 += c1
        top5 += c5
        seen += n
        batch_time = time.perf_counter() - end
        global_step = epoch * steps_in_epoch + step
        run.scalar("train/loss", mean_loss, global_step)
        run.scalar("train/lr", scheduler.lr, global_step)
        run.scalar("train/batch_time", batch_time, global_step)
        run.scalar("train/data_time", data_time, global_step)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{scheduler.lr:.2e}")
        if settings.print_freq and (step + 1) % settings.print_freq == 0:
            logger.info(
                "epoch %d [%d/%d] loss %.4f (avg %.4f) top1 %.2f top5 %.2f lr %.3e time %.3fs data %.3fs",
                epoch, step + 1, steps_in_epoch, mean_loss, loss_sum / seen, 100 * top1 / seen,
                100 * top5 / seen, scheduler.lr, batch_time, data_time,
            )
        if on_step_end is not None:
            on_step_end(step + 1)
        end = time.perf_counter()
    bar.close()
    if seen == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan")}
    result = {"loss": loss_sum / seen, "top1": 100 * top1 / seen, "top5": 100 * top5 / seen}
    run.scalar("train/top1", result["top1"], epoch)
    run.scalar("train/top5", result["top5"], epoch)
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
    dist_info: DistInfo = DistInfo(),
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> dict:
    """Validation loss, top-1 and top-5 (in %) over the whole list, across processes.

    ``on_batch(output [B, C], labels [B])`` is called after each batch (this
    process's share; e.g. :class:`ops.validation_extras.ConfusionCounter`).

    ``loader`` must give each process a disjoint share of the videos without
    padding (:class:`ops.samplers.ShardSampler`); the sums are all-reduced, so
    ``count`` equals the list's length and each video counts once. A sample
    that fails to load stops validation with its file named (no substitution).

    Returns: ``{"loss", "top1", "top5", "count"}``.
    """
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss * n, top-1 hits, top-5 hits, n
    bar = _progress(len(loader), 0, "validation", dist_info.is_main)
    settings = StepSettings(amp=amp, channels_last=channels_last)
    for x, labels in loader:
        x = x.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        output, loss = forward_loss(model, criterion, x, labels, device, settings)
        c1, c5 = correct_counts(output, labels)
        if on_batch is not None:
            on_batch(output, labels)
        n = len(labels)
        sums[0] += float(loss) * n
        sums[1] += c1
        sums[2] += c5
        sums[3] += n
        bar.update(1)
    bar.close()
    loss_sum, hits1, hits5, count = sum_over_processes(sums, device, dist_info)
    count = int(count)
    if count == 0:
        raise RuntimeError("validation saw no samples")
    return {"loss": loss_sum / count, "top1": 100 * hits1 / count, "top5": 100 * hits5 / count, "count": count}
