"""A resumed run equals an uninterrupted one bit for bit (CPU), in every data pipeline.

Every random draw of an epoch is re-derived from (seed, rank, epoch) at its start (the shuffle,
each sample's crop and flip, the device transform's draws, MixUp, the global generators) and the
rest of the state is in ``last.pt``. Compared: the final ``last.pt`` (model, EMA, optimizer and
OneCycle state, selection) tensor by tensor with ``torch.equal``, ``best.pt``'s weights, and every
history record (loss, lr, mAPs, F1s, selection; not the timings). Runs: 3 epochs straight; 1 epoch
then ``resume=True`` to 3; and 3 epochs interrupted after epoch 2 by a reporter that raises, then
resumed. Pipelines: PIL in-process (workers=0), PIL in one loader process (workers=1), and the
tensor pipeline on the CPU. The controls show the comparison fails when it should: another seed,
or other augmentation draws in the resumed epochs only, give other weights.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch

from pu_mlc.engine import fit
from engine_helpers import one_torch_thread, small_config  # noqa: F401 (autouse fixture)

data_setup = importlib.import_module("pu_mlc.engine.data_setup")

EPOCHS = 3
PIPELINES = {
    "pil-in-process": dict(workers=0),
    "pil-one-loader-process": dict(workers=1),
    "tensor": dict(data_pipeline="tensor"),
}
#: Record fields that measure time (or say how the run went), not what it computed.
TIMING = {"train_seconds", "data_wait_seconds", "images_per_second", "eval_seconds",
          "checkpoint_seconds", "resumed_from_checkpoint"}


class Interrupt(RuntimeError):
    pass


def computed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def differences(a, b, where: str = "") -> list[str]:
    """Where two saved states differ (tensors: dtype, shape and every bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)) \
        else [where]


def final_state(out: Path) -> dict:
    last = load(out / "checkpoints" / "last.pt")
    best = load(out / "checkpoints" / "best.pt")
    return {"recipe": last["recipe"], "selection": last["selection"], "epoch": last["epoch"],
            "best_model": best["model"], "best_epoch": best["epoch"],
            "history": computed(last["history"])}


def assert_same_run(out: Path, result: dict, reference: tuple[Path, dict]) -> None:
    ref_out, ref_result = reference
    assert result["status"] == "finished"
    assert [h["epoch"] for h in result["history"]] == list(range(1, EPOCHS + 1))
    assert computed(result["history"]) == computed(ref_result["history"])
    assert result["result"] == ref_result["result"]
    diff = differences(final_state(out), final_state(ref_out))
    assert not diff, f"differs from the uninterrupted run at {diff[:10]}"


@pytest.fixture(scope="module")
def straight_runs(coco_format_root, module_tmp):
    """The uninterrupted 3-epoch run of each pipeline, made when first asked for."""
    runs: dict[str, tuple[Path, dict]] = {}

    def get(pipeline: str) -> tuple[Path, dict]:
        if pipeline not in runs:
            out = module_tmp / f"straight-{pipeline}" / "run"
            result = fit(small_config(coco_format_root, out, train_epochs=EPOCHS,
                                      **PIPELINES[pipeline]))
            runs[pipeline] = (out, result)
        return runs[pipeline]
    return get


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_resuming_after_one_epoch_equals_the_uninterrupted_run(pipeline, straight_runs,
                                                               coco_format_root, tmp_path):
    reference = straight_runs(pipeline)
    assert reference[1]["environment"]["data_pipeline"] == \
        ("tensor" if pipeline == "tensor" else "pil")
    out = tmp_path / "run"
    cfg = small_config(coco_format_root, out, **PIPELINES[pipeline])
    first = fit(cfg.replace(train_epochs=1))
    assert computed(first["history"]) == computed(reference[1]["history"][:1])
    resumed = fit(cfg.replace(train_epochs=EPOCHS, resume=True))
    assert resumed["history"][1].get("resumed_from_checkpoint") is True
    assert_same_run(out, resumed, reference)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_resuming_an_interrupted_run_equals_the_uninterrupted_run(pipeline, straight_runs,
                                                                  coco_format_root, tmp_path):
    reference = straight_runs(pipeline)
    out = tmp_path / "run"
    cfg = small_config(coco_format_root, out, train_epochs=EPOCHS, **PIPELINES[pipeline])

    def killed_after_epoch_2(metrics, checkpoint):
        if metrics["epoch"] == 2:
            raise Interrupt("killed after epoch 2")

    with pytest.raises(Interrupt):
        fit(cfg, reporter=killed_after_epoch_2)
    shown = json.loads((out / "metrics.json").read_text())
    assert shown["status"] == "failed" and len(shown["history"]) == 2
    assert shown["failure"] == {"reason": "Interrupt: killed after epoch 2", "epoch": 2,
                                "step": None}
    assert load(out / "checkpoints" / "last.pt")["epoch"] == 2

    resumed = fit(cfg.replace(resume=True))
    assert [h.get("resumed_from_checkpoint", False) for h in resumed["history"]] == \
        [False, False, True]
    assert_same_run(out, resumed, reference)


def test_the_number_of_loader_processes_does_not_change_a_run(straight_runs):
    """Each sample's augmentation is seeded from (seed, rank, epoch, position), not per worker."""
    (out0, in_process), (out1, one_worker) = (straight_runs("pil-in-process"),
                                              straight_runs("pil-one-loader-process"))
    assert computed(in_process["history"]) == computed(one_worker["history"])
    assert not differences(final_state(out0), final_state(out1))


# --- controls: the comparison does see a difference ------------------------------------------
def test_another_seed_gives_another_run(straight_runs, coco_format_root, tmp_path):
    reference = straight_runs("pil-in-process")
    out = tmp_path / "run"
    other = fit(small_config(coco_format_root, out, train_epochs=EPOCHS, seed=1))
    assert computed(other["history"]) != computed(reference[1]["history"])
    diff = differences(final_state(out), final_state(reference[0]))
    assert any(d.startswith("/recipe/model/") for d in diff), diff


def test_other_augmentation_draws_after_a_resume_give_another_run(straight_runs,
                                                                  coco_format_root, tmp_path,
                                                                  monkeypatch):
    """Only the crops/flips of the resumed epochs change (the shuffle, MixUp and everything
    else are the same): the comparison must notice, or it could not catch an augmentation
    stream that a resume fails to continue."""
    reference = straight_runs("pil-in-process")
    out = tmp_path / "run"
    cfg = small_config(coco_format_root, out)
    fit(cfg.replace(train_epochs=1))
    real = data_setup.derived_seed
    monkeypatch.setattr(data_setup, "derived_seed", lambda *parts: real(*parts, 12345))
    resumed = fit(cfg.replace(train_epochs=EPOCHS, resume=True))
    assert computed(resumed["history"])[0] == computed(reference[1]["history"])[0]
    assert [h["train_loss"] for h in resumed["history"][1:]] != \
        [h["train_loss"] for h in reference[1]["history"][1:]]
    diff = differences(final_state(out), final_state(reference[0]))
    assert any(d.startswith("/recipe/model/") for d in diff), diff
