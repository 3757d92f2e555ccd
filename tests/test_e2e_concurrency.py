"""All studies at once vs one study after another, on the same space and the same 2 trial slots
of a real local Ray: the slot utilisation (sum of trial wall time / (slots x search wall time))
of both schedules is measured and printed for the record. No speed is asserted (a busy machine
decides); both schedules must run every trial and record the figures they are compared by."""

from __future__ import annotations

import json
import shutil

import pytest

from ray_helpers import run_entry, tiny_overrides
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e

# two studies whose trials have uneven lengths: 1 epoch vs 3 epochs
TASKS = "[{name: short, prob: 0.1, fixed: {train_epochs: 1, epochs: 1}}, " \
        "{name: long, prob: 0.5, fixed: {train_epochs: 3, epochs: 3}}]"


def _search(coco_format_root, storage, name: str, concurrent_studies) -> dict:
    proc = run_entry(["search", "--space", "tests/spaces/pu_only.yaml", "--no-export",
                      *tiny_overrides(coco_format_root, storage, name,
                                      **{"tasks": TASKS, "budget.trials_per_task": 3,
                                         "budget.max_concurrent_trials": 2,
                                         "budget.concurrent_studies": concurrent_studies,
                                         "resources.num_workers": 1,
                                         "scheduler.type": "none"})],
                     timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((storage / name / "summary.json").read_text())
    shutil.rmtree(storage / name / "ray_train", ignore_errors=True)     # ~1 GB of checkpoints
    for ckpt in (storage / name / "trials").rglob("*.pt"):
        ckpt.unlink()
    return summary


def test_slot_utilisation_of_concurrent_and_one_after_another_schedules(coco_format_root,
                                                                        tmp_path):
    figures = {}
    for name, studies_at_once in (("concurrent", "null"), ("sequential", 1)):
        summary = _search(coco_format_root, tmp_path / name, name, studies_at_once)
        assert summary["slots"] == 2
        assert summary["trials"]["trials"] == summary["trials"]["finished"] == 6
        trial_seconds = sum(t["seconds"] for s in summary["studies"].values()
                            for t in s["search"]["trial_list"])
        assert summary["trial_seconds"] == pytest.approx(trial_seconds)
        assert summary["slot_utilisation"] == pytest.approx(
            trial_seconds / (2 * summary["wall_seconds"]))
        assert 0 < summary["slot_utilisation"] <= 1
        figures[name] = summary
    for name, s in figures.items():
        print(f"{name}: slot utilisation {100 * s['slot_utilisation']:.1f}% "
              f"(trial time {s['trial_seconds']:.0f} s, wall {s['wall_seconds']:.0f} s, "
              f"2 slots)")
