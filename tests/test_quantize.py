"""The int8 path (ops/quantize.py), the ``--fast`` choice and the ISA line: outputs and choices, no timing
(tools/bench_inference.py measures speed)."""

from __future__ import annotations

import argparse
import importlib
import logging

import pytest
import torch

from ops import inference
from ops.inference import InferenceOptions, choose_fast_path, prepare_model, run_batch
from ops.machine import isa_line
from ops.models import PAN
from ops.quantize import (
    QUANTIZE_FX_MODULE,
    CalibratedOnFirstBatch,
    QuantizationUnavailable,
    QuantizationUnsupported,
    quantize_pan,
    quantized_temporal_shift,
    require_quantize_fx,
)
from ops.temporal_shift import temporal_shift
from tests.eval_support import tiny_model  # noqa: F401

CPU = torch.device("cpu")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def lite():
    return tiny_model("Lite")


@pytest.fixture(scope="module")
def clips():
    """Eight clips ``[8, T*m*3, 32, 32]`` (T = 4 segments, m = 4 frames), smooth enough to look like frames."""
    g = torch.Generator().manual_seed(3)
    coarse = torch.randn(8, 4 * 4 * 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("mode", ["bidirectional", "online"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_shift_on_int8_codes_is_the_float_shift_exactly(mode, channels_last):
    x = torch.randn(2 * 4, 16, 5, 6, generator=torch.Generator().manual_seed(0))
    q = torch.quantize_per_tensor(x, 0.05, 7, torch.quint8)
    if channels_last:
        q = q.contiguous(memory_format=torch.channels_last)
    shifted = quantized_temporal_shift(q, n_segment=4, fold_div=8, mode=mode)
    assert (shifted.q_scale(), shifted.q_zero_point()) == (0.05, 7)
    assert torch.equal(shifted.dequantize(), temporal_shift(q.dequantize(), 4, 8, mode))


def test_int8_logits_match_fp32_within_a_tenth_of_their_spread_and_agree_on_top1(lite, clips):
    """Tolerance: int8 activations carry ~1% relative error per layer; over 18 layers the logits stay within
    15% of the fp32 logits' standard deviation (measured: 10.1%), and every clip keeps its fp32 class."""
    reference = run_batch(lite, clips, CPU, InferenceOptions())
    int8 = quantize_pan(lite, clips)
    out = run_batch(int8, clips, CPU, InferenceOptions(int8=True))
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert (out - reference).abs().max() <= 0.15 * reference.std()
    assert torch.equal(out.argmax(1), reference.argmax(1))
    # PA and the head stay float; the original model is untouched.
    assert type(int8.PA.shallow_conv) is torch.nn.Conv2d
    assert type(int8.base_model.head.pred) is torch.nn.Linear
    assert torch.equal(run_batch(lite, clips, CPU, InferenceOptions()), reference)


def test_prepare_model_int8_without_calibration_calibrates_on_the_first_batch(lite, clips, caplog):
    prepared = prepare_model(lite, CPU, InferenceOptions(int8=True))
    assert isinstance(prepared, CalibratedOnFirstBatch)
    with caplog.at_level(logging.INFO, logger="ops.quantize"):
        out = run_batch(prepared, clips, CPU, InferenceOptions(int8=True))
    assert "calibrating on the first batch (8 clip(s))" in caplog.text
    expected = run_batch(quantize_pan(lite, clips), clips, CPU, InferenceOptions(int8=True))
    assert torch.equal(out, expected)


def test_int8_refuses_an_unsupported_backbone_naming_it():
    model = PAN(5, 4, "Lite", base_model="mobilenet_v2", pretrain=None, is_shift=True, has_VAP=True,
                partial_bn=False).eval()
    with pytest.raises(QuantizationUnsupported, match="backbone 'mobilenet_v2'"):
        prepare_model(model, CPU, InferenceOptions(int8=True))


def test_int8_refuses_amp_and_cuda(lite):
    with pytest.raises(ValueError, match="does not combine with --amp"):
        prepare_model(lite, CPU, InferenceOptions(int8=True, amp=True))
    with pytest.raises(ValueError, match="runs on the CPU"):
        prepare_model(lite, torch.device("cuda"), InferenceOptions(int8=True))


def test_missing_quantization_module_is_named(monkeypatch):
    real_import = importlib.import_module

    def no_quantize_fx(name, *args, **kwargs):
        if name == QUANTIZE_FX_MODULE:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_quantize_fx)
    with pytest.raises(QuantizationUnavailable, match="torch.ao.quantization.quantize_fx"):
        require_quantize_fx()


def test_missing_quantized_engine_is_named(monkeypatch):
    import ops.quantize

    monkeypatch.setattr(ops.quantize, "supported_engines", lambda: ["qnnpack"])
    with pytest.raises(QuantizationUnavailable, match="'x86' quantized engine"):
        require_quantize_fx()


@pytest.mark.parametrize("native, flags, expected", [
    (True, {"avx512_bf16", "amx_bf16", "amx_tile"}, "amp(auto)+channels_last+fuse_bn"),
    (True, {"avx512_bf16", "avx512_vnni"}, "int8"),
    (False, {"avx2"}, "int8"),
])
def test_fast_auto_picks_bf16_only_where_native_with_amx_and_int8_elsewhere(monkeypatch, native, flags, expected):
    monkeypatch.setattr(inference, "bf16_is_native", lambda capability=None: native)
    options, reason = choose_fast_path(CPU, "auto", flags=flags)
    assert options.describe() == expected
    assert ("natively with AMX" in reason) == (expected != "int8")
    assert ("no native bf16" in reason) == (not native)


def test_fast_named_paths_and_cuda():
    assert choose_fast_path(CPU, "int8")[0] == InferenceOptions(int8=True)
    assert choose_fast_path(CPU, "fp32")[0] == InferenceOptions(fuse_bn=True, channels_last=True)
    assert choose_fast_path(torch.device("cuda"), "auto")[0].amp


def test_fast_flag_of_test_models_and_demo():
    import test_models
    from tools import demo

    assert test_models.get_args_parser().parse_args(["synthetic", "--weights", "w.pth", "--fast", "auto"]).fast == "auto"
    assert demo.get_args_parser().parse_args(["v.mp4", "--weights", "w.pth", "--fast", "int8"]).fast == "int8"
    with pytest.raises(SystemExit):
        demo.get_args_parser().parse_args(["v.mp4", "--weights", "w.pth", "--fast", "int4"])


def test_bench_variant_int8_and_isa_line():
    from tools.bench_inference import machine_description, parse_variant

    assert parse_variant("int8") == InferenceOptions(int8=True)
    with pytest.raises(argparse.ArgumentTypeError, match="int8 combines only"):
        parse_variant("int8,amp")
    line = isa_line(flags={"avx512_bf16", "avx512_vnni", "avx2"}, capability="AVX512")
    assert "ISA AVX512" in line and "AMX no" in line and "VNNI yes (avx512_vnni)" in line
    assert "bf16 yes (avx512_bf16)" in line
    assert "bf16 native for autocast: no" in isa_line(flags=set(), capability="AVX2")
    assert "ISA " in machine_description(CPU)
