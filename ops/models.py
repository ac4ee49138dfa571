"""The PAN video model: a TSN-style wrapper around a 2D backbone.

A clip of ``T`` segments, each ``m`` consecutive frames, enters as the TSN
layout ``[N, T*m*3, H, W]``. Depending on the modality (see
:mod:`ops.modalities`) each segment becomes one RGB frame, ``m - 1`` PA maps, or
both stacked; the backbone (optionally with TSM shifts) maps every segment to a
feature, and the head (VAP, or dropout + linear + segment consensus) gives
``[N, num_class]``.

Parameter names are those of the released checkpoints (without DataParallel's
``module.``): ``PA.shallow_conv.*``, ``base_model.*``, ``base_model.fc.TES.*``,
``base_model.fc.pred.*``.

The configuration lives in one :class:`ops.model_config.ModelConfig`
(``model.model_config``); the published attributes (``model.modality``,
``model.arch``, ``model.num_segments``...) read it, and ``model.config()`` is
its dict, the checkpoint's ``model_config``.
"""

from __future__ import annotations

import torch
from torch import nn

from ops.backbones import add_temporal_shift, build_backbone, first_conv, get_backbone_spec
from ops.modalities import DEFAULT_PA_LENGTH, Modality, get_modality
from ops.model_config import ModelConfig
from ops.PAN_modules import PA, VAP
from ops.temporal_shift import check_shift_mode

CONSENSUS_TYPES = ("avg", "identity")


def _config_attribute(name: str, doc: str) -> property:
    """A read-only attribute of the model that reads field ``name`` of its configuration."""
    return property(lambda self: getattr(self.model_config, name), doc=doc)


class PAN(nn.Module):
    """PAN (Lite, PA or RGB stream) on a torchvision backbone.

    Args:
        num_class: number of classes.
        num_segments: segments per clip ``T``.
        modality: ``"RGB"``, ``"PA"`` or ``"Lite"``.
        base_model: backbone name (``resnet18/34/50/101/152``, ``mobilenet_v2``).
        consensus_type: ``"avg"`` (mean over segments) or ``"identity"`` (keep
            per-segment scores: output ``[N, T, num_class]``); unused with VAP.
        before_softmax: kept for command-line compatibility; must be True (the
            model returns logits).
        dropout: dropout before the classifier.
        partial_bn: freeze every BatchNorm except the first while training.
        pretrain: ``"imagenet"`` (torch cache), a weights file, or random init
            for anything else (``None``, ``"none"``, ``"scratch"``).
        is_shift: insert temporal shifts (TSM).
        shift_div: a ``1/shift_div`` share of channels moves each way.
        shift_place: ``"blockres"`` or ``"block"``.
        shift_mode: ``"bidirectional"`` (published) or ``"online"`` (segment ``t``
            takes shifted channels from ``t - 1`` only; see :mod:`ops.streaming`).
        fc_lr5: give the classifier 5x (weights) / 10x (biases) learning rate.
        temporal_pool: halve the segments after layer1 (ResNets).
        data_length: frames per segment ``m`` for PA and Lite (4 in the paper).
        has_VAP: VAP head instead of linear + consensus.

    The configuration keywords are the fields of :class:`ops.model_config.ModelConfig`
    (``model.model_config``; :meth:`from_config` builds from one).
    ``new_length`` is accepted only as a check: the frames read per segment
    follow from ``modality`` and ``data_length``.
    """

    def __init__(
        self,
        num_class: int,
        num_segments: int,
        modality: str,
        base_model: str = "resnet50",
        new_length: int | None = None,
        consensus_type: str = "avg",
        before_softmax: bool = True,
        dropout: float = 0.8,
        img_feature_dim: int = 256,
        crop_num: int = 1,
        partial_bn: bool = True,
        print_spec: bool = False,
        pretrain: str | None = "imagenet",
        is_shift: bool = False,
        shift_div: int = 8,
        shift_place: str = "blockres",
        fc_lr5: bool = False,
        temporal_pool: bool = False,
        non_local: bool = False,
        data_length: int = DEFAULT_PA_LENGTH,
        has_VAP: bool = False,
        shift_mode: str = "bidirectional",
    ) -> None:
        super().__init__()
        if not before_softmax:
            raise ValueError("before_softmax=False is not supported: PAN returns logits")
        if non_local:
            raise ValueError("non_local is not implemented in PAN")
        if consensus_type not in CONSENSUS_TYPES:
            raise ValueError(f"unknown consensus_type {consensus_type!r}; choose one of {', '.join(CONSENSUS_TYPES)}")
        check_shift_mode(shift_mode)
        if temporal_pool and shift_mode == "online":
            raise ValueError("temporal_pool pools over the next segment too: it cannot go with shift_mode='online'")
        if temporal_pool and num_segments % 2:
            raise ValueError(f"temporal_pool needs an even number of segments, got {num_segments}")
        self.spec: Modality = get_modality(modality)
        # The one record of the configuration; the published attributes below read it.
        self.model_config = ModelConfig(
            modality=modality, base_model=base_model, num_segments=num_segments, num_class=num_class,
            is_shift=is_shift, shift_div=shift_div, shift_place=shift_place, shift_mode=shift_mode,
            temporal_pool=temporal_pool,
            data_length=data_length, has_VAP=has_VAP, consensus_type=consensus_type, dropout=dropout,
        )
        if new_length is not None and new_length != self.new_length:
            raise ValueError(
                f"new_length={new_length} contradicts modality {modality} with data_length={data_length} "
                f"({self.new_length} frames per segment)"
            )
        self.pretrain = pretrain
        self.fc_lr5 = fc_lr5
        self._enable_pbn = partial_bn
        self.input_mean = list(self.spec.mean)
        self.input_std = list(self.spec.std)
        self.input_size = 224
        self.crop_size = 224
        self.scale_size = 224 * 256 // 224

        # Registered before base_model: the released state_dict lists PA first,
        # and get_optim_policies treats PA's conv as the first layer.
        if self.spec.uses_pa:
            self.PA = PA(data_length)
        self.base_model = self._build_base_model(base_model, pretrain)
        if not has_VAP:
            self.new_fc = nn.Linear(get_backbone_spec(base_model).feature_dim, num_class)
            nn.init.normal_(self.new_fc.weight, 0.0, 0.001)
            nn.init.zeros_(self.new_fc.bias)

    @classmethod
    def from_config(
        cls, config: ModelConfig, *, pretrain: str | None = "imagenet", partial_bn: bool = True, fc_lr5: bool = False
    ) -> "PAN":
        """The model ``config`` describes; ``pretrain``, ``partial_bn`` and ``fc_lr5`` are
        training settings (initial weights, frozen BatchNorms, classifier learning rate)."""
        return cls(**config.to_dict(), pretrain=pretrain, partial_bn=partial_bn, fc_lr5=fc_lr5)

    # The published attributes, each a field of ``model_config`` (read-only: the configuration
    # is fixed once the layers are built). ``base_model`` is the backbone module; its name is ``arch``.
    modality = _config_attribute("modality", "``RGB``, ``PA`` or ``Lite``.")
    arch = _config_attribute("base_model", "Backbone name (the ``base_model`` keyword, ``--arch``).")
    num_segments = _config_attribute("num_segments", "Segments per clip ``T``.")
    num_class = _config_attribute("num_class", "Classes.")
    is_shift = _config_attribute("is_shift", "Temporal shifts (TSM) inserted.")
    shift_div = _config_attribute("shift_div", "A ``1/shift_div`` share of channels shifts each way.")
    shift_place = _config_attribute("shift_place", "``blockres`` or ``block``.")
    shift_mode = _config_attribute("shift_mode", "``bidirectional`` (published) or ``online`` (one-way).")
    temporal_pool = _config_attribute("temporal_pool", "Segments halved after layer1.")
    data_length = _config_attribute("data_length", "Frames per segment ``m`` for PA and Lite.")
    has_VAP = _config_attribute("has_VAP", "VAP head instead of linear + consensus.")
    consensus_type = _config_attribute("consensus_type", "``avg`` or ``identity``.")
    dropout = _config_attribute("dropout", "Dropout before the classifier.")

    @property
    def new_length(self) -> int:
        """Frames read per segment: 1 for RGB, ``data_length`` for PA and Lite."""
        return self.spec.frames_per_segment(self.data_length)

    def _build_base_model(self, arch: str, pretrain: str | None) -> nn.Module:
        spec = get_backbone_spec(arch)
        net = build_backbone(arch, pretrain)
        in_channels = self.spec.backbone_in_channels(self.data_length)
        if in_channels != 3:
            self._widen_first_conv(net, in_channels)
        if self.is_shift:
            add_temporal_shift(net, arch, self.num_segments, self.shift_div, self.shift_place, self.temporal_pool,
                               self.shift_mode)
        head_segments = self.num_segments // 2 if self.temporal_pool else self.num_segments
        if self.has_VAP:
            head: nn.Module = VAP(head_segments, spec.feature_dim, self.num_class, self.dropout)
        else:
            head = nn.Dropout(p=self.dropout)
        setattr(net, spec.head_attr, head)
        return net

    @staticmethod
    def _widen_first_conv(net: nn.Module, in_channels: int) -> None:
        """Give conv1 ``in_channels`` inputs, each initialised with the mean RGB kernel.

        With ImageNet weights this keeps the pretrained filters' response to a
        grey input; with random init it is just another initialisation.
        """
        parent, name, conv = first_conv(net)
        mean_kernel = conv.weight.detach().mean(dim=1, keepdim=True)
        wide = nn.Conv2d(
            in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            wide.weight.copy_(mean_kernel.expand(-1, in_channels, -1, -1))
            if conv.bias is not None:
                wide.bias.copy_(conv.bias)
        if isinstance(parent, nn.Sequential):
            parent[int(name)] = wide
        else:
            setattr(parent, name, wide)

    # ------------------------------------------------------------------ forward
    def segment_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the backbone sees for each segment.

        Args:
            x: ``[N, T*m*3, H, W]`` normalised frames.

        Returns:
            ``[N*T, C, H, W]``: ``C = 3`` (RGB), ``m - 1`` (PA) or ``3 + m - 1`` (Lite).
        """
        height, width = x.shape[-2:]
        segments = x.reshape(-1, 3 * self.new_length, height, width)
        if not self.spec.uses_pa:
            return segments
        pa = self.PA(segments)
        if self.spec.keeps_rgb:
            return torch.cat((segments[:, :3], pa), dim=1)
        return pa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T*m*3, H, W]`` -> ``[N, num_class]`` logits."""
        out = self.base_model(self.segment_inputs(x))
        if self.has_VAP:
            return out
        out = self.new_fc(out)
        segments = self.num_segments // 2 if self.temporal_pool else self.num_segments
        out = out.reshape(-1, segments, self.num_class)
        return out.mean(dim=1) if self.consensus_type == "avg" else out

    # ------------------------------------------------------------------ training
    def train(self, mode: bool = True) -> "PAN":
        """Switch modes; with partial BN, every BatchNorm but the first stays frozen."""
        super().train(mode)
        if self._enable_pbn and mode:
            batch_norms = [m for m in self.base_model.modules() if isinstance(m, nn.BatchNorm2d)]
            for bn in batch_norms[1:]:
                bn.eval()
                bn.weight.requires_grad_(False)
                bn.bias.requires_grad_(False)
        return self

    def partialBN(self, enable: bool) -> None:
        self._enable_pbn = enable

    def get_optim_policies(self) -> list[dict]:
        """Parameter groups with the published learning-rate and decay multipliers.

        Each group carries ``lr_mult`` and ``decay_mult``; the trainer sets
        ``lr = base_lr * lr_mult`` and ``weight_decay = base_wd * decay_mult``.
        The first convolution (PA's shallow conv for PA and Lite) gets the
        modality's multipliers, biases get 2x and no decay, BatchNorm no decay.
        """
        first_w, first_b, normal_w, normal_b, bn, lr5_w, lr10_b = [], [], [], [], [], [], []
        conv_count = bn_count = 0
        for module in self.modules():
            params = [p for p in module.parameters(recurse=False)]
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                conv_count += 1
                weights, biases = (first_w, first_b) if conv_count == 1 else (normal_w, normal_b)
                weights.append(module.weight)
                if module.bias is not None:
                    biases.append(module.bias)
            elif isinstance(module, nn.Linear):
                weights, biases = (lr5_w, lr10_b) if self.fc_lr5 else (normal_w, normal_b)
                weights.append(module.weight)
                if module.bias is not None:
                    biases.append(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                bn_count += 1
                if not self._enable_pbn or bn_count == 1:
                    bn.extend(params)
            elif params:
                raise ValueError(f"no learning-rate policy for module type {type(module).__name__}")
        first_lr, first_bias_lr = self.spec.first_layer_lr_mult
        groups = [
            ("first_conv_weight", first_w, first_lr, 1),
            ("first_conv_bias", first_b, first_bias_lr, 0),
            ("normal_weight", normal_w, 1, 1),
            ("normal_bias", normal_b, 2, 0),
            ("BN scale/shift", bn, 1, 0),
            ("lr5_weight", lr5_w, 5, 1),
            ("lr10_bias", lr10_b, 10, 0),
        ]
        return [
            {"params": params, "lr_mult": lr_mult, "decay_mult": decay_mult, "name": name}
            for name, params, lr_mult, decay_mult in groups
        ]

    def config(self) -> dict:
        """``model_config.to_dict()``: the configuration as the checkpoint's ``model_config``
        stores it (plain types, the constructor's keyword names)."""
        return self.model_config.to_dict()


#: Published name of the wrapper class (TSN lineage).
TSN = PAN
