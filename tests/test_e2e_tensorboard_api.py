"""A finished search seen through TensorBoard itself: a real ``tensorboard`` server on
127.0.0.1 over ``<experiment>/tensorboard``, read through its HTTP API (runs, scalars, the
HParams plugin). One run per trial (no second tree from Tune's loggers), and the HParams tab's
selection score of every trial equals ``all_trials.csv``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from limits import HANG_GUARD_S
from ray_helpers import free_port

pytestmark = pytest.mark.e2e
TENSORBOARD = Path(sys.executable).with_name("tensorboard")
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=HANG_GUARD_S) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def tensorboard_server(methods_search):
    exp, _ = methods_search
    port = free_port()
    proc = subprocess.Popen([str(TENSORBOARD), "--logdir", str(exp / "tensorboard"),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    expected = len(_csv_rows(exp))
    deadline = time.time() + HANG_GUARD_S
    try:
        while True:                   # up, and done loading every run
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if len(_get(f"{base}/data/runs")) >= expected:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "tensorboard never listed the runs"
            time.sleep(0.5)
        yield exp, base
    finally:
        proc.terminate()               # the server this test started, nothing else
        proc.wait()


def _csv_rows(exp: Path) -> list[dict]:
    with (exp / "exports" / "all_trials.csv").open() as f:
        return list(csv.DictReader(f))


def test_one_tensorboard_run_per_trial_and_nothing_else(tensorboard_server):
    exp, base = tensorboard_server
    runs = _get(f"{base}/data/runs")
    assert sorted(runs) == sorted(f"{r['study']}/{r['trial_id']}" for r in _csv_rows(exp))
    # Tune's own loggers are off: no event files anywhere else in the experiment
    strays = [p for p in exp.rglob("events.out.tfevents.*")
              if (exp / "tensorboard") not in p.parents]
    assert not strays, strays[:5]


def test_the_hparams_tab_shows_each_trials_selection_score_and_test_map(tensorboard_server):
    exp, base = tensorboard_server
    groups = _get(f"{base}/data/plugin/hparams/session_groups",
                  {"experimentName": "", "allowedStatuses": STATUSES, "colParams": [],
                   "startIndex": 0, "sliceSize": 1000})["sessionGroups"]
    by_run = {g["name"]: {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
              for g in groups}
    rows = _csv_rows(exp)
    assert len(by_run) == len(rows)
    for row in rows:
        metrics = by_run[f"{row['study']}/{row['trial_id']}"]
        assert metrics["selected/score"] == pytest.approx(float(row["selection_score"]),
                                                          rel=1e-6)
        assert metrics["selected/test_mAP"] == pytest.approx(float(row["selected_test_mAP"]),
                                                             rel=1e-6)
    # and the Scalars API plots the same selection score per epoch
    row = rows[0]
    points = _get(f"{base}/data/plugin/scalars/scalars?run={row['study']}/{row['trial_id']}"
                  f"&tag=selected/score")
    assert points[-1][2] == pytest.approx(float(row["selection_score"]), rel=1e-6)
