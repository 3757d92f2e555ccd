"""Search spaces: the YAML schema, its validation, and its translation to Ray Tune / Optuna.

A search space file describes one *experiment*: a list of **tasks** (a dataset and a known-label
proportion ``prob``: 1.0 is MLC, below is MLC-PL), the **fixed** TrainConfig fields every trial
shares, the **search**ed fields with their distributions, a **budget** of trials per task, the
early-stopping **scheduler**, the **resources** of one trial (DDP workers), which
**checkpoints** stay, and where results and the Optuna study are stored. A space may list **methods** (PU-MLC and the baselines it is
compared with), each with its own fixed fields, searched fields and first trial. Every
(task x method) pair is a **study**: its own Optuna study and Tune experiment, the same trial
budget, scheduler and epochs as every other study, because the best hyper-parameters differ
between label proportions and methods. A space without ``methods`` has one implicit method and
one study per task (named after the task). Everything is validated here, before Ray starts, and
every error names the key, the value (a short prefix of it) and what is allowed. Reading the
file and its ``--set`` overrides is :mod:`tune.space_file`; the checks of data, weights and
this machine before Ray starts are :mod:`tune.preflight`.

Schema (all keys; ``?`` = optional, default after ``=``)::

    name: str                        # experiment name: folder under storage_path
    storage_path?: str = experiments # results root (absolute, or relative to the working dir);
                                     # on a multi-node cluster: a shared file system (NFS,
                                     # checked on every node) or an object store
                                     # (s3://bucket/prefix?options, gs://...; a file:// URI works)
    study_storage?: str = null       # the Optuna studies: an SQLAlchemy URL (sqlite, postgresql+
                                     # psycopg://...) or journal:///path (Optuna's journal file);
                                     # default sqlite:///<storage_path>/<name>/optuna.sqlite3,
                                     # on a cluster journal:///<storage_path>/<name>/optuna.journal;
                                     # required with an object store
    seed?: int = 0                   # base of every study's sampler seed (each study draws
                                     # its own points; reproducible with 1 concurrent trial)
    budget:
      trials_per_task: int           # Optuna trials per study (task x method); the first is
                                     # first_trial
      max_concurrent_trials?: int = null   # trials running at once over ALL studies
                                     # (default: as many as the cluster's resources fit)
      concurrent_studies?: int = null      # studies searched at once (default: all; 1 = one
                                     # after another)
      repeats?: int = 0              # re-run each study's selected config with this many new
                                     # seeds (training seed and label-mask seed)
    scheduler?:
      type: asha | none = asha       # ASHA stops poor trials at epoch milestones
      grace_period?: int = 1         # epochs every trial runs before it can be stopped
      reduction_factor?: float = 2
    checkpoints?:                    # what stays on disk once trials end (their resume
                                     # state never does)
      keep_top?: int = 2             # best.pt of the N best search trials of each study
                                     # (the selected trial first)
      keep_repeats?: bool = false    # best.pt of the repeat trials too
    resources:
      num_workers: int               # DDP processes per trial (Ray Train workers)
      use_gpu?: bool = false         # NCCL on GPU, gloo on CPU
      cpus_per_worker?: float = 1
      gpus_per_worker?: float = 1 if use_gpu else 0
      driver_cpus?: float = 0.1      # CPU of each trial's driver (the Tune trainable)
      max_failures?: int = 1         # Ray Train restarts of a failed trial (from its checkpoint)
    fixed: {TrainConfig field: value}          # shared by all tasks
    first_trial?: {searched field: value}      # evaluated first in every task (default: the
                                               # fixed values, i.e. the published settings)
    search: {TrainConfig field: distribution}  # distribution is one of
      #   {type: uniform, low, high}   {type: loguniform, low, high}
      #   {type: int, low, high[, log: bool]}   (high inclusive)
      #   {type: choice, values: [...]}
      # with methods: searched by every method (a method's own search adds or replaces)
    methods?:                        # default: one implicit method (the fixed loss)
      - name: str                    # [A-Za-z0-9_-], unique
        fixed?: {field: value}       # e.g. {loss: partial_bce}
        search?: {field: distribution}
        first_trial?: {field: value} # its published or library default
    warm_start?: none | neighbours = none   # neighbours: a study first evaluates the best
                                     # configs of the same method on the nearest finished
                                     # label proportions (it waits for one to finish)
    tasks:                           # at least one
      - name: str                    # [A-Za-z0-9_-], unique
        prob?: float                 # required unless prob is searched
        fixed?: {field: value}       # per-task overrides (dataset, data root, train_epochs ...)
        first_trial?: {field: value}
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from pu_mlc.choices import FULL_LABEL_REASON, loss_at
from pu_mlc.config import TrainConfig, coerce_field
from pu_mlc.errors import ConfigError, listed, shown

from .storage import join_uri

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
SCHEDULERS = ("asha", "none")
WARM_STARTS = ("none", "neighbours")
TOP_KEYS = {"name", "storage_path", "study_storage", "seed", "budget", "scheduler", "resources",
            "checkpoints", "fixed", "first_trial", "search", "methods", "warm_start", "tasks"}
CHECKPOINT_KEYS = {"keep_top", "keep_repeats"}
BUDGET_KEYS = {"trials_per_task", "max_concurrent_trials", "concurrent_studies", "repeats"}
METHOD_KEYS = {"name", "fixed", "search", "first_trial"}
#: Fields a search may not set: they belong to the run's location or to the search itself.
NOT_SEARCHABLE = {"output_dir", "tensorboard_dir", "overwrite", "resume", "data", "device"}
NOT_FIXABLE = {"output_dir", "tensorboard_dir", "overwrite", "resume"}


@dataclass(frozen=True)
class Distribution:
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    values: tuple = ()
    log: bool = False

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return value in self.values
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def endpoints(self) -> list[Any]:
        return list(self.values) if self.type == "choice" else [self.low, self.high]

    def to_optuna(self):
        """The Optuna distribution the study's sampler draws from (``int`` bounds inclusive, as
        here): handed to ``OptunaSearch`` as it is, so a sampled value reaches the trial with no
        conversion but Ray's pickling."""
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        if self.type == "uniform":
            return FloatDistribution(self.low, self.high)
        if self.type == "loguniform":
            return FloatDistribution(self.low, self.high, log=True)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return CategoricalDistribution(list(self.values))

    def describe(self) -> str:
        if self.type == "choice":
            return f"choice{list(self.values)}"
        return f"{self.type}[{self.low}, {self.high}]"


@dataclass(frozen=True)
class Task:
    name: str
    base: TrainConfig                  # fixed fields + task overrides (prob included)
    first_trial: dict[str, Any]        # of the implicit method (spaces without methods)


@dataclass(frozen=True)
class Study:
    """One (task x method) pair: one Optuna study, one Tune experiment, one trial budget.

    Methods that train identically at a task (their losses equal the same loss there, e.g.
    partial BCE and assume-negative BCE are both BCE at full labels, and everything else is the
    same) share one study: it is named after the first of them, ``aliases`` lists the others
    and ``equivalence`` says why. Running them twice would spend the budget on search noise.
    """

    name: str                          # the task's name, or "<task>.<method>" with methods
    task: str
    method: str
    base: TrainConfig                  # fixed < method fixed < task fixed (prob included)
    search: dict[str, Distribution]    # what this method searches (and nothing else)
    first_trial: dict[str, Any]
    sampler_seed: int                  # distinct per study: tasks must not draw the same points
    aliases: tuple[str, ...] = ()      # further methods this study stands for (same training)
    equivalence: str = ""              # why they are one study, in words ("" without aliases)

    @property
    def prob(self) -> float:
        return self.base.prob

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method this study's results belong to: its own, then its aliases."""
        return (self.method, *self.aliases)


@dataclass(frozen=True)
class Resources:
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    gpus_per_worker: float
    driver_cpus: float
    max_failures: int

    @property
    def cpus_per_trial(self) -> float:
        return self.driver_cpus + self.num_workers * self.cpus_per_worker

    @property
    def gpus_per_trial(self) -> float:
        return self.num_workers * self.gpus_per_worker


@dataclass(frozen=True)
class Checkpoints:
    """What is kept on disk once trials end (``tune.store.ExperimentStore.prune_weights``):
    a trial's resume state always goes; its selected weights (``best.pt``) stay for the
    ``keep_top`` best search trials of each study (the selected trial first), and for repeat
    trials only with ``keep_repeats``."""

    keep_top: int = 2
    keep_repeats: bool = False


@dataclass(frozen=True)
class SearchSpec:
    name: str
    source: str
    storage_path: str | Path           # a folder, or an object-store URI (s3://...)
    study_storage: str
    seed: int
    trials_per_task: int
    max_concurrent_trials: int
    scheduler: str
    grace_period: int
    reduction_factor: float
    resources: Resources
    search: dict[str, Distribution]    # searched by every method (the top-level search)
    tasks: tuple[Task, ...]
    studies: tuple[Study, ...] = ()
    methods: tuple[str, ...] = ()      # empty: one implicit method
    repeats: int = 0
    concurrent_studies: Optional[int] = None
    warm_start: str = "none"
    raw: dict = field(default_factory=dict, compare=False)
    checkpoints: Checkpoints = Checkpoints()

    @property
    def experiment_dir(self) -> str | Path:
        return join_uri(self.storage_path, self.name) if isinstance(self.storage_path, str) \
            else self.storage_path / self.name

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def study(self, name: str) -> Study:
        for s in self.studies:
            if s.name == name:
                return s
        raise KeyError(name)

    def max_epochs(self, task: Task | Study) -> int:
        return task.base.train_epochs


# ------------------------------------------------------------------------------------------------
def parse_search_spec(raw: Mapping[str, Any], source: str = "search space",
                      base_dir: Optional[Path] = None) -> SearchSpec:
    base_dir = base_dir or Path.cwd()
    where = source
    unknown = sorted(set(raw) - TOP_KEYS, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {listed(unknown)}; allowed: "
                          f"{sorted(TOP_KEYS)}")
    for key in ("name", "budget", "resources", "tasks"):
        if key not in raw:
            raise ConfigError(f"{where}: missing required key '{key}' (see the schema in "
                              f"tune/space.py or search_spaces/README.md)")
    name = _expect(raw["name"], str, f"{where}: name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise ConfigError(f"{where}: name = {shown(name)} may only use letters, digits, '_', '-', "
                          f"'.' and may not start with '.' (it becomes the folder "
                          f"storage_path/name, so '..' or '/' would leave storage_path)")
    location = _expect(raw.get("storage_path", "experiments"), str, f"{where}: storage_path")
    if "://" in location:
        storage_path: str | Path = location        # a URI: tune.search.resolve_storage reads it
    else:
        storage_path = Path(location)
        if not storage_path.is_absolute():
            storage_path = (base_dir / storage_path).resolve()
    seed = _expect(raw.get("seed", 0), int, f"{where}: seed")

    budget = _mapping(raw["budget"], f"{where}: budget", BUDGET_KEYS)
    if "trials_per_task" not in budget:
        raise ConfigError(f"{where}: budget.trials_per_task is required (trials per study: "
                          f"each task x method)")
    trials = _expect(budget["trials_per_task"], int, f"{where}: budget.trials_per_task")
    _require(trials >= 1, f"{where}: budget.trials_per_task = {trials} must be >= 1")
    concurrent = _optional_count(budget, "max_concurrent_trials", where)
    studies_at_once = _optional_count(budget, "concurrent_studies", where)
    repeats = _expect(budget.get("repeats", 0), int, f"{where}: budget.repeats")
    _require(repeats >= 0, f"{where}: budget.repeats = {repeats} must be >= 0 (0: no repeats)")
    warm_start = raw.get("warm_start", "none") or "none"
    _require(warm_start in WARM_STARTS, f"{where}: warm_start = {shown(warm_start)}; allowed: "
                                        f"{list(WARM_STARTS)}")

    sched = _mapping(raw.get("scheduler", {}) or {}, f"{where}: scheduler",
                     {"type", "grace_period", "reduction_factor"})
    sched_type = sched.get("type", "asha")
    _require(sched_type in SCHEDULERS, f"{where}: scheduler.type = {shown(sched_type)}; allowed: "
                                       f"{list(SCHEDULERS)} (PBT/HyperBand cannot work with "
                                       f"trials that are Ray Train runs)")
    grace = _expect(sched.get("grace_period", 1), int, f"{where}: scheduler.grace_period")
    _require(grace >= 1, f"{where}: scheduler.grace_period = {grace} must be >= 1 epoch")
    rf = float(_expect(sched.get("reduction_factor", 2), (int, float),
                       f"{where}: scheduler.reduction_factor"))
    _require(rf > 1, f"{where}: scheduler.reduction_factor = {rf} must be > 1")

    resources = _parse_resources(raw["resources"], where)
    search = _parse_search(raw.get("search", {}) or {}, where)
    fixed = _parse_fields(raw.get("fixed", {}) or {}, f"{where}: fixed", NOT_FIXABLE)
    first_trial = _parse_fields(raw.get("first_trial", {}) or {}, f"{where}: first_trial",
                                NOT_SEARCHABLE)
    methods = _parse_methods(raw.get("methods"), where)
    if methods:
        searched_somewhere = set(search) | {k for m in methods for k in m["search"]}
        extra = sorted(set(first_trial) - searched_somewhere)
        _require(not extra, f"{where}: first_trial sets {extra}, which no method searches")
        tasks = _parse_tasks(raw["tasks"], where, fixed, {}, {}, base_dir,
                             check_first_trial=False)
    else:
        tasks = _parse_tasks(raw["tasks"], where, fixed, first_trial, search, base_dir)
    studies = _build_studies(raw["tasks"], tasks, methods, where, fixed, first_trial, search,
                             seed, base_dir)

    study = raw.get("study_storage")
    if study is None:                     # a URI's default is settled by resolve_storage
        study = "" if isinstance(storage_path, str) else \
            f"sqlite:///{storage_path / name / 'optuna.sqlite3'}"
    _expect(study, str, f"{where}: study_storage")
    _require(not study or "://" in study,
             f"{where}: study_storage = {shown(study)} must be an SQLAlchemy URL, "
                             f"e.g. sqlite:////abs/path/study.db or postgresql://user@host/db")
    return SearchSpec(name, where, storage_path, study, seed, trials, concurrent, sched_type,
                      grace, rf, resources, search, tasks, studies,
                      tuple(m["name"] for m in methods), repeats, studies_at_once, warm_start,
                      dict(raw), checkpoints=_parse_checkpoints(raw.get("checkpoints"), where))


def _parse_checkpoints(raw: Any, where: str) -> Checkpoints:
    c = _mapping(raw or {}, f"{where}: checkpoints", CHECKPOINT_KEYS)
    keep_top = _expect(c.get("keep_top", Checkpoints.keep_top), int,
                       f"{where}: checkpoints.keep_top")
    _require(keep_top >= 1, f"{where}: checkpoints.keep_top = {keep_top} must be >= 1 (the "
                            f"selected trial's weights are always kept)")
    keep_repeats = _expect(c.get("keep_repeats", Checkpoints.keep_repeats), bool,
                           f"{where}: checkpoints.keep_repeats")
    return Checkpoints(keep_top, keep_repeats)


def _optional_count(budget: dict, key: str, where: str) -> Optional[int]:
    value = budget.get(key)
    if value is None:
        return None
    value = _expect(value, int, f"{where}: budget.{key}")
    _require(value >= 1, f"{where}: budget.{key} = {value} must be >= 1 (or null: as many as "
                         f"the cluster fits)")
    return value


def _parse_methods(raw: Any, where: str) -> list[dict]:
    """The ``methods`` list: name, fixed fields, own distributions, first trial (unvalidated
    against tasks; :func:`_build_studies` checks every study's config)."""
    if raw is None:
        return []
    _require(isinstance(raw, list) and raw, f"{where}: methods must be a non-empty list of "
                                            f"{{name, fixed, search, first_trial}}")
    out, names = [], set()
    for i, entry in enumerate(raw):
        key = f"{where}: methods[{i}]"
        entry = _mapping(entry, key, METHOD_KEYS)
        mname = _unique_name(entry, key, names)
        key = f"{where}: method '{mname}'"
        out.append({"name": mname,
                    "fixed": _parse_fields(entry.get("fixed", {}) or {}, f"{key}.fixed",
                                           NOT_FIXABLE),
                    "search": _parse_search(entry.get("search", {}) or {}, key),
                    "first_trial": _parse_fields(entry.get("first_trial", {}) or {},
                                                 f"{key}.first_trial", NOT_SEARCHABLE)})
    return out


def _unique_name(entry: dict, key: str, names: set[str]) -> str:
    """The entry's ``name`` (a task's or a method's): present, a folder-safe string, not used
    before in ``names`` (which it is added to)."""
    _require("name" in entry, f"{key}: name is required")
    name = _expect(entry["name"], str, f"{key}.name")
    _require(re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None,
             f"{key}.name = {shown(name)} may only use letters, digits, '_' and '-'")
    _require(name not in names, f"{key}.name = {shown(name)} is used twice")
    names.add(name)
    return name


def sampler_seed(seed: int, study: str) -> int:
    """A study's own sampler seed, stable under reordering of tasks and methods."""
    return (seed * 1_000_003 + zlib.crc32(study.encode())) % (2 ** 31 - 1)


def _build_studies(raw_tasks: list, tasks: tuple[Task, ...], methods: list[dict], where: str,
                   fixed: dict, first_trial: dict, search: dict[str, Distribution],
                   seed: int, base_dir: Path) -> tuple[Study, ...]:
    """One study per (task x method); with no methods, one per task named after it."""
    if not methods:
        return tuple(Study(t.name, t.name, _implicit_method(t.base), t.base, dict(search),
                           dict(t.first_trial), sampler_seed(seed, t.name)) for t in tasks)
    studies = []
    for task, entry in zip(tasks, raw_tasks):
        task_fixed = dict(entry.get("fixed", {}) or {})
        task_first = _parse_fields(entry.get("first_trial", {}) or {},
                                   f"{where}: task '{task.name}'.first_trial", NOT_SEARCHABLE)
        unsearched = sorted(k for k in task_first
                            if not any(k in {**search, **m["search"]} for m in methods))
        _require(not unsearched, f"{where}: task '{task.name}': first_trial sets {unsearched}, "
                                 f"which no method searches")
        for method in methods:
            name = f"{task.name}.{method['name']}"
            key = f"{where}: study '{name}' (task '{task.name}' x method '{method['name']}')"
            msearch = {**search, **method["search"]}
            values = {**fixed, **method["fixed"], **task_fixed}
            if "prob" in entry:
                values["prob"] = entry["prob"]
            values = _absolute_paths(values, base_dir)
            overlap = sorted(set(values) & set(msearch))
            _require(not overlap, f"{key}: {overlap} are both fixed and searched; remove one")
            try:
                base = TrainConfig.from_dict(values, source=f"{key} fixed fields")
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}") from None
            first = _first_trial(base, msearch,
                                 [{k: v for k, v in first_trial.items() if k in msearch},
                                  method["first_trial"],
                                  {k: v for k, v in task_first.items() if k in msearch}], key)
            _check_corners(base, msearch, where, key)
            studies.append(Study(name, task.name, method["name"], base, msearch, first,
                                 sampler_seed(seed, name)))
    return _merge_equivalent(studies)


def _training_key(study: Study) -> tuple:
    """What decides a study's trials: its config with the loss replaced by the loss it computes
    at the task's proportion (``pu_mlc.choices.loss_at``), its searched ranges, its first trial.
    Studies of one task with equal keys train the same models."""
    effective = loss_at(study.base.loss, study.prob)
    base = study.base if effective == study.base.loss else study.base.replace(loss=effective)
    return (study.task, base, tuple(sorted(study.search.items())),
            tuple(sorted(study.first_trial.items(), key=lambda kv: kv[0])))


def _merge_equivalent(studies: list[Study]) -> tuple[Study, ...]:
    """One study for the methods of a task that train identically (see :class:`Study`): the
    first of them keeps its name and seed and lists the others as aliases, with the reason."""
    groups: dict[tuple, list[Study]] = {}
    for study in studies:
        groups.setdefault(_training_key(study), []).append(study)
    out = []
    for group in groups.values():
        first = group[0]
        if len(group) == 1:
            out.append(first)
            continue
        names = [s.method for s in group]
        effective = loss_at(first.base.loss, first.prob)
        losses = list(dict.fromkeys(s.base.loss for s in group))
        if len(losses) > 1:
            why = ", ".join(FULL_LABEL_REASON[loss] for loss in losses
                            if loss in FULL_LABEL_REASON)
            cause = (f"at prob={first.prob:g} every label is known, so "
                     f"{'both' if len(losses) == 2 else 'all'} losses compute {effective}"
                     + (f" ({why}, and there are none)" if why else ""))
        else:
            cause = f"they set the same loss ({effective})"
        reason = (f"{' and '.join(names)} are one study ({first.name}): {cause}; their other "
                  f"fields, searched ranges and first trial are the same, so they would train "
                  f"the same models")
        out.append(replace(first, aliases=tuple(names[1:]), equivalence=reason))
    return tuple(out)


#: Fields naming files, made absolute against the space's folder so every trial, node and
#: exported command reads the same file wherever it runs.
_PATH_FIELDS = ("data", "pretrained_model", "word_vectors")


def _absolute_paths(values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    out = dict(values)
    for name in _PATH_FIELDS:
        value = out.get(name)
        if not isinstance(value, str) or "://" in value or not value.strip():
            continue
        if name == "pretrained_model" and value.strip() in ("builtin", "None", "none", "null"):
            continue
        if name == "word_vectors" and not value.endswith(".npy"):
            continue                              # auto, published, glove
        if not Path(value).is_absolute():
            out[name] = str((base_dir / value).resolve())
    return out


def _implicit_method(base: TrainConfig) -> str:
    return "pu_mlc" if base.loss == "pu" else base.loss


def _first_trial(base: TrainConfig, search: dict[str, Distribution], layers: list[dict],
                 key: str) -> dict[str, Any]:
    """Default first trial (the fixed values, where the searched range has them) overlaid by
    ``layers``; every value must be searched and inside its range."""
    first = {k: getattr(base, k) for k in search if search[k].contains(getattr(base, k))}
    for layer in layers:
        first.update(layer)
    extra = sorted(set(first) - set(search))
    _require(not extra, f"{key}: first_trial sets {extra}, which are not searched")
    for name, value in first.items():
        _require(search[name].contains(value),
                 f"{key}: first_trial {name} = {shown(value)} lies outside "
                 f"search.{name} = {search[name].describe()}; widen the range or change "
                 f"the first trial")
    return first


def _check_corners(base: TrainConfig, search: dict[str, Distribution], where: str,
                   key: str) -> None:
    """Every corner of the searched space must give a valid config."""
    for name, dist in search.items():
        for v in dist.endpoints():
            try:
                base.updated({name: v}, source=f"search.{name}")
            except ConfigError as err:
                raise ConfigError(f"{where}: search.{name} allows {shown(v)}, which is invalid "
                                  f"for {key.split(': ', 1)[-1]}: {err}") from None


def _parse_resources(raw: Any, where: str) -> Resources:
    r = _mapping(raw, f"{where}: resources", {"num_workers", "use_gpu", "cpus_per_worker",
                                              "gpus_per_worker", "driver_cpus", "max_failures"})
    _require("num_workers" in r, f"{where}: resources.num_workers is required (DDP processes "
                                 f"per trial)")
    workers = _expect(r["num_workers"], int, f"{where}: resources.num_workers")
    _require(workers >= 1, f"{where}: resources.num_workers = {workers} must be >= 1 (Ray "
                           f"Train needs real workers)")
    use_gpu = _expect(r.get("use_gpu", False), bool, f"{where}: resources.use_gpu")
    cpus = float(_expect(r.get("cpus_per_worker", 1), (int, float),
                         f"{where}: resources.cpus_per_worker"))
    gpus = float(_expect(r.get("gpus_per_worker", 1 if use_gpu else 0), (int, float),
                         f"{where}: resources.gpus_per_worker"))
    driver = float(_expect(r.get("driver_cpus", 0.1), (int, float),
                           f"{where}: resources.driver_cpus"))
    failures = _expect(r.get("max_failures", 1), int, f"{where}: resources.max_failures")
    _require(cpus > 0, f"{where}: resources.cpus_per_worker = {cpus} must be > 0")
    _require(driver > 0, f"{where}: resources.driver_cpus = {driver} must be > 0 (Ray rejects "
                         f"0; 0.1 is enough)")
    _require(not use_gpu or gpus > 0, f"{where}: resources.gpus_per_worker = {gpus} must be > 0 "
                                      f"with use_gpu: true")
    _require(use_gpu or gpus == 0, f"{where}: resources.gpus_per_worker = {gpus} needs "
                                   f"use_gpu: true")
    _require(failures >= 0, f"{where}: resources.max_failures = {failures} must be >= 0")
    return Resources(workers, use_gpu, cpus, gpus, driver, failures)


def _parse_search(raw: Any, where: str) -> dict[str, Distribution]:
    raw = _mapping(raw, f"{where}: search", None)
    out = {}
    fields_ = TrainConfig.__dataclass_fields__
    for name, spec in raw.items():
        key = f"{where}: search.{name}"
        _require(name in fields_, f"{key}: not a training field; searchable fields are "
                                  f"{sorted(set(fields_) - NOT_SEARCHABLE)}")
        _require(name not in NOT_SEARCHABLE, f"{key}: cannot be searched (it is fixed per run or "
                                             f"per task)")
        spec = _mapping(spec, key, {"type", "low", "high", "values", "log"})
        kind = spec.get("type")
        _require(kind in DISTRIBUTIONS, f"{key}.type = {shown(kind)}; allowed: {list(DISTRIBUTIONS)}")
        ftype = str(fields_[name].type)
        if kind == "choice":
            values = spec.get("values")
            _require(isinstance(values, list) and len(values) >= 1,
                     f"{key}.values must be a non-empty list for type: choice")
            _require(set(spec) <= {"type", "values"}, f"{key}: type choice takes only 'values'")
            # each value as the field's type, so a sampler never hands a trial a value the
            # field cannot take ("big" for an int, "yes" for a bool, nan for a float)
            values = [_choice_value(v, name, f"{key}.values[{i}]")
                      for i, v in enumerate(values)]
            _require(len(set(map(repr, values))) == len(values),
                     f"{key}.values = {shown(values)} lists a value twice")
            dist = Distribution("choice", values=tuple(values))
        else:
            base_type = ftype.replace("Optional[", "").rstrip("]")
            _require(base_type in ("int", "float"),
                     f"{key}: {name} is a {base_type} field; numeric distributions need a "
                     f"number field, use type: choice with a list of values")
            _require(not (base_type == "int" and kind in ("uniform", "loguniform")),
                     f"{key}: {name} is an integer field but type {kind} samples fractions; "
                     f"use type: int (low, high inclusive) or type: choice")
            _require("low" in spec and "high" in spec, f"{key}: type {kind} needs low and high")
            _require(set(spec) <= {"type", "low", "high", "log"} and
                     ("log" not in spec or kind == "int"),
                     f"{key}: type {kind} takes low, high" + (", log" if kind == "int" else ""))
            low, high = spec["low"], spec["high"]
            for bound, v in (("low", low), ("high", high)):
                _require(isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v), f"{key}.{bound} = {shown(v)} must be a number")
            _require(low < high, f"{key}: low ({low}) must be below high ({high})")
            if kind == "loguniform":
                _require(low > 0, f"{key}.low = {low} must be > 0 for loguniform")
            if kind == "int":
                _require(float(low).is_integer() and float(high).is_integer(),
                         f"{key}: int bounds must be integers")
            dist = Distribution(kind, float(low) if kind != "int" else int(low),
                                float(high) if kind != "int" else int(high),
                                log=bool(spec.get("log", False)))
        out[name] = dist
    return out


def _choice_value(value: Any, name: str, where: str) -> Any:
    """A ``choice`` value as a value of the field ``name``: converted as the field's value in a
    config file would be (``pu_mlc.config.coerce_field``), so a sampler never hands a trial a
    value the field cannot take ("big" for an int, "yes" for a bool)."""
    value = coerce_field(name, value, where)
    _require(not isinstance(value, float) or math.isfinite(value),
             f"{where} = {shown(value)} must be a finite number")
    return value


def _parse_fields(raw: Any, where: str, forbidden: set[str]) -> dict[str, Any]:
    raw = _mapping(raw, where, None)
    fields_ = TrainConfig.__dataclass_fields__
    for name in raw:
        _require(name in fields_, f"{where}.{name}: not a training field; fields are "
                                  f"{sorted(set(fields_) - forbidden)}")
        _require(name not in forbidden, f"{where}.{name}: set by the search itself (each trial "
                                        f"gets its own directory)")
    return dict(raw)


def _parse_tasks(raw: Any, where: str, fixed: dict, first_trial: dict,
                 search: dict[str, Distribution], base_dir: Path,
                 check_first_trial: bool = True) -> tuple[Task, ...]:
    _require(isinstance(raw, list) and raw, f"{where}: tasks must be a non-empty list")
    tasks, names = [], set()
    for i, entry in enumerate(raw):
        key = f"{where}: tasks[{i}]"
        entry = _mapping(entry, key, {"name", "prob", "fixed", "first_trial"})
        tname = _unique_name(entry, key, names)
        key = f"{where}: task '{tname}'"
        values = {**fixed, **_parse_fields(entry.get("fixed", {}) or {}, f"{key}.fixed",
                                           NOT_FIXABLE)}
        if "prob" in entry:
            _require("prob" not in search, f"{key}: prob is searched, so a task may not fix it")
            values["prob"] = entry["prob"]
        elif "prob" not in search and "prob" not in values:
            raise ConfigError(f"{key}: give the task's known-label proportion 'prob' (1.0 = "
                              f"full labels, 0.1 = 10% of label entries kept)")
        overlap = sorted(set(values) & set(search))
        _require(not overlap, f"{key}: {overlap} are both fixed and searched; remove one")
        _require("data" in values, f"{key}: no dataset root: set fixed.data (or the task's "
                                   f"fixed.data)")
        _require(isinstance(values["data"], str), f"{key}: fixed.data = {shown(values['data'])} "
                                                  f"must be a folder path (a string)")
        values = _absolute_paths(values, base_dir)
        try:
            base = TrainConfig.from_dict(values, source=f"{key} fixed fields")
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
        first: dict[str, Any] = {}
        if check_first_trial:
            first = _first_trial(base, search, [
                first_trial, _parse_fields(entry.get("first_trial", {}) or {},
                                           f"{key}.first_trial", NOT_SEARCHABLE)], key)
            _check_corners(base, search, where, f"{where}: task '{tname}'")
        tasks.append(Task(tname, base, first))
    return tuple(tasks)



def _mapping(value: Any, where: str, allowed: Optional[set[str]]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed, key=str)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {listed(unknown)}; allowed: "
                              f"{sorted(allowed)}")
    return value


def _expect(value: Any, types, where: str):
    ok = isinstance(value, types) and not (isinstance(value, bool) and types in (int, (int,
                                                                                        float)))
    if not ok:
        names = (types.__name__ if isinstance(types, type)
                 else " or ".join(t.__name__ for t in types))
        raise ConfigError(f"{where} = {shown(value)} must be {names}")
    return value


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# ------------------------------------------------------------------------------------------------
#: The keys of the space's fixed-shape mappings (``tune.space_file`` checks ``--set`` paths).
_SUB_KEYS = {"budget": BUDGET_KEYS, "checkpoints": CHECKPOINT_KEYS,
             "scheduler": {"type", "grace_period", "reduction_factor"},
             "resources": {"num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker",
                           "driver_cpus", "max_failures"}}
_TASK_KEYS = {"name", "prob", "fixed", "first_trial"}
_METHOD_KEYS = METHOD_KEYS
_DIST_KEYS = {"type", "low", "high", "values", "log"}


def allowed_keys(parents: list[str]) -> Optional[set[str]]:
    """Keys allowed in the mapping at ``parents`` (a path of the space), None when any is."""
    fields_ = set(TrainConfig.__dataclass_fields__)
    if not parents:
        return TOP_KEYS
    head = parents[0]
    if len(parents) == 1:
        if head in _SUB_KEYS:
            return _SUB_KEYS[head]
        if head in ("fixed", "first_trial", "search"):
            return fields_
    if head == "search" and len(parents) == 2:
        return _DIST_KEYS
    if head in ("tasks", "methods") and len(parents) == 2:
        return _TASK_KEYS if head == "tasks" else _METHOD_KEYS
    if head in ("tasks", "methods") and len(parents) == 3 and parents[2] in ("fixed",
                                                                            "first_trial",
                                                                            "search"):
        return fields_
    if head == "methods" and len(parents) == 4 and parents[2] == "search":
        return _DIST_KEYS
    return None
