"""``pu-mlc report EXPERIMENT_DIR``: what a search found, as one self-contained folder.

The report is rebuilt from the experiment's own files through the experiment store
(:mod:`tune.store`), not copied from ``summary.json``: the studies come from
``search_space.yaml``, each trial's stage, repeat, params, status, scores, history and per-class
AP from its records, which studies finished from the stages' done markers. The selection is the
store's one rule (:func:`tune.store.select`) and the per-method numbers the search's own
(:mod:`tune.compare`): a method's cell is the test mAP of its selected config, mean and sample
sd over the finished repeats (new training seed and label mask ``r`` each); the paired
difference is PU-MLC minus a baseline repeat by repeat, with its 95% Student-t interval
(:mod:`tune.stats`). Ray need not be running, and a partial experiment (a search still running,
or interrupted) is reported as far as its trials go, with its unfinished studies named.

It tells what a reader needs to judge the numbers, from the trials' own ``metrics.json``
(:mod:`tune.outcomes`; no torch, no images): the chance mAP of each test split; OF1/CF1 at the
threshold each run chose on its validation split; which weights (regular or EMA) and epoch were
selected; whether the validation split is the dataset's own or held out from the training
images; methods that were one study because they train identically (``Study.aliases``); and,
without repeats, that the ranking is unsupported and how far apart search noise alone put the
best trials of each study.

Output (``EXPERIMENT_DIR/report`` unless ``--out``): ``report.md``, ``results.json`` (the same
content, machine-readable, with the data each figure plots) and ``figures/*.png``
(:mod:`tune.report_figures`). ``relative_to`` writes every path below that folder relative to
it (the committed demo report: no machine's absolute paths).
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .outcomes import trial_outcome
from .published import dataset_note, read_published
from .report_figures import importances, make_figures
from .space import Study
from .stats import CONFIDENCE, METHOD as CI_METHOD, t_quantile
from .store import (ExperimentStore, StudyRecords, TrialRecord, dashboard_command,
                    open_experiment, read_experiment)

log = logging.getLogger(__name__)

PU_ONLY = ("alpha", "gamma")          # fields only the PU loss reads
SHOWN_PARAMS = ("alpha", "gamma", "ema", "lr")
CHANCE_LABEL = "chance (mean class prevalence of the test split)"


# ------------------------------------------------------------------------------- studies
@dataclass
class StudyView:
    """A study as the report reads it: its records (the store's) and its definition (the
    space's: task, method(s), prob, loss, searched distributions)."""

    records: StudyRecords
    study: Study

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def task(self) -> str:
        return self.study.task

    @property
    def method(self) -> str:
        return self.study.method

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method this study stands for (more than one: they train identically)."""
        return self.study.methods

    @property
    def equivalence(self) -> str:
        return self.study.equivalence

    @property
    def label(self) -> str:
        """The study's methods as one name (``partial_bce = assume_negative_bce``)."""
        return " = ".join(self.methods)

    @property
    def prob(self) -> float:
        return self.study.prob

    @property
    def loss(self) -> str:
        return self.study.base.loss

    @property
    def search_space(self) -> dict:
        return dict(self.study.search)

    @property
    def trials(self) -> list[TrialRecord]:
        return self.records.trials

    @property
    def selected(self) -> Optional[TrialRecord]:
        return self.records.selected

    def stage(self, stage: str) -> list[TrialRecord]:
        return self.records.stage(stage)

    def state(self, repeats: int) -> str:
        return self.records.state(repeats)


# ----------------------------------------------------------------------------- the report
def _fmt(value: Optional[float], digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _pm(mean: Optional[float], sd: Optional[float], sign: bool = False) -> str:
    if mean is None:
        return "—"
    return _fmt(mean, sign=sign) + (f" ± {sd:.2f}" if sd is not None else "")


def _prob_label(prob: float) -> str:
    return "100% (full labels)" if prob >= 1 else f"{100 * prob:g}%"


def _weights(weights: Optional[str], epoch: Optional[int]) -> str:
    """``EMA, epoch 3`` / ``regular, epoch 1``."""
    if weights is None:
        return "—"
    name = "EMA" if weights == "ema" else weights
    return f"{name}, epoch {epoch}" if epoch is not None else name


def _validation_text(sources: set[str], texts: dict[str, str]) -> str:
    if len(sources) == 1:
        return texts[next(iter(sources))]
    if not sources:
        return "a validation split (its source is not recorded in these trials' files)"
    return "validation splits of different sources (" + "; ".join(sorted(texts.values())) + ")"


def _protocol(studies: list[StudyView], spec) -> dict:
    """The protocol the studies used, in one sentence that is true for their data: whether the
    validation split is the dataset's own or held out from the training images is read from the
    selected trials' ``metrics.json``."""
    found, sources, texts = {}, set(), {}
    for s in studies:
        values = {t.config.get("protocol") for t in s.trials if t.config.get("protocol")}
        if not values:
            values = {spec.study(s.name).base.protocol}
        found[s.name] = sorted(values)
        best = s.selected
        validation = trial_outcome(best)["validation"] if best is not None else None
        if validation and validation.get("source"):
            sources.add(validation["source"])
            texts[validation["source"]] = str(validation.get("text") or validation["source"])
    names = sorted({p for v in found.values() for p in v})
    name = names[0] if len(names) == 1 else "mixed"
    where = _validation_text(sources, texts)
    text = {
        "honest": f"**honest**: every epoch, weights (regular or EMA) and config was selected on "
                  f"{where}, whose labels are known only at the task's proportion; the test "
                  f"mAP of that selection is reported (the test set never took part in a "
                  f"selection), and OF1/CF1 at the threshold chosen on that validation split.",
        "paper": "**paper**: the epoch (and config) was selected on the *test* set, as the "
                 "published code does, and OF1/CF1 are each the best over the published "
                 "threshold sweep on the test set; the numbers are optimistic, not held-out "
                 "estimates.",
    }.get(name, "**mixed**: studies used different protocols (" + "; ".join(
        f"{k}: {', '.join(v)}" for k, v in found.items()) + "); their numbers are not "
        "comparable.")
    return {"name": name, "per_study": found, "text": text,
            "validation_sources": sorted(sources), "validation": where}


def _selection_definition(protocol: str) -> str:
    what = {"honest": "its validation mAP on the labels known at the task's proportion",
            "paper": "its test mAP (paper protocol)"}.get(
        protocol, "its validation mAP (honest studies) or test mAP (paper studies)")
    return (f"**Selection score**: the mAP a run is selected by, {what}. Each trial keeps the "
            f"epoch and weights (regular or EMA) with the best selection score, and each study "
            f"keeps the trial with the best one; the cells report the *test* mAP of that choice, "
            f"not the selection score.")


def _shown_params(trial: Optional[TrialRecord], study: StudyView) -> dict:
    if trial is None:
        return {}
    out = {}
    for key in SHOWN_PARAMS:
        if key in PU_ONLY and study.loss != "pu":
            out[key] = None                       # not used by this loss
        else:
            out[key] = trial.config.get(key)
    return out


def _cell(study: StudyView, r: Optional[dict], repeats: int) -> dict:
    """One (method, task) cell of the table from the compare result ``r``."""
    cell: dict[str, Any] = {"study": study.name, "state": study.state(repeats),
                            "methods": list(study.methods), "mean": None, "sd": None, "n": 0,
                            "repeats": {}, "OF1": None, "OF1_sd": None, "CF1": None,
                            "CF1_sd": None}
    if r is not None:
        cell.update(mean=r["test_mAP_mean"], sd=r["test_mAP_sd"], n=r["n"],
                    repeats=r["repeats"], selected_trial=r["selected_trial"],
                    selection_score=r["selection_score"],
                    selected_test_mAP=r["selected_test_mAP"], params=r["params"],
                    selected_weights=r["selected_weights"],
                    selected_epoch=r["selected_epoch"], selected_f1=r["selected_f1"],
                    OF1=r["OF1_mean"], OF1_sd=r["OF1_sd"], CF1=r["CF1_mean"],
                    CF1_sd=r["CF1_sd"], f1_n=r["OF1_n"], chance_mAP=r["chance_mAP"],
                    search_noise=r["search_noise"])
        if r.get("same_study_as"):
            cell["same_study_as"] = r["same_study_as"]
        cell["repeat_trials"] = {str(t.repeat): t.trial_id for t in study.stage("repeats")
                                 if str(t.repeat) in r["repeats"]}
    cell["shown_params"] = _shown_params(study.selected, study)
    return cell


def _spread(results_tasks: dict, studies: list[StudyView], repeats: int) -> dict:
    """What the numbers can and cannot say: with repeats, the interval method; without, that
    the ranking is unsupported and how far apart the best trials of each study were."""
    noise = {}
    for s in studies:
        r = (results_tasks.get(s.task) or {}).get("methods", {}).get(s.method)
        if r is not None:
            noise[s.name] = r["search_noise"]
    ranges = [n["selection_range"] for n in noise.values() if n["selection_range"] is not None]
    tests = [n["test_range"] for n in noise.values() if n["test_range"] is not None]
    out = {"repeats": repeats, "supported": bool(repeats), "search_noise": noise,
           "selection_range": [min(ranges), statistics.median(ranges), max(ranges)]
           if ranges else None,
           "test_range": [min(tests), statistics.median(tests), max(tests)] if tests else None,
           "interval": {"method": CI_METHOD, "confidence": CONFIDENCE} if repeats else None}
    if repeats:
        out["statement"] = (
            f"Cells: mean ± sd over the finished repeats (n in brackets; repeat r re-trains the "
            f"selected config with seed r and label mask r). Paired rows: mean ± sd of the "
            f"repeat-by-repeat differences and, in brackets, the {100 * CONFIDENCE:g}% "
            f"{CI_METHOD} confidence interval of the mean difference; a difference whose "
            f"interval covers 0 is marked *n.s.* (not significant)" + _few_repeats(repeats)
            + ".")
    else:
        noise_text = ""
        if out["selection_range"]:
            lo, med, hi = out["selection_range"]
            noise_text = (f" Search noise alone is of the same size: within a study, the best "
                          f"search trials' selection scores lie {lo:.2f} to {hi:.2f} points "
                          f"apart (median {med:.2f})")
            if out["test_range"]:
                tlo, tmed, thi = out["test_range"]
                noise_text += (f", and their test mAPs {tlo:.2f} to {thi:.2f} points apart "
                               f"(median {tmed:.2f})")
            noise_text += " (table *Search noise* below)."
        out["statement"] = (
            "**This ranking is unsupported.** There are no repeats: each cell is one training "
            "run of one selected config (n = 1), so no cell has a spread and no difference has "
            "a confidence interval." + noise_text + " A difference between methods smaller "
            "than that says nothing; rerun with `budget.repeats` of 2 or more for a spread and "
            "paired confidence intervals.")
    return out


def build_results(experiment_dir: str | Path) -> tuple[dict, dict]:
    """The report's content (``results.json``) and what the figures need (objects)."""
    from .compare import compare_methods, reference_method

    store, spec = open_experiment(experiment_dir)
    experiment_dir = store.root
    records = read_experiment(store, spec)
    studies = [StudyView(records[s.name], s) for s in spec.studies]
    by_name = {s.name: s for s in studies}
    tasks = compare_methods(spec, records)
    ref = reference_method(spec)
    methods = list(dict.fromkeys(m for s in spec.studies for m in s.methods))
    order = sorted(spec.tasks, key=lambda t: t.base.prob)     # stable: spec order on ties
    columns = [{"task": t.name, "prob": t.base.prob, "label": _prob_label(t.base.prob),
                "chance_mAP": tasks[t.name]["chance_mAP"],
                "all_positive_f1": tasks[t.name]["all_positive_f1"]}
               for t in order if t.name in tasks]
    summary = store.read_json(store.summary_file)

    def study_of(task: str, method: str) -> Optional[StudyView]:
        return next((s for s in studies if s.task == task and method in s.methods), None)

    # the table: one row per method, one column per task (label proportion) + the average
    table: dict[str, dict] = {}
    for method in methods:
        cells = {}
        for col in columns:
            study = study_of(col["task"], method)
            if study is None:
                continue
            cells[col["task"]] = _cell(study, tasks[col["task"]]["methods"].get(method),
                                       spec.repeats)
        present = [c["mean"] for c in cells.values() if c["mean"] is not None]
        table[method] = {"cells": cells,
                         "average": sum(present) / len(present) if present else None,
                         "average_over": len(present)}

    paired: dict[str, dict] = {}
    for method in methods:
        if method == ref:
            continue
        cells = {}
        for col in columns:
            d = tasks[col["task"]]["paired_differences"].get(method)
            if d is not None:
                cells[col["task"]] = {"mean": d["mean"], "sd": d["sd"], "n": d["n"],
                                      "per_repeat": d["per_repeat"], "ci": d["ci"],
                                      "significant": d["significant"],
                                      "reference": d.get("reference"),
                                      **({"same_as": d["same_as"]} if d.get("same_as") else {})}
        if not cells:
            continue
        present = [c["mean"] for c in cells.values() if c["mean"] is not None]
        paired[method] = {"reference": ref, "baseline": method, "cells": cells,
                          "average": sum(present) / len(present) if present else None,
                          "average_over": len(present)}

    equivalences = [{"task": s.task, "prob": s.prob, "study": s.name,
                     "methods": list(s.methods), "reason": s.equivalence}
                    for s in studies if len(s.methods) > 1]

    # selected configs (one per study) and the commands that reproduce them
    workers = spec.resources.num_workers
    selected = []
    for col in columns:
        for study in (s for s in studies if s.task == col["task"]):
            trial = study.selected
            if trial is None:
                continue
            outcome = trial_outcome(trial)
            selected.append({
                "task": col["task"], "prob": col["prob"], "method": study.method,
                "methods": list(study.methods), "study": study.name,
                "trial_id": trial.trial_id,
                "selection_score": trial.selection_score, "test_mAP": trial.test_map,
                "selected_weights": trial.selected_weights,
                "selected_epoch": trial.selected_epoch,
                "OF1": outcome["OF1"], "CF1": outcome["CF1"],
                "threshold": outcome["threshold"],
                "threshold_chosen_on": outcome["threshold_chosen_on"],
                "status": trial.status, "params": trial.params,
                "shown": _shown_params(trial, study),
                "command": _command(trial, workers), "config": str(trial.path / "config.yaml")})

    # compute spent: reserved resources x trial wall time
    r = spec.resources
    all_trials = [t for s in studies for t in s.trials]
    timed = [t for t in all_trials if t.wall_seconds is not None]
    seconds = {stage: sum(t.wall_seconds for t in timed if t.stage == stage)
               for stage in ("search", "repeats", "unknown")}
    total = sum(seconds.values())
    legs = store.read_json(store.legs_file)
    compute = {
        "trials": len(all_trials), "trials_timed": len(timed),
        "trial_seconds": total, "trial_seconds_by_stage": seconds,
        "cpus_per_trial": r.cpus_per_trial, "gpus_per_trial": r.gpus_per_trial if r.use_gpu
        else 0.0, "num_workers": r.num_workers, "cpus_per_worker": r.cpus_per_worker,
        "gpus_per_worker": r.gpus_per_worker, "driver_cpus": r.driver_cpus,
        "cpu_hours": total * r.cpus_per_trial / 3600,
        "gpu_hours": total * (r.gpus_per_trial if r.use_gpu else 0.0) / 3600,
        "wall_seconds": sum(leg.get("seconds", 0.0) for leg in legs)
        if isinstance(legs, list) else None,
        "legs": len(legs) if isinstance(legs, list) else None,
        "size_on_disk_bytes": store.size_on_disk()}

    datasets, published_for, dataset_line = dataset_note(spec)
    published = read_published()
    published_rows = [row for row in published["rows"] if row.get("dataset") == published_for]

    unfinished = {s.name: s.state(spec.repeats) for s in studies
                  if s.state(spec.repeats) != "finished"}
    partial = bool(unfinished)
    checks = _check_against_summary(summary, table)
    study_info = {}
    for s in studies:
        best = s.selected
        counts = s.records.counts()
        study_info[s.name] = {
            "task": s.task, "method": s.method, "methods": list(s.methods),
            "equivalence": s.equivalence or None, "prob": s.prob, "loss": s.loss,
            "state": s.state(spec.repeats), "search_done": s.records.search_done,
            "repeats_done": s.records.repeats_done, "trials": counts,
            "selected_trial": best.trial_id if best else None,
            "searched": {k: d.describe() for k, d in s.search_space.items()},
            "completed_search_trials": sum(t.status == "finished" and
                                           t.selection_score is not None
                                           for t in s.stage("search")),
            "importances": _importances(s)}

    protocol = _protocol(studies, spec)
    results = {
        "experiment": str(experiment_dir), "name": spec.name,
        "optuna_dashboard": _dashboard(store, spec),
        "partial": partial, "unfinished": unfinished,
        "summary_json": summary is not None,
        "protocol": protocol,
        "selection_score": _selection_definition(protocol["name"]),
        "datasets": datasets, "published_dataset": published_for,
        "dataset_note": dataset_line,
        "reference_method": ref, "methods": methods, "repeats": spec.repeats,
        "columns": columns, "chance": {c["task"]: c["chance_mAP"] for c in columns},
        "table": table, "paired_differences": paired, "equivalences": equivalences,
        "spread": _spread(tasks, studies, spec.repeats),
        "selected": selected,
        "published": {"csv": "tune/reference/mlc_pl_published.csv",
                      "comments": published["comments"], "source": published["source"],
                      "columns": published["columns"], "rows": published_rows},
        "compute": compute, "studies": study_info, "checks": checks,
    }
    return results, {"spec": spec, "studies": by_name, "store": store}


def _dashboard(store: ExperimentStore, spec) -> Optional[str]:
    """The optuna-dashboard command for the experiment's studies: the database its space names,
    else the study file the search left in the experiment (a relative ``storage_path`` in the
    saved space says nothing about where it ran from)."""
    named = spec.raw.get("study_storage")
    if named:
        return dashboard_command(str(named))
    if not store.remote and Path(store.optuna_file).is_file():
        return dashboard_command(f"sqlite:///{store.optuna_file}")
    if not store.remote and Path(store.journal_file).is_file():
        return dashboard_command(f"journal://{store.journal_file}")
    return None


def _importances(study: StudyView) -> Optional[dict[str, float]]:
    """PED-ANOVA importances of the study's searched parameters (None: too few trials)."""
    if not study.search_space:
        return None
    try:
        return importances(study)
    except Exception as err:       # never lose the report over an optional statistic
        log.warning("study %s: no parameter importances (%s: %s)", study.name,
                    type(err).__name__, err)
        return None


def _command(trial: TrialRecord, workers: int) -> Optional[str]:
    from .export import exported_config, reproduce_command

    try:
        cfg = trial.train_config()
    except Exception as err:      # a damaged config must not sink the whole report
        log.warning("trial %s: config.yaml unreadable (%s)", trial.trial_id, err)
        return None
    return reproduce_command(exported_config(cfg), workers) if cfg is not None else None


def _check_against_summary(summary: Optional[dict], table: dict) -> dict:
    """Where ``summary.json`` (written by the search) says something else than the trials."""
    if summary is None:
        return {"summary_json": "absent"}
    differences = []
    for task, entry in (summary.get("tasks") or {}).items():
        for method, r in (entry.get("methods") or {}).items():
            cell = (table.get(method) or {}).get("cells", {}).get(task)
            if cell is None:
                differences.append(f"{task}/{method}: in summary.json, not in the trial files")
                continue
            for key, ours in (("test_mAP_mean", cell["mean"]), ("test_mAP_sd", cell["sd"])):
                theirs = r.get(key)
                if (theirs is None) != (ours is None) or (
                        theirs is not None and abs(theirs - ours) > 1e-9):
                    differences.append(f"{task}/{method}: {key} {theirs} in summary.json, "
                                       f"{ours} from the trial files")
    return {"summary_json": differences or "agrees"}


# ------------------------------------------------------------------------------- markdown
def _table_cell(cell: Optional[dict], repeats: int) -> str:
    if cell is None:
        return "—"
    if cell.get("same_study_as"):
        return f"= {cell['same_study_as']} ‡"
    text = _pm(cell["mean"], cell["sd"])
    if repeats and cell["mean"] is not None:
        text += f" (n={cell['n']})"
    if len(cell.get("methods") or ()) > 1:
        text += " ‡"
    if cell["state"] != "finished":
        text += " †"
    return text


def _paired_cell(d: Optional[dict]) -> str:
    if d is None or d["mean"] is None:
        return "—"
    if d.get("same_as"):
        return f"= {d.get('reference') or 'reference'} − {d['same_as']} ‡"
    text = _pm(d["mean"], d["sd"], sign=True) + f" (n={d['n']})"
    ci = d.get("ci")
    if ci is not None:
        text += f" [{ci['low']:+.2f}, {ci['high']:+.2f}]" + ("" if ci["significant"]
                                                            else " n.s.")
    return text


def _few_repeats(repeats: int) -> str:
    """Why intervals from 2 or 3 repeats are wide, with the t quantile they use."""
    if not 2 <= repeats <= 3:
        return ""
    q = t_quantile((1 + CONFIDENCE) / 2, repeats - 1)
    return (f". With n = {repeats} the interval is wide (mean ± {q:.1f} x sd / √{repeats}): "
            f"only a large, consistent difference excludes 0")


def _f1_cell(mean: Optional[float], sd: Optional[float]) -> str:
    return _pm(mean, sd)


def _per_task_lines(results: dict) -> list[str]:
    """One table per task: one row per study (methods that are one study share a row), with
    test mAP, OF1/CF1 at the validation-chosen threshold and the selected trial's weights."""
    repeats = results["repeats"]
    protocol = results["protocol"]["name"]
    where = "the test set (paper protocol: optimistic)" if protocol == "paper" else \
        "its validation split"
    lines = ["## Per task", "",
             "Each row is one study. Test mAP, OF1 and CF1 are "
             + ("means ± sd over the repeats" if repeats else "the selected trial's")
             + f"; OF1/CF1 count the decisions `score >= threshold` at one global threshold "
               f"each run chose on {where} (the threshold with the best OF1 among the "
               f"published sweep 0.01..0.99), never at 0.5. The selected trial's columns say "
               f"which search trial won, its selection score, which weights (regular or EMA) "
               f"at which epoch, and its threshold.", ""]
    for col in results["columns"]:
        chance = col.get("chance_mAP")
        everything = col.get("all_positive_f1") or {}
        lines += [f"### {col['task']}: {100 * col['prob']:g}% known labels", "",
                  f"Chance mAP of the test split (mean class prevalence): {_fmt(chance)}; "
                  f"calling every label positive gives OF1 {_fmt(everything.get('OF1'))} and "
                  f"CF1 {_fmt(everything.get('CF1'))}, the level an F1 must beat to show that "
                  f"a model decides anything.", "",
                  "| method | test mAP | OF1 | CF1 | selected trial | selection score "
                  "| weights | threshold | trial's test mAP / OF1 / CF1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        reasons = []
        for method, row in results["table"].items():
            cell = row["cells"].get(col["task"])
            if cell is None or cell.get("same_study_as"):
                continue
            name = " = ".join(cell.get("methods") or [method])
            if len(cell.get("methods") or ()) > 1:
                name += " ‡"
                reasons += [e["reason"] for e in results["equivalences"]
                            if e["study"] == cell["study"]]
            f1 = cell.get("selected_f1") or {}
            threshold = "—" if f1.get("threshold") is None else \
                f"{f1['threshold']:.2f} ({f1.get('threshold_chosen_on') or '?'})"
            lines.append(
                f"| {name} | {_table_cell({**cell, 'methods': [method]}, repeats)} | "
                f"{_f1_cell(cell['OF1'], cell['OF1_sd'])} | "
                f"{_f1_cell(cell['CF1'], cell['CF1_sd'])} | "
                f"{cell.get('selected_trial') or '—'} | "
                f"{_fmt(cell.get('selection_score'))} | "
                f"{_weights(cell.get('selected_weights'), cell.get('selected_epoch'))} | "
                f"{threshold} | {_fmt(cell.get('selected_test_mAP'))} / "
                f"{_fmt(f1.get('OF1'))} / {_fmt(f1.get('CF1'))} |")
        lines += [""]
        lines += [f"‡ {reason}." for reason in reasons]
        if reasons:
            lines += [""]
    return lines


def _noise_lines(results: dict) -> list[str]:
    lines = ["## Search noise", "",
             "How far apart the best search trials of each study are (up to three, best "
             "first): trials this close were ranked by the noise of one short training as much "
             "as by their parameters, so a difference between methods of this size is not "
             "evidence.", "",
             "| study | top trials | selection scores | spread | their test mAP | spread |",
             "|---|---|---|---|---|---|"]
    for name, n in results["spread"]["search_noise"].items():
        lines.append(f"| {name} | {', '.join(n['trials'])} | "
                     f"{' / '.join(f'{v:.2f}' for v in n['selection_scores'])} | "
                     f"{_fmt(n['selection_range'])} | "
                     f"{' / '.join(f'{v:.2f}' for v in n['test_mAPs']) or '—'} | "
                     f"{_fmt(n['test_range'])} |")
    return lines + [""]


def render_markdown(results: dict, figures: list[dict]) -> str:
    cols = results["columns"]
    ref = results["reference_method"]
    repeats = results["repeats"]
    lines = [f"# Search report: {results['name']}", "",
             f"Experiment: `{results['experiment']}`", ""]
    if results.get("optuna_dashboard"):
        lines += [f"Optuna studies: `{results['optuna_dashboard']}` (the `search` extra "
                  f"installs optuna-dashboard; each study names its objective and its task, "
                  f"method(s), prob and protocol).", ""]
    if results.get("paths_relative_to"):
        lines += [f"Paths are relative to {results['paths_relative_to']}: run the commands "
                  f"from there.", ""]
    if results["partial"]:
        lines += ["> **Partial experiment.** " + (
            "No `summary.json` yet: the search has not finished (or was interrupted; "
            "`pu-mlc search --space ... --resume` continues it). " if not
            results["summary_json"] else "") + (
            "Unfinished studies: " + "; ".join(f"`{k}`: {v}" for k, v in
                                               results["unfinished"].items()) + ". "
            if results["unfinished"] else "") +
            "The numbers below are what the finished trials give so far.", ""]
    elif not results["summary_json"]:
        lines += ["> Every study finished, but there is no `summary.json`: the search's driver "
                  "ended before writing it (`pu-mlc search ... --resume` writes it). The report "
                  "does not need it.", ""]
    lines += [f"Protocol: {results['protocol']['text']}", "",
              results["selection_score"], ""]
    spread = results["spread"]
    what = (f"test mAP (%) of each method's selected config, mean ± sd over its finished "
            f"repeats (n in brackets; {repeats} repeat(s) expected, repeat r re-trains with "
            f"seed r and label mask r)" if repeats else
            "test mAP (%) of each method's selected trial (no repeats: n = 1, no spread)")
    lines += ["## Results", ""]
    if not repeats:
        lines += ["> " + spread["statement"], ""]
    lines += [f"Cells: {what}. Average: mean over the label proportions present in the row. "
              f"The chance row is the mAP of a ranking that ignores the images.", ""]
    header = ["method", *[f"{c['task']}: {c['label']}" for c in cols], "average"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in results["table"].items():
        cells = [_table_cell(row["cells"].get(c["task"]), repeats) for c in cols]
        avg = _fmt(row["average"])
        if row["average"] is not None and row["average_over"] < len(cols):
            avg += f" (over {row['average_over']} of {len(cols)})"
        name = f"**{method}**" if method == ref else method
        lines.append("| " + " | ".join([name, *cells, avg]) + " |")
    lines.append("| " + " | ".join([CHANCE_LABEL, *[_fmt(c.get("chance_mAP")) for c in cols],
                                     "—"]) + " |")
    for other, row in results["paired_differences"].items():
        cells = [_paired_cell(row["cells"].get(c["task"])) for c in cols]
        lines.append("| " + " | ".join([f"{ref} − {other} (paired)", *cells,
                                          _fmt(row["average"], sign=True)]) + " |")
    lines += [""]
    for e in results["equivalences"]:
        lines += [f"‡ at {e['task']} ({100 * e['prob']:g}% known labels): {e['reason']}. One "
                  f"row stands for {' and '.join(e['methods'])} there.", ""]
    if any(cell["state"] != "finished" for row in results["table"].values()
           for cell in row["cells"].values()):
        lines += ["† the study has not finished (see above): the cell may change.", ""]
    if results["paired_differences"]:
        lines += [f"Paired rows: {ref} minus the baseline, repeat by repeat (same training seed "
                  f"and label mask r for both), then mean ± sd of the differences"
                  + (f" and, in brackets, the {100 * CONFIDENCE:g}% {CI_METHOD} confidence "
                     f"interval of their mean; *n.s.* (not significant): the interval covers "
                     f"0" + _few_repeats(repeats) if repeats else
                     " (no repeats: the selected trials, n = 1, no interval)") + ".", ""]

    lines += _per_task_lines(results)
    lines += _noise_lines(results)

    pub = results["published"]
    lines += ["## Published results", ""]
    if pub["rows"]:
        lines += [f"Rows of `{pub['csv']}` for {results['published_dataset']} (mAP %, verbatim; "
                  f"p10..p90 = 10%..90% known labels; full labels have no published column):",
                  ""]
        lines += [f"> {c}" for c in pub["comments"]] + [""]
        lines += ["| " + " | ".join(pub["columns"]) + " |", "|" + "---|" * len(pub["columns"])]
        lines += ["| " + " | ".join(row[c] for c in pub["columns"]) + " |"
                  for row in pub["rows"]]
        lines += [""]
    else:
        lines += [f"None shown: {results['dataset_note']}. (`{pub['csv']}` holds COCO2014 and "
                  f"VOC2007 rows; {pub['source']})", ""]

    lines += ["## Selected configurations", "",
              "Per study, the search's selected trial (best selection score), the weights and "
              "epoch it was selected at, its values of alpha/gamma (PU loss only), EMA decay "
              "and learning rate (searched ones marked *), and the command that reproduces it "
              "(seed 0, label mask 0; the cell's repeats ran it with `--seed=r --mask-seed=r`).",
              "",
              "| task | method | trial | selection score | weights | test mAP | alpha | gamma "
              "| ema | lr | other searched |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["selected"]:
        shown = []
        for key in SHOWN_PARAMS:
            v = s["shown"].get(key)
            shown.append("n/a" if v is None and key in PU_ONLY else
                         "—" if v is None else f"{v:.4g}" + ("*" if key in s["params"] else ""))
        other = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in s["params"].items() if k not in SHOWN_PARAMS)
        lines.append(f"| {s['task']} | {' = '.join(s['methods'])} | {s['trial_id']} | "
                     f"{_fmt(s['selection_score'])} | "
                     f"{_weights(s['selected_weights'], s['selected_epoch'])} | "
                     f"{_fmt(s['test_mAP'])} | " + " | ".join(shown) + f" | {other or '—'} |")
    lines += [""]
    for s in results["selected"]:
        lines += [f"`{s['task']}` / `{' = '.join(s['methods'])}` (trial {s['trial_id']}):", "",
                  "```bash", s["command"] or "# config.yaml unreadable: no command", "```", ""]

    c = results["compute"]
    lines += ["## Compute", "",
              f"{c['trials']} trial(s) ({c['trials_timed']} with a recorded wall time): "
              f"{c['trial_seconds'] / 3600:.3f} trial-hours "
              f"(search {c['trial_seconds_by_stage']['search'] / 3600:.3f}, repeats "
              f"{c['trial_seconds_by_stage']['repeats'] / 3600:.3f}). Each trial reserved "
              f"{c['cpus_per_trial']:g} CPU(s) ({c['num_workers']} worker(s) x "
              f"{c['cpus_per_worker']:g} + {c['driver_cpus']:g} driver) and "
              f"{c['gpus_per_trial']:g} GPU(s).", "",
              f"- **CPU-hours: {c['cpu_hours']:.3f}**",
              f"- **GPU-hours: {c['gpu_hours']:.3f}**"
              + ("" if c["gpu_hours"] else " (the trials ran on CPUs)"),
              "",
              "Hours are reserved resources x trial wall time (Ray Tune's time_total_s), not "
              "measured utilisation." + (
                  f" The search itself took {c['wall_seconds'] / 3600:.3f} h of wall time over "
                  f"{c['legs']} run(s)." if c["wall_seconds"] is not None else ""), "",
              f"On disk: {c['size_on_disk_bytes'] / 2 ** 20:.1f} MiB for the experiment when "
              f"this report was made (hard links counted once): every trial's records, the selected "
              f"weights of the top trials of each study; resume checkpoints are deleted when "
              f"their trial ends.", ""]

    lines += ["## Studies", "", "| study | methods | state | search trials | repeat trials "
              "| selected |", "|---|---|---|---|---|---|"]
    for name, s in results["studies"].items():
        def counts(stage):
            got = s["trials"].get(stage) or {}
            return ", ".join(f"{n} {k}" for k, n in sorted(got.items())) or "—"
        lines.append(f"| {name} | {' = '.join(s['methods'])} | {s['state']} | "
                     f"{counts('search')} | {counts('repeats')} | "
                     f"{s['selected_trial'] or '—'} |")
    lines += [""]
    checks = results["checks"]
    if checks.get("summary_json") == "agrees":
        lines += ["Check: every cell agrees with the search's own `summary.json`.", ""]
    elif isinstance(checks.get("summary_json"), list):
        lines += ["Check: **the trial files differ from `summary.json`**:", ""]
        lines += [f"- {d}" for d in checks["summary_json"]] + [""]
    for d in checks.get("selection", []):
        lines += [f"- selection: {d}"]

    lines += ["## Figures", ""]
    for fig in figures:
        lines += [f"### {fig['title']}", ""]
        if fig.get("note"):
            lines += [fig["note"], ""]
        lines += [f"![{fig['title']}]({fig['path']})", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------- write
def write_report(experiment_dir: str | Path, out_dir: Optional[str | Path] = None,
                 relative_to: Optional[str | Path] = None) -> dict:
    """Write ``report.md``, ``results.json`` and ``figures/`` for an experiment; return the
    paths and the results (``{"out_dir", "report_md", "results_json", "figures", "results"}``).

    ``relative_to``: a folder (e.g. the repository root) whose absolute path is taken out of
    every path in ``report.md`` and ``results.json`` (the experiment, data, config files,
    commands), leaving them relative to it: a report to commit or share carries no machine's
    paths, and says where its commands run from.
    """
    from pu_mlc.files import check_writable_dir

    results, objects = build_results(experiment_dir)
    store: ExperimentStore = objects["store"]
    out = Path(out_dir).resolve() if out_dir else store.report_dir
    check_writable_dir(out, "report folder (--out)")
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    if (out / "results.json").exists():        # an earlier report here: drop its figures
        for old in figures_dir.glob("*.png"):
            old.unlink()
    figures = make_figures(results, objects, figures_dir)
    for fig in figures:
        fig["path"] = str(Path(fig["file"]).relative_to(out))
    results["figures"] = [{k: v for k, v in f.items() if k != "file"} for f in figures]
    markdown = render_markdown(results, figures)
    payload = json.dumps(results, indent=2, default=str) + "\n"
    if relative_to is not None:
        base = Path(relative_to).resolve()
        results["paths_relative_to"] = _describe_base(base, out)
        markdown = _relative(render_markdown(results, figures), base)
        payload = _relative(json.dumps(results, indent=2, default=str) + "\n", base)
        results = json.loads(payload)
    store.write_text(out / "report.md", markdown)
    store.write_text(out / "results.json", payload)
    return {"out_dir": str(out), "report_md": str(out / "report.md"),
            "results_json": str(out / "results.json"),
            "figures": [f["file"] for f in figures], "results": results}


def _describe_base(base: Path, out: Path) -> str:
    """How a report in ``out`` names the folder its paths are relative to (never by its
    absolute path, which the report leaves out)."""
    if out == base:
        return "this report's folder"
    if base in out.parents:
        return f"`{os.path.relpath(base, out)}` from this report's folder"
    return f"the folder `{base.name}` the report was written relative to"


def _relative(text: str, base: Path) -> str:
    """``text`` with ``base/`` taken out of every path below it (``base`` itself becomes
    ``.``)."""
    prefix = re.escape(str(base).rstrip("/"))
    return re.sub(prefix + r"(?![\w.-])", ".", re.sub(prefix + "/", "", text))
