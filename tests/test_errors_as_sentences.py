"""Errors reach the user and log.txt as sentences that say what to do (docs/RELIABILITY.md)."""

from __future__ import annotations

import pytest
import torch

import main
import ops.engine
from ops.models import PAN
from tests.train_support import make_tiny_dataset, train_argv  # noqa: F401 (autouse)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), n_train=4, n_val=2)


@pytest.mark.parametrize("flags, message", [
    (("--crop_size", "0"), "--crop_size must be >= 1 pixel, got 0"),
    (("--crop_size", "224", "--scale_size", "200"), "--scale_size 200 is below --crop_size 224"),
    (("--dropout", "1.5"), "--dropout must be in [0, 1), got 1.5"),
    (("--data_length", "1"), "--data_length must be >= 2 for PA"),
], ids=["crop 0", "scale below crop", "dropout 1.5", "data_length 1"])
def test_impossible_sizes_and_rates_are_usage_errors_before_anything_starts(data, tmp_path, capsys, flags, message):
    argv = train_argv(data, tmp_path, *flags, modality="PA")
    with pytest.raises(SystemExit) as stop:
        main.cli(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run folder, no checkpoint folder


def test_resume_given_a_folder_says_which_file_to_give(data, tmp_path, capsys):
    folder = tmp_path / "some_run"
    folder.mkdir()
    with pytest.raises(SystemExit) as stop:
        main.cli(train_argv(data, tmp_path / "out", "--resume", str(folder)))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"--resume {folder} is a folder" in err and "ckpt.pth.tar" in err


def test_resume_given_a_released_file_says_to_use_tune_from(data, tmp_path):
    model = PAN(3, 2, "RGB", base_model="mobilenet_v2", pretrain=None, is_shift=True, has_VAP=True)
    released = tmp_path / "PAN_RGB_tiny_mobilenet_v2_shift8_blockres_avg_segment2_e50.pth.tar"
    torch.save({"epoch": 50, "arch": "mobilenet_v2", "best_prec1": 1.0, "optimizer": {},
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, released)
    out = tmp_path / "out"
    assert main.cli(train_argv(data, out, "--resume", str(released))) == 1
    log = (out / "log" / "run" / "log.txt").read_text()
    assert "holds no training state of this trainer (no scheduler)" in log
    assert "pass it as --tune_from" in log


@pytest.mark.parametrize("error, kind", [(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                          "GPU"), (MemoryError(), "host")], ids=["cuda", "host"])
def test_running_out_of_memory_is_a_sentence_in_the_log(data, tmp_path, monkeypatch, error, kind):
    def forward_loss(*args, **kwargs):
        raise error

    monkeypatch.setattr(ops.engine, "forward_loss", forward_loss)
    out = tmp_path / "out"
    assert main.cli(train_argv(data, out)) == 1
    log = (out / "log" / "run" / "log.txt").read_text()
    assert f"ran out of {kind} memory" in log and "Lower --batch-size" in log and "--resume auto" in log
    assert "Traceback" not in log


# ------------------------------------------------------------------ one base class for user-facing errors


def test_every_error_class_of_the_project_derives_from_pan_error():
    import importlib
    import inspect
    import pkgutil

    import ops
    from ops.errors import PanError

    modules = [importlib.import_module(f"ops.{m.name}") for m in pkgutil.iter_modules(ops.__path__)
               if m.name != "lmdb_store" or importlib.util.find_spec("lmdb")]
    modules += [main, importlib.import_module("test_models")]
    errors = {f"{module.__name__}.{name}": cls for module in modules
              for name, cls in inspect.getmembers(module, inspect.isclass)
              if issubclass(cls, Exception) and cls.__module__ == module.__name__}
    assert len(errors) >= 15
    assert [name for name, cls in errors.items() if not issubclass(cls, PanError)] == ["ops.stop_signal.TrainingInterrupted"]


def test_test_models_reports_user_errors_in_one_sentence_and_bugs_with_their_traceback(tmp_path, capsys, monkeypatch):
    import test_models

    missing = tmp_path / "missing.pth.tar"
    argv = ["tiny", "--weights", str(missing), "--root_path", str(tmp_path), "--val_list", "val.txt",
            "--num_class", "3", "--device", "cpu", "--output_dir", str(tmp_path / "out")]
    assert test_models.cli(argv) == 1
    err = capsys.readouterr().err
    assert f"MissingFileError: checkpoint not found: {missing}" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as stop:  # a usage error: exit 2, before anything is loaded
        test_models.cli([*argv, "--twice_sample", "--dense_sample"])
    assert stop.value.code == 2 and "twice_sample and dense_sample are exclusive" in capsys.readouterr().err

    def bug(args):  # a ValueError from a bug, which the previous entry point printed as one line
        raise ValueError("a bug")

    monkeypatch.setattr(test_models, "main", bug)
    with pytest.raises(ValueError, match="a bug"):  # not turned into a one-line message
        test_models.cli(argv)


def test_main_lets_a_bug_keep_its_traceback(data, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(ops.engine, "forward_loss", bug)
    with pytest.raises(ValueError, match="a bug"):
        main.cli(train_argv(data, tmp_path / "out"))


# ------------------------------------------------------------------ a failed start leaves nothing behind


@pytest.mark.parametrize("change, message", [
    ({"dataset": "somthing"}, "unknown dataset 'somthing'"),
    ({"--train_list": "missing_train.txt"}, "the training list: "),
    ({"--tune_from": "missing.pth.tar"}, "--tune_from: missing.pth.tar"),
], ids=["misspelt dataset", "missing list", "missing --tune_from"])
def test_a_failed_start_leaves_no_run_folder(data, tmp_path, monkeypatch, capsys, change, message):
    monkeypatch.chdir(tmp_path)
    argv = train_argv(data, tmp_path, "--root_log", "log", "--root_model", "checkpoint", "--store_name", "")
    if "dataset" in change:  # a registered dataset's name with a typo: no custom lists given either
        argv = [change["dataset"], *argv[1:]]
        for flag in ("--train_list", "--val_list", "--num_class"):
            i = argv.index(flag)
            del argv[i:i + 2]
    else:
        for flag, value in change.items():
            argv += [flag, value]
    code = None
    try:
        code = main.cli(argv)
    except SystemExit as stop:
        code = stop.code
    assert code in (1, 2) and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no log/, no checkpoint/, no run folder
