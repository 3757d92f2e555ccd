"""Shared, session-scoped datasets for the whole test suite (tiny, real images, built once).

- ``coco_format_root``: the demo builder's ``coco`` layout (24 train / 8 val / 12 test images,
  112 px); ``coco_format_dataset`` adds the labels read back from its json.
- ``coco2014_root``: COCO-2014 layout (24 train2014 / 12 val2014 images, 112 px; category ids
  with gaps listed out of order; image 2 of each split has no annotation).
- ``voc2007_root``: a folder holding ``VOCdevkit/VOC2007`` (16 trainval / 10 test images, 112 px;
  10 of the 20 VOC names used; difficult objects, a class only difficult in trainval image 0).
- ``methods_search``: one real multi-method search on a local Ray (2 tasks x 3 methods, of which
  the two BCE baselines are one study at full labels: 5 studies, 2 trials + 3 repeats each, 1
  gloo worker per trial, 2 trial slots), run once per session for the tests that read a
  finished fair search (tests/test_e2e_methods.py, tests/test_report.py,
  tests/test_e2e_report_truth.py, tests/test_e2e_tensorboard_api.py).
The ``*_dataset`` fixtures are :class:`tests.builders.BuiltDataset` (root + expected labels).
Fixtures are shared: copy them (``builders.copy_dataset``) before damaging anything.
- ``module_tmp``: a folder for the runs one test module shares, removed when the module's tests
  passed. A fitted run leaves about 400 MB of checkpoints, and pytest otherwise keeps every
  folder of a session until it ends: 16 GB for the unit suite, more than some CI disks hold.
  (``tmp_path_retention_policy = "failed"`` in pyproject.toml does the same for ``tmp_path``.)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import builders  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_word_vector_cache(tmp_path_factory):
    """The GloVe class-vector cache of this session (inherited by every subprocess and Ray
    worker the tests start), so no test reads or fills the user's ``~/.cache/pu-mlc``."""
    import os

    os.environ["PU_MLC_CACHE_DIR"] = str(tmp_path_factory.mktemp("pu_mlc_cache"))
    yield
    os.environ.pop("PU_MLC_CACHE_DIR", None)


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory) -> Path:
    """A folder for one module's shared runs, removed after the module unless a test failed."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    return builders.FASHION_MNIST_DIR


@pytest.fixture(scope="session")
def coco_format_dataset(tmp_path_factory) -> builders.BuiltDataset:
    return builders.write_coco_format(tmp_path_factory.mktemp("coco_format") / "demo")


@pytest.fixture(scope="session")
def coco_format_root(coco_format_dataset) -> Path:
    return coco_format_dataset.root


@pytest.fixture(scope="session")
def coco2014_dataset(tmp_path_factory) -> builders.BuiltDataset:
    return builders.write_coco2014(tmp_path_factory.mktemp("coco2014"))


@pytest.fixture(scope="session")
def coco2014_root(coco2014_dataset) -> Path:
    return coco2014_dataset.root


@pytest.fixture(scope="session")
def voc2007_dataset(tmp_path_factory) -> builders.BuiltDataset:
    return builders.write_voc2007(tmp_path_factory.mktemp("voc2007"))


@pytest.fixture(scope="session")
def voc2007_root(voc2007_dataset) -> Path:
    return voc2007_dataset.root


# ------------------------------------------------------------------ the shared finished search
TASKS = {"full": 1.0, "p10": 0.1}
METHODS = ("pu_mlc", "partial_bce", "assume_negative_bce")
TRIALS = 2
REPEATS = 3
#: The studies the search runs, with the methods each stands for: at full labels partial and
#: assume-negative BCE are both BCE, so one study (named after the first) runs for both.
STUDIES = {"full.pu_mlc": ("pu_mlc",),
           "full.partial_bce": ("partial_bce", "assume_negative_bce"),
           "p10.pu_mlc": ("pu_mlc",), "p10.partial_bce": ("partial_bce",),
           "p10.assume_negative_bce": ("assume_negative_bce",)}


def study_of(task: str, method: str) -> str:
    """The study of the shared search that holds ``method``'s trials at ``task``."""
    return next(s for s, methods in STUDIES.items()
                if s.startswith(f"{task}.") and method in methods)


@pytest.fixture(scope="session")
def methods_search(coco_format_root, tmp_path_factory):
    """``(experiment_dir, completed_process)`` of the shipped demo space cut to two methods and
    two tasks, on the tiny dataset."""
    import yaml

    from limits import HANG_GUARD_S
    from ray_helpers import REPO, run_entry, tiny_overrides

    root = tmp_path_factory.mktemp("methods")
    raw = yaml.safe_load((REPO / "search_spaces" / "demo.yaml").read_text())
    raw["methods"] = [m for m in raw["methods"] if m["name"] in METHODS]
    raw["tasks"] = [{"name": name, "prob": prob} for name, prob in TASKS.items()]
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    storage = root / "experiments"
    proc = run_entry(["search", "--space", str(space),
                      *tiny_overrides(coco_format_root, storage, "methods",
                                      **{"budget.trials_per_task": TRIALS,
                                         "budget.repeats": REPEATS,
                                         "budget.max_concurrent_trials": 2,
                                         "resources.num_workers": 1,
                                         "scheduler.type": "none",
                                         "fixed.train_epochs": 1, "fixed.epochs": 1})],
                     timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return storage / "methods", proc
