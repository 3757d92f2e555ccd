"""Per-task method results and paired differences (tune/compare.py), and the study runner's
warm-start rules, on hand-built study outcomes (no Ray)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from tune.compare import (compare_methods, mean_sd, paired_difference, reference_method,
                          search_noise)
from tune.search import StudyRunner, build_summary
from tune.space import parse_search_spec
from tune.store import StudyRecords, TrialRecord

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


def trial(study, trial_id, *, stage="search", score=50.0, test=None, repeat=None,
          params=None, status="finished", seconds=None) -> TrialRecord:
    task, _, method = study.partition(".")
    return TrialRecord(study=study, task=task, method=method, prob=0.1, trial_id=trial_id,
                       stage=stage, repeat=repeat, params=dict(params or {}), seed=0,
                       mask_seed=0, status=status, reason=None, epochs=1,
                       selection_score=score, selected_weights="ema", selected_epoch=1,
                       test_map=test, wall_seconds=seconds, train_seconds=0.0,
                       eval_seconds=0.0, started=None, nodes={}, path=Path("/nowhere"))


def outcome(study, best_params, test, repeats=None):
    """A finished study: its selected search trial (and a worse one), and its repeats."""
    trials = [trial(study, "t", test=test, params=best_params),
              trial(study, "u", score=10.0, test=0.0, params=best_params)]
    trials += [trial(study, f"r{r}", stage="repeats", score=None, test=v, repeat=r,
                     params=best_params) for r, v in (repeats or {}).items()]
    return StudyRecords(study, trials, search_done=True, repeats_done=bool(repeats))


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
    study = StudyRecords("p10.pu", [
        trial("p10.pu", "a", test=60.0, seconds=30.0),
        trial("p10.pu", "b", score=40.0, test=50.0, seconds=10.0, status="stopped_by_scheduler"),
        trial("p10.pu", "r1", stage="repeats", score=None, test=60.0, repeat=1, seconds=20.0)],
        search_done=True, repeats_done=True)
    summary = build_summary(s, {"p10.pu": study}, [{"seconds": 40.0}, {"seconds": 20.0}],
                            slots=2)
    assert summary["trials"]["trials"] == 3 and summary["trials"]["finished"] == 2
    assert summary["trials"]["stopped_by_scheduler"] == 1
    assert summary["studies"]["p10.pu"]["selected_trial"] == "a"
    assert summary["studies"]["p10.pu"]["counts"] == {
        "search": {"finished": 1, "stopped_by_scheduler": 1}, "repeats": {"finished": 1}}
    assert summary["wall_seconds"] == 60.0 and summary["trial_seconds"] == 60.0
    assert summary["slot_utilisation"] == pytest.approx(60.0 / (2 * 60.0))


def test_warm_start_waits_for_a_finished_neighbour_and_takes_the_nearest_best():
    s = spec(warm_start="neighbours")
    runner = StudyRunner(s, resume=False, slots=2, use_slot_resource=True)
    p10, p30, p50 = (s.study(f"{t}.pu") for t in ("p10", "p30", "p50"))
    assert runner._may_start(p10)                     # the method's first study starts at once
    assert not runner._may_start(p30) and not runner._may_start(p50)
    assert runner._may_start(s.study("p10.pbce"))     # another method has its own first study
    runner.selected["p10.pu"] = {"alpha": 2.0, "ema": 0.99}
    assert runner._may_start(p30) and runner._may_start(p50)
    assert runner._warm_points(p30) == [{"alpha": 2.0, "ema": 0.99}]
    runner.selected["p50.pu"] = {"alpha": 3.0, "ema": 0.9997}
    # p30 is as near to p10 as to p50: both best configs
    assert runner._warm_points(p30) == [{"alpha": 2.0, "ema": 0.99},
                                        {"alpha": 3.0, "ema": 0.9997}]
    # a baseline never receives PU's configs, and nothing happens without warm start
    assert runner._warm_points(s.study("p30.pbce")) == []
    plain = StudyRunner(spec(), resume=False, slots=2, use_slot_resource=True)
    plain.selected = runner.selected
    assert plain._warm_points(p30) == [] and plain._may_start(p50)


def test_paired_differences_carry_a_95_percent_t_interval_and_say_when_it_covers_zero():
    from scipy import stats as scipy_stats

    s = spec()
    outcomes = {"p10.pu": outcome("p10.pu", {"alpha": 1.0, "ema": 0.99}, 60.0,
                                  {1: 60.0, 2: 62.0, 3: 61.0}),
                "p10.pbce": outcome("p10.pbce", {"ema": 0.99}, 55.0,
                                    {1: 50.0, 2: 61.0, 3: 52.0})}
    diff = compare_methods(s, outcomes)["p10"]["paired_differences"]["pbce"]
    diffs = [10.0, 1.0, 9.0]
    half = scipy_stats.t.ppf(0.975, 2) * diff["sd"] / math.sqrt(3)
    assert diff["ci"]["method"] == "Student t" and diff["ci"]["confidence"] == 0.95
    assert (diff["ci"]["low"], diff["ci"]["high"]) == pytest.approx(
        (sum(diffs) / 3 - half, sum(diffs) / 3 + half))
    assert diff["significant"] is False                  # 6.67 ± 12.2 covers 0
    no_repeats = compare_methods(spec(budget={"trials_per_task": 2}), outcomes)["p10"]
    assert no_repeats["paired_differences"]["pbce"]["ci"] is None


def test_methods_that_are_one_study_share_its_result_and_the_task_says_why():
    raw = copy.deepcopy(SPACE)
    raw["tasks"] = [{"name": "full", "prob": 1.0}]
    raw["methods"].append({"name": "anbce", "fixed": {"loss": "assume_negative_bce"}})
    s = parse_search_spec(raw, base_dir=Path("/tmp"))
    assert [x.name for x in s.studies] == ["full.pbce", "full.pu"]
    outcomes = {"full.pu": outcome("full.pu", {"alpha": 1.0, "ema": 0.99}, 70.0,
                                   {1: 70.0, 2: 71.0, 3: 72.0}),
                "full.pbce": outcome("full.pbce", {"ema": 0.99}, 65.0,
                                     {1: 66.0, 2: 65.0, 3: 67.0})}
    full = compare_methods(s, outcomes)["full"]
    assert full["methods"]["anbce"]["same_study_as"] == "pbce"
    assert full["methods"]["anbce"]["test_mAP_mean"] == full["methods"]["pbce"]["test_mAP_mean"]
    assert full["methods"]["pbce"]["methods"] == ["pbce", "anbce"]
    assert full["paired_differences"]["anbce"]["same_as"] == "pbce"
    assert full["paired_differences"]["anbce"]["mean"] == \
        full["paired_differences"]["pbce"]["mean"]
    assert full["equivalences"] == [{"study": "full.pbce", "methods": ["pbce", "anbce"],
                                     "reason": s.study("full.pbce").equivalence}]


def test_search_noise_is_the_spread_of_the_best_search_trials():
    records = StudyRecords("p10.pu", [
        trial("p10.pu", "a", score=50.0, test=40.0), trial("p10.pu", "b", score=48.5, test=43.0),
        trial("p10.pu", "c", score=47.0, test=41.0), trial("p10.pu", "d", score=10.0, test=5.0),
        trial("p10.pu", "r1", stage="repeats", score=99.0, test=99.0, repeat=1)],
        search_done=True, repeats_done=True)
    noise = search_noise(records)
    assert noise["trials"] == ["a", "b", "c"]             # the top three search trials
    assert noise["selection_range"] == pytest.approx(3.0)
    assert noise["test_range"] == pytest.approx(3.0)
