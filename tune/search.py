"""Run a validated search: one Ray Tune experiment per task, OptunaSearch + ASHA, resumable.

Layout of an experiment directory (``storage_path/name``)::

    search_space.yaml         the resolved space this experiment runs (checked on --resume)
    optuna.sqlite3            the Optuna studies (one per task), unless study_storage is set
    tune/<task>/              Ray Tune's experiment state (Tuner.restore reads it)
    ray_train/                Ray Train runs of the trials (their checkpoints)
    trials/<task>/<trial>/    each trial's engine output: config.yaml, metrics.json, best.pt
    tensorboard/<task>/<trial>/   one TensorBoard run per trial (scalars + HParams)
    exports/                  best config per task (YAML + command) and all_trials.csv
    legs.json                 wall time of every run of the search (the first, each --resume)
    summary.json              best result and trial counts per task, wall time (all legs)

A task whose Tuner finished is marked by ``tune/<task>/.pu_mlc_done``; ``--resume`` skips those,
restores interrupted ones (trials resume from their last checkpoint, finished trials are not
re-run) and starts the rest.

``storage_path`` is a local folder (or a ``file://`` URI): the search writes its own files with
plain file I/O, so a cluster of several machines needs a shared filesystem mounted at the same
path on every node; object-store URIs (``s3://``, ``gs://`` ...) are refused with a message.

Every trial's ``metrics.json`` ends with an honest status: ``finished``, ``stopped_by_scheduler``
(marked here, the engine cannot know), ``failed`` (with the error) or ``diverged`` (with the
reason; such a trial reports the worst score so Optuna records it as a completed bad trial).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Optional

import yaml
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from pu_mlc.errors import ConfigError

from .space import SearchSpec, Task
from .trial import (WORST_SCORE, _first_line, mark_trial_status, prune_stale_checkpoints,
                    read_metrics, run_trial)

log = logging.getLogger(__name__)

DONE_MARKER = ".pu_mlc_done"
METRIC = "best_score"


def tune_dir(spec: SearchSpec) -> Path:
    return spec.experiment_dir / "tune"


def check_experiment_dir(spec: SearchSpec, resume: bool) -> None:
    """A new search never writes into an earlier experiment; --resume needs the same space."""
    saved = spec.experiment_dir / "search_space.yaml"
    if resume:
        if not saved.exists():
            raise ConfigError(f"--resume: no experiment at {spec.experiment_dir} (no "
                              f"search_space.yaml); run without --resume to start it")
        earlier = yaml.safe_load(saved.read_text())
        if earlier != _comparable(spec.raw):
            raise ConfigError(f"--resume: {saved} differs from {spec.source}; resume with the "
                              f"same space (and --set overrides) or choose a new name")
        return
    if saved.exists():
        raise ConfigError(f"experiment {spec.experiment_dir} already exists; pass --resume to "
                          f"continue it, or change 'name' in {spec.source} (or --set name=...)")


def _comparable(raw: dict) -> dict:
    return json.loads(json.dumps(raw, default=str))


def resolve_storage(spec: SearchSpec) -> SearchSpec:
    """The spec with ``storage_path`` as a local folder: a ``file://`` URI is turned into its
    path (and the default Optuna SQLite file follows it); any other URI is refused, naming the
    key, before Ray starts."""
    text = str(spec.raw.get("storage_path", ""))
    if "://" not in text:
        return spec
    parsed = urllib.parse.urlparse(text)
    where = f"{spec.source}: storage_path = {text!r}"
    if parsed.scheme.lower() != "file":
        raise ConfigError(
            f"{where}: only a local folder or a file:// URI is supported (the trials' files, "
            f"TensorBoard runs, exports and the Optuna SQLite study are written as local "
            f"files); on a multi-node cluster mount shared storage (NFS, a mounted bucket) at "
            f"the same path on every node and give that path")
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"{where}: a file:// URI names a local path (file:///abs/path); "
                          f"host {parsed.netloc!r} is not supported")
    local = Path(urllib.parse.unquote(parsed.path))
    if not local.is_absolute():
        raise ConfigError(f"{where}: the path of a file:// URI must be absolute")
    study = spec.raw.get("study_storage") or f"sqlite:///{local / spec.name / 'optuna.sqlite3'}"
    return dataclasses.replace(spec, storage_path=local, study_storage=study)


def run_search(spec: SearchSpec, resume: bool = False) -> dict:
    """Run (or resume) every task of the experiment; return the per-task summary."""
    import ray

    from .cluster import check_cluster_fits

    spec = resolve_storage(spec)
    check_cluster_fits(spec, ray.cluster_resources())      # before anything is written
    check_experiment_dir(spec, resume)
    spec.experiment_dir.mkdir(parents=True, exist_ok=True)
    (spec.experiment_dir / "search_space.yaml").write_text(
        yaml.safe_dump(_comparable(spec.raw), sort_keys=False))
    clock = LegClock(spec.experiment_dir / "legs.json", resumed=resume)
    try:
        results = {}
        for task in spec.tasks:
            results[task.name] = run_task(spec, task, resume)
    finally:
        legs = clock.stop()
    totals = {key: sum(r.get(key, 0) for r in results.values())
              for key in ("trials", "finished", "stopped_by_scheduler", "failed", "diverged",
                          "errored")}
    summary = {"experiment": str(spec.experiment_dir),
               "wall_seconds": sum(leg["seconds"] for leg in legs),
               "legs": legs, "trials": totals, "tasks": results}
    (spec.experiment_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class LegClock:
    """Wall time of this run of the search (a *leg*), kept in ``legs.json`` next to the
    earlier legs: updated every few seconds, so a leg that is killed still counts (up to the
    last update) when ``--resume`` adds the next one."""

    def __init__(self, path: Path, resumed: bool, every_s: float = 5.0) -> None:
        self.path = path
        self.t0 = time.monotonic()
        try:
            self.legs = json.loads(path.read_text()) if resumed else []
        except (FileNotFoundError, json.JSONDecodeError):
            self.legs = []
        self.legs.append({"started": datetime.datetime.now().isoformat(timespec="seconds"),
                          "resumed": resumed, "seconds": 0.0, "completed": False})
        self._stop = threading.Event()
        self._write()
        self._thread = threading.Thread(target=self._beat, args=(every_s,), daemon=True,
                                        name="pu-mlc-leg-clock")
        self._thread.start()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self._write()

    def _write(self, completed: bool = False) -> None:
        self.legs[-1].update(seconds=round(time.monotonic() - self.t0, 3), completed=completed)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.legs, indent=2))
        tmp.replace(self.path)

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        self._write(completed=True)
        return list(self.legs)


def run_task(spec: SearchSpec, task: Task, resume: bool) -> dict:
    from ray import tune

    path = tune_dir(spec) / task.name
    done = path / DONE_MARKER
    if resume and done.exists():
        log.info("task %s: already finished, skipping", task.name)
        return json.loads(done.read_text())
    status_callback = TrialStatusCallback(str(spec.experiment_dir), task.name)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, task_name=task.name,
                             base=task.base,
                             experiment_dir=str(spec.experiment_dir),
                             resources=_resources_dict(spec), hparam_keys=sorted(spec.search)),
        {"CPU": spec.resources.driver_cpus})
    t0 = time.time()
    if resume and tune.Tuner.can_restore(str(path)):
        log.info("task %s: restoring interrupted search from %s", task.name, path)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=_param_space(spec),
                           tune_config=_tune_config(spec, task),
                           run_config=tune.RunConfig(
                               name=task.name, storage_path=str(tune_dir(spec)),
                               failure_config=tune.FailureConfig(max_failures=0),
                               callbacks=[status_callback], verbose=1))
    grid = tuner.fit()
    outcome = _task_outcome(spec, task, grid, time.time() - t0)
    done.write_text(json.dumps(outcome, indent=2))
    return outcome


def _param_space(spec: SearchSpec) -> dict:
    return {name: dist.to_tune() for name, dist in spec.search.items()}


def _tune_config(spec: SearchSpec, task: Task):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    storage = optuna.storages.RDBStorage(spec.study_storage)
    search = DivergenceAwareOptunaSearch(
        metric=METRIC, mode="max", seed=spec.seed, storage=storage,
        study_name=f"{spec.name}.{task.name}",
        points_to_evaluate=[dict(task.first_trial)] if spec.search else None)
    max_t = spec.max_epochs(task)
    if spec.scheduler == "asha" and max_t > spec.grace_period:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t,
                                  grace_period=spec.grace_period,
                                  reduction_factor=spec.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(metric=METRIC, mode="max", search_alg=search, scheduler=scheduler,
                           num_samples=spec.trials_per_task,
                           max_concurrent_trials=spec.max_concurrent_trials,
                           trial_name_creator=lambda t: f"{task.name}_{t.trial_id}",
                           trial_dirname_creator=lambda t: f"{task.name}_{t.trial_id}")


def _resources_dict(spec: SearchSpec) -> dict[str, Any]:
    r = spec.resources
    return {"num_workers": r.num_workers, "use_gpu": r.use_gpu,
            "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": r.gpus_per_worker,
            "max_failures": r.max_failures}


def _trial_id(task: Task, result) -> Optional[str]:
    m = result.metrics or {}
    if m.get("trial_id"):
        return m["trial_id"]
    name = Path(result.path).name if result.path else ""
    prefix = f"{task.name}_"
    return name[len(prefix):] if name.startswith(prefix) else None


def _task_outcome(spec: SearchSpec, task: Task, grid, seconds: float) -> dict:
    trials = []
    for result in grid:
        m = result.metrics or {}
        trial_id = _trial_id(task, result)
        out = spec.experiment_dir / "trials" / task.name / str(trial_id)
        if trial_id is not None:
            _settle_status(out, error=result.error, last_epoch=m.get("epoch"))
            # a trial the scheduler stopped had no driver left to do it
            prune_stale_checkpoints(spec.experiment_dir / "ray_train" / f"{task.name}-{trial_id}")
        status = (read_metrics(out) or {}).get("status") if trial_id is not None else None
        if result.error and status not in ("failed", "diverged"):
            status = "failed"
        diverged = bool(m.get("diverged")) or status == "diverged"
        trials.append({"trial_id": trial_id, "epochs": m.get("epoch"), "status": status,
                       "best_score": m.get(METRIC), "selected_test_mAP":
                           m.get("selected_test_mAP"), "diverged": diverged,
                       "error": str(result.error) if result.error else None})
    ok = [t for t in trials if t["best_score"] is not None and not t["diverged"]]
    best = max(ok, key=lambda t: t["best_score"]) if ok else None
    count = {s: sum(1 for t in trials if t["status"] == s)
             for s in ("finished", "stopped_by_scheduler", "failed", "diverged")}
    return {"task": task.name, "prob": task.base.prob, "trials": len(trials), **count,
            "errored": sum(1 for t in trials if t["error"]), "best": best,
            "trial_list": trials, "wall_seconds": seconds}


def _settle_status(out: Path, error: Optional[BaseException], last_epoch=None) -> None:
    """Give a trial that ended without the engine saying how its final status: an error is
    ``failed``; a trial that ended early without one was stopped by the scheduler."""
    if error is not None:
        mark_trial_status(out, "failed", _first_line(error),
                          overwrite=("running", "stopped", "interrupted", None),
                          epoch=last_epoch)
    else:
        mark_trial_status(out, "stopped_by_scheduler",
                          "stopped early by the scheduler (ASHA)"
                          + (f" after epoch {last_epoch}" if last_epoch else ""),
                          overwrite=("running", "stopped", "interrupted"), epoch=last_epoch)


class TrialStatusCallback(Callback):
    """Marks a trial's ``metrics.json`` as soon as Tune ends it (the search settles every
    trial again when the task ends, in case a stopped trial's worker wrote once more)."""

    def __init__(self, experiment_dir: str, task: str) -> None:
        self.experiment_dir = experiment_dir
        self.task = task

    def _out(self, trial) -> Path:
        return Path(self.experiment_dir) / "trials" / self.task / trial.trial_id

    def on_trial_complete(self, iteration, trials, trial, **info):
        _settle_status(self._out(trial), None, (trial.last_result or {}).get("epoch"))

    def on_trial_error(self, iteration, trials, trial, **info):
        mark_trial_status(self._out(trial), "failed",
                          f"the trial errored (Ray Tune); see {trial.local_path}/error.txt"
                          if getattr(trial, "local_path", None) else "the trial errored",
                          overwrite=("running", "stopped", "interrupted", None),
                          epoch=(trial.last_result or {}).get("epoch"))


class DivergenceAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records why a trial diverged (a user attribute of the Optuna trial,
    set while the trial is still running) before it is told the trial's (worst) value."""

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None,
                          error: bool = False):
        ot_trial = getattr(self, "_ot_trials", {}).get(trial_id)
        if result and result.get("diverged") and ot_trial is not None \
                and trial_id not in getattr(self, "_completed_trials", set()):
            try:
                ot_trial.set_user_attr("diverged", True)
                ot_trial.set_user_attr("diverged_reason", str(result.get("diverged_reason")))
            except Exception as err:  # never lose the result over a note
                log.warning("could not record the divergence in the Optuna study: %s", err)
            if result.get(METRIC) is None:
                result = {**result, METRIC: WORST_SCORE}
        return super().on_trial_complete(trial_id, result=result, error=error)
