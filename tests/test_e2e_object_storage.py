"""A search whose experiment lives in an object store: ``storage_path: s3://bucket/prefix?
endpoint_override=...`` against a real S3 API server (moto's, on a loopback port; fake
credentials in the usual AWS variables), as Ray's own storage tests do.

- A 2-method x 2-task search finishes: every file it writes is an object in the bucket (trial
  records, selected weights, TensorBoard runs, Ray Tune and Train state, exports, the report),
  its working directory stays empty and its staging folders are removed.
- Export and report run from another process and folder (a "laptop") against the bucket, and
  give the same all_trials.csv rows and report tables as the same experiment copied to a local
  folder; the TensorBoard runs are copied down by ``pu-mlc tensorboard`` and read back.
- The same kind of search, its driver SIGKILLed mid-trial, then ``--resume``: the interrupted
  trial continues from its checkpoint in the bucket; nothing lost or duplicated.
- ``s3://`` storage with the default (SQLite) study storage is refused before Ray starts.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import yaml

from limits import HANG_GUARD_S
from ray_helpers import (PYTHON, REPO, free_port, new_marker, search_env, stop_marked,
                         tiny_overrides)
from store_checks import check_readers_agree, optuna_trials

pytestmark = pytest.mark.e2e

TASKS = {"full": 1.0, "p10": 0.1}
METHODS = ("pu_mlc", "partial_bce")
BUCKET = "pumlc"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket: ``(endpoint, env of a client)``."""
    from moto.server import ThreadedMotoServer

    import boto3

    port = free_port()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _uri(endpoint: str, *parts: str) -> str:
    return "/".join([f"s3://{BUCKET}", *parts]) + f"?endpoint_override={endpoint}&region=us-east-1"


def _keys(endpoint: str, prefix: str) -> dict[str, int]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):           # pyarrow's folder markers
                out[obj["Key"][len(prefix):]] = obj["Size"]
    return out


def _env(tmp: Path) -> dict[str, str]:
    env = search_env()
    env.update(CREDENTIALS, PU_MLC_STAGING_DIR=str(tmp / "staging"))
    return env


def _search(args: list[str], cwd: Path, env: dict, log: Path) -> subprocess.CompletedProcess:
    with log.open("w") as out:
        return subprocess.run([PYTHON, str(REPO / "train_entry.py"), *args], cwd=cwd, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=HANG_GUARD_S)


def _space(root: Path) -> Path:
    raw = yaml.safe_load((REPO / "search_spaces" / "demo.yaml").read_text())
    raw["methods"] = [m for m in raw["methods"] if m["name"] in METHODS]
    raw["tasks"] = [{"name": t, "prob": p} for t, p in TASKS.items()]
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    return space


@pytest.fixture(scope="module")
def s3_search(s3, coco_format_root, module_tmp):
    root = module_tmp / "s3search"
    cwd = root / "cwd"
    cwd.mkdir(parents=True)
    space = _space(root)
    uri = _uri(s3, "experiments")
    t0 = time.monotonic()
    proc = _search(["search", "--space", str(space),
                    *tiny_overrides(coco_format_root, uri, "s3demo",  # type: ignore[arg-type]
                                    study_storage=f"sqlite:///{root / 'optuna.db'}",
                                    **{"budget.trials_per_task": 2, "budget.repeats": 0,
                                       "resources.num_workers": 1, "scheduler.type": "none",
                                       "fixed.train_epochs": 1, "fixed.epochs": 1})],
                   cwd, _env(root), root / "search.log")
    seconds = time.monotonic() - t0
    keys = _keys(s3, "experiments/s3demo/")
    print(f"s3 search: {seconds:.0f} s wall, {len(keys)} objects, "
          f"{sum(keys.values()) / 2 ** 20:.1f} MiB in the bucket")
    return root, uri.replace("/experiments?", "/experiments/s3demo?"), proc, keys


def test_an_s3_search_writes_every_file_to_the_bucket_and_nothing_locally(s3_search):
    root, uri, proc, keys = s3_search
    assert proc.returncode == 0, (root / "search.log").read_text()[-5000:]
    assert not any((root / "cwd").iterdir())                # the working directory: nothing
    staging = root / "staging"
    assert not staging.exists() or not [p for p in staging.rglob("*") if p.is_file()]
    for name in ("search_space.yaml", "legs.json", "summary.json", "exports/all_trials.csv",
                 "exports/best.json", "report/report.md", "report/results.json"):
        assert name in keys, name
    studies = [f"{t}.{m}" for t in TASKS for m in METHODS]
    for study in studies:
        assert f"tune/{study}/.pu_mlc_done" in keys, study
        trials = {k.split("/")[2] for k in keys if k.startswith(f"trials/{study}/")}
        assert len(trials) == 2, (study, trials)
        for trial in trials:
            for name in ("trial.json", "metrics.json", "config.yaml", "train.log",
                         "workers/rank0.json", "checkpoints/best.pt"):      # keep_top 2
                assert f"trials/{study}/{trial}/{name}" in keys, (study, trial, name)
            assert any(k.startswith(f"tensorboard/{study}/{trial}/events.out.tfevents")
                       for k in keys), (study, trial)
            assert f"ray_train/{study}-{trial}/.validate_storage_marker" in keys  # Ray's check
    assert not [k for k in keys if "/checkpoint_epoch_" in k]   # resume state released
    assert any(k.startswith("tensorboard/events.out.tfevents") for k in keys)  # HParams def
    assert [k for k in keys if k.startswith("report/figures/")]
    metrics = json.loads(_read(uri, "trials", studies[0], sorted(
        k.split("/")[2] for k in keys if k.startswith(f"trials/{studies[0]}/"))[0],
        "metrics.json"))
    assert metrics["status"] == "finished"


def _read(uri: str, *parts: str) -> bytes:
    from tune.storage import Storage

    storage = Storage(uri)
    data = storage.read_bytes(storage.root.joinpath(*parts))
    assert data is not None, parts
    return data


def test_every_reader_agrees_on_the_bucket(s3_search, tmp_path):
    root, uri, proc, _ = s3_search
    assert proc.returncode == 0
    names = [f"s3demo.{t}.{m}" for t in TASKS for m in METHODS]
    ot = optuna_trials(root, names, url=f"sqlite:///{root / 'optuna.db'}")
    selected = check_readers_agree(uri, tmp_path / "read", ot)
    assert all(selected.values()), selected


def test_export_and_report_from_a_laptop_equal_those_of_a_local_copy(s3_search, tmp_path):
    """A separate process in another folder, with only the bucket's URI and the usual AWS
    variables: its all_trials.csv rows and report tables equal those the same experiment gives
    when copied to a local folder; the selected weights come down with the export."""
    root, uri, proc, _ = s3_search
    assert proc.returncode == 0
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    env = _env(tmp_path)
    for command in (["export", uri, "--out", str(laptop / "exports")],
                    ["report", uri, "--out", str(laptop / "report")],
                    ["tensorboard", uri, "--out", str(laptop / "tb")]):
        done = subprocess.run([sys.executable, "-m", "pu_mlc", *command], cwd=laptop, env=env,
                              capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert done.returncode == 0, (command, done.stderr[-3000:])
    from tune.store import ExperimentStore

    local = tmp_path / "copy" / "s3demo"
    ExperimentStore(uri).download(ExperimentStore(uri).root, local)
    from tune.export import export_experiment
    from tune.report import build_results

    export_experiment(local, tmp_path / "local-exports")
    assert _csv(laptop / "exports" / "all_trials.csv") == \
        _csv(tmp_path / "local-exports" / "all_trials.csv")
    remote = json.loads((laptop / "report" / "results.json").read_text())
    here, _ = build_results(local)
    for key in ("table", "paired_differences", "selected", "studies", "columns"):
        assert _comparable(remote[key]) == _comparable(here[key]), key
    best = json.loads((laptop / "exports" / "best.json").read_text())
    for name, entry in best.items():                    # the weights, for evaluate / predict
        assert Path(entry["weights"]).is_file() and entry["weights"].startswith(str(laptop))
    # the TensorBoard runs, copied down, read by TensorBoard's own reader
    from ray_helpers import read_scalars

    runs = [p for p in (laptop / "tb").glob("*/*") if p.is_dir()]
    assert len(runs) == len(TASKS) * len(METHODS) * 2
    scalars, _ = read_scalars(runs[0])
    assert [step for step, _ in scalars["train/loss"]] == [1]


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if k != "output_dir"} for row in csv.DictReader(f)]


def _comparable(value):
    """Results without the places files were read from."""
    text = json.dumps(value, sort_keys=True, default=str)
    return json.loads(text.replace("\\\\", "/"), object_hook=lambda d: {
        k: v for k, v in d.items() if k not in ("config", "path", "command")})


def test_a_killed_driver_resumes_its_trial_from_the_checkpoint_in_the_bucket(
        s3, coco_format_root, tmp_path):
    root = tmp_path
    cwd = root / "cwd"
    cwd.mkdir()
    uri = _uri(s3, "resume")
    exp = uri.replace("/resume?", "/resume/kill?")
    study = "p10"
    args = ["search", "--space", str(REPO / "tests" / "spaces" / "pu_only.yaml"), "--no-export",
            *tiny_overrides(coco_format_root, uri, "kill",  # type: ignore[arg-type]
                            study_storage=f"sqlite:///{root / 'optuna.db'}",
                            **{"tasks": f"[{{name: {study}, prob: 0.1}}]",
                               "scheduler.type": "none", "budget.trials_per_task": 2,
                               "resources.num_workers": 1, "fixed.train_epochs": 4,
                               "fixed.epochs": 4})]
    from tune.store import ExperimentStore

    store = ExperimentStore(exp)
    marker = new_marker()
    env = _env(root)
    env["PU_MLC_TEST_MARKER"] = marker
    driver = subprocess.Popen([PYTHON, str(REPO / "train_entry.py"), *args], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    snapshot: Optional[dict] = None
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while driver.poll() is None and snapshot is None and time.monotonic() < deadline:
            snapshot = _mid_trial(store, study)
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        left = stop_marked(marker)
    assert not left
    assert snapshot is not None, "the search ended before it could be interrupted"
    proc = _search(args + ["--resume"], cwd, _env(root), root / "resume.log")
    assert proc.returncode == 0, (root / "resume.log").read_text()[-4000:]
    trial = store.read_trial(study, snapshot["trial"])
    resumed = [h["epoch"] for h in trial.history if h.get("resumed_from_checkpoint")]
    assert [h["epoch"] for h in trial.history] == [1, 2, 3, 4]
    assert len(resumed) == 1 and snapshot["registered"] + 1 <= resumed[0] <= \
        snapshot["epochs"] + 1, (resumed, snapshot)
    assert [h for h in trial.history[:resumed[0] - 1]] == snapshot["history"][:resumed[0] - 1]
    ot = optuna_trials(root, [f"kill.{study}"], url=f"sqlite:///{root / 'optuna.db'}")
    check_readers_agree(exp, tmp_path / "read", ot)
    records = store.read_study(study).trials
    assert len(records) == 2 and {t.status for t in records} == {"finished"}
    assert not any((root / "cwd").iterdir())


def _mid_trial(store, study: str) -> Optional[dict]:
    """The first trial has run 2..3 of its 4 epochs and Ray Train registered a checkpoint."""
    ids = store.trial_ids(study)
    if len(ids) != 1:
        return None
    trial = store.read_trial(study, ids[0])
    if not 2 <= trial.epochs < 4:
        return None
    snap = store.read_json(store.train_run_dir(study, ids[0]) /
                           "checkpoint_manager_snapshot.json") or {}
    name = (snap.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name") or ""
    if not name.startswith("checkpoint_epoch_"):
        return None
    return {"trial": ids[0], "registered": int(name.rsplit("_", 1)[-1]),
            "epochs": trial.epochs, "history": trial.history}


def test_s3_storage_with_the_default_study_storage_is_refused_before_ray_starts(
        coco_format_root, tmp_path):
    env = search_env()
    env.update(CREDENTIALS)
    done = subprocess.run(
        [PYTHON, str(REPO / "train_entry.py"), "search", "--space",
         str(REPO / "tests" / "spaces" / "pu_only.yaml"),
         *tiny_overrides(coco_format_root, "s3://nowhere/x?endpoint_override=http://127.0.0.1:9",
                         "refused")],  # type: ignore[arg-type]
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "study_storage" in lines[0] and "postgresql" in lines[0] and "journal:" in lines[0]
    assert "Ray" not in done.stdout + done.stderr.replace("Ray starts", "")
    assert not any(tmp_path.iterdir())
