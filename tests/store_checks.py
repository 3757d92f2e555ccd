"""One check of a real experiment, finished or interrupted: every reader of its trials tells the
same story. The experiment store's records (tune/store.py), the search's ``summary.json`` (when
the search finished), the export's ``all_trials.csv`` and ``best.json``, the report's
``results.json`` content and the Optuna study agree on every trial's status and epochs and on
each study's selected trial."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

#: Optuna's state for each status of the one vocabulary (a diverged trial is a completed, bad
#: trial for the sampler; an unfinished one was proposed and is still running).
OPTUNA_STATE = {"finished": "COMPLETE", "diverged": "COMPLETE",
                "stopped_by_scheduler": "PRUNED", "failed": "FAIL", "unfinished": "RUNNING"}


def optuna_trials(exp: Path, names: list[str], url: Optional[str] = None
                  ) -> dict[str, list[dict]]:
    """Each Optuna study's trials ({state, user_attrs}) from ``url``, by default the
    experiment's own study database (its SQLite file, or its journal file on a cluster)."""
    import optuna

    from tune.store import ExperimentStore
    from tune.study import open_study_storage

    if url is None:
        store = ExperimentStore(exp)
        url = (f"sqlite:///{store.optuna_file}" if store.optuna_file.exists()
               else f"journal://{store.journal_file}")
    storage = open_study_storage(url)
    out = {}
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:                            # the study never started
            continue
        out[name] = [{"state": t.state.name, "user_attrs": t.user_attrs} for t in study.trials]
    return out


def check_readers_agree(exp: Path, out: Path,
                        optuna_trials_by_study: Optional[dict[str, list[dict]]] = None) -> dict:
    """Assert the agreement above; ``out`` receives the export (the experiment folder is left
    as it is). The Optuna trials are read from the experiment's study database unless given
    (``{optuna study name: [{state, user_attrs}]}``, e.g. read where a server listens).
    Returns ``{study: selected trial id or None}``."""
    from tune.export import export_experiment
    from tune.report import build_results
    from tune.store import open_experiment, read_experiment

    store, spec = open_experiment(exp)
    studies = read_experiment(store, spec)
    export_experiment(exp, out)
    with (out / "all_trials.csv").open() as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    best = json.loads((out / "best.json").read_text())
    results, _ = build_results(exp)
    summary = store.read_json(store.summary_file)
    names = [f"{spec.name}.{name}" for name in studies]
    ot_trials = (optuna_trials_by_study if optuna_trials_by_study is not None
                 else optuna_trials(exp, names))

    selected = {}
    every = [t for s in studies.values() for t in s.trials]
    assert sorted(rows) == sorted(t.trial_id for t in every), (sorted(rows), every)
    for name, records in studies.items():
        pick = records.selected
        selected[name] = pick.trial_id if pick else None
        assert results["studies"][name]["selected_trial"] == selected[name], name
        assert (best.get(name) or {}).get("trial_id") == selected[name], name
        if summary is not None:
            entry = summary["studies"][name]
            assert entry["selected_trial"] == selected[name], name
            assert {t["trial_id"]: (t["status"], t["epochs"]) for t in entry["trials"]} == \
                {t.trial_id: (t.status, t.epochs) for t in records.trials}, name
        counted = {}
        for t in records.trials:
            row = rows[t.trial_id]
            assert (row["study"], row["stage"], row["status"], int(row["epochs"])) == \
                (name, t.stage, t.status, t.epochs), (row, t)
            counted.setdefault(t.stage, {}).setdefault(t.status, 0)
            counted[t.stage][t.status] += 1
        assert results["studies"][name]["trials"] == counted, name

        # Optuna: one trial per search trial of the store (an orphan it proposed but Tune
        # never ran is FAIL and marked so), in the state of the trial's status
        ot = ot_trials.get(f"{spec.name}.{name}")
        if ot is None:                              # the study never started
            assert not records.stage("search"), name
            continue
        by_ray_id = {o["user_attrs"].get("ray_trial_id"): o for o in ot
                     if o["user_attrs"].get("ray_trial_id")}
        search = records.stage("search")
        for t in search:
            o = by_ray_id[t.trial_id]
            assert o["state"] == OPTUNA_STATE[t.status], (name, t.trial_id, o["state"],
                                                          t.status)
            epochs = o["user_attrs"].get("epochs")
            if o["state"] == "COMPLETE" and t.status == "finished":
                assert epochs == t.epochs, (name, t.trial_id, epochs, t.epochs)
            elif o["state"] == "PRUNED":            # Optuna froze what the scheduler saw
                assert epochs <= t.epochs, (name, t.trial_id, epochs, t.epochs)
        told = [o for o in ot if o["state"] != "RUNNING"]
        orphans = [o for o in told if o["user_attrs"].get("orphaned")]
        assert len(told) - len(orphans) == sum(t.status != "unfinished" for t in search), name
    return selected
