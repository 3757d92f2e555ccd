"""What an object store costs a search: the same search with its experiment in a local folder
and in an S3 bucket (moto's S3 API server on a loopback port, as the tests use), side by side.

The search is the object-storage test's: the demo space cut to 2 methods x 2 tasks, 2 one-epoch
trials per study, 1 one-process trial per slot, 2 slots, on the test suite's tiny dataset. For
each storage it prints the search's wall time (its own ``legs.json``) and the bytes the
experiment takes (local: on disk, hard links once; S3: the objects' sizes), and how many objects
or files. A local S3 server measures the extra requests and copies (staging, uploads, Ray's
checkpoint persisting through pyarrow's S3 client), not a network: a real bucket adds its
latency to every one of them. It asserts nothing about speed.

    .venv/bin/python bench/storage_overhead.py [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_concurrency import REPO, _env, build_data  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _space(root: Path) -> Path:
    raw = yaml.safe_load((REPO / "search_spaces" / "demo.yaml").read_text())
    raw["methods"] = [m for m in raw["methods"] if m["name"] in ("pu_mlc", "partial_bce")]
    raw["tasks"] = [{"name": "full", "prob": 1.0}, {"name": "p10", "prob": 0.1}]
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(space: Path, data: Path, storage: str, root: Path, name: str) -> dict:
    values = {"fixed.data": data, "storage_path": storage, "name": name,
              "study_storage": f"sqlite:///{root / (name + '.db')}",
              "fixed.scale_size": 40, "fixed.crop_size": 32, "fixed.batch_size": 4,
              "fixed.eval_batch_size": 16, "budget.trials_per_task": 2, "budget.repeats": 0,
              "resources.num_workers": 1, "scheduler.type": "none", "fixed.train_epochs": 1,
              "fixed.epochs": 1}
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    env = _env()
    env.update(CREDENTIALS, PU_MLC_STAGING_DIR=str(root / "staging"))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "train_entry.py"), "search", "--space",
                           str(space), *sets], cwd=root, env=env, capture_output=True,
                          text=True)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"error: the {name} search exited {proc.returncode}:\n"
                 f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    from tune.storage import join_uri
    from tune.store import ExperimentStore

    store = ExperimentStore(join_uri(storage, name))
    summary = store.read_json(store.summary_file)
    files = list(store.storage.files(store.root))
    return {"search_wall_seconds": summary["wall_seconds"], "process_seconds": seconds,
            "bytes": store.size_on_disk(), "files": len(files),
            "trials": summary["trials"]["trials"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=None,
                        help="working folder (default: a new temporary one, removed after)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    import boto3

    root = args.out or Path(tempfile.mkdtemp(prefix="pumlc-storage-"))
    root.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(CREDENTIALS)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    figures = {}
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench")
        data = build_data(root)
        space = _space(root)
        for name, storage in (("local", str(root / "experiments")),
                              ("s3", f"s3://bench/experiments?endpoint_override={endpoint}"
                                     f"&region=us-east-1")):
            print(f"running the search with its experiment in {name} storage ...", flush=True)
            figures[name] = run(space, data, storage, root, name)
    finally:
        server.stop()
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    local, s3 = figures["local"], figures["s3"]
    print("\n| storage | search wall (s) | experiment (MiB) | files/objects | trials |\n"
          "|---|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['search_wall_seconds']:.0f} | {f['bytes'] / 2 ** 20:.1f} | "
              f"{f['files']} | {f['trials']} |")
    print(f"\ns3 / local: wall time {s3['search_wall_seconds'] / local['search_wall_seconds']:.2f}x, "
          f"bytes {s3['bytes'] / local['bytes']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
