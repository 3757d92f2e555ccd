"""``pu-mlc report EXPERIMENT_DIR``: what a search found, as one self-contained folder.

The report is rebuilt from the experiment's own files through the experiment store
(:mod:`tune.store`), not copied from ``summary.json``: the studies come from
``search_space.yaml``, each trial's stage, repeat, params, status, scores, history and per-class
AP from its records, which studies finished from the stages' done markers. The selection is the
store's one rule (:func:`tune.store.select`) and the per-method numbers the search's own
(:mod:`tune.compare`): a method's cell is the test mAP of its selected config, mean and sample
sd over the finished repeats (new training seed and label mask ``r`` each); the paired
difference is PU-MLC minus a baseline repeat by repeat. Ray need not be running, and a partial
experiment (a search still running, or interrupted) is reported as far as its trials go, with
its unfinished studies named.

Output (``EXPERIMENT_DIR/report`` unless ``--out``): ``report.md``, ``results.json`` (the same
content, machine-readable) and ``figures/*.png`` (:mod:`tune.report_figures`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .published import dataset_note, read_published
from .report_figures import MIN_IMPORTANCE_TRIALS, importances, make_figures
from .space import Study
from .store import (ExperimentStore, StudyRecords, TrialRecord, open_experiment,
                    read_experiment)

log = logging.getLogger(__name__)

PU_ONLY = ("alpha", "gamma")          # fields only the PU loss reads
SHOWN_PARAMS = ("alpha", "gamma", "ema", "lr")


# ------------------------------------------------------------------------------- studies
@dataclass
class StudyView:
    """A study as the report reads it: its records (the store's) and its definition (the
    space's: task, method, prob, loss, searched distributions)."""

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


def _protocol(studies: list[StudyView], spec) -> dict:
    found = {}
    for s in studies:
        values = {t.config.get("protocol") for t in s.trials if t.config.get("protocol")}
        if not values:
            values = {spec.study(s.name).base.protocol}
        found[s.name] = sorted(values)
    names = sorted({p for v in found.values() for p in v})
    name = names[0] if len(names) == 1 else "mixed"
    text = {
        "honest": "**honest**: every config and epoch was selected on a validation split held "
                  "out from the training images, whose labels are known only at the task's "
                  "proportion; the test mAP of that selection is reported (the test set never "
                  "took part in a selection).",
        "paper": "**paper**: the epoch (and config) was selected on the *test* set, as the "
                 "published code does; the numbers are optimistic, not held-out estimates.",
    }.get(name, "**mixed**: studies used different protocols (" + "; ".join(
        f"{k}: {', '.join(v)}" for k, v in found.items()) + "); their numbers are not "
        "comparable.")
    return {"name": name, "per_study": found, "text": text}


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
    methods = list(dict.fromkeys(s.method for s in spec.studies))
    order = sorted(spec.tasks, key=lambda t: t.base.prob)     # stable: spec order on ties
    columns = [{"task": t.name, "prob": t.base.prob, "label": _prob_label(t.base.prob)}
               for t in order if t.name in tasks]
    summary = store.read_json(store.summary_file)

    # the table: one row per method, one column per task (label proportion) + the average
    table: dict[str, dict] = {}
    for method in methods:
        cells = {}
        for col in columns:
            r = tasks[col["task"]]["methods"].get(method)
            study = next((s for s in studies if s.task == col["task"] and s.method == method),
                         None)
            if study is None:
                continue
            selected = study.selected
            cell = {"study": study.name, "state": study.state(spec.repeats),
                    "mean": None, "sd": None, "n": 0, "repeats": {}}
            if r is not None:
                cell.update(mean=r["test_mAP_mean"], sd=r["test_mAP_sd"], n=r["n"],
                            repeats=r["repeats"], selected_trial=r["selected_trial"],
                            selection_score=r["selection_score"],
                            selected_test_mAP=r["selected_test_mAP"], params=r["params"])
                cell["repeat_trials"] = {str(t.repeat): t.trial_id
                                         for t in study.stage("repeats")
                                         if str(t.repeat) in r["repeats"]}
            cell["shown_params"] = _shown_params(selected, study)
            cells[col["task"]] = cell
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
                                      "per_repeat": d["per_repeat"]}
        if not cells:
            continue
        present = [c["mean"] for c in cells.values() if c["mean"] is not None]
        paired[method] = {"reference": ref, "baseline": method, "cells": cells,
                          "average": sum(present) / len(present) if present else None,
                          "average_over": len(present)}

    # selected configs and the commands that reproduce them
    workers = spec.resources.num_workers
    selected = []
    for col in columns:
        for method in methods:
            study = next((s for s in studies if s.task == col["task"] and s.method == method),
                         None)
            trial = study.selected if study else None
            if trial is None:
                continue
            selected.append({
                "task": col["task"], "prob": col["prob"], "method": method,
                "study": study.name, "trial_id": trial.trial_id,
                "selection_score": trial.selection_score, "test_mAP": trial.test_map,
                "selected_weights": trial.selected_weights,
                "selected_epoch": trial.selected_epoch,
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
            "task": s.task, "method": s.method, "prob": s.prob, "loss": s.loss,
            "state": s.state(spec.repeats), "search_done": s.records.search_done,
            "repeats_done": s.records.repeats_done, "trials": counts,
            "selected_trial": best.trial_id if best else None,
            "searched": {k: d.describe() for k, d in s.search_space.items()},
            "completed_search_trials": sum(t.status == "finished" and
                                           t.selection_score is not None
                                           for t in s.stage("search")),
            "importances": _importances(s)}

    results = {
        "experiment": str(experiment_dir), "name": spec.name,
        "partial": partial, "unfinished": unfinished,
        "summary_json": summary is not None,
        "protocol": _protocol(studies, spec),
        "datasets": datasets, "published_dataset": published_for,
        "dataset_note": dataset_line,
        "reference_method": ref, "methods": methods, "repeats": spec.repeats,
        "columns": columns, "table": table, "paired_differences": paired,
        "selected": selected,
        "published": {"csv": "tune/reference/mlc_pl_published.csv",
                      "comments": published["comments"], "source": published["source"],
                      "columns": published["columns"], "rows": published_rows},
        "compute": compute, "studies": study_info, "checks": checks,
    }
    return results, {"spec": spec, "studies": by_name, "store": store}


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
def render_markdown(results: dict, figures: list[dict]) -> str:
    cols = results["columns"]
    ref = results["reference_method"]
    repeats = results["repeats"]
    lines = [f"# Search report: {results['name']}", "",
             f"Experiment: `{results['experiment']}`", ""]
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
    lines += [f"Protocol: {results['protocol']['text']}", ""]
    what = (f"test mAP (%) of each method's selected config, mean ± sd over its finished "
            f"repeats (n in brackets; {repeats} repeat(s) expected, repeat r re-trains with "
            f"seed r and label mask r)" if repeats else
            "test mAP (%) of each method's selected trial (no repeats: no spread)")
    lines += ["## Results", "", f"Cells: {what}. Average: mean over the label proportions "
              f"present in the row.", ""]
    header = ["method", *[f"{c['task']}: {c['label']}" for c in cols], "average"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in results["table"].items():
        cells = []
        for c in cols:
            cell = row["cells"].get(c["task"])
            if cell is None:
                cells.append("—")
                continue
            text = _pm(cell["mean"], cell["sd"])
            if repeats and cell["mean"] is not None:
                text += f" (n={cell['n']})"
            if cell["state"] != "finished":
                text += " †"
            cells.append(text)
        avg = _fmt(row["average"])
        if row["average"] is not None and row["average_over"] < len(cols):
            avg += f" (over {row['average_over']} of {len(cols)})"
        name = f"**{method}**" if method == ref else method
        lines.append("| " + " | ".join([name, *cells, avg]) + " |")
    for other, row in results["paired_differences"].items():
        cells = []
        for c in cols:
            d = row["cells"].get(c["task"])
            cells.append("—" if d is None or d["mean"] is None else
                         _pm(d["mean"], d["sd"], sign=True) + f" (n={d['n']})")
        lines.append("| " + " | ".join([f"{ref} − {other} (paired)", *cells,
                                          _fmt(row["average"], sign=True)]) + " |")
    lines += [""]
    if any(cell["state"] != "finished" for row in results["table"].values()
           for cell in row["cells"].values()):
        lines += ["† the study has not finished (see above): the cell may change.", ""]
    if results["paired_differences"]:
        lines += [f"Paired rows: {ref} minus the baseline, repeat by repeat (same training seed "
                  f"and label mask r for both), then mean ± sd of the differences"
                  + ("" if repeats else " (no repeats: the selected trials, n = 1)") + ".", ""]

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
              "Per cell, the search's selected trial (best selection score), its values of "
              "alpha/gamma (PU loss only), EMA decay and learning rate (searched ones marked *), "
              "and the command that reproduces it (seed 0, label mask 0; the cell's repeats "
              "ran it with `--seed=r --mask-seed=r`).", "",
              "| task | method | trial | selection score | test mAP | alpha | gamma | ema | lr "
              "| other searched |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["selected"]:
        shown = []
        for key in SHOWN_PARAMS:
            v = s["shown"].get(key)
            shown.append("n/a" if v is None and key in PU_ONLY else
                         "—" if v is None else f"{v:.4g}" + ("*" if key in s["params"] else ""))
        other = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in s["params"].items() if k not in SHOWN_PARAMS)
        lines.append(f"| {s['task']} | {s['method']} | {s['trial_id']} | "
                     f"{_fmt(s['selection_score'])} | {_fmt(s['test_mAP'])} | "
                     + " | ".join(shown) + f" | {other or '—'} |")
    lines += [""]
    for s in results["selected"]:
        lines += [f"`{s['task']}` / `{s['method']}` (trial {s['trial_id']}):", "",
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

    lines += ["## Studies", "", "| study | state | search trials | repeat trials | selected |",
              "|---|---|---|---|---|"]
    for name, s in results["studies"].items():
        def counts(stage):
            got = s["trials"].get(stage) or {}
            return ", ".join(f"{n} {k}" for k, n in sorted(got.items())) or "—"
        lines.append(f"| {name} | {s['state']} | {counts('search')} | {counts('repeats')} | "
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
def write_report(experiment_dir: str | Path, out_dir: Optional[str | Path] = None) -> dict:
    """Write ``report.md``, ``results.json`` and ``figures/`` for an experiment; return the
    paths and the results (``{"out_dir", "report_md", "results_json", "figures", "results"}``).
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
    store.write_text(out / "report.md", render_markdown(results, figures))
    store.write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    return {"out_dir": str(out), "report_md": str(out / "report.md"),
            "results_json": str(out / "results.json"),
            "figures": [f["file"] for f in figures], "results": results}
