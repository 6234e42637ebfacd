"""--seed with --deterministic: two CPU runs give bit-identical weights (the CPU's default precision)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from cnnlab.config import TrainConfig
from cnnlab.jobs import train_run
from cnnlab.models.zoo import build_model


def test_two_deterministic_runs_give_bit_identical_weights(tmp_path):
    weights = []
    try:
        for name in ("a", "b"):
            config = TrainConfig(model="fast-cnn", batch_size=256, epochs=1, seed=11, deterministic=True,
                                 augment="rotate=10,shift=0.1", run_dir=str(tmp_path / name), tensorboard=False)
            train_run(config, verbose=0)
            assert torch.are_deterministic_algorithms_enabled()
            weights.append(load_file(tmp_path / name / "model.safetensors"))
    finally:
        torch.use_deterministic_algorithms(False)  # the flag is process-wide: leave other tests as they were
    first, second = weights
    assert len(first) == 8 and first.keys() == second.keys()  # 2 conv + 2 dense layers, weight and bias each
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(11)  # what train_run seeds before building: the initial weights
    initial = build_model("fast-cnn", (28, 28, 1), 10).state_dict()
    assert not torch.equal(initial["conv2d.weight"], first["conv2d.weight"])  # it did train: equal, not unchanged
