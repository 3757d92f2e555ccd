"""``pu_mlc.engine.fit`` in-process: the two protocols, every loss and head, both data pipelines,
the files a run writes.

Runs use EfficientNet-Lite0 with its packaged ImageNet weights at 32 px on the tiny real-image
fixtures of ``conftest.py``, so one epoch takes seconds on a CPU.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from pu_mlc.config import TrainConfig
from pu_mlc.engine import fit
from pu_mlc.files import write_json_atomic
from pu_mlc.engine.selection import Selection
from engine_helpers import one_torch_thread, small_config  # noqa: F401 (autouse fixture)

protocols_module = importlib.import_module("pu_mlc.engine.protocols")


def leftover_temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# --- paper protocol ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paper_run(coco_format_root, module_tmp):
    """Two epochs under the paper protocol, with a reporter recording every call."""
    out = module_tmp / "paper" / "run"
    calls = []
    cfg = small_config(coco_format_root, out, train_epochs=2)
    result = fit(cfg, reporter=lambda metrics, ckpt: calls.append((metrics, ckpt)))
    return cfg, out, result, calls


def test_paper_protocol_reports_the_best_epoch_over_the_regular_and_the_ema_model(paper_run):
    _, _, result, _ = paper_run
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    per_epoch = [max(h["mAP"], h["mAP_ema"]) for h in history]
    best = max(per_epoch)
    r = result["result"]
    assert r["test_mAP"] == best == r["selection_score"]
    assert r["selected_epoch"] == per_epoch.index(best) + 1
    chosen = history[r["selected_epoch"] - 1]
    assert r["selected_model"] == ("ema" if chosen["mAP_ema"] > chosen["mAP"] else "regular")
    assert r["test_summary"]["mAP"] == best
    assert history[-1]["selected_test_mAP"] == best
    assert result["status"] == "finished" and result["protocol"] == "paper"


def test_paper_protocol_scores_every_test_image_every_epoch(paper_run, coco_format_dataset):
    _, _, result, _ = paper_run
    n_test = len(coco_format_dataset.splits["test"].files)
    assert result["data"]["test_images"] == n_test
    assert result["result"]["test_summary"]["num_images"] == n_test
    assert result["data"]["val_images"] == 0         # the paper protocol holds nothing out


def test_metrics_json_is_the_returned_payload_and_valid_json(paper_run):
    _, out, result, _ = paper_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert all(math.isfinite(h["train_loss"]) for h in on_disk["history"])
    assert leftover_temporaries(out) == []


def test_a_run_writes_its_config_checkpoints_and_log(paper_run):
    cfg, out, result, _ = paper_run
    recorded = TrainConfig.from_yaml(out / "config.yaml")
    # the run records what 'auto' meant here, never 'auto' itself
    assert (recorded.precision, recorded.data_pipeline) == ("fp32", "pil")
    assert recorded == cfg.replace(precision="fp32", data_pipeline="pil")
    assert recorded.to_dict() == result["config"]
    # fit is called from Python here without any logging setup: the log still has every epoch,
    # and the package logger's level is given back afterwards
    log_text = (out / "train.log").read_text()
    assert "INFO pu_mlc.engine.fit: epoch 1/2" in log_text and "epoch 2/2" in log_text
    counts = result["model"]
    assert f"{counts['total']:,} parameters ({counts['trainable']:,} trainable" in log_text
    assert logging.getLogger("pu_mlc").level == logging.NOTSET
    last = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and len(last["history"]) == 2
    best = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    r = result["result"]
    assert best["which"] == r["selected_model"] and best["epoch"] == r["selected_epoch"]
    assert best["selection_score"] == r["test_mAP"]
    if r["selected_epoch"] == 2:                      # selected in the last epoch: same weights
        key = "ema" if r["selected_model"] == "ema" else "model"
        for name, tensor in best["model"].items():
            assert torch.equal(tensor, last["recipe"][key][name]), name


def test_the_reporter_gets_every_epoch_and_the_last_checkpoint(paper_run):
    _, out, result, calls = paper_run
    assert [m["epoch"] for m, _ in calls] == [1, 2]
    assert all(ckpt == out / "checkpoints" / "last.pt" for _, ckpt in calls)
    assert [m["mAP"] for m, _ in calls] == [h["mAP"] for h in result["history"]]


# --- honest protocol --------------------------------------------------------------------------
def test_honest_protocol_selects_on_validation_and_scores_test_only_when_it_improves(
        coco_format_root, coco_format_dataset, tmp_path, monkeypatch):
    """Epoch 1 is made not to improve and epoch 2 to improve (offsets on the validation
    scores), so the test set must be scored after epochs 0 and 2 only, by the chosen model."""
    predicted: list[tuple[str, tuple[str, ...]]] = []
    real_predict = protocols_module.predict

    def recording_predict(models, target, *args, **kwargs):
        predicted.append((target.name, tuple(models)))
        return real_predict(models, target, *args, **kwargs)

    real_consider = Selection.consider
    offsets = {1: 0.0, 2: -1000.0, 3: 1000.0}
    verdicts = []

    def steered_consider(self, epoch, scores):
        verdicts.append(real_consider(self, epoch,
                                      {k: v + offsets[epoch] for k, v in scores.items()}))
        return verdicts[-1]

    monkeypatch.setattr(protocols_module, "predict", recording_predict)
    monkeypatch.setattr(Selection, "consider", steered_consider)
    result = fit(small_config(coco_format_root, tmp_path / "run", protocol="honest",
                              train_epochs=3))

    assert verdicts == [True, False, True]
    val_calls = [p for p in predicted if p[0] == "val"]
    test_calls = [p for p in predicted if p[0] == "test"]
    assert val_calls == [("val", ("regular", "ema"))] * 3
    assert len(test_calls) == 2 and all(len(models) == 1 for _, models in test_calls)
    order = [name for name, _ in predicted]
    assert order == ["val", "test", "val", "val", "test"]

    history = result["history"]
    assert all("mAP" not in h and "val_mAP" in h and "val_mAP_ema" in h for h in history)
    assert [h["best_epoch"] for h in history] == [1, 1, 3]
    assert history[1]["selected_test_mAP"] == history[0]["selected_test_mAP"]
    r = result["result"]
    assert r["selected_epoch"] == 3 and r["test_mAP"] == history[2]["selected_test_mAP"]
    assert r["test_mAP"] == r["test_summary"]["mAP"]
    assert r["selection_metric"].startswith("validation")
    assert r["test_summary"]["num_images"] == len(coco_format_dataset.splits["test"].files)
    # the coco layout has its own val split: used as is, nothing taken from train
    assert result["data"]["val_images"] == len(coco_format_dataset.splits["val"].files)
    assert result["data"]["train_images"] == len(coco_format_dataset.splits["train"].files)


def test_honest_protocol_holds_out_training_images_when_the_dataset_has_no_val_split(
        coco2014_root, coco2014_dataset, tmp_path):
    cfg = small_config(coco2014_root, tmp_path / "run", dataset="COCO2014", protocol="honest",
                       val_fraction=0.25)
    result = fit(cfg)
    n_train = len(coco2014_dataset.splits["train"].files)
    data = result["data"]
    assert data["val_images"] == n_train // 4
    assert data["train_images"] + data["val_images"] == n_train
    assert result["result"]["test_mAP"] is not None
    assert result["history"][0]["selected_test_mAP"] == result["result"]["test_mAP"]


# --- losses, heads, pipelines -----------------------------------------------------------------
@pytest.mark.parametrize("loss,prob", [("pu", 0.5), ("bce", 1.0), ("partial_bce", 0.5),
                                       ("assume_negative_bce", 0.5), ("asl", 0.5)])
def test_every_loss_trains_one_epoch_with_the_linear_head(loss, prob, coco_format_root,
                                                          tmp_path):
    result = fit(small_config(coco_format_root, tmp_path / "run", head="linear", loss=loss,
                              prob=prob))
    (epoch,) = result["history"]
    assert math.isfinite(epoch["train_loss"]) and epoch["steps"] == 24 // 4
    assert result["config"]["loss"] == loss and result["config"]["head"] == "linear"
    assert 0.0 <= result["result"]["test_mAP"] <= 100.0


def test_tensor_data_pipeline_trains_on_cpu(coco_format_root, tmp_path):
    result = fit(small_config(coco_format_root, tmp_path / "run", data_pipeline="tensor"))
    assert result["environment"]["data_pipeline"] == "tensor"
    assert math.isfinite(result["history"][0]["train_loss"])
    assert result["result"]["test_summary"]["num_images"] == 12


# --- atomic writes ----------------------------------------------------------------------------
def test_a_failed_json_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"epoch": 2, "bad": object()})   # not serialisable mid-write
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
