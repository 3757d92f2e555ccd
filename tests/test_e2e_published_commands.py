"""The paper's two published command lines, run end to end on CPU.

The README of the paper trains with::

    python -m torch.distributed.launch --nproc_per_node=2 --use_env train.py <dataset_path> \\
        --dataset=COCO2014 --model-name=resnet101 --pretrainedModel=<pretrained_model_path> \\
        --workers=8 --scaleSize=512 --cropSize=448 --topK=1 --b=35 --num-classes=80 --lr=1e-4 \\
        --ema=0.9997 --Stop_epoch=40 --alpha=1.0 --prob=0.1 --gamma=0.55
    (VOC: --dataset=VOC2007 --b=45 --num-classes=20 --lr=4e-5 --Stop_epoch=55 --ema=0.991
     --alpha=2.0 --gamma=0.85)

Here ``train.py`` is ``train_entry.py`` and only sizes change (``--scaleSize/--cropSize/--b/
--Stop_epoch/--workers``); the fixtures list all 80 COCO and all 20 VOC categories, so the
published class counts stay, and so does the published model: ResNet-101 with the paper's 300-d
class word vectors (shipped, the default for COCO2014/VOC2007), whose parameter counts every log
must state. ``--pretrainedModel`` is a real torchvision-keyed ResNet-101 state dict (random
weights: no ImageNet weights exist offline), or ``None`` as in the VOC case. No ``--output-dir``
is given, as in the published command: each run gets its own dated folder under ``runs/train``,
so both commands run back to back in one working directory. Each command runs under
``torchrun``, under ``python -m torch.distributed.launch --use_env`` (2 gloo processes) or as one
process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from pu_mlc.config import TrainConfig
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "train_entry.py"
#: --scaleSize, --cropSize, --b in the published order (--workers and --Stop_epoch: per test)
SIZES = ["--scaleSize=64", "--cropSize=64", "--b=2"]
PER_EPOCH_SCALARS = ("train/loss", "train/lr", "test/mAP", "test/mAP_ema")
#: (total, trainable) parameters of the published models (SPEC §3; VOC: 60 classes x 1025 fewer).
PUBLISHED_COUNTS = {"COCO2014": (62_600_081, 35_064_657), "VOC2007": (62_538_581, 35_003_157)}


def coco_command(root: Path, pretrained, stop_epoch: int, workers: int) -> list[str]:
    """The published COCO command line, in its order; only sizes changed."""
    return [str(root), "--dataset=COCO2014", "--model-name=resnet101",
            f"--pretrainedModel={pretrained}", f"--workers={workers}", *SIZES, "--topK=1",
            "--num-classes=80", "--lr=1e-4", "--ema=0.9997", f"--Stop_epoch={stop_epoch}",
            "--alpha=1.0", "--prob=0.1", "--gamma=0.55"]


def voc_command(root: Path, pretrained, stop_epoch: int, workers: int) -> list[str]:
    """The published VOC command line, in its order; only sizes changed."""
    return [str(root), "--dataset=VOC2007", "--model-name=resnet101",
            f"--pretrainedModel={pretrained}", f"--workers={workers}", *SIZES, "--topK=1",
            "--num-classes=20", "--lr=4e-5", f"--Stop_epoch={stop_epoch}", "--ema=0.991",
            "--alpha=2.0", "--prob=0.1", "--gamma=0.85"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launcher: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([*launcher, str(ENTRY), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "Traceback" not in proc.stderr
    return proc


def torchrun(port: int) -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*base, "--nproc_per_node=2", "--master-addr=127.0.0.1", f"--master-port={port}"]


def distributed_launch(port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={port}", "--use_env"]


@pytest.fixture(scope="module")
def resnet101_weights(tmp_path_factory) -> Path:
    """A torchvision ResNet-101 state dict (randomly initialised, ImageNet ``fc`` included)."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet101.pth"
    torch.save(torchvision.models.resnet101().state_dict(), path)
    return path


def run_dir(cwd: Path, dataset: str) -> Path:
    """The one dated folder a run without --output-dir made under ``cwd/runs/train``."""
    found = sorted((cwd / "runs" / "train").glob(f"*-{dataset}-resnet101"))
    assert len(found) == 1, found
    return found[0]


def check_run(out: Path, *, stop_epoch: int, n_test: int, world_size: int,
              expected: dict) -> dict:
    """Everything a finished run must leave behind, read back with the tools users use."""
    metrics = json.loads((out / "metrics.json").read_text())
    total, trainable = PUBLISHED_COUNTS[expected["dataset"]]
    assert metrics["model"]["total"] == total and metrics["model"]["trainable"] == trainable
    assert f"{total:,} parameters ({trainable:,} trainable" in (out / "train.log").read_text()
    assert "word vectors 80x300" in (out / "train.log").read_text() or \
        expected["dataset"] != "COCO2014"
    assert metrics["status"] == "finished"
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, stop_epoch + 2))
    result = metrics["result"]
    best = max(max(h["mAP"], h["mAP_ema"]) for h in metrics["history"])
    assert 0.0 <= result["test_mAP"] == best <= 100.0
    assert metrics["environment"]["world_size"] == world_size
    # every test image scored exactly once across the ranks
    assert metrics["data"]["test_images"] == n_test
    assert result["test_summary"]["num_images"] == n_test

    cfg = TrainConfig.from_yaml(out / "config.yaml")
    for name, value in expected.items():
        assert getattr(cfg, name) == value, name

    last = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == stop_epoch + 1 and len(last["history"]) == stop_epoch + 1
    best_ckpt = torch.load(out / "checkpoints" / "best.pt", map_location="cpu",
                           weights_only=True)
    assert best_ckpt["which"] == result["selected_model"]
    assert "INFO" in (out / "train.log").read_text()

    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1                          # rank 0 writes, the others do not
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in PER_EPOCH_SCALARS:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, stop_epoch + 2)), tag
    assert [e.value for e in acc.Scalars("test/mAP")] == pytest.approx(
        [h["mAP"] for h in metrics["history"]], rel=1e-6)
    hparams = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info",
            "_hparams_/session_end_info"} <= set(hparams)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(expected["lr"])
    assert start.hparams["dataset"].string_value == expected["dataset"]
    return metrics


def test_published_coco_and_voc_commands_run_back_to_back_in_one_directory(
        coco2014_root, coco2014_dataset, voc2007_root, voc2007_dataset, resnet101_weights,
        tmp_path):
    """COCO under torchrun, then VOC under torch.distributed.launch, in the same directory."""
    coco = launch(torchrun(free_port()), coco_command(coco2014_root, resnet101_weights, 0,
                                                      workers=0), cwd=tmp_path)
    assert "test mAP" in coco.stdout
    assert "624 tensors loaded" in coco.stderr       # the ResNet-101 file was really read
    voc = launch(distributed_launch(free_port()), voc_command(voc2007_root, "None", 0, workers=1),
                 cwd=tmp_path)
    assert "test mAP" in voc.stdout
    coco_out, voc_out = run_dir(tmp_path, "COCO2014"), run_dir(tmp_path, "VOC2007")
    assert str(coco_out) in coco.stdout and str(voc_out) in voc.stdout
    check_run(coco_out, stop_epoch=0, world_size=2,
              n_test=len(coco2014_dataset.splits["test"].files),
              expected=dict(dataset="COCO2014", model_name="resnet101", num_classes=80,
                            batch_size=2, lr=1e-4, ema=0.9997, alpha=1.0, prob=0.1, gamma=0.55,
                            word_vectors="auto", pretrained_model=str(resnet101_weights)))
    check_run(voc_out, stop_epoch=0, world_size=2,
              n_test=len(voc2007_dataset.splits["test"].files),
              expected=dict(dataset="VOC2007", model_name="resnet101", num_classes=20,
                            batch_size=2, lr=4e-5, ema=0.991, alpha=2.0, prob=0.1, gamma=0.85,
                            pretrained_model=None))


def test_published_coco_command_runs_as_one_process(coco2014_root, coco2014_dataset,
                                                    resnet101_weights, tmp_path):
    command = coco_command(coco2014_root, resnet101_weights, 1, workers=0)
    proc = launch([sys.executable], command, cwd=tmp_path)
    assert "test mAP" in proc.stdout
    check_run(run_dir(tmp_path, "COCO2014"), stop_epoch=1, world_size=1,
              n_test=len(coco2014_dataset.splits["test"].files),
              expected=dict(dataset="COCO2014", model_name="resnet101", num_classes=80,
                            batch_size=2, lr=1e-4, ema=0.9997, alpha=1.0, prob=0.1, gamma=0.55,
                            train_epochs=2, pretrained_model=str(resnet101_weights)))
