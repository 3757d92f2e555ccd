"""Faults inside a trial, through a real local search: no trial is lost, none is miscounted.

- A Ray Train DDP worker SIGKILLed mid-run: Ray Train restarts the worker group
  (``resources.max_failures`` 1, the default) from the trial's last checkpoint, and the trial
  ends with the same metrics as an unkilled twin (same config, run right after it).
- A trial whose training diverges (lr 1e6): the search goes on; Optuna records the trial as
  COMPLETE with the worst score and the reason, so the sampler moves away from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from ray_helpers import (PYTHON, REPO, cmdline, descendants, new_marker,
                         registered_checkpoint_epoch, run_entry, search_env, stop_marked,
                         tiny_overrides)
from tune.export import collect_trials
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e
TASK = "mlc_pl10"
#: Per-epoch fields that measure time, or say how the epoch was reached: not results.
NOT_RESULTS = ("seconds", "per_second", "resumed_from_checkpoint")


def _metrics(trial_dir: Path) -> dict:
    try:
        return json.loads((trial_dir / "metrics.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _results(record: dict) -> dict:
    return {k: v for k, v in record.items() if not any(n in k for n in NOT_RESULTS)}


def _train_workers(root: int) -> list[int]:
    return [pid for pid in descendants(root) if cmdline(pid).startswith("ray::RayTrainWorker")]


def test_a_killed_ddp_worker_costs_no_trial_and_changes_no_result(coco_format_root, tmp_path):
    storage = tmp_path / "experiments"
    exp = storage / "fault"
    args = ["search", "--space", "tests/spaces/pu_only.yaml", "--no-export",
            *tiny_overrides(coco_format_root, storage, "fault",
                            **{"tasks": f"[{{name: {TASK}, prob: 0.1}}]",
                               "scheduler.type": "none", "budget.trials_per_task": 2,
                               # one possible value: both trials run the same configuration
                               "search": "{ema: {type: choice, values: [0.9997]}}",
                               "first_trial": "{ema: 0.9997}",
                               "fixed.train_epochs": 4, "fixed.epochs": 4})]
    marker = new_marker()
    log = tmp_path / "search.log"
    killed, at_epoch, registered_epoch = None, None, None
    with log.open("w") as out:
        driver = subprocess.Popen([PYTHON, str(REPO / "train_entry.py"), *args], cwd=REPO,
                                  env=search_env(marker), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + HANG_GUARD_S
            while driver.poll() is None and time.time() < deadline and killed is None:
                dirs = sorted((exp / "trials" / TASK).glob("*")) if (exp / "trials").exists() \
                    else []
                history = _metrics(dirs[0]).get("history", []) if len(dirs) == 1 else []
                # kill while epoch 3 (or 4) runs, once Ray Train's controller has registered a
                # checkpoint (before that, a restart rightly begins from scratch)
                registered = registered_checkpoint_epoch(exp, TASK, dirs[0].name) \
                    if 2 <= len(history) < 4 else None
                workers = _train_workers(driver.pid) if registered else []
                if workers:
                    killed, at_epoch, registered_epoch = workers[-1], len(history), registered
                    os.kill(killed, signal.SIGKILL)
                time.sleep(0.2)
            rc = driver.wait(timeout=HANG_GUARD_S)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            left = stop_marked(marker)
    text = log.read_text()
    assert killed is not None, "the first trial ended before a worker could be killed\n" + \
        text[-3000:]
    assert rc == 0, text[-4000:]
    assert not left, [(pid, cmdline(pid)) for pid in left]

    trials = sorted(collect_trials(exp), key=lambda t: t.started)
    assert len(trials) == 2 and [t.status for t in trials] == ["finished", "finished"], trials
    first, twin = (_metrics(t.path) for t in trials)
    assert first["status"] == twin["status"] == "finished"
    assert first["config"] == {**twin["config"], "output_dir": first["config"]["output_dir"],
                               "tensorboard_dir": first["config"]["tensorboard_dir"]}
    # the killed trial went on from its checkpoint (one resumed epoch, after the kill), ...
    assert [h["epoch"] for h in first["history"]] == [1, 2, 3, 4]
    resumed = [h["epoch"] for h in first["history"] if h.get("resumed_from_checkpoint")]
    assert len(resumed) == 1 and registered_epoch + 1 <= resumed[0] <= at_epoch + 1, \
        (resumed, registered_epoch, at_epoch, text[-3000:])
    assert not any(h.get("resumed_from_checkpoint") for h in twin["history"])
    # ... and its results are the twin's, epoch by epoch and in the end
    assert [_results(h) for h in first["history"]] == [_results(h) for h in twin["history"]]
    assert first["result"] == twin["result"]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"]["finished"] == 2 and summary["trials"]["failed"] == 0


def test_a_diverged_trial_is_a_completed_bad_trial_for_optuna_and_the_search_goes_on(
        coco_format_root, tmp_path):
    storage = tmp_path / "experiments"
    exp = storage / "nan"
    space = yaml.safe_load((REPO / "tests" / "spaces" / "pu_only.yaml").read_text())
    del space["fixed"]["lr"]                    # searched here, from a range that diverges
    space["search"] = {"lr": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e6}}
    space["first_trial"] = {"lr": 1.0e6}
    (tmp_path / "nan.yaml").write_text(yaml.safe_dump(space))
    proc = run_entry(["search", "--space", str(tmp_path / "nan.yaml"), "--no-export",
                      *tiny_overrides(coco_format_root, storage, "nan",
                                      **{"tasks": f"[{{name: {TASK}, prob: 0.1}}]",
                                         "scheduler.type": "none",
                                         "budget.trials_per_task": 3,
                                         # 2 one-process slots: trials 1 and 2 overlap
                                         "budget.max_concurrent_trials": 2,
                                         "resources.num_workers": 1,
                                         "fixed.train_epochs": 2, "fixed.epochs": 2})],
                     timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    study = optuna.load_study(study_name=f"nan.{TASK}",
                              storage=f"sqlite:///{exp / 'optuna.sqlite3'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 3
    first = trials[0]
    assert first.params == {"lr": 1.0e6}
    assert first.state == optuna.trial.TrialState.COMPLETE and first.value == 0.0
    assert first.user_attrs.get("diverged") is True and first.user_attrs["diverged_reason"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials[1:])

    records = collect_trials(exp)
    diverged = [r for r in records if r.status == "diverged"]
    assert len(diverged) >= 1
    metrics = _metrics(min(diverged, key=lambda r: r.started).path)
    assert metrics["status"] == "diverged" and metrics["failure"]["reason"]
    assert metrics["config"]["lr"] == 1.0e6
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"]["diverged"] == len(diverged)
    assert summary["trials"]["trials"] == 3 and summary["trials"]["failed"] == 0
    assert f"{len(diverged)} diverged" in proc.stdout
