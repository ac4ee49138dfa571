"""2D backbones from torchvision, and where their ImageNet weights come from.

Nothing here downloads: ImageNet weights are read from torchvision's local cache
(``$TORCH_HOME/hub/checkpoints``, where torchvision saves its downloads) or from a
file the user names; when neither exists, :func:`build_backbone` stops with a
message saying where to put the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

from ops.errors import MissingFileError
from ops.temporal_shift import TemporalShift, insert_temporal_pool, insert_temporal_shift


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and which of its modules PAN replaces."""

    builder: Callable[..., nn.Module]
    #: torchvision's ImageNet weights enum member (only its file name is used).
    weights: torchvision.models.WeightsEnum
    #: Attribute holding the classifier that PAN's head replaces.
    head_attr: str
    #: Size of the pooled feature that enters the head.
    feature_dim: int


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, "fc", 512),
    "resnet34": BackboneSpec(torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1, "fc", 512),
    "resnet50": BackboneSpec(torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, "fc", 2048),
    "resnet101": BackboneSpec(torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1, "fc", 2048),
    "resnet152": BackboneSpec(torchvision.models.resnet152, torchvision.models.ResNet152_Weights.IMAGENET1K_V1, "fc", 2048),
    "mobilenet_v2": BackboneSpec(
        torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1, "classifier", 1280
    ),
}


def get_backbone_spec(arch: str) -> BackboneSpec:
    try:
        return BACKBONES[arch]
    except KeyError:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}") from None


def imagenet_weights_path(arch: str) -> str:
    """Where torchvision keeps the ImageNet weights of ``arch`` once downloaded."""
    url = get_backbone_spec(arch).weights.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def load_imagenet_state_dict(arch: str, pretrain: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for ``arch``: from the file ``pretrain`` names, or from the torch cache.

    Args:
        pretrain: ``"imagenet"`` (look in the torch cache) or a path to a ``.pth`` file.
    """
    path = imagenet_weights_path(arch) if pretrain == "imagenet" else pretrain
    if not os.path.isfile(path):
        raise MissingFileError(
            f"ImageNet weights for {arch} not found at {path}. Nothing is downloaded at run time: "
            f"put torchvision's file {os.path.basename(imagenet_weights_path(arch))} in "
            f"{os.path.dirname(imagenet_weights_path(arch))} (or set TORCH_HOME), pass "
            f"--pretrain /path/to/weights.pth, or train from scratch with --pretrain none."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def build_backbone(arch: str, pretrain: str | None) -> nn.Module:
    """A torchvision backbone, with ImageNet weights when ``pretrain`` asks for them.

    Args:
        pretrain: ``"imagenet"``, a path to a weights file, or anything falsy /
            ``"none"`` / ``"scratch"`` for random initialisation.
    """
    spec = get_backbone_spec(arch)
    net = spec.builder(weights=None)
    if wants_imagenet(pretrain):
        net.load_state_dict(load_imagenet_state_dict(arch, pretrain))
    return net


def zero_init_residual(backbone: nn.Module) -> int:
    """Zero the scale of the last BatchNorm of every ResNet residual block; returns how many blocks.

    Each block then starts as the identity (its residual branch outputs zero), which keeps the
    first steps of training from scratch stable (Goyal et al., 2017; torchvision's
    ``zero_init_residual``). Only for random initialisation: on ImageNet weights it would erase them.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    count = 0
    for module in backbone.modules():
        last = module.bn2 if isinstance(module, BasicBlock) else module.bn3 if isinstance(module, Bottleneck) else None
        if last is not None:
            nn.init.zeros_(last.weight)
            count += 1
    return count


def wants_imagenet(pretrain: str | None) -> bool:
    """True when ``pretrain`` names ImageNet or a weights file (not random init)."""
    if not pretrain:
        return False
    return pretrain == "imagenet" or os.path.sep in pretrain or pretrain.endswith((".pth", ".pt", ".tar"))


def first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """The backbone's first convolution, with its parent module and attribute name."""
    if hasattr(net, "conv1"):
        return net, "conv1", net.conv1
    stem = net.features[0]  # mobilenet_v2: Conv2dNormActivation(conv, bn, relu6)
    return stem, "0", stem[0]


def add_temporal_shift(net: nn.Module, arch: str, n_segment: int, n_div: int, place: str, temporal_pool: bool,
                       mode: str = "bidirectional") -> None:
    """Insert TSM into ``net`` in place (ResNets: see :func:`insert_temporal_shift`).

    For MobileNetV2 the shift goes in front of the first conv of every inverted
    residual block that has a skip connection (the ``blockres`` idea).
    ``mode``: ``bidirectional`` (published) or ``online`` (one-way, :mod:`ops.temporal_shift`).
    """
    if arch.startswith("resnet"):
        insert_temporal_shift(net, n_segment, n_div, place, temporal_pool, mode)
        if temporal_pool:
            insert_temporal_pool(net, n_segment)
        return
    if temporal_pool:
        raise ValueError(f"--temporal_pool is implemented for ResNets only, not {arch}")
    for block in net.features:
        if getattr(block, "use_res_connect", False):
            block.conv[0] = TemporalShift(block.conv[0], n_segment, n_div, mode)
