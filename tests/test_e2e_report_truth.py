"""On the session's real finished search (``methods_search``: 2 tasks x 3 methods in 5 studies,
2 trials + 3 repeats each), everything the report and the summary claim is recomputed from
independent sources: the chance mAP from the test annotations (pycocotools), OF1/CF1 from the
scores each trial kept at the threshold it chose on validation, ``pu-mlc predict``'s decisions
from the same thresholds, the paired confidence intervals from the repeat trials' files (scipy),
each figure's plotted data from the table and the trials, and the Optuna studies and the
dashboard command from Optuna and the venv themselves."""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from builders import annotated
from conftest import METHODS, REPEATS, STUDIES, TASKS
from pu_mlc.metrics import decode_scores, f1_scores

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def truth_report(methods_search, module_tmp):
    from tune.report import write_report

    exp, proc = methods_search
    written = write_report(exp, module_tmp / "truth" / "report")
    return exp, proc, written["results"], Path(written["report_md"]).read_text()


def trials_of(exp: Path, study: str) -> dict[str, dict]:
    """Every trial of a study: its trial.json joined with its metrics.json."""
    out = {}
    for folder in sorted((exp / "trials" / study).iterdir()):
        meta = json.loads((folder / "trial.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        out[folder.name] = {**meta, "result": metrics["result"], "status": metrics["status"],
                            "history": metrics["history"], "folder": folder}
    return out


def repeats_of(exp: Path, study: str) -> dict[int, dict]:
    return {t["repeat"]: t for t in trials_of(exp, study).values() if t["stage"] == "repeats"}


def recomputed_f1(trial: dict, positives: np.ndarray) -> dict:
    result = trial["result"]
    scores = decode_scores(result["test_scores"])
    thresholds = result["thresholds"]
    assert thresholds["chosen_on"] == "val" and thresholds["kind"] == "global"
    return f1_scores(scores, positives, threshold=thresholds["values"][0])


# ------------------------------------------------------------------- 1: one study for two
def test_the_two_bce_baselines_ran_as_one_study_at_full_labels_and_show_as_one_row(
        truth_report):
    exp, proc, res, md = truth_report
    assert sorted(p.name for p in (exp / "trials").iterdir()) == sorted(STUDIES)
    [eq] = res["equivalences"]
    assert eq["study"] == "full.partial_bce"
    assert eq["methods"] == ["partial_bce", "assume_negative_bce"]
    full = md[md.index("### full: 100% known labels"):md.index("## Search noise")]
    bce = [ln for ln in full.splitlines() if ln.startswith("| ") and "bce" in ln]
    assert len(bce) == 1 and bce[0].startswith("| partial_bce = assume_negative_bce ‡")
    assert eq["reason"] in md and "every label is known" in eq["reason"]
    # the printed summary: one line for both at full labels, and why
    full_lines = proc.stdout[proc.stdout.index("    full (prob=1"):
                             proc.stdout.index("    p10 (prob=0.1")]
    assert "partial_bce = assume_negative_bce" in full_lines
    assert "note: partial_bce and assume_negative_bce are one study" in full_lines
    assert not any(ln.strip().startswith("assume_negative_bce ") for ln in
                   full_lines.splitlines())


# ---------------------------------------------------------------------- 2: chance and F1
def test_the_chance_map_in_the_report_is_the_test_annotations_class_prevalence(
        truth_report, coco_format_root):
    _, _, res, md = truth_report
    _, positives = annotated(coco_format_root)
    chance = 100 * positives.mean(axis=0).mean()
    assert res["chance"] == {t: pytest.approx(chance, abs=1e-9) for t in TASKS}
    [row] = [ln for ln in md.splitlines() if ln.startswith("| chance (mean class prevalence")]
    assert row.count(f"{chance:.2f}") == len(TASKS)
    # the F1 an "every label is present" answer gets, which the report states beside it
    everything = f1_scores(np.ones(positives.shape), positives, threshold=0.5)
    assert md.count(f"calling every label positive gives OF1 {everything['OF1']:.2f} and "
                    f"CF1 {everything['CF1']:.2f}") == len(TASKS)


def test_f1_cells_are_recomputed_from_the_kept_scores_at_the_validation_thresholds(
        truth_report, coco_format_root):
    exp, _, res, md = truth_report
    files, positives = annotated(coco_format_root)
    for method in METHODS:
        for task in TASKS:
            cell = res["table"][method]["cells"][task]
            trials = trials_of(exp, cell["study"])
            selected = trials[cell["selected_trial"]]
            assert selected["result"]["test_scores"]["images"] == files
            again = recomputed_f1(selected, positives)
            assert cell["selected_f1"]["OF1"] == pytest.approx(again["OF1"], abs=1e-9)
            assert cell["selected_f1"]["CF1"] == pytest.approx(again["CF1"], abs=1e-9)
            assert cell["selected_f1"]["threshold"] == \
                selected["result"]["thresholds"]["values"][0]
            per_repeat = [recomputed_f1(t, positives) for _, t in
                          sorted(repeats_of(exp, cell["study"]).items())]
            assert len(per_repeat) == REPEATS
            for key in ("OF1", "CF1"):
                values = [f[key] for f in per_repeat]
                assert cell[key] == pytest.approx(statistics.fmean(values), abs=1e-9)
                assert cell[f"{key}_sd"] == pytest.approx(statistics.stdev(values), abs=1e-9)
            if not cell.get("same_study_as"):
                section = md[md.index(f"### {task}:"):]
                line = next(ln for ln in section.splitlines()
                            if ln.startswith(f"| {' = '.join(cell['methods'])}"))
                assert f"| {cell['OF1']:.2f} ± {cell['OF1_sd']:.2f} | " \
                       f"{cell['CF1']:.2f} ± {cell['CF1_sd']:.2f} |" in line


def test_predict_decides_at_the_selected_trials_validation_threshold(truth_report,
                                                                     coco_format_root,
                                                                     tmp_path):
    from pu_mlc.inference_cli import run_predict

    exp, _, res, _ = truth_report
    cell = res["table"]["pu_mlc"]["cells"]["p10"]
    trial = trials_of(exp, cell["study"])[cell["selected_trial"]]
    threshold = trial["result"]["thresholds"]["values"][0]
    files, _ = annotated(coco_format_root)
    kept = decode_scores(trial["result"]["test_scores"])
    picked = [0, 4, 7]
    out = tmp_path / "scores.csv"
    assert run_predict([str(trial["folder"] / "checkpoints" / "best.pt"),
                        *[str(coco_format_root / "test" / files[i]) for i in picked],
                        "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.reader(out.open()))
    c = kept.shape[1]
    assert all(h.endswith(f"(score >= {threshold:.4g}; global threshold chosen on val)")
               for h in rows[0][1 + c:])
    for i, row in zip(picked, rows[1:]):
        scores = np.array([float(v) for v in row[1:1 + c]])
        np.testing.assert_allclose(scores, kept[i], atol=1e-5, rtol=0)
        decisions = np.array([int(v) for v in row[1 + c:]], bool)
        assert (decisions == (scores >= threshold)).all()
        clear = np.abs(kept[i] - threshold) > 1e-5          # the kept scores decide the same
        assert (decisions[clear] == (kept[i] >= threshold)[clear]).all()


# -------------------------------------------------------------------------- 3: intervals
def test_the_paired_intervals_equal_t_intervals_of_the_repeat_trials_files(truth_report):
    from scipy import stats as scipy_stats

    exp, _, res, md = truth_report
    for baseline in ("partial_bce", "assume_negative_bce"):
        for task in TASKS:
            ref = repeats_of(exp, f"{task}.pu_mlc")
            base = repeats_of(exp, res["table"][baseline]["cells"][task]["study"])
            diffs = [ref[r]["result"]["test_mAP"] - base[r]["result"]["test_mAP"]
                     for r in range(1, REPEATS + 1)]
            mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
            half = scipy_stats.t.ppf(0.975, REPEATS - 1) * sd / math.sqrt(REPEATS)
            d = res["paired_differences"][baseline]["cells"][task]
            assert d["n"] == REPEATS and d["ci"]["method"] == "Student t"
            assert (d["ci"]["low"], d["ci"]["high"]) == pytest.approx(
                (mean - half, mean + half), abs=1e-9)
            assert d["significant"] == (mean - half > 0 or mean + half < 0)
    [row] = [ln for ln in md.splitlines() if ln.startswith("| pu_mlc − partial_bce (paired)")]
    d = res["paired_differences"]["partial_bce"]["cells"]["p10"]
    assert f"[{d['ci']['low']:+.2f}, {d['ci']['high']:+.2f}]" in row
    assert "This ranking is unsupported" not in md and "95% Student t" in md


# ----------------------------------------------------------------------------- 4: figures
def test_every_figure_shows_what_the_table_and_the_trials_say(truth_report):
    exp, _, res, _ = truth_report
    figures = {(f["kind"], f["title"].split(":")[0].split(" (")[0]): f for f in res["figures"]}
    assert figures[("curves", "full.partial_bce")]["title"].startswith(
        "full.partial_bce (partial_bce = assume_negative_bce): ")
    data = next(f for f in res["figures"] if f["kind"] == "map_vs_proportion")["data"]
    measured = sorted(100 * p for p in TASKS.values())
    for method, row in res["table"].items():
        cells = sorted((100 * c["prob"], row["cells"][c["task"]]) for c in res["columns"])
        offsets = data["offsets"][method]
        assert [x - offsets[f"{m:g}"] for x, (m, _) in zip(data["points"][method]["x"], cells)] \
            == pytest.approx([m for m, _ in cells])            # shifted as the title says
        assert data["points"][method]["y"] == pytest.approx([c["mean"] for _, c in cells])
        bars = [(b["low"], b["high"]) for b in data["errorbars"][method]]
        assert bars == [pytest.approx((c["mean"] - c["sd"], c["mean"] + c["sd"]))
                        for _, c in cells]
    # one study, one position: the merged BCE point is drawn once for both methods
    assert data["offsets"]["assume_negative_bce"]["100"] == data["offsets"]["partial_bce"]["100"]
    assert data["segments"] == {}                 # 10% and 100% are no neighbours: no line
    assert [c["y"] for c in data["chance"]] == pytest.approx(
        [res["chance"]["p10"]])
    assert data["xticks"] == measured
    # curves: one epoch per trial, so each trial's regular and EMA validation mAP
    for name in STUDIES:
        curve = figures[("curves", name)]["data"]
        trials = trials_of(exp, name)
        assert curve["mode"] == "one_epoch"
        assert sorted(curve["trials"]) == sorted(i for i, t in trials.items()
                                                 if t["stage"] == "search")
        for tid, regular, ema in zip(curve["trials"], curve["regular"], curve["ema"]):
            record = trials[tid]["history"][0]
            assert (regular, ema) == (record["val_mAP"], record["val_mAP_ema"])
        parallel = figures[("parallel", name)]["data"]
        assert parallel["trials"] == {i: t["result"]["selection_score"]
                                      for i, t in trials.items() if t["stage"] == "search"}
        importance = figures[("importance", name)]["data"]
        assert importance["importances"] is None and len(importance["points"]) == 2
    per_class = next(f for f in res["figures"] if f["kind"] == "per_class_ap")["data"]
    assert per_class["xlim"][1] <= min(100.0, per_class["largest_ap"] * 1.12 + 1.0) + 1e-9


# ------------------------------------------------------------------------ 5: Optuna studies
def test_the_optuna_studies_name_their_objective_and_their_task_method_and_protocol(
        truth_report):
    exp, _, _, _ = truth_report
    url = f"sqlite:///{exp / 'optuna.sqlite3'}"
    for name, methods in STUDIES.items():
        task, method = name.split(".")
        study = optuna.load_study(study_name=f"methods.{name}", storage=url)
        assert study.metric_names == [f"selection score: val mAP on "
                                      f"{100 * TASKS[task]:g}%-known labels"]
        attrs = study.user_attrs
        assert (attrs["task"], attrs["method"], attrs["prob"], attrs["protocol"]) == (
            task, method, TASKS[task], "honest")
        assert attrs["methods"] == list(methods)


def test_the_printed_dashboard_command_runs_in_the_projects_venv(truth_report):
    exp, proc, _, _ = truth_report
    line = next(ln for ln in proc.stdout.splitlines() if "Optuna study:" in ln)
    argv = shlex.split(line.split("Optuna study:", 1)[1])
    assert argv == ["optuna-dashboard", f"sqlite:///{exp / 'optuna.sqlite3'}"]
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    help_run = subprocess.run([argv[0], "--help"], env=env, capture_output=True, text=True)
    assert help_run.returncode == 0 and "optuna-dashboard" in help_run.stdout
    assert "storage" in help_run.stdout
    assert (venv_bin / "optuna-dashboard").exists()
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml")
                              .read_text())
    search_extra = pyproject["project"]["optional-dependencies"]["search"]
    assert any(req.startswith("optuna-dashboard") for req in search_extra)
