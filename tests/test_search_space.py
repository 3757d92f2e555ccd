"""Search space files are validated before Ray starts, with errors naming the key."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from pu_mlc.errors import ConfigError
from tune.space import parse_search_spec
from tune.space_file import load_search_spec, parse_override

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
    ({"search__batch_size": {"type": "choice", "values": [16, "big"]}},
     r"search.batch_size.values\[1\] = 'big' must be an integer"),
    ({"search__lgc": {"type": "choice", "values": [True, "yes"]}},
     r"search.lgc.values\[1\] = 'yes' must be true or false"),
    ({"search__prob": {"type": "choice", "values": ["ten", 0.5]}},
     r"search.prob.values\[0\] = 'ten' must be a number"),
    ({"search__ema": {"type": "choice", "values": [0.99, float("nan")]}}, "finite number"),
    ({"search__batch_size": {"type": "choice", "values": [16, 16.0]}}, "lists a value twice"),
    ({"search__batch_size": {"type": "uniform", "low": 2, "high": 8}}, "use type: int"),
    ({"search__head": {"type": "int", "low": 1, "high": 2}}, "use type: choice"),
    ({"name": ".."}, "may not start with '.'"),
    ({"name": "a/b"}, "letters, digits"),
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
    assert len(spec.tasks) >= 2 and spec.trials_per_task >= 2
    assert len({s.method for s in spec.studies}) >= 3          # PU-MLC and >= 2 baselines


def test_paper_spaces_cover_the_published_label_proportions_with_published_first_trials():
    coco = load_search_spec(REPO / "search_spaces" / "coco2014_pl.yaml")
    assert sorted(t.base.prob for t in coco.tasks) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                                        0.9, 1.0]
    assert coco.study("p10.pu_mlc").first_trial == {"alpha": 1.0, "gamma": 0.55, "ema": 0.9997,
                                                    "lr": 1e-4}
    assert coco.tasks[0].base.batch_size == 35 and coco.tasks[0].base.train_epochs == 41
    voc = load_search_spec(REPO / "search_spaces" / "voc2007_pl.yaml")
    assert voc.study("p10.pu_mlc").first_trial == {"alpha": 2.0, "gamma": 0.85, "ema": 0.991,
                                                   "lr": 4e-5}
    assert voc.tasks[0].base.batch_size == 45


def test_missing_data_root_is_reported_before_ray_starts(tmp_path):
    from tune.preflight import check_inputs

    spec = parse_search_spec(spec_with(fixed__data=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="nowhere does not exist.*fixed.data"):
        check_inputs(spec)


def test_class_count_disagreeing_with_the_dataset_is_reported_before_ray_starts(
        coco_format_root):
    from tune.preflight import check_inputs

    spec = parse_search_spec(spec_with(fixed__data=str(coco_format_root), fixed__num_classes=80))
    with pytest.raises(ConfigError, match="num_classes = 80.*10 classes"):
        check_inputs(spec)


def test_choice_values_are_converted_to_the_field_type():
    spec = parse_search_spec(spec_with(search__batch_size={"type": "choice",
                                                            "values": [16.0, 32]},
                                       search__prob={"type": "choice", "values": [1, 0.5]},
                                       tasks=[{"name": "coco"}]))
    assert spec.search["batch_size"].values == (16, 32)
    assert all(type(v) is int for v in spec.search["batch_size"].values)
    assert spec.search["prob"].values == (1.0, 0.5)
    assert all(type(v) is float for v in spec.search["prob"].values)


@pytest.mark.parametrize("dotted,message", [
    ("tasks.5.prob", r"--set tasks.5.prob=0.1: tasks has 2 entries: index 5 is out of range"),
    ("tasks.x.prob", "tasks is a list: 'x' must be an index"),
    ("name.sub", "name is a str .* no key 'sub'"),
    ("budget.nope", "unknown key 'nope' under budget"),
    ("colour", "unknown key 'colour' under the top level"),
    ("tasks.0.fixed.learning_rate", "unknown key 'learning_rate' under tasks.0.fixed"),
    ("search.alpha.kind", "unknown key 'kind' under search.alpha"),
    ("fixed..lr", "empty key in the path"),
])
def test_set_paths_outside_the_schema_are_refused_naming_the_path(tmp_path, dotted, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match=message):
        load_search_spec(path, {dotted: 0.1})


def test_set_paths_inside_the_schema_apply(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    spec = load_search_spec(path, {"scheduler.type": "none", "tasks.0.fixed.crop_size": 64,
                                   "search.ema.values.0": 0.995, "resources.driver_cpus": 0.5})
    assert spec.scheduler == "none" and spec.tasks[0].base.crop_size == 64
    assert spec.search["ema"].values == (0.995, 0.9997) and spec.resources.driver_cpus == 0.5


@pytest.mark.parametrize("text,message", [("noequals", "expected KEY=VALUE"),
                                          ("=3", "key before '=' is empty"),
                                          ("fixed.lr=[1", "not valid YAML")])
def test_malformed_set_options_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_override(text)


def test_a_space_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_search_spec(tmp_path)


def test_a_trial_larger_than_this_machine_is_refused_before_ray_without_ray_address():
    from tune.preflight import check_local_resources

    spec = parse_search_spec(spec_with(resources={"num_workers": 2, "cpus_per_worker": 4}))
    with pytest.raises(ConfigError, match="2 x resources.cpus_per_worker 4 = 8 CPUs per trial, "
                                          "but this machine has 2"):
        check_local_resources(spec, env={}, cpu_count=2)
    check_local_resources(spec, env={}, cpu_count=8)
    check_local_resources(spec, env={"RAY_ADDRESS": "ray://head:10001"}, cpu_count=2)
    # the driver's fraction of a CPU is not counted: the demo's 2 x 1 + 0.1 fits 2 cores
    check_local_resources(parse_search_spec(BASE), env={}, cpu_count=2)
    gpu = parse_search_spec(spec_with(resources={"num_workers": 2, "use_gpu": True}))
    with pytest.raises(ConfigError, match="2 GPUs per trial, but this machine has 1"):
        check_local_resources(gpu, env={}, cpu_count=16, gpu_count=1)
    check_local_resources(gpu, env={}, cpu_count=16, gpu_count=2)


# ------------------------------------------------------------------------------ methods axis
METHODS = [
    {"name": "pu", "fixed": {"loss": "pu"}, "first_trial": {"alpha": 2.0},
     "search": {"alpha": {"type": "loguniform", "low": 0.5, "high": 4.0},
                "gamma": {"type": "uniform", "low": 0.0, "high": 1.0}}},
    {"name": "pbce", "fixed": {"loss": "partial_bce"},
     "first_trial": {"lr": 2e-4},
     "search": {"lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
                "weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2}}},
]


def methods_space(**changes):
    raw = spec_with(**changes)
    raw["search"] = {"ema": {"type": "choice", "values": [0.99, 0.9997]}}
    raw["first_trial"] = {"ema": 0.9997}
    raw["methods"] = copy.deepcopy(METHODS)
    return raw


def test_methods_make_one_study_per_task_and_method_with_only_their_own_fields():
    spec = parse_search_spec(methods_space(), base_dir=Path("/tmp"))
    assert [s.name for s in spec.studies] == ["full.pu", "full.pbce", "p10.pu", "p10.pbce"]
    pu, pbce = spec.study("p10.pu"), spec.study("p10.pbce")
    assert set(pu.search) == {"ema", "alpha", "gamma"}           # shared + its own
    assert set(pbce.search) == {"ema", "lr", "weight_decay"}
    assert (pu.base.loss, pbce.base.loss) == ("pu", "partial_bce")
    assert pu.base.prob == pbce.base.prob == 0.1 and pu.task == "p10" and pu.method == "pu"
    # first trial: fixed values where searched < shared first_trial < method first_trial
    assert pu.first_trial == {"ema": 0.9997, "alpha": 2.0, "gamma": 0.55}
    assert pbce.first_trial == {"ema": 0.9997, "lr": 2e-4, "weight_decay": 1e-4}
    # every study samples with its own seed, stable when tasks are reordered
    assert len({s.sampler_seed for s in spec.studies}) == 4
    raw = methods_space()
    raw["tasks"] = raw["tasks"][::-1]
    again = parse_search_spec(raw, base_dir=Path("/tmp"))
    assert {s.name: s.sampler_seed for s in again.studies} == \
        {s.name: s.sampler_seed for s in spec.studies}


def test_a_space_without_methods_has_one_study_per_task_named_after_it():
    spec = parse_search_spec(BASE, base_dir=Path("/tmp"))
    assert [(s.name, s.task, s.method) for s in spec.studies] == [
        ("full", "full", "pu_mlc"), ("p10", "p10", "pu_mlc")]
    assert spec.studies[0].first_trial == spec.tasks[0].first_trial
    assert spec.max_concurrent_trials is None and spec.repeats == 0
    assert spec.concurrent_studies is None and spec.warm_start == "none"


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r["methods"][1].update(name="pu"), re.escape("methods[1].name = 'pu' is used twice")),
    (lambda r: r["methods"][0].update(name="p u"), "may only use letters"),
    (lambda r: r["methods"][0].update(loss="pu"), re.escape("unknown key(s) ['loss']")),
    (lambda r: r["methods"][1]["fixed"].update(lr=1e-4),
     "study 'full.pbce'.*\\['lr'\\] are both fixed and searched"),
    (lambda r: r["methods"][0]["first_trial"].update(alpha=9.0),
     "study 'full.pu'.*first_trial alpha = 9.0 lies outside"),
    (lambda r: r["first_trial"].update(mixup_alpha=1.0), "first_trial sets \\['mixup_alpha'\\]"),
    (lambda r: r["tasks"][0].update(first_trial={"head_dim": 8}),
     "task 'full': first_trial sets \\['head_dim'\\], which no method searches"),
    (lambda r: r["methods"][0]["search"].update(alpha={"type": "uniform", "low": -1, "high": 3}),
     "search.alpha allows -1.0, which is invalid for study 'full.pu'"),
    (lambda r: r.update(methods=[]), "methods must be a non-empty list"),
    (lambda r: r["budget"].update(repeats=-1), "budget.repeats = -1 must be >= 0"),
    (lambda r: r["budget"].update(concurrent_studies=0), "budget.concurrent_studies = 0"),
    (lambda r: r["budget"].update(max_concurrent_trials=0), "budget.max_concurrent_trials = 0"),
    (lambda r: r.update(warm_start="nearest"), "warm_start = 'nearest'"),
])
def test_bad_methods_and_budgets_are_refused_naming_the_key(mutate, message):
    raw = methods_space()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        parse_search_spec(raw, base_dir=Path("/tmp"))


def test_set_paths_reach_into_methods_and_are_checked(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(methods_space()))
    spec = load_search_spec(path, {"methods.1.search.lr.high": 1e-2,
                                   "methods.0.fixed.mixup_alpha": 2.0}, base_dir=tmp_path)
    assert spec.study("p10.pbce").search["lr"].high == 1e-2
    assert spec.study("full.pu").base.mixup_alpha == 2.0
    with pytest.raises(ConfigError, match="unknown key 'serch' under methods.0"):
        load_search_spec(path, {"methods.0.serch": {}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="index 5 is out of range"):
        load_search_spec(path, {"methods.5.name": "x"}, base_dir=tmp_path)


def test_the_shipped_paper_spaces_compare_four_methods_with_the_same_budget():
    for name in ("coco2014_pl", "voc2007_pl"):
        spec = load_search_spec(REPO / "search_spaces" / f"{name}.yaml")
        methods = {m for s in spec.studies for m in s.methods}
        assert methods == {"pu_mlc", "partial_bce", "assume_negative_bce", "asl"}
        # 10 proportions x 4 methods, less one: at full labels the two BCE baselines are BCE
        assert len(spec.studies) == 10 * 4 - 1 and spec.repeats >= 2
        assert [s.methods for s in spec.studies if s.aliases] == [
            ("partial_bce", "assume_negative_bce")]
        pu = next(s for s in spec.studies if s.method == "pu_mlc")
        assert {"alpha", "gamma", "ema", "lr"} <= set(pu.search)
        for s in spec.studies:
            if s.method != "pu_mlc":
                assert {"lr", "weight_decay", "ema"} <= set(s.search)
                assert not {"alpha", "gamma"} & set(s.search)
        asl = next(s for s in spec.studies if s.method == "asl")
        assert {"asl_gamma_neg", "asl_gamma_pos", "asl_clip"} <= set(asl.search)
