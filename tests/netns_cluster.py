"""A multi-host Ray cluster on one Linux machine: one network namespace per simulated host.

Every host is a network namespace this module creates (``ip netns add``), with its own loopback and
one veth link to a bridge that lives in a further namespace of ours (the "switch"), so the hosts'
addresses (``10.213.0.0/24`` by default) exist only inside namespaces we made: the machine's own
network never sees them, and nothing here routes anywhere else (no default route, no NAT).

    with NetnsCluster(workers=2, private={2: [shared_dir]}) as cluster:
        cluster.head.ip, cluster.workers[0].ip, cluster.client.ip
        cluster.python_on(cluster.head, "import ray; ray.init(); print(ray.nodes())")
        cluster.job_submit(["python", "-c", "print(1)"])          # from the client host
        cluster.kill_host(cluster.workers[0])                     # the host "dies"

- The head runs ``ray start --head --node-ip-address=<head ip> --num-cpus=1
  --dashboard-host=<head ip>`` (jobs API reachable from the other hosts), every worker ``ray start
  --address=<head ip>:6379 --node-ip-address=<its ip> --num-cpus=1``; no custom resources. Token
  auth is on (``RAY_AUTH_MODE=token``; a fresh token in a 0600 file named by
  ``RAY_AUTH_TOKEN_PATH``; ``~/.ray`` is never read or written since the token file exists).
- Each host has its own short ``--temp-dir`` (Unix socket paths stay < 107 bytes) and
  ``RAY_TMPDIR`` pointing there, so ``ray_current_cluster``, sessions, logs and sockets never meet
  another host's or the machine's own Ray (``/tmp/ray``).
- ``private={i: [paths]}``: worker host ``i`` (1-based) gets its own mount namespace
  (``unshare -m --propagation private``, held open by a ``sleep`` "keeper" process) with an empty
  tmpfs mounted over each path: every process run on that host (``nsenter`` into the keeper's
  mount namespace: ``ray start``, its raylet and workers, a driver run later) sees the same private
  folder where every other host sees the shared file system. ``ray start`` needs no ``--block``:
  its daemons inherit the mount namespace whatever their parent does. The namespace and its tmpfs
  vanish with the last of its processes (teardown or :meth:`NetnsCluster.kill_host`, which also
  kills the keeper); nothing is ever mounted in the machine's own mount namespace.
- Teardown ends only the processes inside our namespaces (``ip netns pids``: SIGTERM, then
  SIGKILL), deletes the namespaces (their veths and the bridge go with them) and the temp dirs.
  Never ``ray stop`` (it would stop every Ray on the machine).
- Where namespaces cannot be made (not root, no ``ip``/``unshare``), :class:`NamespaceUnavailable`
  is raised with one line; tests turn it into a failure, never a skip.

Processes are always started as ``ip netns exec <ns> ...`` with the virtual environment's ``ray``
and ``python`` (the venv's bin first on PATH, so job entrypoints find ``python`` there too).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from limits import HANG_GUARD_S

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
PYTHON = sys.executable
GCS_PORT = 6379
DASHBOARD_PORT = 8265
NS_PREFIX = "pumlc"                     # every namespace this module makes starts with this
_counter = itertools.count()


class NamespaceUnavailable(RuntimeError):
    """Network namespaces cannot be made here (one-line message)."""


@dataclass
class Host:
    """One simulated machine: a network namespace with one address on the cluster's bridge, and,
    with ``private_paths``, its own mount namespace where an empty tmpfs covers each of them."""
    role: str                           # "head", "worker1", ..., "client"
    netns: str
    ip: str
    temp_dir: Path                      # this host's Ray --temp-dir / RAY_TMPDIR
    private_paths: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)   # environment of its processes
    keeper: Optional[subprocess.Popen] = None   # holds the private mount namespace open

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on this host: inside its network namespace and, when it has private
        paths, inside its one private mount namespace (``nsenter`` into the keeper's), so every
        process of the host (raylet, workers, a driver run later) sees the same private tmpfs."""
        argv = [str(a) for a in argv]
        if self.private_paths:
            argv = ["nsenter", f"--mount=/proc/{self._keeper_pid()}/ns/mnt", "--", *argv]
        return ["ip", "netns", "exec", self.netns, *argv]

    def _keeper_pid(self) -> int:
        """The process holding this host's private mount namespace (``unshare -m --propagation
        private``, a tmpfs mounted over each private path, then ``sleep``); started on first use,
        and again after :meth:`NetnsCluster.kill_host` (a rebooted machine: empty tmpfs again)."""
        if self.keeper is not None and self.keeper.poll() is None:
            return self.keeper.pid
        mounts = " && ".join(f'mount -t tmpfs -o size=256m,mode=1777 pumlc-private "${i + 1}"'
                             for i in range(len(self.private_paths)))
        # ip netns exec and unshare exec (no fork), so the Popen's pid is the keeper itself
        self.keeper = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", f'{mounts} && echo ready && exec sleep infinity', "sh",
             *[str(p) for p in self.private_paths]],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.keeper.stdout.readline()
        self.keeper.stdout.close()
        if line.strip() != "ready":
            err = self.keeper.stderr.read()
            self.keeper.wait(timeout=HANG_GUARD_S)
            raise RuntimeError(f"private mount namespace of {self.role} failed: {err.strip()}")
        self.keeper.stderr.close()
        return self.keeper.pid

    def reap(self) -> None:
        """Collect the keeper's exit status once it has been killed (no zombie left behind)."""
        if self.keeper is not None and self.keeper.poll() is None:
            try:
                self.keeper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass

    def run(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
            timeout: float = HANG_GUARD_S, **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` on this host; returns the CompletedProcess (text, captured output)."""
        return subprocess.run(self.argv(argv), env=dict(env if env is not None else self.env),
                              capture_output=True, text=True, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
              **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(argv),
                                env=dict(env if env is not None else self.env), **kwargs)

    def pids(self) -> list[int]:
        """Live processes in this host's network namespace."""
        return netns_pids(self.netns)


# ------------------------------------------------------------------------------- namespaces
def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def netns_pids(netns: str) -> list[int]:
    out = _ip("netns", "pids", netns, check=False)
    if out.returncode != 0:
        return []
    me = os.getpid()
    return [int(p) for p in out.stdout.split() if p.strip().isdigit() and int(p) != me]


def our_namespaces(prefix: str = NS_PREFIX) -> list[str]:
    """Network namespaces whose name starts with ``prefix`` (``ip netns list``)."""
    out = _ip("netns", "list", check=False)
    return [line.split()[0] for line in out.stdout.splitlines()
            if line.strip() and line.split()[0].startswith(prefix)]


def check_namespaces_available() -> None:
    """Raise :class:`NamespaceUnavailable` (one line) where this machine cannot host the cluster."""
    if os.geteuid() != 0:
        raise NamespaceUnavailable(
            "netns cluster: network namespaces need root (run the e2e tests as root, as CI does)")
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            raise NamespaceUnavailable(
                f"netns cluster: '{tool}' not found on PATH (install iproute2 / util-linux)")


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _program(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.path.basename(f.read().split(b"\0")[0].decode(errors="replace"))
    except OSError:
        return ""


def end_namespace_processes(netns_names: Sequence[str], grace_s: float = 15.0) -> list[int]:
    """SIGTERM the processes in these namespaces in ``ray stop``'s order (raylets, then all other
    processes, then gcs_server; ray/scripts/scripts.py ``stop``: all at once leaves gcs_server and
    the raylets waiting on each other for the whole grace), each wave given ``grace_s`` to exit;
    then SIGKILL whatever is left. Returns the pids still alive at the end (none expected)."""
    def alive() -> list[int]:
        return [p for ns in netns_names for p in netns_pids(ns)]

    waves = (lambda prog: prog == "raylet",
             lambda prog: prog not in ("raylet", "gcs_server"),
             lambda prog: True)
    for in_wave in waves:
        targets = [p for p in alive() if in_wave(_program(p))]
        _signal_all(targets, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while set(targets) & set(alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        pids = alive()
        if not pids:
            return []
        _signal_all(pids, signal.SIGKILL)       # every round: a late fork gets it too
        time.sleep(0.2)
    return alive()


def _netns_inode(netns: str) -> Optional[int]:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return None


def _pids_in_netns_inodes(inodes: set[int]) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino in inodes:
                    out.append(int(d))
            except OSError:             # gone, or a zombie
                pass
    return out


def _kill_by_netns_inode(inodes: set[int]) -> list[int]:
    """SIGKILL the processes in the network namespaces with these inodes; those that survive."""
    deadline = time.monotonic() + 60.0
    while inodes and time.monotonic() < deadline:
        pids = _pids_in_netns_inodes(inodes)
        if not pids:
            return []
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.2)
    return _pids_in_netns_inodes(inodes) if inodes else []


# ---------------------------------------------------------------------------------- cluster
class NetnsCluster:
    """Head + ``workers`` worker hosts + a client host, each its own network namespace, with a Ray
    cluster started on head and workers (see the module docstring)."""

    def __init__(self, workers: int = 2, private: Optional[Mapping[int, Sequence[Path]]] = None,
                 subnet: str = "10.213.0", env: Optional[Mapping[str, str]] = None,
                 head_env: Optional[Mapping[str, str]] = None, num_cpus: int = 1,
                 object_store_memory: int = 200 * 1024 * 1024, start_ray: bool = True):
        self.n_workers = workers
        self.private = {int(k): tuple(Path(p) for p in v) for k, v in (private or {}).items()}
        bad = [k for k in self.private if not 1 <= k <= workers]
        if bad:
            raise ValueError(f"private worker index {bad} not in 1..{workers}")
        self.subnet = subnet
        self.extra_env = dict(env or {})
        self.head_env = dict(head_env or {})
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.start_ray = start_ray
        self.tag = f"{NS_PREFIX}{os.getpid()}x{next(_counter)}"
        self.switch = f"{self.tag}-sw"
        self.hosts: list[Host] = []
        self.base_dir: Optional[Path] = None
        self.token_path: Optional[Path] = None
        self.timings: dict[str, float] = {}
        self._made: list[str] = []        # namespaces created, in order

    # ------------------------------------------------------------------ addresses
    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def workers(self) -> list[Host]:
        return self.hosts[1:1 + self.n_workers]

    @property
    def client(self) -> Host:
        return self.hosts[-1]

    @property
    def ray_hosts(self) -> list[Host]:
        return self.hosts[:1 + self.n_workers]

    @property
    def gcs_address(self) -> str:
        return f"{self.head.ip}:{GCS_PORT}"

    @property
    def job_address(self) -> str:
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "NetnsCluster":
        check_namespaces_available()
        try:
            t0 = time.monotonic()
            self._make_network()
            self.timings["network_s"] = time.monotonic() - t0
            if self.start_ray:
                t0 = time.monotonic()
                self._start_ray()
                self.timings["ray_start_s"] = time.monotonic() - t0
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make_network(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="pm", dir="/tmp"))     # short: socket paths
        os.chmod(self.base_dir, 0o755)
        self.token_path = self.base_dir / "auth_token"
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        roles = ["head", *[f"worker{i}" for i in range(1, self.n_workers + 1)], "client"]
        self._add_netns(self.switch, first=True)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, role in enumerate(roles):
            ns = f"{self.tag}-{role}"
            self._add_netns(ns)
            ip = f"{self.subnet}.{i + 2}"
            port = f"p{i}"                 # switch side; its own namespace: no name clash
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            temp = self.base_dir / _short(role)
            temp.mkdir()
            private = self.private.get(i, ()) if role.startswith("worker") else ()
            host = Host(role=role, netns=ns, ip=ip, temp_dir=temp, private_paths=private)
            host.env = self._env_for(host)
            self.hosts.append(host)

    def _add_netns(self, name: str, first: bool = False) -> None:
        out = _ip("netns", "add", name, check=False)
        if out.returncode != 0:
            err = out.stderr.strip()
            msg = err.splitlines()[-1] if err else f"rc {out.returncode}"
            if first:
                raise NamespaceUnavailable(f"netns cluster: cannot create a network namespace "
                                           f"(ip netns add {name}): {msg}")
            raise RuntimeError(f"ip netns add {name}: {msg}")
        self._made.append(name)

    def _env_for(self, host: Host, token: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAY_") and k not in ("TMPDIR",)}
        env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", OMP_NUM_THREADS="1",
                   PYTHONUNBUFFERED="1", RAY_DISABLE_USAGE_STATS="1",
                   RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(host.temp_dir))
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        env.update(self.extra_env)
        if host.role == "head":
            env.update(self.head_env)
        return env

    def _start_ray(self) -> None:
        head = self.head
        start = head.run([RAY, "start", "--head", f"--node-ip-address={head.ip}",
                          f"--port={GCS_PORT}", f"--num-cpus={self.num_cpus}", "--num-gpus=0",
                          f"--dashboard-host={head.ip}", f"--dashboard-port={DASHBOARD_PORT}",
                          "--include-dashboard=true", f"--temp-dir={head.temp_dir}",
                          f"--object-store-memory={self.object_store_memory}",
                          "--disable-usage-stats"])
        if start.returncode != 0:
            raise RuntimeError(f"ray start --head on {head.ip} failed: "
                               f"{(start.stdout + start.stderr)[-3000:]}")
        procs = [(w, self._popen_worker_start(w)) for w in self.workers]
        failed = []
        for w, p in procs:
            out, _ = p.communicate(timeout=HANG_GUARD_S)
            if p.returncode != 0:
                failed.append(f"{w.role} ({w.ip}): {out[-2000:]}")
        if failed:
            raise RuntimeError("ray start on worker host failed: " + " | ".join(failed))
        self.wait_for_nodes(len(self.ray_hosts))

    def _popen_worker_start(self, w: Host) -> subprocess.Popen:
        return w.popen(
            [RAY, "start", f"--address={self.gcs_address}", f"--node-ip-address={w.ip}",
             f"--num-cpus={self.num_cpus}", "--num-gpus=0", f"--temp-dir={w.temp_dir}",
             f"--object-store-memory={self.object_store_memory}", "--disable-usage-stats"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def restart_host(self, host: Host) -> None:
        """Start Ray again on a worker host that :meth:`kill_host` ended (a rebooted machine
        joining again: a new node; its private paths are empty tmpfs again)."""
        if host not in self.workers:
            raise ValueError(f"{host.role} is not a worker host")
        proc = self._popen_worker_start(host)
        out, _ = proc.communicate(timeout=HANG_GUARD_S)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start on {host.role} ({host.ip}) failed: {out[-2000:]}")
        self.wait_for_nodes(1 + sum(bool(h.pids()) for h in self.workers))

    def close(self) -> None:
        """End every process in our namespaces, delete them, remove the temp dirs. Idempotent."""
        inodes = {_netns_inode(ns) for ns in self._made} - {None}
        left = end_namespace_processes(self._made)
        for ns in reversed(self._made):       # hosts first, the switch (bridge) last
            _ip("netns", "del", ns, check=False)
        # a process forked into one of our namespaces after its last check would keep the
        # (now nameless) namespace alive: find it by the namespace's inode, end it
        left += _kill_by_netns_inode(inodes)
        for host in self.hosts:
            host.reap()
        self._made = [ns for ns in self._made if ns in our_namespaces(self.tag + "-")]
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            if not self.base_dir.exists():
                self.base_dir = None
        if left or self._made:
            raise RuntimeError(f"netns cluster teardown left processes {left} / "
                               f"namespaces {self._made}")

    # ------------------------------------------------------------------ running things
    def env(self, host: Host, token: bool = True, **extra: str) -> dict[str, str]:
        """The environment of a process on ``host``: the cluster's token (unless ``token=False``:
        then no RAY_AUTH_* at all) and, on the head and worker hosts, RAY_ADDRESS = the head's GCS
        address (``ray.init()`` joins the cluster). The client host gets no RAY_ADDRESS: the
        ``ray job`` CLI lets RAY_ADDRESS override ``--address`` (ray/dashboard/utils.py,
        get_address_for_submission_client), and a GCS address there sends it through the GCS port
        instead of the jobs API."""
        env = self._env_for(host, token=token)
        if host.role != "client":
            env["RAY_ADDRESS"] = self.gcs_address
        env.update(extra)
        return env

    def run_on(self, host: Host, argv: Sequence[str], token: bool = True,
               timeout: float = HANG_GUARD_S, env: Optional[Mapping[str, str]] = None,
               **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` on ``host`` (rc/stdout/stderr in the CompletedProcess)."""
        full = self.env(host, token=token)
        full.update(env or {})
        return host.run(argv, env=full, timeout=timeout, **kwargs)

    def python_on(self, host: Host, code_or_script: str | Path, *args: str,
                  token: bool = True, timeout: float = HANG_GUARD_S,
                  env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
        """Run Python (a script path, or code for ``-c``) on ``host``; on the head and worker hosts
        RAY_ADDRESS is set, so ``ray.init()`` joins this cluster as a driver on that host."""
        if isinstance(code_or_script, Path):
            argv = [PYTHON, str(code_or_script), *args]
        else:
            argv = [PYTHON, "-c", code_or_script, *args]
        return self.run_on(host, argv, token=token, timeout=timeout, env=env)

    def client_run(self, argv: Sequence[str], token: bool = True,
                   timeout: float = HANG_GUARD_S, **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` on the client host (which has no Ray node)."""
        return self.run_on(self.client, argv, token=token, timeout=timeout, **kwargs)

    def job_submit(self, entrypoint: Sequence[str], token: bool = True,
                   working_dir: Optional[Path] = None, extra: Sequence[str] = (),
                   timeout: float = HANG_GUARD_S, **kwargs) -> subprocess.CompletedProcess:
        """``ray job submit --address http://<head ip>:8265 [--working-dir D] -- entrypoint`` from
        the client host; waits for the job and returns the CLI's CompletedProcess."""
        argv = [RAY, "job", "submit", "--address", self.job_address]
        if working_dir is not None:
            argv += ["--working-dir", str(working_dir)]
        argv += [*extra, "--", *entrypoint]
        return self.client_run(argv, token=token, timeout=timeout, **kwargs)

    def wait_for_nodes(self, alive: int, dead_ips: Sequence[str] = (),
                       timeout: float = HANG_GUARD_S) -> list[dict]:
        """Poll ``ray.nodes()`` from the head until ``alive`` nodes are alive and every IP in
        ``dead_ips`` has no alive node; returns the node list (IP, alive, node id, resources)."""
        code = (
            "import json, sys, time, ray\n"
            "alive, guard = int(sys.argv[1]), float(sys.argv[3])\n"
            "dead = set(sys.argv[2].split(',')) - {''}\n"
            "ray.init(logging_level='ERROR', log_to_driver=False)\n"
            "t0 = time.monotonic()\n"
            "while True:\n"
            "    nodes = ray.nodes()\n"
            "    up = [n for n in nodes if n['Alive']]\n"
            "    if len(up) == alive and not dead & {n['NodeManagerAddress'] for n in up}:\n"
            "        break\n"
            "    if time.monotonic() - t0 > guard:\n"
            "        print(json.dumps(nodes, default=str))\n"
            "        sys.exit('nodes never reached the expected state')\n"
            "    time.sleep(0.5)\n"
            "print('NODES=' + json.dumps([{'ip': n['NodeManagerAddress'], 'alive': n['Alive'],\n"
            "      'node_id': n['NodeID'], 'resources': n['Resources']} for n in nodes]))\n")
        out = self.python_on(self.head, code, str(alive), ",".join(dead_ips), str(timeout),
                             timeout=timeout + 120)
        if out.returncode != 0:
            raise RuntimeError(f"waiting for {alive} alive nodes failed: "
                               f"{(out.stdout + out.stderr)[-3000:]}")
        line = [l for l in out.stdout.splitlines() if l.startswith("NODES=")][-1]
        return json.loads(line[len("NODES="):])

    def kill_host(self, host: Host) -> list[int]:
        """SIGKILL every process of ``host`` (the machine dies: raylet, workers, agents at once).
        Returns the pids killed. The namespace stays (a dead machine keeps its address)."""
        killed: list[int] = []
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            pids = host.pids()
            if not pids:
                host.reap()
                return killed
            _signal_all(pids, signal.SIGKILL)
            killed += [p for p in pids if p not in killed]
            time.sleep(0.1)
            host.reap()
        raise RuntimeError(f"processes of {host.role} survive SIGKILL: {host.pids()}")


def _short(role: str) -> str:
    """Short temp-dir name of a role: head -> h, worker2 -> w2, client -> c."""
    return {"head": "h", "client": "c"}.get(role, "w" + role[len("worker"):])
