"""Shared pieces of the Ray end-to-end tests: the demo space shrunk to test size, subprocess runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from limits import HANG_GUARD_S

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def tiny_overrides(data: Path, storage: Path, name: str, **extra) -> list[str]:
    """``--set`` flags that run search_spaces/demo.yaml on a tiny dataset in seconds per trial."""
    values = {"fixed.data": str(data), "storage_path": str(storage), "name": name,
              "fixed.scale_size": 40, "fixed.crop_size": 32, "fixed.batch_size": 4,
              "fixed.eval_batch_size": 16, **extra}
    out = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def search_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1",
               RAY_DISABLE_USAGE_STATS="1", RAY_USAGE_STATS_ENABLED="0",
               RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="120")
    env.pop("RAY_ADDRESS", None)
    return env


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
