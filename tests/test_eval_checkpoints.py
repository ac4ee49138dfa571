"""Checkpoints on the evaluation side: unsafe files are refused without running them, the
configuration of a file is found (fields, released name, keys) and inspect_checkpoint.py checks it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ops.inference import resolve_model_config
from ops.weights import CheckpointError
from tests.helpers import REPO
from tests.eval_support import make_dataset, save_ours, save_released, tiny_model  # noqa: F401
from tools import inspect_checkpoint


class MarkerPayload:
    """Unpickling this object creates the file ``path`` (what a malicious checkpoint would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def rgb_model():
    return tiny_model("RGB")


def test_pickle_payload_is_refused_and_never_runs_even_with_the_env_override(rgb_model, tmp_path):
    root = make_dataset(tmp_path / "data", 2)
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": rgb_model.state_dict(), "model_config": rgb_model.config(),
                "payload": MarkerPayload(str(marker))}, evil)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "test_models.py", "something", f"--weights={evil}", "--root_path", str(root),
         "--test_list", "val.txt", "--num_class", "3", "--device", "cpu", "-j", "0",
         "--output_dir", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "refused" in result.stderr and str(evil) in result.stderr
    assert not marker.exists(), "the checkpoint's payload ran"
    assert not (tmp_path / "out" / "scores.npz").exists()

    # The inspection tool reads the same way (same process, same environment variable).
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        args = inspect_checkpoint.get_args_parser().parse_args([str(evil)])
        assert inspect_checkpoint.main(args) == 1
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    assert not marker.exists()


def test_configuration_comes_from_fields_then_file_name_then_keys_and_flags_win(rgb_model, tmp_path):
    ours = torch.load(save_ours(tmp_path / "ours.pth.tar", rgb_model), weights_only=True)
    resolved = resolve_model_config(ours, "ours.pth.tar")
    assert resolved.config["modality"] == "RGB" and resolved.sources["modality"] == "checkpoint"

    released_path = save_released(tmp_path, rgb_model)
    released = torch.load(released_path, weights_only=True)
    resolved = resolve_model_config(released, str(released_path))
    assert resolved.config["modality"] == "RGB" and resolved.sources["modality"] == "file name"
    assert resolved.config["base_model"] == "resnet18" and resolved.sources["base_model"] == "checkpoint"
    assert resolved.config["num_class"] == 3 and resolved.sources["num_class"] == "keys"

    renamed = tmp_path / "weights.pth"
    released_path.rename(renamed)
    resolved = resolve_model_config(released, str(renamed), {"num_segments": 4, "modality": None})
    assert resolved.sources["num_segments"] == "flag" and resolved.sources["modality"] == "keys"


def test_checkpoint_without_enough_information_asks_for_a_flag(tmp_path):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="cannot tell its base_model.*pass it as a flag"):
        resolve_model_config({"state_dict": model.state_dict()}, "mystery.pth")


def test_inspect_checkpoint_prints_the_configuration_and_verifies_the_keys(rgb_model, tmp_path, capsys):
    good = save_released(tmp_path, rgb_model)
    assert inspect_checkpoint.main(inspect_checkpoint.get_args_parser().parse_args([str(good)])) == 0
    out = capsys.readouterr().out
    assert "keys prefixed module." in out and "modality        RGB          (file name)" in out
    assert "OK: all" in out and "strict names and shapes" in out

    wrong = inspect_checkpoint.get_args_parser().parse_args([str(good), "--num_class", "7"])
    assert inspect_checkpoint.main(wrong) == 1
    assert "FAILED" in capsys.readouterr().out

    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(good.read_bytes()[:1000])
    assert inspect_checkpoint.main(inspect_checkpoint.get_args_parser().parse_args([str(truncated)])) == 1
    assert "corrupt" in capsys.readouterr().out
