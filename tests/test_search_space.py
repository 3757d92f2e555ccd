"""Search space files are validated before Ray starts, with errors naming the key."""

import copy
from pathlib import Path

import pytest
import yaml

from pu_mlc.errors import ConfigError
from tune.space import load_search_spec, parse_override, parse_search_spec

REPO = Path(__file__).resolve().parent.parent

BASE = {
    "name": "t",
    "budget": {"trials_per_task": 3},
    "resources": {"num_workers": 2},
    "fixed": {"dataset": "coco", "data": "/data/demo", "train_epochs": 3, "epochs": 80},
    "search": {"alpha": {"type": "loguniform", "low": 0.5, "high": 4.0},
               "gamma": {"type": "uniform", "low": 0.0, "high": 1.0},
               "ema": {"type": "choice", "values": [0.99, 0.9997]}},
    "first_trial": {"alpha": 1.0, "gamma": 0.55, "ema": 0.9997},
    "tasks": [{"name": "full", "prob": 1.0}, {"name": "p10", "prob": 0.1}],
}


def spec_with(**changes):
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = raw
        *path, last = dotted.split("__")
        for p in path:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        key = int(last) if isinstance(node, list) else last
        if value is KeyError:
            del node[key]
        else:
            node[key] = value
    return raw


def test_a_valid_space_gives_one_config_per_task_with_the_task_prob():
    spec = parse_search_spec(BASE, base_dir=Path("/tmp"))
    assert [t.name for t in spec.tasks] == ["full", "p10"]
    assert [t.base.prob for t in spec.tasks] == [1.0, 0.1]
    assert spec.tasks[0].first_trial == {"alpha": 1.0, "gamma": 0.55, "ema": 0.9997}
    assert spec.study_storage.startswith("sqlite:///") and "optuna.sqlite3" in spec.study_storage
    assert spec.resources.cpus_per_trial == pytest.approx(2.1)


@pytest.mark.parametrize("change,message", [
    ({"budget__trials_per_task": 0}, "budget.trials_per_task"),
    ({"budget": KeyError}, "'budget'"),
    ({"scheduler": {"type": "pbt"}}, "scheduler.type.*asha"),
    ({"search__alpha": {"type": "normal", "low": 0, "high": 1}}, "search.alpha.type.*uniform"),
    ({"search__alpha": {"type": "loguniform", "low": 0.0, "high": 1}}, "must be > 0"),
    ({"search__alpha": {"type": "uniform", "low": 0.0, "high": 1}}, "search.alpha allows 0.0"),
    ({"search__learning_rate": {"type": "uniform", "low": 0.0, "high": 1}},
     "search.learning_rate: not a training field"),
    ({"search__output_dir": {"type": "choice", "values": ["a"]}}, "cannot be searched"),
    ({"tasks__1__prob": 1.5}, r"task 'p10'.*\(0, 1\]"),
    ({"tasks__1": {"name": "p10"}}, "known-label proportion"),
    ({"tasks__1__name": "full"}, "used twice"),
    ({"first_trial__alpha": 10.0}, "first_trial alpha = 10.0 lies outside"),
    ({"resources__num_workers": 0}, "resources.num_workers"),
    ({"resources__driver_cpus": 0}, "driver_cpus"),
    ({"resources__gpus_per_worker": 1}, "use_gpu"),
    ({"fixed__batch_size": "big"}, "batch_size"),
    ({"colour": "red"}, "unknown key"),
])
def test_invalid_spaces_are_refused_naming_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_search_spec(spec_with(**change), source="space.yaml")


def test_searching_prob_needs_tasks_without_prob():
    raw = spec_with(search__prob={"type": "choice", "values": [0.1, 0.5]})
    with pytest.raises(ConfigError, match="prob is searched"):
        parse_search_spec(raw)
    raw["tasks"] = [{"name": "coco"}]
    spec = parse_search_spec(raw)
    assert spec.search["prob"].values == (0.1, 0.5)


def test_relative_data_roots_and_storage_are_resolved_against_the_working_dir(tmp_path):
    raw = spec_with(fixed__data="demo_data")
    spec = parse_search_spec(raw, base_dir=tmp_path)
    assert spec.tasks[0].base.data == str(tmp_path / "demo_data")
    assert spec.storage_path == tmp_path / "experiments"


def test_overrides_from_the_command_line_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    key, value = parse_override("budget.trials_per_task=5")
    spec = load_search_spec(path, {key: value, "tasks.1.prob": 0.3})
    assert spec.trials_per_task == 5 and spec.tasks[1].base.prob == 0.3


@pytest.mark.parametrize("name", ["demo.yaml", "coco2014_pl.yaml", "voc2007_pl.yaml"])
def test_shipped_spaces_validate(name):
    spec = load_search_spec(REPO / "search_spaces" / name)
    assert len(spec.tasks) >= 2 and spec.trials_per_task >= 3


def test_paper_spaces_cover_the_published_label_proportions_with_published_first_trials():
    coco = load_search_spec(REPO / "search_spaces" / "coco2014_pl.yaml")
    assert sorted(t.base.prob for t in coco.tasks) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                                        0.9, 1.0]
    assert coco.tasks[0].first_trial == {"alpha": 1.0, "gamma": 0.55, "ema": 0.9997}
    assert coco.tasks[0].base.batch_size == 35 and coco.tasks[0].base.train_epochs == 41
    voc = load_search_spec(REPO / "search_spaces" / "voc2007_pl.yaml")
    assert voc.tasks[0].first_trial == {"alpha": 2.0, "gamma": 0.85, "ema": 0.991}
    assert voc.tasks[0].base.batch_size == 45 and voc.tasks[0].base.lr == 4e-5


def test_missing_data_root_is_reported_before_ray_starts(tmp_path):
    from tune.space import check_inputs

    spec = parse_search_spec(spec_with(fixed__data=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="nowhere does not exist.*fixed.data"):
        check_inputs(spec)


def test_class_count_disagreeing_with_the_dataset_is_reported_before_ray_starts(
        coco_format_root):
    from tune.space import check_inputs

    spec = parse_search_spec(spec_with(fixed__data=str(coco_format_root), fixed__num_classes=80))
    with pytest.raises(ConfigError, match="num_classes = 80.*10 classes"):
        check_inputs(spec)
