"""What a training command line resolves to, without data: the ``main.py --dry-run`` report.

The report is one JSON-ready dict: the arguments after their side effects
(under their flag names' ``dest``), the run's folders, the dataset entry, the
model's configuration, its parameter groups with their multipliers and
effective values, and the base learning rate of every epoch. It is what a test
compares with the published command lines, field by field, and what a user
checks before spending GPU days.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import torch

from ops.backbones import imagenet_weights_path, wants_imagenet
from ops.dataset_config import DatasetConfig
from ops.lr_schedule import build_param_groups, lr_factor
from ops.models import PAN


def build_on_meta(build: Callable[[], PAN]) -> PAN:
    """Build a model on the meta device: shapes and parameter groups without memory or init cost."""
    with torch.device("meta"):
        return build()


def pretrain_report(pretrain: str | None, arch: str) -> dict[str, Any]:
    """Where the backbone's initial weights would come from, and whether that file is there now."""
    if pretrain == "imagenet":
        path = imagenet_weights_path(arch)
        return {"source": "imagenet", "path": path, "found": os.path.isfile(path)}
    if wants_imagenet(pretrain):
        return {"source": "file", "path": str(pretrain), "found": os.path.isfile(str(pretrain))}
    return {"source": "random", "path": None, "found": None}


def param_group_report(model: PAN, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """The optimizer's groups as ``main.py`` builds them (empty groups dropped)."""
    return [
        {
            "name": group["name"],
            "tensors": len(group["params"]),
            "parameters": int(sum(p.numel() for p in group["params"])),
            "lr_mult": group["lr_mult"],
            "decay_mult": group["decay_mult"],
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
        }
        for group in build_param_groups(model.get_optim_policies(), lr, weight_decay)
    ]


def lr_per_epoch(args: argparse.Namespace) -> list[float]:
    """Base learning rate (a group with ``lr_mult`` 1) at the first step of each epoch, warm-up aside."""
    return [args.lr * lr_factor(float(epoch), args.lr_type, args.epochs, args.lr_steps)
            for epoch in range(args.epochs)]


def training_plan(args: argparse.Namespace, cfg: DatasetConfig, model: PAN, fc_lr5: bool,
                  log_dir: str, model_dir: str) -> dict[str, Any]:
    """The dry-run report of a training command line (see the module docstring)."""
    scale = args.scale_size or args.crop_size * 256 // 224
    return {
        "store_name": args.store_name,
        "log_dir": log_dir,
        "model_dir": model_dir,
        "args": {k: v for k, v in sorted(vars(args).items())},
        "dataset": {
            "name": cfg.name, "num_class": cfg.num_class, "root_path": cfg.root_path,
            "train_list": cfg.train_list, "val_list": cfg.val_list, "image_tmpl": cfg.image_tmpl,
            "video": cfg.video, "flip": cfg.flip,
        },
        "model": {**model.config(), "new_length": model.new_length, "fc_lr5": fc_lr5,
                  "partial_bn": not args.no_partialbn, "pretrain": pretrain_report(args.pretrain, args.arch)},
        "input": {"crop_size": args.crop_size, "scale_size": scale,
                  "frames_per_clip": args.num_segments * model.new_length},
        "param_groups": param_group_report(model, args.lr, args.weight_decay),
        "lr_per_epoch": lr_per_epoch(args),
        "warmup_epochs": args.warmup,
    }

