"""main.py end to end on a tiny dataset: what a training run leaves behind, resume, tune_from, options.

Runs in-process (``main.main(args)``) with mobilenet_v2 at 32x32, 2 segments,
batch 2, random init: an epoch takes about a second on one CPU thread.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import main
from ops.checkpoint_files import verify_checkpoint
from ops.train_args import UsageError, default_store_name, get_args_parser, resolve_args
from ops.weights import CheckpointError
from tests.train_support import (
    make_tiny_dataset,
    read_steps,
    state_dict_of,
    train,
    train_argv,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))




PLAIN = (bool, int, float, str, type(None))


def assert_plain(obj, where="checkpoint"):
    if torch.is_tensor(obj):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (int, str)), f"{where}: key {k!r}"
            assert_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_plain(v, f"{where}[{i}]")
    else:
        assert type(obj) in PLAIN, f"{where} is a {type(obj).__name__}"


@pytest.fixture(scope="module")
def one_epoch(data, tmp_path_factory) -> Path:
    """A finished one-epoch run; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("one_epoch")
    train(data, out, "--epochs", "1", "--deterministic", "--tensorboard")
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def log_text(out: Path) -> str:
    return (out / "log" / "run" / "log.txt").read_text()


def test_run_leaves_run_folder_and_checkpoints_and_resume_auto_continues(data, one_epoch, tmp_path):
    out = copy_run(one_epoch, tmp_path)
    result = train(data, out, "--resume", "auto", "--deterministic", "--tensorboard")
    run, ckpt_dir = out / "log" / "run", out / "ckpt" / "run"
    assert {"args.json", "log.txt", "steps.tsv", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    assert json.loads((run / "args.json").read_text())["resume"] == "auto"
    assert json.loads((run / "args.1.json").read_text())["resume"] == ""  # the first invocation, kept
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1] and all(m["count"] == 5 for m in metrics)
    assert result["best_prec1"] == max(m["top1"] for m in metrics)
    assert sorted(read_steps(run)) == [(e, s) for e in (0, 1) for s in range(4)]  # 8 videos / batch 2
    assert "resumed from" in log_text(out) and "validation after epoch 1" in log_text(out)
    assert {p.name for p in ckpt_dir.iterdir()} == {"ckpt.pth.tar", "ckpt.prev.pth.tar", "ckpt.best.pth.tar"}
    for name in ("ckpt.pth.tar", "ckpt.best.pth.tar", "ckpt.prev.pth.tar"):
        verify_checkpoint(str(ckpt_dir / name))
    assert torch.load(ckpt_dir / "ckpt.pth.tar", weights_only=True)["epoch"] == 2
    assert torch.load(ckpt_dir / "ckpt.prev.pth.tar", weights_only=True)["epoch"] == 1


def test_checkpoint_fields_are_plain_and_names_as_released(one_epoch):
    ckpt = torch.load(one_epoch / "ckpt" / "run" / "ckpt.pth.tar", map_location="cpu", weights_only=True)
    for key in ("epoch", "step_in_epoch", "model_config", "state_dict",
                "optimizer", "scheduler", "scaler", "best_prec1", "args", "rng_state", "sampler_state",
                "world_size", "batch_size", "list_file_sha256", "content_sha256"):
        assert key in ckpt, key
    # The model's configuration is stored once, in model_config (older files also had it at the top level).
    assert not {"arch", "modality", "num_segments"} & set(ckpt)
    config = ckpt["model_config"]
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 0)
    assert (config["base_model"], config["modality"]) == ("mobilenet_v2", "RGB")
    assert ckpt["model_config"]["has_VAP"] is True and ckpt["args"]["no_partialbn"] is True
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert "base_model.classifier.pred.weight" in ckpt["state_dict"]  # VAP's classifier on MobileNetV2
    assert isinstance(ckpt["args"], dict) and type(ckpt["best_prec1"]) is float
    assert_plain({k: v for k, v in ckpt.items() if k != "state_dict"})


def test_resume_explicit_missing_path_fails_and_auto_without_checkpoint_starts_fresh(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth.tar"):
        train(data, tmp_path / "a", "--resume", str(tmp_path / "nope.pth.tar"))
    train(data, tmp_path / "b", "--epochs", "1", "--resume", "auto")
    assert "no checkpoint in" in log_text(tmp_path / "b")
    assert (tmp_path / "b" / "ckpt" / "run" / "ckpt.pth.tar").is_file()


def test_tune_from_leaves_out_classifier_of_other_class_count(data, one_epoch, tmp_path):
    source = one_epoch / "ckpt" / "run" / "ckpt.pth.tar"
    train(data, tmp_path, "--epochs", "1", "--tune_from", str(source), "--lr", "0", num_class=4)
    log = log_text(tmp_path)
    assert "classifier left out" in log and "base_model.classifier.pred.weight" in log
    src, dst = state_dict_of(source), state_dict_of(tmp_path / "ckpt" / "run" / "ckpt.pth.tar")
    assert dst["base_model.classifier.pred.weight"].shape[0] == 4
    # lr 0: the backbone still holds the source weights.
    assert torch.equal(src["base_model.features.0.0.weight"], dst["base_model.features.0.0.weight"])


def test_tune_from_other_modality_is_refused_with_keys(data, one_epoch, tmp_path):
    source = one_epoch / "ckpt" / "run" / "ckpt.pth.tar"
    with pytest.raises(CheckpointError, match=r"missing in checkpoint \(2\): PA.shallow_conv.weight, PA.shallow_conv.bias\n  different shapes"):
        train(data, tmp_path, "--tune_from", str(source), modality="Lite")


def test_evaluate_only_validates_the_resumed_model(data, one_epoch, tmp_path):
    out = copy_run(one_epoch, tmp_path)
    result = train(data, out, "-e", "--resume", "auto")
    assert result["last"]["count"] == 5
    assert len(read_steps(out / "log" / "run")) == 4  # no training step was added


def test_training_options_amp_channels_last_iter_size_and_compile_fallback(data, tmp_path, monkeypatch):
    def broken(model, mode=None, dynamic=None):
        assert dynamic is False  # static shapes (see ops.runtime.CompiledWithFallback)

        def compiled(*args, **kwargs):  # like the real one, compiling fails at the first call
            raise RuntimeError("no compiler here")

        return compiled

    built = []

    def recording_build_model(*args, **kwargs):
        built.append(real_build_model(*args, **kwargs))
        return built[-1]

    real_build_model = main.build_model
    monkeypatch.setattr(main, "build_model", recording_build_model)
    monkeypatch.setattr(torch, "compile", broken)
    result = train(data, tmp_path, "--epochs", "1", "--amp", "--channels_last", "-i", "2", "--compile")
    trained = [m for m in built if not next(m.parameters()).is_meta][-1].state_dict()  # the run's model, at its end
    assert result["last"]["count"] == 5
    steps = read_steps(tmp_path / "log" / "run")
    assert sorted(steps) == [(0, 1), (0, 3)]  # a step every 2 batches
    assert "torch.compile failed (RuntimeError: no compiler here); running the model without" in log_text(tmp_path)

    # The same run in fp32 and the default layout: same initial weights, same first batches.
    train(data, tmp_path / "fp32", "--epochs", "1", "-i", "2")
    plain = read_steps(tmp_path / "fp32" / "log" / "run")
    assert all(math.isfinite(loss) for loss, _ in steps.values())
    # bf16 autocast keeps 8 significant bits: the first step's loss within 0.05 of fp32's (measured: 0.01).
    assert abs(steps[(0, 1)][0] - plain[(0, 1)][0]) <= 0.05

    # The saved weights are fp32 (autocast changes the computation, not the parameters), finite, and
    # hold the values of the run's channels-last model entry by entry (compared as values, so a layout
    # mix-up on saving shows); they load into a default-layout fp32 model (no --amp, no
    # --channels_last) that validates as the run itself did at its end.
    ckpt = tmp_path / "ckpt" / "run" / "ckpt.pth.tar"
    verify_checkpoint(str(ckpt))
    saved = state_dict_of(ckpt)
    assert saved.keys() == trained.keys()
    assert [k for k in saved if not torch.equal(saved[k], trained[k])] == []
    assert any(v.dim() == 4 and not v.is_contiguous() for v in trained.values())  # the run was channels-last
    floats = {k: v for k, v in saved.items() if v.is_floating_point()}
    assert floats and {v.dtype for v in floats.values()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in floats.values())
    reloaded = train(data, tmp_path / "reloaded", "-e", "--resume", str(ckpt), "-i", "2")["last"]
    assert reloaded["count"] == 5
    assert abs(reloaded["loss"] - result["last"]["loss"]) <= 5e-4  # measured: 3e-6 (bf16 validation)


def test_missing_imagenet_weights_say_how_to_get_them(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    argv = train_argv(data, tmp_path)
    argv[argv.index("--pretrain") + 1] = "imagenet"
    with pytest.raises(FileNotFoundError, match="--pretrain none"):
        main.main(get_args_parser().parse_args(argv))


def test_usage_errors_name_the_flags(data, tmp_path):
    with pytest.raises(UsageError, match="--save-every 3 must be a multiple of --iter-size 2"):
        train(data, tmp_path, "--save-every", "3", "-i", "2")
    with pytest.raises(UsageError, match="--shift needs --base TSM"):
        train(data, tmp_path, "--shift", "--base", "TSN")
    with pytest.raises(UsageError, match="--evaluate needs"):
        train(data, tmp_path, "-e")


def test_published_command_line_parses_with_published_defaults():
    args = get_args_parser().parse_args(
        "something Lite --arch resnet50 --num_segments 8 --gd 20 --lr 0.01 --lr_steps 30 60 --epochs 80 "
        "--batch-size 64 -j 16 --dropout 0.5 --consensus_type=avg --eval-freq=1 --shift --shift_div=8 "
        "--shift_place=blockres --npb --VAP".split()
    )
    assert (args.VAP, args.no_partialbn, args.shift, args.clip_gradient, args.lr_steps) == (True, True, True, 20, [30, 60])
    assert default_store_name(args) == "PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80"
    defaults = resolve_args(get_args_parser().parse_args(["something", "RGB"]))
    assert (defaults.VAP, defaults.no_partialbn, defaults.shift, defaults.base, defaults.pretrain) == (
        True, True, True, "TSM", "imagenet")  # --base TSM switches the shift on, as published
    assert get_args_parser().parse_args(["x", "RGB", "--no-VAP", "--partialbn"]).VAP is False


def test_every_flag_has_help_with_its_default_and_booleans_turn_off():
    parser = get_args_parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{action.option_strings or action.dest} has no help"
    text = parser.format_help()
    assert "PER PROCESS" in text and "(default: imagenet)" in text
    for flag in ("--no-VAP", "--no-shift", "--no-amp", "--no-deterministic", "--no-compile", "--no-tensorboard"):
        assert flag in text


def test_cli_ends_expected_failures_with_a_message_and_status(data, tmp_path, capsys):
    argv = train_argv(data, tmp_path, "--train_list", str(tmp_path / "missing.txt"))
    assert main.cli(argv) == 1
    err = capsys.readouterr().err
    assert "these inputs do not exist" in err and "the training list" in err and "missing.txt" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main.cli(train_argv(data, tmp_path, "--batch-size", "0"))
    assert exit_info.value.code == 2 and "--batch-size must be >= 1" in capsys.readouterr().err
