"""The prepared GPU check (``bench/gpu_check.sh``) works before anyone spends device time on it.

The script is run once per task that is lent a GPU, with no chance to debug it there, so its
dry-run mode (the same stages at toy sizes on the CPU) is run here end to end: every stage passes,
each leaves its JSON, and the final report reads them. Without CUDA and without the dry-run flag it
must refuse at once (exit 2), not measure the CPU and report it as the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"
pytestmark = pytest.mark.e2e


def run_check(out: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, **env_extra)
    # no time limit: the dry run must pass on a busy machine (the script itself drops its
    # per-stage GPU-lease limits in dry-run mode; a test below checks they are not applied)
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True,
                          text=True)


def test_the_dry_run_passes_every_stage_and_writes_the_report(tmp_path):
    res = run_check(tmp_path, PUMLC_BENCH_DRY_CPU="1")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "FAILED" not in (tmp_path / "gpu_check.log").read_text()
    for name in ("parity.json", "step.json", "data.json", "step_cudnn_benchmark.json",
                 "summary.md", "summary.json"):
        assert (tmp_path / name).is_file(), name
    step = json.loads((tmp_path / "step.json").read_text())
    assert {r["name"] for r in step["rows"]} >= {"published", "ours"}
    assert step["loss_parity"]["ok"]
    summary = (tmp_path / "summary.md").read_text()
    assert "published" in summary and "ours" in summary
    log = (tmp_path / "gpu_check.log").read_text()
    assert "dry run: no time limit" in log and "(limit " not in log   # nothing cut on a slow CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_check_refuses_instead_of_measuring_the_cpu(tmp_path):
    res = run_check(tmp_path)
    assert res.returncode == 2
    assert "CUDA is not available" in res.stdout + res.stderr
    assert not (tmp_path / "step.json").exists()
