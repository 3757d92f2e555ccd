"""One trial of a search: a Tune trainable (the driver) that runs a Ray Train DDP job.

``run_trial`` is what Tune calls with the sampled parameters. It assembles the trial's
``TrainConfig`` (task's fixed fields + sampled fields + the trial's own directories) and starts a
``TorchTrainer`` whose workers run ``train_worker``: the ``pu_mlc`` engine, unchanged, as DDP
(gloo on CPU, NCCL on GPU). Metrics flow back worker -> Ray Train -> ``TuneReportCallback`` ->
Tune (ASHA, Optuna). The Train run's name is derived from the Tune trial id only, so a restored
search finds the trial's checkpoint and continues it mid-run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from pu_mlc.config import TrainConfig

log = logging.getLogger(__name__)


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
    resume_file: Optional[Path] = None
    checkpoint = ray.train.get_checkpoint()
    scratch = Path(tempfile.mkdtemp(prefix="pumlc-resume-"))
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            resume_file = scratch / "last.pt"
            shutil.copy2(Path(ckpt_dir) / "last.pt", resume_file)
    else:
        # A trial restarted before its first checkpoint may find its own partial files.
        cfg = cfg.replace(overwrite=True)

    def reporter(metrics: dict, last_file: Optional[Path]) -> None:
        ckpt = None
        tmp = None
        if last_file is not None:
            tmp = Path(tempfile.mkdtemp(prefix="pumlc-ckpt-"))
            try:
                os.link(last_file, tmp / "last.pt")      # no copy on the same filesystem
            except OSError:
                shutil.copy2(last_file, tmp / "last.pt")
            ckpt = ray.train.Checkpoint.from_directory(str(tmp))
        ray.train.report(_ray_metrics(metrics), checkpoint=ckpt)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    try:
        fit(cfg, reporter=reporter, device=ray.train.torch.get_device(),
            resume_checkpoint=resume_file, hparams=loop_config.get("hparams"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ray_metrics(metrics: dict) -> dict:
    """Plain floats/ints only (Tune's loggers and Optuna choke on None and nested values)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}


def run_trial(params: dict, *, task_name: str, base: TrainConfig, experiment_dir: str,
              resources: dict, hparam_keys: list[str]) -> None:
    """The Tune trainable: one Ray Train DDP run of the engine with the sampled parameters."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    exp_dir = Path(experiment_dir)
    cfg = trial_config(base, params, exp_dir, task_name, trial_id)
    hparams = {"task": task_name, "prob": cfg.prob,
               **{k: getattr(cfg, k) for k in hparam_keys}}
    paths = trial_paths(exp_dir, task_name, trial_id)
    use_gpu = bool(resources["use_gpu"])
    per_worker = {"CPU": resources["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = resources["gpus_per_worker"]
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"train_config": cfg, "hparams": hparams},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=resources["num_workers"],
                                               use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"{task_name}-{trial_id}",
            storage_path=str(paths["train_storage"]),
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=resources["max_failures"])),
    )
    trainer.fit()
