"""The namespace cluster of tests/netns_cluster.py works as separate machines would.

One cluster for the module: a head, two worker hosts (worker2's view of ``shared`` is a private
empty tmpfs), a client host; 1 CPU per node, no custom resources, token auth. Checked, in order:
three alive nodes with three distinct IPs; a task pinned to each node reports that node's IP and
writes into the shared folder (worker2 writes into its private one); ``ray job submit`` from the
client with the token returns the job's result (exit code: see test_job_submit_*), without the
token (or with a wrong one) it is refused; a submitted driver's ``ray.init(runtime_env=
{"env_vars": ...})`` reaches tasks and actors on other nodes that its tasks create (the way a Tune
trial creates Ray Train's controller); PostgreSQL on the head serves Optuna clients on two other
hosts at once;
SIGKILL of every process of worker2 makes the head see that node dead. Teardown leaves no
namespace, mount or process.

Where namespaces cannot be made (not root, no iproute2) the tests fail with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from netns_cluster import (NamespaceUnavailable, NetnsCluster, PYTHON, netns_pids,
                           our_namespaces)
from pg_server import pg_server, run_optuna_workers

pytestmark = pytest.mark.e2e

TIMES: dict[str, float] = {}

PROBE = """
import json, os, sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
shared = sys.argv[1]
ray.init(logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
def probe(shared):
    ip = ray.util.get_node_ip_address()
    before = sorted(os.listdir(shared))
    with open(os.path.join(shared, f"from-{ip}.txt"), "w") as f:
        f.write(ip)
    return {"ip": ip, "node_id": ray.get_runtime_context().get_node_id(), "before": before,
            "after": sorted(os.listdir(shared))}

nodes = [n for n in ray.nodes() if n["Alive"]]
refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
        .remote(shared) for n in nodes]
print("RESULT=" + json.dumps({
    "nodes": [{"ip": n["NodeManagerAddress"], "node_id": n["NodeID"],
               "cpu": n["Resources"].get("CPU"),
               "custom": sorted(k for k in n["Resources"] if k not in
                                ("CPU", "GPU", "memory", "object_store_memory")
                                and not k.startswith("node:"))} for n in nodes],
    "probes": ray.get(refs)}))
"""


def result_of(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT=")][-1]
    return json.loads(line[len("RESULT="):])


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shared")
    (path / "from-test.txt").write_text("written by the test process")
    return path


@pytest.fixture(scope="module")
def cluster(shared):
    t0 = time.monotonic()
    unavailable = None
    try:
        c = NetnsCluster(workers=2, private={2: [shared]}).__enter__()
    except NamespaceUnavailable as e:
        unavailable = str(e)
    if unavailable:
        pytest.fail(unavailable, pytrace=False)          # one line; never a skip
    TIMES["cluster_up_s"] = time.monotonic() - t0
    names = [h.netns for h in c.hosts] + [c.switch]
    try:
        yield c
    finally:
        t0 = time.monotonic()
        c.close()
        TIMES["teardown_s"] = time.monotonic() - t0
        print(f"\nnetns cluster times: {json.dumps({k: round(v, 1) for k, v in TIMES.items()})}")
    assert not set(names) & set(our_namespaces())
    assert not any(netns_pids(ns) for ns in names)
    # the private tmpfs lived only in worker2's mount namespace, gone with its processes
    assert "pumlc-private" not in Path("/proc/self/mountinfo").read_text()


def test_without_iproute2_the_cluster_refuses_in_one_line(monkeypatch):
    monkeypatch.setenv("PATH", str(Path(PYTHON).parent))        # no ip, unshare, nsenter
    with pytest.raises(NamespaceUnavailable) as err:
        NetnsCluster(workers=1).__enter__()
    assert "'ip' not found" in str(err.value) and "\n" not in str(err.value)


def test_three_hosts_three_ips_and_private_storage(cluster, shared):
    t0 = time.monotonic()
    head, w1, w2 = cluster.head, *cluster.workers
    assert len({head.ip, w1.ip, w2.ip, cluster.client.ip}) == 4
    res = result_of(cluster.python_on(head, PROBE, str(shared)))
    TIMES["probe_s"] = time.monotonic() - t0
    nodes = res["nodes"]
    assert sorted(n["ip"] for n in nodes) == sorted([head.ip, w1.ip, w2.ip])
    assert all(n["cpu"] == 1 and not n["custom"] for n in nodes)      # no custom resources
    by_ip = {p["ip"]: p for p in res["probes"]}
    assert set(by_ip) == {head.ip, w1.ip, w2.ip}                        # each task on its node
    assert {p["node_id"] for p in res["probes"]} == {n["node_id"] for n in nodes}
    # the shared hosts see the test's file; worker2 sees an empty folder (its private tmpfs)
    for ip in (head.ip, w1.ip):
        assert "from-test.txt" in by_ip[ip]["before"]
    assert by_ip[w2.ip]["before"] == []
    assert by_ip[w2.ip]["after"] == [f"from-{w2.ip}.txt"]
    on_disk = {p.name for p in shared.iterdir()}
    assert on_disk == {"from-test.txt", f"from-{head.ip}.txt", f"from-{w1.ip}.txt"}
    # a process run later on worker2 shares its Ray processes' private folder; worker1 the disk
    assert cluster.run_on(w2, ["ls", str(shared)]).stdout.split() == [f"from-{w2.ip}.txt"]
    assert f"from-{w1.ip}.txt" in cluster.run_on(w1, ["ls", str(shared)]).stdout.split()
    # the tmpfs is not mounted where the test process (the machine) looks
    assert str(shared) not in Path("/proc/self/mountinfo").read_text()


def test_job_submit_from_the_client_host_with_and_without_token(cluster, tmp_path):
    """``ray job submit`` (no ``--no-wait``) streams the job's logs and exits 0 when the job
    SUCCEEDED. When the entrypoint exits nonzero the CLI exits 1, not the entrypoint's code
    (ray/dashboard/modules/job/cli.py: ``if job_status == JobStatus.FAILED: sys.exit(1)``), after
    printing ``Job '<id>' failed`` and ``Status message: Job entrypoint command failed with exit
    code 3, last available logs ...``; the code itself is ``JobInfo.driver_exit_code``
    (``JobSubmissionClient.get_job_info``). A STOPPED job leaves the CLI with 0."""
    t0 = time.monotonic()
    ok = cluster.job_submit(["python", "-c", "import socket; print('job-ran-on', "
                             "socket.gethostname())"])
    TIMES["job_submit_ok_s"] = time.monotonic() - t0
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]
    assert "job-ran-on" in ok.stdout and "succeeded" in ok.stdout + ok.stderr

    t0 = time.monotonic()
    bad = cluster.job_submit(["python", "-c", "import sys; print('about-to-fail'); sys.exit(3)"],
                             extra=["--submission-id", "pumlc-exit-3"])
    TIMES["job_submit_fail_s"] = time.monotonic() - t0
    text = bad.stdout + bad.stderr
    print(f"\n--- ray job submit, entrypoint exit 3: CLI rc {bad.returncode}\n{text[-1500:]}")
    assert bad.returncode == 1, text[-3000:]
    assert "about-to-fail" in text and "Job 'pumlc-exit-3' failed" in text
    assert "Job entrypoint command failed with exit code 3" in text
    info = result_of(cluster.client_run([PYTHON, "-c", (
        "import json, sys; from ray.job_submission import JobSubmissionClient as C; "
        "i = C(sys.argv[1]).get_job_info('pumlc-exit-3'); "
        "print('RESULT=' + json.dumps([str(i.status), i.driver_exit_code]))"),
        cluster.job_address]))
    assert info == ["FAILED", 3]

    t0 = time.monotonic()
    refused = cluster.job_submit(["python", "-c", "print('must-not-run')"], token=False)
    TIMES["job_submit_refused_s"] = time.monotonic() - t0
    text = refused.stdout + refused.stderr
    print(f"\n--- ray job submit without the token: CLI rc {refused.returncode}\n{text[-600:]}")
    assert refused.returncode != 0
    assert "must-not-run" not in refused.stdout
    assert "Unauthorized: Missing authentication token" in text    # HTTP 401 from the jobs API

    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    refused = cluster.job_submit(["python", "-c", "print('must-not-run')"],
                                 env={"RAY_AUTH_TOKEN_PATH": str(wrong)})
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "must-not-run" not in refused.stdout
    assert "Forbidden: Invalid authentication token" in text, text[-2000:]      # HTTP 403


ENV_PROBE = """
import json, os, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Pin
KEYS = ("PUMLC_JOB_VAR", "PUMLC_DRIVER_OS_ONLY", "PUMLC_ACTOR_VAR",
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S")
os.environ["PUMLC_DRIVER_OS_ONLY"] = "driver-os-environ"      # the driver's own environment only
ray.init(runtime_env={"env_vars": {"PUMLC_JOB_VAR": "job-runtime-env",
                                   "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "77"}},
         logging_level="ERROR")
nodes = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}

def seen():
    return {"ip": ray.util.get_node_ip_address(), **{k: os.environ.get(k) for k in KEYS},
            "working_dir_file": os.path.exists("probe_env.py")}

@ray.remote(num_cpus=0)
class Controller:                    # like Train's TrainController: created with its own env_vars
    def seen(self):
        return seen()

@ray.remote(num_cpus=0)
def grandchild():
    return seen()

@ray.remote(num_cpus=0)
def trial(head_id):                  # like a Tune trial / a study task, on another node
    from ray.train.v2._internal.constants import get_env_vars_to_propagate
    actor = Controller.options(runtime_env={"env_vars": {"PUMLC_ACTOR_VAR": "actor-own"}},
                               scheduling_strategy=Pin(head_id, soft=False)).remote()
    return {"task": seen(), "train_would_propagate": get_env_vars_to_propagate(),
            "actor_with_own_env": ray.get(actor.seen.remote()),
            "grandchild": ray.get(grandchild.options(
                scheduling_strategy=Pin(head_id, soft=False)).remote())}

head_ip, worker_ip = os.environ["PROBE_HEAD_IP"], os.environ["PROBE_WORKER_IP"]
print("RESULT=" + json.dumps(ray.get(trial.options(
    scheduling_strategy=Pin(nodes[worker_ip], soft=False)).remote(nodes[head_ip]))))
"""


def test_runtime_env_env_vars_of_a_submitted_driver_reach_nested_tasks_and_actors(cluster,
                                                                                  tmp_path):
    """What reaches processes the driver never started itself (a Tune trial on another node,
    the TrainController actor it creates with its own ``runtime_env``, their children): the job's
    ``ray.init(runtime_env={"env_vars": ...})`` (merged with ``ray job submit``'s working_dir
    runtime env), never the driver's ``os.environ``. Ray Train 2.60 also copies a fixed list of
    RAY_TRAIN_* variables from the process calling ``fit()`` into the controller's runtime env
    (``get_env_vars_to_propagate``)."""
    t0 = time.monotonic()
    work = tmp_path / "job"
    work.mkdir()
    (work / "probe_env.py").write_text(ENV_PROBE)
    head, w1 = cluster.head, cluster.workers[0]
    out = cluster.job_submit(["env", f"PROBE_HEAD_IP={head.ip}", f"PROBE_WORKER_IP={w1.ip}",
                              "python", "probe_env.py"], working_dir=work)
    TIMES["runtime_env_probe_s"] = time.monotonic() - t0
    res = result_of(out)
    print(f"\n--- runtime env probe: {json.dumps(res, indent=1)}")
    assert res["task"]["ip"] == w1.ip
    assert res["actor_with_own_env"]["ip"] == head.ip == res["grandchild"]["ip"]
    for where in ("task", "actor_with_own_env", "grandchild"):
        got = res[where]
        assert got["PUMLC_JOB_VAR"] == "job-runtime-env", where
        assert got["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "77", where
        assert got["PUMLC_DRIVER_OS_ONLY"] is None, where
        assert got["working_dir_file"], where                 # ray job submit's working_dir kept
    assert res["actor_with_own_env"]["PUMLC_ACTOR_VAR"] == "actor-own"      # merged, per key
    assert res["grandchild"]["PUMLC_ACTOR_VAR"] is None
    assert res["train_would_propagate"].get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S") == "77"


def test_postgresql_on_the_head_serves_optuna_on_two_other_hosts(cluster):
    t0 = time.monotonic()
    head, w1 = cluster.head, cluster.workers[0]
    with pg_server(listen=head.ip, netns=head.netns) as pg:
        create = cluster.run_on(w1, [PYTHON, "-c",
                                     "import optuna, sys; optuna.create_study(study_name='s', "
                                     "storage=optuna.storages.RDBStorage(sys.argv[1]))", pg.url])
        assert create.returncode == 0, create.stderr[-3000:]
        hosts = {"w1": w1, "client": cluster.client}

        def launch(argv):
            host = hosts[argv[-1]]
            return host.popen(argv, env=cluster.env(host), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

        numbers = run_optuna_workers(launch, pg.url, "s", 5, tuple(hosts))
        # the machine itself cannot reach the server: check through the client host
        check = cluster.run_on(cluster.client, [PYTHON, "-c", (
            "import json, sys, optuna; s = optuna.load_study(study_name='s', storage=sys.argv[1]);"
            "print('RESULT=' + json.dumps([[t.number, t.state.name, t.user_attrs['worker']] "
            "for t in s.get_trials()]))"), pg.url])
        trials = result_of(check)
    TIMES["postgres_s"] = time.monotonic() - t0
    assert sorted(n for ns in numbers for n in ns) == list(range(10))
    assert sorted(t[0] for t in trials) == list(range(10))
    assert {t[1] for t in trials} == {"COMPLETE"}
    assert {t[2] for t in trials} == set(hosts)
    assert not head.pids() or all("postgres" not in _cmd(p) for p in head.pids())


def _mnt_ns(pid: int):
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_kill_host_makes_the_head_see_the_node_dead(cluster):
    w2 = cluster.workers[1]
    assert w2.pids()
    private_mnt = {_mnt_ns(p) for p in w2.pids()} - {None}
    assert len(private_mnt) == 1 and _mnt_ns(os.getpid()) not in private_mnt   # one, its own
    t0 = time.monotonic()
    killed = cluster.kill_host(w2)
    assert killed and not w2.pids()
    # the private mount namespace (and its tmpfs) died with its last process
    assert not [p for p in _all_pids() if _mnt_ns(p) in private_mnt]
    nodes = cluster.wait_for_nodes(2, dead_ips=[w2.ip])
    TIMES["node_death_seen_s"] = time.monotonic() - t0
    dead = [n for n in nodes if n["ip"] == w2.ip]
    assert dead and not any(n["alive"] for n in dead)
    assert sorted(n["ip"] for n in nodes if n["alive"]) == sorted(
        [cluster.head.ip, cluster.workers[0].ip])
