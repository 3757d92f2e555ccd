"""``pu-mlc report``: the report of a search, checked against the experiment's own trial files.

The e2e tests build the report of the session's real finished search (``methods_search``: 2 tasks
x 3 methods in 5 studies, 2 trials + 3 repeats per study) and recompute every table cell and paired
difference from the trials' ``metrics.json`` (which trials are repeats, and of which repeat
number, is taken from the search's ``summary.json``); the compute hours from the export's
``all_trials.csv``; each figure is decoded. The fast tests build tiny experiment folders by hand:
a partial experiment (search running, repeats running, a study not started, no summary.json),
a COCO-2014 experiment (the published rows equal the shipped CSV), and refused inputs.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
import yaml

from pu_mlc.config import TrainConfig
from pu_mlc.errors import ConfigError
from tune.published import REFERENCE_CSV
from tune.report import write_report

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ helpers
def _pm(mean, sd) -> str:
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def _check_pngs(paths: list[str]) -> None:
    from PIL import Image

    assert paths
    for path in paths:
        data = Path(path).read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        assert len(data) > 5 * 1024, f"{path}: {len(data)} bytes"
        with Image.open(io.BytesIO(data)) as img:
            img.load()                              # decodes every pixel
            assert img.format == "PNG"
            w, h = img.size
            assert 300 <= w <= 6000 and 200 <= h <= 6000, f"{path}: {img.size}"
            extrema = img.convert("L").getextrema()
            assert extrema[0] < extrema[1], f"{path} is a blank image"


def _csv_rows(dataset: str) -> list[dict]:
    lines = [ln for ln in REFERENCE_CSV.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    return [row for row in csv.DictReader(lines) if row["dataset"] == dataset]


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from pu_mlc.cli import main

    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------ a tiny hand-made experiment
SPACE = {
    "name": "handmade", "seed": 0,
    "budget": {"trials_per_task": 2, "max_concurrent_trials": 2, "repeats": 2},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 2,
                  "driver_cpus": 0.5, "max_failures": 1},
    "fixed": {"dataset": "coco", "epochs": 2, "train_epochs": 2, "protocol": "honest"},
    "methods": [
        {"name": "pu_mlc", "fixed": {"loss": "pu", "lr": 0.0003},
         "first_trial": {"alpha": 1.0, "gamma": 0.55},
         "search": {"alpha": {"type": "loguniform", "low": 0.25, "high": 4.0},
                    "gamma": {"type": "uniform", "low": 0.0, "high": 1.5}}},
        {"name": "partial_bce", "fixed": {"loss": "partial_bce"},
         "first_trial": {"lr": 0.0003},
         "search": {"lr": {"type": "loguniform", "low": 0.0001, "high": 0.001}}},
    ],
    "tasks": [{"name": "full", "prob": 1.0}, {"name": "p10", "prob": 0.1}],
}
CLASSES = ["cat", "dog", "bird"]


_TICKS = iter(range(1, 1_000_000))


def _clock() -> float:
    """Start times in writing order (the selection's tie break)."""
    return 1_000.0 + next(_TICKS)


def _write_trial(exp: Path, study: str, trial_id: str, *, prob: float, loss: str,
                 params: dict, score: float, test: float, dataset: str = "coco",
                 status: str = "finished",
                 repeat: int | None = None, seconds: float = 100.0,
                 epochs: int = 2, chance: float = 25.0, weights: str = "ema",
                 validation: str = "own") -> None:
    """One trial's files as the search and the engine write them; its test OF1/CF1 are
    ``test - 10`` and ``test - 12`` at a threshold of 0.3 chosen on validation."""
    out = exp / "trials" / study / trial_id
    out.mkdir(parents=True)
    seed = repeat or 0
    task, method = study.split(".")
    (out / "trial.json").write_text(json.dumps({
        "study": study, "task": task, "method": method, "prob": prob,
        "stage": "repeats" if repeat is not None else "search", "repeat": repeat,
        "params": params, "seed": seed, "mask_seed": seed, "started": _clock(),
        "seconds": seconds}))
    cfg = TrainConfig(data=str(exp / "data"), dataset=dataset, prob=prob,
                      loss=loss, epochs=max(2, epochs), train_epochs=epochs, seed=seed,
                      mask_seed=seed,
                      protocol="honest", output_dir=str(out), **params)
    cfg.to_yaml(out / "config.yaml")
    history = [{"epoch": e, "score": score - (epochs - e), "best_score": score - (epochs - e),
                "val_mAP": score - (epochs - e) - (weights == "ema"),
                "val_mAP_ema": score - (epochs - e) - (weights != "ema"),
                "selected_test_mAP": test} for e in range(1, epochs + 1)]
    ap = {c: test + d for c, d in zip(CLASSES, (-5.0, 0.0, 5.0))}
    sources = {"own": "the dataset's own validation split",
               "held_out": "images held out from the training split (val_fraction)"}
    (out / "metrics.json").write_text(json.dumps({
        "status": status, "protocol": "honest", "history": history,
        "result": {"selection_score": score, "test_mAP": test, "selected_model": weights,
                   "selected_epoch": epochs,
                   "test_summary": {"mAP": test, "per_class_ap": ap},
                   "chance_mAP": chance,
                   "all_positive_f1": {"OF1": 200 * chance / (100 + chance),
                                       "CF1": 200 * chance / (100 + chance)},
                   "thresholds": {"kind": "global", "values": [0.3] * len(CLASSES),
                                  "chosen_on": "val", "criterion": "best OF1"},
                   "test_f1": {"OF1": test - 10, "CF1": test - 12, "threshold": 0.3,
                               "threshold_chosen_on": "val", "how": "at 0.3 (val)"},
                   "validation": {"source": validation, "text": sources[validation],
                                  "images": 10, "known_fraction": prob}}}))


def make_experiment(root: Path, dataset: str = "coco", partial: bool = False) -> Path:
    """2 tasks x 2 methods. Finished: every study searched (2 trials) and repeated (2).
    Partial: p10.pu_mlc still searching (1 trial), p10.partial_bce repeating (1 of 2 done),
    full.partial_bce not started, and no summary.json."""
    space = json.loads(json.dumps(SPACE))
    space["fixed"].update(dataset=dataset, data=str(root / "handmade" / "data"))
    exp = root / "handmade"
    space["storage_path"] = str(root)
    exp.mkdir(parents=True)
    (exp / "search_space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    (exp / "legs.json").write_text(json.dumps([{"seconds": 900.0, "completed": not partial}]))
    pu = {"full": [("a1", {"alpha": 1.0, "gamma": 0.55}, 60.0, 70.0),
                   ("a2", {"alpha": 2.0, "gamma": 0.3}, 62.0, 71.0)],
          "p10": [("b1", {"alpha": 1.0, "gamma": 0.55}, 40.0, 50.0),
                  ("b2", {"alpha": 0.5, "gamma": 1.0}, 45.0, 52.0)]}
    bce = {"full": [("c1", {"lr": 0.0003}, 61.0, 69.0), ("c2", {"lr": 0.0005}, 59.0, 68.0)],
           "p10": [("d1", {"lr": 0.0003}, 35.0, 44.0), ("d2", {"lr": 0.0002}, 38.0, 46.0)]}
    repeats = {"full.pu_mlc": (72.0, 74.0), "full.partial_bce": (70.0, 69.0),
               "p10.pu_mlc": (55.0, 53.0), "p10.partial_bce": (47.0, 45.0)}
    for method, loss, table in (("pu_mlc", "pu", pu), ("partial_bce", "partial_bce", bce)):
        for task, prob in (("full", 1.0), ("p10", 0.1)):
            study = f"{task}.{method}"
            trials = table[task]
            if partial and study == "full.partial_bce":
                continue                                   # not started
            if partial and study == "p10.pu_mlc":
                trials = trials[:1]                        # still searching
            for tid, params, score, test in trials:
                _write_trial(exp, study, tid, prob=prob, loss=loss, params=params,
                             score=score, test=test, dataset=dataset)
            best = max(trials, key=lambda t: t[2])
            if partial and study == "p10.pu_mlc":
                continue
            (exp / "tune" / study).mkdir(parents=True, exist_ok=True)
            (exp / "tune" / study / ".pu_mlc_done").write_text(json.dumps({"trials": 2}))
            for r, test in enumerate(repeats[study], start=1):
                if partial and study == "p10.partial_bce" and r == 2:
                    continue
                _write_trial(exp, study, f"r{r}", prob=prob, loss=loss, params=best[1],
                             score=best[2], test=test, repeat=r, seconds=50.0,
                             dataset=dataset)
            if not (partial and study == "p10.partial_bce"):
                (exp / "tune_repeats" / study).mkdir(parents=True, exist_ok=True)
                (exp / "tune_repeats" / study / ".pu_mlc_done").write_text("{}")
    return exp


# ----------------------------------------------------------------------- fast tests
def test_a_handmade_finished_experiment_gives_the_expected_numbers(tmp_path):
    exp = make_experiment(tmp_path / "exp")
    _write_trial(exp, "full.pu_mlc", "a3", prob=1.0, loss="pu", epochs=1, seconds=0.0,
                 params={"alpha": 3.0, "gamma": 1.2}, score=50.0, test=60.0,
                 status="stopped_by_scheduler")
    written = write_report(exp, tmp_path / "report")
    res = written["results"]
    assert not res["partial"] and res["unfinished"] == {}
    table = res["table"]
    cell = table["pu_mlc"]["cells"]["p10"]
    assert cell["selected_trial"] == "b2" and cell["n"] == 2
    assert cell["mean"] == pytest.approx(54.0) and cell["sd"] == pytest.approx(
        statistics.stdev([55.0, 53.0]))
    assert table["partial_bce"]["cells"]["full"]["selected_trial"] == "c1"
    assert table["pu_mlc"]["average"] == pytest.approx((54.0 + 73.0) / 2)
    diff = res["paired_differences"]["partial_bce"]["cells"]["p10"]
    assert diff["mean"] == pytest.approx(8.0) and diff["sd"] == pytest.approx(0.0)
    # 8 search trials x 100 s + 8 repeats x 50 s, each reserving 1 x 2 + 0.5 CPUs, no GPU
    assert res["compute"]["cpu_hours"] == pytest.approx(1200 * 2.5 / 3600)
    assert res["compute"]["gpu_hours"] == 0
    md = Path(written["report_md"]).read_text()
    assert "54.00 ± 1.41 (n=2)" in md and "+8.00 ± 0.00 (n=2)" in md
    assert "Partial experiment" not in md
    assert md.index("Protocol: **honest**") < md.index("| method |")
    assert "no published rows apply" in md
    _check_pngs(written["figures"])


def test_a_partial_experiment_is_reported_and_says_which_studies_are_unfinished(tmp_path,
                                                                                capsys):
    exp = make_experiment(tmp_path / "exp", partial=True)
    running = exp / "trials" / "p10.pu_mlc" / "b2"          # started, no epoch recorded yet
    running.mkdir()
    (running / "trial.json").write_text(json.dumps({
        "stage": "search", "params": {"alpha": 0.5, "gamma": 1.0}, "started": _clock()}))
    code, out, err = _run_cli(["report", str(exp), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "partial experiment" in out and str(tmp_path / "r" / "report.md") in out
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["partial"] and not res["summary_json"]
    assert set(res["unfinished"]) == {"full.partial_bce", "p10.pu_mlc", "p10.partial_bce"}
    assert res["unfinished"]["full.partial_bce"] == "not started"
    assert res["unfinished"]["p10.pu_mlc"].startswith("search not finished (1 of 2")
    assert res["studies"]["p10.pu_mlc"]["trials"]["search"] == {"finished": 1,
                                                                "not_started": 1}
    assert res["unfinished"]["p10.partial_bce"].startswith("repeats not finished")
    # what has finished is still reported: one repeat of p10.partial_bce, the full pu_mlc cell
    assert res["table"]["partial_bce"]["cells"]["p10"]["mean"] == pytest.approx(47.0)
    assert res["table"]["partial_bce"]["cells"]["p10"]["n"] == 1
    assert res["table"]["pu_mlc"]["cells"]["full"]["mean"] == pytest.approx(73.0)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Partial experiment" in md and "No `summary.json` yet" in md
    for name in res["unfinished"]:
        assert f"`{name}`" in md
    _check_pngs([str(tmp_path / "r" / f["path"]) for f in res["figures"]])


def test_the_published_rows_equal_the_shipped_csv_and_name_their_source(tmp_path):
    exp = make_experiment(tmp_path / "exp", dataset="COCO2014")
    written = write_report(exp, tmp_path / "report")
    res = written["results"]
    expected = _csv_rows("COCO2014")
    assert expected and res["published"]["rows"] == expected
    assert res["published_dataset"] == "COCO2014"
    md = Path(written["report_md"]).read_text()
    header = next(ln for ln in REFERENCE_CSV.read_text().splitlines()
                  if ln and not ln.startswith("#"))
    columns = header.split(",")
    assert "| " + " | ".join(columns) + " |" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| COCO2014 |")]
    parsed = [dict(zip(columns, [c.strip() for c in ln.strip("|").split("|")])) for ln in table]
    assert parsed == expected
    assert not any(ln.startswith("| VOC2007 |") for ln in md.splitlines())
    source = next(ln[1:].strip() for ln in REFERENCE_CSV.read_text().splitlines()
                  if ln.startswith("# Source"))
    assert source in md and "mlc_pl_published.csv" in md
    shared = REPO.parent / "shared" / "reference" / "mlc_pl_published.csv"
    if shared.exists():                              # the shipped copy is the reference file
        assert REFERENCE_CSV.read_bytes() == shared.read_bytes()


def test_a_folder_that_is_no_experiment_is_refused_naming_it(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a pu-mlc experiment"):
        write_report(tmp_path)
    code, out, err = _run_cli(["report", str(tmp_path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and str(tmp_path) in err and "search_space.yaml" in err
    assert not (tmp_path / "report").exists()


def test_a_damaged_search_space_is_refused(tmp_path, capsys):
    (tmp_path / "search_space.yaml").write_text("name: [unclosed\n")
    code, out, err = _run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "search_space.yaml" in err and err.count("\n") == 1


def test_a_diverged_trial_is_never_selected(tmp_path):
    exp = make_experiment(tmp_path / "exp")
    metrics = exp / "trials" / "p10.pu_mlc" / "b1" / "metrics.json"
    data = json.loads(metrics.read_text())
    data.update(status="diverged")
    data["result"]["selection_score"] = 99.0
    metrics.write_text(json.dumps(data))
    res = write_report(exp, tmp_path / "report")["results"]
    assert res["table"]["pu_mlc"]["cells"]["p10"]["selected_trial"] == "b2"


# ------------------------------------------------------- the real finished search (e2e)
@pytest.fixture(scope="module")
def methods_report(methods_search, module_tmp):
    exp, _ = methods_search
    out = module_tmp / "methods_report" / "report"
    return exp, write_report(exp, out)


def _search_metrics(exp: Path, summary: dict, study: str) -> dict[str, dict]:
    ids = [t["trial_id"] for t in summary["studies"][study]["trials"] if t["stage"] == "search"]
    return {i: json.loads((exp / "trials" / study / i / "metrics.json").read_text())
            for i in ids}


def _repeat_tests(exp: Path, summary: dict, study: str) -> dict[int, float]:
    out = {}
    for t in (t for t in summary["studies"][study]["trials"] if t["stage"] == "repeats"):
        m = json.loads((exp / "trials" / study / t["trial_id"] / "metrics.json").read_text())
        if m["status"] == "finished":
            out[int(t["repeat"])] = m["result"]["test_mAP"]
    return out


@pytest.mark.e2e
def test_every_table_cell_equals_the_trials_metrics(methods_report):
    from conftest import METHODS, REPEATS, TASKS, study_of

    exp, written = methods_report
    res = written["results"]
    md = Path(written["report_md"]).read_text()
    main = md[:md.index("## Per task")]
    summary = json.loads((exp / "summary.json").read_text())
    assert not res["partial"] and res["unfinished"] == {}
    assert [c["task"] for c in res["columns"]] == sorted(TASKS, key=TASKS.get)
    for method in METHODS:
        means = []
        for task in TASKS:
            study = study_of(task, method)
            cell = res["table"][method]["cells"][task]
            assert cell["study"] == study
            # the selected trial: the best selection score of the search trials' metrics.json
            search = _search_metrics(exp, summary, study)
            top = max(m["result"]["selection_score"] for m in search.values())
            assert search[cell["selected_trial"]]["result"]["selection_score"] == top
            assert cell["selected_test_mAP"] == \
                search[cell["selected_trial"]]["result"]["test_mAP"]
            # the cell: mean and sd of the repeats' test mAP in their metrics.json
            tests = _repeat_tests(exp, summary, study)
            assert sorted(tests) == list(range(1, REPEATS + 1))
            values = [tests[r] for r in sorted(tests)]
            assert cell["n"] == len(values)
            assert cell["mean"] == pytest.approx(statistics.fmean(values), abs=1e-9)
            assert cell["sd"] == pytest.approx(statistics.stdev(values), abs=1e-9)
            assert cell["repeats"] == {str(r): tests[r] for r in sorted(tests)}
            means.append(cell["mean"])
            row = next(ln for ln in main.splitlines() if ln.startswith(f"| {method} |")
                       or ln.startswith(f"| **{method}** |"))
            if cell.get("same_study_as"):          # one study for two methods: shown once
                assert f"= {cell['same_study_as']} ‡" in row
            else:
                assert f"{_pm(cell['mean'], cell['sd'])} (n={len(values)})" in row
            sel = next(s for s in res["selected"] if s["study"] == study)
            assert sel["trial_id"] == cell["selected_trial"]
            config = yaml.safe_load((exp / "trials" / study / sel["trial_id"] /
                                     "config.yaml").read_text())
            for key in ("ema", "lr") + (("alpha", "gamma") if method == "pu_mlc" else ()):
                assert sel["shown"][key] == config[key]
            assert f"--ema={config['ema']}" in sel["command"]
            assert sel["command"] in md
        assert res["table"][method]["average"] == pytest.approx(statistics.fmean(means))
        assert f"{res['table'][method]['average']:.2f}" in row
    assert res["checks"]["summary_json"] == "agrees"
    assert md.index("Protocol: **honest**") < md.index("| method |")


@pytest.mark.e2e
def test_paired_differences_are_recomputed_repeat_by_repeat(methods_report):
    from conftest import REPEATS, TASKS

    exp, written = methods_report
    res = written["results"]
    md = Path(written["report_md"]).read_text()
    summary = json.loads((exp / "summary.json").read_text())
    row = next(ln for ln in md.splitlines() if ln.startswith("| pu_mlc − partial_bce"))
    for task in TASKS:
        ref = _repeat_tests(exp, summary, f"{task}.pu_mlc")
        base = _repeat_tests(exp, summary, f"{task}.partial_bce")
        diffs = [ref[r] - base[r] for r in range(1, REPEATS + 1)]
        d = res["paired_differences"]["partial_bce"]["cells"][task]
        assert d["n"] == REPEATS
        assert d["mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-9)
        assert d["sd"] == pytest.approx(statistics.stdev(diffs), abs=1e-9)
        assert f"{d['mean']:+.2f} ± {d['sd']:.2f} (n={REPEATS})" in row


@pytest.mark.e2e
def test_the_figures_are_valid_pngs_one_per_study_and_kind(methods_report):
    from conftest import STUDIES

    exp, written = methods_report
    res = written["results"]
    _check_pngs(written["figures"])
    kinds: dict[str, int] = {}
    for f in res["figures"]:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    studies = len(STUDIES)
    assert kinds == {"map_vs_proportion": 1, "curves": studies, "importance": studies,
                     "parallel": studies, "per_class_ap": 1}
    md = Path(written["report_md"]).read_text()
    for f in res["figures"]:
        assert f"]({f['path']})" in md
    # 2 trials per study: too few for importances, and the report says so
    assert "Not enough trials for parameter importances" in md


@pytest.mark.e2e
def test_compute_hours_and_published_rows_of_the_demo_dataset(methods_report):
    exp, written = methods_report
    res = written["results"]
    space = yaml.safe_load((exp / "search_space.yaml").read_text())["resources"]
    cpus = space["num_workers"] * space.get("cpus_per_worker", 1) + space.get("driver_cpus",
                                                                              0.1)
    with (exp / "exports" / "all_trials.csv").open() as f:
        seconds = sum(float(r["wall_seconds"]) for r in csv.DictReader(f))
    assert res["compute"]["cpu_hours"] == pytest.approx(seconds * cpus / 3600, rel=1e-6)
    assert res["compute"]["gpu_hours"] == 0
    md = Path(written["report_md"]).read_text()
    assert f"CPU-hours: {res['compute']['cpu_hours']:.3f}" in md
    # the tiny COCO-format dataset is no COCO-2014: no published rows, and the report says so
    assert res["published"]["rows"] == [] and "no published rows apply" in md
    assert "mlc_pl_published.csv" in md and res["published"]["source"] in md


@pytest.mark.e2e
def test_the_report_command_prints_where_it_wrote(methods_search, tmp_path, capsys):
    exp, _ = methods_search
    code, out, err = _run_cli(["report", str(exp), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert str(tmp_path / "r" / "report.md") in out and "partial" not in out
    assert (tmp_path / "r" / "results.json").exists()


def test_with_enough_trials_the_importances_are_ped_anova(tmp_path):
    exp = make_experiment(tmp_path / "exp")
    for i, (alpha, gamma, score) in enumerate([(0.3, 0.1, 41.0), (0.6, 0.2, 42.0),
                                               (1.5, 0.9, 47.0), (3.0, 1.4, 49.0),
                                               (3.5, 0.5, 48.5), (0.4, 1.2, 40.5)]):
        _write_trial(exp, "p10.pu_mlc", f"x{i}", prob=0.1, loss="pu",
                     params={"alpha": alpha, "gamma": gamma}, score=score, test=score + 5)
    written = write_report(exp, tmp_path / "report")
    res = written["results"]
    imp = res["studies"]["p10.pu_mlc"]["importances"]
    assert set(imp) == {"alpha", "gamma"} and sum(imp.values()) == pytest.approx(1.0)
    assert res["studies"]["p10.partial_bce"]["importances"] is None   # 2 trials, 1 parameter
    figure = next(f for f in res["figures"] if f["kind"] == "importance"
                  and f["title"].startswith("p10.pu_mlc"))
    assert "note" not in figure                         # a real importance figure
    _check_pngs(written["figures"])
