"""int8 inference for CPUs without native bf16: the backbone quantized, PA and the head in float.

On a CPU without AVX512-BF16/AMX, bf16 autocast is emulated and slower than
fp32, while int8 convolutions have native instructions on every x86 CPU of the
last decade (AVX2 ``vpmaddubsw``; AVX512-VNNI / AVX-VNNI where present). This
module applies PyTorch's own post-training static quantization
(``torch.ao.quantization.quantize_fx`` with the ``x86`` backend: per-channel
int8 weights, per-tensor uint8 activations, BatchNorm and ReLU fused into the
convolutions) to the 2D backbone of a PAN model, calibrated on a few clips.

What stays in float, and why:

* **PA** (the shallow 7x7 convolution and the per-pixel norm of feature
  differences): its maps are differences of nearly equal features, exactly what
  8-bit activations would flatten.
* **The head** (VAP, or the linear classifier and the segment consensus): a
  few thousand multiply-adds per clip; int8 would save nothing and cost accuracy.

The temporal shift (TSM) moves channels between the segments of a clip. Left to
FX it would dequantize, shift in float and quantize three pieces again per
block, which cost about as much as the int8 convolutions saved. Here it runs on
the int8 codes (:func:`quantized_temporal_shift`): a shift only moves values,
so the scale and zero point of its input are exact for its output, and the
zeros that enter at a clip's ends are the zero point.

Only the torchvision ResNets are supported; another backbone is refused with a
:class:`QuantizationUnsupported` naming it rather than left partly in float.
"""

from __future__ import annotations

import copy
import logging
from types import ModuleType

import torch
from torch import nn

from ops.errors import PanError
from ops.temporal_shift import TemporalShift, temporal_shift

logger = logging.getLogger(__name__)

#: Backbones whose graph FX quantizes whole (conv + BatchNorm + ReLU, residual add + ReLU).
SUPPORTED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: PyTorch's quantized engine for x86 CPUs (fbgemm and oneDNN kernels, chosen per layer).
QUANTIZED_ENGINE = "x86"
#: The module that provides the flow; part of PyTorch (deprecated there in favour of torchao, so checked).
QUANTIZE_FX_MODULE = "torch.ao.quantization.quantize_fx"


class QuantizationUnavailable(PanError, RuntimeError):
    """This PyTorch build lacks what int8 inference needs (the module or the engine is named)."""


class QuantizationUnsupported(PanError, ValueError):
    """The model has a part int8 inference does not handle (the part is named)."""


def require_quantize_fx() -> ModuleType:
    """``torch.ao.quantization.quantize_fx``, with the ``x86`` engine selected.

    Raises:
        QuantizationUnavailable: the module cannot be imported, or the engine is not built in.
    """
    try:
        import importlib

        quantize_fx = importlib.import_module(QUANTIZE_FX_MODULE)
    except ImportError as err:
        raise QuantizationUnavailable(
            f"int8 inference needs {QUANTIZE_FX_MODULE} (PyTorch's FX graph-mode quantization), which this "
            f"PyTorch {torch.__version__} cannot import ({err}); install a PyTorch that has it (2.1-2.14 do), "
            "or use --fast fp32 / --fuse_bn --channels_last"
        ) from err
    engines = supported_engines()
    if QUANTIZED_ENGINE not in engines:
        raise QuantizationUnavailable(
            f"int8 inference needs PyTorch's {QUANTIZED_ENGINE!r} quantized engine, and this build has only "
            f"{engines}; use a PyTorch build for x86 CPUs"
        )
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    return quantize_fx


def supported_engines() -> list[str]:
    """The quantized engines this PyTorch build has (``torch.backends.quantized.supported_engines``)."""
    return list(torch.backends.quantized.supported_engines)


def check_quantizable(model: nn.Module) -> None:
    """Refuse, naming the reason, a model :func:`quantize_pan` would not quantize whole.

    Raises:
        QuantizationUnsupported: not a PAN model, a backbone other than a ResNet, or temporal pooling.
    """
    arch = getattr(model, "arch", None) or getattr(model, "base_model_name", None)
    if not hasattr(model, "base_model") or not hasattr(model, "segment_inputs"):
        raise QuantizationUnsupported(f"int8 inference quantizes PAN models; got a {type(model).__name__}")
    if arch not in SUPPORTED_BACKBONES:
        raise QuantizationUnsupported(
            f"int8 inference does not support the backbone {arch!r} (supported: {', '.join(SUPPORTED_BACKBONES)}); "
            "use --fast fp32 or --amp for it"
        )
    if getattr(model, "temporal_pool", False):
        raise QuantizationUnsupported("int8 inference does not support --temporal_pool (its 3D max pooling has "
                                      "no int8 kernel); use --fast fp32 for this model")


def quantized_temporal_shift(x: torch.Tensor, n_segment: int, fold_div: int, mode: str) -> torch.Tensor:
    """:func:`ops.temporal_shift.temporal_shift` on a per-tensor quantized tensor, on its int8 codes.

    Args:
        x: quantized ``[N*T, C, H, W]`` (any memory format; channels-last, as
            the quantized convolutions write it, is the fast one).

    Returns:
        quantized ``[N*T, C, H, W]``, channels-last, with ``x``'s scale and zero point.
    """
    codes = x.int_repr().contiguous(memory_format=torch.channels_last)  # a copy: the shift below is in place
    nt, channels, height, width = codes.shape
    fold = channels // fold_div
    # Channels-last: a [N, T, H, W, C] view of the same memory.
    clips = codes.permute(0, 2, 3, 1).view(nt // n_segment, n_segment, height, width, channels)
    zero = x.q_zero_point()  # the code of 0.0: what enters at the clip's ends
    # Channels [fold, 2 fold) come from segment t - 1 (both modes); the source is copied first (overlap).
    clips[:, 1:, ..., fold : 2 * fold] = clips[:, :-1, ..., fold : 2 * fold].clone()
    clips[:, :1, ..., fold : 2 * fold] = zero
    if mode != "online":  # channels [0, fold) come from segment t + 1
        clips[:, :-1, ..., :fold] = clips[:, 1:, ..., :fold].clone()
        clips[:, -1:, ..., :fold] = zero
    return torch._make_per_tensor_quantized_tensor(codes, x.q_scale(), zero)


class SegmentShift(nn.Module):
    """The temporal shift alone (a :class:`TemporalShift` without its convolution), float.

    Split from the convolution so that FX sees ``shift -> conv -> bn -> relu``
    and fuses the last three, and so that the shift can be swapped for its
    int8 version (:class:`QuantizedSegmentShift`) as an FX custom module.
    """

    def __init__(self, n_segment: int, fold_div: int, mode: str) -> None:
        super().__init__()
        self.n_segment, self.fold_div, self.mode = n_segment, fold_div, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N*T, C, H, W]`` -> shifted ``[N*T, C, H, W]``."""
        return temporal_shift(x, self.n_segment, self.fold_div, self.mode)

    def extra_repr(self) -> str:
        return f"n_segment={self.n_segment}, fold_div={self.fold_div}, mode={self.mode}"


class ObservedSegmentShift(SegmentShift):
    """The shift during calibration (FX observes its input and output; it computes in float)."""

    @classmethod
    def from_float(cls, module: SegmentShift, *args, **kwargs) -> "ObservedSegmentShift":
        observed = cls(module.n_segment, module.fold_div, module.mode)
        observed.qconfig = module.qconfig  # FX's convert reads it
        return observed


class QuantizedSegmentShift(SegmentShift):
    """The shift on int8 codes (:func:`quantized_temporal_shift`): quantized in, quantized out."""

    @classmethod
    def from_observed(cls, module: ObservedSegmentShift, *args, **kwargs) -> "QuantizedSegmentShift":
        return cls(module.n_segment, module.fold_div, module.mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_temporal_shift(x, self.n_segment, self.fold_div, self.mode)


def split_temporal_shifts(backbone: nn.Module) -> int:
    """Replace, in place, each ``TemporalShift(conv)`` by ``Sequential(SegmentShift, conv)``; returns the count.

    Same computation, same parameters (their names change: inference only).
    """
    count = 0
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, TemporalShift):
                setattr(parent, name, nn.Sequential(SegmentShift(child.n_segment, child.fold_div, child.mode),
                                                    child.net))
                count += 1
    return count


class FloatHeadBackbone(nn.Module):
    """A quantized feature extractor followed by the float head it was cut from.

    Shape: ``[N*T, C, H, W]`` -> the head's output (``[N, num_class]`` for VAP,
    ``[N*T, D]`` for the dropout that precedes PAN's ``new_fc``).
    """

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def quantize_backbone(backbone: nn.Module, head_attr: str, calibration: torch.Tensor) -> FloatHeadBackbone:
    """An int8 copy of a torchvision ResNet ``backbone`` (in eval mode), its head ``head_attr`` left in float.

    Args:
        backbone: PAN's ``base_model`` (ResNet, possibly with temporal shifts, head in ``head_attr``).
        calibration: backbone inputs ``[N*T, C, H, W]`` whose activation ranges set the int8 scales.

    Raises:
        QuantizationUnavailable: see :func:`require_quantize_fx`.
    """
    quantize_fx = require_quantize_fx()
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig, PrepareCustomConfig

    features = copy.deepcopy(backbone).eval()
    head = getattr(features, head_attr)
    setattr(features, head_attr, nn.Identity())
    shifts = split_temporal_shifts(features)
    prepare_config = PrepareCustomConfig().set_float_to_observed_mapping(SegmentShift, ObservedSegmentShift)
    convert_config = ConvertCustomConfig().set_observed_to_quantized_mapping(ObservedSegmentShift,
                                                                             QuantizedSegmentShift)
    qconfig_mapping = get_default_qconfig_mapping(QUANTIZED_ENGINE)
    with torch.no_grad():
        observed = quantize_fx.prepare_fx(features, qconfig_mapping, (calibration[:1],),
                                          prepare_custom_config=prepare_config)
        observed(calibration)
        quantized = quantize_fx.convert_fx(observed, convert_custom_config=convert_config)
    logger.info("int8: backbone quantized (%d temporal shifts on int8 codes), calibrated on %d frames of %s",
                shifts, calibration.shape[0], "x".join(map(str, calibration.shape[1:])))
    return FloatHeadBackbone(quantized, head)


def quantize_pan(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """An int8 copy of the PAN ``model`` (eval mode, CPU): backbone int8, PA and head in float.

    Args:
        model: a PAN model with a ResNet backbone.
        calibration: model inputs ``[B, T*m*3, H, W]`` (a few clips, normalised as for evaluation).

    Returns:
        a model with the same interface: ``[B, T*m*3, H, W]`` -> ``[B, num_class]`` float logits.

    Raises:
        QuantizationUnsupported: see :func:`check_quantizable`.
        QuantizationUnavailable: see :func:`require_quantize_fx`.
    """
    check_quantizable(model)
    require_quantize_fx()
    if model.training:
        raise ValueError("quantize_pan needs a model in eval mode (call model.eval() first)")
    from ops.backbones import get_backbone_spec

    with torch.no_grad():
        backbone_inputs = model.segment_inputs(calibration.float().cpu())
    quantized = copy.deepcopy(model)
    quantized.base_model = quantize_backbone(model.base_model, get_backbone_spec(model.arch).head_attr,
                                             backbone_inputs)
    return quantized.eval()


class CalibratedOnFirstBatch(nn.Module):
    """Quantizes ``model`` (:func:`quantize_pan`) with the first batch it is given, then runs the int8 model.

    For tools that see their data only when they run it (an evaluation's first
    batch, the demo's clip). The unsupported cases are refused here, at
    construction, not at the first batch. Shape: ``[B, T*m*3, H, W]`` -> ``[B, num_class]``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_quantizable(model)
        require_quantize_fx()
        self.float_model = model.eval()
        self.int8: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8 is None:
            logger.info("int8: calibrating on the first batch (%d clip(s))", x.shape[0])
            self.int8 = quantize_pan(self.float_model, x)
        return self.int8(x)
