"""``pu-mlc evaluate`` / ``pu-mlc predict`` and the library behind them (``pu_mlc.inference``).

One tiny real run (EfficientNet-Lite0 with its packaged weights at 32 px, one epoch, honest
protocol, on the real-image ``coco`` fixture) gives a ``best.pt``; evaluating it must give back
exactly the numbers the run recorded, and predicting images must give the same scores.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import garbage_file, truncate_file
from engine_helpers import one_torch_thread, small_config  # noqa: F401 (autouse fixture)
from pu_mlc.cli import main as cli_main
from pu_mlc.engine import fit
from pu_mlc.engine.checkpoint import save_best_weights
from pu_mlc.errors import PUMLCError
from pu_mlc.inference import (CheckpointError, evaluate_split, load_run, predict_images,
                              read_best_checkpoint)
from pu_mlc.inference_cli import run_evaluate, run_predict
from pu_mlc.models import build_model


@pytest.fixture(scope="module")
def honest_run(coco_format_root, module_tmp):
    """One epoch under the honest protocol: metrics.json records test_mAP and the val score."""
    out = module_tmp / "inference" / "run"
    result = fit(small_config(coco_format_root, out, protocol="honest"))
    assert result["status"] == "finished" and result["result"]["test_mAP"] is not None
    return out, json.loads((out / "metrics.json").read_text())


def best_of(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.pt"


def one_line_error(capsys, argv) -> str:
    """Run the CLI, expect exit code 2 and one error line on stderr; return that line."""
    rc = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- evaluate ------------------------------------------------------------------------------------
def test_evaluate_gives_back_the_test_map_the_run_recorded(honest_run, coco_format_root):
    out, metrics = honest_run
    run = load_run(best_of(out), device="cpu")
    assert run.model.training is False
    assert run.class_names == tuple(metrics["result"]["test_summary"]["per_class_ap"])
    scored = evaluate_split(run, coco_format_root, split="test")
    recorded = metrics["result"]["test_summary"]
    assert scored.summary["mAP"] == pytest.approx(metrics["result"]["test_mAP"], abs=1e-6)
    assert scored.summary["num_images"] == recorded["num_images"]
    for name, ap in recorded["per_class_ap"].items():
        assert scored.summary["per_class_ap"][name] == pytest.approx(ap, abs=1e-6), name
    for key in ("OF1", "CF1", "OP", "OR", "CP", "CR"):
        assert scored.summary[key] == pytest.approx(recorded[key], abs=1e-6), key
    assert scored.scores.shape == (recorded["num_images"], len(run.class_names))


def test_evaluate_on_the_val_split_gives_back_the_honest_selection_score(honest_run,
                                                                         coco_format_root):
    out, metrics = honest_run
    run = load_run(best_of(out), device="cpu")
    scored = evaluate_split(run, coco_format_root, split="val")
    assert scored.summary["mAP"] == pytest.approx(metrics["result"]["selection_score"],
                                                  abs=1e-6)


def test_evaluate_command_prints_the_scores_and_writes_per_class_ap(honest_run,
                                                                    coco_format_root, tmp_path,
                                                                    capsys):
    out, metrics = honest_run
    report = tmp_path / "reports" / "eval.json"
    assert run_evaluate([str(best_of(out)), str(coco_format_root), "--device", "cpu",
                         "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    test_map = metrics["result"]["test_mAP"]
    assert f"test mAP {test_map:.4f}" in printed and "OF1" in printed and "CF1" in printed
    saved = json.loads(report.read_text())
    assert saved["mAP"] == pytest.approx(test_map, abs=1e-6)
    assert list(saved["per_class_ap"]) == list(metrics["result"]["test_summary"]["per_class_ap"])
    assert saved["split"] == "test" and saved["checkpoint"] == str(best_of(out))
    for name in saved["per_class_ap"]:
        assert name in printed


def test_evaluate_takes_the_run_dir_and_defaults_to_the_runs_dataset(honest_run, capsys):
    out, metrics = honest_run
    assert cli_main(["evaluate", str(out), "--device", "cpu", "--batch-size", "5"]) == 0
    assert f"test mAP {metrics['result']['test_mAP']:.4f}" in capsys.readouterr().out


def test_evaluate_refuses_a_dataset_with_other_classes(honest_run, voc2007_root, capsys):
    out, _ = honest_run
    line = one_line_error(capsys, ["evaluate", str(best_of(out)), str(voc2007_root),
                                   "--dataset", "voc2007", "--device", "cpu"])
    assert "classes" in line and str(best_of(out)) in line


# --- predict -------------------------------------------------------------------------------------
def test_predict_writes_one_row_per_image_with_the_scores_evaluate_gives(honest_run,
                                                                         coco_format_root,
                                                                         tmp_path):
    out, _ = honest_run
    run = load_run(best_of(out), device="cpu")
    scored = evaluate_split(run, coco_format_root, split="test")
    picked = [5, 0, 3]                                 # any order, not a batch of the split's
    images = [str(scored.image_dir / scored.files[i]) for i in picked]
    csv_path = tmp_path / "scores.csv"
    assert run_predict([str(best_of(out)), *images, "--out", str(csv_path),
                        "--device", "cpu"]) == 0
    rows = list(csv.reader(csv_path.open()))
    c = len(run.class_names)
    assert rows[0][:1 + c] == ["image", *run.class_names]       # then one decision per class
    assert len(rows[0]) == 1 + 2 * c
    assert [r[0] for r in rows[1:]] == images
    values = np.array([[float(v) for v in r[1:1 + c]] for r in rows[1:]])
    assert values.shape == (len(images), len(run.class_names))
    assert ((values >= 0) & (values <= 1)).all()
    np.testing.assert_allclose(values, scored.scores[picked], atol=1e-6, rtol=0)
    # the library call gives the same scores (one image per batch here)
    np.testing.assert_allclose(predict_images(run, images, batch_size=1), scored.scores[picked],
                               atol=1e-6, rtol=0)


def test_predict_to_stdout(honest_run, coco_format_root, capsys):
    out, _ = honest_run
    image = next((Path(coco_format_root) / "test").iterdir())
    assert cli_main(["predict", str(best_of(out)), str(image), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("image,") and lines[1].startswith(str(image))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "directory"])
def test_predict_names_an_unreadable_image_in_one_line(honest_run, coco_format_root, tmp_path,
                                                       capsys, damage):
    out, _ = honest_run
    good = next((Path(coco_format_root) / "test").iterdir())
    bad = tmp_path / f"bad_{damage}.jpg"
    if damage == "garbage":
        garbage_file(bad)
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes())
        truncate_file(bad, keep=200)
    elif damage == "directory":
        bad.mkdir()
    line = one_line_error(capsys, ["predict", str(best_of(out)), str(good), str(bad),
                                   "--device", "cpu", "--out", str(tmp_path / "s.csv")])
    assert str(bad) in line
    assert not (tmp_path / "s.csv").exists()


# --- checkpoints that are not a best.pt ----------------------------------------------------------
class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_crafted_pickle_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "best.pt"
    torch.save({"format_version": 2, "model": _Payload(marker)}, evil)
    line = one_line_error(capsys, ["evaluate", str(evil), str(tmp_path), "--device", "cpu"])
    assert str(evil) in line
    assert not marker.exists()
    line = one_line_error(capsys, ["predict", str(evil), str(evil), "--device", "cpu"])
    assert str(evil) in line and not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "text", "last_pt", "state_dict", "missing"])
def test_a_foreign_or_damaged_checkpoint_is_refused_naming_the_file(honest_run, tmp_path, kind):
    out, _ = honest_run
    path = tmp_path / "model.pt"
    if kind == "truncated":
        path.write_bytes(best_of(out).read_bytes())
        truncate_file(path)
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "last_pt":
        path = out / "checkpoints" / "last.pt"
    elif kind == "state_dict":
        torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as info:
        read_best_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, PUMLCError)


def test_weights_that_do_not_fit_the_config_are_refused(honest_run, tmp_path):
    out, _ = honest_run
    state = torch.load(best_of(out), weights_only=True)
    state["model"].pop(next(iter(state["model"])))
    path = tmp_path / "best.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_run(path, device="cpu")


def test_a_linear_head_checkpoint_round_trips(honest_run, tmp_path):
    """No word vectors or adjacency: the model is rebuilt from the config alone."""
    out, _ = honest_run
    cfg = read_best_checkpoint(best_of(out))["config"]
    cfg = {**cfg, "head": "linear"}
    names = ("cat", "dog", "bird")
    torch.manual_seed(1)
    model = build_model(cfg["model_name"], len(names), head="linear", pretrained=None,
                        lgc=cfg["lgc"], lgc_impl=cfg["lgc_impl"], head_dim=cfg["head_dim"])
    path = tmp_path / "best.pt"
    save_best_weights(path, model, cfg, names, 3, "ema", 12.5)
    run = load_run(path, device="cpu")
    assert run.class_names == names and run.epoch == 3 and run.which == "ema"
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(run.model(x), model(x), rtol=0, atol=0)
