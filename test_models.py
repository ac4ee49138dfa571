"""Evaluate PAN checkpoints on a dataset's validation (or test) list; several make an ensemble.

The published command lines run unchanged, e.g. PAN Full on Something-Something V1::

    python test_models.py something --VAP --test_crops=1 --test_segments=8,8 \\
        --weights=pretrained/PAN_RGB_something_resnet50_shift8_blockres_avg_segment8_e50.pth.tar,pretrained/PAN_PA_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar

Each checkpoint's modality, backbone, shift and segments come from its own
fields (our checkpoints) or from the published file-name convention (released
files), cross-checked with its parameter names; a flag (``--modality``,
``--arch``, ...) overrides both. Every model gets its own loader, since the
modalities read different frames; per-video scores are fused over views
(crops x clips), optionally soft-maxed, and summed with ``--coeff`` across
models. The report gives top-1, top-5, mean class accuracy and the number of
videos; ``--output_dir`` receives ``scores.npz``, ``confusion_matrix.csv``,
``metrics.json`` and ``args.json``, and the pages to look at: ``report.html``
(metrics, per-class table, confusion picture, most confused pairs; one
self-contained file), ``per_class.csv`` and ``confusion.png`` (see
:mod:`ops.report` and docs/EVALUATION.md).

Under ``torchrun --nproc_per_node=N`` each process evaluates every N-th video
(no padding) and the scores are gathered, so each video counts once and the
figures equal those of one process.

A sample that cannot be read stops the evaluation with its file named;
``--skip-bad`` leaves such videos out instead and reports how many.

This file holds the command line; the evaluation loop, fusion, metrics and
outputs live in :mod:`ops.evaluation`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import torch
from torch.utils.data import DataLoader

from ops.cli import HelpFormatter, add_aliases
from ops.dataset_config import DatasetConfig, get_dataset_config, load_categories
from ops.errors import PanError, UsageError
from ops.evaluation import (
    CROP_FUSION_TYPES,
    EvalSetup,
    IndexedClips,
    OutputFolder,
    Predictions,
    build_dataset,
    check_output_file,
    collate_clips,
    compute_metrics,
    ensemble_predictions,
    evaluate,
    first_occurrences,
    gather_predictions,
    save_results,
    submission_rows,
    write_submission,
)
from ops.exported import load_evaluation_model
from ops.files import write_text_atomic
from ops.frame_sampling import num_test_views
from ops.inference import (
    FAST_PATHS,
    InferenceOptions,
    prepare_model,
    read_checked_checkpoint,
    resolve_fast_path,
    resolve_model_config,
)
from ops.inference import build_model as build_config_model
from ops.model_config import ModelConfig
from ops.report import ModelResult, ReportInputs, class_names, display_names, write_report
from ops.run_plan import build_on_meta
from ops.runtime import (
    AMP_DTYPES,
    DEFAULT_DIST_TIMEOUT_MINUTES,
    DEVICE_CHOICES,
    cleanup_distributed,
    explain_timeout,
    heartbeat,
    init_distributed,
    is_timeout,
    resolve_device,
    setup_logging,
)
from ops.transforms import default_scale_size

logger = logging.getLogger("test_models")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate PAN checkpoints (one, or an ensemble) on a dataset's list.",
        formatter_class=HelpFormatter,
    )
    bool_flag = argparse.BooleanOptionalAction
    parser.add_argument("dataset", help="registered dataset (something, somethingv2, kinetics, ucf101, hmdb51, "
                        "jester, synthetic) or a custom one with --val_list and --num_class")
    # --- the published flags
    parser.add_argument("--weights", required=True,
                        help="comma list of checkpoints; several make an ensemble (e.g. RGB,PA for PAN Full)")
    parser.add_argument("--test_segments", default=None,
                        help="comma list of segments per model (one value applies to all); "
                             "default: each checkpoint's own")
    parser.add_argument("--test_crops", type=int, default=1, choices=(1, 3, 5, 10),
                        help="spatial views: 1 centre, 3 full-resolution, 5 corners+centre, 10 with mirrors")
    parser.add_argument("--twice_sample", action=bool_flag, default=False,
                        help="two temporal views: the segment centres and the segment starts")
    parser.add_argument("--dense_sample", action=bool_flag, default=False,
                        help="I3D-style dense sampling, 10 windows (or --num_clips) per video")
    parser.add_argument("--full_res", action=bool_flag, default=False,
                        help="crop at the resize size (256 for 224) instead of the input size")
    parser.add_argument("--coeff", default=None,
                        help="comma list of ensemble weights, one per checkpoint; default: 1 each")
    parser.add_argument("--softmax", action=bool_flag, default=False,
                        help="soft-max each model's video scores before the ensemble sum")
    parser.add_argument("--batch_size", type=int, default=1,
                        help="videos per forward, per process (each brings all its views)")
    parser.add_argument("-j", "--workers", type=int, default=8, help="data loading worker processes per process")
    parser.add_argument("--VAP", action=bool_flag, default=None,
                        help="the model has a VAP head; default: what the checkpoint says")
    parser.add_argument("--test_list", "--val_list", dest="test_list", default=None,
                        help="list file to evaluate (relative to --root_path or absolute); "
                             "default: the dataset's validation list")
    parser.add_argument("--csv_file", default=None,
                        help="also write a submission file 'video;category' (top-5 categories for "
                             "somethingv2, top-1 otherwise; see --csv_topk); default: none")
    parser.add_argument("--max_num", type=int, default=-1,
                        help="evaluate only the first N videos of the list (-1: all)")
    parser.add_argument("--crop_fusion_type", default="avg", choices=CROP_FUSION_TYPES,
                        help="how the views of a video are fused")
    parser.add_argument("--gpus", nargs="+", type=int, default=None,
                        help="accepted for the published scripts and ignored: use --device, "
                             "CUDA_VISIBLE_DEVICES and torchrun instead")
    parser.add_argument("--input_size", type=int, default=None,
                        help="crop size; default: the model's (224)")
    parser.add_argument("--scale_size", type=int, default=None,
                        help="resize of the shorter side before cropping; default: 256/224 of the crop, as "
                             "published (give the training run's --scale_size when it set one)")
    parser.add_argument("--lmdb", default=None,
                        help="read frames from this LMDB store (tools/build_lmdb.py); default: frame files")
    # --- published flags that change nothing here
    parser.add_argument("--img_feature_dim", type=int, default=256, help="unused by PAN (as in the published code)")
    parser.add_argument("--num_set_segments", type=int, default=1, help="unused (as in the published code)")
    parser.add_argument("--pretrain", default="imagenet",
                        help="unused: evaluation loads every weight from --weights")
    # --- model overrides (default: from the checkpoint)
    parser.add_argument("--modality", default=None, help="override every checkpoint's modality (RGB, PA, Lite)")
    parser.add_argument("--arch", default=None, help="override every checkpoint's backbone")
    parser.add_argument("--shift", action=bool_flag, default=None, help="override: temporal shift on/off")
    parser.add_argument("--shift_div", type=int, default=None, help="override: shift 1/shift_div of channels")
    parser.add_argument("--shift_place", default=None, choices=("blockres", "block"), help="override: shift place")
    parser.add_argument("--temporal_pool", action=bool_flag, default=None, help="override: temporal pooling")
    # --- data
    parser.add_argument("--root_path", default=None,
                        help="dataset root; default: $PAN_DATA_ROOT/<dataset> (data/synthetic for synthetic)")
    parser.add_argument("--num_class", type=int, default=None, help="class count; default: the registry's")
    parser.add_argument("--image_tmpl", default=None, help="frame file name template; default: the registry's")
    parser.add_argument("--video", action=bool_flag, default=None,
                        help="list entries are video files, not frame folders; default: the registry's")
    parser.add_argument("--num_clips", type=int, default=1,
                        help="temporal views per video (shifted segment points; windows with --dense_sample)")
    parser.add_argument("--skip-bad", dest="skip_bad", action=bool_flag, default=False,
                        help="leave out videos that fail to load (reported beside the accuracy) instead of stopping")
    # --- where and how fast
    parser.add_argument("--device", default="auto", help=f"{', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--dist-timeout", dest="dist_timeout", type=float, default=DEFAULT_DIST_TIMEOUT_MINUTES,
                        help="minutes a collective may wait for the other torchrun processes before the "
                             "evaluation stops naming the process waited on")
    parser.add_argument("--amp", action=bool_flag, default=False,
                        help="autocast: bf16 on CPU (slow on CPUs without native bf16), fp16 on CUDA")
    parser.add_argument("--amp_dtype", default=None, choices=tuple(AMP_DTYPES),
                        help="autocast precision; default: bfloat16 on CPU, float16 on CUDA")
    parser.add_argument("--channels_last", action=bool_flag, default=False, help="NHWC memory format")
    parser.add_argument("--fuse_bn", action=bool_flag, default=False,
                        help="fold BatchNorm into the convolutions (same outputs up to rounding, faster)")
    parser.add_argument("--compile", action=bool_flag, default=False,
                        help="torch.compile the model (falls back to eager with a warning if it fails)")
    parser.add_argument("--compile_mode", default=None,
                        help="torch.compile mode, e.g. max-autotune; default: torch's default")
    parser.add_argument("--fast", default=None, choices=FAST_PATHS,
                        help="a whole fast path instead of the flags above: auto (the best for this machine, "
                             "logged with the reason), bf16, int8 (backbone quantized, calibrated on the first "
                             "batch; CPU), fp32 (folded BatchNorm + channels-last)")
    # --- outputs
    parser.add_argument("--overwrite", action=bool_flag, default=False,
                        help="replace the files of an --output_dir that already holds some, once this "
                             "evaluation has finished (without it such a folder is refused)")
    parser.add_argument("--output_dir", default=None,
                        help="folder for scores.npz, confusion_matrix.csv, metrics.json, args.json, report.html, "
                             "per_class.csv, confusion.png; "
                             "default: log/eval_<dataset>_<date-time>")
    parser.add_argument("--csv_topk", type=int, default=None,
                        help="categories per video in --csv_file; default: 5 for somethingv2, else 1")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="print what would be evaluated (per model: configuration from the checkpoint's "
                             "fields or file name, segments, views, crop and input size) as JSON and exit; "
                             "reads no frames and writes nothing")
    # main.py's name of the crop size, and the tools' name of the LMDB store.
    return add_aliases(parser, {"--crop_size": "--input_size", "--lmdb_path": "--lmdb"})


def parse_list(text: str | None, count: int, kind, flag: str) -> list | None:
    """A comma list for ``count`` models; one value is repeated; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        values = [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag}={text!r} is not a comma list of {kind.__name__}") from None
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise UsageError(f"{flag} has {len(values)} values for {count} checkpoints in --weights")
    return values


def model_overrides(args: argparse.Namespace, num_segments: int | None) -> dict:
    """The model fields this command line sets (``--modality``, ``--arch``, ``--shift``, ``--VAP``...;
    None where not given) and ``num_segments`` from ``--test_segments``: ``{field: value}``."""
    return ModelConfig.overrides_from_args(args, num_segments=num_segments)


def video_id(path: str, is_video_file: bool) -> str:
    """The id a submission file uses: the folder's name, or the video file's name without extension."""
    name = os.path.basename(path.rstrip("/"))
    return os.path.splitext(name)[0] if is_video_file else name


def default_output_dir(dataset: str) -> str:
    return os.path.join("log", f"eval_{dataset}_{time.strftime('%Y%m%d-%H%M%S')}")


def dataset_config(args: argparse.Namespace) -> DatasetConfig:
    """The dataset to evaluate on; a custom one needs ``--val_list`` and ``--num_class``, never a training list."""
    try:
        return get_dataset_config(args.dataset, args.root_path, val_list=args.test_list, image_tmpl=args.image_tmpl,
                                  num_class=args.num_class, video=args.video, training=False)
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_args(args: argparse.Namespace) -> None:
    """Refuse arguments that cannot work, before anything is loaded (:class:`UsageError`, exit 2)."""
    try:
        num_test_views(args.twice_sample, args.dense_sample, args.num_clips)
    except ValueError as err:
        raise UsageError(f"view options: {err}") from None
    for flag, value, low in (("--batch_size", args.batch_size, 1), ("--workers", args.workers, 0),
                             ("--max_num", args.max_num, -1)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.input_size is not None and args.input_size < 1:
        raise UsageError(f"--input_size must be >= 1 pixel, got {args.input_size}")
    if args.scale_size is not None and args.scale_size < (args.input_size or 1):
        raise UsageError(f"--scale_size {args.scale_size} is below the crop size {args.input_size}: the shorter "
                         "side is resized to scale_size, then the crop is taken from it")
    if not args.dist_timeout > 0:
        raise UsageError(f"--dist-timeout must be > 0 minutes, got {args.dist_timeout}")


def dry_run(args: argparse.Namespace) -> dict:
    """What :func:`main` would evaluate, as a JSON-ready dict; reads no frames and writes nothing.

    A checkpoint that exists is read for its configuration fields; one that
    does not is described by its file name (the released convention).
    """
    weights = [w for w in args.weights.split(",") if w.strip()]
    segments = parse_list(args.test_segments, len(weights), int, "--test_segments") or [None] * len(weights)
    coeffs = parse_list(args.coeff, len(weights), float, "--coeff") or [1.0] * len(weights)
    cfg = dataset_config(args)
    views = args.test_crops * num_test_views(args.twice_sample, args.dense_sample, args.num_clips)
    models = []
    for path, num_segments, coeff in zip(weights, segments, coeffs):
        checkpoint = read_checked_checkpoint(path) if os.path.exists(path) else {"state_dict": {}}
        resolved = resolve_model_config(checkpoint, path, model_overrides(args, num_segments))
        model = build_on_meta(lambda: build_config_model(resolved.config, cfg.num_class))
        crop = args.input_size or model.crop_size
        scale = args.scale_size or default_scale_size(crop)
        side = scale if args.full_res else crop
        models.append({
            "weights": path, "file_found": os.path.exists(path), "coeff": coeff,
            "config": resolved.config, "sources": resolved.sources, "frames_per_segment": model.new_length,
            "views": views, "crop_size": side, "scale_size": scale,
            "input_shape": [args.batch_size * views, model.num_segments * model.new_length * 3, side, side],
        })
    return {
        "dataset": {"name": cfg.name, "num_class": cfg.num_class, "root_path": cfg.root_path,
                    "list": cfg.val_list, "image_tmpl": cfg.image_tmpl, "video": cfg.video},
        "views": {"test_crops": args.test_crops, "twice_sample": args.twice_sample,
                  "dense_sample": args.dense_sample, "num_clips": args.num_clips, "per_video": views,
                  "full_res": args.full_res, "crop_fusion_type": args.crop_fusion_type},
        "batch_size": args.batch_size, "workers": args.workers, "softmax": args.softmax,
        "models": models, "args": {k: v for k, v in sorted(vars(args).items())},
    }


def main(args: argparse.Namespace) -> dict:
    """Evaluate; returns the metrics (a dict as in ``metrics.json``) on every process.

    With ``--dry-run``, returns :func:`dry_run`'s description instead and evaluates nothing.
    """
    check_args(args)
    if args.dry_run:
        return dry_run(args)
    device = resolve_device(args.device)
    dist_info = init_distributed(device, args.dist_timeout)
    setup_logging(dist_info.is_main)
    try:
        return _run(args, device, dist_info)
    except RuntimeError as err:  # a collective's time-out is a peer's problem, told as such
        if dist_info.distributed and is_timeout(err):
            raise explain_timeout(err, dist_info, args.dist_timeout) from err
        raise
    finally:
        cleanup_distributed()


def _run(args: argparse.Namespace, device: torch.device, dist_info) -> dict:
    if args.gpus is not None:
        logger.warning("--gpus %s is ignored: choose the GPU with --device cuda:N or CUDA_VISIBLE_DEVICES, "
                       "and several with torchrun", args.gpus)
    weights = [w for w in args.weights.split(",") if w.strip()]
    segments = parse_list(args.test_segments, len(weights), int, "--test_segments") or [None] * len(weights)
    coeffs = parse_list(args.coeff, len(weights), float, "--coeff")
    options = resolve_fast_path(args.fast, device, InferenceOptions(
        amp=args.amp, amp_dtype=args.amp_dtype, channels_last=args.channels_last, fuse_bn=args.fuse_bn,
        compile=args.compile, compile_mode=args.compile_mode))
    output_dir = args.output_dir or default_output_dir(args.dataset)
    outputs = None
    if dist_info.is_main:  # every output path is checked before any model or data is loaded
        if args.csv_file:
            check_output_file(args.csv_file, "--csv_file")
        outputs = OutputFolder(output_dir, overwrite=args.overwrite)
    try:
        metrics, submission = _evaluate(args, device, dist_info, weights, segments, coeffs, options, outputs)
    except BaseException:
        if outputs is not None:
            outputs.discard()  # an earlier evaluation's outputs stay as they were
        raise
    if outputs is not None:
        logger.info("scores, confusion matrix and metrics written to %s", outputs.commit())
    if submission is not None:  # after the commit: the file may lie inside --output_dir
        write_submission(args.csv_file, submission)
        logger.info("submission file written to %s (%d videos)", args.csv_file, len(submission))
    return metrics


def _evaluate(args: argparse.Namespace, device: torch.device, dist_info, weights: list[str], segments: list,
              coeffs: list[float] | None, options: InferenceOptions,
              outputs: OutputFolder | None) -> tuple[dict, list[list[str]] | None]:
    """The evaluation proper; returns the metrics and, with ``--csv_file`` on the main process, the
    submission rows (written by the caller once the output folder is committed)."""
    if outputs is not None:
        write_text_atomic(outputs.file("args.json"), json.dumps(vars(args), indent=2) + "\n")
    cfg = dataset_config(args)
    categories = None
    if args.csv_file:
        if not cfg.category_file:
            raise UsageError(f"--csv_file needs category names, and dataset {cfg.name} has no category file")
        categories = load_categories(cfg.category_file)

    runs: list[Predictions] = []
    video_paths: list[str] = []
    for path, num_segments in zip(weights, segments):
        model, resolved, checkpoint = load_evaluation_model(path, cfg.num_class, model_overrides(args, num_segments),
                                                            options)  # a checkpoint, or a .pt2/.onnx export
        logger.info("%s: %s", path, ", ".join(f"{k}={v} ({resolved.sources[k]})" for k, v in resolved.config.items()))
        dataset = build_dataset(model, cfg, model.num_segments, test_crops=args.test_crops, full_res=args.full_res,
                                input_size=args.input_size, scale_size=args.scale_size, dense_sample=args.dense_sample,
                                twice_sample=args.twice_sample, num_clips=args.num_clips, lmdb=args.lmdb)
        total = len(dataset) if args.max_num < 0 else min(args.max_num, len(dataset))
        video_paths = [r.path for r in dataset.records[:total]]
        keep, repeats = first_occurrences(video_paths)
        if repeats and dist_info.is_main and path == weights[0]:
            record = dataset.records
            logger.warning("%d line(s) of %s repeat a video listed before; each video is evaluated once:\n  %s",
                           len(repeats), cfg.val_list, "\n  ".join(
                               f"line {record[i].line} repeats line {record[j].line}: {record[i].path}"
                               for i, j in repeats[:20]) + ("\n  ..." if len(repeats) > 20 else ""))
        clips = IndexedClips(dataset, keep[dist_info.rank::dist_info.world_size])
        loader = DataLoader(clips, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_clips,
                            pin_memory=device.type == "cuda")
        setup = EvalSetup(
            device, options, args.test_crops * num_test_views(args.twice_sample, args.dense_sample, args.num_clips),
            args.crop_fusion_type, args.skip_bad, show_progress=dist_info.is_main and sys.stderr.isatty(),
        )
        local = evaluate(prepare_model(model, device, options), loader, cfg.num_class, setup,
                         os.path.basename(path))
        heartbeat(dist_info, f"{path} evaluated")
        run = gather_predictions(local, keep)
        if dist_info.is_main and len(weights) > 1 and len(run.labels):
            metrics, _ = compute_metrics(run.scores, run.labels, cfg.num_class, len(run.skipped))
            logger.info("%s alone: top-1 %.2f%% top-5 %.2f%%", path, metrics.top1, metrics.top5)
        runs.append(run)

    fused = ensemble_predictions(runs, coeffs, args.softmax, weights)
    metrics, confusion = compute_metrics(fused.scores, fused.labels, cfg.num_class, len(fused.skipped))
    if outputs is not None:
        skipped_note = f", {metrics.num_skipped} left out as unreadable (--skip-bad)" if args.skip_bad else ""
        if metrics.num_videos:
            logger.info("Overall Prec@1 %.2f%% Prec@5 %.2f%% mean class accuracy %.2f%% on %d videos%s",
                        metrics.top1, metrics.top5, metrics.mean_class_accuracy, metrics.num_videos, skipped_note)
        else:
            logger.warning("no video was evaluated%s: there are no accuracies to report", skipped_note)
        save_results(outputs.staging, fused, video_paths, metrics, confusion,
                     {"weights": weights, "world_size": dist_info.world_size, "repeated_lines": len(repeats)})
        write_evaluation_report(outputs, args, cfg, weights, runs, fused, metrics, confusion, video_paths)
    submission = None
    if outputs is not None and args.csv_file:
        top_k = args.csv_topk or (5 if cfg.name == "somethingv2" else 1)
        ids = [video_id(p, cfg.video) for p in video_paths]
        submission = submission_rows(fused, ids, categories, top_k)
    return metrics.as_dict(), submission


def write_evaluation_report(outputs: OutputFolder, args: argparse.Namespace, cfg: DatasetConfig, weights: list[str],
                            runs: list[Predictions], fused: Predictions, metrics, confusion, video_paths: list[str]) -> None:
    """``report.html``, ``per_class.csv`` and ``confusion.png`` into the staging folder (see :mod:`ops.report`)."""
    names = None
    if cfg.category_file and os.path.isfile(cfg.category_file):
        try:
            names = load_categories(cfg.category_file)
        except ValueError as err:
            logger.warning("the report numbers the classes: %s", err)
        else:
            if len(names) != cfg.num_class:
                logger.warning("%s names %d classes for %d: the report numbers the missing ones",
                               cfg.category_file, len(names), cfg.num_class)
    shown = display_names(weights)
    label = ", ".join(shown)
    fused_result = ModelResult("fused" if len(weights) > 1 else shown[0], metrics.as_dict(),
                               confusion, fused.indices, fused.scores, fused.labels)
    members = []
    if len(weights) > 1:
        for name, run in zip(shown, runs):
            run_metrics, run_confusion = compute_metrics(run.scores, run.labels, cfg.num_class, len(run.skipped))
            members.append(ModelResult(name, run_metrics.as_dict(), run_confusion, run.indices,
                                       run.scores, run.labels))
    views = args.test_crops * num_test_views(args.twice_sample, args.dense_sample, args.num_clips)
    details = {"dataset": cfg.name, "list": cfg.val_list, "weights": ", ".join(weights),
               "views per video": f"{views} ({args.test_crops} crop(s), {args.crop_fusion_type} fusion)",
               "ensemble": (f"coefficients {args.coeff or '1 each'}, softmax {'on' if args.softmax else 'off'}"
                            if len(weights) > 1 else "single model")}
    inputs = ReportInputs(f"{cfg.name}: {label}", fused_result, class_names(names, cfg.num_class), video_paths,
                          members, details, cfg.root_path)
    write_report(outputs.file, inputs)


def cli(argv: list[str] | None = None) -> int:
    """Entry point: a user-facing error (:class:`~ops.errors.PanError`) ends with one sentence and exit
    status 1, arguments that cannot work with 2; anything else is a bug and keeps its traceback."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        result = main(args)
    except UsageError as err:
        parser.error(str(err))
    except PanError as err:
        logger.debug("details", exc_info=True)
        print(f"{parser.prog}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
