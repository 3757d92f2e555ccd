"""``warm_start: neighbours`` on a real local Ray: the second label proportion's study waits for
the first and evaluates the first study's best config before sampling."""

from __future__ import annotations

import json

import optuna
import pytest

from ray_helpers import run_entry, tiny_overrides
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e


def test_a_study_starts_from_the_best_config_of_the_nearest_finished_proportion(
        coco_format_root, tmp_path):
    storage = tmp_path / "experiments"
    proc = run_entry(["search", "--space", "tests/spaces/pu_only.yaml",
                      *tiny_overrides(coco_format_root, storage, "warm",
                                      **{"warm_start": "neighbours",
                                         "tasks": "[{name: p20, prob: 0.2}, "
                                                  "{name: p10, prob: 0.1}]",
                                         "budget.trials_per_task": 2,
                                         "budget.max_concurrent_trials": 2,
                                         "resources.num_workers": 1,
                                         "scheduler.type": "none",
                                         "fixed.train_epochs": 1, "fixed.epochs": 1})],
                     timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = storage / "warm"
    summary = json.loads((exp / "summary.json").read_text())
    from tune.store import ExperimentStore

    store = ExperimentStore(exp)
    first, second = store.stage_record("search", "p20"), store.stage_record("search", "p10")
    selected = summary["studies"]["p20"]["selected_trial"]
    best = next(t for t in summary["studies"]["p20"]["trials"]
                if t["trial_id"] == selected)["params"]
    assert first["warm_start"] == [] and second["warm_start"] == [best]

    storage_url = f"sqlite:///{exp / 'optuna.sqlite3'}"
    p10 = sorted(optuna.load_study(study_name="warm.p10", storage=storage_url).trials,
                 key=lambda t: t.number)
    p20 = optuna.load_study(study_name="warm.p20", storage=storage_url).trials
    # p10's first trial is p20's best config, enqueued (not sampled)
    assert p10[0].params == pytest.approx(best)
    assert p10[0].system_attrs.get("fixed_params") is not None
    # and p10 began only after p20 had finished its search
    p20_end = max(t.datetime_complete for t in p20)
    assert min(t.datetime_start for t in p10) >= p20_end
