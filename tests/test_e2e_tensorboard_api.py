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
    # one run per trial, and the root holding the search's HParams definition ("." in the API)
    assert sorted(r for r in runs if r != ".") == sorted(f"{r['study']}/{r['trial_id']}"
                                                        for r in _csv_rows(exp))
    assert len(runs) == len(_csv_rows(exp)) + 1 and "." in runs
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


def test_the_hparams_tab_lists_every_studys_searched_fields_and_only_written_metrics(
        tensorboard_server):
    """One experiment-wide definition (tune/hparams.py): PU-MLC's alpha and gamma and the
    baseline's lr and weight decay are all columns, whichever trial TensorBoard read first; the
    metric columns are the honest protocol's (no empty test/mAP column)."""
    import yaml

    exp, base = tensorboard_server
    experiment = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = {h["name"] for h in experiment["hparamInfos"]}
    space = yaml.safe_load((exp / "search_space.yaml").read_text())
    searched = {k for m in space["methods"] for k in (m.get("search") or {})}
    assert {"alpha", "gamma", "lr", "weight_decay"} <= searched <= columns
    assert {"study", "task", "method", "prob", "repeat"} <= columns
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics == ["selected/score", "selected/test_mAP", "val/mAP", "val/mAP_ema",
                       "train/loss"]
    # a baseline trial's row has no alpha (its loss does not read it), a PU-MLC trial's has
    groups = _get(f"{base}/data/plugin/hparams/session_groups",
                  {"experimentName": "", "allowedStatuses": STATUSES, "colParams": [],
                   "startIndex": 0, "sliceSize": 1000})["sessionGroups"]
    methods = {g["name"]: g["hparams"] for g in groups}
    pu = [h for name, h in methods.items() if name.split("/")[0].endswith(".pu_mlc")]
    bce = [h for name, h in methods.items() if name.split("/")[0].endswith(".partial_bce")]
    assert pu and bce
    assert all("alpha" in h and "gamma" in h for h in pu)
    assert all("alpha" not in h and "lr" in h for h in bce)
