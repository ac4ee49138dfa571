"""Command line of ``main.py`` (training), kept apart so tests and tools can parse it.

The published command lines run unchanged (positional ``dataset modality``,
``--arch``, ``--num_segments``, ``--gd``, ``--lr_steps``, ``--npb``, ``--VAP``...).
Every boolean has a ``--no-...`` form, and every help text states the default.
"""

from __future__ import annotations

import argparse
import os

from ops.backbones import BACKBONES
from ops.checkpoint_files import RESUME_AUTO
from ops.cli import HelpFormatter, add_aliases
from ops.errors import UsageError  # noqa: F401 (the entry points import it from here too)
from ops.lr_schedule import LR_TYPES
from ops.modalities import MODALITIES
from ops.models import CONSENSUS_TYPES
from ops.runtime import DEFAULT_DIST_TIMEOUT_MINUTES, DEVICE_CHOICES
from ops.temporal_shift import SHIFT_MODES

CHECK_DATA_CHOICES = ("quick", "full", "off")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train PAN (Lite / RGB / PA) on a video dataset. One process: `python main.py ...`; "
        "several: `torchrun --nproc_per_node=N main.py ...` (--batch-size is per process).",
        formatter_class=HelpFormatter,
        add_help=add_help,
    )
    on_off = argparse.BooleanOptionalAction

    g = p.add_argument_group("data")
    g.add_argument("dataset", help="dataset name from ops/dataset_config.py (something, somethingv2, kinetics, "
                   "ucf101, hmdb51, jester, synthetic) or a custom name with --train_list/--val_list/--num_class")
    g.add_argument("modality", choices=list(MODALITIES), help="input modality: RGB frames, PA maps, or Lite (RGB + PA)")
    g.add_argument("--root_path", default=None, help="data root; default: $PAN_DATA_ROOT/<dataset> "
                   "(see ops/dataset_config.py)")
    g.add_argument("--train_list", default=None, help="training list file (default: the registry's)")
    g.add_argument("--val_list", default=None, help="validation list file (default: the registry's)")
    g.add_argument("--num_class", type=int, default=None, help="class count (default: the registry's; "
                   "required for a custom dataset)")
    g.add_argument("--image_tmpl", default=None, help="frame file name template (default: the registry's)")
    g.add_argument("--video", action=on_off, default=None, help="list paths are video files instead of frame "
                   "folders (default: the registry's choice)")
    g.add_argument("--lmdb", default=None, help="read frames from this LMDB store (ops/lmdb_store.py; default: frame files)")
    g.add_argument("--dense_sample", action=on_off, default=False, help="I3D-style dense sampling of a 64-frame window")
    g.add_argument("--crop_size", type=int, default=224, help="training/validation crop size in pixels")
    g.add_argument("--scale_size", type=int, default=None, help="validation resize of the shorter side; "
                   "default crop_size*256/224")
    g.add_argument("--check-data", dest="check_data", choices=CHECK_DATA_CHOICES, default="quick",
                   help="validate the list files before training: quick = every folder/video exists with its "
                   "first and last frame; full = every frame decodes (slow); off = only parse the lists")
    g.add_argument("-j", "--workers", type=int, default=8, help="data loading worker processes per process")

    g = p.add_argument_group("model")
    g.add_argument("--arch", default="resnet50", choices=list(BACKBONES),
                   help="backbone (the published default, BNInception, is not provided)")
    g.add_argument("--num_segments", type=int, default=8, help="segments per clip (8 in the paper)")
    g.add_argument("--consensus_type", choices=CONSENSUS_TYPES, default="avg",
                   help="segment consensus when VAP is off")
    g.add_argument("--dropout", "--do", type=float, default=0.5, help="dropout before the classifier")
    g.add_argument("--data_length", type=int, default=4, help="frames per segment for PA and Lite (m in the paper)")
    g.add_argument("--VAP", action=on_off, default=True, help="VAP head (the released models all use it)")
    g.add_argument("--base", choices=("TSN", "TSM"), default="TSM",
                   help="model family; as published, TSM switches the temporal shift on (1/8 blockres unless "
                   "--shift_div/--shift_place say otherwise) and TSN keeps it off")
    g.add_argument("--shift", action=on_off, default=None,
                   help="temporal shift (TSM); default: on with --base TSM, off with --base TSN (which refuses it)")
    g.add_argument("--shift_div", type=int, default=8, help="1/shift_div of the channels shift each way")
    g.add_argument("--shift_place", choices=("blockres", "block"), default="blockres", help="where shifts go")
    g.add_argument("--shift_mode", choices=SHIFT_MODES, default="bidirectional",
                   help="bidirectional: the published two-way shift; online: one-way, segment t takes channels "
                   "from t-1 only, for models that stream (ops/streaming.py)")
    g.add_argument("--reverse_aug", action=on_off, default=False,
                   help="play half of the training clips backwards, relabelled by the dataset's reverse_label_map "
                   "(the synthetic set: each class has a time-reversed twin); off by default, as published")
    g.add_argument("--train_history", action=on_off, default=False,
                   help="with --shift_mode online: shift each training batch as one stream, so every clip but the "
                   "first carries the previous clip's segments in its shift buffers, as a window does when "
                   "streaming (tools/stream.py); off by default: each clip starts from an empty history")
    g.add_argument("--temporal_pool", action=on_off, default=False, help="halve the segments after layer1")
    g.add_argument("--pretrain", default="imagenet", help="backbone initialisation: imagenet (torchvision's "
                   "file in the torch cache; nothing is downloaded), a .pth path, or none (random)")
    g.add_argument("--tune_from", default=None, help="start from another run's checkpoint (e.g. Kinetics); "
                   "the classifier is left out when the class count differs (default: none)")
    g.add_argument("--fc_lr5", action=on_off, default=None, help="5x/10x learning rate for the classifier's "
                   "weights/biases; default as published: on unless --tune_from names this dataset's checkpoint")
    g.add_argument("--no_partialbn", "--npb", dest="no_partialbn", action="store_true", default=True,
                   help="train every BatchNorm (the default, as the released models were trained)")
    g.add_argument("--partialbn", dest="no_partialbn", action="store_false",
                   help="freeze every BatchNorm but the first (TSN's partial BN; off by default)")
    g.add_argument("--freeze-bn", dest="freeze_bn", action=on_off, default=False,
                   help="keep every BatchNorm in eval mode (running statistics; affine parameters still learn)")
    g.add_argument("--sync_bn", action=on_off, default=False, help="SyncBatchNorm across processes (CUDA only)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=120, help="number of epochs (the published scripts pass 80 "
                   "for Lite/PA and 50 for RGB)")
    g.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=128,
                   help="batch size PER PROCESS; the total is batch-size x processes (x --iter-size). Published "
                   "rule: lr 0.01 for a total of 64, linear in the total")
    g.add_argument("-i", "--iter-size", dest="iter_size", type=int, default=1,
                   help="gradient accumulation: one optimizer step every iter-size batches")
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=0.001,
                   help="base learning rate (the published scripts pass 0.01 for a total batch of 64)")
    g.add_argument("--lr_type", choices=LR_TYPES, default="step", help="step: x0.1 at each --lr_steps epoch; "
                   "cos: cosine from lr to 0 over --epochs; both evaluated at every step")
    g.add_argument("--lr_steps", type=float, nargs="+", default=[50, 100],
                   help="epochs of the x0.1 decays (step; the published scripts pass 30 60, or 20 40 for RGB)")
    g.add_argument("--warmup", type=float, default=0.0, help="epochs of linear learning-rate warm-up")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float, default=1e-4,
                   help="weight decay (1e-4: the value the published code used, whatever its help text said)")
    g.add_argument("--clip-gradient", "--gd", dest="clip_gradient", type=float, default=20.0,
                   help="clip the gradient's total norm at this value; 0 turns clipping off")
    g.add_argument("--loss_type", choices=("nll",), default="nll", help="cross-entropy (the only published choice)")

    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N; under "
                   "torchrun each process takes cuda:LOCAL_RANK")
    g.add_argument("--amp", action=on_off, default=False, help="mixed precision: bfloat16 on CPU, float16 with "
                   "a gradient scaler on CUDA")
    g.add_argument("--channels_last", action=on_off, default=False, help="channels-last memory format")
    g.add_argument("--zero_init_residual", action=on_off, default=False,
                   help="training from scratch (--pretrain none, ResNets): the last BatchNorm of every residual "
                   "block starts at zero, so each block starts as the identity (steadier first steps; on the "
                   "quickstart's 15-epoch runs its effect was within the run-to-run spread: docs/TRAINING.md)")
    g.add_argument("--trim_small_maps", action=on_off, default=False,
                   help="convolutions on maps smaller than their kernel (tiny inputs, e.g. 28x28 leaves layer4 "
                   "at 1x1) skip the taps that only meet padding: the same outputs and gradients, much less work "
                   "on AVX2 CPUs; nothing changes where every tap meets the input (224x224)")
    g.add_argument("--compile", action=on_off, default=False, help="torch.compile the model (falls back to "
                   "eager with a warning if compiling fails)")
    g.add_argument("--dist-timeout", dest="dist_timeout", type=float, default=DEFAULT_DIST_TIMEOUT_MINUTES,
                   help="minutes a collective may wait for the other torchrun processes before the run stops "
                   "naming the process waited on (a stopped or hung peer)")
    g.add_argument("--seed", type=int, default=0, help="seed of the model init, sample order and augmentation")
    g.add_argument("--deterministic", action=on_off, default=False, help="deterministic kernels; with it a "
                   "resumed run reproduces an uninterrupted one bit for bit on CPU")
    g.add_argument("--eval-freq", "-ef", dest="eval_freq", type=int, default=1,
                   help="validate every N epochs and after the last (the best checkpoint is chosen among these)")
    g.add_argument("--print-freq", "-p", dest="print_freq", type=int, default=20, help="log every N batches")
    g.add_argument("--root_log", default="log", help="parent of the run folder (log, args.json, tensorboard)")
    g.add_argument("--root_model", default="checkpoint", help="parent of the checkpoint folder")
    g.add_argument("--store_name", default=None, help="run name; default PAN_<modality>_<dataset>_<arch>"
                   "[_shift8_blockres][_tpool]_<consensus>_segment<T>_e<epochs>[_<pretrain>][_<lr_type>][_dense]"
                   "[_<suffix>], as published (pretrain only when not imagenet, lr_type only when not step)")
    g.add_argument("--suffix", default=None, help="appended to the default store_name (default: none)")
    g.add_argument("--tensorboard", action=on_off, default=True, help="write tensorboardX scalars")

    g = p.add_argument_group("checkpoints and reliability")
    g.add_argument("--resume", default="", help=f"checkpoint to continue from; '{RESUME_AUTO}' = this run's "
                   "latest (falling back to the previous one if corrupt; a fresh start if none); default: none")
    g.add_argument("-e", "--evaluate", action="store_true", help="only validate the --resume/--tune_from model")
    g.add_argument("--start-epoch", dest="start_epoch", type=int, default=0,
                   help="first epoch when not resuming (the checkpoint's epoch wins when resuming)")
    g.add_argument("--save-every", dest="save_every", type=int, default=0,
                   help="also checkpoint every N batches within an epoch (0: only at epoch ends)")
    g.add_argument("--allow-resume-change", dest="allow_resume_change", action=on_off, default=False,
                   help="resume even if world size, batch size or the training list differ from the checkpoint's")
    g.add_argument("--max-bad-fraction", dest="max_bad_fraction", type=float, default=0.001,
                   help="abort when more than this share of the training samples seen failed to load "
                   "(judged once 1/fraction samples have been seen)")
    g.add_argument("--max-bad-in-row", dest="max_bad_in_row", type=int, default=10,
                   help="abort after this many failed sample loads in a row")
    g.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print the resolved run (arguments after their side effects, store_name, model "
                   "configuration, parameter groups, learning rate per epoch) as JSON on stdout and exit; "
                   "reads no data and writes nothing")

    g = p.add_argument_group("published flags without effect here")
    g.add_argument("--gpus", nargs="+", type=int, default=None,
                   help="ignored with a warning: pick devices with --device, CUDA_VISIBLE_DEVICES and torchrun")
    g.add_argument("--img_feature_dim", type=int, default=256, help="unused by PAN (as in the published code)")
    g.add_argument("--k", type=int, default=3, help="unused by PAN (as in the published code)")
    g.add_argument("--snapshot_pref", default="", help="unused by PAN (as in the published code)")
    g.add_argument("--flow_prefix", default="", help="unused: the Flow modality is not supported")
    g.add_argument("--non_local", action="store_true", help="refused: non-local blocks are not implemented")
    # test_models.py's (published) name of the crop size, and the tools' names of the LMDB store.
    return add_aliases(p, {"--input_size": "--crop_size", "--lmdb_path": "--lmdb"})


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Apply the published side effects of the arguments, in place, and return ``args``.

    * ``--base TSM`` switches the temporal shift on unless ``--no-shift`` says
      otherwise (the published ``main()`` did so, and the published scripts
      rely on it); ``--base TSN`` keeps it off. Unlike the published code,
      an explicit ``--shift_div``/``--shift_place`` is kept, not reset to 8/blockres.
    * ``store_name`` gets the published default when none is given.
    """
    args.shift = shift_enabled(args)
    args.store_name = args.store_name or default_store_name(args)
    return args


def shift_enabled(args: argparse.Namespace) -> bool:
    """``--shift``/``--no-shift`` when given, else on exactly for ``--base TSM`` (the published rule)."""
    return args.base == "TSM" if args.shift is None else bool(args.shift)


def default_store_name(args: argparse.Namespace) -> str:
    """The published run name, e.g. ``PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80``."""
    arch = args.arch
    if shift_enabled(args):
        arch += f"_shift{args.shift_div}_{args.shift_place}"
    if args.temporal_pool:
        arch += "_tpool"
    name = "_".join(["PAN", args.modality, args.dataset, arch, args.consensus_type,
                     f"segment{args.num_segments}", f"e{args.epochs}"])
    if args.pretrain != "imagenet":
        # The published code appended the value as is; a weights file contributes its stem, so the
        # run name stays one folder name.
        name += "_" + os.path.basename(str(args.pretrain)).split(".")[0]
    if args.lr_type != "step":
        name += f"_{args.lr_type}"
    if args.dense_sample:
        name += "_dense"
    if args.suffix:
        name += f"_{args.suffix}"
    return name


def check_args(args: argparse.Namespace) -> None:
    """Refuse combinations that cannot work, before anything is loaded (:class:`UsageError`)."""
    if args.non_local:
        raise UsageError("--non_local: non-local blocks are not implemented in PAN")
    if args.shift and args.base == "TSN":
        raise UsageError("--shift needs --base TSM (TSN has no temporal shift)")
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--iter-size", args.iter_size, 1),
                             ("--epochs", args.epochs, 1), ("--num_segments", args.num_segments, 1),
                             ("--workers", args.workers, 0), ("--save-every", args.save_every, 0),
                             ("--max-bad-in-row", args.max_bad_in_row, 1), ("--eval-freq", args.eval_freq, 1)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.train_history and (args.shift_mode != "online" or args.shift is False or args.base == "TSN"):
        raise UsageError("--train_history needs a one-way temporal shift (--shift --shift_mode online): it feeds "
                         "each clip the previous clip's segments through the shift buffers")
    if args.crop_size < 1:
        raise UsageError(f"--crop_size must be >= 1 pixel, got {args.crop_size}")
    if args.scale_size is not None and args.scale_size < args.crop_size:
        raise UsageError(f"--scale_size {args.scale_size} is below --crop_size {args.crop_size}: validation "
                         "resizes the shorter side to scale_size, then crops crop_size from it")
    if not 0.0 <= args.dropout < 1.0:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.temporal_pool and (not args.arch.startswith("resnet") or args.num_segments % 2):
        raise UsageError(f"--temporal_pool needs a ResNet and an even --num_segments, got --arch {args.arch} "
                         f"--num_segments {args.num_segments}")
    if MODALITIES[args.modality].uses_pa and args.data_length < 2:
        raise UsageError(f"--data_length must be >= 2 for {args.modality} (PA compares consecutive frames), "
                         f"got {args.data_length}")
    if args.resume and args.resume != RESUME_AUTO and os.path.isdir(args.resume):
        raise UsageError(f"--resume {args.resume} is a folder: give a checkpoint file in it (e.g. "
                         f"{os.path.join(args.resume, 'ckpt.pth.tar')}), or --resume auto for this run's latest")
    if not args.dist_timeout > 0:
        raise UsageError(f"--dist-timeout must be > 0 minutes, got {args.dist_timeout}")
    if not 0.0 <= args.max_bad_fraction < 1.0:
        raise UsageError(f"--max-bad-fraction must be in [0, 1), got {args.max_bad_fraction}")
    if args.save_every and args.save_every % args.iter_size:
        raise UsageError(f"--save-every {args.save_every} must be a multiple of --iter-size {args.iter_size} "
                         "(a checkpoint cannot hold half-accumulated gradients)")
    if args.evaluate and not (args.resume or args.tune_from):
        raise UsageError("--evaluate needs a model: give --resume or --tune_from")
    if args.lr_type == "step" and sorted(args.lr_steps) != list(args.lr_steps):
        raise UsageError(f"--lr_steps must be increasing, got {args.lr_steps}")
