"""ModelConfig, the one home of the model's configuration: it round-trips, and every place that
used to hold its own field list (PAN's constructor, main.build_model, test_models.model_overrides,
the resolver's fields and released defaults, the released models' settings, the checkpoint's
layout) still gives what it gave before. Old values are written out here by hand, so a merge that
changes one side shows up as a difference."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import main
import test_models
from ops import training_state
from ops.inference import CONFIG_FIELDS, build_model, fields_of_checkpoint, resolve_model_config
from ops.model_config import ModelConfig
from ops.models import PAN
from ops.train_args import get_args_parser, resolve_args
from ops.weights import CheckpointError
from tests.helpers import released_model_kwargs

#: PAN.config() and RESUME_MODEL_FIELDS / CONFIG_FIELDS before ModelConfig (their field sets).
OLD_CONFIG_KEYS = {"num_class", "num_segments", "modality", "base_model", "consensus_type", "dropout", "is_shift",
                   "shift_div", "shift_place", "temporal_pool", "data_length", "has_VAP"}
#: inference.CONFIG_FIELDS before, in its order (the order of every resolved configuration).
OLD_CONFIG_FIELDS = ("modality", "base_model", "num_segments", "num_class", "is_shift", "shift_div", "shift_place",
                     "temporal_pool", "data_length", "has_VAP", "consensus_type")
#: inference.RELEASED_DEFAULTS before, plus the has_VAP fallback it added (off).
OLD_DEFAULTS = {"is_shift": True, "shift_div": 8, "shift_place": "blockres", "temporal_pool": False,
                "data_length": 4, "consensus_type": "avg", "has_VAP": False}
RELEASED_NAME = "PAN_Lite_something_resnet18_shift8_blockres_avg_segment4_e80.pth.tar"
#: Fields added to ModelConfig since (placed after shift_place), with the value a checkpoint without them means.
ADDED = {"shift_mode": "bidirectional"}


def with_added(fields: tuple[str, ...]) -> tuple[str, ...]:
    at = fields.index("shift_place") + 1
    return fields[:at] + tuple(ADDED) + fields[at:]


def tiny(modality: str = "Lite", **changes) -> PAN:
    kwargs = dict(num_class=3, num_segments=4, modality=modality, base_model="resnet18", pretrain=None,
                  is_shift=True, has_VAP=True, partial_bn=False, dropout=0.5)
    return PAN(**{**kwargs, **changes})


def old_layout(model: PAN, **extra) -> dict:
    """A checkpoint as earlier versions of main.py wrote it: the configuration both at the top level and
    in model_config (its keys in the old PAN.config() order)."""
    m = model
    model_config = {"num_class": m.num_class, "num_segments": m.num_segments, "modality": m.modality,
                    "base_model": m.arch, "consensus_type": m.consensus_type, "dropout": m.dropout,
                    "is_shift": m.is_shift, "shift_div": m.shift_div, "shift_place": m.shift_place,
                    "temporal_pool": m.temporal_pool, "data_length": m.data_length, "has_VAP": m.has_VAP}
    return {"epoch": 3, "arch": m.arch, "modality": m.modality, "num_segments": m.num_segments,
            "model_config": model_config, "state_dict": m.state_dict(), **extra}


# ------------------------------------------------------------------ the fields


def test_fields_are_the_old_lists_and_the_pan_keywords_with_their_defaults():
    assert set(ModelConfig.field_names()) == OLD_CONFIG_KEYS | set(ADDED)
    assert ModelConfig.architecture_fields() == with_added(OLD_CONFIG_FIELDS) == CONFIG_FIELDS
    assert ModelConfig.assumed_values() == {**OLD_DEFAULTS, **ADDED}
    assert ModelConfig.required_fields() == ("modality", "base_model", "num_segments", "num_class")
    # Every field is a PAN keyword with the same default (PAN's backbone default, resnet50, is the
    # published signature's; a configuration always names its backbone).
    signature = inspect.signature(PAN.__init__).parameters
    for f in dataclasses.fields(ModelConfig):
        assert f.name in signature, f.name
        if f.default is not dataclasses.MISSING:
            assert signature[f.name].default == f.default, f.name
    assert signature["base_model"].default == "resnet50"


def test_pan_keeps_the_published_attributes_and_config_dict():
    model = tiny("PA", data_length=5, shift_div=4, shift_place="block", consensus_type="identity")
    assert (model.modality, model.arch, model.num_segments, model.num_class) == ("PA", "resnet18", 4, 3)
    assert (model.data_length, model.new_length, model.shift_div, model.shift_place) == (5, 5, 4, "block")
    assert (model.is_shift, model.has_VAP, model.consensus_type, model.dropout, model.temporal_pool) == (
        True, True, "identity", 0.5, False)
    assert tiny("RGB").new_length == 1
    assert model.config() == {"num_class": 3, "num_segments": 4, "modality": "PA", "base_model": "resnet18",
                              "consensus_type": "identity", "dropout": 0.5, "is_shift": True, "shift_div": 4,
                              "shift_place": "block", "temporal_pool": False, "data_length": 5, "has_VAP": True,
                              **ADDED}
    assert model.config() == model.model_config.to_dict()
    with pytest.raises(AttributeError):
        model.num_segments = 8  # the configuration is fixed once the layers are built


def test_round_trip_through_the_model_and_a_checkpoint(tmp_path):
    config = ModelConfig(modality="Lite", base_model="resnet18", num_segments=4, num_class=3, is_shift=True,
                         shift_div=4, has_VAP=True, dropout=0.3)
    model = PAN.from_config(config, pretrain=None)
    assert model.model_config == config
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"model_config": config.to_dict(), "state_dict": model.state_dict()}, path)
    saved = torch.load(path, weights_only=True)  # plain types only
    assert ModelConfig.from_dict(saved["model_config"]) == config == ModelConfig.from_checkpoint(saved)
    rebuilt = PAN.from_config(ModelConfig.from_checkpoint(saved), pretrain=None)
    rebuilt.load_state_dict(saved["state_dict"], strict=True)


def test_from_dict_refuses_unknown_and_incomplete_and_defaults_the_rest():
    with pytest.raises(ValueError, match="unknown field.*shift_mod"):
        ModelConfig.from_dict({"modality": "RGB", "base_model": "resnet18", "num_segments": 8, "num_class": 2,
                               "shift_mod": "x"})
    with pytest.raises(ValueError, match="lacks num_class"):
        ModelConfig.from_dict({"modality": "RGB", "base_model": "resnet18", "num_segments": 8})
    # A model_config written before a field existed reads back with that field's default.
    assert ModelConfig.from_dict({"modality": "RGB", "base_model": "resnet18", "num_segments": 8,
                                  "num_class": 2}).data_length == 4


# ------------------------------------------------------------------ the places that had their own lists


def published_args(*argv: str):
    args = get_args_parser().parse_args(["something", "Lite", "--num_class", "5", *argv])
    resolve_args(args)
    return args


@pytest.mark.parametrize("argv", [
    (),
    ("--arch", "resnet18", "--num_segments", "4", "--shift_div", "4", "--shift_place", "block", "--dropout", "0.3",
     "--data_length", "5", "--consensus_type", "identity", "--temporal_pool", "--no-VAP", "--npb"),
    ("--base", "TSN", "--arch", "mobilenet_v2"),
])
def test_main_build_model_is_the_old_keyword_mapping(argv):
    args = published_args(*argv)
    with torch.device("meta"):
        model = main.build_model(args, 5, pretrain=None)
        # main.build_model before ModelConfig, written out.
        old = PAN(5, args.num_segments, args.modality, base_model=args.arch, consensus_type=args.consensus_type,
                  dropout=args.dropout, partial_bn=not args.no_partialbn, pretrain=None, is_shift=args.shift,
                  shift_div=args.shift_div, shift_place=args.shift_place, fc_lr5=main.effective_fc_lr5(args),
                  temporal_pool=args.temporal_pool, data_length=args.data_length, has_VAP=args.VAP)
    assert model.config() == old.config()
    assert (model.fc_lr5, model._enable_pbn, model.pretrain) == (old.fc_lr5, old._enable_pbn, old.pretrain)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in old.state_dict().items()}
    assert ModelConfig.from_args(args, 5) == model.model_config


@pytest.mark.parametrize("argv", [
    (),
    ("--modality", "PA", "--arch", "resnet101", "--shift", "--shift_div", "4", "--shift_place", "block",
     "--temporal_pool", "--VAP", "--num_class", "7"),
    ("--no-shift", "--no-VAP", "--no-temporal_pool"),
])
def test_test_models_overrides_are_the_old_mapping(argv):
    args = test_models.get_args_parser().parse_args(["something", "--weights", "w.pth", *argv])
    old = {"modality": args.modality, "base_model": args.arch, "num_segments": 8, "is_shift": args.shift,
           "shift_div": args.shift_div, "shift_place": args.shift_place, "temporal_pool": args.temporal_pool,
           "has_VAP": args.VAP}
    new = test_models.model_overrides(args, 8)
    # The resolver drops None (not given); what remains must be the same, and never the class count.
    assert {k: v for k, v in new.items() if v is not None} == {k: v for k, v in old.items() if v is not None}
    assert "num_class" not in new


def test_released_settings_are_the_old_helper():
    old = dict(num_class=174, num_segments=8, modality="Lite", base_model="resnet50", dropout=0.5, partial_bn=False,
               pretrain=None, is_shift=True, shift_div=8, shift_place="blockres", has_VAP=True)
    new = released_model_kwargs("Lite", "resnet50")
    assert {k: new[k] for k in old} == old
    # The rest are PAN's own defaults, as when the helper left them out.
    defaults = {k: p.default for k, p in inspect.signature(PAN.__init__).parameters.items()}
    assert {k: v for k, v in new.items() if k not in old} == {k: defaults[k] for k in set(new) - set(old)}
    assert ModelConfig.from_released_name(f"pretrained/{RELEASED_NAME}", 174) == ModelConfig.released(
        "Lite", "resnet18", num_segments=4)
    unshifted = ModelConfig.from_released_name("PAN_RGB_kinetics_resnet50_avg_segment8_e80.pth.tar", 400)
    assert (unshifted.is_shift, unshifted.modality, unshifted.num_class) == (False, "RGB", 400)
    with pytest.raises(ValueError, match="not a released file name"):
        ModelConfig.from_released_name("ckpt.best.pth.tar", 3)


# ------------------------------------------------------------------ checkpoints, old and new layout


def test_old_and_new_layout_state_the_same_configuration():
    model = tiny()
    new = {"model_config": model.model_config.to_dict(), "state_dict": model.state_dict()}
    old = old_layout(model)
    assert ModelConfig.from_checkpoint(old) == ModelConfig.from_checkpoint(new) == model.model_config
    assert {**fields_of_checkpoint(old), **ADDED} == fields_of_checkpoint(new)  # old files: the added fields' meaning
    assert resolve_model_config(old, "a.pth.tar").config == resolve_model_config(new, "a.pth.tar").config
    # Older files with only the top-level fields: those are read (arch is the backbone).
    bare = {"arch": "resnet18", "modality": "Lite", "num_segments": 4, "state_dict": {}}
    assert fields_of_checkpoint(bare) == {"modality": "Lite", "base_model": "resnet18", "num_segments": 4}
    with pytest.raises(CheckpointError, match="x.pth does not state its num_class"):
        ModelConfig.from_checkpoint(bare, source="x.pth")


def test_resolution_gives_what_it_gave():
    """Values, sources and key order for each kind of file, as before ModelConfig."""
    model = tiny()
    ours = resolve_model_config(old_layout(model), "ckpt.best.pth.tar", {"num_segments": None})
    assert list(ours.config) == list(with_added(OLD_CONFIG_FIELDS))
    assert ours.config == {"modality": "Lite", "base_model": "resnet18", "num_segments": 4, "num_class": 3,
                           "is_shift": True, "shift_div": 8, "shift_place": "blockres", "temporal_pool": False,
                           "data_length": 4, "has_VAP": True, "consensus_type": "avg", **ADDED}
    assert set(ours.sources.values()) == {"checkpoint", "default"}  # the added field: an old file's meaning
    assert [k for k, v in ours.sources.items() if v == "default"] == list(ADDED)

    released = {"epoch": 80, "arch": "resnet18",
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    resolved = resolve_model_config(released, RELEASED_NAME, {"shift_div": 4})
    assert resolved.config == {**ours.config, "shift_div": 4}
    assert resolved.sources == {"shift_div": "flag", "base_model": "checkpoint", "modality": "file name",
                                "num_segments": "file name", "is_shift": "file name", "consensus_type": "file name",
                                "shift_place": "file name", "num_class": "keys", "data_length": "keys",
                                "has_VAP": "keys", "temporal_pool": "keys", "shift_mode": "default"}

    # A dry run of a file that is not there: the name and the released defaults (VAP off: no keys say it).
    dry = resolve_model_config({"state_dict": {}}, "pretrained/PAN_RGB_kinetics_resnet50_avg_segment8_e80.pth.tar")
    assert dry.config == {"modality": "RGB", "base_model": "resnet50", "num_segments": 8, "is_shift": False,
                          "shift_div": 8, "shift_place": "blockres", "temporal_pool": False, "data_length": 4,
                          "has_VAP": False, "consensus_type": "avg", **ADDED}
    assert dry.sources["has_VAP"] == dry.sources["data_length"] == "default"


def test_resolution_messages_are_unchanged():
    with pytest.raises(CheckpointError, match=r"^mystery.pth: cannot tell its modality: the checkpoint has no such "
                                              r"field, its name does not follow"):
        resolve_model_config({"state_dict": {}}, "mystery.pth")
    with pytest.raises(CheckpointError, match=r"cannot tell its base_model"):
        resolve_model_config({"state_dict": {}}, "mystery.pth", {"modality": "RGB"})
    with pytest.raises(CheckpointError, match=r"cannot tell its num_segments"):
        resolve_model_config({"state_dict": {}}, "mystery.pth", {"modality": "RGB", "base_model": "resnet18"})
    model = tiny()
    mislabelled = {"state_dict": model.state_dict()}
    name = RELEASED_NAME.replace("resnet18", "resnet50")
    with pytest.raises(CheckpointError, match=r"its file name says base_model='resnet50' but its parameters imply "
                                              r"base_model='resnet18'; pass the right value as a flag"):
        resolve_model_config(mislabelled, name)
    assert resolve_model_config(mislabelled, name, {"base_model": "resnet18"}).sources["base_model"] == "flag"


def test_build_model_for_evaluation_is_as_before():
    model = build_model({"modality": "Lite", "base_model": "resnet18", "num_segments": 4, "num_class": 99,
                         "is_shift": True, "has_VAP": True}, 3)
    assert model.config() == {**tiny().config(), "num_class": 3, "dropout": 0.5}
    assert (model.pretrain, model._enable_pbn, model.fc_lr5) == (None, False, False)


# ------------------------------------------------------------------ resume


def resume_state(model: PAN, model_config: dict) -> dict:
    return {"epoch": 1, "optimizer": {}, "scheduler": {}, "format_version": 1, "state_dict": model.state_dict(),
            "model_config": model_config}


def test_resume_compares_the_architecture_not_the_dropout():
    model = tiny(shift_div=8)
    other_dropout = {**model.config(), "dropout": 0.8}
    training_state.check_resume_compatible(resume_state(model, other_dropout), "c.pth", {}, model, allow_change=False)
    training_state.check_resume_compatible(old_layout(model, optimizer={}, scheduler={}, format_version=1), "c.pth", {}, model,
                                 allow_change=False)
    # shift_div and consensus leave the weights alone: only the configuration tells them apart.
    other = {**model.config(), "shift_div": 4, "consensus_type": "identity"}
    with pytest.raises(CheckpointError, match=r"--resume c.pth was trained with another model:\n"
                                              r"  shift_div: checkpoint 4, this run 8\n"
                                              r"  consensus_type: checkpoint 'identity', this run 'avg'$"):
        training_state.check_resume_compatible(resume_state(model, other), "c.pth", {}, model, allow_change=False)


def test_adding_a_field_is_one_place():
    """A field added to the dataclass (as shift_mode was) reaches every derived place by itself."""

    @dataclasses.dataclass(frozen=True)
    class WithNewField(ModelConfig):
        segment_stride: int = 1  # hypothetical: not a flag of either command line

    args = published_args()
    args.segment_stride = 2
    config = WithNewField.from_args(args, 5)
    assert config.segment_stride == 2 and config.to_dict()["segment_stride"] == 2
    assert "segment_stride" in WithNewField.architecture_fields()
    assert WithNewField.assumed_values()["segment_stride"] == 1
    old = {k: v for k, v in config.to_dict().items() if k != "segment_stride"}
    assert WithNewField.from_dict(old).segment_stride == 1  # a checkpoint from before the field
    assert [d[0] for d in config.differences(WithNewField.from_dict(old))] == ["segment_stride"]
    eval_args = test_models.get_args_parser().parse_args(["something", "--weights", "w.pth"])
    assert WithNewField.overrides_from_args(eval_args)["segment_stride"] is None  # no such flag: not overridden


# ------------------------------------------------------------------ end to end, old layout


def test_old_layout_checkpoint_evaluates_like_the_new_one(tmp_path):
    from tests.eval_support import make_dataset, run_eval, tiny_model

    root = make_dataset(tmp_path / "data", num_videos=2)
    model = tiny_model("Lite")
    old_path, new_path = tmp_path / "old.pth.tar", tmp_path / "new.pth.tar"
    torch.save(old_layout(model, best_prec1=1.0), old_path)
    torch.save({"epoch": 3, "model_config": model.model_config.to_dict(), "state_dict": model.state_dict()},
               new_path)
    old_metrics, old_scores = run_eval(root, old_path, tmp_path / "old")
    new_metrics, new_scores = run_eval(root, new_path, tmp_path / "new")
    assert old_metrics["num_videos"] == new_metrics["num_videos"] == 2
    assert old_scores.keys() == new_scores.keys()
    for key in old_scores:
        assert (old_scores[key] == new_scores[key]).all(), key


def test_old_layout_checkpoint_resumes(tmp_path):
    from ops.checkpoint_files import read_verified_checkpoint, save_checkpoint
    from tests.train_support import make_tiny_dataset, train

    data = make_tiny_dataset(tmp_path / "data", n_train=4, n_val=2)
    out = tmp_path / "run"
    train(data, out, "--epochs", "1")
    folder = out / "ckpt" / "run"
    ckpt = read_verified_checkpoint(str(folder / "ckpt.pth.tar"))
    assert "arch" not in ckpt  # new layout: once, in model_config
    # Rewrite it as earlier versions did: configuration also at the top level.
    ckpt.pop("content_sha256", None)
    config = ckpt["model_config"]
    ckpt.update(arch=config["base_model"], modality=config["modality"], num_segments=config["num_segments"])
    save_checkpoint(ckpt, str(folder))
    result = train(data, out, "--epochs", "2", "--resume", "auto")
    assert read_verified_checkpoint(str(folder / "ckpt.pth.tar"))["epoch"] == 2
    assert "resumed from" in (out / "log" / "run" / "log.txt").read_text() and result["best_prec1"] >= 0
