"""Divergence is caught from the first step and reported in one line.

- A non-finite loss or gradient is flagged on the device every step (no sync) and read on the
  first step and at the sync points (every step on a single CPU process): the run stops at the
  step where it happened.
- The loss-rise rule: an epoch (or a 50-step window) whose mean loss exceeds
  ``10 x |first loss| + number of classes`` has diverged; ``--lr 1e6`` on a tiny real run is
  caught at the end of its first epoch (the loss stays finite there: the logits saturate).
- ``fit`` writes ``metrics.json`` with status ``diverged`` and a ``failure`` {reason, epoch,
  step} and raises ``TrainingDiverged``; the entry point prints one ``error:`` line, exit code 2.
- A GradScaler's skipped steps (fp16, inf gradients) are not divergence; a normal run is not
  flagged.
"""

from __future__ import annotations

import importlib
import json
import math
import pickle

import pytest
import torch

from pu_mlc.config import TrainConfig
from pu_mlc.engine import fit
from pu_mlc.engine.step import DivergenceWatch, loss_rise_limit
from pu_mlc.errors import ConfigError, PUMLCError, TrainingDiverged
from engine_helpers import one_torch_thread, small_config  # noqa: F401 (autouse fixture)
from test_entry_errors import TINY, assert_refused, train

recipe_module = importlib.import_module("pu_mlc.engine.recipe")


def metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


# --- the watch and the rule, alone --------------------------------------------------------------
def watched(*grads: float, check_gradients: bool = True) -> DivergenceWatch:
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in grads]
    for p, g in zip(params, grads):
        p.grad = torch.full((3,), g)
    return DivergenceWatch(params, torch.device("cpu"), check_gradients=check_gradients)


def test_a_finite_step_is_not_flagged():
    watch = watched(1.0, -2.0)
    for loss in (0.5, -3.0, 1e30):
        watch.observe(torch.tensor(loss))
    assert watch.poll() is None


def test_the_first_non_finite_loss_is_reported_with_its_step():
    watch = watched(1.0)
    for loss in (0.5, 0.4, math.nan, math.inf):
        watch.observe(torch.tensor(loss))
    reason, step = watch.poll()
    assert step == 3 and "loss" in reason and "nan" in reason


def test_non_finite_gradients_under_a_finite_loss_are_reported():
    watch = watched(1.0, math.inf)
    watch.observe(torch.tensor(0.5))
    reason, step = watch.poll()
    assert step == 1 and "gradients" in reason and "inf" in reason


def test_gradients_a_grad_scaler_skips_are_not_divergence():
    """fp16: the GradScaler skips steps with inf gradients and lowers its scale; not watched."""
    watch = watched(math.inf, math.nan, check_gradients=False)
    watch.observe(torch.tensor(0.5))
    assert watch.poll() is None
    watch.observe(torch.tensor(math.nan))               # but a non-finite loss still counts
    assert watch.poll() == ("the training loss is nan (non-finite)", 2)


def test_a_new_epoch_starts_clean_and_the_reference_loss_is_saved():
    watch = watched(1.0)
    watch.observe(torch.tensor(math.nan))
    watch.first_loss = 1.5
    watch.start_epoch()
    assert watch.poll() is None
    other = watched(1.0)
    other.load_state_dict(watch.state_dict())
    assert other.first_loss == 1.5 and watch.state_dict() == {"first_loss": 1.5}


def test_the_loss_rise_limit():
    assert loss_rise_limit(1.0, 10) == 20.0
    assert loss_rise_limit(-2.0, 80) == 100.0               # |first loss|: the PU loss has a sign
    assert loss_rise_limit(0.0, 5) == 5.0                   # a near-zero start keeps a margin


def test_training_diverged_is_a_user_error_that_survives_pickling():
    err = TrainingDiverged("the training loss is nan", 3, 17)
    assert isinstance(err, PUMLCError)
    back = pickle.loads(pickle.dumps(err))                  # Ray sends errors by pickle
    assert (back.reason, back.epoch, back.step, str(back)) == (err.reason, 3, 17, str(err))
    assert "epoch 3 step 17" in str(err) and "\n" not in str(err)


# --- fit ---------------------------------------------------------------------------------------
def test_a_huge_learning_rate_is_caught_in_the_first_epoch(coco_format_root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        fit(small_config(coco_format_root, out, lr=1e6, train_epochs=3))
    err = info.value
    assert err.epoch == 1 and err.step == 24 // 4           # the end of epoch 1
    assert "mean training loss over the epoch" in err.reason
    shown = metrics(out)
    assert shown["status"] == "diverged"
    assert shown["failure"]["reason"] == err.reason
    assert (shown["failure"]["epoch"], shown["failure"]["step"]) == (1, 6)
    assert shown["history"] == []                            # no epoch finished
    assert not (out / "checkpoints" / "last.pt").exists()
    assert "run diverged: " in (out / "train.log").read_text()


def test_a_normal_run_is_not_flagged(coco_format_root, tmp_path):
    result = fit(small_config(coco_format_root, tmp_path / "run", train_epochs=2))
    assert result["status"] == "finished" and "failure" not in result
    first = torch.load(tmp_path / "run" / "checkpoints" / "last.pt",
                       weights_only=True)["recipe"]["watch"]["first_loss"]
    limit = loss_rise_limit(first, 10)
    assert all(h["train_loss"] < limit for h in result["history"])


class NanLossAt:
    """Wraps ``compute_loss`` so the loss becomes NaN from training step ``step`` on."""

    def __init__(self, monkeypatch, step: int, gradient_only: bool = False):
        self.calls, self.step, self.gradient_only = 0, step, gradient_only
        self.real = recipe_module.compute_loss
        monkeypatch.setattr(recipe_module, "compute_loss", self)

    def __call__(self, *args, **kwargs):
        loss, logits = self.real(*args, **kwargs)
        self.calls += 1
        if self.calls >= self.step:
            loss = InfGradient.apply(loss) if self.gradient_only else loss * math.nan
        return loss, logits


class InfGradient(torch.autograd.Function):
    """Identity forward, infinite gradient backward: finite loss, non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


@pytest.mark.parametrize("step", [1, 4])
def test_a_non_finite_loss_stops_the_run_at_its_step(step, coco_format_root, tmp_path,
                                                     monkeypatch):
    patched = NanLossAt(monkeypatch, step)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        fit(small_config(coco_format_root, out))
    assert (info.value.epoch, info.value.step) == (1, step)
    assert info.value.reason == "the training loss is nan (non-finite)"
    assert patched.calls == step                            # not one step more
    assert metrics(out)["failure"] == {"reason": info.value.reason, "epoch": 1, "step": step,
                                       "message": str(info.value)}


def test_non_finite_gradients_stop_the_run_at_the_first_step(coco_format_root, tmp_path,
                                                             monkeypatch):
    NanLossAt(monkeypatch, 1, gradient_only=True)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        fit(small_config(coco_format_root, out))
    assert info.value.step == 1 and "gradients are non-finite" in info.value.reason
    assert metrics(out)["status"] == "diverged"


def test_a_run_that_fails_otherwise_is_recorded_as_failed(coco_format_root, tmp_path,
                                                          monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory\n(second line)")

    monkeypatch.setattr(recipe_module, "compute_loss", broken)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        fit(small_config(coco_format_root, out))
    assert metrics(out)["status"] == "failed"
    assert metrics(out)["failure"] == {"reason": "RuntimeError: out of memory (second line)",
                                       "epoch": 1, "step": None}
    # a launcher that may run it again (a search's trial) gets a provisional word, same reason
    again = tmp_path / "attempt"
    with pytest.raises(RuntimeError):
        fit(small_config(coco_format_root, again), failure_is_final=False)
    assert metrics(again)["status"] == "attempt_failed"
    assert metrics(again)["failure"] == metrics(out)["failure"]


# --- the entry point ---------------------------------------------------------------------------
def test_the_entry_point_prints_one_line_for_a_diverged_run(coco2014_root, tmp_path):
    out = tmp_path / "out"
    proc = train([coco2014_root, "--dataset=COCO2014", *TINY, "--lr=1e6",
                  f"--output-dir={out}"], cwd=tmp_path)
    line = assert_refused(proc, "training diverged at epoch 1 step", "mean training loss",
                          "lower --lr")
    assert proc.returncode == 2 and line.startswith("error: ")
    assert metrics(out)["status"] == "diverged"


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_learning_rate_is_refused_by_the_config(value, coco2014_root, tmp_path):
    with pytest.raises(ConfigError):
        TrainConfig(data=str(coco2014_root), lr=float(value))
    out = tmp_path / "out"
    proc = train([coco2014_root, "--dataset=COCO2014", *TINY, f"--lr={value}",
                  f"--output-dir={out}"], cwd=tmp_path)
    assert_refused(proc, "lr")
    assert not out.exists()
