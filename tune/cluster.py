"""Joining or starting the Ray cluster, and checking a search fits it before anything runs.

Under ``ray job submit`` (the job supervisor sets ``RAY_ADDRESS``) or with ``RAY_ADDRESS`` set, the
search joins that cluster. Otherwise it starts its **own** local Ray instance, in-process, and
never joins another one: a plain ``ray.init()`` would attach to whatever cluster a ``ray start``
on this host last wrote into ``/tmp/ray/ray_current_cluster``; ``address="local"`` does not look.
The local instance

- keeps its session files (logs, sockets) in its own temporary folder ``pumlc-ray-*``, readable
  by this user only (mode 0700, also after Ray made its folders 0777), removed at exit; the
  folder records its driver's pid, so a folder whose driver was killed (SIGKILL leaves no exit
  to remove it) is removed by the next search that starts a private Ray with the same temp dir;
- is a one-machine cluster on 127.0.0.1: every Ray listener (GCS, raylet, object manager,
  workers, agents, the dashboard and jobs API) binds the loopback interface only. Ray 2.60
  replaces a node address of 127.0.0.1 given to ``ray.init(_node_ip_address=...)`` by the
  machine's routable address (``services.resolve_ip_for_localhost``), so its gRPC servers would
  listen there; it keeps 127.0.0.1 only when clusters are disabled
  (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read at ``import ray`` and by Ray's processes),
  which is set here for this process and the Ray processes it starts (no other node can join:
  none should);
- gets as many logical CPUs as this machine has cores, plus one for the trial drivers (Tune
  trainables that only wait on their DDP workers). A search asking for more than that is refused
  by :func:`check_cluster_fits` before any trial starts, instead of sizing the cluster from the
  request (a trial that cannot fit would otherwise wait forever: its placement group never
  schedules);
- holds ``pu_mlc_trial_slot`` custom resources, one per trial that fits at once (or
  ``budget.max_concurrent_trials`` when smaller). Every trial's driver holds one, so the trials of
  all studies (each study drives its own Tuner) queue for the same slots in Ray's scheduler and
  never wait inside Ray Train for workers.

On a cluster the search joins (``ray job submit``, ``RAY_ADDRESS``) nothing has to be written into
``ray start``:

- the search first checks that ``storage_path`` is one storage on every node
  (:func:`check_shared_storage`: a Ray task pinned to each node reads what the driver wrote there
  and writes back), and refuses, naming the nodes, before anything else is written;
- the study drivers (Ray tasks) and every trial's driver (a Tune trainable: it only waits on its
  DDP workers) run on the search driver's own node (:func:`this_node`; trial drivers ask for a
  sliver of the node's implicit ``node:<ip>`` resource), so the Optuna database is opened from
  one machine and a trial driver never takes a worker node's CPU;
- the trials' DDP workers go wherever Ray's scheduler finds room: a trial whose workers do not
  fit yet waits in Ray's placement-group queue, behind the other studies' trials, and starts
  when a trial ends or a node joins (``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` is raised to
  30 minutes for that wait, through the job's runtime environment so it reaches every process);
  ``pu_mlc_trial_slot`` resources, when a cluster has them, still cap the trials of all studies
  together.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Mapping, Optional

from pu_mlc.errors import ConfigError

from .space import SearchSpec

log = logging.getLogger(__name__)

#: The custom Ray resource a trial's driver holds while it runs (see the module docstring).
TRIAL_SLOT = "pu_mlc_trial_slot"
#: Logical CPUs the local cluster adds to the machine's cores for the trial drivers.
DRIVER_CPU_ALLOWANCE = 1
#: Unix socket paths (inside the session folder) must stay under ~107 bytes.
_MAX_TEMP_BASE = 40


def joins_existing_cluster() -> bool:
    """True under ``ray job submit`` or with ``RAY_ADDRESS`` set: the search joins that cluster."""
    return bool(os.environ.get("RAY_ADDRESS"))


def local_cpus() -> int:
    """Logical CPUs of the local cluster: this process's usable cores + the driver allowance."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        cores = os.cpu_count() or 1
    return max(cores, 1) + DRIVER_CPU_ALLOWANCE


def local_trial_slots(spec: SearchSpec) -> int:
    """Trials the private local cluster runs at once (>= 1; a trial that cannot fit at all is
    refused by :func:`check_cluster_fits`)."""
    gpus = 0
    if spec.resources.use_gpu:
        import torch

        gpus = torch.cuda.device_count()
    return max(trial_slots(spec, {"CPU": local_cpus(), "GPU": gpus}), 1)


def trial_slots(spec: SearchSpec, available: Mapping[str, float]) -> int:
    """How many trials fit on ``available`` resources at once, capped by
    ``budget.max_concurrent_trials``."""
    r = spec.resources
    fit = int((float(available.get("CPU", 0)) + 1e-9) // r.cpus_per_trial)
    if r.gpus_per_trial:
        fit = min(fit, int((float(available.get("GPU", 0)) + 1e-9) // r.gpus_per_trial))
    if spec.max_concurrent_trials:
        fit = min(fit, spec.max_concurrent_trials)
    return fit


#: Variables of this process the search's Ray processes need on every node (trial drivers, Ray
#: Train controllers, workers): ``ray.init(runtime_env=...)`` hands them to the whole job; a
#: variable set only here never reaches the processes of a cluster started with ``ray start``
#: (they inherit their raylet's environment).
PROPAGATED_PREFIXES = ("PU_MLC_",)
PROPAGATED = ("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
              "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
#: How long a trial's DDP workers may wait for the cluster's resources on a shared cluster: its
#: placement group queues behind the other trials' in Ray's scheduler (an autoscaler may also be
#: adding nodes). Longer than Ray's 60 s default, which fails a trial that merely waits its turn.
CLUSTER_WORKER_START_TIMEOUT_S = "1800"


def cluster_env() -> dict[str, str]:
    """The environment every Ray process of the search gets (its runtime environment)."""
    env = {k: v for k, v in os.environ.items()
           if k in PROPAGATED or k.startswith(PROPAGATED_PREFIXES)}
    env["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"      # one TensorBoard tree: the trials'
    return env


def init_ray(spec: SearchSpec) -> str:
    """Connect to the cluster in RAY_ADDRESS, or start a private local one; return a
    description. On a cluster the settings of :func:`cluster_env` reach every process the search
    starts, on every node, as the job's runtime environment; the private local Ray's processes
    inherit this process's environment from the raylet it starts (a runtime environment there
    would only keep Ray from reusing its idle workers)."""
    import ray

    if ray.is_initialized():
        return "existing"
    if joins_existing_cluster():
        os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",
                              CLUSTER_WORKER_START_TIMEOUT_S)
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True,
                 runtime_env={"env_vars": cluster_env()})
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return f"the cluster at {os.environ['RAY_ADDRESS']} ({len(nodes)} node(s))"
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    cpus = local_cpus()
    temp_dir = _private_temp_dir()
    _ensure_private_token()
    _loopback_only()
    _one_machine_train_settings()
    slots = local_trial_slots(spec)
    atexit.register(_shutdown_and_clean, temp_dir)
    ray.init(address="local", num_cpus=cpus, include_dashboard=True, log_to_driver=True,
             dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", _temp_dir=temp_dir,
             resources={TRIAL_SLOT: slots})
    _keep_private(temp_dir)
    return (f"a private local Ray ({cpus} logical CPUs, {slots} trial slot(s), session files "
            f"in {temp_dir})")


def _loopback_only() -> None:
    """Make Ray keep 127.0.0.1 as this node's address (see the module docstring)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"       # Ray's processes read it
    try:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False                # read at import in this one
    except (ImportError, AttributeError) as err:                # a Ray without the switch
        log.warning("cannot keep Ray on 127.0.0.1 (%s): its gRPC ports listen on every "
                    "interface; token authentication protects them", err)


def _one_machine_train_settings() -> None:
    """Ray Train settings for a cluster that is this one machine (a user's value wins).

    Ray Train starts a ``PreemptionWatcher`` actor for every trial: one more process (about 3 s
    of CPU, taken from the trial's own workers on a small machine) that watches for cloud nodes
    being reclaimed. The private local cluster has one node, this machine, which nothing
    preempts; on a cluster the search joins, Ray's default (on) stays.
    """
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


#: The private session folders' name prefix, and the file in each naming its driver.
_TEMP_PREFIX = "pumlc-ray-"
_DRIVER_FILE = "pumlc-driver.json"


def _private_temp_dir() -> str:
    """A new private session folder (mode 0700, its driver's pid recorded in it), after removing
    the folders of earlier drivers that are gone (see :func:`remove_stale_temp_dirs`)."""
    base = _temp_base()
    remove_stale_temp_dirs(base)
    path = tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=base)
    _write_driver_record(Path(path))
    return path


def _temp_base() -> str:
    base = os.environ.get("RAY_TMPDIR") or "/tmp"
    if len(base) > _MAX_TEMP_BASE or not os.path.isdir(base):
        base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= _MAX_TEMP_BASE else "/tmp"
    return base


def _process_start(pid: int) -> Optional[int]:
    """The start time of process ``pid`` (clock ticks since boot, /proc), None where unknown:
    with the pid it names one process, also after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            line = f.read()
        return int(line[line.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _write_driver_record(folder: Path) -> None:
    record = {"pid": os.getpid(), "start": _process_start(os.getpid())}
    try:
        fd = os.open(folder / _DRIVER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
    except OSError as err:              # the folder still works; it is only not cleaned later
        log.debug("could not record the driver in %s: %s", folder, err)


def _driver_is_gone(folder: Path) -> bool:
    """True when ``folder``'s recorded driver no longer runs: its pid is dead, or now belongs
    to a process started at another time. False without a readable record (a folder of an
    older pu-mlc, or one whose driver is writing it right now)."""
    try:
        record = json.loads((folder / _DRIVER_FILE).read_text())
        pid, start = int(record["pid"]), record.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:                         # alive, another user's: not our driver
        return True
    now = _process_start(pid)
    return start is not None and now is not None and now != start


def _used_by_a_live_process(folder: Path) -> bool:
    """Whether a running process names ``folder`` in its command line (Ray's raylet and GCS
    name their session folder there), works in it or holds a file in it open (Ray's agents,
    orphaned by a killed driver, keep writing their logs for a minute or two): such a folder is
    in use whatever its record says. Linux (/proc) only; elsewhere nothing is seen in use."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    name = str(folder)
    needle = name.encode()

    def inside(link: str) -> bool:
        return link == name or link.startswith(name + "/")

    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() or inside(os.readlink(entry / "cwd")):
                return True
            for fd in os.scandir(entry / "fd"):
                if inside(os.readlink(fd.path)):
                    return True
        except OSError:                             # gone meanwhile, or another user's
            continue
    return False


def remove_stale_temp_dirs(base: str | Path) -> list[Path]:
    """Remove the private session folders in ``base`` left by drivers that are gone (killed:
    SIGKILL runs no exit handler); return those removed.

    Removed: a ``pumlc-ray-*`` directory (not a link) owned by this user whose recorded driver
    no longer runs and that no running process uses (:func:`_used_by_a_live_process`). Kept:
    every other folder, those of live drivers, those of other users, those without a driver
    record (made by an older pu-mlc, or being made right now)."""
    removed = []
    try:
        candidates = sorted(Path(base).glob(_TEMP_PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        try:
            st = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if not _driver_is_gone(folder) or _used_by_a_live_process(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    if removed:
        log.info("removed %d session folder(s) of earlier searches whose driver is gone: %s",
                 len(removed), ", ".join(map(str, removed)))
    return removed


def _keep_private(temp_dir: str) -> None:
    """Ray makes the folder it is given, and the session, logs and sockets folders in it, mode
    0777 (for several users sharing /tmp/ray): make them this user's again. The folder itself
    at 0700 closes everything under it; the session folders are narrowed too."""
    root = Path(temp_dir)
    folders = [root]
    for session in root.glob("session_*"):
        if session.is_dir() and not session.is_symlink():
            folders.append(session)
            folders += [p for p in session.iterdir() if p.is_dir() and not p.is_symlink()]
    for folder in folders:
        try:
            os.chmod(folder, 0o700)
        except OSError as err:
            log.warning("could not make %s private (mode 0700): %s", folder, err)


def _ensure_private_token() -> None:
    """Ray >= 2.59 turns token authentication on for a new local cluster (RAY_AUTH_MODE unset)
    and writes ``~/.ray/auth_token`` with the default umask (world-readable). Create it first,
    readable by its owner only, when Ray would create it."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path = Path.home() / ".ray" / "auth_token"
    try:
        if path.exists():
            if path.stat().st_mode & 0o077:
                log.warning("%s is readable by other users; run: chmod 600 %s", path, path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    except OSError as err:             # read-only home: Ray reports what it needs itself
        log.debug("could not pre-create %s: %s", path, err)


def _shutdown_and_clean(temp_dir: str) -> None:
    try:
        import ray

        ray.shutdown()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def check_cluster_fits(spec: SearchSpec, available: Mapping[str, float]) -> int:
    """Refuse a trial the cluster cannot hold; return the trial slots: the cluster's
    ``pu_mlc_trial_slot`` resources, else how many trials its CPUs/GPUs fit at once (capped by
    ``budget.max_concurrent_trials``)."""
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
    fit = trial_slots(spec, available)
    if spec.max_concurrent_trials and fit < spec.max_concurrent_trials:
        log.warning("the cluster fits %d concurrent trial(s), budget.max_concurrent_trials is %d",
                    fit, spec.max_concurrent_trials)
    if available.get(TRIAL_SLOT):
        return int(available[TRIAL_SLOT])
    return max(fit, 1)


def this_node() -> dict[str, str]:
    """The node this process runs on: ``{"node_id", "ip"}`` (the search's driver node)."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address()}


def pinned_to(node_id: str):
    """A scheduling strategy that runs a task on ``node_id`` and nowhere else."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def check_shared_storage(storage_path: str | Path, where: str, storage=None,
                         timeout_s: float = 600.0) -> list[str]:
    """Refuse a ``storage_path`` that is not the same storage on every node of the cluster.

    The driver writes a marker under ``storage_path``; a Ray task pinned to each alive node reads
    it and writes a marker of its own, which the driver reads back. A node that cannot read the
    driver's marker, or whose marker the driver cannot see, does not share the storage: every
    trial run there would write its records, TensorBoard runs and checkpoints where nobody else
    looks (Ray checks its own checkpoints only when the first one is reported, after an epoch of
    GPU time). An object store (``storage``: a :class:`tune.storage.Storage`) is checked the
    same way: a node without its endpoint or credentials fails here, not after its first epoch.
    Nothing is left behind: the markers are removed, and a folder ``storage_path`` when the
    check created it. Returns the IPs of the nodes checked.
    """
    import secrets

    import ray

    from .storage import Storage

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return [n.get("NodeManagerAddress", "?") for n in nodes]
    location = str(storage_path)
    storage = storage or Storage(location)
    created = not storage.remote and not Path(storage_path).exists()
    token = secrets.token_hex(8)
    probe = (storage.root if storage.remote else Path(storage_path)) / \
        f".pu_mlc_storage_check-{token}"
    try:
        storage.write_bytes(probe / "driver", token.encode())

        @ray.remote(num_cpus=0, max_retries=0)
        def visit(location: str, probe: str, token: str, name: str) -> bool:
            from pathlib import Path as _Path
            from pathlib import PurePosixPath

            from tune.storage import Storage as _Storage

            here = _Storage(location)
            where = PurePosixPath(probe) if here.remote else _Path(probe)
            try:
                seen = here.read_bytes(where / "driver") == token.encode()
                here.write_bytes(where / name, token.encode())
            except OSError:
                return False
            return seen

        refs = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})":
                visit.options(scheduling_strategy=pinned_to(n["NodeID"]),
                              name="pu_mlc:storage-check").remote(
                                  storage.uri(storage.root), str(probe), token,
                                  f"node-{n['NodeID']}")
                for n in nodes}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        bad = []
        for (node, ref), n in zip(refs.items(), nodes):
            answered = ref in ready and ray.get(ref)
            if not (answered and storage.read_bytes(probe / f"node-{n['NodeID']}")
                    == token.encode()):
                bad.append(node)
    finally:
        storage.delete(probe)
        if created:
            try:
                Path(storage_path).rmdir()          # only if still empty
            except OSError:
                pass
    if bad:
        shown = storage.uri(storage.root) if storage.remote else str(storage_path)
        fix = ("give every node the object store's endpoint and credentials (the AWS_* / "
               "GOOGLE_* variables or an instance role)" if storage.remote else
               f"mount one shared file system (NFS) at {shown} on every node, or point "
               f"storage_path at a folder that is shared")
        raise ConfigError(
            f"{where}: storage_path = {shown} is not one storage for the whole Ray cluster: "
            f"{len(bad)} of {len(nodes)} node(s) do not see what is written there "
            f"({', '.join(bad)}); every node writes the trials' records and checkpoints there, "
            f"so {fix}")
    return [n["NodeManagerAddress"] for n in nodes]
