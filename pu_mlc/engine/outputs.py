"""The output directory of one run: its layout, the overwrite guard and atomic checkpoints.

A run's directory holds ``config.yaml`` (the exact TrainConfig), ``metrics.json`` (every epoch
and the final result), ``checkpoints/{last,best}.pt``, ``tensorboard/`` and ``train.log``.
Nothing in it is replaced unless the user says so (``--overwrite``) or continues it
(``--resume``), and every file is written to a temporary name first and renamed, so a run killed
mid-write never leaves a truncated checkpoint or JSON behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch

from .. import config as config_lib
from ..errors import OutputDirError
from ..files import atomic_write, check_writable_dir

#: Files and folders a run writes; only these are removed by ``--overwrite``.
RUN_ARTIFACTS = ("config.yaml", "metrics.json", "checkpoints", "tensorboard", "train.log")


@dataclass(frozen=True)
class RunPaths:
    root: Path
    #: Where ``last.pt`` goes when a launcher keeps the resume state itself (a search trial
    #: hands it to Ray Train, which stores it); None: ``root/checkpoints``.
    last_dir: Optional[Path] = None

    def with_last_checkpoint_in(self, folder: Path) -> "RunPaths":
        return replace(self, last_dir=Path(folder))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return (self.last_dir or self.checkpoints) / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def log_file(self) -> Path:
        return self.root / "train.log"

    def tensorboard(self, cfg: "config_lib.TrainConfig") -> Path:
        return Path(cfg.tensorboard_dir) if cfg.tensorboard_dir else self.root / "tensorboard"


def check_output_dir(cfg: "config_lib.TrainConfig") -> RunPaths:
    """Refuse an output dir the run cannot write in, or one holding earlier results; for
    ``--resume`` require a matching earlier run.

    Called before the data and the model are set up, so an unwritable ``--output-dir`` (or
    ``--tensorboard-dir``) is refused in a second, not after minutes of setup. Safe to call on
    every rank before any rank writes: the only trace it leaves is a temporary file created and
    removed again in the nearest existing folder (no directory is created).
    """
    check_writable_dir(Path(cfg.output_dir), "output dir (--output-dir)")
    if cfg.tensorboard_dir:
        check_writable_dir(Path(cfg.tensorboard_dir), "TensorBoard dir (--tensorboard-dir)")
    paths = RunPaths(Path(cfg.output_dir).resolve())
    present = [name for name in RUN_ARTIFACTS if (paths.root / name).exists()]
    if cfg.resume:
        if not paths.last_checkpoint.exists():
            raise OutputDirError(
                f"--resume: no checkpoint at {paths.last_checkpoint}; start without --resume "
                f"(or point --output-dir at the run to continue)")
        if paths.config.exists():
            earlier = config_lib.TrainConfig.from_yaml(paths.config)
            diff = config_differences(earlier, cfg)
            if diff:
                raise OutputDirError(
                    f"--resume: {paths.config} was written with different settings "
                    f"({'; '.join(diff)}); resume with the same flags or use a new --output-dir")
        return paths
    if present and not cfg.overwrite:
        raise OutputDirError(
            f"output dir {paths.root} already holds results ({', '.join(present)}); pass "
            f"--resume to continue that run, --overwrite to replace it, or choose another "
            f"--output-dir")
    return paths


def prepare_output_dir(paths: RunPaths, clear: bool) -> None:
    """Create the directory (rank 0 only); with ``clear`` (``--overwrite`` of a run that does not
    resume) remove the earlier run's files."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if paths.last_dir is not None:
        paths.last_dir.mkdir(parents=True, exist_ok=True)
    if clear:
        for name in RUN_ARTIFACTS:
            target = paths.root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    paths.checkpoints.mkdir(exist_ok=True)


#: Fields that may differ between a run and its resumption (they steer execution, not the math).
#: ``train_epochs`` only says where the fixed ``epochs``-long OneCycle schedule is cut, so a
#: finished run can be continued for more epochs (``--resume --Stop_epoch`` larger).
RESUMABLE_DIFFERENCES = {"workers", "overwrite", "resume", "device", "output_dir",
                         "tensorboard_dir", "eval_batch_size", "data_pipeline", "compile",
                         "skip_bad_images", "data", "train_epochs", "f1_thresholds"}


def config_differences(a: "config_lib.TrainConfig", b: "config_lib.TrainConfig") -> list[str]:
    da, db = a.to_dict(include_run_control=True), b.to_dict(include_run_control=True)
    return [f"{k}: {da[k]!r} -> {db[k]!r}" for k in da
            if k not in RESUMABLE_DIFFERENCES and da[k] != db[k]]


def torch_save_atomic(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))
