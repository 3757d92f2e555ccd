"""A full disk while a checkpoint or a JSON record is written: one clear error naming the file and
the fix, the earlier file untouched, no temporary file left.

The disk is real: a 4 MiB tmpfs mounted in a private mount namespace (``unshare -m``) that only
the child process sees, so nothing outside the test changes. Torch reports a short write as a
bare ``RuntimeError('... file write failed')``; this is what a user saw before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import torch
    from pu_mlc.engine.outputs import torch_save_atomic
    from pu_mlc.errors import DiskFullError
    from pu_mlc.files import write_json_atomic

    disk = Path(sys.argv[1])
    ckpt, record = disk / "run" / "last.pt", disk / "run" / "metrics.json"
    small = {"epoch": 1, "w": torch.arange(1000, dtype=torch.float32)}
    torch_save_atomic(small, ckpt)                      # fits
    write_json_atomic(record, {"epoch": 1})
    out = {}
    for name, write in (("checkpoint", lambda: torch_save_atomic(
                             {"epoch": 2, "w": torch.zeros(2 << 20)}, ckpt)),   # 8 MiB
                        ("json", lambda: write_json_atomic(record, {"x": "y" * (8 << 20)}))):
        try:
            write()
            out[name] = {"raised": None}
        except DiskFullError as err:
            out[name] = {"raised": "DiskFullError", "message": str(err)}
        except BaseException as err:
            out[name] = {"raised": type(err).__name__, "message": str(err)}
    kept = torch.load(ckpt, weights_only=True)
    out["checkpoint_kept"] = kept["epoch"] == 1 and torch.equal(kept["w"], small["w"])
    out["json_kept"] = json.loads(record.read_text()) == {"epoch": 1}
    out["left"] = sorted(os.listdir(ckpt.parent))
    print(json.dumps(out))
''')


def _run_on_a_tiny_disk(tmp_path: Path) -> dict:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing: install it to run this test", pytrace=False)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    shell = (f"mount -t tmpfs -o size=4m tmpfs {disk} && "
             f"exec {sys.executable} {script} {disk}")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", shell],
                          capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0 and "mount" in proc.stderr and "tmpfs" in proc.stderr:
        pytest.fail(f"cannot mount a tmpfs in a private mount namespace (root needed): "
                    f"{proc.stderr.strip()}", pytrace=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_full_disk_names_the_file_and_keeps_the_earlier_one(tmp_path):
    out = _run_on_a_tiny_disk(tmp_path)
    for name, file in (("checkpoint", "last.pt"), ("json", "metrics.json")):
        got = out[name]
        assert got["raised"] == "DiskFullError", got
        message = got["message"]
        assert f"/run/{file} failed: the disk holding" in message and "is full" in message
        assert "the earlier one is kept as it was" in message and "--output-dir" in message
        assert "\n" not in message
    assert out["checkpoint_kept"] and out["json_kept"]
    assert out["left"] == ["last.pt", "metrics.json"], "a temporary file was left behind"
