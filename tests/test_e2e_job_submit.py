"""``ray job submit`` of the demo search to a ``ray start --head`` on 127.0.0.1, with token auth.

This is the researcher's cluster workflow on one machine: a head node started from the project's
virtual environment with 127.0.0.1 as its node address, token authentication on (the token in a
private file named by RAY_AUTH_TOKEN_PATH), the repository uploaded as the job's working dir,
results written to an absolute storage path.

The head is this test's own: its session files live in a private ``--temp-dir`` and every process
of it carries the test's marker in its environment, so the test ends exactly those processes
(never ``ray stop``, which would stop every Ray on the host) and checks none is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ray_helpers import (MARKER_VAR, REPO, cmdline, free_port, marked_pids, new_marker,
                         stop_marked, tiny_overrides)
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e
RAY = str(Path(sys.executable).parent / "ray")


def test_ray_job_submit_runs_the_demo_search_on_a_token_protected_head(coco_format_root,
                                                                       tmp_path):
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
               RAY_DISABLE_USAGE_STATS="1")
    env.pop("RAY_ADDRESS", None)
    marker = new_marker()
    env[MARKER_VAR] = marker
    # a one-machine cluster: Ray keeps 127.0.0.1 as the node address, every port on loopback
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    temp_dir = tempfile.mkdtemp(prefix="pumlc-rt-", dir="/tmp")   # short: Unix socket paths
    gcs_port, dash_port = free_port(), free_port()
    try:
        start = subprocess.run(
            [RAY, "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash_port}", "--num-cpus=4", "--disable-usage-stats",
             f"--temp-dir={temp_dir}"],
            env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert start.returncode == 0, start.stderr[-3000:]
        assert marked_pids(marker), "the head's processes do not carry the test's marker"
        address = f"http://127.0.0.1:{dash_port}"
        storage = tmp_path / "experiments"
        entry = ["python", "train_entry.py", "search", "--space", "tests/spaces/pu_only.yaml",
                 *tiny_overrides(coco_format_root, storage, "job",
                                 **{"budget.trials_per_task": 1, "fixed.train_epochs": 1,
                                    "fixed.epochs": 1})]
        no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run([RAY, "job", "list", "--address", address], env=no_token,
                                 capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert refused.returncode != 0           # the jobs API refuses a client without token

        job = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir",
                              str(REPO), "--", *entry],
                             env=env, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
        assert "succeeded" in job.stdout + job.stderr
        summary = json.loads((storage / "job" / "summary.json").read_text())
        assert set(summary["tasks"]) == {"mlc_full", "mlc_pl10"}
        assert all(t["methods"]["pu_mlc"]["selected_trial"] for t in summary["tasks"].values())
        assert (storage / "job" / "exports" / "mlc_full" / "best_config.yaml").exists()
    finally:
        left = stop_marked(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, [(pid, cmdline(pid)) for pid in left]
