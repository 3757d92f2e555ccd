"""The experiment store (tune/store.py): one trial record from a trial's files, one status
vocabulary, one selection rule, and what stays on disk once trials end. Files written by hand in a
temporary experiment folder; no Ray, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tune.store import (DIVERGED, FINISHED, NOT_STARTED, STOPPED, UNFINISHED, ExperimentStore,
                        StudyRecords, disk_usage, ranked, select, trial_status)


def _trial(store: ExperimentStore, study: str, trial_id: str, *, stage="search", score=50.0,
           test=40.0, status="finished", repeat=None, started=100.0, epochs=2,
           weights=True, params=None):
    folder = store.trial_dir(study, trial_id)
    store.write_json(folder / "trial.json", {
        "study": study, "task": study.split(".")[0], "method": study.split(".")[1],
        "prob": 0.1, "stage": stage, "repeat": repeat, "params": params or {"alpha": 1.0},
        "seed": repeat or 0, "mask_seed": repeat or 0, "started": started,
        "runs": [{"started": started, "node_ip": "10.0.0.2"}], "seconds": 12.5})
    history = [{"epoch": e, "best_score": score, "train_seconds": 1.0, "eval_seconds": 0.5}
               for e in range(1, epochs + 1)]
    store.write_json(folder / "metrics.json", {
        "status": status, "history": history,
        "result": {"test_mAP": test, "selected_epoch": epochs, "selected_model": "ema",
                   "selection_score": score, "test_summary": {"per_class_ap": {"a": 30.0}}},
        **({"failure": {"reason": "why", "epoch": epochs, "step": None}}
           if status != "finished" else {})})
    (folder / "config.yaml").write_text("prob: 0.1\nseed: 0\nloss: pu\n")
    if weights:
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        (folder / "checkpoints" / "best.pt").write_bytes(b"w" * 4096)


def test_the_engine_and_search_statuses_map_to_one_vocabulary():
    assert trial_status(None) == NOT_STARTED
    # attempt_failed: a search trial's attempt raised; its driver alone says whether it ended
    for engine_word in ("running", "interrupted", "stopped", "attempt_failed", None):
        assert trial_status({"status": engine_word}) == UNFINISHED
    for ended in (FINISHED, STOPPED, DIVERGED, "failed"):
        assert trial_status({"status": ended}) == ended
    assert trial_status({"status": "something new"}) == "failed"


def test_a_trial_record_is_read_from_its_files(tmp_path):
    store = ExperimentStore(tmp_path)
    _trial(store, "p10.pu", "abc", score=61.5, test=44.0, epochs=3)
    t = store.read_trial("p10.pu", "abc")
    assert (t.study, t.task, t.method, t.prob, t.stage) == ("p10.pu", "p10", "pu", 0.1, "search")
    assert (t.status, t.epochs, t.selection_score, t.test_map) == (FINISHED, 3, 61.5, 44.0)
    assert (t.selected_weights, t.selected_epoch, t.wall_seconds) == ("ema", 3, 12.5)
    assert t.train_seconds == 3.0 and t.eval_seconds == 1.5
    assert t.params == {"alpha": 1.0} and t.has_weights and t.per_class_ap == {"a": 30.0}
    assert t.nodes["runs"][0]["node_ip"] == "10.0.0.2"
    missing = store.read_trial("p10.pu", "never")
    assert missing.status == NOT_STARTED and missing.epochs == 0 and not missing.has_results


def test_the_selection_is_the_best_search_score_diverged_never_ties_to_the_first_started(
        tmp_path):
    store = ExperimentStore(tmp_path)
    _trial(store, "t.m", "late", score=70.0, started=300.0)
    _trial(store, "t.m", "early", score=70.0, started=200.0)
    _trial(store, "t.m", "worse", score=60.0, started=100.0)
    _trial(store, "t.m", "exploded", score=99.0, status=DIVERGED)
    _trial(store, "t.m", "repeat", score=99.0, stage="repeats", repeat=1)
    trials = store.read_study("t.m").trials
    assert select(trials).trial_id == "early"
    assert [t.trial_id for t in ranked(trials)] == ["early", "late", "worse"]
    assert select([t for t in trials if t.trial_id in ("exploded", "repeat")]) is None


def test_a_settled_status_never_replaces_one_the_engine_wrote(tmp_path):
    store = ExperimentStore(tmp_path)
    _trial(store, "t.m", "a", status="running")
    assert store.settle_trial("t.m", "a", STOPPED, "asha", epoch=1,
                              overwrite=("running", "stopped", "interrupted"))
    assert store.read_trial("t.m", "a").status == STOPPED
    assert store.read_trial("t.m", "a").reason == "asha"
    _trial(store, "t.m", "b", status=FINISHED)
    assert not store.settle_trial("t.m", "b", STOPPED, "asha", overwrite=("running",))
    assert store.read_trial("t.m", "b").status == FINISHED


def test_an_attempt_that_raised_is_failed_only_when_its_driver_settles_it(tmp_path):
    """A worker that raised (its own error, or Ray's as the search is killed) leaves the trial
    unfinished, as Optuna and Tune see it; the trial's driver, once the retries are spent,
    settles it failed and the engine's exact reason stays."""
    from tune.study import settle_trial

    store = ExperimentStore(tmp_path)
    _trial(store, "t.m", "a", status="attempt_failed")
    path = store.trial_dir("t.m", "a") / "metrics.json"
    engine_failure = {"reason": "RuntimeError: CUDA out of memory", "epoch": 2, "step": 7}
    store.write_json(path, {**store.read_json(path), "failure": engine_failure})
    assert store.read_trial("t.m", "a").status == UNFINISHED
    settle_trial(store, "t.m", "a", RuntimeError("ray.exceptions.RayTaskError(RuntimeError)"),
                 2, 30.0)
    t = store.read_trial("t.m", "a")
    assert (t.status, t.reason) == ("failed", "RuntimeError: CUDA out of memory")
    assert store.read_json(path)["failure"] == engine_failure
    # a trial the engine never recorded a failure for gets Ray's reason
    _trial(store, "t.m", "b", status="running")
    settle_trial(store, "t.m", "b", RuntimeError("the node died"), 1, None)
    assert store.read_trial("t.m", "b").reason == "RuntimeError: the node died"


def test_weights_stay_for_the_top_trials_and_repeats_only_when_asked(tmp_path):
    store = ExperimentStore(tmp_path)
    for i, score in enumerate((50.0, 80.0, 70.0, 60.0)):
        _trial(store, "t.m", f"s{i}", score=score, started=float(i))
    for r in (1, 2):
        _trial(store, "t.m", f"r{r}", stage="repeats", repeat=r)
    removed = store.prune_weights("t.m", "search", keep_top=2)
    assert sorted(removed) == ["s0", "s3"]
    kept = {t.trial_id for t in store.read_study("t.m").trials if t.has_weights}
    assert kept == {"s1", "s2", "r1", "r2"}
    assert sorted(store.prune_weights("t.m", "repeats", keep_top=2, keep_repeats=True)) == []
    assert sorted(store.prune_weights("t.m", "repeats", keep_top=2)) == ["r1", "r2"]
    # records stay: every trial is still read with its scores
    assert len(store.read_study("t.m").trials) == 6


def test_an_ended_trials_resume_state_is_released_and_an_unfinished_ones_kept(tmp_path):
    store = ExperimentStore(tmp_path)
    _trial(store, "t.m", "done")
    _trial(store, "t.m", "going", status="running")
    for trial_id in ("done", "going"):
        ckpt = store.train_run_dir("t.m", trial_id) / "checkpoint_epoch_0002"
        ckpt.mkdir(parents=True)
        (ckpt / "last.pt").write_bytes(b"x" * 8192)
    assert store.release_ended_trials("t.m") >= 8192
    assert not list(store.train_run_dir("t.m", "done").glob("checkpoint_*"))
    assert list(store.train_run_dir("t.m", "going").glob("checkpoint_*"))


def test_disk_usage_counts_a_hard_linked_file_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    one = disk_usage(tmp_path)
    os.link(tmp_path / "a", tmp_path / "b")
    assert disk_usage(tmp_path) == one
    (tmp_path / "c").write_bytes(b"y" * 100_000)
    assert disk_usage(tmp_path) > one


def test_study_state_and_counts(tmp_path):
    store = ExperimentStore(tmp_path)
    _trial(store, "t.m", "a")
    _trial(store, "t.m", "b", status=STOPPED)
    _trial(store, "t.m", "r1", stage="repeats", repeat=1)
    records = store.read_study("t.m")
    assert records.state(2) == "search not finished (2 of 2 started trial(s) with results)"
    store.mark_stage_done("search", "t.m", {"trials": 2})
    records = store.read_study("t.m")
    assert records.search_done and records.state(2) == "repeats not finished (1 of 2 finished)"
    assert records.counts() == {"search": {FINISHED: 1, STOPPED: 1}, "repeats": {FINISHED: 1}}
    assert store.stage_record("search", "t.m") == {"trials": 2}
    assert isinstance(records, StudyRecords)


def test_reading_an_experiment_imports_neither_ray_nor_torch():
    code = ("import sys, tune.store, tune.export, tune.report, tune.compare; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out.strip().replace("'", '"')) == []


def test_a_folder_that_is_no_experiment_is_refused_naming_it(tmp_path):
    from pu_mlc.errors import ConfigError
    from tune.store import open_experiment

    with pytest.raises(ConfigError, match="is not a pu-mlc experiment"):
        open_experiment(tmp_path)
    (tmp_path / "search_space.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="search_space.yaml is damaged"):
        open_experiment(tmp_path)
