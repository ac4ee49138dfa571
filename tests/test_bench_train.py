"""tools/bench_train.py: builds main.py's model from a main.py command line and reports clips/s per flag set.

No timing is checked here; the benchmark prints figures, the tests pin down what it runs.
"""

import argparse

import pytest
import torch

from tools import bench_train

TINY = ("synthetic Lite --arch resnet18 --num_segments 2 --crop_size 16 -b 2 --lr 0.01 --shift --VAP "
        "--pretrain none --seed 0")


def test_a_variant_is_a_set_of_main_py_fast_flags():
    assert bench_train.parse_variant("plain") == ()
    assert bench_train.parse_variant("amp,channels_last") == ("--amp", "--channels_last")
    with pytest.raises(argparse.ArgumentTypeError, match="'lr'"):
        bench_train.parse_variant("amp,lr")


def test_the_default_configuration_is_a_valid_main_py_command_line():
    from ops.train_args import get_args_parser

    args = get_args_parser().parse_args(bench_train.QUICKSTART_ARGS.split())
    assert (args.modality, args.arch, args.num_segments, args.crop_size, args.batch_size) == ("Lite", "resnet18", 8, 28, 16)


def test_every_variant_trains_the_same_initial_model(capsys):
    args = bench_train.get_args_parser().parse_args(
        ["--main-args", TINY, "--variant", "plain", "--variant", "channels_last", "--variant", "amp",
         "--steps", "1", "--repeats", "1", "--warmup", "0"])
    rates = bench_train.main(args)
    assert set(rates) == {"plain", "--channels_last", "--amp"}
    assert all(rate > 0 for rate in rates.values())
    out = capsys.readouterr().out
    assert "PAN Lite resnet18, 2 segments x 4 frames, 16x16, batch 2" in out
    assert "1.00x" in out  # the baseline against itself


def test_variants_start_from_equal_weights_and_take_the_same_first_step():
    from main import build_model
    from ops.train_args import get_args_parser

    main_args = get_args_parser().parse_args(TINY.split())
    torch.manual_seed(0)
    model = build_model(main_args, 12)
    plain = bench_train.Trainer(model, main_args, (), torch.device("cpu"))
    nhwc = bench_train.Trainer(model, main_args, ("--channels_last",), torch.device("cpu"))
    x = torch.randn(2, 2 * 4 * 3, 16, 16)
    labels = torch.tensor([0, 5])
    losses = []
    for trainer in (plain, nhwc):
        torch.manual_seed(1)  # the same dropout mask for both
        losses.append(trainer.step(x, labels))
    assert abs(losses[0] - losses[1]) < 1e-4
    for a, b in zip(plain.model.parameters(), nhwc.model.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)  # layouts round differently, not more
