"""Methods that train identically at a task are one study: the space merges them, names the study
after the first, keeps its sampler seed, and says why. Only the losses' own statement of what
they equal at full labels makes two methods the same; anything else that differs keeps them
apart. Parsing a space imports no torch."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from tune.space import parse_search_spec, sampler_seed

BCE_SEARCH = {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3},
              "weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2}}
SPACE = {
    "name": "eq", "seed": 3,
    "budget": {"trials_per_task": 2},
    "resources": {"num_workers": 1},
    "fixed": {"dataset": "coco", "data": "/data/demo", "train_epochs": 1, "epochs": 1},
    "search": {"ema": {"type": "choice", "values": [0.99, 0.9997]}},
    "first_trial": {"ema": 0.9997},
    "methods": [
        {"name": "partial_bce", "fixed": {"loss": "partial_bce"},
         "first_trial": {"lr": 3e-4, "weight_decay": 1e-4}, "search": BCE_SEARCH},
        {"name": "assume_negative_bce", "fixed": {"loss": "assume_negative_bce"},
         "first_trial": {"lr": 3e-4, "weight_decay": 1e-4}, "search": BCE_SEARCH},
    ],
    "tasks": [{"name": "full", "prob": 1.0}, {"name": "p10", "prob": 0.1}],
}


def spec(mutate=None):
    raw = copy.deepcopy(SPACE)
    if mutate:
        mutate(raw)
    return parse_search_spec(raw, base_dir=Path("/tmp"))


def test_partial_and_assume_negative_bce_at_full_and_10_percent_labels_are_three_studies():
    s = spec()
    assert [(x.name, x.methods) for x in s.studies] == [
        ("full.partial_bce", ("partial_bce", "assume_negative_bce")),
        ("p10.partial_bce", ("partial_bce",)),
        ("p10.assume_negative_bce", ("assume_negative_bce",))]
    merged = s.study("full.partial_bce")
    assert merged.method == "partial_bce" and merged.aliases == ("assume_negative_bce",)
    assert merged.base.loss == "partial_bce"                  # the first method trains
    assert merged.sampler_seed == sampler_seed(3, "full.partial_bce")
    for words in ("partial_bce and assume_negative_bce", "prob=1", "every label is known",
                  "compute bce", "ignores unknown", "as negatives"):
        assert words in merged.equivalence, words
    assert all(not x.aliases and not x.equivalence for x in s.studies[1:])


@pytest.mark.parametrize("mutate", [
    lambda r: r["methods"][1]["fixed"].update(batch_size=16),          # another config
    lambda r: r["methods"][1]["first_trial"].update(lr=5e-4),           # another first trial
    lambda r: r["methods"][1].update(search={**BCE_SEARCH, "lr": {     # another range
        "type": "loguniform", "low": 1e-4, "high": 2e-3}}),
    lambda r: r["methods"][1]["fixed"].update(loss="asl"),              # ASL is not BCE
], ids=["config", "first-trial", "range", "asl"])
def test_methods_that_differ_in_anything_else_stay_separate_studies(mutate):
    s = spec(mutate)
    assert len(s.studies) == 4 and not any(x.aliases for x in s.studies)


def test_pu_mlc_is_never_merged_with_a_bce_baseline():
    def add_pu(raw):
        raw["methods"].insert(0, {"name": "pu_mlc", "fixed": {"loss": "pu"},
                                  "first_trial": {"lr": 3e-4, "weight_decay": 1e-4},
                                  "search": BCE_SEARCH})
    s = spec(add_pu)
    assert [x.name for x in s.studies] == ["full.pu_mlc", "full.partial_bce", "p10.pu_mlc",
                                           "p10.partial_bce", "p10.assume_negative_bce"]
    assert s.study("full.pu_mlc").methods == ("pu_mlc",)


def test_the_shipped_demo_space_runs_five_studies_for_six_task_method_pairs():
    from tune.space_file import load_search_spec

    s = load_search_spec(Path(__file__).resolve().parent.parent / "search_spaces" / "demo.yaml")
    assert len(s.studies) == 5 and s.repeats >= 2
    assert s.study("mlc_full.partial_bce").methods == ("partial_bce", "assume_negative_bce")


def test_parsing_a_space_with_merged_studies_imports_no_torch():
    code = ("import sys, copy\n"
            "from pathlib import Path\n"
            "sys.path.insert(0, 'tests')\n"
            "from test_search_space_equivalence import spec\n"
            "assert len(spec().studies) == 3\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
