"""One trial of a search: a Tune trainable (the driver) that runs a Ray Train DDP job.

``run_trial`` is what Tune calls with the sampled parameters. It assembles the trial's
``TrainConfig`` (task's fixed fields + sampled fields + the trial's own directories) and starts a
``TorchTrainer`` whose workers run ``train_worker``: the ``pu_mlc`` engine, unchanged, as DDP
(gloo on CPU, NCCL on GPU). Metrics flow back worker -> Ray Train -> ``TuneReportCallback`` ->
Tune (ASHA, Optuna). The Train run's name is derived from the Tune trial id only, so a restored
search finds the trial's checkpoint and continues it mid-run; a DDP worker that dies (up to
``resources.max_failures`` times) makes Ray Train restart the worker group from that checkpoint.

Each epoch's ``last.pt`` is stored once: Ray Train's copy
(``ray_train/<task>-<trial>/checkpoint_*``, what a restart or a restored search reads) is a hard
link of the trial's ``trials/<task>/<trial>/checkpoints/last.pt`` (which the engine writes
atomically, so a new epoch's file is a new inode and Ray's kept checkpoint is never changed in
place); on another filesystem it is copied.

A trial whose training diverges (the engine raises ``TrainingDiverged``) is not an error for the
search: it ends with one final result carrying the worst score (:data:`WORST_SCORE`) and
``diverged: 1``, so Optuna records a completed, bad trial and samples elsewhere. Its
``metrics.json`` says ``status: diverged`` with the reason. A trial that fails says
``status: failed`` with the error; one the scheduler stops is marked by the search
(:func:`mark_trial_status`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import pu_mlc.errors
from pu_mlc.config import TrainConfig

log = logging.getLogger(__name__)

#: The score a diverged trial reports: the worst mAP there is (a finite value, so Optuna keeps it).
WORST_SCORE = 0.0
#: The parameter of a repeat trial: its number r (1..R) sets ``seed`` = the study's seed + r and
#: ``mask_seed`` = r, the same for every method, so repeats pair up across methods.
REPEAT_KEY = "repeat"
#: Statuses a trial's ``metrics.json`` can end with.
FINAL_STATUSES = ("finished", "stopped_by_scheduler", "failed", "diverged", "stopped")


def _diverged_error() -> Optional[type]:
    """``pu_mlc.errors.TrainingDiverged`` once the engine has it (None before)."""
    return getattr(pu_mlc.errors, "TrainingDiverged", None)


def trial_paths(experiment_dir: Path, task: str, trial_id: str) -> dict[str, Path]:
    """Where a trial's files go: its run dir and its TensorBoard run (one logdir per experiment)."""
    return {"output_dir": experiment_dir / "trials" / task / trial_id,
            "tensorboard_dir": experiment_dir / "tensorboard" / task / trial_id,
            "train_storage": experiment_dir / "ray_train"}


def trial_config(base: TrainConfig, params: dict[str, Any], experiment_dir: Path, task: str,
                 trial_id: str) -> TrainConfig:
    """The task's config with the sampled values (converted to the fields' types) and the
    trial's own folders."""
    paths = trial_paths(experiment_dir, task, trial_id)
    params = dict(params)
    repeat = params.pop(REPEAT_KEY, None)
    if repeat is not None:
        params.update(seed=base.seed + int(repeat), mask_seed=int(repeat))
    return base.updated(params, source=f"trial {trial_id}").replace(
        output_dir=str(paths["output_dir"]), tensorboard_dir=str(paths["tensorboard_dir"]),
        overwrite=False, resume=False)


def train_worker(loop_config: dict) -> None:
    """Runs on every Ray Train worker: the engine with a Ray reporter and Ray's checkpoint."""
    import ray.train
    import ray.train.torch

    from pu_mlc.cli import setup_logging
    from pu_mlc.engine import fit

    context = ray.train.get_context()
    os.environ.setdefault("RANK", str(context.get_world_rank()))
    setup_logging()
    cfg: TrainConfig = loop_config["train_config"]          # pickled by Ray as it is
    run_dir = Path(loop_config["train_run_dir"]) if loop_config.get("train_run_dir") else None
    resume_file: Optional[Path] = None
    checkpoint = ray.train.get_checkpoint()
    # the copy a restarted worker resumes from: in the trial's own Train folder (a worker
    # killed before it could clean up leaves it there, for the next attempt to replace)
    scratch = (run_dir / f".resume-rank{context.get_world_rank()}" if run_dir is not None
               else Path(tempfile.mkdtemp(prefix="pumlc-resume-")))
    shutil.rmtree(scratch, ignore_errors=True)
    if checkpoint is not None:
        scratch.mkdir(parents=True, exist_ok=True)
        with checkpoint.as_directory() as ckpt_dir:
            resume_file = scratch / "last.pt"
            shutil.copy2(Path(ckpt_dir) / "last.pt", resume_file)
    else:
        # A trial restarted before its first checkpoint may find its own partial files.
        cfg = cfg.replace(overwrite=True)

    def upload(ckpt, dir_name: str):
        """Ray Train's persisting of a checkpoint, as a hard link instead of a copy."""
        dest = run_dir / dir_name
        dest.mkdir(parents=True, exist_ok=True)
        for src in Path(ckpt.path).iterdir():
            target = dest / src.name
            if target.exists():              # left by an attempt killed while persisting
                target.unlink()
            _link_or_copy(src, target)
        return ray.train.Checkpoint.from_directory(str(dest))

    def reporter(metrics: dict, last_file: Optional[Path]) -> None:
        ckpt = None
        tmp = None
        epoch = int(metrics.get("epoch", 0))
        if last_file is not None:
            tmp = Path(tempfile.mkdtemp(prefix="pumlc-ckpt-"))
            _link_or_copy(Path(last_file), tmp / "last.pt")
            ckpt = ray.train.Checkpoint.from_directory(str(tmp))
        if ckpt is not None and run_dir is not None:
            ray.train.report(_ray_metrics(metrics), checkpoint=ckpt,
                             checkpoint_dir_name=f"checkpoint_epoch_{epoch:04d}",
                             checkpoint_upload_fn=upload)
        else:
            ray.train.report(_ray_metrics(metrics), checkpoint=ckpt)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    diverged = _diverged_error()
    try:
        fit(cfg, reporter=reporter, device=ray.train.torch.get_device(),
            resume_checkpoint=resume_file, hparams=loop_config.get("hparams"))
    except Exception as err:
        if diverged is None or not isinstance(err, diverged):
            raise
        # Not an error for Ray Train (a restart would diverge again): end this worker normally;
        # the driver reports the trial's (worst) result to Tune.
        if context.get_world_rank() == 0:          # the engine records it; make sure
            recorded = read_metrics(Path(cfg.output_dir)) or {}
            if recorded.get("status") != "diverged" or not failure_reason(recorded):
                mark_trial_status(Path(cfg.output_dir), "diverged", _divergence_reason(err),
                                  overwrite=(recorded.get("status"),),
                                  epoch=getattr(err, "epoch", None))
        log.warning("training diverged: %s", _divergence_reason(err))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)                    # same filesystem: no second copy on disk
    except OSError:
        shutil.copy2(src, dst)


def _divergence_reason(err: Exception) -> str:
    reason = getattr(err, "reason", None) or str(err) or type(err).__name__
    return str(reason)


#: Reported first, so Tune's progress table (its first four metrics) shows what a trial is
#: judged by: the selection score so far, the epoch, the epoch's score, the selected test mAP.
TABLE_METRICS = ("best_score", "epoch", "score", "selected_test_mAP")


def _ray_metrics(metrics: dict) -> dict:
    """Plain floats/ints only (Tune's loggers and Optuna choke on None and nested values),
    the metrics of :data:`TABLE_METRICS` first."""
    plain = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
    return {**{k: plain[k] for k in TABLE_METRICS if k in plain}, **plain}


def read_metrics(output_dir: Path) -> Optional[dict]:
    try:
        return json.loads((Path(output_dir) / "metrics.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def epochs_run(metrics: dict) -> int:
    """Epochs a trial ran, by its own ``metrics.json`` (one history record per epoch)."""
    return len(metrics.get("history") or [])


def mark_trial_status(output_dir: Path, status: str, reason: Optional[str], *,
                      overwrite=("running", None), epoch: Optional[int] = None) -> bool:
    """Set ``status`` and ``failure`` {reason, epoch, step} (the engine's own record of how a run
    ended) in a trial's ``metrics.json`` when its current status is one of ``overwrite`` (None:
    no file or no status yet); a status the engine wrote itself (finished, failed, diverged) is
    kept. Returns whether the file was changed."""
    from pu_mlc.files import write_json_atomic

    output_dir = Path(output_dir)
    metrics = read_metrics(output_dir)
    current = (metrics or {}).get("status")
    if current not in overwrite:
        return False
    payload = dict(metrics or {"history": []})
    payload["status"] = status
    payload["failure"] = {"reason": reason, "epoch": epoch, "step": None}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "metrics.json", payload)
    return True


def failure_reason(metrics: Optional[dict]) -> Optional[str]:
    """The recorded reason a trial ended early (the engine's or the search's), if any."""
    failure = (metrics or {}).get("failure") or {}
    return failure.get("reason") if isinstance(failure, dict) else None


def run_trial(params: dict, *, task_name: str, base: TrainConfig, experiment_dir: str,
              resources: dict, hparam_keys: list[str],
              labels: Optional[dict[str, str]] = None) -> None:
    """The Tune trainable: one Ray Train DDP run of the engine with the sampled parameters."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    exp_dir = Path(experiment_dir)
    cfg = trial_config(base, params, exp_dir, task_name, trial_id)
    hparams = {"task": task_name, **(labels or {}), "study": task_name, "prob": cfg.prob,
               **{k: getattr(cfg, k) for k in hparam_keys}}
    if REPEAT_KEY in params:
        hparams.update(repeat=int(params[REPEAT_KEY]), seed=cfg.seed, mask_seed=cfg.mask_seed)
    paths = trial_paths(exp_dir, task_name, trial_id)
    run_name = f"{task_name}-{trial_id}"
    use_gpu = bool(resources["use_gpu"])
    per_worker = {"CPU": resources["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = resources["gpus_per_worker"]
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"train_config": cfg, "hparams": hparams,
                           "train_run_dir": str(paths["train_storage"] / run_name)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=resources["num_workers"],
                                               use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(paths["train_storage"]),
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=resources["max_failures"])),
    )
    try:
        trainer.fit()
    except Exception as err:
        mark_trial_status(paths["output_dir"], "failed", _first_line(err),
                          overwrite=("running", "stopped", "interrupted", None))
        raise
    prune_stale_checkpoints(paths["train_storage"] / run_name)
    metrics = read_metrics(paths["output_dir"]) or {}
    if metrics.get("status") == "diverged":
        history = metrics.get("history") or []
        epoch = ((metrics.get("failure") or {}).get("epoch")
                 or (history[-1]["epoch"] + 1 if history else 1))
        reason = str(failure_reason(metrics) or "training diverged")
        tune.report({"best_score": WORST_SCORE, "diverged": 1, "diverged_reason": reason,
                     "epoch": int(epoch)})


def prune_stale_checkpoints(run_dir: Path) -> list[Path]:
    """Once a trial's Train run is over, keep only its newest checkpoint (``num_to_keep=1``
    can leave the one before it when the run ends right after a report); return what was
    removed."""
    found = sorted(Path(run_dir).glob("checkpoint_epoch_*"))
    for stale in found[:-1]:
        shutil.rmtree(stale, ignore_errors=True)
    return found[:-1]


def _first_line(err: BaseException) -> str:
    """The error in a line or two: its first line, and its last when that differs (Ray wraps
    worker errors: the last line names the original exception)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
    return f"{type(err).__name__}: {text}"[:2000]
