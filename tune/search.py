"""Run a validated search: one Ray Tune experiment per task, OptunaSearch + ASHA, resumable.

Layout of an experiment directory (``storage_path/name``)::

    search_space.yaml         the resolved space this experiment runs (checked on --resume)
    optuna.sqlite3            the Optuna studies (one per task), unless study_storage is set
    tune/<task>/              Ray Tune's experiment state (Tuner.restore reads it)
    ray_train/                Ray Train runs of the trials (their checkpoints)
    trials/<task>/<trial>/    each trial's engine output: config.yaml, metrics.json, best.pt
    tensorboard/<task>/<trial>/   one TensorBoard run per trial (scalars + HParams)
    exports/                  best config per task (YAML + command) and all_trials.csv
    summary.json              best result per task, wall time

A task whose Tuner finished is marked by ``tune/<task>/.pu_mlc_done``; ``--resume`` skips those,
restores interrupted ones (trials resume from their last checkpoint, finished trials are not
re-run) and starts the rest.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from pu_mlc.errors import ConfigError

from .space import SearchSpec, Task
from .trial import run_trial

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


def run_search(spec: SearchSpec, resume: bool = False) -> dict:
    """Run (or resume) every task of the experiment; return the per-task summary."""
    import ray

    check_experiment_dir(spec, resume)
    spec.experiment_dir.mkdir(parents=True, exist_ok=True)
    (spec.experiment_dir / "search_space.yaml").write_text(
        yaml.safe_dump(_comparable(spec.raw), sort_keys=False))
    from .cluster import check_cluster_fits

    check_cluster_fits(spec, ray.cluster_resources())
    started = time.time()
    results = {}
    for task in spec.tasks:
        results[task.name] = run_task(spec, task, resume)
    summary = {"experiment": str(spec.experiment_dir), "wall_seconds": time.time() - started,
               "tasks": results}
    (spec.experiment_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_task(spec: SearchSpec, task: Task, resume: bool) -> dict:
    from ray import tune

    path = tune_dir(spec) / task.name
    done = path / DONE_MARKER
    if resume and done.exists():
        log.info("task %s: already finished, skipping", task.name)
        return json.loads(done.read_text())
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
                               verbose=1))
    grid = tuner.fit()
    outcome = _task_outcome(task, grid, time.time() - t0)
    done.write_text(json.dumps(outcome, indent=2))
    return outcome


def _param_space(spec: SearchSpec) -> dict:
    return {name: dist.to_tune() for name, dist in spec.search.items()}


def _tune_config(spec: SearchSpec, task: Task):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(spec.study_storage)
    search = OptunaSearch(metric=METRIC, mode="max", seed=spec.seed, storage=storage,
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


def _task_outcome(task: Task, grid, seconds: float) -> dict:
    trials = []
    for result in grid:
        m = result.metrics or {}
        trials.append({"trial_id": m.get("trial_id"), "epochs": m.get("epoch"),
                       "best_score": m.get(METRIC), "selected_test_mAP":
                           m.get("selected_test_mAP"),
                       "error": str(result.error) if result.error else None})
    ok = [t for t in trials if t["best_score"] is not None]
    best = max(ok, key=lambda t: t["best_score"]) if ok else None
    return {"task": task.name, "prob": task.base.prob, "trials": len(trials),
            "errored": sum(1 for t in trials if t["error"]), "best": best,
            "wall_seconds": seconds}
