"""A search whose driver is SIGKILLed twice (once mid-search, once mid-repeats) finishes with
``--resume`` twice: no trial is lost, duplicated or run again; the interrupted trials continue
from their last Ray Train checkpoint; the Optuna study and Tune agree on what ran."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import optuna
import pytest
import yaml

from ray_helpers import (PYTHON, REPO, cmdline, new_marker, registered_checkpoint_epoch,
                         run_entry, search_env, stop_marked, tiny_overrides)
from tune.export import collect_trials
from store_checks import check_readers_agree, optuna_trials
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e
EPOCHS = 4
TRIALS = 3
REPEATS = 2
STUDY = "mlc_pl10"


def _metrics(trial_dir: Path) -> dict:
    try:
        return json.loads((trial_dir / "metrics.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _history(trial_dir: Path) -> list[dict]:
    return _metrics(trial_dir).get("history", [])


def _is_repeat(trial_dir: Path) -> bool:
    try:
        return bool(yaml.safe_load((trial_dir / "config.yaml").read_text())["mask_seed"])
    except (FileNotFoundError, KeyError, TypeError):
        return False


def _trial_dirs(exp: Path) -> list[Path]:
    root = exp / "trials" / STUDY
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def _kill_when(args: list[str], ready: Callable[[], Optional[dict]]) -> dict:
    """Start the search, SIGKILL its driver and everything it started once ``ready()`` returns
    a snapshot; return the snapshot."""
    marker = new_marker()             # the processes of this search (driver and its own Ray)
    env = search_env(marker)
    # its private Ray's session folder goes under here (a killed driver cannot remove it)
    ray_tmp = tempfile.mkdtemp(prefix="pumlc-rt-", dir="/tmp")
    env["RAY_TMPDIR"] = ray_tmp
    driver = subprocess.Popen([PYTHON, str(REPO / "train_entry.py"), *args], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    snapshot = None
    deadline = time.time() + HANG_GUARD_S
    try:
        while time.time() < deadline and driver.poll() is None:
            snapshot = ready()
            if snapshot is not None:
                break
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)          # the driver and everything it started
        driver.wait()
        left = stop_marked(marker)      # its own Ray processes only, never another Ray's
        sessions = list(Path(ray_tmp).glob("pumlc-ray-*"))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert len(sessions) == 1, sessions      # the killed search's private Ray lived there
    assert not left, [(pid, cmdline(pid)) for pid in left]
    assert snapshot is not None, "the search ended before it could be interrupted"
    return snapshot


def _mid_stage(exp: Path, repeats: bool) -> Optional[dict]:
    """One trial of the stage finished and the next one has run 2..EPOCHS-1 epochs, with a
    checkpoint Ray Train's controller has registered (a restart continues from it)."""
    dirs = [d for d in _trial_dirs(exp) if _is_repeat(d) == repeats]
    done = [d for d in dirs if _metrics(d).get("status") == "finished"
            and len(_history(d)) == EPOCHS]
    running = [(d, registered_checkpoint_epoch(exp, STUDY, d.name)) for d in dirs
               if 2 <= len(_history(d)) < EPOCHS]
    running = [(d, epoch) for d, epoch in running if epoch is not None]
    if done and running and not repeats and not _told_optuna(exp, [d.name for d in done]):
        return None        # a search trial ends when Optuna is told: kill between trials only
    if done and running:
        trial, registered = running[0]
        return {"finished": {d.name: (d / "metrics.json").read_bytes()
                             for d in _trial_dirs(exp) if _metrics(d).get("status") == "finished"},
                "interrupted": trial.name, "before": _history(trial), "registered": registered}
    return None


def _told_optuna(exp: Path, trial_ids: list[str]) -> bool:
    """Whether the study's Optuna trials of these finished Tune trials are COMPLETE (the
    search's driver told Optuna; in the second or so before, a kill leaves the engine's
    ``finished`` beside Optuna's RUNNING, another interruption than the one tested here)."""
    try:
        trials = optuna_trials(exp, [f"resume.{STUDY}"]).get(f"resume.{STUDY}", [])
    except Exception:                     # the database is being created or written: later
        return False
    complete = {t["user_attrs"].get("ray_trial_id") for t in trials if t["state"] == "COMPLETE"}
    return set(trial_ids) <= complete


def _continued_from_checkpoint(exp: Path, snapshot: dict) -> None:
    after = _history(exp / "trials" / STUDY / snapshot["interrupted"])
    before = snapshot["before"]
    assert [h["epoch"] for h in after] == list(range(1, EPOCHS + 1))
    resumed = [h["epoch"] for h in after if h.get("resumed_from_checkpoint")]
    assert len(resumed) == 1 and snapshot["registered"] + 1 <= resumed[0] <= len(before) + 1, \
        (resumed, snapshot["registered"], len(before))
    for old in before[:resumed[0] - 1]:            # earlier epochs kept as they were, not re-run
        assert after[old["epoch"] - 1] == old


def test_a_search_killed_twice_loses_duplicates_and_reruns_nothing(coco_format_root,
                                                                   tmp_path):
    storage = tmp_path / "experiments"
    args = ["search", "--space", "tests/spaces/pu_only.yaml",
            *tiny_overrides(coco_format_root, storage, "resume",
                            **{"tasks": f"[{{name: {STUDY}, prob: 0.1}}]",
                               "scheduler.type": "none", "budget.trials_per_task": TRIALS,
                               "budget.repeats": REPEATS, "fixed.train_epochs": EPOCHS,
                               "fixed.epochs": EPOCHS})]
    exp = storage / "resume"

    first = _kill_when(args, lambda: _mid_stage(exp, repeats=False))
    # an interrupted experiment: every reader of its trials tells the same story
    interrupted = check_readers_agree(exp, tmp_path / "read-interrupted")
    assert interrupted[STUDY] is not None
    second = _kill_when(args + ["--resume"], lambda: _mid_stage(exp, repeats=True))
    proc = run_entry(args + ["--resume"], timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # nothing lost or duplicated: 3 search trials + 2 repeats, each once, all finished
    trials = collect_trials(exp)
    assert sorted(t.stage for t in trials) == ["repeats"] * REPEATS + ["search"] * TRIALS
    assert all(t.status == "finished" for t in trials), trials
    assert len(_trial_dirs(exp)) == TRIALS + REPEATS
    assert sorted(t.repeat for t in trials if t.stage == "repeats") == [1, 2]
    # nothing finished was run again: its metrics.json is byte for byte what it was
    for snapshot in (first, second):
        for name, content in snapshot["finished"].items():
            assert (exp / "trials" / STUDY / name / "metrics.json").read_bytes() == content
    # the interrupted trials continued from their Ray Train checkpoints
    _continued_from_checkpoint(exp, first)
    _continued_from_checkpoint(exp, second)

    # Optuna and Tune agree: one COMPLETE Optuna trial per Tune search trial, same params
    study = optuna.load_study(study_name=f"resume.{STUDY}",
                              storage=f"sqlite:///{exp / 'optuna.sqlite3'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert len(complete) == TRIALS
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("orphaned")
               for t in others), [(t.number, t.state, t.user_attrs) for t in others]
    tune_params = sorted(tuple(sorted(t.params.items())) for t in trials if t.stage == "search")
    optuna_params = sorted(tuple(sorted(t.params.items())) for t in complete)
    assert tune_params == optuna_params
    assert sorted(t.user_attrs["ray_trial_id"] for t in complete) == \
        sorted(t.trial_id for t in trials if t.stage == "search")

    check_readers_agree(exp, tmp_path / "read-finished")

    # the wall time counts all three runs of the search
    summary = json.loads((exp / "summary.json").read_text())
    legs = json.loads((exp / "legs.json").read_text())
    assert [leg["resumed"] for leg in legs] == [False, True, True]
    assert legs[0]["seconds"] > 0 and legs[1]["seconds"] > 0 and legs[2]["completed"]
    assert summary["wall_seconds"] == sum(leg["seconds"] for leg in legs)
    assert summary["trials"]["finished"] == TRIALS + REPEATS
    print(f"Optuna trials: {len(complete)} COMPLETE, {len(others)} orphaned FAIL; "
          f"legs {[round(leg['seconds']) for leg in legs]} s")
