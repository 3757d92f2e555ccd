"""``pu-mlc predict`` and ``evaluate`` decide at the thresholds the run chose for its selected
model (on the validation split under the honest protocol), never at an unstated 0.5: the CSV
has one yes/no column per class whose header names the threshold, whether it is global or per
class and the split it was chosen on; ``evaluate`` reports OF1/CF1 there."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine_helpers import one_torch_thread, small_config  # noqa: F401 (autouse fixture)
from pu_mlc.engine import fit
from pu_mlc.engine.checkpoint import save_best_weights
from pu_mlc.inference import CheckpointError, load_run, read_best_checkpoint
from pu_mlc.inference_cli import run_evaluate, run_predict


@pytest.fixture(scope="module")
def honest_run(coco_format_root, module_tmp):
    out = module_tmp / "decisions" / "run"
    fit(small_config(coco_format_root, out, protocol="honest"))
    return out, json.loads((out / "metrics.json").read_text())["result"]


def some_images(root: Path, k: int = 4) -> list[str]:
    return [str(p) for p in sorted((root / "test").glob("*.jpg"))[:k]]




def rewrite_best(src: Path, dst: Path, thresholds) -> Path:
    """``src``'s best.pt saved again at ``dst`` with ``thresholds`` (None: without any)."""
    state = read_best_checkpoint(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_best_weights(dst, load_run(src, device="cpu").model, state["config"],
                      tuple(state["class_names"]), state["epoch"], state["which"],
                      state["selection_score"], thresholds=thresholds)
    return dst


def predicted(capsys, argv) -> tuple[list[str], list[list[str]], str]:
    capsys.readouterr()
    assert run_predict(argv) == 0
    out, err = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out)))
    return rows[0], rows[1:], err


def test_predict_decides_at_the_threshold_the_run_chose_on_validation(honest_run,
                                                                     coco_format_root, capsys):
    out, result = honest_run
    threshold = result["thresholds"]["values"][0]
    images = some_images(coco_format_root)
    header, rows, _ = predicted(capsys, [str(out), *images, "--device", "cpu"])
    names = list(result["test_summary"]["per_class_ap"])
    assert header[:1 + len(names)] == ["image", *names]
    assert header[1 + len(names):] == [
        f"positive[{n}] (score >= {threshold:.4g}; global threshold chosen on val)"
        for n in names]
    for row in rows:
        scores = np.array([float(v) for v in row[1:1 + len(names)]])
        decisions = [int(v) for v in row[1 + len(names):]]
        assert decisions == [int(s >= threshold) for s in scores]


def test_a_checkpoints_own_thresholds_come_first_and_may_be_per_class(honest_run,
                                                                      coco_format_root,
                                                                      tmp_path, capsys):
    out, result = honest_run
    names = list(result["test_summary"]["per_class_ap"])
    own = {"kind": "per_class", "values": list(np.linspace(0.3, 0.7, len(names))),
           "chosen_on": "val", "criterion": "test"}
    best = rewrite_best(out / "checkpoints" / "best.pt",
                        tmp_path / "run" / "checkpoints" / "best.pt", own)
    run = load_run(best, device="cpu")
    assert run.thresholds["source"] == "best.pt" and run.thresholds["kind"] == "per_class"
    header, rows, _ = predicted(capsys, [str(best), *some_images(coco_format_root),
                                         "--device", "cpu"])
    assert header[1 + len(names)] == \
        f"positive[{names[0]}] (score >= 0.3; per-class threshold chosen on val)"
    for row in rows:
        scores = np.array([float(v) for v in row[1:1 + len(names)]])
        assert [int(v) for v in row[1 + len(names):]] == \
            [int(s >= t) for s, t in zip(scores, own["values"])]


def test_a_checkpoint_without_thresholds_outside_its_run_gives_scores_only_and_says_so(
        honest_run, coco_format_root, tmp_path, capsys):
    out, result = honest_run
    best = rewrite_best(out / "checkpoints" / "best.pt", tmp_path / "alone" / "best.pt", None)
    header, rows, err = predicted(capsys, [str(best), *some_images(coco_format_root, 2),
                                           "--device", "cpu"])
    assert len(header) == 1 + len(result["test_summary"]["per_class_ap"])
    assert "records no decision threshold" in err and "scores only" in err


def test_without_its_own_thresholds_a_runs_checkpoint_takes_those_of_its_metrics(
        honest_run, tmp_path):
    out, result = honest_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    rewrite_best(out / "checkpoints" / "best.pt", copy / "checkpoints" / "best.pt", None)
    run = load_run(copy, device="cpu")
    assert run.thresholds["values"] == result["thresholds"]["values"]
    assert run.thresholds["source"] == str(copy / "metrics.json")
    # another epoch's metrics do not describe these weights: no thresholds from them
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["result"]["selected_epoch"] = 7
    (copy / "metrics.json").write_text(json.dumps(metrics))
    assert load_run(copy, device="cpu").thresholds is None


def test_malformed_thresholds_are_refused_naming_the_checkpoint(honest_run, tmp_path):
    out, _ = honest_run
    best = rewrite_best(out / "checkpoints" / "best.pt", tmp_path / "bad" / "best.pt",
                        {"kind": "global", "values": [2.0], "chosen_on": "val"})
    with pytest.raises(CheckpointError, match="'thresholds' must be"):
        load_run(best, device="cpu")


def test_evaluate_reports_f1_at_the_runs_threshold_as_the_run_recorded_it(honest_run,
                                                                          coco_format_root,
                                                                          tmp_path, capsys):
    out, result = honest_run
    report = tmp_path / "eval.json"
    capsys.readouterr()
    assert run_evaluate([str(out), str(coco_format_root), "--device", "cpu",
                         "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    threshold = result["thresholds"]["values"][0]
    assert f"at the global threshold {threshold:.2f} chosen on val" in printed
    saved = json.loads(report.read_text())
    for key in ("OF1", "CF1", "OP", "OR", "CP", "CR"):
        assert saved["f1_at_thresholds"][key] == pytest.approx(result["test_f1"][key],
                                                               abs=1e-6), key
    assert saved["thresholds"]["values"] == result["thresholds"]["values"]
