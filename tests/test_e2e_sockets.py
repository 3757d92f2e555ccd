"""What a local search listens on: a real search of the tiny demo space, with its own Ray.

While the search runs, the listening TCP sockets of its whole process tree (the driver, the Ray
processes it started, the trial's workers) are read from /proc. What the project itself asks Ray
to serve (the dashboard and the jobs API behind it) must be on 127.0.0.1, and so must everything
else: the search's private Ray is a one-machine cluster on 127.0.0.1. Every listener must be one
of the kinds of Ray process that README.md's "Search on a cluster" section lists, with the
address it documents for a local search.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from ray_helpers import (PYTHON, REPO, cmdline, descendants, is_loopback, listening_sockets,
                         new_marker, search_env, stop_marked, tiny_overrides)
from limits import HANG_GUARD_S

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

#: Kinds of listening process, and where a local search's may listen: "loopback" or "any" (all
#: interfaces). The same table is in README.md ("Search on a cluster"); the test checks both agree.
DOCUMENTED = {"dashboard": "loopback", "gcs_server": "loopback", "raylet": "loopback",
              "dashboard_agent": "loopback", "runtime_env_agent": "loopback",
              "monitor": "loopback", "worker": "loopback", "driver": "loopback",
              "ddp_store": "any"}


def kind_of(pid: int, driver: int, ip: str) -> str:
    if pid == driver:
        return "driver"
    cmd = cmdline(pid)
    if "gcs_server" in cmd:
        return "gcs_server"
    if re.search(r"/raylet( |$)", cmd):
        return "raylet"
    if "dashboard/dashboard.py" in cmd:
        return "dashboard"
    if "dashboard/agent.py" in cmd or cmd.startswith("ray::DashboardAgent"):
        return "dashboard_agent"
    if "runtime_env/agent/main.py" in cmd or cmd.startswith("ray::RuntimeEnvAgent"):
        return "runtime_env_agent"
    if "autoscaler/_private/monitor.py" in cmd:
        return "monitor"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        # torch.distributed's TCPStore (the DDP rendezvous that rank 0 of a trial serves on
        # Ray Train's MASTER_PORT) binds every interface, whatever the address it is given
        return "worker" if is_loopback(ip) else "ddp_store"
    return f"other: {cmd[:120]}"


def test_a_local_search_serves_the_dashboard_on_loopback_and_only_documented_listeners(
        coco_format_root, tmp_path):
    storage = tmp_path / "experiments"
    args = ["search", "--space", "tests/spaces/pu_only.yaml", "--no-export",
            *tiny_overrides(coco_format_root, storage, "sockets",
                            **{"tasks": "[{name: mlc_pl10, prob: 0.1}]",
                               "budget.trials_per_task": 1, "scheduler.type": "none",
                               "fixed.train_epochs": 3, "fixed.epochs": 3})]
    marker = new_marker()
    log = tmp_path / "search.log"
    seen: dict[tuple[str, int], dict] = {}
    with log.open("w") as out:
        driver = subprocess.Popen([PYTHON, str(REPO / "train_entry.py"), *args], cwd=REPO,
                                  env=search_env(marker), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + HANG_GUARD_S
            while driver.poll() is None and time.time() < deadline:
                tree = descendants(driver.pid)
                for sock in listening_sockets(tree):
                    sock["kind"] = kind_of(sock["pid"], driver.pid, sock["ip"])
                    # first sight: a process that is exiting no longer shows its command line
                    seen.setdefault((sock["ip"], sock["port"]), sock)
                time.sleep(0.5)
            rc = driver.wait(timeout=HANG_GUARD_S)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            left = stop_marked(marker)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert not left, [(pid, cmdline(pid)) for pid in left]
    summary = json.loads((storage / "sockets" / "summary.json").read_text())
    assert summary["trials"]["finished"] == 1

    listeners = sorted(seen.values(), key=lambda s: (s["kind"], s["port"]))
    report = "\n".join(f"{s['kind']:<18} {s['ip']}:{s['port']}  pid {s['pid']}"
                       for s in listeners)
    print("listening sockets of the search's process tree:\n" + report)
    kinds = {s["kind"] for s in listeners}
    assert {"dashboard", "gcs_server", "raylet", "worker"} <= kinds, report
    assert kinds <= set(DOCUMENTED), f"undocumented listeners:\n{report}"
    for s in listeners:
        if DOCUMENTED[s["kind"]] == "loopback":
            assert is_loopback(s["ip"]), f"{s['kind']} listens on {s['ip']}:\n{report}"
    # the dashboard (and the jobs API it serves) is where Ray said it is: on 127.0.0.1
    urls = re.findall(r"dashboard at (?:https?://)?([0-9.]+):(\d+)", text)
    for host, port in urls:
        assert host == "127.0.0.1"
        assert seen[(host, int(port))]["kind"] == "dashboard"

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Search on a cluster", 1)[1].split("\n## ", 1)[0]
    for kind, where in DOCUMENTED.items():
        row = re.search(rf"^\|[^|\n]*`{kind}`[^\n]*$", section, re.M)
        assert row, f"README 'Search on a cluster' does not list the {kind} listener"
        assert ("127.0.0.1" in row.group(0)) == (where == "loopback"), row.group(0)


def test_a_search_refuses_a_trial_larger_than_the_machine_before_any_trial(coco_format_root,
                                                                          tmp_path):
    """99 CPUs per worker on this machine: refused, no trial started (no Ray cluster sized from
    the request)."""
    storage = tmp_path / "experiments"
    proc = subprocess.run(
        [PYTHON, str(REPO / "train_entry.py"), "search", "--space", "tests/spaces/pu_only.yaml",
         *tiny_overrides(coco_format_root, storage, "huge",
                         **{"resources.cpus_per_worker": 99})],
        cwd=REPO, env=search_env(), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cpus_per_worker" in proc.stderr
    assert not (storage / "huge" / "trials").exists()
    assert not (storage / "huge").exists()
