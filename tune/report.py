"""``pu-mlc report EXPERIMENT_DIR``: what a search found, as one self-contained folder.

The report is rebuilt from the experiment's own files, not copied from ``summary.json``:

- the studies (task x method) come from ``search_space.yaml``;
- each trial's stage (search or repeat) and its repeat number from Tune's trial folders
  (``tune/<study>/<study>_<trial>/``, ``tune_repeats/<study>/<study>_<trial>/params.json``), its
  wall time from their ``result.json``;
- its scores, status, per-epoch history and per-class AP from ``trials/<study>/<trial>/
  metrics.json``, its full config from ``config.yaml`` next to it;
- which studies finished from the ``.pu_mlc_done`` markers of their stages.

The selection and the per-method numbers follow the search's own rules, with the search's own
functions (:mod:`tune.compare`): the selected trial of a study is its search trial with the best
selection score (diverged trials excluded); a method's cell is the test mAP of that selection,
mean and sample sd over the finished repeats (new training seed and label mask ``r`` each); the
paired difference is PU-MLC minus a baseline repeat by repeat. Ray need not be running, and a
partial experiment (a search still running, or interrupted) is reported as far as its trials go,
with its unfinished studies named.

Output (``EXPERIMENT_DIR/report`` unless ``--out``): ``report.md``, ``results.json`` (the same
content, machine-readable) and ``figures/*.png`` (:mod:`tune.report_figures`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from pu_mlc.errors import ConfigError

log = logging.getLogger(__name__)

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "mlc_pl_published.csv"
#: The ``dataset`` of a run (canonical spelling) -> the dataset column of the published CSV.
#: ``coco`` is any COCO-format folder (the built-in Fashion-MNIST demo among them), not COCO-2014.
PUBLISHED_DATASET = {"COCO2014": "COCO2014", "VOC2007": "VOC2007"}
#: Fewer completed search trials than this: no parameter importances (they would be noise).
MIN_IMPORTANCE_TRIALS = 5
DONE_MARKER = ".pu_mlc_done"          # tune.study.DONE_MARKER (not imported: that imports Ray)
PU_ONLY = ("alpha", "gamma")          # fields only the PU loss reads
SHOWN_PARAMS = ("alpha", "gamma", "ema", "lr")


# ------------------------------------------------------------------------------ trial files
@dataclass
class TrialFiles:
    """One trial as its files describe it."""

    study: str
    trial_id: str
    stage: str                       # search | repeats | unknown
    repeat: Optional[int]
    status: str                      # metrics.json status, or "no results yet"
    selection_score: Optional[float]
    test_map: Optional[float]
    history: list[dict]
    params: dict[str, Any]           # the searched values (Tune's params.json)
    config: dict[str, Any]           # config.yaml (every field)
    seconds: Optional[float]         # Tune's time_total_s
    per_class_ap: dict[str, float]
    classes_without_positives: list[str]
    path: Path

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def has_metrics(self) -> bool:
        return self.status != "no results yet"

    def as_outcome_entry(self) -> dict:
        """The shape of a trial in a stage outcome (``tune.study.stage_outcome``)."""
        return {"trial_id": self.trial_id, "epochs": len(self.history), "status": self.status,
                "best_score": self.selection_score, "selected_test_mAP": self.test_map,
                "diverged": self.diverged, "params": dict(self.params),
                "repeat": self.repeat, "seconds": self.seconds}


@dataclass
class StudyFiles:
    name: str
    task: str
    method: str
    prob: float
    loss: str
    search_space: dict[str, Any]     # name -> tune.space.Distribution
    trials: list[TrialFiles] = field(default_factory=list)
    search_done: bool = False
    repeats_done: bool = False
    recorded: dict[str, Optional[dict]] = field(default_factory=dict)  # the done markers

    def stage(self, stage: str) -> list[TrialFiles]:
        return [t for t in self.trials if t.stage == stage]

    def state(self, repeats: int) -> str:
        search = self.stage("search")
        scored = sum(t.has_metrics for t in search)
        if not self.search_done:
            if not search:
                return "not started"
            return f"search not finished ({scored} of {len(search)} started trial(s) with results)"
        if repeats and not self.repeats_done:
            done = sum(t.status == "finished" for t in self.stage("repeats"))
            return f"repeats not finished ({done} of {repeats} finished)"
        return "finished"


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _last_result(tune_trial_dir: Path) -> dict:
    """The last line of Tune's ``result.json`` of a trial (its final report)."""
    try:
        lines = [ln for ln in (tune_trial_dir / "result.json").read_text().splitlines()
                 if ln.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def collect_study(experiment_dir: Path, study) -> StudyFiles:
    """Every trial of one study (search and repeats) from its files."""
    out = StudyFiles(name=study.name, task=study.task, method=study.method, prob=study.prob,
                     loss=study.base.loss, search_space=dict(study.search))
    tune_dirs: dict[str, tuple[str, Path]] = {}
    for stage, root in (("search", "tune"), ("repeats", "tune_repeats")):
        folder = experiment_dir / root / study.name
        marker = folder / DONE_MARKER
        out.recorded[stage] = _read_json(marker) if marker.exists() else None
        setattr(out, f"{stage}_done", marker.exists())
        if folder.is_dir():
            prefix = f"{study.name}_"
            for d in sorted(folder.iterdir()):
                if d.is_dir() and d.name.startswith(prefix):
                    tune_dirs[d.name[len(prefix):]] = (stage, d)
    trial_root = experiment_dir / "trials" / study.name
    ids = set(tune_dirs)
    if trial_root.is_dir():
        ids |= {d.name for d in trial_root.iterdir() if d.is_dir()}
    recorded_stage = {}
    for stage, outcome in out.recorded.items():
        for t in (outcome or {}).get("trial_list", []):
            recorded_stage[str(t.get("trial_id"))] = (stage, t)
    for trial_id in sorted(ids):
        stage, tune_dir = tune_dirs.get(trial_id, (None, None))
        params = (_read_json(tune_dir / "params.json") or {}) if tune_dir else {}
        last = _last_result(tune_dir) if tune_dir else {}
        recorded = recorded_stage.get(trial_id)
        if stage is None:
            stage = recorded[0] if recorded else "unknown"
        folder = trial_root / trial_id
        metrics = _read_json(folder / "metrics.json")
        try:
            config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            config = {}
        if not params and recorded:
            params = dict(recorded[1].get("params") or {})
            if recorded[1].get("repeat") is not None:
                params["repeat"] = recorded[1]["repeat"]
        repeat = params.pop("repeat", None)
        if stage == "repeats" and repeat is None:
            repeat = config.get("seed")           # a repeat r runs seed = mask_seed = r
        if not params and config:
            params = {k: config[k] for k in study.search if k in config}
        history = list((metrics or {}).get("history") or [])
        result = (metrics or {}).get("result") or {}
        score = _number(result.get("selection_score"))
        if score is None and history:                  # ended before the engine's summary
            score = _number(history[-1].get("best_score"))
        test = _number(result.get("test_mAP"))
        if test is None and history:
            test = _number(history[-1].get("selected_test_mAP"))
        summary = result.get("test_summary") or {}
        seconds = _number(last.get("time_total_s"))
        if seconds is None and recorded:
            seconds = _number(recorded[1].get("seconds"))
        out.trials.append(TrialFiles(
            study=study.name, trial_id=trial_id, stage=stage,
            repeat=int(repeat) if repeat is not None else None,
            status=(metrics or {}).get("status") or ("no results yet" if metrics is None
                                                     else "unknown"),
            selection_score=score, test_map=test, history=history, params=params,
            config=config, seconds=seconds,
            per_class_ap={str(k): float(v) for k, v in (summary.get("per_class_ap") or {})
                          .items() if _number(v) is not None},
            classes_without_positives=list(summary.get("classes_without_positives") or []),
            path=folder))
    return out


def select_trial(study: StudyFiles) -> Optional[TrialFiles]:
    """The search's selected trial: the best selection score among the search trials that
    reported one and did not diverge (``tune.study.stage_outcome``). A tie goes to the trial
    the finished search recorded, else to the one that started first."""
    ok = [t for t in study.stage("search") if t.selection_score is not None and not t.diverged]
    if not ok:
        return None
    top = max(t.selection_score for t in ok)
    tied = [t for t in ok if t.selection_score == top]
    recorded = ((study.recorded.get("search") or {}).get("best") or {}).get("trial_id")
    for t in tied:
        if t.trial_id == recorded:
            return t
    order = _trial_order(study)
    return min(tied, key=lambda t: (order.get(t.trial_id, math.inf), t.trial_id))


def _trial_order(study: StudyFiles) -> dict[str, float]:
    """When each search trial started (its Tune folder's creation), for tie breaks."""
    order = {}
    for t in study.stage("search"):
        probe = t.path / "config.yaml"
        try:
            order[t.trial_id] = probe.stat().st_mtime
        except OSError:
            pass
    return order


def stage_outcomes(study: StudyFiles) -> dict[str, Optional[dict]]:
    """The study's stages in the shape :func:`tune.compare.compare_methods` reads."""
    best = select_trial(study)
    search = None
    if best is not None:
        search = {"study": study.name, "best": best.as_outcome_entry(),
                  "trial_list": [t.as_outcome_entry() for t in study.stage("search")]}
    repeats = {"study": study.name,
               "trial_list": [t.as_outcome_entry() for t in study.stage("repeats")]}
    return {"search": search, "repeats": repeats if repeats["trial_list"] else None}


# ------------------------------------------------------------------------------- the spec
def load_experiment(experiment_dir: str | Path):
    """The experiment's search spec (its saved ``search_space.yaml``) and the folder."""
    from .space import parse_search_spec

    experiment_dir = Path(experiment_dir).resolve()
    saved = experiment_dir / "search_space.yaml"
    if not saved.is_file():
        raise ConfigError(f"{experiment_dir} is not a pu-mlc experiment (no search_space.yaml); "
                          f"pass the directory printed by 'pu-mlc search'")
    try:
        raw = yaml.safe_load(saved.read_text())
        if not isinstance(raw, dict):
            raise ConfigError("not a mapping")
        spec = parse_search_spec(raw, source=str(saved), base_dir=experiment_dir)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as err:
        raise ConfigError(f"{saved} is damaged or no longer a valid search space "
                          f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); it is "
                          f"written by 'pu-mlc search'") from None
    return spec, raw, experiment_dir


# ----------------------------------------------------------------------------- published
def read_published(path: Path = REFERENCE_CSV) -> dict:
    """The shipped CSV: its comment lines (the source) and its rows, values kept as text."""
    text = path.read_text()
    comments = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
    body = "\n".join(ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
    reader = csv.reader(io.StringIO(body))
    header = next(reader)
    rows = [dict(zip(header, row)) for row in reader if row]
    return {"file": str(path), "comments": comments,
            "source": next((c for c in comments if c.lower().startswith("source")), None),
            "columns": header, "rows": rows}


def published_prob(column: str) -> Optional[float]:
    """``p10`` -> 0.1; other columns (``avg``, ``params_m``) -> None."""
    m = re.fullmatch(r"p(\d+)", column)
    return int(m.group(1)) / 100 if m else None


def _dataset_note(spec) -> tuple[list[str], Optional[str], str]:
    """The experiment's datasets, the published dataset they map to (if any) and a line."""
    datasets = sorted({s.base.dataset for s in spec.studies})
    mapped = sorted({PUBLISHED_DATASET[d] for d in datasets if d in PUBLISHED_DATASET})
    if len(mapped) == 1 and len(datasets) == 1:
        return datasets, mapped[0], f"dataset {datasets[0]}: published rows for {mapped[0]}"
    if len(datasets) > 1:
        return datasets, None, (f"the studies use several datasets ({', '.join(datasets)}): "
                                f"no single set of published rows applies")
    what = f"dataset '{datasets[0]}'" if datasets else "no dataset"
    kind = "a COCO-format folder"
    data = Path(str(spec.studies[0].base.data)) if spec.studies else None
    manifest = _read_json(data / "manifest.json") if data else None
    if manifest and "Fashion-MNIST" in str(manifest.get("name", "")):
        kind = f"the built-in Fashion-MNIST demo ({manifest['name']})"
    return datasets, None, (f"{what} is {kind}, not COCO-2014 or VOC2007: no published "
                            f"rows apply")


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


def _protocol(studies: list[StudyFiles], spec) -> dict:
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


def _shown_params(trial: Optional[TrialFiles], study: StudyFiles) -> dict:
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

    spec, raw, experiment_dir = load_experiment(experiment_dir)
    studies = [collect_study(experiment_dir, s) for s in spec.studies]
    by_name = {s.name: s for s in studies}
    outcomes = {s.name: stage_outcomes(s) for s in studies}
    tasks = compare_methods(spec, outcomes)
    ref = reference_method(spec)
    methods = list(dict.fromkeys(s.method for s in spec.studies))
    order = sorted(spec.tasks, key=lambda t: t.base.prob)     # stable: spec order on ties
    columns = [{"task": t.name, "prob": t.base.prob, "label": _prob_label(t.base.prob)}
               for t in order if t.name in tasks]
    summary = _read_json(experiment_dir / "summary.json")

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
            selected = select_trial(study)
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
            trial = select_trial(study) if study else None
            if trial is None:
                continue
            selected.append({
                "task": col["task"], "prob": col["prob"], "method": method,
                "study": study.name, "trial_id": trial.trial_id,
                "selection_score": trial.selection_score, "test_mAP": trial.test_map,
                "status": trial.status, "params": trial.params,
                "shown": _shown_params(trial, study),
                "command": _command(trial, workers), "config": str(trial.path / "config.yaml")})

    # compute spent: reserved resources x trial wall time
    r = spec.resources
    all_trials = [t for s in studies for t in s.trials]
    timed = [t for t in all_trials if t.seconds is not None]
    seconds = {stage: sum(t.seconds for t in timed if t.stage == stage)
               for stage in ("search", "repeats", "unknown")}
    total = sum(seconds.values())
    legs = _read_json(experiment_dir / "legs.json")
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
        "legs": len(legs) if isinstance(legs, list) else None}

    datasets, published_for, dataset_line = _dataset_note(spec)
    published = read_published()
    published_rows = [row for row in published["rows"] if row.get("dataset") == published_for]

    unfinished = {s.name: s.state(spec.repeats) for s in studies
                  if s.state(spec.repeats) != "finished"}
    partial = bool(unfinished)
    checks = _check_against_summary(summary, table)
    study_info = {}
    for s in studies:
        best = select_trial(s)
        counts: dict[str, dict[str, int]] = {}
        for t in s.trials:
            counts.setdefault(t.stage, {}).setdefault(t.status, 0)
            counts[t.stage][t.status] += 1
        recorded = ((s.recorded.get("search") or {}).get("best") or {}).get("trial_id")
        study_info[s.name] = {
            "task": s.task, "method": s.method, "prob": s.prob, "loss": s.loss,
            "state": s.state(spec.repeats), "search_done": s.search_done,
            "repeats_done": s.repeats_done, "trials": counts,
            "selected_trial": best.trial_id if best else None,
            "recorded_selection": recorded,
            "searched": {k: d.describe() for k, d in s.search_space.items()},
            "completed_search_trials": sum(t.status == "finished" and
                                           t.selection_score is not None
                                           for t in s.stage("search")),
            "importances": _importances(s)}
        if recorded and best and recorded != best.trial_id:
            checks.setdefault("selection", []).append(
                f"{s.name}: the search recorded trial {recorded}, the trial files select "
                f"{best.trial_id}")

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
    return results, {"spec": spec, "studies": by_name, "experiment_dir": experiment_dir}


def _importances(study: StudyFiles) -> Optional[dict[str, float]]:
    """PED-ANOVA importances of the study's searched parameters (None: too few trials)."""
    from .report_figures import importances

    if not study.search_space:
        return None
    try:
        return importances(study)
    except Exception as err:       # never lose the report over an optional statistic
        log.warning("study %s: no parameter importances (%s: %s)", study.name,
                    type(err).__name__, err)
        return None


def _command(trial: TrialFiles, workers: int) -> Optional[str]:
    from pu_mlc.config import TrainConfig

    from .export import exported_config, reproduce_command

    path = trial.path / "config.yaml"
    if not path.exists():
        return None
    try:
        cfg = TrainConfig.from_yaml(path)
    except Exception as err:      # a damaged config must not sink the whole report
        log.warning("trial %s: config.yaml unreadable (%s)", trial.trial_id, err)
        return None
    return reproduce_command(exported_config(cfg, trial.path, trial.study), workers)


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
                  f"{c['legs']} run(s)." if c["wall_seconds"] is not None else ""), ""]

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

    from .report_figures import make_figures

    results, objects = build_results(experiment_dir)
    experiment_dir = objects["experiment_dir"]
    out = Path(out_dir).resolve() if out_dir else experiment_dir / "report"
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
    (out / "report.md").write_text(render_markdown(results, figures))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return {"out_dir": str(out), "report_md": str(out / "report.md"),
            "results_json": str(out / "results.json"),
            "figures": [f["file"] for f in figures], "results": results}
