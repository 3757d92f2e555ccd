"""Checks a search runs before Ray starts: what every trial will open, and what this machine holds.

A wrong data root or weight file fails here in seconds with the file named, instead of in every
trial once Ray started; a trial larger than this machine is refused when Ray will be local.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from pu_mlc.errors import ConfigError

from .space import SearchSpec


def check_inputs(spec: SearchSpec) -> None:
    """Open what every trial will need (data roots, annotations, weights) in the driver, so a
    wrong path fails in seconds with the file named, not in every trial after Ray started."""
    from pu_mlc.data import load_dataset

    seen: set[tuple[str, str]] = set()
    for study in spec.studies:
        cfg = study.base
        where = f"{spec.source}: task '{study.task}'"
        if "://" not in cfg.data and not Path(cfg.data).exists():
            raise ConfigError(f"{where}: dataset root {cfg.data} does not exist; set it with "
                              f"--set fixed.data=/path/to/data (on a cluster: a path every node "
                              f"sees)")
        weights = cfg.pretrained_model
        if weights not in (None, "builtin") and not Path(weights).exists():
            raise ConfigError(f"{where}: pretrained weights {weights} do not exist; set "
                              f"--set fixed.pretrained_model=/path/to/resnet101.pth or None")
        if (cfg.dataset, cfg.data) in seen:
            continue
        seen.add((cfg.dataset, cfg.data))
        splits = load_dataset(cfg.dataset, cfg.data)      # DataError names the file
        classes = len(splits["train"].class_names)
        if cfg.num_classes is not None and cfg.num_classes != classes:
            raise ConfigError(f"{where}: num_classes = {cfg.num_classes} but {cfg.data} has "
                              f"{classes} classes; fix fixed.num_classes or leave it out")
    check_local_resources(spec)


def check_local_resources(spec: SearchSpec, env: Optional[Mapping[str, str]] = None,
                          cpu_count: Optional[int] = None,
                          gpu_count: Optional[int] = None) -> None:
    """Refuse, before Ray starts, a trial this machine cannot run when Ray will be local.

    Without ``RAY_ADDRESS`` the search starts Ray on this machine, and a local Ray cannot invent
    processors: a trial whose DDP workers need more CPUs (``num_workers x cpus_per_worker``) than
    the machine has cores (its CPU affinity), or more GPUs than it has, would be over-subscribed
    or never scheduled. The driver's fraction of a CPU (``driver_cpus``, it mostly waits) is not
    counted (the local cluster gives the drivers an extra logical CPU). On a cluster
    (``RAY_ADDRESS`` set, e.g. under ``ray job submit``) ``tune.cluster.check_cluster_fits``
    checks the cluster once Ray is up. Called by :func:`check_inputs`.
    """
    env = os.environ if env is None else env
    if env.get("RAY_ADDRESS"):
        return
    r = spec.resources
    cpus = _usable_cpus() if cpu_count is None else cpu_count
    need = r.num_workers * r.cpus_per_worker
    if need > cpus + 1e-9:
        raise ConfigError(
            f"{spec.source}: resources.num_workers {r.num_workers} x resources.cpus_per_worker "
            f"{r.cpus_per_worker:g} = {need:g} CPUs per trial, but this machine has {cpus} and "
            f"the search would start Ray here (no RAY_ADDRESS); lower resources.cpus_per_worker"
            f" or resources.num_workers (e.g. --set resources.cpus_per_worker=1), or submit to "
            f"a cluster (RAY_ADDRESS)")
    if r.use_gpu:
        if gpu_count is None:
            import torch

            gpu_count = torch.cuda.device_count()
        if r.gpus_per_trial > gpu_count + 1e-9:
            raise ConfigError(
                f"{spec.source}: resources.num_workers {r.num_workers} x "
                f"resources.gpus_per_worker {r.gpus_per_worker:g} = {r.gpus_per_trial:g} GPUs "
                f"per trial, but this machine has {gpu_count} and the search would start Ray "
                f"here (no RAY_ADDRESS); set resources.use_gpu: false for CPU, lower "
                f"resources.num_workers, or submit to a cluster (RAY_ADDRESS)")


def _usable_cpus() -> int:
    """The cores this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:                      # not Linux
        return os.cpu_count() or 1
