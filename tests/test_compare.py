"""Per-task method results and paired differences (tune/compare.py), and the study runner's
warm-start rules, on hand-built study outcomes (no Ray)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from tune.compare import compare_methods, mean_sd, paired_difference, reference_method
from tune.search import StudyRunner, build_summary
from tune.space import parse_search_spec

SPACE = {
    "name": "c", "budget": {"trials_per_task": 2, "repeats": 3},
    "resources": {"num_workers": 1},
    "fixed": {"dataset": "coco", "data": "/data/demo", "train_epochs": 1, "epochs": 1},
    "search": {"ema": {"type": "choice", "values": [0.99, 0.9997]}},
    "methods": [{"name": "pbce", "fixed": {"loss": "partial_bce"}},
                {"name": "pu", "fixed": {"loss": "pu"},
                 "search": {"alpha": {"type": "uniform", "low": 0.5, "high": 4.0}}}],
    "tasks": [{"name": "p10", "prob": 0.1}, {"name": "p30", "prob": 0.3},
              {"name": "p50", "prob": 0.5}],
}


def spec(**top):
    raw = copy.deepcopy(SPACE)
    raw.update(top)
    return parse_search_spec(raw, base_dir=Path("/tmp"))


def outcome(study, best_params, test, repeats=None):
    trials = [{"trial_id": f"r{r}", "status": "finished", "selected_test_mAP": v, "repeat": r}
              for r, v in (repeats or {}).items()]
    return {"search": {"study": study, "best": {"trial_id": "t", "best_score": 50.0,
                                                "selected_test_mAP": test,
                                                "params": best_params},
                       "trials": 2, "trial_list": []},
            "repeats": {"trial_list": trials, "trials": len(trials)} if repeats else None}


def test_mean_and_sample_sd():
    assert mean_sd([]) == {"n": 0, "mean": None, "sd": None}
    assert mean_sd([3.0]) == {"n": 1, "mean": 3.0, "sd": None}
    r = mean_sd([1.0, 2.0, 4.0])
    assert r["mean"] == pytest.approx(7 / 3)
    assert r["sd"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 +
                                               (4 - 7 / 3) ** 2) / 2))


def test_pu_is_the_reference_even_when_listed_second():
    assert reference_method(spec()) == "pu"


def test_paired_differences_use_only_repeats_both_methods_finished():
    s = spec()
    outcomes = {"p10.pu": outcome("p10.pu", {"alpha": 1.0, "ema": 0.99}, 60.0,
                                  {1: 60.0, 2: 62.0, 3: 61.0}),
                "p10.pbce": outcome("p10.pbce", {"ema": 0.99}, 55.0, {1: 50.0, 3: 52.0})}
    tasks = compare_methods(s, outcomes)
    p10 = tasks["p10"]
    assert p10["methods"]["pu"]["test_mAP_mean"] == pytest.approx(61.0)
    assert p10["methods"]["pu"]["n"] == 3 and p10["methods"]["pbce"]["n"] == 2
    diff = p10["paired_differences"]["pbce"]
    assert diff["per_repeat"] == {"1": pytest.approx(10.0), "3": pytest.approx(9.0)}
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(9.5) and diff["reference"] == "pu"
    assert set(tasks["p30"]["unfinished"]) == {"p30.pu", "p30.pbce"}


def test_without_repeats_the_selected_runs_are_compared_with_no_spread():
    s = spec(budget={"trials_per_task": 2})
    outcomes = {"p10.pu": outcome("p10.pu", {}, 60.0), "p10.pbce": outcome("p10.pbce", {}, 55.0)}
    p10 = compare_methods(s, outcomes)["p10"]
    assert p10["methods"]["pu"]["test_mAP_mean"] == 60.0
    assert p10["methods"]["pu"]["test_mAP_sd"] is None and p10["methods"]["pu"]["n"] == 1
    assert paired_difference(p10["methods"]["pu"], p10["methods"]["pbce"], 0)["mean"] == 5.0


def test_summary_counts_every_stage_and_the_slot_utilisation():
    s = spec()
    outcomes = {"p10.pu": outcome("p10.pu", {}, 60.0, {1: 60.0})}
    outcomes["p10.pu"]["search"].update(trials=2, finished=2, trial_list=[
        {"seconds": 30.0}, {"seconds": 10.0}])
    outcomes["p10.pu"]["repeats"].update(finished=1, trial_list=[
        {"seconds": 20.0, "status": "finished", "selected_test_mAP": 60.0, "repeat": 1}])
    summary = build_summary(s, outcomes, [{"seconds": 40.0}, {"seconds": 20.0}], slots=2)
    assert summary["trials"]["trials"] == 3 and summary["trials"]["finished"] == 3
    assert summary["wall_seconds"] == 60.0 and summary["trial_seconds"] == 60.0
    assert summary["slot_utilisation"] == pytest.approx(60.0 / (2 * 60.0))


def test_warm_start_waits_for_a_finished_neighbour_and_takes_the_nearest_best():
    s = spec(warm_start="neighbours")
    runner = StudyRunner(s, resume=False, slots=2, use_slot_resource=True)
    p10, p30, p50 = (s.study(f"{t}.pu") for t in ("p10", "p30", "p50"))
    assert runner._may_start(p10)                     # the method's first study starts at once
    assert not runner._may_start(p30) and not runner._may_start(p50)
    assert runner._may_start(s.study("p10.pbce"))     # another method has its own first study
    runner.outcomes["p10.pu"] = outcome("p10.pu", {"alpha": 2.0, "ema": 0.99}, 60.0)
    assert runner._may_start(p30) and runner._may_start(p50)
    assert runner._warm_points(p30) == [{"alpha": 2.0, "ema": 0.99}]
    runner.outcomes["p50.pu"] = outcome("p50.pu", {"alpha": 3.0, "ema": 0.9997}, 70.0)
    # p30 is as near to p10 as to p50: both best configs
    assert runner._warm_points(p30) == [{"alpha": 2.0, "ema": 0.99},
                                        {"alpha": 3.0, "ema": 0.9997}]
    # a baseline never receives PU's configs, and nothing happens without warm start
    assert runner._warm_points(s.study("p30.pbce")) == []
    plain = StudyRunner(spec(), resume=False, slots=2, use_slot_resource=True)
    plain.outcomes = runner.outcomes
    assert plain._warm_points(p30) == [] and plain._may_start(p50)
