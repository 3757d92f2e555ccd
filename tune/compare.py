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


def repeat_values(repeats: Optional[dict]) -> dict[int, float]:
    """Test mAP of each finished repeat, by repeat number."""
    out: dict[int, float] = {}
    for t in (repeats or {}).get("trial_list", []):
        if t.get("status") == "finished" and t.get("selected_test_mAP") is not None \
                and t.get("repeat") is not None:
            out[int(t["repeat"])] = float(t["selected_test_mAP"])
    return out


def method_result(search: dict, repeats: Optional[dict], expected_repeats: int) -> dict:
    best = search.get("best") or {}
    values = repeat_values(repeats)
    result: dict[str, Any] = {
        "study": search["study"], "selected_trial": best.get("trial_id"),
        "selection_score": best.get("best_score"),
        "selected_test_mAP": best.get("selected_test_mAP"), "params": best.get("params"),
        "repeats_expected": expected_repeats,
        "repeats": {str(r): v for r, v in sorted(values.items())}}
    if expected_repeats:
        stats = mean_sd(list(values.values()))
        result.update(test_mAP_mean=stats["mean"], test_mAP_sd=stats["sd"], n=stats["n"])
    else:
        test = best.get("selected_test_mAP")
        result.update(test_mAP_mean=test, test_mAP_sd=None, n=1 if test is not None else 0)
    return result


def compare_methods(spec: SearchSpec, outcomes: dict[str, dict]) -> dict[str, dict]:
    """Per task: each method's result and the paired differences (reference minus baseline).

    ``outcomes`` maps a study name to ``{"search": outcome, "repeats": outcome or None}``;
    studies that did not finish their search are listed under ``unfinished``.
    """
    ref = reference_method(spec)
    tasks: dict[str, dict] = {}
    for study in spec.studies:
        entry = tasks.setdefault(study.task, {"prob": study.prob, "methods": {},
                                              "paired_differences": {}, "unfinished": []})
        done = outcomes.get(study.name) or {}
        if not done.get("search"):
            entry["unfinished"].append(study.name)
            continue
        entry["methods"][study.method] = method_result(done["search"], done.get("repeats"),
                                                      spec.repeats)
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
