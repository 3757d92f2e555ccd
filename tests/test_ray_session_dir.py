"""The private Ray session folder of a search: this user's only, and removed after a killed driver.

A search that starts its own local Ray keeps Ray's session files in ``pumlc-ray-*`` under the
temp dir. Ray makes the folder it is given, and the session, logs and sockets folders in it,
mode 0777 (no sticky bit); the search makes them 0700 again once Ray is up. A driver killed with
SIGKILL runs no exit handler, so its folder stays: the next search that starts a private Ray
with the same temp dir removes it, from the driver's pid recorded in the folder, and never the
folder of a live process, of another user or without a record.

The cleanup is file logic, tested without Ray; one test starts a real local Ray for the modes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from tune import cluster


@pytest.fixture
def base():
    """A temp dir with a short path (the session folder's socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="pumlc-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def a_dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def session_folder(base: Path, name: str, pid, start="same") -> Path:
    """A folder as a driver leaves it: a record of the driver, Ray's session tree inside."""
    folder = base / f"pumlc-ray-{name}"
    (folder / "session_x" / "logs").mkdir(parents=True)
    (folder / "session_x" / "logs" / "raylet.out").write_text("log\n")
    if pid is not None:
        if start == "same":
            start = cluster._process_start(pid)
        (folder / cluster._DRIVER_FILE).write_text(json.dumps({"pid": pid, "start": start}))
    return folder


def test_a_folder_whose_driver_is_gone_is_removed_and_nothing_else(base):
    me = os.getpid()
    dead = session_folder(base, "dead", a_dead_pid())
    reused = session_folder(base, "reused", me, start=1)        # the pid now names another
    live = session_folder(base, "live", me)
    unrecorded = session_folder(base, "older", None)             # an older pu-mlc's, or new
    garbled = session_folder(base, "garbled", None)
    (garbled / cluster._DRIVER_FILE).write_text("{not json")
    other_name = base / "ray-session-dead"
    shutil.copytree(dead, other_name)
    a_file = base / "pumlc-ray-file"
    a_file.write_text(json.dumps({"pid": a_dead_pid(), "start": None}))
    link = base / "pumlc-ray-link"
    link.symlink_to(session_folder(base / "elsewhere", "target", a_dead_pid()))

    removed = cluster.remove_stale_temp_dirs(base)

    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    for kept in (live, unrecorded, garbled, other_name, a_file, link,
                 base / "elsewhere" / "pumlc-ray-target"):
        assert kept.exists() or kept.is_symlink(), kept


def test_a_folder_a_live_process_uses_is_kept_whatever_its_record_says(base):
    """Ray's raylet names its session folder in its command line; agents orphaned by a killed
    driver keep its log files open for a minute or two."""
    named = session_folder(base, "named", a_dead_pid())
    holding = session_folder(base, "holding", a_dead_pid())
    sleeper = [sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'a'); "
                                     "print('ready', flush=True); time.sleep(120)"]
    procs = [subprocess.Popen([*sleeper, "/dev/null", f"--session-dir={named / 'session_x'}"],
                              stdout=subprocess.PIPE, text=True),
             subprocess.Popen([*sleeper, str(holding / "session_x" / "logs" / "raylet.out")],
                              stdout=subprocess.PIPE, text=True)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        assert cluster.remove_stale_temp_dirs(base) == []
        assert named.exists() and holding.exists()
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close()
    assert sorted(cluster.remove_stale_temp_dirs(base)) == sorted([named, holding])


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder of another user needs root")
def test_a_folder_of_another_user_is_kept(base):
    theirs = session_folder(base, "theirs", a_dead_pid())
    os.chown(theirs, 12345, 12345)
    assert cluster.remove_stale_temp_dirs(base) == []
    assert theirs.exists()


def test_a_new_private_folder_is_0700_records_its_driver_and_clears_stale_ones(base,
                                                                              monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(base))
    stale = session_folder(base, "stale", a_dead_pid())
    folder = Path(cluster._private_temp_dir())
    try:
        assert folder.parent == base and folder.name.startswith("pumlc-ray-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        record = json.loads((folder / cluster._DRIVER_FILE).read_text())
        assert record == {"pid": os.getpid(), "start": cluster._process_start(os.getpid())}
        assert not stale.exists()
        assert cluster.remove_stale_temp_dirs(base) == []        # its own driver is alive
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_ray_made_folders_are_made_private_again(base):
    folder = session_folder(base, "x", os.getpid())
    session = folder / "session_x"
    (session / "sockets").mkdir()
    (folder / "session_latest").symlink_to(session)
    for d in (folder, session, session / "logs", session / "sockets"):
        os.chmod(d, 0o777)                                       # as Ray leaves them
    cluster._keep_private(str(folder))
    for d in (folder, session, session / "logs", session / "sockets"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


@pytest.mark.e2e
def test_a_real_local_ray_keeps_its_session_folders_private(base, monkeypatch):
    """One real private Ray (as ``pu-mlc search`` starts it): the folder and the session, logs
    and sockets folders Ray made 0777 are 0700 once ``init_ray`` returns, and Ray works."""
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        pytest.skip("needs to start its own local Ray")
    monkeypatch.setenv("RAY_TMPDIR", str(base))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",
                "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"):     # init_ray sets them: put them back
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    spec = types.SimpleNamespace(
        resources=types.SimpleNamespace(use_gpu=False, cpus_per_trial=1.1, gpus_per_trial=0),
        max_concurrent_trials=None)
    cluster.init_ray(spec)
    try:
        [folder] = base.glob("pumlc-ray-*")
        sessions = [p for p in folder.glob("session_*") if not p.is_symlink()]
        assert sessions
        folders = [folder, *sessions, *(s / sub for s in sessions for sub in ("logs", "sockets"))]
        modes = {str(p.relative_to(base)): oct(stat.S_IMODE(p.stat().st_mode)) for p in folders}
        assert set(modes.values()) == {"0o700"}, modes
        assert ray.get(ray.remote(lambda: 41).remote()) + 1 == 42
    finally:
        cluster._shutdown_and_clean(str(next(base.glob("pumlc-ray-*"), base / "none")))
    assert not list(base.glob("pumlc-ray-*"))
