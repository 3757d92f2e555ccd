"""One study (a task x method pair): its search stage and its repeats stage, each a Ray Tune
experiment. Both functions run inside a Ray task started by :mod:`tune.search`, so every study
of an experiment drives its own ``Tuner`` at the same time and their trials queue for the same
cluster resources (Ray's scheduler, not ours, decides which trial runs next).

- **search**: OptunaSearch (the study's own seed, its first trial and any warm-start configs
  evaluated first) + ASHA per study (mAP scales differ between tasks and methods), over the
  study's own searched fields only.
- **repeats**: the selected config re-run with ``budget.repeats`` new seeds (training ``seed`` and
  label-mask ``mask_seed`` = the repeat number, the same numbers for every method so results
  pair up); a grid of Ray trials, resumable like the search.

A stage that finished is marked by a done marker in its Tune folder
(:meth:`tune.store.ExperimentStore.mark_stage_done`); ``--resume`` skips it, restores an
interrupted stage (running trials continue from their last checkpoint, finished ones are not
re-run) and starts a stage that never began. What the trials gave is read from the experiment
store, never from Tune's result objects: the store is the one record.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Optional

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from .cluster import TRIAL_SLOT
from .space import SearchSpec, Study
from .store import (ENDED, FAILED, JOURNAL_SCHEME, REPEAT_KEY, SETTLEABLE, STOPPED,
                    ExperimentStore, trial_status)
from .trial import WORST_SCORE, first_line, run_trial

log = logging.getLogger(__name__)

METRIC = "best_score"


def open_study_storage(url: str):
    """Optuna's storage for ``study_storage``: a journal file (``journal:///path``, Optuna's
    ``JournalFileBackend``), or an RDB URL (SQLite, PostgreSQL, MySQL). Several studies write to
    it at once from their own processes: with SQLite, wait for the file lock (up to a minute)
    instead of failing at once. The driver opens it once before any study starts, so the schema
    is created by one process (concurrent first opens race on it)."""
    import optuna

    if url.startswith(f"{JOURNAL_SCHEME}://"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL_SCHEME) + 3:])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def study_name_in_optuna(spec: SearchSpec, study: Study) -> str:
    return f"{spec.name}.{study.name}"


def drive_search(spec: SearchSpec, study: Study, resume: bool, warm_points: list[dict],
                 slots: int, use_slot_resource: bool, driver_node: Optional[dict] = None
                 ) -> dict:
    """Run (or resume) the search stage of ``study``; return its stage record."""
    from ray import tune

    def new_tuner(trainable) -> "tune.Tuner":
        # warm-start configs first (the neighbours' best), then the method's default
        points = []
        for point in [*warm_points, dict(study.first_trial) if study.search else {}]:
            if point and point not in points:
                points.append(point)
        # the space goes to Optuna as Optuna distributions (no Tune domains in between)
        return tune.Tuner(
            trainable, tune_config=_search_tune_config(spec, study, points, slots),
            run_config=_run_config(spec, study, "search"))

    return _run_stage(spec, study, "search", resume, use_slot_resource, driver_node,
                      new_tuner, lambda: {"warm_start": warm_points,
                                          "optuna": settle_optuna_study(spec, study)})


def drive_repeats(spec: SearchSpec, study: Study, best_params: dict, resume: bool,
                  slots: int, use_slot_resource: bool, driver_node: Optional[dict] = None
                  ) -> dict:
    """Run (or resume) the repeats of ``study``'s selected config; return its stage record."""
    from ray import tune

    def new_tuner(trainable) -> "tune.Tuner":
        space = {**best_params,
                 REPEAT_KEY: tune.grid_search(list(range(1, spec.repeats + 1)))}
        return tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=1,
                max_concurrent_trials=min(slots, spec.repeats),
                trial_name_creator=lambda t: f"{study.name}_{t.trial_id}",
                trial_dirname_creator=lambda t: f"{study.name}_{t.trial_id}"),
            run_config=_run_config(spec, study, "repeats"))

    return _run_stage(spec, study, "repeats", resume, use_slot_resource, driver_node,
                      new_tuner, lambda: {"params": best_params})


def _run_stage(spec: SearchSpec, study: Study, stage: str, resume: bool,
               use_slot_resource: bool, driver_node: Optional[dict], new_tuner,
               extras) -> dict:
    """One stage of a study, resumable: a finished stage is read back from its done marker, an
    interrupted one is restored by Tune (its finished trials are not run again), otherwise
    ``new_tuner(trainable)`` starts it. Every trial is then settled in the store, the weights
    nobody reads again are released, and the stage record (plus ``extras()``) is written as
    the done marker and returned."""
    from ray import tune

    _quiet_worker_logging()
    store = ExperimentStore(spec.experiment_dir)
    path = store.stage_dir(stage, study.name)
    if resume and store.stage_done(stage, study.name):
        return store.stage_record(stage, study.name) or {}
    trainable = _trainable(spec, study, stage, use_slot_resource, driver_node)
    t0 = time.time()
    if resume and tune.Tuner.can_restore(store.uri(path)):
        log.info("study %s: restoring its interrupted %s from %s", study.name, stage,
                 store.uri(path))
        tuner = tune.Tuner.restore(store.uri(path), trainable=trainable,
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = new_tuner(trainable)
    grid = tuner.fit()
    settle_stage(store, study, grid)
    record = stage_record(store, study, stage, time.time() - t0)
    record["tune_trials"] = len(grid)          # what Tune ran: the store must hold each
    record["driver"] = _where()
    keep = spec.checkpoints
    record["weights_removed"] = store.prune_weights(study.name, stage, keep.keep_top,
                                                    keep.keep_repeats)
    record.update(extras())
    store.mark_stage_done(stage, study.name, record)
    return record


def stage_record(store: ExperimentStore, study: Study, stage: str, seconds: float) -> dict:
    """What a finished stage says of itself: its trials' counts by status (from the store)."""
    trials = store.read_study(study.name).stage(stage)
    counts = {s: sum(t.status == s for t in trials) for s in (*ENDED,)}
    return {"study": study.name, "task": study.task, "method": study.method,
            "prob": study.prob, "stage": stage, "trials": len(trials), **counts,
            "wall_seconds": seconds}


def _quiet_worker_logging() -> None:
    """Ray task processes log at WARNING by default; the study's progress lines are INFO.
    Tune's own CSV/JSON/TensorBoard loggers stay off: the experiment has one TensorBoard tree
    (``tensorboard/``, written by the trials) and no second one, nor a hint pointing into Tune's
    staging folders."""
    import os

    from pu_mlc.cli import setup_logging

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    setup_logging()


def _where() -> dict[str, Any]:
    """The node this study driver runs on."""
    import os

    import ray

    return {"node_ip": ray.util.get_node_ip_address(), "pid": os.getpid()}


def _trainable(spec: SearchSpec, study: Study, stage: str, use_slot_resource: bool,
               driver_node: Optional[dict] = None):
    """The study's Tune trainable: :func:`run_trial` bound to this study, under a name of its
    own. Not ``tune.with_parameters``: it keys the bound values (and Tune keys the trainable)
    by the function's name in a registry shared by the whole Ray job, so studies driven at the
    same time would run each other's configs. With ``driver_node`` every trial's driver runs on
    the search driver's node (a sliver of its implicit ``node:<ip>`` resource): it only waits on
    its DDP workers, and never takes a worker node's CPU away from them."""
    from ray import tune

    store = ExperimentStore(spec.experiment_dir)
    resources = spec.resources

    def study_trial(params: dict) -> None:
        run_trial(params, study=study, store=store, stage=stage, resources=resources)

    study_trial.__name__ = study_trial.__qualname__ = \
        "pu_mlc_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{spec.name}__{study.name}__{stage}")
    request: dict[str, float] = {"CPU": resources.driver_cpus}
    if use_slot_resource:
        request[TRIAL_SLOT] = 1
    if driver_node:
        request[f"node:{driver_node['ip']}"] = 0.001
    return tune.with_resources(study_trial, request)


def _run_config(spec: SearchSpec, study: Study, stage: str):
    from ray import tune

    store = ExperimentStore(spec.experiment_dir)
    path = store.stage_dir(stage, study.name)
    return tune.RunConfig(name=study.name, storage_path=store.uri(path.parent),
                          failure_config=tune.FailureConfig(max_failures=0),
                          callbacks=[TrialStatusCallback(store, study.name),
                                     ClusterUsageCallback(store, study.name, stage)],
                          verbose=1)


def _search_tune_config(spec: SearchSpec, study: Study, points: list[dict], slots: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    search = StudyOptunaSearch(
        space={name: dist.to_optuna() for name, dist in study.search.items()} or None,
        metric=METRIC, mode="max", seed=study.sampler_seed,
        storage=open_study_storage(spec.study_storage),
        study_name=study_name_in_optuna(spec, study), points_to_evaluate=points or None,
        max_epochs=spec.max_epochs(study), metric_names=[objective_name(study)],
        study_attrs=optuna_study_attrs(spec, study))
    max_t = spec.max_epochs(study)
    if spec.scheduler == "asha" and max_t > spec.grace_period:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t,
                                  grace_period=spec.grace_period,
                                  reduction_factor=spec.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(metric=METRIC, mode="max", search_alg=search, scheduler=scheduler,
                           num_samples=spec.trials_per_task,
                           max_concurrent_trials=min(slots, spec.trials_per_task),
                           trial_name_creator=lambda t: f"{study.name}_{t.trial_id}",
                           trial_dirname_creator=lambda t: f"{study.name}_{t.trial_id}")


# -------------------------------------------------------------------------- settling trials
def settle_stage(store: ExperimentStore, study: Study, grid) -> None:
    """Once a stage's Tuner returned: give every trial that ended without the engine saying how
    its final status (an error: failed; ended early without one: stopped by the scheduler),
    record its time in Tune, and release the resume state of every ended trial (a trial the
    scheduler stopped had no driver left to do it, and its worker may have stored one more
    checkpoint after the stop)."""
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or _trial_id_from_path(study, result.path)
        if trial_id is None:
            continue
        settle_trial(store, study.name, trial_id, result.error, metrics.get("epoch"),
                     metrics.get("time_total_s"))
    store.release_ended_trials(study.name)


def settle_trial(store: ExperimentStore, study: str, trial_id: str,
                 error: Optional[BaseException], last_epoch: Optional[int],
                 seconds: Optional[float]) -> None:
    if error is not None:
        store.settle_trial(study, trial_id, FAILED, first_line(error), epoch=last_epoch,
                           overwrite=SETTLEABLE)
    else:
        store.settle_trial(study, trial_id, STOPPED,
                           "stopped early by the scheduler (ASHA)"
                           + (f" on its epoch-{last_epoch} result" if last_epoch else ""),
                           epoch=last_epoch, overwrite=("running", "stopped", "interrupted"))
    if seconds is not None:
        store.note_trial(study, trial_id, seconds=float(seconds))
    status = trial_status(store.read_json(store.trial_dir(study, trial_id) / "metrics.json"))
    if status in ENDED:
        store.release_checkpoints(study, trial_id)


def _trial_id_from_path(study: Study, path) -> Optional[str]:
    name = Path(path).name if path else ""
    prefix = f"{study.name}_"
    return name[len(prefix):] if name.startswith(prefix) else None


class TrialStatusCallback(Callback):
    """Settles a trial in the store as soon as Tune ends it (the stage settles every trial
    again when it ends, in case a stopped trial's worker wrote once more)."""

    def __init__(self, store: ExperimentStore, study: str) -> None:
        self.store = store
        self.study = study

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        settle_trial(self.store, self.study, trial.trial_id, None, last.get("epoch"),
                     last.get("time_total_s"))

    def on_trial_error(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        where = getattr(trial, "local_path", None)
        error = RuntimeError(f"the trial errored (Ray Tune); see {where}/error.txt" if where
                             else "the trial errored (Ray Tune)")
        settle_trial(self.store, self.study, trial.trial_id, error, last.get("epoch"),
                     last.get("time_total_s"))


class ClusterUsageCallback(Callback):
    """Appends a line to ``usage/<study>.<stage>.jsonl`` whenever a trial of the study starts or
    ends: the cluster's live placement groups and actors, its free CPUs and trial slots, and
    the memory of this machine's Ray worker processes. A search that leaks (placement groups
    or actors left by finished trials, memory growing trial after trial) shows it here."""

    def __init__(self, store: ExperimentStore, study: str, stage: str) -> None:
        self.store = store
        self.path = store.usage_log(study, stage)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._record("start", trial, trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record("end", trial, trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._record("error", trial, trials)

    def _record(self, event: str, trial, trials) -> None:
        try:
            line = {"time": time.time(), "event": event, "trial_id": trial.trial_id,
                    "running_in_study": sum(t.status == "RUNNING" for t in trials),
                    **cluster_usage()}
            self.store.append_jsonl(self.path, line)
        except Exception as err:          # a diagnostic never stops a search
            log.warning("usage record of trial %s skipped: %s: %s", trial.trial_id,
                        type(err).__name__, err)


def cluster_usage() -> dict[str, Any]:
    """Live placement groups and actors of the cluster, its free resources, and the resident
    memory of this machine's Ray worker processes (``ray::*``)."""
    import psutil
    import ray

    out: dict[str, Any] = {}
    states = [pg.get("state") for pg in ray.util.placement_group_table().values()]
    # CREATED ones hold resources; PENDING ones are trials queued for a slot
    out["placement_groups_created"] = states.count("CREATED")
    out["placement_groups_pending"] = sum(s not in ("CREATED", "REMOVED") for s in states)
    try:
        from ray.util.state import list_actors

        # this cluster's, by its address (without one the State API looks for any Ray on the
        # host and refuses when it finds two)
        alive = list_actors(address=ray.get_runtime_context().gcs_address,
                            filters=[("state", "=", "ALIVE")], limit=10_000)
        out["actors_alive"] = len(alive)
        out["actors_alive_by_class"] = {}
        ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        by_node: dict[str, dict[str, int]] = {}
        for actor in alive:
            name = (getattr(actor, "class_name", None) or "?").rsplit(".", 1)[-1]
            out["actors_alive_by_class"][name] = out["actors_alive_by_class"].get(name, 0) + 1
            node = by_node.setdefault(ips.get(getattr(actor, "node_id", None), "?"), {})
            node[name] = node.get(name, 0) + 1
        # where the trials' drivers (ImplicitFunc), controllers and DDP workers run, node by node
        out["actors_by_node"] = by_node
    except Exception as err:          # no dashboard (State API) on this cluster
        out["actors_alive"] = None
        out["actors_error"] = str(err)[:200]
    free = ray.available_resources()
    out["cpus_free"] = free.get("CPU", 0.0)
    out["trial_slots_free"] = free.get(TRIAL_SLOT)
    out["nodes"] = [{"ip": n["NodeManagerAddress"], "alive": bool(n.get("Alive")),
                     "cpus": (n.get("Resources") or {}).get("CPU", 0.0),
                     "gpus": (n.get("Resources") or {}).get("GPU", 0.0)} for n in ray.nodes()]
    out["study_driver_ip"] = ray.util.get_node_ip_address()
    rss, count, by_title = 0, 0, {}
    for proc in _this_nodes_workers(psutil):
        try:
            cmd = proc.cmdline()
            if cmd and cmd[0].startswith("ray::"):
                size = proc.memory_info().rss
                rss += size
                count += 1
                # "ray::RayTrainWorker.run" -> "RayTrainWorker"; "ray::IDLE"; a task's name
                title = cmd[0].split()[0][len("ray::"):].split(".")[0] or "?"
                entry = by_title.setdefault(title, [0, 0.0])
                entry[0] += 1
                entry[1] += size / 2 ** 20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    out["ray_worker_processes"] = count
    out["ray_worker_rss_mib"] = round(rss / 2 ** 20, 1)
    # {title: [processes, MiB]}: which kind of process holds the memory (a trial's actors,
    # study drivers, idle pooled workers), and processes outliving their actors
    out["ray_workers_by_title"] = {t: [n, round(mib, 1)] for t, (n, mib) in by_title.items()}
    return out


def _this_nodes_workers(psutil) -> list:
    """The worker processes of this Ray node: the children of the raylet that started this
    process (the study's task), not those of another Ray instance on the same host."""
    import os

    try:
        parent = psutil.Process(os.getppid())
        if "raylet" in parent.name():
            return parent.children(recursive=True)
    except psutil.Error:
        pass
    return list(psutil.process_iter())


# --------------------------------------------------------------------------------- Optuna
class StudyOptunaSearch(OptunaSearch):
    """OptunaSearch that keeps the Optuna study honest about what each Ray trial was:

    - a trial the scheduler stopped before its last epoch is PRUNED (its value is its last
      reported score), not COMPLETE;
    - a diverged trial is COMPLETE with the worst score and ``diverged_reason`` (the sampler
      learns that region is bad; a FAIL would teach it nothing);
    - every trial carries the Ray trial id, the epochs it ran and its selected test mAP, as
      Tune last saw them: Optuna freezes a trial once told, and a trial the scheduler stops on
      epoch N's result may validate more epochs before the stop reaches its workers (its
      ``metrics.json``, the summary, the export and the report hold what it really ran);
    - intermediate values are reported per epoch (Tune's iteration counter restarts after a
      restore).
    """

    def __init__(self, *args, max_epochs: Optional[int] = None,
                 metric_names: Optional[list[str]] = None,
                 study_attrs: Optional[dict[str, Any]] = None, **kwargs) -> None:
        # read by _setup_study, which OptunaSearch.__init__ calls
        self.metric_names = list(metric_names or [])
        self.study_attrs = dict(study_attrs or {})
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    def _setup_study(self, mode) -> None:
        """Create (or load) the Optuna study, then name its objective and say what it is: the
        dashboard shows the metric name instead of "Objective 0", and the task, method(s),
        prob and protocol as the study's user attributes."""
        import warnings

        super()._setup_study(mode)
        try:
            with warnings.catch_warnings():       # set_metric_names is "experimental"
                warnings.simplefilter("ignore")
                if self.metric_names:
                    self._ot_study.set_metric_names(self.metric_names)
            for key, value in self.study_attrs.items():
                self._ot_study.set_user_attr(key, value)
        except Exception as err:        # a label is never worth a failed study
            log.warning("could not label the Optuna study: %s: %s", type(err).__name__, err)

    def suggest(self, trial_id: str):
        """Optuna's suggestion for a new Ray trial, which carries the Ray trial id from the
        start (the experiment's records and the dashboard name trials the same way)."""
        config = super().suggest(trial_id)
        ot_trial = getattr(self, "_ot_trials", {}).get(trial_id)
        if ot_trial is not None:
            self._note(ot_trial, "ray_trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ot_trial = getattr(self, "_ot_trials", {}).get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials or \
                result.get(self.metric) is None:
            return
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        try:
            ot_trial.report(float(result[self.metric]), step)
        except Exception as err:           # a repeated step after a restore: keep the first
            log.debug("optuna report skipped: %s", err)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None,
                          error: bool = False):
        from optuna.trial import TrialState

        ot_trial = getattr(self, "_ot_trials", {}).get(trial_id)
        if ot_trial is None or trial_id in getattr(self, "_completed_trials", set()):
            return super().on_trial_complete(trial_id, result=result, error=error)
        result = dict(result or {})
        self._note(ot_trial, "ray_trial_id", trial_id)
        if result.get("epoch") is not None:
            self._note(ot_trial, "epochs", int(result["epoch"]))
        if result.get("selected_test_mAP") is not None:
            self._note(ot_trial, "selected_test_mAP", float(result["selected_test_mAP"]))
        if result.get("diverged"):
            self._note(ot_trial, "diverged", True)
            self._note(ot_trial, "diverged_reason", str(result.get("diverged_reason")))
            if result.get(METRIC) is None:
                result[METRIC] = WORST_SCORE
        elif (not error and self.max_epochs is not None and result.get(METRIC) is not None
              and int(result.get("epoch") or 0) < self.max_epochs):
            self._note(ot_trial, "stopped_by_scheduler", True)
            try:
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            except Exception as err:
                log.warning("could not mark trial %s pruned in Optuna: %s", trial_id, err)
            self._completed_trials.add(trial_id)
            return None
        return super().on_trial_complete(trial_id, result=result, error=error)

    @staticmethod
    def _note(ot_trial, key: str, value: Any) -> None:
        try:
            ot_trial.set_user_attr(key, value)
        except Exception as err:  # never lose the result over a note
            log.warning("could not record %s in the Optuna study: %s", key, err)


def objective_name(study: Study) -> str:
    """The name of a study's objective (Optuna's ``metric_names``): the selection score, in
    words; it is not the test mAP."""
    if study.base.protocol == "paper":
        return "selection score: test mAP (paper protocol, optimistic)"
    return f"selection score: val mAP on {100 * study.prob:g}%-known labels"


def optuna_study_attrs(spec: SearchSpec, study: Study) -> dict[str, Any]:
    """What the dashboard shows about a study: its task, method(s), label proportion, loss,
    protocol and the experiment it belongs to."""
    attrs: dict[str, Any] = {"experiment": spec.name, "study": study.name, "task": study.task,
                             "method": study.method, "methods": list(study.methods),
                             "prob": study.prob, "loss": study.base.loss,
                             "protocol": study.base.protocol,
                             "objective": objective_name(study)}
    if study.equivalence:
        attrs["equivalence"] = study.equivalence
    return attrs


def settle_optuna_study(spec: SearchSpec, study: Study) -> dict:
    """Once a study's Tuner is done, no Optuna trial may stay RUNNING: a trial the sampler
    proposed just before a driver was killed, and that Tune never ran (the restored searcher
    did not know it), is marked FAIL with ``orphaned: true``. Returns the study's counts."""
    import optuna
    from optuna.trial import TrialState

    storage = open_study_storage(spec.study_storage)
    ot_study = optuna.load_study(study_name=study_name_in_optuna(spec, study), storage=storage)
    for trial in ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "orphaned", True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        log.warning("study %s: Optuna trial %d was proposed but never run (driver killed "
                    "before Tune recorded it); marked FAIL", study.name, trial.number)
    counts: dict[str, int] = {}
    for trial in ot_study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts
