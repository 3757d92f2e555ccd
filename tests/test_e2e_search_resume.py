"""A search whose driver is killed mid-trial finishes with ``--resume`` without re-running
completed trials; the interrupted trial continues from its last Ray Train checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ray_helpers import (PYTHON, REPO, cmdline, new_marker, run_entry, search_env, stop_marked,
                         tiny_overrides)
from tune.export import collect_trials
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e


def _history(trial_dir: Path) -> list[dict]:
    try:
        return json.loads((trial_dir / "metrics.json").read_text())["history"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def _trial_dirs(exp: Path) -> list[Path]:
    return sorted((exp / "trials" / "mlc_pl10").glob("*")) if (exp / "trials").exists() else []


def test_killed_search_resumes_without_rerunning_finished_trials(coco_format_root, tmp_path):
    storage = tmp_path / "experiments"
    args = ["search", "--space", "search_spaces/demo.yaml",
            *tiny_overrides(coco_format_root, storage, "resume",
                            **{"tasks": "[{name: mlc_pl10, prob: 0.1}]", "scheduler.type": "none",
                               "fixed.train_epochs": 4, "fixed.epochs": 4})]
    exp = storage / "resume"
    marker = new_marker()             # the processes of this search (driver and its own Ray)
    env = search_env(marker)
    # its private Ray's session folder goes under here (a killed driver cannot remove it)
    ray_tmp = tempfile.mkdtemp(prefix="pumlc-rt-", dir="/tmp")
    env["RAY_TMPDIR"] = ray_tmp
    driver = subprocess.Popen([PYTHON, str(REPO / "train_entry.py"), *args], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    finished: dict[str, bytes] = {}
    interrupted = None
    deadline = time.time() + 900
    try:
        # wait until one trial has finished and the next one has finished two epochs (so its
        # first epoch's checkpoint is surely persisted: Ray's report returns before epoch 2)
        while time.time() < deadline and driver.poll() is None:
            done = [d for d in _trial_dirs(exp) if len(_history(d)) == 4 and
                    json.loads((d / "metrics.json").read_text())["status"] == "finished"]
            running = [d for d in _trial_dirs(exp) if 2 <= len(_history(d)) < 4]
            if done and running:
                finished = {d.name: (d / "metrics.json").read_bytes() for d in done}
                interrupted = running[0].name
                before = _history(running[0])
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
    assert interrupted is not None, "the search ended before it could be interrupted mid-trial"

    proc = run_entry(args + ["--resume"], timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    trials = collect_trials(exp)
    assert len(trials) == 3 and all(t.status == "finished" for t in trials), trials
    for name, content in finished.items():          # completed trials were not run again
        assert (exp / "trials" / "mlc_pl10" / name / "metrics.json").read_bytes() == content
    after = _history(exp / "trials" / "mlc_pl10" / interrupted)
    assert [h["epoch"] for h in after] == [1, 2, 3, 4]
    # it continued from its Ray Train checkpoint: earlier epochs kept as they were, not re-run
    resumed = [h["epoch"] for h in after if h.get("resumed_from_checkpoint")]
    assert len(resumed) == 1 and 2 <= resumed[0] <= len(before) + 1, (resumed, len(before))
    for old in before[:resumed[0] - 1]:
        assert after[old["epoch"] - 1] == old
    assert len(_trial_dirs(exp)) == 3
    # the wall time counts both runs of the search (the killed one up to its last update)
    summary = json.loads((exp / "summary.json").read_text())
    legs = json.loads((exp / "legs.json").read_text())
    assert len(legs) == 2 and [leg["resumed"] for leg in legs] == [False, True]
    assert legs[0]["seconds"] > 0 and legs[1]["completed"]
    assert summary["wall_seconds"] == sum(leg["seconds"] for leg in legs)
    assert summary["trials"]["finished"] == 3
