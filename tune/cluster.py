"""Joining or starting the Ray cluster, and checking a search fits it before anything runs.

Under ``ray job submit`` (or with ``RAY_ADDRESS`` set) a plain ``ray.init()`` joins the cluster
the job runs on. Otherwise a local Ray instance is started in-process with enough logical CPUs
for one trial. A trial that cannot fit the cluster would otherwise wait forever without an error
(its placement group never schedules): that is checked here first.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Mapping

from pu_mlc.errors import ConfigError

from .space import SearchSpec

log = logging.getLogger(__name__)


def init_ray(spec: SearchSpec) -> str:
    """Connect to the cluster in RAY_ADDRESS, or start a local one; return a description."""
    import ray

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    if ray.is_initialized():
        return "existing"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return f"cluster at {os.environ['RAY_ADDRESS']}"
    r = spec.resources
    cpus = max(os.cpu_count() or 1,
               math.ceil(r.cpus_per_trial * min(spec.max_concurrent_trials,
                                                spec.trials_per_task)))
    ray.init(num_cpus=cpus, include_dashboard=True, log_to_driver=True)
    return f"local Ray ({cpus} logical CPUs)"


def check_cluster_fits(spec: SearchSpec, available: Mapping[str, float]) -> None:
    r = spec.resources
    cpus, gpus = float(available.get("CPU", 0)), float(available.get("GPU", 0))
    if r.cpus_per_trial > cpus + 1e-9:
        raise ConfigError(
            f"{spec.source}: one trial needs {r.cpus_per_trial:g} CPUs (driver_cpus "
            f"{r.driver_cpus:g} + num_workers {r.num_workers} x cpus_per_worker "
            f"{r.cpus_per_worker:g}) but the Ray cluster has {cpus:g}; lower resources.* or "
            f"add nodes")
    if r.gpus_per_trial > gpus + 1e-9:
        raise ConfigError(
            f"{spec.source}: one trial needs {r.gpus_per_trial:g} GPUs (num_workers "
            f"{r.num_workers} x gpus_per_worker {r.gpus_per_worker:g}) but the Ray cluster "
            f"has {gpus:g}; set resources.use_gpu: false for CPU, or lower num_workers")
    fit_cpu = int(cpus // r.cpus_per_trial)
    fit_gpu = int(gpus // r.gpus_per_trial) if r.gpus_per_trial else fit_cpu
    if min(fit_cpu, fit_gpu) < spec.max_concurrent_trials:
        log.warning("the cluster fits %d concurrent trial(s), budget.max_concurrent_trials is %d",
                    min(fit_cpu, fit_gpu), spec.max_concurrent_trials)
