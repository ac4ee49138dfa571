"""The training state: what a checkpoint holds besides the weights, and how a run continues from it.

``main.py`` saves :func:`checkpoint_contents` (atomically, through
``ops.checkpoint_files.save_checkpoint``), finds the file to continue from with
:func:`find_resume_checkpoint` and restores optimizer, scheduler, scaler,
bad-data counters, position and RNG states with :func:`restore`, or starts from
another run's weights with :func:`load_tune_from` (timm's
``CheckpointSaver``/``resume_checkpoint`` split the same way).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import torch

from ops.bad_samples import BadSampleMonitor
from ops.checkpoint_files import FORMAT_VERSION, capture_rng_state, read_verified_checkpoint, resolve_resume, to_plain
from ops.lr_schedule import EpochLR
from ops.model_config import ModelConfig
from ops.models import PAN
from ops.runtime import DistInfo, broadcast, gather_objects, on_main_process
from ops.weights import CheckpointError, load_model_weights, strip_prefix

logger = logging.getLogger(__name__)

#: What a checkpoint of this trainer holds beyond the weights, and a run needs to continue.
RESUME_KEYS = ("epoch", "optimizer", "scheduler")


@dataclass
class ResumePoint:
    """Where a run continues: the epoch and the batches of it already done, the best top-1 so far, and
    the saved per-process RNG states (None for a fresh start)."""

    epoch: int
    step_in_epoch: int = 0
    best_prec1: float = 0.0
    rng_states: list | None = None


def checkpoint_contents(epoch: int, step_in_epoch: int, *, args: argparse.Namespace, model: PAN,
                        optimizer: torch.optim.Optimizer, scheduler: EpochLR,
                        scaler: torch.amp.GradScaler | None, best_prec1: float, rng_states: list[dict],
                        monitor: BadSampleMonitor, layout: dict) -> dict:
    """The checkpoint of a run at batch ``step_in_epoch`` of ``epoch`` (0: the epoch's start).

    Tensors and plain types only; the model's configuration is stored once,
    as ``model_config``; ``layout`` (world size, batch size, iteration size,
    training list hash) is what a resume must match.
    """
    return {
        "format_version": FORMAT_VERSION, "epoch": epoch, "step_in_epoch": step_in_epoch,
        "dataset": args.dataset, "model_config": model.model_config.to_dict(),
        "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else {},
        "best_prec1": float(best_prec1), "args": to_plain(vars(args)), "rng_state": rng_states,
        "sampler_state": {"epoch": epoch, "start": step_in_epoch * args.batch_size, "seed": args.seed},
        "bad_samples": monitor.state_dict(), **layout,
    }


def gather_rng_states(info: DistInfo) -> list[dict]:
    """Every process's RNG states, for a checkpoint that resumes each process where it was."""
    return gather_objects(capture_rng_state(), info)


def find_resume_checkpoint(resume: str, model_dir: str, info: DistInfo) -> tuple[str, dict] | None:
    """The checkpoint ``--resume`` names (``auto``: this run's latest good one), read on every process.

    Rank 0 alone picks the file (it may move a corrupt one aside); the others
    read what it chose. None when ``auto`` finds no checkpoint yet.
    """
    resolved = on_main_process(lambda: resolve_resume(resume, model_dir), info)
    path = broadcast(resolved[0] if resolved else None, info)
    if path is None:
        return None
    return resolved if info.is_main else (path, read_verified_checkpoint(path))


def check_resume_compatible(ckpt: dict, path: str, current: dict, model: PAN, allow_change: bool) -> None:
    """Refuse a checkpoint that cannot be continued: a released or foreign file (weights only, no
    training state), another model, or another data/process layout unless allowed."""
    missing = [key for key in RESUME_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"--resume {path} holds no training state of this trainer (no {', '.join(missing)}): it is a "
            f"released or foreign checkpoint. To start a run from its weights, pass it as --tune_from")
    load_model_weights(model, ckpt["state_dict"], source=f"--resume {path}")
    differ: list[str] = []
    if ckpt.get("model_config"):  # every checkpoint of this trainer has one; dropout may change on resume
        saved = ModelConfig.from_checkpoint(ckpt, source=f"--resume {path}")
        differ = [f"{k}: checkpoint {theirs!r}, this run {ours!r}"
                  for k, theirs, ours in model.model_config.differences(saved)]
    if differ:
        raise CheckpointError(f"--resume {path} was trained with another model:\n  " + "\n  ".join(differ))
    changes = [f"{k}: checkpoint {ckpt[k]!r}, this run {v!r}"
               for k, v in current.items() if k in ckpt and ckpt[k] != v]
    if changes and not allow_change:
        raise CheckpointError(
            f"--resume {path} comes from a run with another layout:\n  " + "\n  ".join(changes)
            + "\nResuming would change the sample order or the effective batch; pass --allow-resume-change "
            "to resume anyway (the result then differs from an uninterrupted run)."
        )
    for change in changes:
        logger.warning("--allow-resume-change: %s", change)


def restore(ckpt: dict, path: str, *, model: PAN, optimizer: torch.optim.Optimizer, scheduler: EpochLR,
            scaler: torch.amp.GradScaler | None, monitor: BadSampleMonitor, layout: dict, allow_change: bool,
            steps_in_epoch: int) -> ResumePoint:
    """Load a checkpoint of this trainer into the run's objects; returns where to continue.

    The weights must fit the model and the configuration must match (see
    :func:`check_resume_compatible`). After an allowed change of the total
    batch, the position within the epoch is recomputed from the videos
    already consumed.
    """
    check_resume_compatible(ckpt, path, layout, model, allow_change)
    optimizer.load_state_dict(ckpt["optimizer"])
    point = ResumePoint(int(ckpt["epoch"]), int(ckpt.get("step_in_epoch", 0)), float(ckpt.get("best_prec1", 0.0)),
                        ckpt.get("rng_state"))
    total = layout["batch_size"] * layout["world_size"]
    saved_total = ckpt.get("batch_size", layout["batch_size"]) * ckpt.get("world_size", 1)
    if point.step_in_epoch and saved_total != total:
        point.step_in_epoch = point.step_in_epoch * saved_total // total
    if point.step_in_epoch >= steps_in_epoch:  # an allowed change made the epoch shorter
        point.epoch, point.step_in_epoch = point.epoch + 1, 0
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("bad_samples"):
        monitor.load_state_dict(ckpt["bad_samples"])
    logger.info("resumed from %s: epoch %d, step %d, best top-1 %.2f", path, point.epoch, point.step_in_epoch,
                point.best_prec1)
    return point


def _is_classifier(name: str) -> bool:
    """The class-count-sized tensors: VAP's ``pred`` (``base_model.fc.pred.*`` on ResNets,
    ``base_model.classifier.pred.*`` on MobileNetV2) or the plain head ``new_fc.*``."""
    return name.startswith("new_fc.") or ".pred." in name


def load_tune_from(model: PAN, path: str) -> list[str]:
    """Load another run's weights, leaving out classifier tensors whose shape differs.

    Everything else must match (:class:`CheckpointError` lists what does not).
    Returns the names left out.
    """
    state = strip_prefix(read_verified_checkpoint(path)["state_dict"])
    own = model.state_dict()
    skipped = [k for k, v in state.items()
               if _is_classifier(k) and k in own and tuple(v.shape) != tuple(own[k].shape)]
    merged = {k: (own[k] if k in skipped else v) for k, v in state.items()}
    load_model_weights(model, merged, source=f"--tune_from {path}")
    if skipped:
        logger.info("--tune_from %s: classifier left out (class count differs): %s", path, ", ".join(skipped))
    return skipped
