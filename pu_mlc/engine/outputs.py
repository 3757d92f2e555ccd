"""The output directory of one run: its layout, the overwrite guard and atomic writes.

A run's directory holds ``config.yaml`` (the exact TrainConfig), ``metrics.json`` (every epoch
and the final result), ``checkpoints/{last,best}.pt``, ``tensorboard/`` and ``train.log``.
Nothing in it is replaced unless the user says so (``--overwrite``) or continues it
(``--resume``), and every file is written to a temporary name first and renamed, so a run killed
mid-write never leaves a truncated checkpoint or JSON behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .. import config as config_lib
from ..errors import OutputDirError

#: Files and folders a run writes; only these are removed by ``--overwrite``.
RUN_ARTIFACTS = ("config.yaml", "metrics.json", "checkpoints", "tensorboard", "train.log")


@dataclass(frozen=True)
class RunPaths:
    root: Path

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
        return self.checkpoints / "last.pt"

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


def check_writable_dir(path: Path, what: str) -> None:
    """Refuse, naming ``path`` and the fix, when ``path`` cannot be (or become) a directory this
    process can create files in.

    The nearest existing ancestor of ``path`` (``path`` itself when it exists) must be a
    directory, and a temporary file is created and removed in it: this asks the file system
    itself, so read-only mounts, permissions, ACLs and full quotas all answer truthfully (mode
    bits alone would mislead: root may write into a mode-0555 directory). Nothing is left
    behind: no directory is created, the probe file is removed.
    """
    path = Path(path)
    fix = f"choose another {_flag_of(what)} (a folder you can write to)"
    probe = path
    try:
        while not probe.exists():
            if os.path.islink(probe):
                raise OutputDirError(f"{what} {path}: {probe} is a broken symbolic link; "
                                     f"remove it or {fix}")
            if probe.parent == probe:
                break
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as err:
        raise OutputDirError(f"{what} {path} cannot be inspected ({err.strerror or err}: "
                             f"{err.filename or probe}); {fix}") from None
    if not is_dir:
        where = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise OutputDirError(f"{what} {path} {where}, not a directory; {fix}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pu_mlc-write-probe-", dir=probe)
    except OSError as err:
        raise OutputDirError(f"{what} {path} cannot be written: creating a file in {probe} "
                             f"failed ({err.strerror or err}); {fix}") from None
    os.close(fd)
    os.unlink(tmp)


def _flag_of(what: str) -> str:
    start = what.find("(--")
    return what[start + 1:what.index(")", start)] if start >= 0 else "directory"


def prepare_output_dir(paths: RunPaths, cfg: "config_lib.TrainConfig") -> None:
    """Create the directory (rank 0 only); with ``--overwrite`` remove the earlier run's files."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
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


def write_json_atomic(path: Path, payload: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2, sort_keys=False)
                                          .encode()))


def write_text_atomic(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def torch_save_atomic(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
