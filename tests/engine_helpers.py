"""Shared pieces of the engine tests: a small CPU run configuration and a one-thread fixture.

Importing ``one_torch_thread`` into a test module makes it that module's autouse fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pu_mlc.config import TrainConfig


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: CPU runs stay fast when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(data: Path, out: Path, **changes) -> TrainConfig:
    """Lite0 with its packaged weights at 32 px, one epoch, in-process loading, on the CPU."""
    base = dict(data=str(data), dataset="coco", model_name="tf_efficientnet_lite0",
                pretrained_model="builtin", scale_size=32, crop_size=32, batch_size=4,
                train_epochs=1, workers=0, device="cpu", prob=0.5, output_dir=str(out))
    base.update(changes)
    return TrainConfig(**base)
