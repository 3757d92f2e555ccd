"""The search on a Ray cluster of separate hosts, simulated on this machine (tests/netns_cluster.py):
a head host, two worker hosts and a client host, each its own network namespace with its own
address, every ``ray start`` with its own node IP, token authentication, no custom resources.

One cluster for the module (1 CPU a node), in this order:
- a 2-method x 2-task search submitted from the client host with ``ray job submit`` (the
  README's steps), its Optuna studies in a real PostgreSQL server on the head: trials run on both
  worker hosts, every record, TensorBoard run, Optuna trial, export row and the report agree;
- the same search with a ``storage_path`` that worker host 2 does not share (a tmpfs over it in
  its own mount namespace): refused before any trial, in one line naming that node, nothing
  written; the job's exit code is the search's;
- a client without the token is refused;
- a worker host killed mid-trial (every Ray process of it at once): the trial continues on the
  other worker host from its checkpoint, and its per-epoch records equal an unkilled twin's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from limits import HANG_GUARD_S
from netns_cluster import NamespaceUnavailable, NetnsCluster
from pg_server import pg_server
from ray_helpers import REPO, registered_checkpoint_epoch, tiny_overrides
from store_checks import check_readers_agree

pytestmark = pytest.mark.e2e

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

TASKS = {"full": 1.0, "p10": 0.1}
METHODS = ("pu_mlc", "partial_bce")
#: Ray's node health checks, faster than the 15 s default, so a killed host is declared dead in
#: seconds (the head's settings; nothing else changes).
FAST_HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
               "RAY_health_check_timeout_ms": "1000"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    shared = tmp_path_factory.mktemp("cluster_shared")     # every host sees this folder ...
    private = shared / "private"                           # ... but worker 2 not this one
    private.mkdir()
    staging = shared / "staging"           # where trials stage their files for an object store:
    staging.mkdir()                        # each worker host's own (a local disk, not shared)
    env = {k: v for k, v in os.environ.items() if k.startswith("PU_MLC_")}
    env.update(CREDENTIALS, PU_MLC_STAGING_DIR=str(staging))
    try:
        c = NetnsCluster(workers=2, private={1: [staging], 2: [private, staging]}, env=env,
                         head_env=FAST_HEALTH)
        c.__enter__()
    except NamespaceUnavailable as err:
        pytest.fail(str(err), pytrace=False)
    try:
        with pg_server(listen=c.head.ip, netns=c.head.netns) as pg:
            yield c, shared, private, pg
    finally:
        c.close()


@pytest.fixture(scope="module")
def bucket(cluster):
    """A moto S3 server on the head host's address (every host reaches it, nothing else does),
    with one bucket: its endpoint."""
    c = cluster[0]
    endpoint = f"http://{c.head.ip}:5000"
    server = c.head.popen([sys.executable, "-m", "moto.server", "-H", c.head.ip, "-p", "5000"],
                          env=c.env(c.head), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    code = ("import sys, time, boto3\n"
            "for _ in range(600):\n"
            "    try:\n"
            "        boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1')"
            ".create_bucket(Bucket='pumlc'); break\n"
            "    except Exception:\n"
            "        time.sleep(0.2)\n"
            "else:\n"
            "    sys.exit('moto never answered')\n")
    made = c.python_on(c.head, code, endpoint)
    assert made.returncode == 0, made.stderr[-2000:]
    yield endpoint
    server.kill()                 # the server this fixture started (the namespace goes later)
    server.wait()


def _space(shared: Path, coco_format_root: Path, name: str, storage: Path,
           study_storage: str) -> tuple[Path, list[str]]:
    raw = yaml.safe_load((REPO / "search_spaces" / "demo.yaml").read_text())
    raw["methods"] = [m for m in raw["methods"] if m["name"] in METHODS]
    raw["tasks"] = [{"name": t, "prob": p} for t, p in TASKS.items()]
    space = shared / f"{name}.yaml"
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    overrides = tiny_overrides(coco_format_root, storage, name, study_storage=study_storage,
                               **{"budget.trials_per_task": 2, "budget.repeats": 0,
                                  "resources.num_workers": 1, "scheduler.type": "none",
                                  "fixed.train_epochs": 1, "fixed.epochs": 1})
    return space, overrides


def _optuna_on_head(c: NetnsCluster, url: str, names: list[str]) -> dict[str, list[dict]]:
    """The Optuna trials of each study, read on the head host (the database listens there)."""
    code = ("import json, sys, optuna\n"
            "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
            "out = {}\n"
            "for name in sys.argv[2:]:\n"
            "    s = optuna.load_study(study_name=name, storage=sys.argv[1])\n"
            "    out[name] = [{'state': t.state.name, 'user_attrs': t.user_attrs}\n"
            "                 for t in s.trials]\n"
            "print('OPTUNA=' + json.dumps(out))\n")
    proc = c.python_on(c.head, code, url, *names)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("OPTUNA=")][-1]
    return json.loads(line[len("OPTUNA="):])


@pytest.fixture(scope="module")
def submitted(cluster, coco_format_root):
    c, shared, _, pg = cluster
    storage = shared / "experiments"
    space, overrides = _space(shared, coco_format_root, "cluster", storage, pg.url)
    t0 = time.monotonic()
    proc = c.job_submit(["python", "train_entry.py", "search", "--space", str(space),
                         *overrides], working_dir=REPO)
    seconds = time.monotonic() - t0
    print(f"cluster search submitted from the client host: {seconds:.0f} s wall")
    return c, storage / "cluster", proc, pg


def test_a_search_submitted_from_a_client_host_runs_on_both_worker_hosts(submitted):
    c, exp, proc, _ = submitted
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "search 'cluster' finished" in out
    from tune.store import ExperimentStore

    store = ExperimentStore(exp)
    trials = [t for s in (f"{t}.{m}" for t in TASKS for m in METHODS)
              for t in store.read_study(s).trials]
    assert len(trials) == len(TASKS) * len(METHODS) * 2
    workers = {w["node_ip"] for t in trials for w in t.nodes["workers"]}
    drivers = {r["node_ip"] for t in trials for r in t.nodes["runs"]}
    assert {w.ip for w in c.workers} <= workers, workers        # both worker hosts trained
    assert drivers == {c.head.ip}                                 # trial drivers on the head
    for study in (f"{t}.{m}" for t in TASKS for m in METHODS):
        assert store.stage_record("search", study)["driver"]["node_ip"] == c.head.ip
    usage = [json.loads(line) for path in sorted(store.usage_dir.glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    assert usage and {n["ip"] for n in usage[0]["nodes"]} == {h.ip for h in c.ray_hosts}
    summary = json.loads(store.summary_file.read_text())
    print(f"slots {summary['slots']}, wall {summary['wall_seconds']:.0f} s: trial workers "
          f"running {summary['worker_utilisation']:.2f} of the slots' time (computing "
          f"{summary['busy_utilisation']:.2f}); no slot resource: "
          f"{not summary['slot_resource']}")
    assert not summary["slot_resource"]                           # nothing set by hand
    assert 0 < summary["busy_utilisation"] <= summary["worker_utilisation"] <= 1
    assert summary["trials"]["missing_records"] == 0


def test_every_reader_agrees_and_postgresql_holds_one_optuna_trial_per_tune_trial(
        submitted, tmp_path):
    c, exp, proc, pg = submitted
    assert proc.returncode == 0
    names = [f"cluster.{t}.{m}" for t in TASKS for m in METHODS]
    optuna_trials = _optuna_on_head(c, pg.url, names)
    selected = check_readers_agree(exp, tmp_path / "read", optuna_trials)
    assert all(selected.values()), selected
    for name in names:            # 4 studies at once over 2 worker hosts: none lost, none doubled
        tune_trials = json.loads((exp / "tune" / name.split(".", 1)[1] / ".pu_mlc_done")
                                 .read_text())["tune_trials"]
        assert len(optuna_trials[name]) == tune_trials == 2, (name, optuna_trials[name])
        assert {t["state"] for t in optuna_trials[name]} == {"COMPLETE"}
        assert len({t["user_attrs"]["ray_trial_id"] for t in optuna_trials[name]}) == 2


def test_storage_one_worker_host_does_not_share_is_refused_before_any_trial(
        cluster, coco_format_root, submitted):
    c, shared, private, pg = cluster
    space, overrides = _space(shared, coco_format_root, "private", private / "experiments",
                              pg.url)
    before = sorted(p.name for p in private.iterdir())
    proc = c.job_submit(["python", "train_entry.py", "search", "--space", str(space),
                         *overrides], working_dir=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    # one error line (ray job submit shows the job's log, then its tail again on failure)
    errors = {ln for ln in out.splitlines() if ln.startswith("error:")}
    assert len(errors) == 1, out[-3000:]
    line = errors.pop()
    assert "storage_path" in line and c.workers[1].ip in line and c.workers[0].ip not in line
    assert "Trial" not in out and "RayTrainWorker" not in out      # no trial ever started
    assert sorted(p.name for p in private.iterdir()) == before     # nothing written
    # the job's own exit code is the search's (the CLI itself says only failed: 1)
    job_id = re.search(r"raysubmit_\w+", out).group(0)
    code = ("import sys\nfrom ray.job_submission import JobSubmissionClient\n"
            "print('EXIT=%s' % JobSubmissionClient(sys.argv[1]).get_job_info(sys.argv[2])"
            ".driver_exit_code)\n")
    info = c.python_on(c.client, code, c.job_address, job_id)
    assert "EXIT=2" in info.stdout, info.stdout + info.stderr


def test_a_client_without_the_token_is_refused(cluster):
    c = cluster[0]
    proc = c.job_submit(["python", "-c", "print(1)"], token=False)
    assert proc.returncode != 0
    assert "Unauthorized" in proc.stdout + proc.stderr


def _host_loss_args(coco_format_root: Path, storage: str | Path, name: str,
                    **extra) -> list[str]:
    return [str(REPO / "train_entry.py"), "search", "--space",
            str(REPO / "tests" / "spaces" / "pu_only.yaml"), "--no-export",
            *tiny_overrides(coco_format_root, storage, name,  # type: ignore[arg-type]
                            **{"tasks": "[{name: p10, prob: 0.1}]",
                               "scheduler.type": "none", "budget.trials_per_task": 2,
                               "search": "{ema: {type: choice, values: [0.9997]}}",
                               "first_trial": "{ema: 0.9997}", "resources.num_workers": 1,
                               "fixed.train_epochs": 4, "fixed.epochs": 4, **extra})]


def _kill_a_worker_host_mid_trial(c: NetnsCluster, args: list[str], probe, log: Path):
    """Run the search on the head; once the first trial has run 2..3 of its 4 epochs and Ray
    Train registered a checkpoint (``probe()`` says so), SIGKILL every process of the worker host
    its rank 0 runs on. Returns (host, trial id, epochs run, registered epoch)."""
    killed = None
    with log.open("w") as out:
        driver = c.head.popen([sys.executable, *args], env=c.env(c.head), cwd=REPO,
                              stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + HANG_GUARD_S
            while driver.poll() is None and killed is None and time.monotonic() < deadline:
                state = probe()
                host = next((w for w in c.workers if w.ip == state.get("rank0_ip")), None)
                if state.get("registered") and 2 <= state["epochs"] < 4 and host is not None:
                    c.kill_host(host)
                    killed = (host, state["trial"], state["epochs"], state["registered"])
                time.sleep(0.2)
            rc = driver.wait(timeout=HANG_GUARD_S)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    text = log.read_text()
    assert killed is not None, "the first trial ended before its host could be killed\n" + \
        text[-3000:]
    assert rc == 0, text[-4000:]
    return killed


def _check_continued_elsewhere(exp: Path, killed, tmp_path: Path, optuna=None) -> None:
    """The killed trial went on on another node from its checkpoint; its per-epoch results are
    its twin's; every reader agrees; the host loss spent none of the trial's retries."""
    from tune.export import collect_trials

    host, trial_id, at_epoch, registered = killed
    trials = sorted(collect_trials(exp), key=lambda t: t.started)
    assert [t.status for t in trials] == ["finished", "finished"], trials
    first, twin = trials
    assert first.trial_id == trial_id
    meta = json.loads((first.path / "trial.json").read_text())
    assert meta["lost_nodes"] == [host.ip] and meta["node_losses"] == 1
    assert "retries" not in meta                    # the host loss spent no retry
    after = [w["node_ip"] for w in first.nodes["workers"]]
    assert host.ip not in after, after              # it went on elsewhere
    history = first.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    resumed = [h["epoch"] for h in history if h.get("resumed_from_checkpoint")]
    assert len(resumed) == 1 and registered + 1 <= resumed[0] <= at_epoch + 1, \
        (resumed, registered, at_epoch)
    assert [_results(h) for h in history] == [_results(h) for h in twin.history]
    assert first.test_map == twin.test_map
    check_readers_agree(exp, tmp_path / "read", optuna)
    print(f"host {host.ip} killed at epoch {at_epoch} (checkpoint of epoch {registered}); "
          f"resumed at epoch {resumed[0]} on {after}")


def test_a_worker_host_killed_mid_trial_continues_on_another_from_its_checkpoint(
        cluster, coco_format_root, submitted, tmp_path):
    """A worker host dies (all its Ray processes at once) while the first of two same-config
    trials is in epoch 3 or 4, after Ray Train registered a checkpoint on the shared storage.
    The trial goes on elsewhere from that checkpoint; its per-epoch results equal the unkilled
    twin's; Optuna, Tune, the trial folders and all_trials.csv agree; the node loss used none of
    the trial's own retries."""
    c, shared, _, _ = cluster
    storage = shared / "experiments"
    exp = storage / "hostloss"

    def probe() -> dict:
        dirs = sorted((exp / "trials" / "p10").glob("*")) \
            if (exp / "trials" / "p10").exists() else []
        if len(dirs) != 1:
            return {}
        epochs = len(_history(dirs[0]))
        return {"trial": dirs[0].name, "epochs": epochs,
                "registered": registered_checkpoint_epoch(exp, "p10", dirs[0].name),
                "rank0_ip": _read(dirs[0] / "workers" / "rank0.json").get("node_ip")}

    killed = _kill_a_worker_host_mid_trial(c, _host_loss_args(coco_format_root, storage,
                                                              "hostloss"),
                                           probe, tmp_path / "search.log")
    _check_continued_elsewhere(exp, killed, tmp_path)
    c.restart_host(killed[0])                       # the machine reboots and joins again


#: Run on the head (the bucket's endpoint exists only inside the cluster's namespaces): the
#: state of the first trial of study p10, read from the bucket through the experiment store.
_BUCKET_PROBE = """
import json, sys
from tune.store import ExperimentStore
store = ExperimentStore(sys.argv[1])
ids = store.trial_ids("p10")
state = {}
if len(ids) == 1:
    t = store.read_trial("p10", ids[0])
    snap = store.read_json(store.train_run_dir("p10", ids[0]) /
                           "checkpoint_manager_snapshot.json") or {}
    name = (snap.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name") or ""
    rank0 = next((w for w in t.nodes["workers"] if w.get("rank") == 0), {})
    state = {"trial": ids[0], "epochs": t.epochs, "rank0_ip": rank0.get("node_ip"),
             "registered": int(name.rsplit("_", 1)[-1]) if name.startswith("checkpoint_") else None}
print("STATE=" + json.dumps(state))
"""

_BUCKET_COPY = """
import sys
from pathlib import Path
from tune.store import ExperimentStore
store = ExperimentStore(sys.argv[1])
print("COPIED=%d" % store.download(store.root, Path(sys.argv[2])))
"""


def test_with_no_shared_folder_an_s3_search_survives_a_killed_worker_host(
        cluster, bucket, coco_format_root, tmp_path):
    """No folder shared between the hosts for the experiment: its storage_path is the bucket,
    each worker host stages its trials' files on its own disk. A worker host killed mid-trial:
    the trial continues on the other from its checkpoint in the bucket."""
    c, shared, _, _ = cluster
    uri = f"s3://pumlc/cluster?endpoint_override={bucket}&region=us-east-1"
    exp_uri = uri.replace("/cluster?", "/cluster/s3loss?")
    journal = shared / "head-only" / "optuna.journal"      # opened by the head's drivers only
    args = _host_loss_args(coco_format_root, uri, "s3loss",
                           study_storage=f"journal://{journal}")

    def probe() -> dict:
        out = c.python_on(c.head, _BUCKET_PROBE, exp_uri, env={"PYTHONPATH": str(REPO)})
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("STATE=")]
        return json.loads(line[-1][len("STATE="):]) if line else {}

    killed = _kill_a_worker_host_mid_trial(c, args, probe, tmp_path / "search.log")
    copy = tmp_path / "copy" / "s3loss"
    done = c.python_on(c.head, _BUCKET_COPY, exp_uri, str(copy), env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and "COPIED=" in done.stdout, done.stderr[-2000:]
    from store_checks import optuna_trials

    _check_continued_elsewhere(copy, killed, tmp_path,
                               optuna_trials(copy, ["s3loss.p10"], url=f"journal://{journal}"))
    staged = [p for p in (shared / "staging").rglob("*") if p.is_file()]
    assert not staged, staged                     # nothing reached the shared folder
    assert not (shared / "experiments" / "s3loss").exists()
def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _history(trial: Path) -> list[dict]:
    return _read(trial / "metrics.json").get("history", [])


#: Per-epoch fields that measure time, or say how the epoch was reached: not results.
NOT_RESULTS = ("seconds", "per_second", "resumed_from_checkpoint")


def _results(record: dict) -> dict:
    return {k: v for k, v in record.items() if not any(n in k for n in NOT_RESULTS)}
