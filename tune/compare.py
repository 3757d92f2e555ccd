"""Per task, what each method is worth: its selected test mAP (mean and standard deviation over
the repeats when there are any) and the paired difference of PU-MLC minus each baseline.

Repeat r of every study uses the same training seed and label-mask seed (``tune.trial``), so the
difference is taken repeat by repeat (a paired comparison: the mask and seed noise cancel) and
then summarised. Without repeats, the single selected run of each method is compared (n = 1, no
spread: say so rather than invent one).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .space import SearchSpec
from .store import StudyRecords


def reference_method(spec: SearchSpec) -> Optional[str]:
    """The method the others are compared with: the first whose loss is PU (else the first)."""
    methods = list(dict.fromkeys(s.method for s in spec.studies))
    for s in spec.studies:
        if s.base.loss == "pu":
            return s.method
    return methods[0] if methods else None


def mean_sd(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None below two values)."""
    n = len(values)
    if not n:
        return {"n": 0, "mean": None, "sd": None}
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd}


def method_result(records: StudyRecords, expected_repeats: int) -> dict:
    """A method's result at a task: its selected trial, and the test mAP of the selected config
    (mean and sd over the finished repeats; without repeats the selected trial's own)."""
    best = records.selected
    values = {r: t.test_map for r, t in sorted(records.finished_repeats().items())}
    result: dict[str, Any] = {
        "study": records.name, "selected_trial": best.trial_id if best else None,
        "selection_score": best.selection_score if best else None,
        "selected_test_mAP": best.test_map if best else None,
        "selected_weights": best.selected_weights if best else None,
        "selected_epoch": best.selected_epoch if best else None,
        "params": dict(best.params) if best else None,
        "repeats_expected": expected_repeats,
        "repeats": {str(r): v for r, v in values.items()}}
    if expected_repeats:
        stats = mean_sd(list(values.values()))
        result.update(test_mAP_mean=stats["mean"], test_mAP_sd=stats["sd"], n=stats["n"])
    else:
        test = best.test_map if best else None
        result.update(test_mAP_mean=test, test_mAP_sd=None, n=1 if test is not None else 0)
    return result


def compare_methods(spec: SearchSpec, studies: dict[str, StudyRecords]) -> dict[str, dict]:
    """Per task: each method's result and the paired differences (reference minus baseline).

    ``studies`` maps a study name to its records (:func:`tune.store.read_experiment`); a study
    with no selectable trial has no result yet, and every study whose search has not finished
    is listed under ``unfinished``.
    """
    ref = reference_method(spec)
    tasks: dict[str, dict] = {}
    for study in spec.studies:
        entry = tasks.setdefault(study.task, {"prob": study.prob, "methods": {},
                                              "paired_differences": {}, "unfinished": []})
        records = studies.get(study.name)
        if records is None or not records.search_done:
            entry["unfinished"].append(study.name)
        if records is None or records.selected is None:
            continue
        entry["methods"][study.method] = method_result(records, spec.repeats)
    for name, entry in tasks.items():
        methods = entry["methods"]
        if ref not in methods:
            continue
        for other, result in methods.items():
            if other == ref:
                continue
            entry["paired_differences"][other] = paired_difference(methods[ref], result,
                                                                   spec.repeats)
            entry["paired_differences"][other]["reference"] = ref
    return tasks


def paired_difference(reference: dict, baseline: dict, expected_repeats: int) -> dict:
    """Reference minus baseline, repeat by repeat (only repeats both finished)."""
    if expected_repeats:
        common = sorted(set(reference["repeats"]) & set(baseline["repeats"]), key=int)
        diffs = {r: reference["repeats"][r] - baseline["repeats"][r] for r in common}
    else:
        a, b = reference.get("selected_test_mAP"), baseline.get("selected_test_mAP")
        diffs = {"selected": a - b} if a is not None and b is not None else {}
    stats = mean_sd(list(diffs.values()))
    return {"per_repeat": diffs, **stats}
