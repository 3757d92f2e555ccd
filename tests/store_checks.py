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


def check_readers_agree(exp: Path, out: Path, optuna_url: Optional[str] = None) -> dict:
    """Assert the agreement above; ``out`` receives the export (the experiment folder is left
    as it is). Returns ``{study: selected trial id or None}``."""
    import optuna

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
    optuna_url = optuna_url or f"sqlite:///{exp / 'optuna.sqlite3'}"

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
        try:
            ot = optuna.load_study(study_name=f"{spec.name}.{name}", storage=optuna_url)
        except KeyError:                            # the study never started
            assert not records.stage("search"), name
            continue
        by_ray_id = {o.user_attrs.get("ray_trial_id"): o for o in ot.trials
                     if o.user_attrs.get("ray_trial_id")}
        search = records.stage("search")
        for t in search:
            o = by_ray_id[t.trial_id]
            assert o.state.name == OPTUNA_STATE[t.status], (name, t.trial_id, o.state, t.status)
            epochs = o.user_attrs.get("epochs")
            if o.state.name == "COMPLETE" and t.status == "finished":
                assert epochs == t.epochs, (name, t.trial_id, epochs, t.epochs)
            elif o.state.name == "PRUNED":      # Optuna froze what the scheduler saw
                assert epochs <= t.epochs, (name, t.trial_id, epochs, t.epochs)
        told = [o for o in ot.trials if o.state.name != "RUNNING"]
        orphans = [o for o in told if o.user_attrs.get("orphaned")]
        assert len(told) - len(orphans) == sum(t.status != "unfinished" for t in search), name
    return selected
