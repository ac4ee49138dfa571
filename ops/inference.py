"""Building PAN models from checkpoints, and running them fast for evaluation.

Two concerns shared by ``test_models.py`` and the tools:

* **Which model a checkpoint describes.** Our checkpoints carry
  ``model_config`` (:class:`ops.model_config.ModelConfig`'s dict; older ones
  also top-level ``modality``/``arch``/``num_segments`` fields); released
  files carry none of that, so their configuration comes
  from the published file-name convention
  (``PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar``).
  Either way the parameter names and shapes are read as a cross-check
  (:func:`ops.weights.describe_state_dict`), and a command-line override
  wins over everything. :func:`resolve_model_config` says where each value
  came from.

* **The fast inference path** (issue 6): inference mode, autocast (bf16 on
  CPU, fp16 or bf16 on CUDA), channels-last memory format, eval-mode
  BatchNorm folded into the preceding convolution (:func:`fuse_conv_bn`), and
  optionally ``torch.compile``. None of these change what the model computes
  beyond floating-point rounding; tests check the outputs against the plain
  fp32 path. ``int8`` (:mod:`ops.quantize`) is the one path that changes the
  numbers beyond rounding: the backbone quantized, PA and the head in float,
  for CPUs without native bf16. :func:`choose_fast_path` picks the path for
  the CPU at hand (``--fast auto``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ops.model_config import ModelConfig
from ops.models import PAN
from ops.errors import UsageError
from ops.machine import bf16_is_native, cpu_flags
from ops.runtime import CompiledWithFallback, autocast
from ops.weights import (
    CheckpointError,
    load_model_weights,
    read_checkpoint,
)

logger = logging.getLogger(__name__)

#: The fields a checkpoint may state and a flag may override: ModelConfig's architecture fields.
CONFIG_FIELDS = ModelConfig.architecture_fields()


# --------------------------------------------------------------------------- configuration


@dataclass
class ResolvedConfig:
    """A model configuration with the source of each value (``field -> 'checkpoint' | ...``)."""

    config: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    #: Values the checkpoint's keys imply, for display and cross-checks.
    from_keys: dict[str, Any] = field(default_factory=dict)


def fields_of_checkpoint(checkpoint: dict) -> dict[str, Any]:
    """The architecture fields a checkpoint states about its own model (our format, either
    layout; a released file states at most its ``arch``)."""
    stated = ModelConfig.fields_of_checkpoint(checkpoint)
    return {k: v for k, v in stated.items() if k in CONFIG_FIELDS}


def resolve_model_config(
    checkpoint: dict, path: str, overrides: dict[str, Any] | None = None
) -> ResolvedConfig:
    """The PAN constructor arguments for the model a checkpoint holds.

    Precedence, highest first: ``overrides`` (flags; ``None`` values are
    ignored), the checkpoint's own fields, the released file-name
    convention, what the parameter names and shapes imply, the released
    models' defaults. A checkpoint field or file name that contradicts the
    keys is refused (``CheckpointError`` naming both), unless a flag settles it.

    Raises:
        CheckpointError: the modality or backbone cannot be told, or the sources disagree.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    layers = [
        ("flag", overrides),
        ("checkpoint", fields_of_checkpoint(checkpoint)),
        ("file name", ModelConfig.fields_of_released_name(path)),
        ("keys", ModelConfig.fields_of_keys(checkpoint["state_dict"])),
        ("default", ModelConfig.assumed_values()),
    ]
    from_keys = layers[3][1]
    # The keys tell the architecture reliably except the segment count (VAP's
    # size depends on it only through log2) and the shift fold; a stated value
    # that contradicts them is a mislabelled file, which a flag may still override.
    trusted_from_keys = ("modality", "base_model", "has_VAP", "is_shift", "shift_place", "num_class")
    for source, stated in layers[1:3]:
        for name in trusted_from_keys:
            if name in stated and name in from_keys and name not in overrides and stated[name] != from_keys[name]:
                raise CheckpointError(
                    f"{path}: its {source} says {name}={stated[name]!r} but its parameters imply "
                    f"{name}={from_keys[name]!r}; pass the right value as a flag if the file is mislabelled"
                )
    config: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, stated in layers:
        for name, value in stated.items():
            if name in CONFIG_FIELDS and name not in config:
                config[name], sources[name] = value, source
    # num_class may be left open: the dataset gives it.
    for required in (name for name in ModelConfig.required_fields() if name != "num_class"):
        if required not in config:
            raise CheckpointError(
                f"{path}: cannot tell its {required}: the checkpoint has no such field, its name does "
                f"not follow PAN_{{Lite|RGB|PA}}_<dataset>_<arch>_shift8_blockres_avg_segment8_e80.pth.tar, "
                f"and its keys do not say; pass it as a flag"
            )
    order = {name: i for i, name in enumerate(CONFIG_FIELDS)}
    config = dict(sorted(config.items(), key=lambda item: order[item[0]]))
    return ResolvedConfig(config, sources, from_keys)


def build_model(config: dict[str, Any], num_class: int) -> PAN:
    """A randomly initialised PAN for ``config`` (never downloads: ``pretrain=None``).

    ``num_class`` comes from the dataset; a checkpoint for another class count
    is then refused by the strict load.
    """
    stated = {k: v for k, v in config.items() if k in CONFIG_FIELDS and k != "num_class"}
    model_config = ModelConfig.from_dict({**stated, "num_class": num_class, "dropout": 0.5})
    return PAN.from_config(model_config, pretrain=None, partial_bn=False)


def load_checkpoint_model(
    path: str,
    num_class: int | None = None,
    overrides: dict[str, Any] | None = None,
    checkpoint: dict | None = None,
) -> tuple[PAN, ResolvedConfig, dict]:
    """Read ``path`` safely, build the model it describes and load it strictly.

    ``num_class``: the dataset's class count (default: the checkpoint's).
    ``checkpoint``: the file's content when already read (by :func:`read_checked_checkpoint`).
    Returns ``(model in eval mode on CPU, resolved configuration, checkpoint)``.

    Raises:
        CheckpointError: unreadable, unsafe (pickle payload), corrupt (bad
            sha256, when ``ops.checkpoint_files`` provides the check) or not
            fitting the model; the message lists the differing keys.
    """
    if checkpoint is None:
        checkpoint = read_checked_checkpoint(path)
    resolved = resolve_model_config(checkpoint, path, overrides)
    classes = num_class if num_class is not None else resolved.config.get("num_class")
    if classes is None:
        raise CheckpointError(f"{path}: cannot tell its class count; give the dataset")
    model = build_model(resolved.config, classes)
    load_model_weights(model, checkpoint["state_dict"], source=path)
    return model.eval(), resolved, checkpoint


def read_checked_checkpoint(path: str) -> dict:
    """Read ``path`` with ``weights_only=True`` and, when the saving side
    (``ops.checkpoint_files``) provides it, check its sha256.

    Released files carry no hash; ``ops.checkpoint_files`` lets them pass with a
    logged note.

    Raises:
        CheckpointError: unreadable, unsafe, truncated, or its content does not match its hash.
    """
    try:
        from ops.checkpoint_files import read_verified_checkpoint
    except ImportError:
        try:
            from ops.checkpoint_files import verify_checkpoint
        except ImportError:
            return read_checkpoint(path)
        verify_checkpoint(path)
        return read_checkpoint(path)
    return read_verified_checkpoint(path)


# --------------------------------------------------------------------------- fast path


@dataclass(frozen=True)
class InferenceOptions:
    """The fast-path switches; all off is the plain fp32 path.

    ``amp``: autocast with ``amp_dtype`` (``None``: bf16 on CPU, fp16 on CUDA).
    ``fuse_bn``: fold eval-mode BatchNorm into convolutions. ``compile``:
    ``torch.compile`` with ``compile_mode`` (``None`` is its default mode).
    ``int8``: the backbone quantized (:mod:`ops.quantize`; CPU only, not with
    ``amp`` or ``compile``; BatchNorm is folded by the quantization itself).
    """

    amp: bool = False
    amp_dtype: str | None = None
    channels_last: bool = False
    fuse_bn: bool = False
    compile: bool = False
    compile_mode: str | None = None
    int8: bool = False

    def describe(self) -> str:
        parts = [name for name in ("channels_last", "fuse_bn") if getattr(self, name)]
        if self.int8:
            parts.insert(0, "int8")
        if self.amp:
            parts.insert(0, f"amp({self.amp_dtype or 'auto'})")
        if self.compile:
            parts.append(f"compile({self.compile_mode or 'default'})")
        return "+".join(parts) or "fp32"


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing ``bn(conv(x))`` with eval-mode (running) statistics."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def _as_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    """``(owner, attribute, conv)`` when ``module`` is a Conv2d or a wrapper (TSM shift) around one.

    A wrapper that transforms the *input* (the temporal shift) commutes with
    folding the BatchNorm that follows into the convolution.
    """
    if isinstance(module, nn.Conv2d):
        return None  # handled by the caller, which owns the attribute
    inner = getattr(module, "net", None)
    if isinstance(inner, nn.Conv2d) and type(module).__name__ == "TemporalShift":
        return module, "net", inner
    return None


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every eval-mode BatchNorm folded into the convolution before it.

    Recognised pairs: consecutive ``Conv2d`` -> ``BatchNorm2d`` in an
    ``nn.Sequential`` (downsample branches, MobileNet blocks) and the
    ``convK``/``bnK`` attributes of torchvision's ResNet and its blocks (the
    conv possibly wrapped by a temporal shift). Each folded BatchNorm becomes
    ``nn.Identity``. For inference only: the copy's ``state_dict`` names differ.

    Raises:
        ValueError: ``model`` is in training mode (batch statistics cannot be folded).
    """
    if model.training:
        raise ValueError("fuse_conv_bn needs a model in eval mode (call model.eval() first)")
    fused_model = copy.deepcopy(model)
    folded = 0
    for parent in list(fused_model.modules()):
        if isinstance(parent, nn.Sequential):
            children = list(parent._modules.items())
            for (name_a, a), (name_b, b) in zip(children, children[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) and b.track_running_stats:
                    parent._modules[name_a] = _fold(a, b)
                    parent._modules[name_b] = nn.Identity()
                    folded += 1
            continue
        for name, child in list(parent._modules.items()):
            if not (name.startswith("bn") and isinstance(child, nn.BatchNorm2d)):
                continue
            conv_name = "conv" + name[2:]
            conv = parent._modules.get(conv_name)
            if isinstance(conv, nn.Conv2d):
                parent._modules[conv_name] = _fold(conv, child)
            elif conv is not None and (wrapped := _as_conv(conv)) is not None:
                owner, attr, inner = wrapped
                owner._modules[attr] = _fold(inner, child)
            else:
                continue
            parent._modules[name] = nn.Identity()
            folded += 1
    logger.debug("fuse_conv_bn: folded %d BatchNorm layers", folded)
    return fused_model


#: ``--fast`` choices: ``auto`` is :func:`choose_fast_path`'s pick for the machine at hand.
FAST_PATHS = ("auto", "bf16", "int8", "fp32")


def fast_path_options(name: str) -> InferenceOptions:
    """The options of a named fast path: ``bf16`` (autocast + folded BatchNorm + channels-last),
    ``int8`` (:mod:`ops.quantize`) or ``fp32`` (folded BatchNorm + channels-last, fp32 numbers)."""
    if name == "bf16":
        return InferenceOptions(amp=True, fuse_bn=True, channels_last=True)
    if name == "int8":
        return InferenceOptions(int8=True)
    if name == "fp32":
        return InferenceOptions(fuse_bn=True, channels_last=True)
    raise UsageError(f"unknown fast path {name!r}; choose one of {', '.join(FAST_PATHS)}")


def choose_fast_path(device: torch.device, requested: str = "auto",
                     flags: set[str] | None = None) -> tuple[InferenceOptions, str]:
    """The fast path for ``device`` and the reason, for ``--fast`` (``requested``: one of :data:`FAST_PATHS`).

    ``auto``: on CUDA, fp16 autocast + folded BatchNorm + channels-last. On a CPU,
    ``bf16`` where bf16 is native (:func:`ops.machine.bf16_is_native`) *and* the
    CPU has AMX; ``int8`` on any other. Why not bf16 wherever it is native: on
    an AVX-512 Xeon with AVX512-BF16 and VNNI but no AMX, bf16 autocast measured
    0.85x fp32 and int8 4.1x (PAN Lite ResNet-50, batch 1, 1 thread); without
    native bf16 it is emulated and slower still. A named path is taken as asked.
    ``flags``: the CPU flags (default: :func:`ops.machine.cpu_flags`; for tests).
    """
    if requested != "auto":
        return fast_path_options(requested), f"--fast {requested} was asked for"
    if device.type == "cuda":
        return (InferenceOptions(amp=True, fuse_bn=True, channels_last=True),
                "CUDA: fp16 autocast with folded BatchNorm and channels-last")
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags() if flags is None else flags
    if bf16_is_native(capability) and {"amx_bf16", "amx_tile"} & flags:
        return fast_path_options("bf16"), f"this CPU runs bf16 natively with AMX (PyTorch CPU capability {capability})"
    if bf16_is_native(capability):
        return fast_path_options("int8"), (
            f"this CPU has native bf16 (capability {capability}) but no AMX, where int8 measured faster than "
            "bf16 autocast (4.1x against 0.85x fp32 on an AVX512-BF16/VNNI Xeon)")
    return fast_path_options("int8"), (
        f"this CPU has no native bf16 for PyTorch (CPU capability {capability}), where bf16 autocast is "
        "emulated and slower than fp32; int8 convolutions are native (AVX2/VNNI)")


def resolve_fast_path(requested: str | None, device: torch.device, explicit: InferenceOptions) -> InferenceOptions:
    """The options to run with: ``explicit`` (the separate flags) without ``--fast``, else the path
    :func:`choose_fast_path` picks, logged with its reason. ``--fast`` chooses the whole path, so it is
    refused beside any of the separate flags (:class:`UsageError`)."""
    if not requested:
        return explicit
    if explicit.amp or explicit.channels_last or explicit.fuse_bn or explicit.compile:
        raise UsageError("--fast chooses the whole path; drop --amp, --channels_last, --fuse_bn and --compile")
    options, reason = choose_fast_path(device, requested)
    logger.info("--fast %s: %s, because %s", requested, options.describe(), reason)
    return options


def prepare_model(model: nn.Module, device: torch.device, options: InferenceOptions,
                  calibration: torch.Tensor | None = None) -> nn.Module:
    """The model, in eval mode on ``device``, transformed for the fast path ``options``.

    The input of a PAN model is ``[N, T*m*3, H, W]``; with ``channels_last``
    the weights are stored NHWC and :func:`run_batch` converts inputs likewise.
    With ``int8``, ``calibration`` (model inputs ``[B, T*m*3, H, W]``, a few
    clips) sets the activation scales; without it the model calibrates on the
    first batch it runs (:class:`ops.quantize.CalibratedOnFirstBatch`).

    Raises:
        UsageError: ``int8`` with ``amp`` or ``compile``, or off the CPU.
        ops.quantize.QuantizationUnsupported: ``int8`` for a model it cannot quantize whole.
    """
    model = model.eval()
    if options.int8:
        return _prepare_int8(model, device, options, calibration)
    if options.fuse_bn:
        model = fuse_conv_bn(model)
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.compile:
        # Freezing: at inference the weights are constants, so inductor folds BatchNorm and pre-packs
        # convolution weights.
        model = CompiledWithFallback(model, options.compile_mode, freezing=True)
    return model


def _prepare_int8(model: nn.Module, device: torch.device, options: InferenceOptions,
                  calibration: torch.Tensor | None) -> nn.Module:
    """The int8 path of :func:`prepare_model`; refuses combinations it does not run."""
    from ops.quantize import CalibratedOnFirstBatch, quantize_pan

    if device.type != "cpu":
        raise UsageError(f"int8 inference runs on the CPU (PyTorch's x86 int8 kernels), not on {device}")
    if options.amp or options.compile:
        raise UsageError("int8 inference does not combine with --amp or --compile; choose one path")
    model = model.cpu()
    if calibration is None:
        return CalibratedOnFirstBatch(model)
    return quantize_pan(model, calibration)


def run_batch(model: nn.Module, x: torch.Tensor, device: torch.device, options: InferenceOptions) -> torch.Tensor:
    """Forward ``x`` (``[B, T*m*3, H, W]``) under inference mode and the options; fp32 ``[B, C]`` on CPU."""
    x = x.to(device, non_blocking=True)
    if options.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, options.amp, options.amp_dtype):
        out = model(x)
    return out.float().cpu()
