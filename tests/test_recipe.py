"""One recipe, one training step: ``fit`` and the benchmarks run the same ``Recipe.train_step``.

The benchmark's "ours" path must time the code users run, not a copy of it: both are checked to
call the one method (counted through a wrapper while a real run and a real benchmark step run),
and the benchmark's recipe is built from the published ``TrainConfig`` defaults, not from
constants of its own.
"""

from __future__ import annotations

import torch

from bench import common
from engine_helpers import one_torch_thread, small_config  # noqa: F401  (autouse fixture)
from pu_mlc.config import TrainConfig
from pu_mlc.engine import Recipe, fit
from pu_mlc.losses import PULoss


def count_steps(monkeypatch) -> list[Recipe]:
    """Every call of ``Recipe.train_step`` from now on, as the recipe it was called on."""
    calls: list[Recipe] = []
    real = Recipe.train_step

    def counted(self, x, targets, generator=None):
        calls.append(self)
        return real(self, x, targets, generator)

    monkeypatch.setattr(Recipe, "train_step", counted)
    return calls


def test_fit_trains_every_batch_with_the_recipe_step(coco_format_root, tmp_path, monkeypatch):
    calls = count_steps(monkeypatch)
    result = fit(small_config(coco_format_root, tmp_path / "run", train_epochs=2))
    assert len(calls) == sum(h["steps"] for h in result["history"]) > 0
    assert len({id(r) for r in calls}) == 1                  # one recipe for the whole run


def test_the_benchmark_ours_path_runs_that_same_step_built_from_the_published_config(
        monkeypatch):
    calls = count_steps(monkeypatch)
    master = common.build_master("tf_efficientnet_lite0", 10, lgc=True, seed=0, calib_size=32,
                                 calib_batch=2)
    device = torch.device("cpu")
    x, targets = common.synthetic_batch(2, 32, 10, seed=0)

    ours = common.Trainer(master, common.ours_spec(device), device, steps_per_epoch=10)
    loss = ours.step(x, targets)
    assert len(calls) == 1 and calls[0] is ours.recipe and torch.isfinite(loss)

    published = TrainConfig()
    recipe = ours.recipe
    assert recipe.optimizer.defaults["lr"] == published.lr
    assert recipe.optimizer.defaults["weight_decay"] == published.weight_decay
    assert recipe.ema.decay == published.ema and recipe.mixup_alpha == published.mixup_alpha
    assert isinstance(recipe.criterion, PULoss)
    assert (recipe.criterion.alpha, recipe.criterion.gamma) == (published.alpha, published.gamma)
    assert recipe.scheduler.total_steps == published.epochs * 10

    reference = common.Trainer(master, common.published_spec(device), device, steps_per_epoch=10)
    reference.step(x, targets)
    assert len(calls) == 1            # the published formulation is the benchmark's reference,
    assert reference.recipe is None   # kept apart from the engine on purpose


def test_the_recipe_builds_the_configured_loss_with_the_configs_asl_parameters():
    from pu_mlc.engine.distributed import DistContext
    from pu_mlc.engine.precision import resolve_precision
    from pu_mlc.losses import AsymmetricLoss

    class Tiny(torch.nn.Linear):
        def trainable_parameters(self):
            return list(self.parameters())

    device = torch.device("cpu")
    cfg = TrainConfig(data="/d", loss="asl", prob=0.5, asl_gamma_neg=2.0, asl_gamma_pos=0.0,
                      asl_clip=0.1, device="cpu")
    recipe = Recipe.build(cfg, Tiny(3, 4), 5, DistContext(0, 1, 0, device),
                          resolve_precision("fp32", device))
    g = torch.Generator().manual_seed(0)
    z, targets = torch.randn(6, 4, generator=g), torch.randint(-1, 2, (6, 4), generator=g)
    expected = AsymmetricLoss(gamma_neg=2.0, gamma_pos=0.0, clip=0.1)(z, targets)
    assert isinstance(recipe.criterion, AsymmetricLoss)
    torch.testing.assert_close(recipe.criterion(z, targets), expected, rtol=0, atol=0)
    assert not torch.allclose(AsymmetricLoss()(z, targets), expected)
