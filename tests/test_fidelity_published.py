"""The published command lines give the published models.

``tests/data/published_commands.json`` holds the 12 command lines of the
published PAN-PyTorch scripts verbatim, with what each trains or evaluates
according to the published sources (written from those sources, not from this
code). Each command line runs here through ``--dry-run`` and must resolve to
exactly that; our own scripts must resolve to the same as the published ones
they mirror.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

import main
import test_models
from ops.train_args import UsageError, get_args_parser
from tests.train_support import REPO

PUBLISHED = json.loads((REPO / "tests" / "data" / "published_commands.json").read_text())


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """The published scripts name no data root; ours comes from $PAN_DATA_ROOT, which need not exist."""
    monkeypatch.setenv("PAN_DATA_ROOT", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)  # anything written by mistake would land here, where it is looked for
    return tmp_path


def argv_of(command: str, entry: str) -> list[str]:
    """The arguments after ``python <entry>`` of a shell command line (continuation lines joined)."""
    words = shlex.split(command.replace("\\\n", " "))
    cut = next(i for i, w in enumerate(words) if w.endswith(entry))
    return words[cut + 1:]


def train_plan(argv: list[str], capsys) -> dict:
    assert main.cli([*argv, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def eval_plan(argv: list[str]) -> dict:
    return test_models.main(test_models.get_args_parser().parse_args([*argv, "--dry-run"]))


def script_argv(script: str, entry: str) -> list[str]:
    """What one of our scripts runs (``PAN_DRY_RUN=1`` prints the command instead of running it)."""
    env = {**os.environ, "PAN_DRY_RUN": "1", "PYTHON": "python"}
    env.pop("NPROC", None)
    out = subprocess.run(["bash", str(REPO / script)], env=env, capture_output=True, text=True, timeout=30, check=True)
    return argv_of(out.stdout, entry)


def assert_subset(expected: dict, actual: dict, where: str) -> None:
    for key, value in expected.items():
        assert key in actual, f"{where}: no field {key!r}"
        assert actual[key] == value, f"{where}.{key}: published {value!r}, ours {actual[key]!r}"


TRAIN_IDS = [r["published_script"] for r in PUBLISHED["train"]]
TEST_IDS = [r["published_script"] for r in PUBLISHED["test"]]


@pytest.mark.parametrize("run", PUBLISHED["train"], ids=TRAIN_IDS)
def test_published_training_command_resolves_to_the_published_run(run, capsys):
    plan = train_plan(argv_of(run["command"], "main.py"), capsys)
    common, expect = PUBLISHED["common_train"], run["expect"]
    assert plan["store_name"] == expect["store_name"]
    assert_subset({**common["args"], **expect["args"]}, plan["args"], "args")
    assert_subset({**common["model"], **expect["model"]}, plan["model"], "model")
    assert_subset(common["dataset"], plan["dataset"], "dataset")
    assert_subset(common["input"], plan["input"], "input")
    # Groups left empty (ResNet convolutions have no bias) are dropped from the optimizer.
    groups = {g["name"]: [g["lr_mult"], g["decay_mult"]] for g in plan["param_groups"]}
    assert {name: expect["lr_mult"][name] for name in groups} == groups
    assert {"first_conv_weight", "normal_weight", "BN scale/shift", "lr5_weight", "lr10_bias"} <= set(groups)
    lr = plan["lr_per_epoch"]
    first, second = (int(s) for s in expect["args"]["lr_steps"])
    assert len(lr) == expect["args"]["epochs"]
    assert lr[first - 1] == 0.01 and lr[first] == pytest.approx(0.001) and lr[second] == pytest.approx(0.0001)


@pytest.mark.parametrize("run", PUBLISHED["test"], ids=TEST_IDS)
def test_published_test_command_resolves_to_the_published_evaluation(run):
    plan = eval_plan(argv_of(run["command"], "test_models.py"))
    expect = run["expect"]
    assert (plan["dataset"]["name"], plan["dataset"]["num_class"]) == (expect["dataset"], expect["num_class"])
    assert (plan["batch_size"], plan["workers"], plan["softmax"]) == (expect["batch_size"], expect["workers"],
                                                                      expect["softmax"])
    assert_subset(expect["views"], plan["views"], "views")
    assert [m["coeff"] for m in plan["models"]] == expect["coeff"]
    assert len(plan["models"]) == len(expect["models"])
    for want, got in zip(expect["models"], plan["models"]):
        flat = {**got["config"], **{k: v for k, v in got.items() if k != "config"}}
        assert_subset(want, flat, want["weights"])


@pytest.mark.parametrize("run", PUBLISHED["train"], ids=TRAIN_IDS)
def test_our_training_script_resolves_like_the_published_one(run, capsys):
    published = train_plan(argv_of(run["command"], "main.py"), capsys)
    ours = train_plan(script_argv(run["our_script"], "main.py"), capsys)
    assert ours == published


@pytest.mark.parametrize("run", PUBLISHED["test"], ids=TEST_IDS)
def test_our_test_script_resolves_like_the_published_one(run):
    published = eval_plan(argv_of(run["command"], "test_models.py"))
    ours = eval_plan(script_argv(run["our_script"], "test_models.py"))
    assert ours == published


# ------------------------------------------------------------------ the side effects, one by one


def resolved(*argv: str) -> dict:
    return main.dry_run(main.resolve_args(get_args_parser().parse_args(["something", "Lite", *argv])))


def test_base_tsm_switches_the_shift_on_and_tsn_keeps_it_off():
    assert resolved()["model"]["is_shift"] is True
    assert resolved("--base", "TSN")["model"]["is_shift"] is False
    assert resolved("--no-shift")["model"]["is_shift"] is False
    with pytest.raises(UsageError, match="--shift needs --base TSM"):
        main.check_args(get_args_parser().parse_args(["something", "Lite", "--base", "TSN", "--shift"]))


def test_explicit_shift_div_and_place_are_kept_under_base_tsm():
    plan = resolved("--shift_div", "4", "--shift_place", "block")
    assert (plan["model"]["shift_div"], plan["model"]["shift_place"]) == (4, "block")
    assert plan["store_name"] == "PAN_Lite_something_resnet50_shift4_block_avg_segment8_e120"


def test_weight_decay_defaults_to_what_the_published_code_used():
    plan = resolved()
    assert plan["args"]["weight_decay"] == 1e-4
    assert {g["name"]: g["weight_decay"] for g in plan["param_groups"]}["normal_weight"] == 1e-4


def test_store_name_gets_the_published_pretrain_and_lr_type_suffixes():
    assert resolved("--pretrain", "none", "--lr_type", "cos")["store_name"] == \
        "PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e120_none_cos"
    assert resolved("--pretrain", "/w/my_weights.pth")["store_name"].endswith("_e120_my_weights")


def test_dry_run_prints_json_and_creates_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = ["something", "PA", "--root_log", str(tmp_path / "log"), "--root_model", str(tmp_path / "ckpt"),
            "--dry-run"]
    out = subprocess.run([sys.executable, str(REPO / "main.py"), *argv], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    plan = json.loads(out.stdout)
    assert plan["log_dir"] == str(tmp_path / "log" / plan["store_name"])
    assert list(tmp_path.iterdir()) == []  # no run folder, no checkpoint folder, nothing in the working dir


def test_released_names_are_what_the_published_test_scripts_load():
    """The RGB streams were trained for 50 epochs; V1 and V2 both have released files."""
    names = {m["weights"].split("/")[-1] for run in PUBLISHED["test"] for m in run["expect"]["models"]}
    assert len(names) == 6 and {n for n in names if "_RGB_" in n} == {
        "PAN_RGB_something_resnet50_shift8_blockres_avg_segment8_e50.pth.tar",
        "PAN_RGB_somethingv2_resnet50_shift8_blockres_avg_segment8_e50.pth.tar"}
    for doc in ("README.md", "pretrained/README.md"):
        text = (REPO / doc).read_text()
        missing = [n for n in names if n not in text]
        assert not missing, f"{doc} does not list {missing}"
        for figures in ("48.0", "50.5", "53.4", "55.3", "60.8", "63.8", "66.2", "66.5"):
            assert figures in text, f"{doc} lacks the published top-1 {figures}"


def test_custom_dataset_evaluates_with_val_list_and_num_class_only(tmp_path):
    """Evaluation never needs a training list (the custom dataset of test_models.py's help)."""
    from tests.eval_support import NUM_CLASS, SIZE, make_dataset, save_ours, tiny_model

    root = make_dataset(tmp_path / "data", 2)
    weights = save_ours(tmp_path / "lite.pth.tar", tiny_model("Lite"))
    argv = ["my_clips", "--weights", str(weights), "--root_path", str(root), "--val_list", "val.txt",
            "--num_class", str(NUM_CLASS), "--image_tmpl", "{:05d}.jpg", "--input_size", str(SIZE), "-j", "0",
            "--device", "cpu", "--output_dir", str(tmp_path / "out")]
    metrics = test_models.main(test_models.get_args_parser().parse_args(argv))
    assert metrics["num_videos"] == 2
    assert (tmp_path / "out" / "metrics.json").exists()
