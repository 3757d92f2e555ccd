"""A search whose driver is killed mid-trial finishes with ``--resume`` without re-running
completed trials; the interrupted trial continues from its last Ray Train checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ray_helpers import PYTHON, REPO, run_entry, search_env, tiny_overrides
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
    driver = subprocess.Popen([PYTHON, str(REPO / "train_entry.py"), *args], cwd=REPO,
                              env=search_env(), stdout=subprocess.DEVNULL,
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
        subprocess.run([PYTHON, "-m", "ray.scripts.scripts", "stop", "--force"],
                       env=search_env(), capture_output=True, timeout=HANG_GUARD_S)
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
