"""``ray job submit`` of the demo search to a ``ray start --head`` on 127.0.0.1, with token auth.

This is the researcher's cluster workflow on one machine: a head node started from the project's
virtual environment, token authentication on (the token in a private file named by
RAY_AUTH_TOKEN_PATH), the repository uploaded as the job's working dir, results written to an
absolute storage path.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from ray_helpers import REPO, free_port, tiny_overrides
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
    gcs_port, dash_port = free_port(), free_port()
    start = subprocess.run(
        [RAY, "start", "--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash_port}", "--num-cpus=4", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert start.returncode == 0, start.stderr[-3000:]
    address = f"http://127.0.0.1:{dash_port}"
    try:
        storage = tmp_path / "experiments"
        entry = ["python", "train_entry.py", "search", "--space", "search_spaces/demo.yaml",
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
        assert all(t["best"] is not None for t in summary["tasks"].values())
        assert (storage / "job" / "exports" / "mlc_full" / "best_config.yaml").exists()
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=HANG_GUARD_S)
