"""The trainable-state EMA equals the whole-state EMA; the prefetcher keeps order and errors."""

import numpy as np
import pytest
import torch
from timm.utils import ModelEmaV3

from pu_mlc.engine.ema import TrainableStateEma
from pu_mlc.engine.prefetch import DevicePrefetcher
from pu_mlc.models import build_model


def _small_model():
    torch.manual_seed(0)
    wv = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    return build_model("resnet18", 5, word_vectors=wv, adjacency=np.eye(5, dtype=np.float32))


def test_ema_of_trainable_tensors_equals_the_published_whole_state_ema():
    model = _small_model()
    model.train()
    ours, whole = TrainableStateEma(model, decay=0.9), ModelEmaV3(model, decay=0.9)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    x = torch.randn(2, 3, 64, 64)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        ours.update(model)
        whole.update(model)
    a, b = ours.module.state_dict(), whole.module.state_dict()
    assert a.keys() == b.keys()
    changed = 0
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-6, atol=1e-7), key
        changed += int(not torch.equal(a[key], model.state_dict()[key]))
    assert changed > 0            # the EMA really lags the live model on trainable tensors


def test_prefetcher_yields_every_batch_in_order_on_the_device():
    batches = [(torch.full((2,), float(i)), torch.tensor([i])) for i in range(7)]
    out = list(DevicePrefetcher(batches, lambda b: (b[0] * 2, b[1]), torch.device("cpu")))
    assert [int(t.item()) for _, t in out] == list(range(7))
    assert all(torch.equal(x, torch.full((2,), 2.0 * i)) for i, (x, _) in enumerate(out))


def test_prefetcher_reraises_errors_of_the_background_thread():
    def broken(batch):
        if int(batch) == 3:
            raise ValueError("bad batch 3")
        return batch, batch

    with pytest.raises(ValueError, match="bad batch 3"):
        list(DevicePrefetcher(range(6), broken, torch.device("cpu")))


def test_prefetcher_can_be_abandoned_mid_epoch_without_hanging():
    it = iter(DevicePrefetcher(range(100), lambda b: (b, b), torch.device("cpu"), depth=1))
    assert next(it) == (0, 0)
    it.close()                     # runs the generator's finally: the producer thread stops
