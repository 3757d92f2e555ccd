"""Run a validated search: every study (task x method) at once on one Ray cluster, resumable.

Each study drives its own Tuner (OptunaSearch + ASHA) from its own Ray task
(``ray.remote(num_cpus=0)``, :mod:`tune.study`); their trials queue for the same trial slots, so
no slot idles while any study has trials left. ``budget.concurrent_studies`` limits how many
studies run at once (1: one after another); ``warm_start: neighbours`` makes a study wait until
another study of its method has finished and start from its best configs. When a study's search
ends, its repeats (``budget.repeats``) start at once, as another Ray task.

The experiment's files (layout, trial records, what stays on disk) belong to
:mod:`tune.store`; this module writes ``search_space.yaml``, ``legs.json`` and ``summary.json``
through it.

A study is named after its task when the space has no ``methods``, else ``<task>.<method>``.

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

from pu_mlc.config import load_yaml_text
from pu_mlc.errors import ConfigError

from .space import SearchSpec, Study
from .storage import OBJECT_STORES
from .store import (JOURNAL_SCHEME, STATUSES, ExperimentStore, StudyRecords,
                    read_experiment)

log = logging.getLogger(__name__)

def check_experiment_dir(spec: SearchSpec, resume: bool) -> None:
    """A new search never writes into an earlier experiment; --resume needs the same space."""
    store = ExperimentStore(spec.experiment_dir)
    saved = store.search_space_file
    if resume:
        if not store.exists(saved):
            raise ConfigError(f"--resume: no experiment at {spec.experiment_dir} (no "
                              f"search_space.yaml); run without --resume to start it")
        earlier = load_yaml_text((store.read_text(saved) or ""), f"--resume: {saved}")
        if earlier != _comparable(spec.raw):
            raise ConfigError(f"--resume: {saved} differs from {spec.source}; resume with the "
                              f"same space (and --set overrides) or choose a new name")
        return
    if store.exists(saved):
        raise ConfigError(f"experiment {spec.experiment_dir} already exists; pass --resume to "
                          f"continue it, or change 'name' in {spec.source} (or --set name=...)")


def _comparable(raw: dict) -> dict:
    return json.loads(json.dumps(raw, default=str))


def resolve_storage(spec: SearchSpec, on_cluster: Optional[bool] = None) -> SearchSpec:
    """The spec with ``storage_path`` and its study database settled, before Ray starts: a
    ``file://`` URI is turned into its folder; an object-store URI (``s3://``, ``gs://`` ...,
    pyarrow's query options allowed) stays a URI: every file of the experiment is then written
    through :mod:`tune.storage`. The Optuna studies go, without ``study_storage``, to a SQLite
    file in the experiment on one machine and to Optuna's journal file there on a cluster
    (``on_cluster``, default: RAY_ADDRESS set), made for a shared file system where SQLite's
    locking is unreliable; an experiment that already has one keeps it. An object store holds
    no database: there ``study_storage`` must be given, which is said in one line."""
    from .cluster import joins_existing_cluster

    location = spec.storage_path
    if isinstance(location, str):
        parsed = urllib.parse.urlparse(location)
        scheme = parsed.scheme.lower()
        where = f"{spec.source}: storage_path = {location!r}"
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ConfigError(f"{where}: a file:// URI names a local path "
                                  f"(file:///abs/path); host {parsed.netloc!r} is not supported")
            location = Path(urllib.parse.unquote(parsed.path))
            if not location.is_absolute():
                raise ConfigError(f"{where}: the path of a file:// URI must be absolute")
        elif scheme not in OBJECT_STORES:
            raise ConfigError(f"{where}: unknown scheme {scheme!r}; give a folder every node "
                              f"mounts, a file:// URI, or an object store ("
                              f"{', '.join(s + '://' for s in OBJECT_STORES)})")
        elif not parsed.netloc:
            raise ConfigError(f"{where}: name the bucket, e.g. s3://my-bucket/experiments")
    study = spec.raw.get("study_storage")
    if not study and isinstance(location, str):
        raise ConfigError(
            f"{spec.source}: storage_path = {location!r} is an object store, where the Optuna "
            f"study database cannot live: set study_storage to a database server (--set "
            f"study_storage=postgresql+psycopg://USER:PASSWORD@HOST/DB) or a file on the "
            f"driver's node (--set study_storage=journal:///var/lib/pu-mlc/optuna.journal)")
    if not study:
        store = ExperimentStore(location / spec.name)
        cluster = joins_existing_cluster() if on_cluster is None else on_cluster
        if store.optuna_file.exists() or (not store.journal_file.exists() and not cluster):
            study = f"sqlite:///{store.optuna_file}"
        else:
            study = f"{JOURNAL_SCHEME}://{store.journal_file}"
    return dataclasses.replace(spec, storage_path=location, study_storage=study)


def run_search(spec: SearchSpec, resume: bool = False) -> dict:
    """Run (or resume) every study of the experiment; return the summary."""
    import ray

    from .cluster import TRIAL_SLOT, check_cluster_fits

    from .cluster import check_shared_storage, this_node
    from .hparams import write_hparams_experiment
    from .study import open_study_storage

    spec = resolve_storage(spec)
    store = ExperimentStore(spec.experiment_dir)
    available = ray.cluster_resources()
    slots = check_cluster_fits(spec, available)         # before anything is written
    check_experiment_dir(spec, resume)
    nodes = check_shared_storage(spec.storage_path, spec.source, store.storage)
    store.storage.make_dir(store.root)
    store.write_text(store.search_space_file,
                     yaml.safe_dump(_comparable(spec.raw), sort_keys=False))
    write_hparams_experiment(store, spec)       # TensorBoard's HParams columns, every study's
    open_study_storage(spec.study_storage)      # creates the schema once, before the studies
    driver = this_node()
    clock = LegClock(store, resumed=resume,
                     cluster={"driver": driver, "nodes": nodes})
    try:
        runner = StudyRunner(spec, resume, slots, use_slot_resource=TRIAL_SLOT in available,
                             driver_node=driver)
        runner.run()
    finally:
        legs = clock.stop()
    summary = build_summary(spec, read_experiment(store, spec), legs, slots,
                            size_bytes=store.size_on_disk(), stages=runner.records,
                            slot_resource=TRIAL_SLOT in available)
    store.write_json(store.summary_file, summary)
    return summary


class StudyRunner:
    """Starts each study's search as a Ray task (as many at once as ``concurrent_studies``
    allows, and as warm start permits), then its repeats when its search ends; waits on them
    with ``ray.wait``. Which trial runs next is Ray's business (trial slots), not this class's."""

    def __init__(self, spec: SearchSpec, resume: bool, slots: int,
                 use_slot_resource: bool, driver_node: Optional[dict] = None) -> None:
        self.spec = spec
        self.resume = resume
        self.slots = slots
        self.use_slot_resource = use_slot_resource
        #: the search driver's node: every study driver (and every trial driver) runs there
        self.driver_node = driver_node
        self.store = ExperimentStore(spec.experiment_dir)
        #: every finished stage's record (its done marker), by (study, stage)
        self.records: dict[tuple[str, str], dict] = {}
        #: per study whose search finished: its selected trial's params (None: none selectable)
        self.selected: dict[str, Optional[dict]] = {}

    def run(self) -> dict[str, dict]:
        import ray

        from .study import drive_repeats, drive_search

        from .cluster import pinned_to

        pin = ({"scheduling_strategy": pinned_to(self.driver_node["node_id"])}
               if self.driver_node else {})
        search_task = ray.remote(num_cpus=0, max_retries=0)(drive_search)
        repeats_task = ray.remote(num_cpus=0, max_retries=0)(drive_repeats)
        pending = list(self.spec.studies)
        running: dict[Any, tuple[Study, str]] = {}
        limit = self.spec.concurrent_studies or len(pending)
        while pending or running:
            active = {study.name for study, _ in running.values()}
            for study in list(pending):
                if len(active) >= limit:
                    break
                if not self._may_start(study):
                    continue
                points = self._warm_points(study)
                if points:
                    log.info("study %s: warm start from %d config(s) of its nearest finished "
                             "label proportion(s)", study.name, len(points))
                ref = search_task.options(name=f"study:{study.name}", **pin).remote(
                    self.spec, study, self.resume, points, self.slots,
                    self.use_slot_resource, self.driver_node)
                running[ref] = (study, "search")
                active.add(study.name)
                pending.remove(study)
            if not running:           # cannot happen: the first study of a method may start
                raise RuntimeError(f"no study can start: {[s.name for s in pending]}")
            ready, _ = ray.wait(list(running), num_returns=1)
            study, stage = running.pop(ready[0])
            record = ray.get(ready[0])
            self.records[(study.name, stage)] = record
            if stage == "search":
                log.info("study %s: search finished (%d trials)", study.name,
                         record.get("trials", 0))
                best = self.store.read_study(study.name).selected
                self.selected[study.name] = dict(best.params) if best is not None else None
                if self.spec.repeats and best is not None:
                    ref = repeats_task.options(name=f"repeats:{study.name}", **pin).remote(
                        self.spec, study, best.params, self.resume, self.slots,
                        self.use_slot_resource, self.driver_node)
                    running[ref] = (study, "repeats")
                elif self.spec.repeats:
                    log.warning("study %s: no trial finished, so no repeats", study.name)
        return self.selected

    def _same_method(self, study: Study) -> list[Study]:
        """The other studies of any method this study's results belong to (a study that
        stands for two methods at full labels is a neighbour of both)."""
        mine = set(study.methods)
        return [s for s in self.spec.studies if s is not study and mine & set(s.methods)]

    def _finished(self, study: Study) -> bool:
        return study.name in self.selected

    def _may_start(self, study: Study) -> bool:
        """With warm start, the first study of a method starts at once; the others wait until
        one of the same method has finished its search."""
        if self.spec.warm_start != "neighbours":
            return True
        peers = self._same_method(study)
        first = next(s for s in self.spec.studies if set(s.methods) & set(study.methods))
        return study is first or not peers or any(self._finished(s) for s in peers)

    def _warm_points(self, study: Study) -> list[dict]:
        """The best config of each finished same-method study at the nearest label
        proportion (both sides on a tie), restricted to this study's searched fields."""
        if self.spec.warm_start != "neighbours":
            return []
        done = [s for s in self._same_method(study) if self._finished(s)]
        if not done:
            return []
        nearest = min(abs(s.prob - study.prob) for s in done)
        points = []
        for s in done:
            if abs(s.prob - study.prob) > nearest + 1e-9:       # ties: 0.3 - 0.1 vs 0.5 - 0.3
                continue
            best = self.selected.get(s.name)
            if not best:
                continue
            point = {k: v for k, v in best.items()
                     if k in study.search and study.search[k].contains(v)}
            if point and point not in points:
                points.append(point)
        return points


def build_summary(spec: SearchSpec, studies: dict[str, StudyRecords], legs: list[dict],
                  slots: int, size_bytes: Optional[int] = None,
                  stages: Optional[dict[tuple[str, str], dict]] = None,
                  slot_resource: bool = True) -> dict:
    """``summary.json``: per task each method's result and the paired differences; per study
    its trials (the store's records) and counts; totals, wall time over all legs, how busy the
    trial slots were, and the experiment's size on disk."""
    from .compare import compare_methods, reference_method

    out_studies = {}
    for study in spec.studies:
        records = studies.get(study.name)
        trials = records.trials if records else []
        best = records.selected if records else None
        out_studies[study.name] = {
            "task": study.task, "method": study.method, "prob": study.prob,
            "search_done": bool(records and records.search_done),
            "repeats_done": bool(records and records.repeats_done),
            "selected_trial": best.trial_id if best else None,
            "counts": records.counts() if records else {},
            "trials": [t.summary() for t in trials]}
    every = [t for r in studies.values() for t in r.trials]
    totals = {"trials": len(every), **{s: sum(t.status == s for t in every) for s in STATUSES}}
    # trials Ray Tune ran that left no record where the driver reads (a node that did not share
    # storage_path): their numbers cannot be backed by files, the search says so and fails
    ran = {key: (record or {}).get("tune_trials") for key, record in (stages or {}).items()}
    totals["missing_records"] = sum(
        max(0, n - len((studies.get(study) or StudyRecords(study, [], False, False))
                       .stage(stage)))
        for (study, stage), n in ran.items() if n is not None)
    busy = sum(t.busy_seconds for t in every)
    held = sum(t.worker_seconds for t in every)
    wall = sum(leg["seconds"] for leg in legs)
    trial_seconds = sum(t.wall_seconds or 0.0 for t in every)
    return {"experiment": str(spec.experiment_dir),
            "wall_seconds": wall, "legs": legs, "trials": totals,
            "slots": slots, "trial_seconds": trial_seconds,
            # meaningful for a search run in one leg (a resumed leg re-reads finished trials)
            # trials' time in Ray Tune over the slots' time: with trial-slot resources (a
            # one-machine search) a trial holds its slot from its start to its end
            "slot_utilisation": (trial_seconds / (slots * wall)) if slots and wall else None,
            "slot_resource": slot_resource,
            # the share of the slots' time the trials' DDP workers held their resources (their
            # worker function running), Ray's queueing and start-up excluded: on a cluster
            # without trial-slot resources a trial waits for its workers inside Tune's time
            "worker_seconds": held,
            "worker_utilisation": (held / (slots * wall)) if slots and wall else None,
            # ... and the part of it they computed (data and model set-up, epochs, checkpoints)
            "busy_seconds": busy,
            "busy_utilisation": (busy / (slots * wall)) if slots and wall else None,
            "size_on_disk_bytes": size_bytes,
            "reference_method": reference_method(spec), "repeats": spec.repeats,
            "tasks": compare_methods(spec, studies), "studies": out_studies}


class LegClock:
    """Wall time of this run of the search (a *leg*), kept in ``legs.json`` next to the
    earlier legs: updated every few seconds, so a leg that is killed still counts (up to the
    last update) when ``--resume`` adds the next one."""

    def __init__(self, store: ExperimentStore, resumed: bool, every_s: float = 5.0,
                 cluster: Optional[dict] = None) -> None:
        self.store = store
        self.path = store.legs_file
        self.t0 = time.monotonic()
        earlier = store.read_json(self.path) if resumed else None
        self.legs = earlier if isinstance(earlier, list) else []
        self.legs.append({"started": datetime.datetime.now().isoformat(timespec="seconds"),
                          "resumed": resumed, "seconds": 0.0, "completed": False,
                          **({"cluster": cluster} if cluster else {})})
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
        try:
            self.store.write_json(self.path, self.legs)
        except OSError as err:                 # a storage hiccup never stops the search
            log.warning("legs.json not updated: %s", err)

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        self._write(completed=True)
        return list(self.legs)


