"""Export a PAN checkpoint to ``torch.export`` (``.pt2``) and/or ONNX, and check the export's parity.

Any checkpoint of ours or a released file (RGB, PA, Lite; resnet18-152,
mobilenet_v2) is read as ``test_models.py`` reads it
(:func:`ops.inference.load_checkpoint_model`) and exported with a dynamic
batch; segments, frames per segment and crop size are fixed and recorded in
the file's metadata with the class names (:mod:`ops.exported`)::

    python tools/export.py --weights runs/quickstart/checkpoints/pan_lite/ckpt.best.pth.tar --format both
    python tools/export.py --weights pretrained/PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar \\
        --format onnx --output exported/pan_lite_sthv1 --categories data/something/category.txt

Parity is part of the export: the file just written is loaded back (the
``.pt2`` with ``torch.export.load``, the ``.onnx`` in onnxruntime) and run
beside the PyTorch model at batch 1, 2 and 4 on real frames -- by default the
synthetic validation set's first videos (``tools/make_synthetic.py``,
rendered in memory), or ``--parity-video`` files, or a dataset's validation
list (``--parity-dataset``). The max abs and relative logit difference and
the top-1 agreement are printed; beyond tolerance (``max|diff| >
--rtol * max|logit|``, or top-1 agreement below ``--min-agreement``) the
command exits with status 1. ``--benchmark N`` also times the exported model
against eager PyTorch, interleaved in this one process.

PA is exported through its plain formulation (:func:`ops.PAN_modules.pa_maps`:
difference, convolution, norm). The fast path (``ops/pa_fast.py``) branches on
autograd, device and cache-sized chunks and writes into a preallocated buffer:
``torch.export`` traces whichever branch the tracing conditions select, and a
cache-chunk count would be frozen for the example batch. The plain version has
no branch and gives the same maps (the parity check compares the export with
the fast eager path).

Exit status: 0 exported (and parity within tolerance), 1 parity beyond
tolerance (the files are kept, for inspection), 2 unusable input or a missing
optional package (named).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops import frame_sampling  # noqa: E402
from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.dataset import frame_numbers  # noqa: E402
from ops.dataset_config import get_dataset_config, load_categories  # noqa: E402
from ops.exported import (  # noqa: E402
    METADATA_NAME,
    ONNX_INPUT,
    ONNX_OUTPUT,
    ExportedModel,
    ExportedModelError,
    ExportMetadata,
    MissingDependencyError,
    require,
    write_onnx,
)
from ops.files import atomic_write, file_sha256  # noqa: E402
from ops.inference import load_checkpoint_model  # noqa: E402
from ops.models import PAN  # noqa: E402
from ops.PAN_modules import PA  # noqa: E402
from ops.transforms import default_scale_size, eval_transform  # noqa: E402
from ops.weights import CheckpointError  # noqa: E402

logger = logging.getLogger("export")

FORMATS = {"pt2": (".pt2",), "onnx": (".onnx",), "both": (".pt2", ".onnx")}
#: Crop of the released models, used when a checkpoint does not record its training crop.
DEFAULT_CROP = 224
#: The synthetic validation videos rendered for the parity check (tools/make_synthetic.py's defaults).
SYNTHETIC_SIZE, SYNTHETIC_FRAMES = 64, 32
#: Tolerances of the issue: ``max|diff| <= RTOL * max|logit|`` and every top-1 the same.
RTOL, MIN_AGREEMENT = 1e-4, 1.0


class ExportError(ValueError):
    """Input the export cannot use; the message names the file or the flag."""


# --------------------------------------------------------------------------- metadata


def _saved_args(checkpoint: dict) -> dict:
    saved = checkpoint.get("args")
    return saved if isinstance(saved, dict) else {}


def crop_and_scale(checkpoint: dict, crop_flag: int | None, scale_flag: int | None) -> tuple[int, int]:
    """The crop size (flag, else the training run's saved ``crop_size``/``input_size``, else 224) and scale size."""
    saved = _saved_args(checkpoint)
    crop = crop_flag or next((int(saved[k]) for k in ("crop_size", "input_size") if saved.get(k)), None)
    from_checkpoint = crop_flag is None and crop is not None
    crop = crop or DEFAULT_CROP
    scale = scale_flag or (int(saved["scale_size"]) if from_checkpoint and saved.get("scale_size") else None)
    return crop, scale or default_scale_size(crop)


def class_names_for(checkpoint: dict, categories: str | None, dataset: str | None,
                    root_path: str | None, num_class: int) -> tuple[list[str] | None, str | None]:
    """``(names, file)``: ``--categories``, else the category file of ``--dataset`` or of the training dataset.

    ``(None, None)`` (with a warning) when none is found; a file whose count differs is refused.
    """
    path = categories
    if path is None:
        saved = _saved_args(checkpoint)
        name = dataset or saved.get("dataset")
        if name:
            root = root_path or (saved.get("root_path") if name == saved.get("dataset") else None)
            try:
                path = get_dataset_config(name, root).category_file
            except ValueError as err:
                logger.warning("no category file for dataset %r (%s)", name, err)
    if not path or not os.path.isfile(path):
        logger.warning("no class names recorded: pass --categories FILE (one name per line) to record them")
        return None, None
    names = load_categories(path)
    if len(names) != num_class:
        raise ExportError(f"category file {path} lists {len(names)} names but the model has {num_class} classes")
    return names, path


def build_metadata(model: PAN, checkpoint_path: str, crop: int, scale: int, class_names: list[str] | None,
                   exporter: str) -> ExportMetadata:
    return ExportMetadata(
        modality=model.modality, arch=model.arch, num_class=model.num_class, num_segments=model.num_segments,
        frames_per_segment=model.new_length, crop_size=crop, scale_size=scale,
        input_mean=list(model.input_mean), input_std=list(model.input_std), config=model.config(),
        class_names=class_names, source=os.path.basename(checkpoint_path),
        source_sha256=file_sha256(checkpoint_path), exporter=exporter,
    )


# --------------------------------------------------------------------------- export


def traceable_copy(model: PAN) -> PAN:
    """An eval-mode copy of ``model`` whose PA modules use the plain, branch-free formulation."""
    plain = copy.deepcopy(model).eval()
    for module in plain.modules():
        if isinstance(module, PA):
            module.fast = False
    return plain


def export_program(model: PAN, crop: int, example_batch: int = 2) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (plain PA) with a dynamic batch, for ``[N, T*m*3, crop, crop]`` inputs."""
    channels = model.num_segments * model.new_length * 3
    example = torch.randn(example_batch, channels, crop, crop, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(traceable_copy(model), (example,), dynamic_shapes=({0: batch},), strict=False)


def save_pt2(program: torch.export.ExportedProgram, metadata: ExportMetadata, path: str) -> None:
    """Write ``program`` with its metadata (``extra_files``) to ``path`` atomically."""
    extra = {METADATA_NAME: metadata.to_json()}
    # The archive would also hold the tracing example (38 MB for 2 clips of 8x4 frames at 224 px).
    example, program.example_inputs = program.example_inputs, None
    try:
        atomic_write(path, lambda f: torch.export.save(program, f, extra_files=extra))
    finally:
        program.example_inputs = example


def save_onnx(program: torch.export.ExportedProgram, metadata: ExportMetadata, path: str) -> None:
    """Convert ``program`` with the dynamo exporter and write it with its metadata (``metadata_props``)."""
    props = {METADATA_NAME: metadata.to_json(), **{f"pan.{k}": str(v) for k, v in metadata.summary().items()}}
    write_onnx(program, path, [ONNX_INPUT], [ONNX_OUTPUT], props)


@dataclass
class Written:
    path: str
    exporter: str
    seconds: float
    size_bytes: int


def write_exports(model: PAN, checkpoint_path: str, outputs: Sequence[str], crop: int, scale: int,
                  class_names: list[str] | None) -> list[Written]:
    """Export ``model`` once with ``torch.export`` and write every requested file (by extension)."""
    start = time.perf_counter()
    program = export_program(model, crop)
    traced = time.perf_counter() - start
    logger.info("torch.export traced the model in %.1f s", traced)
    written = []
    for path in outputs:
        exporter = "torch.export" if path.endswith(".pt2") else "torch.onnx (dynamo exporter)"
        metadata = build_metadata(model, checkpoint_path, crop, scale, class_names, exporter)
        start = time.perf_counter()
        if path.endswith(".pt2"):
            save_pt2(program, metadata, path)
        else:
            save_onnx(program, metadata, path)
        seconds = traced + time.perf_counter() - start
        written.append(Written(path, exporter, seconds, os.path.getsize(path)))
        logger.info("wrote %s (%.1f MB) in %.1f s (trace included)", path, os.path.getsize(path) / 1e6, seconds)
    return written


# --------------------------------------------------------------------------- parity frames


def test_frame_numbers(num_frames: int, model: PAN) -> np.ndarray:
    """1-based frame numbers of the one test-time clip (segment centres, ``m`` frames each)."""
    offsets = frame_sampling.test_offsets(num_frames, model.num_segments, model.new_length)
    return frame_numbers(offsets, num_frames, model.new_length)


def clip_tensor(frames: Sequence[np.ndarray], model: PAN, crop: int, scale: int) -> torch.Tensor:
    """One clip ``[T*m*3, crop, crop]`` from its sampled frames, with the evaluation transform."""
    transform = eval_transform(crop, scale, 1, False, model.input_mean, model.input_std)
    return transform(list(frames), None).reshape(-1, crop, crop)


def synthetic_clips(model: PAN, crop: int, scale: int, count: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """The first ``count`` videos of the synthetic validation set, rendered in memory (no JPEG round trip)."""
    from tools.make_synthetic import NUM_CLASSES, render_video, video_rng

    numbers = test_frame_numbers(SYNTHETIC_FRAMES, model)
    clips = []
    for i in range(count):
        video = render_video(i % NUM_CLASSES, video_rng(seed, "val", i), SYNTHETIC_SIZE, SYNTHETIC_FRAMES)
        clips.append(clip_tensor([video[n - 1] for n in numbers], model, crop, scale))
    return torch.stack(clips), f"the first {count} videos of the synthetic val set (seed {seed}, rendered in memory)"


def video_clips(model: PAN, crop: int, scale: int, videos: Sequence[str]) -> tuple[torch.Tensor, str]:
    """One test-time clip from each video file (decoded with PyAV)."""
    from ops.video_reader import count_frames, read_frames

    clips = []
    for path in videos:
        if not os.path.isfile(path):
            raise ExportError(f"--parity-video {path}: no such file")
        numbers = test_frame_numbers(count_frames(path, decode=True), model)
        clips.append(clip_tensor(read_frames(path, [int(n) - 1 for n in numbers]), model, crop, scale))
    return torch.stack(clips), f"{len(videos)} video file(s)"


def dataset_clips(model: PAN, crop: int, name: str, root_path: str | None, count: int) -> tuple[torch.Tensor, str]:
    """The first ``count`` clips of a dataset's validation list, as ``test_models.py`` reads them."""
    from ops.evaluation import build_dataset

    cfg = get_dataset_config(name, root_path, training=False)
    dataset = build_dataset(model, cfg, model.num_segments, input_size=crop)
    count = min(count, len(dataset))
    return torch.stack([dataset[i][0] for i in range(count)]), f"the first {count} videos of {cfg.val_list}"


# --------------------------------------------------------------------------- parity


@dataclass
class ParityRow:
    backend: str
    batch_size: int
    clips: int
    max_abs_diff: float
    logit_scale: float
    max_rel_diff: float
    top1_agree: int

    @property
    def agreement(self) -> float:
        return self.top1_agree / max(self.clips, 1)


def batched(model: nn.Module, clips: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(clips[i:i + batch_size]).float() for i in range(0, len(clips), batch_size)])


def parity(reference: nn.Module, exported: dict[str, nn.Module], clips: torch.Tensor,
           batch_sizes: Sequence[int]) -> list[ParityRow]:
    """Each exported model beside ``reference`` at each batch size, on the same clips."""
    rows = []
    for batch_size in batch_sizes:
        expected = batched(reference, clips, batch_size)
        scale = float(expected.abs().max())
        for backend, model in exported.items():
            got = batched(model, clips, batch_size)
            diff = float((got - expected).abs().max())
            agree = int((got.argmax(1) == expected.argmax(1)).sum())
            rows.append(ParityRow(backend, batch_size, len(clips), diff, scale, diff / max(scale, 1e-30), agree))
    return rows


def format_parity(rows: Sequence[ParityRow]) -> str:
    lines = [f"{'backend':<14} {'batch':>5} {'clips':>5} {'max|diff|':>10} {'max|logit|':>10} "
             f"{'max rel':>9} {'top-1 agreement':>16}"]
    for r in rows:
        lines.append(f"{r.backend:<14} {r.batch_size:>5} {r.clips:>5} {r.max_abs_diff:>10.2e} {r.logit_scale:>10.3g} "
                     f"{r.max_rel_diff:>9.2e} {r.top1_agree:>6}/{r.clips} ({100 * r.agreement:.1f}%)")
    return "\n".join(lines)


def failures(rows: Sequence[ParityRow], rtol: float, min_agreement: float) -> list[str]:
    bad = []
    for r in rows:
        if not r.max_rel_diff <= rtol:  # also catches NaN
            bad.append(f"{r.backend} at batch {r.batch_size}: max|diff| {r.max_abs_diff:.3g} is "
                       f"{r.max_rel_diff:.3g} of the logit scale {r.logit_scale:.3g} (tolerance {rtol:g})")
        if r.agreement < min_agreement:
            bad.append(f"{r.backend} at batch {r.batch_size}: top-1 agrees on {r.top1_agree}/{r.clips} clips "
                       f"(needed {100 * min_agreement:g}%)")
    return bad


def benchmark(reference: nn.Module, exported: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict:
    """Median seconds per forward of eager PyTorch and each exported model, timed in interleaved rounds.

    Each round runs every model once, in the same order, so a load that comes
    and goes (other jobs on the machine) falls on all of them alike.
    """
    models = {"pytorch eager": reference, **exported}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(x)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    eager = statistics.median(times["pytorch eager"])
    return {name: {"median_ms": 1000 * statistics.median(t), "min_ms": 1000 * min(t),
                   "vs_eager": statistics.median(t) / eager} for name, t in times.items()}


# --------------------------------------------------------------------------- command line


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a PAN checkpoint to torch.export (.pt2) and/or ONNX, then check parity with PyTorch.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--weights", required=True, help="checkpoint (.pth.tar) from main.py or a released file")
    parser.add_argument("--format", default="pt2", choices=tuple(FORMATS),
                        help="pt2: torch.export; onnx: ONNX (needs onnx, onnxscript, onnxruntime); both")
    parser.add_argument("--out", dest="output", default=None,
                        help="output path; the extension is set by --format (default: beside the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--categories", default=None,
                        help="class names to record, one per line (default: the category file of --dataset, "
                             "or of the dataset the checkpoint was trained on)")
    parser.add_argument("--dataset", default=None, help="dataset whose category file to record")
    parser.add_argument("--root_path", default=None, help="root of --dataset / --parity-dataset")
    parser.add_argument("--input_size", type=int, default=None,
                        help="crop size of the exported input (default: the checkpoint's training crop, else 224)")
    parser.add_argument("--scale_size", type=int, default=None,
                        help="test-time shorter side, recorded for the readers (default: input_size*256/224)")
    parser.add_argument("--num_segments", type=int, default=None,
                        help="segments of the exported model (default: the checkpoint's)")
    parser.add_argument("--modality", default=None, help="override the checkpoint's modality (mislabelled files)")
    parser.add_argument("--arch", default=None, help="override the checkpoint's backbone (mislabelled files)")
    # --- parity
    parser.add_argument("--no-parity", dest="parity", action="store_false",
                        help="skip the parity check (not recommended)")
    parser.add_argument("--parity-video", dest="parity_video", nargs="+", default=None,
                        help="video files to check parity on (one clip each)")
    parser.add_argument("--parity-dataset", dest="parity_dataset", default=None,
                        help="check parity on this dataset's validation list (with --root_path)")
    parser.add_argument("--parity-clips", dest="parity_clips", type=int, default=12,
                        help="clips of the synthetic val set or --parity-dataset")
    parser.add_argument("--batch-sizes", dest="batch_sizes", default="1,2,4", help="batch sizes checked")
    parser.add_argument("--rtol", type=float, default=RTOL,
                        help="largest allowed max|diff| as a share of max|logit| (the PyTorch model's)")
    parser.add_argument("--min-agreement", dest="min_agreement", type=float, default=MIN_AGREEMENT,
                        help="smallest allowed share of clips with the same top-1 class")
    parser.add_argument("--benchmark", type=int, default=0,
                        help="also time N interleaved forwards of a batch-1 clip (eager vs exported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch and onnxruntime (default: torch's default)")
    parser.add_argument("--report", default=None, help="write the figures (files, parity, timings) as JSON here")
    return add_aliases(parser, {"--output": "--out"})


def output_paths(args: argparse.Namespace) -> list[str]:
    base = args.output
    if base is None:
        base = args.weights
        for suffix in (".pth.tar", ".pth", ".tar", ".pt"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
    stem, ext = os.path.splitext(base)
    if ext.lower() in (".pt2", ".onnx"):
        base = stem
    paths = [base + ext for ext in FORMATS[args.format]]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not args.overwrite:
        raise ExportError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    for p in paths:
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    return paths


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ExportError(f"--batch-sizes {text!r} is not a comma list of integers") from None
    if not sizes or min(sizes) < 1:
        raise ExportError(f"--batch-sizes {text!r}: give positive batch sizes")
    return sizes


def main(args: argparse.Namespace) -> int:
    """Export, check parity; returns the exit status (0 ok, 1 parity beyond tolerance, 2 unusable input)."""
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        batch_sizes = parse_batch_sizes(args.batch_sizes)
        outputs = output_paths(args)
        if any(p.endswith(".onnx") for p in outputs):  # before any work: name a missing package now
            require("onnx", "ONNX export")
            require("onnxscript", "ONNX export")
            if args.parity or args.benchmark:
                require("onnxruntime", "the ONNX parity check")
        overrides = {"num_segments": args.num_segments, "modality": args.modality, "base_model": args.arch}
        model, resolved, checkpoint = load_checkpoint_model(args.weights, None, overrides)
        crop, scale = crop_and_scale(checkpoint, args.input_size, args.scale_size)
        class_names, category_file = class_names_for(checkpoint, args.categories, args.dataset, args.root_path,
                                                     model.num_class)
        print(f"model: PAN {model.modality} {model.arch}, {model.num_segments} segments x {model.new_length} "
              f"frames, {crop}x{crop}, {model.num_class} classes"
              f"{f' ({category_file})' if category_file else ' (no class names)'}; torch {torch.__version__}")
        written = write_exports(model, args.weights, outputs, crop, scale, class_names)
        for w in written:
            print(f"wrote {w.path}: {w.size_bytes / 1e6:.1f} MB in {w.seconds:.1f} s ({w.exporter})")
        report: dict = {"weights": args.weights, "files": [asdict(w) for w in written], "torch": torch.__version__,
                        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                        "threads": torch.get_num_threads(), "config": resolved.config}
        status = 0
        if args.parity or args.benchmark:
            exported = {("onnxruntime" if w.path.endswith(".onnx") else "torch.export"): ExportedModel(w.path)
                        for w in written}
            if args.parity_video:
                clips, described = video_clips(model, crop, scale, args.parity_video)
            elif args.parity_dataset:
                clips, described = dataset_clips(model, crop, args.parity_dataset, args.root_path, args.parity_clips)
            else:
                clips, described = synthetic_clips(model, crop, scale, args.parity_clips)
        if args.parity:
            rows = parity(model, exported, clips, batch_sizes)
            print(f"parity against PyTorch (eager, fp32) on {described}:")
            print(format_parity(rows))
            bad = failures(rows, args.rtol, args.min_agreement)
            report["parity"] = {"data": described, "rtol": args.rtol, "min_agreement": args.min_agreement,
                                "rows": [asdict(r) for r in rows], "failures": bad}
            if bad:
                print("PARITY FAILED (the files are kept for inspection):\n  " + "\n  ".join(bad))
                status = 1
            else:
                print(f"parity OK: max|diff| within {args.rtol:g} of the logit scale, top-1 agreement "
                      f"{100 * min(r.agreement for r in rows):.1f}%")
        if args.benchmark:
            timings = benchmark(model, exported, clips[:1], args.benchmark)
            report["benchmark"] = {"batch_size": 1, "repeats": args.benchmark, "backends": timings}
            print(f"latency at batch 1 ({args.benchmark} interleaved rounds, {torch.get_num_threads()} threads, "
                  f"CPU capability {torch.backends.cpu.get_cpu_capability()}):")
            for name, t in timings.items():
                print(f"  {name:<14} median {t['median_ms']:8.1f} ms  min {t['min_ms']:8.1f} ms  "
                      f"x{t['vs_eager']:.2f} of eager")
        if args.report:
            with open(args.report, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
        return status
    except (ExportError, ExportedModelError, CheckpointError, MissingDependencyError, FileNotFoundError,
            ValueError) as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
