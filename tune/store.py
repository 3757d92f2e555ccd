"""The experiment store: every file of a search, named, written and read in one place.

An *experiment* is the folder ``storage_path/name`` that one search space fills. This module
owns its layout (:class:`ExperimentStore`), the one record of a trial (:class:`TrialRecord`,
with one status vocabulary), the one rule that selects a study's trial (:func:`select`) and
what is kept on disk once a trial has ended. The study drivers, ``export``, ``report``,
``compare`` and the search's summary all read trials through it, so they cannot disagree.

It imports neither Ray nor torch: reading an experiment (``pu-mlc export``/``report`` on a
laptop, a test) needs neither, and the search's Ray processes stay light.

Layout of an experiment folder::

    search_space.yaml          the resolved space (checked on --resume)
    optuna.sqlite3             the Optuna studies of a one-machine search (optuna.journal, Optuna's
                               journal file, on a cluster), unless study_storage names a database
    legs.json                  wall time of every run of the search (the first, each --resume)
    summary.json               the search's summary (per task, per study, totals, disk)
    tune/<study>/              Ray Tune's state of a study's search stage (Tuner.restore)
    tune_repeats/<study>/      ... and of its repeats stage; both hold ``.pu_mlc_done`` once
                               the stage finished
    ray_train/<study>-<trial>/ Ray Train's run of a trial: its checkpoint (``last.pt``, the
                               resume state), kept only while the trial can still resume
    trials/<study>/<trial>/    the trial: trial.json (what the search knows: stage, repeat,
                               sampled params, seeds, where it ran, how long), config.yaml,
                               metrics.json, train.log (the engine's), workers/ (where each
                               DDP rank ran), checkpoints/best.pt (the selected weights; kept
                               for the top trials of each study only)
    tensorboard/               one run per trial (<study>/<trial>) and the experiment's
                               HParams definition (every searched field of every study)
    usage/<study>.<stage>.jsonl   the cluster's load at every trial start and end
    exports/, report/          written by ``pu-mlc export`` / ``pu-mlc report``

A trial's status is one of :data:`STATUSES`. The engine writes ``metrics.json`` with its own
view (``running``, ``finished``, ``diverged``, ``failed``, ``interrupted``, ``stopped``, and in a
search ``attempt_failed``: the attempt raised, which is not yet the trial's end, since the trial's
driver may retry it, continue it after a lost node, or be killed with its search); the search
adds what only it knows (``stopped_by_scheduler``, a failure after the retries) with
:meth:`ExperimentStore.settle_trial`; :func:`trial_status` maps both to the one vocabulary.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .storage import AnyPath, Storage, is_remote

log = logging.getLogger(__name__)

STAGES = ("search", "repeats")
DONE_MARKER = ".pu_mlc_done"
TRIAL_FILE = "trial.json"
#: ``study_storage: journal:///abs/path/file``: Optuna's journal file storage (JournalFileBackend),
#: made for a file system several machines share, where SQLite's locks are unreliable.
JOURNAL_SCHEME = "journal"
#: Ray Train's checkpoint folders of a trial: ``checkpoint_epoch_NNNN`` (``tune.trial``).
CHECKPOINT_PREFIX = "checkpoint_epoch_"
#: The parameter of a repeat trial: its number r (1..R) sets ``seed`` = the study's seed + r and
#: ``mask_seed`` = r, the same for every method, so repeats pair up across methods.
REPEAT_KEY = "repeat"

# ------------------------------------------------------------------------- the one vocabulary
FINISHED = "finished"                    # trained every epoch
STOPPED = "stopped_by_scheduler"         # ended early by ASHA (a scheduler decision)
DIVERGED = "diverged"                    # loss or gradients not finite, or the loss exploded
FAILED = "failed"                        # an error, after Ray Train's retries
UNFINISHED = "unfinished"                # started, not ended: running, or its search was killed
NOT_STARTED = "not_started"              # Tune knows it, no epoch record exists yet
STATUSES = (FINISHED, STOPPED, DIVERGED, FAILED, UNFINISHED, NOT_STARTED)
#: A trial with one of these statuses will not train again: its resume state can go.
ENDED = (FINISHED, STOPPED, DIVERGED, FAILED)
#: The engine's own words (``metrics.json``) that mean "not ended yet".
#: The engine's word, in a search, for an attempt that raised (``fit(failure_is_final=False)``).
ATTEMPT_FAILED = "attempt_failed"
_ENGINE_UNFINISHED = ("running", "interrupted", "stopped", ATTEMPT_FAILED)
#: The engine's words a search may replace with how the trial ended (None: no file or status).
SETTLEABLE = (*_ENGINE_UNFINISHED, None)


def trial_status(metrics: Optional[dict]) -> str:
    """The one-vocabulary status of a trial from its ``metrics.json`` (None: no file)."""
    if metrics is None:
        return NOT_STARTED
    status = metrics.get("status")
    if status in ENDED:
        return status
    return UNFINISHED if status in _ENGINE_UNFINISHED or status is None else FAILED


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------ the record
@dataclass
class TrialRecord:
    """One trial, as its files say (``trial.json`` + ``metrics.json`` + ``config.yaml``)."""

    study: str                               # "<task>.<method>", or the task without methods
    task: str
    method: str
    prob: Optional[float]
    trial_id: str
    stage: str                               # search | repeats | unknown
    repeat: Optional[int]
    params: dict[str, Any]                   # the values the sampler (or the repeat) set
    seed: Optional[int]
    mask_seed: Optional[int]
    status: str                              # one of STATUSES
    reason: Optional[str]                    # why it ended early (failed, diverged, stopped)
    epochs: int                              # epochs it trained (one history record each)
    selection_score: Optional[float]         # what selects epochs and trials (val or test mAP)
    selected_weights: Optional[str]          # regular | ema: the weights that score belongs to
    selected_epoch: Optional[int]
    test_map: Optional[float]                # test mAP of the selected epoch and weights
    wall_seconds: Optional[float]            # the trial's time in Ray Tune (resumes included)
    train_seconds: float
    eval_seconds: float
    started: Optional[float]                 # when its driver first started (epoch seconds)
    nodes: dict[str, Any]                    # where its driver (and workers) ran
    path: Path                               # trials/<study>/<trial>
    config: dict[str, Any] = field(default_factory=dict)     # config.yaml (every field)
    history: list[dict] = field(default_factory=list)       # one record per epoch
    per_class_ap: dict[str, float] = field(default_factory=dict)
    classes_without_positives: list[str] = field(default_factory=list)
    has_weights: bool = False                # best.pt is on disk
    result: dict[str, Any] = field(default_factory=dict)    # metrics.json's result block
    busy_seconds: float = 0.0                # its workers computing: setup, epochs, checkpoints

    @property
    def worker_seconds(self) -> float:
        """How long the trial's DDP workers (its last attempt) held their resources: from the
        worker function's start to its end, Ray's queueing and start-up excluded."""
        rank0 = next((w for w in self.nodes.get("workers", []) if w.get("rank") == 0), {})
        started, ended = _number(rank0.get("started")), _number(rank0.get("ended"))
        return max(0.0, ended - started) if started is not None and ended is not None else 0.0

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED

    @property
    def has_results(self) -> bool:
        return self.status != NOT_STARTED

    @property
    def weights_file(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    def train_config(self):
        """The trial's ``TrainConfig`` (from its ``config.yaml``), None before it was written."""
        from pu_mlc.config import TrainConfig

        if not self.config:
            return None
        return TrainConfig.from_dict(self.config, source=str(self.path / "config.yaml"))

    def summary(self) -> dict[str, Any]:
        """The record as plain data (``summary.json``, ``results.json``)."""
        return {"trial_id": self.trial_id, "study": self.study, "stage": self.stage,
                "repeat": self.repeat, "status": self.status, "reason": self.reason,
                "epochs": self.epochs, "selection_score": self.selection_score,
                "selected_weights": self.selected_weights,
                "selected_epoch": self.selected_epoch, "test_mAP": self.test_map,
                "params": dict(self.params), "seed": self.seed, "mask_seed": self.mask_seed,
                "wall_seconds": self.wall_seconds, "nodes": self.nodes}


def select(trials: Iterable[TrialRecord]) -> Optional[TrialRecord]:
    """The selected trial of a study: the search trial with the best selection score.

    Only search-stage trials compete (repeats re-run the selection); a diverged trial never
    wins (its score is the worst there is); a trial that failed after some epochs keeps the
    score of the epochs it finished. A tie goes to the trial that started first, then to the
    smaller trial id, so every reader picks the same one.
    """
    ok = [t for t in trials
          if t.stage == "search" and t.selection_score is not None and not t.diverged]
    if not ok:
        return None
    return min(ok, key=lambda t: (-t.selection_score,
                                  t.started if t.started is not None else math.inf,
                                  t.trial_id))


def ranked(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Search trials that can be selected, best first (the order of :func:`select`)."""
    ok = [t for t in trials
          if t.stage == "search" and t.selection_score is not None and not t.diverged]
    return sorted(ok, key=lambda t: (-t.selection_score,
                                     t.started if t.started is not None else math.inf,
                                     t.trial_id))


@dataclass
class StudyRecords:
    """The trials of one study (task x method) and how far its stages got."""

    name: str
    trials: list[TrialRecord]
    search_done: bool
    repeats_done: bool

    def stage(self, stage: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.stage == stage]

    @property
    def selected(self) -> Optional[TrialRecord]:
        return select(self.trials)

    def finished_repeats(self) -> dict[int, TrialRecord]:
        """Repeat trials that trained to the end, by repeat number."""
        return {t.repeat: t for t in self.stage("repeats")
                if t.status == FINISHED and t.repeat is not None and t.test_map is not None}

    def state(self, repeats: int) -> str:
        """finished, or what is missing, in words."""
        search = self.stage("search")
        if not self.search_done:
            if not search:
                return "not started"
            scored = sum(t.has_results for t in search)
            return (f"search not finished ({scored} of {len(search)} started trial(s) with "
                    f"results)")
        if repeats and not self.repeats_done:
            return (f"repeats not finished ({len(self.finished_repeats())} of {repeats} "
                    f"finished)")
        return "finished"

    def counts(self) -> dict[str, dict[str, int]]:
        """Trials per stage and status."""
        out: dict[str, dict[str, int]] = {}
        for t in self.trials:
            out.setdefault(t.stage, {}).setdefault(t.status, 0)
            out[t.stage][t.status] += 1
        return out


# ------------------------------------------------------------------------------- the store
class ExperimentStore:
    """Names, writes and reads the files of one experiment folder (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        #: a local folder, or an object-store location (tune.storage): every read and write
        #: below goes through it, so the same code serves NFS and s3://
        self.storage = Storage(root)
        self.root: AnyPath = self.storage.root

    def __repr__(self) -> str:
        return f"ExperimentStore({self.uri(self.root)!r})"

    @property
    def remote(self) -> bool:
        """True when the experiment lives in an object store (no shared folder)."""
        return self.storage.remote

    def uri(self, path: AnyPath) -> str:
        """``path`` as Ray and users name it (a folder, or ``s3://...?options``)."""
        return self.storage.uri(path)

    # --- layout ------------------------------------------------------------------------------
    @property
    def search_space_file(self) -> Path:
        return self.root / "search_space.yaml"

    @property
    def optuna_file(self) -> Path:
        return self.root / "optuna.sqlite3"

    @property
    def journal_file(self) -> Path:
        """Optuna's journal (the study database of a search on a cluster, by default)."""
        return self.root / "optuna.journal"

    @property
    def legs_file(self) -> Path:
        return self.root / "legs.json"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    @property
    def ray_train_dir(self) -> Path:
        """Ray Train's ``storage_path`` for every trial's run."""
        return self.root / "ray_train"

    @property
    def usage_dir(self) -> Path:
        return self.root / "usage"

    def stage_dir(self, stage: str, study: str) -> Path:
        """Ray Tune's experiment folder of a study's stage (``Tuner.restore`` reads it)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        return self.root / ("tune" if stage == "search" else "tune_repeats") / study

    def done_marker(self, stage: str, study: str) -> Path:
        return self.stage_dir(stage, study) / DONE_MARKER

    @staticmethod
    def train_run_name(study: str, trial_id: str) -> str:
        """The Ray Train run of a trial: stable across restores, so a restored trial finds its
        checkpoint (never a timestamp in it)."""
        return f"{study}-{trial_id}"

    def train_run_dir(self, study: str, trial_id: str) -> Path:
        return self.ray_train_dir / self.train_run_name(study, trial_id)

    def trials_dir(self, study: str) -> Path:
        return self.root / "trials" / study

    def trial_dir(self, study: str, trial_id: str) -> Path:
        return self.trials_dir(study) / trial_id

    def tensorboard_run(self, study: str, trial_id: str) -> Path:
        return self.tensorboard_dir / study / trial_id

    def usage_log(self, study: str, stage: str) -> Path:
        return self.usage_dir / f"{study}.{stage}.jsonl"

    # --- plain files -------------------------------------------------------------------------
    def read_json(self, path: AnyPath) -> Optional[Any]:
        """A JSON file's content; None when it is missing or unreadable (a reader never fails
        on a file a killed process left half-written: every writer here is atomic anyway)."""
        try:
            data = self.storage.read_bytes(path)
            return None if data is None else json.loads(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None

    def read_text(self, path: AnyPath) -> Optional[str]:
        data = self.storage.read_bytes(path)
        return None if data is None else data.decode(errors="replace")

    def write_json(self, path: AnyPath, payload: Any) -> None:
        self.storage.write_bytes(path, json.dumps(payload, indent=2).encode())

    def write_text(self, path: AnyPath, text: str) -> None:
        self.storage.write_bytes(path, text.encode())

    def append_jsonl(self, path: AnyPath, line: dict) -> None:
        self.storage.append_line(path, json.dumps(line))

    def exists(self, path: AnyPath) -> bool:
        return self.storage.exists(path)

    def upload(self, local_dir: Path, dest: AnyPath) -> int:
        """Copy a local folder's files into the experiment (a trial's staged records, a report
        written locally); nothing there is deleted."""
        return self.storage.upload(local_dir, dest)

    def download(self, src: AnyPath, local_dir: Path) -> int:
        """Copy a folder of the experiment to a local folder (TensorBoard runs, weights)."""
        return self.storage.download(src, local_dir)

    # --- stages ------------------------------------------------------------------------------
    def stage_done(self, stage: str, study: str) -> bool:
        return self.exists(self.done_marker(stage, study))

    def stage_record(self, stage: str, study: str) -> Optional[dict]:
        """What the finished stage recorded in its done marker (None: not finished)."""
        return self.read_json(self.done_marker(stage, study))

    def mark_stage_done(self, stage: str, study: str, record: dict) -> None:
        self.write_json(self.done_marker(stage, study), record)

    # --- trials: writing ---------------------------------------------------------------------
    def begin_trial(self, study: str, trial_id: str, *, task: str, method: str, prob: float,
                    stage: str, repeat: Optional[int], params: dict[str, Any], seed: int,
                    mask_seed: int, node: dict[str, Any]) -> None:
        """Write ``trial.json`` when a trial's driver starts (again, after a restore: the first
        start is kept, every start is listed with the node it ran on)."""
        path = self.trial_dir(study, trial_id) / TRIAL_FILE
        earlier = self.read_json(path) or {}
        runs = list(earlier.get("runs") or [])
        runs.append({"started": time.time(), **node})
        self.write_json(path, {
            **earlier, "study": study, "task": task, "method": method, "prob": prob,
            "trial_id": trial_id, "stage": stage, "repeat": repeat, "params": dict(params),
            "seed": seed, "mask_seed": mask_seed,
            "started": earlier.get("started", runs[0]["started"]), "runs": runs})

    def note_trial(self, study: str, trial_id: str, **values: Any) -> None:
        """Add ``values`` to a trial's ``trial.json`` (e.g. its wall time once it ended)."""
        path = self.trial_dir(study, trial_id) / TRIAL_FILE
        current = self.read_json(path)
        if current is None and not self.exists(path.parent):
            return                      # never started: nothing to note on
        self.write_json(path, {**(current or {}), **values})

    def note_worker(self, study: str, trial_id: str, *, rank: int, **fields: Any) -> None:
        """Record where a trial's DDP worker of ``rank`` runs, when it started and ended (each
        rank its own small file, so workers on different hosts never write the same file; the
        last attempt's record stays)."""
        self.write_json(self.trial_dir(study, trial_id) / "workers" / f"rank{rank}.json",
                        {"rank": rank, **fields})

    def settle_trial(self, study: str, trial_id: str, status: str, reason: Optional[str], *,
                     epoch: Optional[int] = None,
                     overwrite: Sequence[Optional[str]] = ("running", None)) -> bool:
        """Record how a trial ended in its ``metrics.json`` when the engine could not (a
        scheduler stop, an error Ray reported): only when the current status is one of
        ``overwrite`` (None: no file or no status yet), so a status the engine wrote itself
        (finished, failed, diverged) is kept. Returns whether the file changed. The engine's
        own account of an ``attempt_failed`` (its exception, epoch and step) is kept as the
        reason: it is more exact than Ray's wrapper of the same error."""
        path = self.trial_dir(study, trial_id) / "metrics.json"
        metrics = self.read_json(path)
        current = (metrics or {}).get("status")
        if current not in overwrite:
            return False
        payload = dict(metrics or {"history": []})
        payload["status"] = status
        engine_failure = payload.get("failure")
        if not (current == ATTEMPT_FAILED and isinstance(engine_failure, dict)
                and engine_failure.get("reason")):
            payload["failure"] = {"reason": reason, "epoch": epoch, "step": None}
        self.write_json(path, payload)
        return True

    # --- trials: reading ---------------------------------------------------------------------
    def trial_ids(self, study: str) -> list[str]:
        return [name for name, is_dir in self.storage.list_dir(self.trials_dir(study)) if is_dir]

    def read_trial(self, study: str, trial_id: str, *, task: Optional[str] = None,
                   method: Optional[str] = None) -> TrialRecord:
        folder = self.trial_dir(study, trial_id)
        meta = self.read_json(folder / TRIAL_FILE) or {}
        metrics = self.read_json(folder / "metrics.json")
        config = _yaml_mapping(self.storage.read_bytes(folder / "config.yaml"))
        history = list((metrics or {}).get("history") or [])
        result = (metrics or {}).get("result") or {}
        score = _number(result.get("selection_score"))
        if score is None and history:              # ended before the engine's final summary
            score = _number(history[-1].get("best_score"))
        test = _number(result.get("test_mAP"))
        if test is None and history:
            test = _number(history[-1].get("selected_test_mAP"))
        selected_epoch = result.get("selected_epoch")
        if selected_epoch is None and history:
            selected_epoch = history[-1].get("best_epoch") or None
        summary = result.get("test_summary") or {}
        failure = (metrics or {}).get("failure") or {}
        status = trial_status(metrics)
        task_name, _, method_name = study.partition(".")
        prob = meta.get("prob", config.get("prob"))
        return TrialRecord(
            study=study, task=meta.get("task") or task or task_name,
            method=meta.get("method") or method or method_name or _implicit_method(config),
            prob=float(prob) if prob is not None else None, trial_id=trial_id,
            stage=meta.get("stage") or "unknown",
            repeat=int(meta["repeat"]) if meta.get("repeat") is not None else None,
            params=dict(meta.get("params") or {}),
            seed=meta.get("seed", config.get("seed")),
            mask_seed=meta.get("mask_seed", config.get("mask_seed")),
            status=status,
            reason=failure.get("reason") if isinstance(failure, dict) and status != FINISHED
            else None,
            epochs=len(history), selection_score=score,
            selected_weights=result.get("selected_model") or None,
            selected_epoch=int(selected_epoch) if selected_epoch else None,
            test_map=test, wall_seconds=_number(meta.get("seconds")),
            train_seconds=sum(h.get("train_seconds", 0.0) for h in history),
            eval_seconds=sum(h.get("eval_seconds", 0.0) for h in history),
            started=_number(meta.get("started")),
            nodes={"runs": meta.get("runs") or [], "workers": self._workers(folder)},
            path=folder, config=config, history=history,
            per_class_ap={str(k): float(v) for k, v in (summary.get("per_class_ap") or {})
                          .items() if _number(v) is not None},
            classes_without_positives=list(summary.get("classes_without_positives") or []),
            has_weights=self.exists(folder / "checkpoints" / "best.pt"), result=dict(result),
            busy_seconds=_busy_seconds(metrics))

    def _workers(self, folder: Path) -> list[dict]:
        """The last recorded placement of each DDP rank of a trial."""
        found = [self.read_json(folder / "workers" / name)
                 for name, is_dir in self.storage.list_dir(folder / "workers")
                 if not is_dir and name.startswith("rank") and name.endswith(".json")]
        return sorted((w for w in found if isinstance(w, dict)), key=lambda w: w.get("rank", 0))

    def read_study(self, study: str, *, task: Optional[str] = None,
                   method: Optional[str] = None) -> StudyRecords:
        trials = [self.read_trial(study, t, task=task, method=method)
                  for t in self.trial_ids(study)]
        return StudyRecords(study, trials, self.stage_done("search", study),
                            self.stage_done("repeats", study))

    # --- disk --------------------------------------------------------------------------------
    def release_checkpoints(self, study: str, trial_id: str) -> int:
        """Remove a trial's resume state (Ray Train's checkpoints of it) once the trial has
        ended: it will never be resumed. Returns the bytes freed."""
        run_dir = self.train_run_dir(study, trial_id)
        freed = 0
        for name, is_dir in self.storage.list_dir(run_dir):
            if is_dir and name.startswith(CHECKPOINT_PREFIX):
                freed += self.storage.size(run_dir / name)
                self.storage.delete(run_dir / name)
        return freed

    def release_ended_trials(self, study: str) -> int:
        """:meth:`release_checkpoints` of every ended trial of a study (a trial the scheduler
        stopped may have persisted one more checkpoint after the stop). Returns bytes freed."""
        freed = 0
        for trial_id in self.trial_ids(study):
            if trial_status(self.read_json(self.trial_dir(study, trial_id) / "metrics.json")) \
                    in ENDED:
                freed += self.release_checkpoints(study, trial_id)
        return freed

    def prune_weights(self, study: str, stage: str, keep_top: int,
                      keep_repeats: bool = False) -> list[str]:
        """Once a study's stage ended, keep the selected weights (``best.pt``) only where a user
        reads them again: the ``keep_top`` best search trials of the study (the selected one
        first), and repeat trials only with ``keep_repeats``. Records (metrics, configs,
        TensorBoard) always stay. Returns the trials whose weights were removed."""
        records = self.read_study(study)
        if stage == "search":
            keep = {t.trial_id for t in ranked(records.trials)[:max(keep_top, 1)]}
            candidates = [t for t in records.stage("search") if t.trial_id not in keep]
        else:
            candidates = [] if keep_repeats else records.stage("repeats")
        removed = []
        for t in candidates:
            if self.exists(t.weights_file):
                self.storage.delete(t.weights_file)
                removed.append(t.trial_id)
        return removed

    def size_on_disk(self) -> int:
        """Bytes the experiment takes in its storage (local: hard links counted once)."""
        return self.storage.size(self.root)

    def staging_dir(self, study: str, trial_id: str) -> Path:
        """Where a trial's engine writes its files on the node it runs on when the experiment
        lives in an object store (they are uploaded after every epoch): a local folder, the
        same path on every node, under the node's temp folder (``PU_MLC_STAGING_DIR``)."""
        import hashlib
        import tempfile

        base = Path(os.environ.get("PU_MLC_STAGING_DIR") or
                    Path(tempfile.gettempdir()) / "pu_mlc_staging")
        key = hashlib.sha1(self.uri(self.root).encode()).hexdigest()[:12]
        return base / key / study / trial_id


def dashboard_command(study_storage: str) -> str:
    """The optuna-dashboard command line for a search's ``study_storage``."""
    if study_storage.startswith(f"{JOURNAL_SCHEME}://"):
        return f"optuna-dashboard {study_storage[len(JOURNAL_SCHEME) + 3:]}"
    return f"optuna-dashboard {study_storage}"


def open_experiment(experiment_dir: str | Path):
    """``(store, spec)`` of an existing experiment (a folder, or an object-store URI): its store
    and the search spec parsed from its saved ``search_space.yaml`` (a
    ``tune.space.SearchSpec``). A location that is no experiment, or a damaged space file, is
    refused in one line naming the file."""
    from pu_mlc.config import MAX_YAML_BYTES, load_yaml_text
    from pu_mlc.errors import ConfigError

    from .space import parse_search_spec

    location = str(experiment_dir)
    store = ExperimentStore(location if is_remote(location) else Path(location).resolve())
    saved = store.search_space_file
    shown = store.uri(saved)
    try:
        data = store.storage.read_bytes(saved)
    except OSError as err:
        raise ConfigError(f"{shown} cannot be read ({' '.join(str(err).split())[:300]}); "
                          f"check the location and its credentials") from None
    if data is None:
        raise ConfigError(f"{store.uri(store.root)} is not a pu-mlc experiment (no "
                          f"search_space.yaml); pass the directory printed by 'pu-mlc search'")
    try:
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError(f"{len(data):,} bytes, over the {MAX_YAML_BYTES:,} a space may have")
        raw = load_yaml_text(data.decode(), f"{shown}")
        if not isinstance(raw, dict):
            raise ConfigError("not a mapping")
        spec = parse_search_spec(raw, source=shown,
                                 base_dir=Path.cwd() if store.remote else store.root)
    except (UnicodeDecodeError, ConfigError) as err:
        raise ConfigError(f"{shown} is damaged or no longer a valid search space "
                          f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); it is "
                          f"written by 'pu-mlc search': restore it, or read another "
                          f"experiment") from None
    return store, spec


def read_experiment(store: ExperimentStore, spec) -> dict[str, StudyRecords]:
    """Every study of ``spec`` (in its order) with its trials."""
    return {s.name: store.read_study(s.name, task=s.task, method=s.method)
            for s in spec.studies}


def disk_usage(path: Path) -> int:
    """Bytes under a local ``path`` as the disk holds them (each inode once: a hard link is no
    second copy)."""
    return Storage(path).size(path)


def _yaml_mapping(data: Optional[bytes]) -> dict[str, Any]:
    """A trial's ``config.yaml`` as a mapping ({} when missing or unreadable), read within the
    bounds of every YAML input."""
    from pu_mlc.config import MAX_YAML_BYTES, load_yaml_text
    from pu_mlc.errors import ConfigError

    if data is None or len(data) > MAX_YAML_BYTES:
        return {}
    try:
        value = load_yaml_text(data.decode(), "config.yaml")
    except (UnicodeDecodeError, ConfigError):
        return {}
    return value if isinstance(value, dict) else {}


def _busy_seconds(metrics: Optional[dict]) -> float:
    """Seconds a trial's workers computed (the engine's own timing): data and model set-up,
    then every epoch's training, evaluation and checkpoint."""
    if not metrics:
        return 0.0
    timing = metrics.get("timing") or {}
    setup = sum(_number(timing.get(k)) or 0.0 for k in ("setup_seconds", "build_seconds"))
    return setup + sum((_number(h.get("train_seconds")) or 0.0)
                       + (_number(h.get("eval_seconds")) or 0.0)
                       + (_number(h.get("checkpoint_seconds")) or 0.0)
                       for h in metrics.get("history") or [])


def _implicit_method(config: dict[str, Any]) -> str:
    loss = config.get("loss", "pu")
    return "pu_mlc" if loss == "pu" else str(loss)
