"""What the Optuna study records for each kind of Ray trial ending (tune/study.py
``StudyOptunaSearch``), on a real in-memory Optuna study driven through Ray Tune's searcher API."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray import tune

from tune.study import StudyOptunaSearch

MAX_EPOCHS = 3


def searcher() -> tuple[StudyOptunaSearch, optuna.Study]:
    study = optuna.create_study(direction="maximize", study_name="s",
                                storage=optuna.storages.InMemoryStorage())
    search = StudyOptunaSearch(space={"alpha": tune.uniform(0.5, 4.0)}, metric="best_score",
                               mode="max", seed=0, max_epochs=MAX_EPOCHS)
    search._ot_study = study                    # the storage the search writes into
    return search, study


def run(search: StudyOptunaSearch, trial_id: str, scores: list[float], **final):
    assert search.suggest(trial_id) is not None
    for epoch, score in enumerate(scores, start=1):
        search.on_trial_result(trial_id, {"best_score": score, "epoch": epoch,
                                          "training_iteration": epoch})
    last = {"best_score": max(scores) if scores else None, "epoch": len(scores),
            "selected_test_mAP": 40.0 + len(scores), **final}
    search.on_trial_complete(trial_id, result=last, error=final.pop("error", False))


def test_each_ending_is_recorded_honestly():
    search, study = searcher()
    run(search, "finished", [30.0, 35.0, 36.0])
    run(search, "stopped", [20.0])                            # ASHA stopped it after epoch 1
    run(search, "diverged", [10.0], diverged=1, diverged_reason="loss nan at step 3",
        best_score=None)
    search.suggest("errored")
    search.on_trial_complete("errored", result=None, error=True)
    by_id = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    assert by_id["finished"].state == TrialState.COMPLETE and by_id["finished"].value == 36.0
    assert by_id["finished"].user_attrs == {"ray_trial_id": "finished", "epochs": 3,
                                            "selected_test_mAP": 43.0}
    # stopped early by the scheduler: PRUNED, its value the last reported score
    assert by_id["stopped"].state == TrialState.PRUNED and by_id["stopped"].value == 20.0
    assert by_id["stopped"].user_attrs["stopped_by_scheduler"] is True
    assert by_id["stopped"].intermediate_values == {1: 20.0}
    # diverged: COMPLETE with the worst score, so the sampler learns the region is bad
    assert by_id["diverged"].state == TrialState.COMPLETE and by_id["diverged"].value == 0.0
    assert by_id["diverged"].user_attrs["diverged_reason"] == "loss nan at step 3"
    errored = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(errored) == 1
    # intermediate values are per epoch
    assert by_id["finished"].intermediate_values == {1: 30.0, 2: 35.0, 3: 36.0}


def test_a_second_completion_of_the_same_trial_changes_nothing():
    search, study = searcher()
    run(search, "t", [30.0, 31.0, 32.0])
    search.on_trial_complete("t", result={"best_score": 99.0, "epoch": 3})
    assert [t.value for t in study.trials] == [32.0]


def test_the_study_names_its_objective_and_says_which_task_method_and_protocol_it_is(tmp_path):
    """What the dashboard shows: the metric name instead of "Objective 0", and the study's
    task, method(s), prob and protocol as its user attributes; a merged study lists both
    methods and why. Read back with ``optuna.load_study`` from the study's own database."""
    import copy
    from pathlib import Path

    from tune.space import parse_search_spec
    from tune.study import objective_name, open_study_storage, optuna_study_attrs

    bce = {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}
    raw = {"name": "lab", "budget": {"trials_per_task": 2}, "resources": {"num_workers": 1},
           "fixed": {"dataset": "coco", "data": "/data/demo", "protocol": "honest"},
           "methods": [{"name": "partial_bce", "fixed": {"loss": "partial_bce"}, "search": bce},
                       {"name": "assume_negative_bce", "fixed": {"loss": "assume_negative_bce"},
                        "search": copy.deepcopy(bce)}],
           "tasks": [{"name": "full", "prob": 1.0}]}
    spec = parse_search_spec(raw, base_dir=Path("/tmp"))
    study = spec.study("full.partial_bce")
    url = f"sqlite:///{tmp_path / 'optuna.sqlite3'}"
    StudyOptunaSearch(space={"lr": study.search["lr"].to_optuna()}, metric="best_score",
                      mode="max", seed=0, storage=open_study_storage(url),
                      study_name="lab.full.partial_bce", metric_names=[objective_name(study)],
                      study_attrs=optuna_study_attrs(spec, study))
    loaded = optuna.load_study(study_name="lab.full.partial_bce", storage=url)
    assert loaded.metric_names == ["selection score: val mAP on 100%-known labels"]
    attrs = loaded.user_attrs
    assert (attrs["task"], attrs["method"], attrs["prob"], attrs["protocol"]) == (
        "full", "partial_bce", 1.0, "honest")
    assert attrs["methods"] == ["partial_bce", "assume_negative_bce"]
    assert "every label is known" in attrs["equivalence"]
