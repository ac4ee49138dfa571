"""tools/export.py and ops/exported.py: .pt2 (always) and ONNX (when its optional packages are installed).

The models are tiny random-init resnet18 / mobilenet_v2 PANs (4 segments,
32-64 px) whose classifier is scaled up so that classes are well apart; what
is specified is that the exported file computes what the PyTorch model
computes, at every batch size, and carries what a reader needs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ops import exported as ex
from ops.backbones import get_backbone_spec
from ops.files import file_sha256
from ops.models import PAN
from tests.eval_support import (
    CATEGORIES,
    NUM_CLASS,
    make_dataset,
    run_eval,
    save_ours,
    tiny_model,
)
from tools import export
from tools.make_synthetic import CLASS_NAMES

HAVE_ONNX = all(__import__("importlib").util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAVE_ONNX, reason="ONNX export needs the optional packages onnx, onnxscript and onnxruntime "
                          "(pip install -r requirements-deploy.txt); the .pt2 path is tested without them")
SIZE = 32


def run_export(capsys, *argv) -> tuple[int, str]:
    status = export.main(export.get_args_parser().parse_args([str(a) for a in argv]))
    return status, capsys.readouterr().out


def synthetic_checkpoint(path: Path, modality: str = "Lite", arch: str = "resnet18", **kwargs) -> Path:
    """A 12-class checkpoint (the synthetic set's classes) in our format, trained at 32 px."""
    torch.manual_seed(0)
    model = PAN(len(CLASS_NAMES), 4, modality, base_model=arch, pretrain=None, partial_bn=False, dropout=0.5,
                is_shift=True, **{"has_VAP": True, **kwargs})
    with torch.no_grad():
        vap = getattr(model.base_model, get_backbone_spec(arch).head_attr)
        head = vap.pred if model.has_VAP else model.new_fc
        head.weight.normal_(0.0, 1.0)
    torch.save({"epoch": 1, "arch": arch, "modality": modality, "num_segments": 4, "model_config": model.config(),
                "state_dict": model.state_dict(), "args": {"crop_size": SIZE, "dataset": "synthetic"}}, path)
    return path


@pytest.fixture(scope="module")
def lite(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    categories = root / "category.txt"
    categories.write_text("\n".join(CLASS_NAMES) + "\n")
    return {"root": root, "weights": synthetic_checkpoint(root / "lite.pth.tar"), "categories": categories}


# --------------------------------------------------------------------------- .pt2


def test_pt2_export_checks_parity_at_batch_1_2_4_and_records_metadata(lite, capsys, tmp_path):
    out = tmp_path / "lite.pt2"
    report = tmp_path / "report.json"
    status, text = run_export(capsys, "--weights", lite["weights"], "--output", out, "--categories",
                              lite["categories"], "--parity-clips", 4, "--report", report)
    assert status == 0, text
    assert "parity OK" in text and "synthetic val set" in text
    rows = json.loads(report.read_text())["parity"]["rows"]
    assert [(r["backend"], r["batch_size"], r["clips"]) for r in rows] == [("torch.export", b, 4) for b in (1, 2, 4)]
    assert all(r["max_rel_diff"] <= 1e-4 and r["top1_agree"] == 4 for r in rows)

    meta = ex.read_metadata(str(out))
    assert (meta.modality, meta.arch, meta.num_class, meta.num_segments) == ("Lite", "resnet18", 12, 4)
    assert (meta.frames_per_segment, meta.crop_size, meta.scale_size) == (4, SIZE, SIZE * 256 // 224)
    assert meta.input_shape == [None, 4 * 4 * 3, SIZE, SIZE]
    assert meta.class_names == CLASS_NAMES
    assert meta.source == "lite.pth.tar" and meta.source_sha256 == file_sha256(str(lite["weights"]))
    assert meta.torch_version == torch.__version__ and meta.config["has_VAP"] is True
    assert meta.input_mean == [0.485, 0.456, 0.406]
    assert torch.export.load(str(out)).example_inputs is None, "the tracing example is not stored"


@pytest.mark.parametrize("modality, arch, kwargs", [
    ("RGB", "mobilenet_v2", {"has_VAP": False}),  # with VAP, ops.weights does not yet recognise its keys
    ("PA", "resnet18", {"has_VAP": False, "temporal_pool": True}),
], ids=["RGB mobilenet_v2 avg consensus", "PA resnet18 temporal pool, avg consensus"])
def test_exported_program_matches_the_model_at_every_batch_size(tmp_path, modality, arch, kwargs):
    weights = synthetic_checkpoint(tmp_path / "m.pth.tar", modality, arch, **kwargs)
    model, _, _ = export.load_checkpoint_model(str(weights))
    written = export.write_exports(model, str(weights), [str(tmp_path / "m.pt2")], SIZE, 36, None)
    loaded = ex.ExportedModel(written[0].path)
    x = torch.randn(4, model.num_segments * model.new_length * 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
        for batch in (1, 2, 3, 4):
            got = loaded(x[:batch])
            assert got.shape == (batch, len(CLASS_NAMES))
            torch.testing.assert_close(got, expected[:batch], rtol=0, atol=1e-4 * float(expected.abs().max()))


def test_pa_is_exported_through_its_plain_branch_free_formulation(lite):
    """The fast path's preallocated buffer (empty + sub.out) and cache chunks stay out of the graph."""
    model, _, _ = export.load_checkpoint_model(str(lite["weights"]))
    program = export.export_program(model, SIZE)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "aten.sub.out" not in targets and "aten.empty.memory_format" not in targets
    assert "aten.split.Tensor" not in targets and "aten.linalg_vector_norm.default" in targets
    assert model.PA.fast, "the model itself keeps the fast path"


def test_parity_beyond_tolerance_is_reported_and_exits_1(eval_setup, capsys, monkeypatch):
    _, weights, folder = eval_setup
    model, _, _ = export.load_checkpoint_model(str(weights))
    exported = ex.ExportedModel(str(folder / "lite.pt2"))
    clips = torch.randn(2, 48, SIZE, SIZE, generator=torch.Generator().manual_seed(2))

    def drifting(x):
        out = exported(x)
        return out + 1e-2 * out.abs().max()

    rows = export.parity(model, {"drifting": drifting, "torch.export": exported}, clips, [1, 2])
    bad = export.failures(rows, export.RTOL, export.MIN_AGREEMENT)
    assert len(bad) == 2 and all(b.startswith("drifting at batch") and "of the logit scale" in b for b in bad)
    assert [r.backend for r in rows if r.max_rel_diff > 1e-4] == ["drifting", "drifting"]

    # The command line exits 1 (and keeps the file) when parity fails.
    monkeypatch.setattr(export, "failures", lambda rows, rtol, agreement: ["made to fail"])
    status, text = run_export(capsys, "--weights", weights, "--output", folder / "again", "--parity-clips", 1,
                              "--batch-sizes", "1")
    assert status == 1 and "PARITY FAILED" in text and "made to fail" in text
    assert (folder / "again.pt2").is_file()


def test_parity_on_a_video_file(lite, capsys, tmp_path):
    from tools.make_synthetic import render_video, video_rng, write_mp4

    video = tmp_path / "clip.mp4"
    write_mp4(video, render_video(3, video_rng(0, "val", 3), 32, 16))
    status, text = run_export(capsys, "--weights", lite["weights"], "--output", tmp_path / "v.pt2",
                              "--parity-video", video, video, "--batch-sizes", "1,2")
    assert status == 0, text
    assert "2 video file(s)" in text


def test_exported_model_refuses_another_input_shape_naming_the_expected_one(eval_setup):
    loaded = ex.ExportedModel(str(eval_setup[2] / "lite.pt2"))
    with pytest.raises(ex.ExportedModelError, match=r"takes \[N, 48, 32, 32\].*got \[1, 48, 40, 40\]"):
        loaded(torch.zeros(1, 48, 40, 40))


def test_unusable_files_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ex.ExportedModelError, match=r"ends in \.pt2 or \.onnx"):
        ex.ExportedModel(str(tmp_path / "model.pth.tar"))
    foreign = tmp_path / "foreign.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), str(foreign))
    with pytest.raises(ex.ExportedModelError, match="without PAN metadata"):
        ex.ExportedModel(str(foreign))
    newer = ex.ExportMetadata("Lite", "resnet18", 3, 4, 4, 32, 36, [0.5] * 3, [0.5] * 3, {}, format_version=99)
    with pytest.raises(ex.ExportedModelError, match="newer than this code reads"):
        ex.ExportMetadata.from_json(newer.to_json())


def test_existing_output_is_kept_without_overwrite(lite, capsys, tmp_path, caplog):
    (tmp_path / "m.pt2").write_bytes(b"keep me")
    status, _ = run_export(capsys, "--weights", lite["weights"], "--output", tmp_path / "m.pt2", "--no-parity")
    assert status == 2 and (tmp_path / "m.pt2").read_bytes() == b"keep me"
    assert "pass --overwrite" in caplog.text


def test_a_missing_onnx_package_is_named(lite, capsys, tmp_path, monkeypatch, caplog):
    # The first package checked is onnx: hidden here (whether or not the ONNX packages are installed, as in
    # CI, which installs requirements.txt only), the export names it and writes nothing.
    monkeypatch.setitem(sys.modules, "onnx", None)  # import fails as if not installed
    status, _ = run_export(capsys, "--weights", lite["weights"], "--output", tmp_path / "m", "--format", "onnx")
    assert status == 2
    assert "optional package 'onnx'" in caplog.text and "pip install onnx`" in caplog.text
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ex.MissingDependencyError, match="'onnxscript'"):
        ex.require("onnxscript")


# --------------------------------------------------------------------------- ONNX


@needs_onnx
def test_onnx_and_pt2_exports_pass_parity_at_batch_1_2_4(eval_setup):
    """The export of ``eval_setup`` (both formats, parity on the synthetic val set) passed; its report says so."""
    rows = json.loads((eval_setup[2] / "report.json").read_text())["parity"]["rows"]
    assert {(r["backend"], r["batch_size"]) for r in rows} == {
        (b, n) for b in ("torch.export", "onnxruntime") for n in (1, 2, 4)}
    assert all(r["max_rel_diff"] <= 1e-4 and r["top1_agree"] == r["clips"] == 4 for r in rows)
    onnx_file = eval_setup[2] / "lite.onnx"
    meta = ex.read_metadata(str(onnx_file))
    assert meta.class_names == CATEGORIES and meta.input_shape == [None, 48, SIZE, SIZE]
    import onnx

    graph = onnx.load(str(onnx_file)).graph
    assert [i.name for i in graph.input] == ["clips"] and [o.name for o in graph.output] == ["logits"]
    assert not graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value"), "the batch is dynamic"


# --------------------------------------------------------------------------- test_models.py --weights


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    """tests.eval_support's tiny dataset (3 classes, 4 videos at 32 px) and a Lite checkpoint with its exports."""
    root = make_dataset(tmp_path_factory.mktemp("data"), 4)
    folder = tmp_path_factory.mktemp("ckpt")
    weights = save_ours(folder / "lite.pth.tar", tiny_model("Lite"))
    formats = "both" if HAVE_ONNX else "pt2"
    args = export.get_args_parser().parse_args([
        "--weights", str(weights), "--format", formats, "--input_size", str(SIZE), "--categories",
        str(root / "category.txt"), "--parity-clips", "4", "--report", str(folder / "report.json")])
    assert export.main(args) == 0
    return root, weights, folder


@pytest.mark.parametrize("ext", [".pt2", pytest.param(".onnx", marks=needs_onnx)])
def test_test_models_gives_the_same_metrics_from_an_exported_file(eval_setup, tmp_path, ext):
    root, weights, folder = eval_setup
    metrics, saved = run_eval(root, weights, tmp_path / "ckpt")
    metrics_x, saved_x = run_eval(root, folder / f"lite{ext}", tmp_path / "exported")
    assert metrics_x == metrics
    np.testing.assert_array_equal(saved_x["labels"], saved["labels"])
    scale = np.abs(saved["scores"]).max()
    np.testing.assert_allclose(saved_x["scores"], saved["scores"], rtol=0, atol=1e-4 * scale)
    assert (saved_x["scores"].argmax(1) == saved["scores"].argmax(1)).all()


def test_test_models_refuses_flags_an_exported_file_cannot_follow(eval_setup, tmp_path):
    root, _, folder = eval_setup
    with pytest.raises(ex.ExportedModelError, match="exported with num_segments=4"):
        run_eval(root, folder / "lite.pt2", tmp_path / "a", "--test_segments", "8")
    with pytest.raises(ex.ExportedModelError, match="--fuse_bn apply to checkpoints"):
        run_eval(root, folder / "lite.pt2", tmp_path / "b", "--fuse_bn")
    assert NUM_CLASS == len(CATEGORIES)
