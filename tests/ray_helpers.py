"""Shared pieces of the Ray end-to-end tests: the demo space shrunk to test size, subprocess runs,
and (Linux /proc) the processes and listening sockets of exactly the Ray sessions a test started.

Tests never stop Ray processes they did not start: every process a test starts (a search driver,
a ``ray start --head``) gets a unique ``PU_MLC_TEST_MARKER`` in its environment, which Ray's own
processes (GCS, raylet, dashboard, workers, job drivers) inherit; :func:`stop_marked` ends those
processes and no other.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from limits import HANG_GUARD_S

MARKER_VAR = "PU_MLC_TEST_MARKER"

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def tiny_overrides(data: Path, storage: Path, name: str, **extra) -> list[str]:
    """``--set`` flags that run tests/spaces/pu_only.yaml (or any space) on a tiny dataset in seconds per trial."""
    values = {"fixed.data": str(data), "storage_path": str(storage), "name": name,
              "fixed.scale_size": 40, "fixed.crop_size": 32, "fixed.batch_size": 4,
              "fixed.eval_batch_size": 16, **extra}
    out = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def search_env(marker: Optional[str] = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1",
               RAY_DISABLE_USAGE_STATS="1", RAY_USAGE_STATS_ENABLED="0",
               # a stuck worker group still fails (Ray retries it), but a slow start on a
               # loaded machine (normally ~10 s) never does
               RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="600")
    env.pop("RAY_ADDRESS", None)
    if marker:
        env[MARKER_VAR] = marker
    return env


def new_marker() -> str:
    return f"pumlc-test-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------------- /proc
def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:                       # gone, or not ours
        return b""


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (zombies excluded)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    out = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        if needle in _read(f"/proc/{pid}/environ").split(b"\0") and not _is_zombie(pid):
            out.append(pid)
    return out


def _is_zombie(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return not stat or stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def parent_pid(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return int(stat.rsplit(")", 1)[-1].split()[1]) if stat else 0


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        children.setdefault(parent_pid(pid), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if not _is_zombie(pid):
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def stop_marked(marker: str, grace_s: float = 20.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process carrying ``marker``; return those still alive (none
    expected). Processes of other Ray sessions on the host are never touched."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        pids = marked_pids(marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + wait
        while time.time() < deadline and marked_pids(marker):
            time.sleep(0.2)
    return marked_pids(marker)


def _socket_inodes(pid: int) -> set[str]:
    fd_dir = f"/proc/{pid}/fd"
    inodes = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for fd in names:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode_address(hex_addr: str, v6: bool) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if v6:          # four little-endian 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, raw)
    else:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    return ip, int(port, 16)


def listening_sockets(pids: list[int]) -> list[dict]:
    """TCP listening sockets owned by ``pids``: {pid, cmdline, ip, port}."""
    owner = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            owner[inode] = pid
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in _read(table).decode().splitlines()[1:]:
            cols = line.split()
            if len(cols) < 10 or cols[3] != "0A":           # 0A: LISTEN
                continue
            if cols[9] in owner:
                ip, port = _decode_address(cols[1], v6)
                pid = owner[cols[9]]
                out.append({"pid": pid, "cmdline": cmdline(pid)[:200], "ip": ip, "port": port})
    return out


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")


def run_entry(args: list[str], timeout: float = HANG_GUARD_S, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(REPO / "train_entry.py"), *args], cwd=REPO,
                          env=env or search_env(), capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_scalars(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict]:
    """Scalars and HParams plugin content of one TensorBoard run, via tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
               for tag in acc.Tags()["scalars"]}
    return scalars, acc.PluginTagToContent("hparams")


def session_hparams(hparams_content: dict) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(
        hparams_content["_hparams_/session_start_info"])
    out = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind)
    return out


# ---------------------------------------------------------------------------------- Ray Train
def registered_checkpoint_epoch(experiment: Path, study: str, trial_id: str) -> Optional[int]:
    """The epoch of the checkpoint Ray Train's controller would restart this trial from (read
    from the controller's own snapshot file), or None before it registered one.

    A worker's report waits in its queue until the controller polls it (every 2 s, later on a
    busy machine); a trial killed before that restarts from scratch, rightly. Tests that kill
    a trial to see it continue from a checkpoint wait for this first."""
    run_dir = experiment / "ray_train" / f"{study}-{trial_id}"      # tune/trial.py's run name
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
    except (OSError, json.JSONDecodeError):                 # not written yet, or being written
        return None
    name = latest.get("checkpoint_dir_name") or ""
    return int(name.rsplit("_", 1)[-1]) if name.startswith("checkpoint_epoch_") else None
