"""One trial of a search: a Tune trainable (the driver) that runs a Ray Train DDP job.

``run_trial`` is what Tune calls with the sampled parameters. It applies them to the study's
``TrainConfig`` in one step (:func:`trial_config`), records the trial in the experiment store
(``trial.json``: stage, repeat, params, seeds, the node it runs on) and starts a
``TorchTrainer`` whose workers run ``train_worker``: the ``pu_mlc`` engine, unchanged, as DDP
(gloo on CPU, NCCL on GPU). Metrics flow back worker -> Ray Train -> ``TuneReportCallback`` ->
Tune (ASHA, Optuna). The Train run's name is derived from the Tune trial id only, so a restored
search finds the trial's checkpoint and continues it mid-run; a DDP worker that dies (up to
``resources.max_failures`` times) makes the driver start the Train run again, and it continues
from that checkpoint; a trial whose node left the cluster (a machine lost) continues on another
node the same way without spending those retries (:func:`lost_nodes`).

The resume state (``last.pt``: model, EMA, optimizer, schedule) is Ray Train's checkpoint and
nothing else: rank 0 writes it into a local scratch folder each epoch and reports it with
``ray.train.report``, and Ray persists it to ``ray_train/<study>-<trial>/checkpoint_epoch_N``
itself (its copy, its check that every node sees the storage), then deletes the local copy. The
trial's folder holds what users read (``best.pt``, ``metrics.json``, ``config.yaml``). Once the
trial has ended, the checkpoint is released (:meth:`tune.store.ExperimentStore.release_checkpoints`):
it would never be resumed.

A trial whose training diverges (the engine raises ``TrainingDiverged``) is not an error for the
search: it ends with one final result carrying the worst score (:data:`WORST_SCORE`) and
``diverged: 1``, so Optuna records a completed, bad trial and samples elsewhere. Its
``metrics.json`` says ``status: diverged`` with the reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Optional

import pu_mlc.errors
from pu_mlc.config import TrainConfig

from .space import Resources, Study
from .store import (CHECKPOINT_PREFIX, DIVERGED, FAILED, FINISHED, REPEAT_KEY, SETTLEABLE,
                    ExperimentStore)

log = logging.getLogger(__name__)

#: The score a diverged trial reports: the worst mAP there is (a finite value, so Optuna keeps it).
WORST_SCORE = 0.0
#: Reported first, so Tune's progress table (its first four metrics) shows what a trial is
#: judged by: the selection score so far, the epoch, the epoch's score, the selected test mAP.
TABLE_METRICS = ("best_score", "epoch", "score", "selected_test_mAP")


def trial_config(base: TrainConfig, params: dict[str, Any], store: ExperimentStore,
                 study: str, trial_id: str) -> TrainConfig:
    """The study's config with the trial's values and folders, in one typed step (one
    coercion of each sampled value, one validation). A repeat's number sets the training and
    label-mask seeds. ``overwrite``: the trial folder belongs to the search, and a trial that
    restarts before its first checkpoint replaces what its earlier attempt left."""
    sampled = {k: v for k, v in params.items() if k != REPEAT_KEY}
    repeat = params.get(REPEAT_KEY)
    if repeat is not None:
        sampled.update(seed=base.seed + int(repeat), mask_seed=int(repeat))
    output_dir, tensorboard_dir = trial_folders(store, study, trial_id)
    return base.updated(sampled, source=f"trial {trial_id}", output_dir=str(output_dir),
                        tensorboard_dir=str(tensorboard_dir), overwrite=True, resume=False)


def trial_folders(store: ExperimentStore, study: str, trial_id: str) -> tuple[Path, Path]:
    """Where the engine writes a trial's run and TensorBoard files: in the experiment itself
    when it is a folder every node mounts; in a local staging folder of the node the trial runs
    on when it lives in an object store (rank 0 uploads them after every epoch:
    :class:`RecordSync`)."""
    if not store.remote:
        return Path(store.trial_dir(study, trial_id)), Path(store.tensorboard_run(study,
                                                                                trial_id))
    staging = store.staging_dir(study, trial_id)
    return staging / "run", staging / "tensorboard"


class RecordSync:
    """Uploads a trial's staged files (its records, selected weights, TensorBoard events) from
    the node it runs on to the experiment's object store: after every epoch, before the epoch
    is reported (so Tune never sees an epoch whose records are not in the bucket), and once more
    when the worker ends. Only files new or changed since the last upload go (``best.pt`` only
    when the selection moved). A no-op when the experiment is a shared folder."""

    def __init__(self, store: ExperimentStore, study: str, trial_id: str, cfg: TrainConfig,
                 enabled: bool) -> None:
        self.store, self.study, self.trial_id = store, study, trial_id
        self.enabled = enabled and store.remote
        self.pairs = [(Path(cfg.output_dir), store.trial_dir(study, trial_id)),
                      (Path(cfg.tensorboard_dir), store.tensorboard_run(study, trial_id))]
        self.sent: dict[Path, tuple[int, int]] = {}

    def __call__(self) -> int:
        if not self.enabled:
            return 0
        sent = 0
        for local, remote in self.pairs:
            sent += self.store.storage.upload(local, remote, skip=self.sent)
        return sent

    def finish(self) -> None:
        """The last upload, then the staging folders go (they were temporary)."""
        if not self.enabled:
            return
        try:
            self()
        finally:
            staging = self.pairs[0][0].parent           # <base>/<experiment>/<study>/<trial>
            shutil.rmtree(staging, ignore_errors=True)
            for empty in (staging.parent, staging.parent.parent):
                try:
                    empty.rmdir()                       # only when no other trial uses it
                except OSError:
                    break


def node_record() -> dict[str, Any]:
    """Where this process runs: the Ray node's IP, the host name, the process id."""
    import ray.util

    return {"node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname(),
            "pid": os.getpid()}


def train_worker(loop_config: dict) -> None:
    """Runs on every Ray Train worker: the engine with a Ray reporter and Ray's checkpoint."""
    import ray.train
    import ray.train.torch

    from pu_mlc.cli import setup_logging
    from pu_mlc.engine import fit

    context = ray.train.get_context()
    rank = context.get_world_rank()
    os.environ.setdefault("RANK", str(rank))
    setup_logging()
    cfg: TrainConfig = loop_config["train_config"]          # pickled by Ray as it is
    store: ExperimentStore = loop_config["store"]
    study, trial_id = loop_config["study"], loop_config["trial_id"]
    where = {**node_record(), "started": time.time()}
    store.note_worker(study, trial_id, rank=rank, **where)
    scratch = _scratch_dir(store.train_run_name(study, trial_id), rank)
    checkpoint = ray.train.get_checkpoint()
    sync = RecordSync(store, study, trial_id, cfg, enabled=rank == 0)

    def reporter(metrics: dict, last_file: Optional[Path]) -> None:
        epoch = int(metrics.get("epoch", 0))
        sync()                               # the epoch's records reach the experiment first
        if last_file is None:
            ray.train.report(_ray_metrics(metrics))
            return
        # one folder per epoch, handed to Ray: it copies it to the trial's Train storage
        # (checking that this node sees that storage) and deletes the local folder
        folder = scratch / f"epoch_{epoch:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(last_file, folder / "last.pt")
        ray.train.report(_ray_metrics(metrics),
                         checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
                         checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{epoch:04d}",
                         delete_local_checkpoint_after_upload=True)

    diverged = pu_mlc.errors.TrainingDiverged
    try:
        if checkpoint is not None:
            with checkpoint.as_directory() as ckpt_dir:
                _fit(fit, cfg, reporter, scratch, Path(ckpt_dir) / "last.pt", loop_config)
        else:
            _fit(fit, cfg, reporter, scratch, None, loop_config)
    except diverged as err:
        # Not an error for Ray Train (a restart would diverge again): end this worker normally;
        # the driver reports the trial's (worst) result to Tune. The engine recorded it.
        log.warning("training diverged: %s", err.reason)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            sync.finish()                    # the final metrics.json, a failure's record
        finally:
            store.note_worker(study, trial_id, rank=rank, **where, ended=time.time())


def _fit(fit, cfg: TrainConfig, reporter, scratch: Path, resume_file: Optional[Path],
         loop_config: dict) -> None:
    import ray.train.torch

    fit(cfg, reporter=reporter, device=ray.train.torch.get_device(),
        resume_checkpoint=resume_file, checkpoint_dir=scratch,
        hparams=loop_config.get("hparams"),
        # the trial's driver retries, continues after a lost node, or is being killed with its
        # search (Ray's errors here): it alone says when the trial has failed (settle_trial)
        failure_is_final=False)


def _scratch_dir(run_name: str, rank: int) -> Path:
    """This worker's local folder for the epoch's ``last.pt`` before Ray stores it: in the Ray
    session's folder of this node (removed with the session, so a worker killed mid-write leaves
    nothing behind for long), replaced if an earlier attempt of the trial left one."""
    base = None
    try:
        import ray._private.worker as ray_worker

        node = ray_worker.global_worker.node
        base = Path(node.get_session_dir_path()) if node is not None else None
    except Exception:                    # not inside Ray (tests), or a Ray without the field
        base = None
    if base is None or not base.is_dir():
        import tempfile

        base = Path(tempfile.gettempdir())
    scratch = base / "pu_mlc_scratch" / f"{run_name}-rank{rank}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _ray_metrics(metrics: dict) -> dict:
    """Plain floats/ints only (Tune's loggers and Optuna choke on None and nested values),
    the metrics of :data:`TABLE_METRICS` first."""
    plain = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
    return {**{k: plain[k] for k in TABLE_METRICS if k in plain}, **plain}


def run_trial(params: dict, *, study: Study, store: ExperimentStore, stage: str,
              resources: Resources) -> None:
    """The Tune trainable: one Ray Train DDP run of the engine with the sampled parameters."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(study.base, params, store, study.name, trial_id)
    repeat = params.get(REPEAT_KEY)
    sampled = {k: v for k, v in params.items() if k != REPEAT_KEY}
    earlier = store.read_trial(study.name, trial_id)
    if earlier.status in (FINISHED, DIVERGED):
        # Ended before the search was killed, but after Tune last saved its state: Tune runs
        # it again; tell Tune what it already gave instead of training it twice.
        _report_recorded(earlier)
        return
    store.begin_trial(study.name, trial_id, task=study.task, method=study.method,
                      prob=cfg.prob, stage=stage,
                      repeat=int(repeat) if repeat is not None else None, params=sampled,
                      seed=cfg.seed, mask_seed=cfg.mask_seed, node=node_record())
    hparams = {"study": study.name, "task": study.task, "method": study.method,
               "prob": cfg.prob, **{k: getattr(cfg, k) for k in sorted(study.search)}}
    if repeat is not None:
        hparams.update(repeat=int(repeat), seed=cfg.seed, mask_seed=cfg.mask_seed)
    run_name = store.train_run_name(study.name, trial_id)
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    loop_config = {"train_config": cfg, "hparams": hparams, "store": store,
                   "study": study.name, "trial_id": trial_id}

    def train_run() -> "TorchTrainer":
        # Ray Train retries nothing itself (max_failures 0): each attempt below is a new run
        # of the same name, which continues from the run's last checkpoint (Ray Train's own
        # restore), and this driver decides whether the failure is the trial's or a lost node's
        return TorchTrainer(
            train_worker, train_loop_config=loop_config,
            torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(num_workers=resources.num_workers,
                                                   use_gpu=resources.use_gpu,
                                                   resources_per_worker=per_worker),
            run_config=ray.train.RunConfig(
                name=run_name, storage_path=store.uri(store.ray_train_dir),
                callbacks=[TuneReportCallback()],
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                failure_config=ray.train.FailureConfig(max_failures=0)))

    faults, lost = 0, 0
    while True:
        try:
            train_run().fit()
            break
        except Exception as err:
            gone = lost_nodes(store, study.name, trial_id, err)
            if gone and lost < MAX_NODE_LOSSES:
                lost += 1
                store.note_trial(study.name, trial_id, node_losses=lost, lost_nodes=gone)
                log.warning("trial %s: its node(s) %s left the cluster; it continues from its "
                            "last checkpoint elsewhere (node loss %d of %d allowed, none of its "
                            "%d retries used)", trial_id, ", ".join(gone), lost,
                            MAX_NODE_LOSSES, resources.max_failures)
                continue
            if faults < resources.max_failures:
                faults += 1
                store.note_trial(study.name, trial_id, retries=faults)
                log.warning("trial %s failed (%s); retry %d of %d from its last checkpoint",
                            trial_id, first_line(err), faults, resources.max_failures)
                continue
            store.settle_trial(study.name, trial_id, FAILED, first_line(err),
                               overwrite=SETTLEABLE)
            store.release_checkpoints(study.name, trial_id)
            raise
    store.release_checkpoints(study.name, trial_id)          # ended: never resumed
    recorded = store.read_trial(study.name, trial_id)
    if recorded.status == DIVERGED:
        _report_recorded(recorded)


#: Lost nodes a trial survives (each continues it from its checkpoint on another node) without
#: spending the retries its own faults have (``resources.max_failures``).
MAX_NODE_LOSSES = 3
#: What Ray says of an actor whose node died (``ray.exceptions.ActorDiedError``).
_NODE_DIED = ("node has died", "node died", "NodeDiedError", "raylet died")


def lost_nodes(store: ExperimentStore, study: str, trial_id: str,
               error: BaseException) -> list[str]:
    """The nodes the trial's workers ran on that are no longer alive (its failure was the loss
    of a machine, not its own fault). Ray marks a node dead after its health checks fail (about
    15 s), usually before it reports the actors on it as dead; when the error already says a
    node died, wait for the cluster to agree."""
    import ray

    workers = {w.get("node_ip") for w in store.read_trial(study, trial_id).nodes["workers"]}
    workers.discard(None)
    if not workers:
        return []
    deadline = time.monotonic() + (60.0 if any(p in str(error) for p in _NODE_DIED) else 0.0)
    while True:
        alive = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        gone = sorted(workers - alive)
        if gone or time.monotonic() >= deadline:
            return gone
        time.sleep(2.0)


def _report_recorded(trial) -> None:
    """Report a trial's recorded end to Tune (a diverged one with the worst score)."""
    from ray import tune

    if trial.status == DIVERGED:
        epoch = trial.history[-1]["epoch"] + 1 if trial.history else 1
        tune.report({"best_score": WORST_SCORE, "diverged": 1,
                     "diverged_reason": str(trial.reason or "training diverged"),
                     "epoch": int(epoch)})
        return
    last = trial.history[-1] if trial.history else {}
    tune.report(_ray_metrics({**last, "best_score": trial.selection_score,
                              "selected_test_mAP": trial.test_map, "epoch": trial.epochs}))


def first_line(err: BaseException) -> str:
    """The error in a line or two: its first line, and its last when that differs (Ray wraps
    worker errors: the last line names the original exception)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
    return f"{type(err).__name__}: {text}"[:2000]
