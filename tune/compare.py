"""Per task, what each method is worth: its selected test mAP (mean and standard deviation over
the repeats when there are any), its OF1/CF1 at the threshold its run chose, the task's chance
mAP, and the paired difference of PU-MLC minus each baseline with a 95% Student-t interval.

Repeat r of every study uses the same training seed and label-mask seed (``tune.trial``), so the
difference is taken repeat by repeat (a paired comparison: the mask and seed noise cancel) and
then summarised; an interval that covers 0 is *not significant*. Without repeats, the single
selected run of each method is compared (n = 1, no spread: say so rather than invent one), and
each method's ``search_noise`` says how far apart the trials at the top of its study were: the
size of a difference the search alone can make.

A study that stands for several methods (``Study.aliases``: they train identically at that
task, e.g. partial and assume-negative BCE at full labels) gives one result, listed under each
of its methods with ``same_study_as`` naming the first; the task's ``equivalences`` say why.
"""

from __future__ import annotations

from typing import Any, Optional

from .outcomes import trial_outcome
from .space import SearchSpec, Study
from .stats import mean_sd, t_interval
from .store import StudyRecords, ranked

__all__ = ["compare_methods", "mean_sd", "method_result", "paired_difference",
           "reference_method", "search_noise"]

#: Search trials at the top of a study that ``search_noise`` compares.
TOP_TRIALS = 3


def reference_method(spec: SearchSpec) -> Optional[str]:
    """The method the others are compared with: the first whose loss is PU (else the first)."""
    methods = list(dict.fromkeys(s.method for s in spec.studies))
    for s in spec.studies:
        if s.base.loss == "pu":
            return s.method
    return methods[0] if methods else None


def search_noise(records: StudyRecords, top: int = TOP_TRIALS) -> dict[str, Any]:
    """How far apart the best search trials of a study are: their selection scores and test
    mAPs (best first) and the range of each. Trials this close were ranked by noise as much as
    by their parameters: a method difference below it is not evidence."""
    best = ranked(records.trials)[:top]
    scores = [t.selection_score for t in best]
    tests = [t.test_map for t in best if t.test_map is not None]
    return {"trials": [t.trial_id for t in best], "selection_scores": scores,
            "test_mAPs": tests,
            "selection_range": max(scores) - min(scores) if len(scores) > 1 else None,
            "test_range": max(tests) - min(tests) if len(tests) > 1 else None}


def method_result(records: StudyRecords, expected_repeats: int,
                  study: Optional[Study] = None) -> dict:
    """A method's result at a task: its selected trial (score, weights, epoch, OF1/CF1 at its
    threshold), and the test mAP and OF1/CF1 of the selected config (mean and sd over the
    finished repeats; without repeats the selected trial's own)."""
    best = records.selected
    repeats = dict(sorted(records.finished_repeats().items()))
    values = {r: t.test_map for r, t in repeats.items()}
    chosen = trial_outcome(best) if best else {}
    result: dict[str, Any] = {
        "study": records.name, "methods": list(study.methods) if study else None,
        "selected_trial": best.trial_id if best else None,
        "selection_score": best.selection_score if best else None,
        "selected_test_mAP": best.test_map if best else None,
        "selected_weights": best.selected_weights if best else None,
        "selected_epoch": best.selected_epoch if best else None,
        "selected_f1": {k: chosen.get(k) for k in ("OF1", "CF1", "threshold",
                                                    "threshold_chosen_on", "f1_how")},
        "chance_mAP": chosen.get("chance_mAP"),
        "all_positive_f1": chosen.get("all_positive_f1"),
        "validation": chosen.get("validation"),
        "params": dict(best.params) if best else None,
        "repeats_expected": expected_repeats,
        "repeats": {str(r): v for r, v in values.items()},
        "search_noise": search_noise(records)}
    if expected_repeats:
        stats = mean_sd(list(values.values()))
        outcomes = {r: trial_outcome(t) for r, t in repeats.items()}
        result.update(test_mAP_mean=stats["mean"], test_mAP_sd=stats["sd"], n=stats["n"],
                      repeat_f1={str(r): {"OF1": o["OF1"], "CF1": o["CF1"]}
                                 for r, o in outcomes.items()})
        for key in ("OF1", "CF1"):
            f1 = mean_sd([o[key] for o in outcomes.values() if o[key] is not None])
            result.update({f"{key}_mean": f1["mean"], f"{key}_sd": f1["sd"],
                           f"{key}_n": f1["n"]})
    else:
        test = best.test_map if best else None
        result.update(test_mAP_mean=test, test_mAP_sd=None, n=1 if test is not None else 0)
        for key in ("OF1", "CF1"):
            value = chosen.get(key)
            result.update({f"{key}_mean": value, f"{key}_sd": None,
                           f"{key}_n": 1 if value is not None else 0})
    return result


def compare_methods(spec: SearchSpec, studies: dict[str, StudyRecords]) -> dict[str, dict]:
    """Per task: each method's result, the paired differences (reference minus baseline), the
    task's chance mAP and the methods that share a study (and why).

    ``studies`` maps a study name to its records (:func:`tune.store.read_experiment`); a study
    with no selectable trial has no result yet, and every study whose search has not finished
    is listed under ``unfinished``.
    """
    ref = reference_method(spec)
    tasks: dict[str, dict] = {}
    for study in spec.studies:
        entry = tasks.setdefault(study.task, {"prob": study.prob, "methods": {},
                                              "paired_differences": {}, "unfinished": [],
                                              "equivalences": [], "chance_mAP": None,
                                              "all_positive_f1": None})
        if study.aliases:
            entry["equivalences"].append({"study": study.name, "methods": list(study.methods),
                                          "reason": study.equivalence})
        records = studies.get(study.name)
        if records is None or not records.search_done:
            entry["unfinished"].append(study.name)
        if records is None or records.selected is None:
            continue
        result = method_result(records, spec.repeats, study)
        entry["methods"][study.method] = result
        for alias in study.aliases:
            entry["methods"][alias] = {**result, "same_study_as": study.method}
        if entry["chance_mAP"] is None:
            entry["chance_mAP"] = result["chance_mAP"]
            entry["all_positive_f1"] = result["all_positive_f1"]
    for entry in tasks.values():
        methods = entry["methods"]
        if ref not in methods:
            continue
        for other, result in methods.items():
            if other == ref or result.get("same_study_as") == ref:
                continue
            d = paired_difference(methods[ref], result, spec.repeats)
            d["reference"] = ref
            if result.get("same_study_as"):
                d["same_as"] = result["same_study_as"]
            entry["paired_differences"][other] = d
    return tasks


def paired_difference(reference: dict, baseline: dict, expected_repeats: int) -> dict:
    """Reference minus baseline, repeat by repeat (only repeats both finished), with the 95%
    Student-t interval of the mean difference (``ci``: None below two pairs) and whether it
    excludes 0 (``significant``)."""
    if expected_repeats:
        common = sorted(set(reference["repeats"]) & set(baseline["repeats"]), key=int)
        diffs = {r: reference["repeats"][r] - baseline["repeats"][r] for r in common}
    else:
        a, b = reference.get("selected_test_mAP"), baseline.get("selected_test_mAP")
        diffs = {"selected": a - b} if a is not None and b is not None else {}
    stats = mean_sd(list(diffs.values()))
    ci = t_interval(list(diffs.values())) if expected_repeats else None
    return {"per_repeat": diffs, **stats, "ci": ci,
            "significant": ci["significant"] if ci else None}
