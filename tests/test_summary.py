"""Summary numbers against what the tutorials print (and what Keras would print)."""

import pytest
import torch

from cnnlab import build_model, model_summary
from cnnlab.cli import main


def test_seed_mnist_cnn_matches_the_tutorial():
    s = model_summary(build_model("seed-mnist"))
    first = s.rows[0]
    assert (first.name, first.kind, first.output_shape, first.params) == ("conv2d", "Conv2D", (26, 26, 32), 320)
    assert [r.output_shape for r in s.rows] == [(26, 26, 32), (13, 13, 32), (11, 11, 64), (5, 5, 64), (1600,),
                                                (64,), (10,)]
    assert [r.params for r in s.rows] == [320, 0, 18496, 0, 0, 102464, 650]
    assert (s.total, s.trainable, s.non_trainable) == (121_930, 121_930, 0)


def test_seed_003_shape_tracing_cnn():
    s = model_summary(build_model("seed-shapes"))
    assert [r.output_shape for r in s.rows] == [(26, 26, 16), (13, 13, 16), (11, 11, 32), (5, 5, 32), (3, 3, 64),
                                                (576,), (128,), (10,)]
    assert s.total == 98_442


def test_cifar10_cnns():
    # TensorFlow's CNN tutorial (three conv layers) prints 122,570; seed 004 as written has two conv layers.
    assert model_summary(build_model("tf-cifar10")).total == 122_570
    seed = model_summary(build_model("seed-cifar10"))
    assert seed.total == 896 + 18_496 + (6 * 6 * 64 * 64 + 64) + 650 == 167_562
    assert seed.rows[-1].output_shape == (10,)


def test_batchnorm_cifar10_cnn_counts_moving_statistics_as_non_trainable():
    s = model_summary(build_model("seed-cifar10-bn"))
    bn_channels = 32 + 32 + 64 + 64 + 128 + 128 + 256
    assert s.total == 816_938
    assert s.non_trainable == 2 * bn_channels == 1_408
    assert s.trainable == 816_938 - 1_408
    assert s.rows[0].output_shape == (32, 32, 32) and s.rows[1].params == 4 * 32  # gamma, beta, mean, variance


def test_lenet5_has_about_60k_parameters():
    s = model_summary(build_model("lenet5"))
    assert s.total == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    assert s.rows[0].output_shape == (28, 28, 6)


def test_frozen_weights_are_non_trainable():
    model = build_model("seed-mnist")
    for p in model[0].parameters():
        p.requires_grad_(False)
    s = model_summary(model)
    assert (s.total, s.trainable, s.non_trainable) == (121_930, 121_930 - 320, 320)


def test_summary_of_torchvision_model_reports_leaf_layers():
    model = build_model("resnet50", (32, 32, 3))
    s = model_summary(model, (32, 32, 3))
    assert s.rows[0].name == "conv1" and s.rows[0].output_shape == (16, 16, 64)
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert s.total == sum(p.numel() for p in model.parameters()) + stats
    assert s.non_trainable == stats and sum(r.params for r in s.rows) == s.total


@pytest.mark.parametrize("name", ["seed-mnist", "seed-cifar10-bn", "resnet-small"])
def test_summary_shapes_equal_a_real_forward_pass(name):
    model = build_model(name)
    s = model_summary(model)
    h, w, c = model.image_shape
    x = torch.zeros(1, c, h, w)
    shapes = []
    with torch.no_grad():
        for layer in model.eval():
            x = layer(x)
            shapes.append(tuple(x.shape[1:]) if x.dim() == 2 else (x.shape[2], x.shape[3], x.shape[1]))
    assert [r.output_shape for r in s.rows] == shapes


def test_print_fn_and_cli_print_the_table(capsys):
    lines = []
    model_summary(build_model("seed-mnist"), print_fn=lines.append)
    assert "Total params: 121,930" in lines[0]
    assert main(["summary", "seed-mnist"]) == 0
    out = capsys.readouterr().out
    assert "conv2d (Conv2D)" in out and "(None, 26, 26, 32)" in out and "Total params: 121,930" in out
    assert main(["summary", "seed-cifar10-bn"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 816,938" in out and "Non-trainable params: 1,408" in out
    assert main(["summary", "seed-mnist", "--input-shape", "32", "32", "3"]) == 0
    assert "(None, 30, 30, 32)" in capsys.readouterr().out


def test_a_huge_input_is_summarized_without_allocating_the_model(capsys):
    # seed-mnist at 4000x4000: flatten 998 * 998 * 64, so the first Dense holds 4.08 billion weights (16 GB).
    # Hand count: 320 + 18,496 + (63,744,256 * 64 + 64) + 650 = 4,079,651,914. Before: a 16 GB allocation.
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["summary", "seed-mnist", "--input-shape", "4000", "4000", "1"]) == 0
    assert "Total params: 4,079,651,914" in capsys.readouterr().out
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000  # KB: under 1 GB more
