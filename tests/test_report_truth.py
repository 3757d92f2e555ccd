"""The report tells the whole truth, on hand-made experiments (no Ray): methods that were one
study are one row with the reason; every task states its chance mAP and every cell OF1/CF1 at
the validation-chosen threshold, the selected weights and epoch; without repeats the ranking is
declared unsupported with the search noise measured; with repeats the paired rows carry a 95%
t interval; the protocol sentence is true for the dataset; the selection score is defined where
first used; paths can be written relative to a folder; and each figure's plotted data (read
back from its artists) shows what the table says, and nothing that was not measured."""

from __future__ import annotations

import json
import math
import re
import statistics
import zlib
from pathlib import Path

import pytest
import yaml

from test_report import _write_trial  # noqa: E402 (one writer of hand-made trial files)
from tune.report import write_report
from tune.space import parse_search_spec

LOSSES = {"pu_mlc": "pu", "partial_bce": "partial_bce",
          "assume_negative_bce": "assume_negative_bce"}
BCE_SEARCH = {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}


def space(root: Path, methods, tasks: dict[str, float], repeats: int) -> dict:
    entries = []
    for m in methods:
        if m == "pu_mlc":
            entries.append({"name": m, "fixed": {"loss": "pu", "lr": 3e-4},
                            "search": {"alpha": {"type": "uniform", "low": 0.5, "high": 2.0}}})
        else:
            entries.append({"name": m, "fixed": {"loss": LOSSES[m]}, "search": BCE_SEARCH})
    return {"name": "truth", "storage_path": str(root), "seed": 0,
            "budget": {"trials_per_task": 2, "repeats": repeats},
            "resources": {"num_workers": 1, "cpus_per_worker": 1, "driver_cpus": 0.1},
            "fixed": {"dataset": "coco", "data": str(root / "data"), "epochs": 2,
                      "train_epochs": 2, "protocol": "honest"},
            "methods": entries,
            "tasks": [{"name": n, "prob": p} for n, p in tasks.items()]}


def value(*keys, spread=10.0) -> float:
    """A fixed pseudo-random number per key: the trials differ, reproducibly."""
    return 30.0 + spread * (zlib.crc32("/".join(map(str, keys)).encode()) % 1000) / 1000


def experiment(root: Path, methods=tuple(LOSSES), tasks=None, repeats: int = 0,
               validation: str = "own", epochs: int = 2) -> Path:
    """A finished experiment of ``methods`` x ``tasks``: 2 search trials per study (as the
    parsed space merges them), ``repeats`` repeat trials of the selected one."""
    tasks = tasks or {"full": 1.0, "p10": 0.1}
    raw = space(root, methods, tasks, repeats)
    exp = root / "truth"
    exp.mkdir(parents=True)
    (exp / "search_space.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (exp / "legs.json").write_text(json.dumps([{"seconds": 600.0, "completed": True}]))
    spec = parse_search_spec(raw, base_dir=root)
    for study in spec.studies:
        prob, loss = study.prob, study.base.loss
        key = "alpha" if loss == "pu" else "lr"
        trials = [(f"{study.task[:3]}{study.method[:2]}{i}",
                   {key: [1.0, 0.0005][loss != "pu"] * (1 + 0.1 * i)},
                   value(study.name, i, "score"), value(study.name, i, "test"))
                  for i in range(2)]
        for tid, params, score, test in trials:
            _write_trial(exp, study.name, tid, prob=prob, loss=loss, params=params,
                         score=score, test=test, epochs=epochs, validation=validation,
                         weights="ema" if "1" in tid else "regular")
        best = max(trials, key=lambda t: t[2])
        (exp / "tune" / study.name).mkdir(parents=True)
        (exp / "tune" / study.name / ".pu_mlc_done").write_text("{}")
        for r in range(1, repeats + 1):
            _write_trial(exp, study.name, f"{best[0]}r{r}", prob=prob, loss=loss,
                         params=best[1], score=best[2], test=value(study.name, r, "repeat"),
                         repeat=r, epochs=epochs, validation=validation)
        if repeats:
            (exp / "tune_repeats" / study.name).mkdir(parents=True)
            (exp / "tune_repeats" / study.name / ".pu_mlc_done").write_text("{}")
    return exp


def report(tmp_path, **kwargs) -> tuple[dict, str]:
    exp = experiment(tmp_path / "exp", **kwargs)
    written = write_report(exp, tmp_path / "report")
    return written["results"], Path(written["report_md"]).read_text()


def rows_of(md: str, start: str) -> list[str]:
    return [ln for ln in md.splitlines() if ln.startswith(start)]


# --------------------------------------------------------------------------- one study, one row
def test_both_bce_baselines_at_full_labels_are_one_row_with_the_reason(tmp_path):
    res, md = report(tmp_path)
    assert list(res["studies"]) == ["full.pu_mlc", "full.partial_bce", "p10.pu_mlc",
                                    "p10.partial_bce", "p10.assume_negative_bce"]
    [eq] = res["equivalences"]
    assert eq["methods"] == ["partial_bce", "assume_negative_bce"] and eq["task"] == "full"
    full_bce = res["table"]["partial_bce"]["cells"]["full"]
    alias = res["table"]["assume_negative_bce"]["cells"]["full"]
    assert alias["same_study_as"] == "partial_bce" and alias["mean"] == full_bce["mean"]
    # the main table: the number once, the other BCE row points at it; the reason below
    main = md[:md.index("## Per task")]
    [anb_row] = rows_of(main, "| assume_negative_bce |")
    assert "= partial_bce ‡" in anb_row
    assert f"‡ at full (100% known labels): {eq['reason']}" in md
    # the per-task table of 100%: one BCE row naming both methods
    full_section = md[md.index("### full: 100% known labels"):md.index("## Search noise")]
    bce_rows = [ln for ln in full_section.splitlines() if "bce" in ln and ln.startswith("|")]
    assert len(bce_rows) == 1 and bce_rows[0].startswith("| partial_bce = assume_negative_bce ‡")
    p10_section = md[md.index("### p10"):md.index("### full")]
    assert len([ln for ln in p10_section.splitlines() if ln.startswith("| ")
                and "bce" in ln]) == 2
    # the paired row of the merged method refers to the first one
    assert res["paired_differences"]["assume_negative_bce"]["cells"]["full"]["same_as"] == \
        "partial_bce"


# ------------------------------------------------------------------ chance, F1, weights, epoch
def test_every_task_states_its_chance_map_and_every_cell_its_f1_weights_and_epoch(tmp_path):
    res, md = report(tmp_path)
    [chance_row] = rows_of(md[:md.index("## Per task")], "| chance (mean class prevalence of the test split) |")
    assert chance_row.count("25.00") == 2
    assert res["chance"] == {"p10": 25.0, "full": 25.0}
    # F1 of calling every label positive at prevalence 0.25: precision 0.25, recall 1
    assert md.count("calling every label positive gives OF1 40.00 and CF1 40.00") == 2
    for method, row in res["table"].items():
        for task, cell in row["cells"].items():
            if cell.get("same_study_as"):
                continue
            trial = json.loads((tmp_path / "exp" / "truth" / "trials" / cell["study"] /
                                cell["selected_trial"] / "metrics.json").read_text())["result"]
            assert cell["OF1"] == trial["test_f1"]["OF1"] and cell["CF1"] == \
                trial["test_f1"]["CF1"]
            assert cell["selected_weights"] == trial["selected_model"]
            assert cell["selected_epoch"] == trial["selected_epoch"]
            name = " = ".join(cell["methods"]) + (" ‡" if len(cell["methods"]) > 1 else "")
            [line] = [ln for ln in md.split("### " + task)[1].splitlines()
                      if ln.startswith(f"| {name} |")][:1]
            weights = "EMA" if trial["selected_model"] == "ema" else "regular"
            assert f"| {trial['test_f1']['OF1']:.2f} | {trial['test_f1']['CF1']:.2f} |" in line
            assert f"{weights}, epoch {trial['selected_epoch']}" in line
            assert "0.30 (val)" in line


def test_the_selection_score_is_defined_before_it_is_first_used(tmp_path):
    _, md = report(tmp_path)
    definition = md.index("**Selection score**: the mAP a run is selected by")
    first_use = min(m.start() for m in re.finditer("selection score", md, flags=re.I))
    assert definition <= first_use
    assert "validation mAP on the labels known at the task's proportion" in md


@pytest.mark.parametrize("source,words", [
    ("own", "the dataset's own validation split"),
    ("held_out", "images held out from the training split"),
])
def test_the_protocol_sentence_names_where_the_validation_split_came_from(tmp_path, source,
                                                                        words):
    res, md = report(tmp_path, validation=source)
    protocol = next(ln for ln in md.splitlines() if ln.startswith("Protocol: "))
    assert words in protocol
    other = "held out from the training" if source == "own" else "dataset's own"
    assert other not in protocol
    assert res["protocol"]["validation_sources"] == [source]


# ---------------------------------------------------------------------------------- spread
def test_without_repeats_the_ranking_is_declared_unsupported_with_the_search_noise(tmp_path):
    res, md = report(tmp_path)
    spread = res["spread"]
    assert not spread["supported"] and spread["interval"] is None
    assert "> **This ranking is unsupported.**" in md
    ranges = [n["selection_range"] for n in spread["search_noise"].values()]
    expected = [abs(value(s, 0, "score") - value(s, 1, "score")) for s in res["studies"]]
    assert sorted(ranges) == pytest.approx(sorted(expected))
    lo, med, hi = spread["selection_range"]
    assert (lo, hi) == pytest.approx((min(expected), max(expected)))
    assert f"lie {lo:.2f} to {hi:.2f} points apart (median {med:.2f})" in md
    for name, n in spread["search_noise"].items():
        assert f"| {name} | {', '.join(n['trials'])} |" in md


def test_with_three_repeats_each_paired_row_has_a_95_percent_t_interval(tmp_path):
    from scipy import stats as scipy_stats

    res, md = report(tmp_path, repeats=3)
    assert res["spread"]["supported"] and "This ranking is unsupported" not in md
    [row] = rows_of(md[:md.index("## Per task")], "| pu_mlc − partial_bce (paired)")
    for task in ("p10", "full"):
        ref = res["table"]["pu_mlc"]["cells"][task]["repeats"]
        base = res["table"]["partial_bce"]["cells"][task]["repeats"]
        diffs = [ref[r] - base[r] for r in ("1", "2", "3")]
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        d = res["paired_differences"]["partial_bce"]["cells"][task]
        assert (d["ci"]["low"], d["ci"]["high"]) == pytest.approx((mean - half, mean + half))
        assert d["significant"] == (mean - half > 0 or mean + half < 0)
        text = f"[{mean - half:+.2f}, {mean + half:+.2f}]" + ("" if d["significant"]
                                                              else " n.s.")
        assert text in row
    assert "95% Student t confidence interval" in md


# ---------------------------------------------------------------------------------- paths
def test_a_report_relative_to_a_folder_holds_no_absolute_path(tmp_path):
    exp = experiment(tmp_path / "exp")
    written = write_report(exp, tmp_path / "docs", relative_to=tmp_path)
    md = Path(written["report_md"]).read_text()
    payload = Path(written["results_json"]).read_text()
    for text in (md, payload):
        assert str(tmp_path) not in text
    assert "Experiment: `exp/truth`" in md and "pu-mlc train exp/truth/data " in md
    assert "Paths are relative to `..` from this report's folder" in md
    assert json.loads(payload)["experiment"] == "exp/truth"


# --------------------------------------------------------------------------------- figures
def figure(res: dict, kind: str, title_start: str = "") -> dict:
    return next(f for f in res["figures"] if f["kind"] == kind
                and f["title"].startswith(title_start))


def test_the_map_figure_plots_the_table_a_chance_line_and_no_line_across_unrun_proportions(
        tmp_path):
    tasks = {"full": 1.0, "p10": 0.1, "p20": 0.2, "p50": 0.5}
    res, _ = report(tmp_path, tasks=tasks, repeats=2)
    data = figure(res, "map_vs_proportion")["data"]
    measured = sorted(100 * p for p in tasks.values())
    for method, row in res["table"].items():
        cells = sorted((100 * c["prob"], row["cells"][c["task"]]) for c in res["columns"])
        points = data["points"][method]
        offsets = data["offsets"][method]
        # each marker at its measured proportion, shifted by the offset the title states
        assert [x - offsets[f"{m:g}"] for x, (m, _) in zip(points["x"], cells)] == \
            pytest.approx([m for m, _ in cells])
        assert max(abs(v) for v in offsets.values()) <= 0.05 * (measured[-1] - measured[0])
        assert points["y"] == pytest.approx([c["mean"] for _, c in cells])
        assert points["linestyle"] == "None"                      # markers only
        bars = {round(b["x"] - offsets[f"{m:g}"], 6): b
                for b, (m, _) in zip(data["errorbars"][method], cells)}
        for x, c in cells:                                        # ± 1 sd of the repeats
            assert (bars[x]["low"], bars[x]["high"]) == pytest.approx(
                (c["mean"] - c["sd"], c["mean"] + c["sd"]))
        # lines only between neighbours on the 10% grid: 10-20 here, never 20-50 or 50-100
        def unshifted(x):
            at = min(measured, key=lambda m: abs(m - x))
            assert x - at == pytest.approx(offsets[f"{at:g}"])
            return at

        segments = [tuple(unshifted(x) for x in seg["x"])
                    for seg in data["segments"].get(method, [])]
        assert segments == [pytest.approx((10.0, 20.0))]
        for a, b in segments:
            assert not any(a + 1e-6 < x < b - 1e-6 for x in range(10, 100, 10))
    assert "side by side" in data["offset_note"]
    [chance] = data["chance"]
    assert chance["y"] == pytest.approx(25.0) and chance["spans_axis"]
    assert data["xticks"] == measured
    values = [c["mean"] + s * c["sd"] for row in res["table"].values()
              for c in row["cells"].values() for s in (-1, 1)] + [25.0]
    lo, hi = data["ylim"]
    assert lo < min(values) and hi > max(values)                  # everything is shown
    assert hi - lo < 1.3 * (max(values) - min(values)) + 1.0      # scaled to the data


def test_without_repeats_the_map_figure_has_no_error_bars_and_the_demo_shape_no_lines(
        tmp_path):
    res, _ = report(tmp_path)
    data = figure(res, "map_vs_proportion")["data"]
    assert data["errorbars"] == {} and data["segments"] == {}     # 10% and 100% only
    assert set(data["points"]) == set(LOSSES)


def test_one_epoch_curves_are_a_dot_chart_and_longer_ones_have_whole_epoch_ticks(tmp_path):
    res, _ = report(tmp_path / "one", epochs=1)
    dots = figure(res, "curves", "p10.pu_mlc")["data"]
    assert dots["mode"] == "one_epoch" and len(dots["trials"]) == 2
    res, _ = report(tmp_path / "three", epochs=3)
    lines = figure(res, "curves", "p10.pu_mlc")["data"]
    assert lines["mode"] == "lines" and lines["xticks"] == [1.0, 2.0, 3.0]


def test_the_per_class_ap_axis_is_scaled_to_the_aps(tmp_path):
    res, _ = report(tmp_path)
    data = figure(res, "per_class_ap")["data"]
    assert data["largest_ap"] < 50 and data["xlim"][1] <= data["largest_ap"] * 1.12 + 1.0 + 1e-9
