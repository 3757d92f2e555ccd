"""The output directory: ``--resume`` continues a run exactly, ``--overwrite`` replaces it, and
anything else leaves an earlier run alone (in-process; the command-line refusals are in
``test_entry_errors.py``)."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pu_mlc.config import TrainConfig
from pu_mlc.engine import fit
from pu_mlc.errors import ConfigError, OutputDirError
from engine_helpers import one_torch_thread, small_config  # noqa: F401 (autouse fixture)

fit_module = importlib.import_module("pu_mlc.engine.fit")


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def optimizer_steps(checkpoint: Path) -> set[int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {int(s["step"]) for s in state["recipe"]["optimizer"]["state"].values()}


def scalar_steps(logdir: Path, tag: str) -> list[int]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def hparams_tags(logdir: Path) -> set[str]:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return set(acc.PluginTagToContent("hparams"))


class Interrupt(RuntimeError):
    pass


@pytest.fixture(scope="module")
def straight_run(coco_format_root, module_tmp):
    """Reference: epochs 0 and 1 in one go."""
    out = module_tmp / "straight" / "run"
    return out, fit(small_config(coco_format_root, out, train_epochs=2))


def test_resume_extends_a_finished_run_as_if_it_had_never_stopped(coco_format_root, tmp_path,
                                                                  straight_run):
    straight_out, straight = straight_run
    out = tmp_path / "run"
    first = fit(small_config(coco_format_root, out, train_epochs=1))
    resumed = fit(small_config(coco_format_root, out, train_epochs=2, resume=True))

    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == first["history"][0]        # the first epoch is kept as is
    assert resumed["status"] == "finished"
    # the optimizer and the OneCycle position continued: same lr and step count as one run
    assert resumed["history"][1]["lr"] == straight["history"][1]["lr"]
    assert resumed["history"][1]["steps"] == straight["history"][1]["steps"]
    assert optimizer_steps(out / "checkpoints" / "last.pt") == \
        optimizer_steps(straight_out / "checkpoints" / "last.pt")
    # the config of the continued run is recorded; TensorBoard holds both epochs once
    assert TrainConfig.from_yaml(out / "config.yaml").train_epochs == 2
    assert scalar_steps(out / "tensorboard", "train/loss") == [1, 2]


def test_resume_after_an_interrupted_epoch_repeats_nothing(coco_format_root, tmp_path,
                                                           straight_run, monkeypatch):
    _, straight = straight_run
    out = tmp_path / "run"

    def stop_after_first_epoch(metrics, checkpoint):
        raise Interrupt("killed")

    cfg = small_config(coco_format_root, out, train_epochs=2)
    with pytest.raises(Interrupt):
        fit(cfg, reporter=stop_after_first_epoch)
    saved = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1
    shown = json.loads((out / "metrics.json").read_text())
    assert shown["status"] == "failed" and len(shown["history"]) == 1   # never left "running"
    assert shown["failure"]["reason"] == "Interrupt: killed"
    assert "_hparams_/session_end_info" not in hparams_tags(out / "tensorboard")

    seen = []
    real_one_epoch = fit_module.train_one_epoch
    monkeypatch.setattr(fit_module, "train_one_epoch",
                        lambda *a, **k: seen.append(a[3]) or real_one_epoch(*a, **k))
    resumed = fit(cfg.replace(resume=True))
    assert seen == [2]                                          # only epoch 2 was trained
    assert resumed["history"][0] == shown["history"][0]
    assert resumed["history"][1]["lr"] == straight["history"][1]["lr"]
    # the HParams session opened by the interrupted run is closed by the resumed one
    assert scalar_steps(out / "tensorboard", "train/loss") == [1, 2]
    assert {"_hparams_/experiment", "_hparams_/session_start_info",
            "_hparams_/session_end_info"} <= hparams_tags(out / "tensorboard")


def test_resume_with_different_settings_is_refused_and_changes_nothing(coco_format_root,
                                                                       straight_run):
    out, _ = straight_run
    before = snapshot(out)
    with pytest.raises(OutputDirError, match=r"lr: 0\.0001 -> 0\.001.*same flags"):
        fit(small_config(coco_format_root, out, train_epochs=2, resume=True, lr=1e-3))
    assert snapshot(out) == before


def test_resume_without_an_earlier_run_is_refused(coco_format_root, tmp_path):
    with pytest.raises(OutputDirError, match=r"--resume: no checkpoint at .*last\.pt"):
        fit(small_config(coco_format_root, tmp_path / "empty", resume=True))
    assert not (tmp_path / "empty").exists()


def test_resume_and_overwrite_together_are_refused(coco_format_root, straight_run):
    out, _ = straight_run
    before = snapshot(out)
    with pytest.raises(ConfigError, match="pick one"):
        fit(small_config(coco_format_root, out, resume=True, overwrite=True))
    assert snapshot(out) == before


def test_an_earlier_run_is_refused_without_a_flag(coco_format_root, straight_run):
    out, _ = straight_run
    before = snapshot(out)
    with pytest.raises(OutputDirError, match="--resume .* --overwrite"):
        fit(small_config(coco_format_root, out))
    assert snapshot(out) == before


def test_overwrite_replaces_the_earlier_run_and_nothing_else(coco_format_root, tmp_path):
    out = tmp_path / "run"
    fit(small_config(coco_format_root, out, train_epochs=2))
    old_events = sorted((out / "tensorboard").iterdir())
    (out / "notes.txt").write_text("mine")
    result = fit(small_config(coco_format_root, out, overwrite=True, head="linear"))
    assert [h["epoch"] for h in result["history"]] == [1]
    assert TrainConfig.from_yaml(out / "config.yaml").head == "linear"
    assert not any(p.exists() for p in old_events)              # stale curves are gone
    assert scalar_steps(out / "tensorboard", "train/loss") == [1]
    last = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1
    assert (out / "notes.txt").read_text() == "mine"            # not a run file: kept
