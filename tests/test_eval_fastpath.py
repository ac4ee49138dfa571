"""The fast inference path computes what the plain fp32 path computes (no timing here:
tools/bench_inference.py measures speed)."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from torch import nn

from ops import runtime
from ops.inference import InferenceOptions, fuse_conv_bn, prepare_model, run_batch
from tests.eval_support import make_dataset, save_ours, tiny_model  # noqa: F401 -- autouse fixture

CPU = torch.device("cpu")


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def lite():
    return randomise_batch_norms(tiny_model("Lite"))


@pytest.fixture(scope="module")
def clip():
    return torch.randn(2, 4 * 4 * 3, 32, 32, generator=torch.Generator().manual_seed(1))


def plain(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_fuse_conv_bn_removes_every_batch_norm_and_keeps_the_outputs(lite, clip):
    fused = fuse_conv_bn(lite)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in lite.modules()), "the original model must stay untouched"
    torch.testing.assert_close(plain(fused, clip), plain(lite, clip), rtol=1e-4, atol=1e-4)


def test_fuse_conv_bn_folds_through_the_temporal_shift_wrapper(lite):
    fused = fuse_conv_bn(lite)
    shifted_conv = fused.base_model.layer1[0].conv1.net
    assert isinstance(shifted_conv, nn.Conv2d) and shifted_conv.bias is not None
    assert isinstance(fused.base_model.layer1[0].bn1, nn.Identity)


def test_fuse_conv_bn_handles_sequential_conv_bn_pairs():
    torch.manual_seed(0)
    net = randomise_batch_norms(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())).eval()
    x = torch.randn(2, 3, 8, 8)
    fused = fuse_conv_bn(net)
    assert isinstance(fused[1], nn.Identity)
    torch.testing.assert_close(plain(fused, x), plain(net, x), rtol=1e-5, atol=1e-5)


def test_fuse_conv_bn_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))


@pytest.mark.parametrize(
    "options, tolerance",
    [
        (InferenceOptions(channels_last=True), 1e-4),
        (InferenceOptions(fuse_bn=True, channels_last=True), 1e-4),
        # bf16 keeps 8 bits of mantissa: logits agree to a few percent of their scale.
        (InferenceOptions(amp=True, fuse_bn=True, channels_last=True), 0.1),
    ],
    ids=lambda o: o.describe() if isinstance(o, InferenceOptions) else "",
)
def test_fast_paths_agree_with_fp32(lite, clip, options, tolerance):
    reference = plain(lite, clip)
    out = run_batch(prepare_model(lite, CPU, options), clip, CPU, options)
    assert out.dtype == torch.float32
    scale = reference.abs().max().item()
    assert (out - reference).abs().max().item() <= tolerance * max(scale, 1.0)
    assert torch.equal(out.argmax(1), reference.argmax(1))


def test_run_batch_is_inference_mode_and_leaves_the_model_unchanged(lite, clip):
    before = {k: v.clone() for k, v in lite.state_dict().items()}
    out = run_batch(prepare_model(lite, CPU, InferenceOptions()), clip, CPU, InferenceOptions())
    assert not out.requires_grad
    assert all(torch.equal(before[k], v) for k, v in lite.state_dict().items())


def test_compile_failure_falls_back_to_eager_with_a_warning(lite, clip, monkeypatch, caplog):
    def broken_compile(model, mode=None, dynamic=None):
        # Static shapes: with dynamic shapes a change of batch size sent inductor into minutes
        # of symbolic simplification.
        assert dynamic is False

        def fail(x):
            raise RuntimeError("no C++ compiler found\nmore details")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    options = InferenceOptions(compile=True)
    model = prepare_model(lite, CPU, options)
    with caplog.at_level(logging.WARNING, logger="ops.inference"):
        out = run_batch(model, clip, CPU, options)
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in caplog.text
    torch.testing.assert_close(out, plain(lite, clip))


def test_amp_dtype_choices_are_checked():
    assert runtime.resolve_amp_dtype(CPU) == torch.bfloat16
    with pytest.raises(ValueError, match="float16 is for CUDA"):
        runtime.resolve_amp_dtype(CPU, "float16")
    with pytest.raises(ValueError, match="unknown --amp_dtype"):
        runtime.resolve_amp_dtype(CPU, "int8")


@pytest.mark.parametrize("native", [False, True])
def test_amp_on_a_cpu_without_native_bf16_warns_that_it_is_slower(monkeypatch, caplog, native):
    monkeypatch.setattr(runtime, "bf16_is_native", lambda: native)
    monkeypatch.setitem(runtime._warned, "bf16", False)
    with caplog.at_level(logging.WARNING, logger="ops.runtime"):
        assert runtime.resolve_amp_dtype(CPU) == torch.bfloat16
    assert ("no native bf16" in caplog.text and "slower than fp32" in caplog.text) == (not native)


def test_bench_tool_runs_and_reports_the_ratio(capsys, monkeypatch):
    from tools import bench_inference

    # The timings are fixed here so that the report's arithmetic can be checked: the ratio is the
    # baseline's median over the path's median. (The paths are still built and run for the logit check.)
    timed = []

    def fixed_times(paths, *rest):
        timed.append(list(paths))
        return {"fp32": [0.004, 0.002, 0.009], "channels_last+fuse_bn": [0.003, 0.0016, 0.001]}

    monkeypatch.setattr(bench_inference, "time_paths", fixed_times)
    args = bench_inference.get_args_parser().parse_args(
        ["--arch", "resnet18", "--num_segments", "4", "--size", "32", "--repeats", "1", "--warmup", "0",
         "--variant", "fuse_bn,channels_last", "--num_class", "3"]
    )
    bench_inference.main(args)
    out = capsys.readouterr().out
    assert timed == [["fp32", "channels_last+fuse_bn"]]
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split() and line.split()[0] in ("fp32", "channels_last+fuse_bn")}
    assert rows["fp32"] == ["4.0", "2.0", "1.00x"]  # median 4 ms, min 2 ms, the baseline itself
    assert rows["channels_last+fuse_bn"] == ["1.6", "1.0", "2.50x"]  # 4 ms / 1.6 ms
    differences = dict(re.findall(r"max \|logit - fp32\| (\S+) +(\S+)", out))
    assert float(differences["fp32"]) == 0.0
    assert float(differences["channels_last+fuse_bn"]) < 1e-3  # folding BN changes rounding only


def test_bench_tool_measures_top1_agreement_with_a_checkpoint(lite, tmp_path, capsys):
    from tools import bench_inference

    root = make_dataset(tmp_path / "data", 3)
    ckpt = save_ours(tmp_path / "lite.pth.tar", lite)
    args = bench_inference.get_args_parser().parse_args(
        ["--weights", str(ckpt), "--dataset", "something", "--root_path", str(root), "--val_list", "val.txt",
         "--input_size", "32", "--repeats", "1", "--warmup", "0", "--variant", "fuse_bn,channels_last", "-j", "0"]
    )
    bench_inference.main(args)
    out = capsys.readouterr().out
    assert "top-1 agreement with fp32 over 3 videos" in out
    assert "channels_last+fuse_bn" in out and "agreement 100.00%" in out
