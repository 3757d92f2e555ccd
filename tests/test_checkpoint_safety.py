"""A crafted ``last.pt`` cannot run code when a run is resumed.

``last.pt`` is read with ``torch.load(weights_only=True)`` before anything is written: a pickle
whose unpickling would call ``os.mkdir(marker)`` is refused with one line naming the file, the
marker is never created, and the run directory is left byte for byte as it was. Checked through
``fit(resume=True)`` in-process and through ``train_entry.py --resume``, with the crafted object
saved by ``torch.save`` (zip format) and by plain ``pickle`` (the legacy format torch.load also
reads).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from pu_mlc.config import TrainConfig
from pu_mlc.engine import fit
from pu_mlc.engine.checkpoint import load_checkpoint
from pu_mlc.errors import OutputDirError
from test_entry_errors import (TINY, assert_refused, earlier_run,  # noqa: F401 (fixture)
                               snapshot, train)


class MakesADirectory:
    """Unpickling this calls ``os.mkdir(marker)``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def craft_with_torch_save(path: Path, marker: Path) -> None:
    torch.save({"format_version": 2, "epoch": 1, "recipe": MakesADirectory(marker)}, path)


def craft_with_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"format_version": 2, "recipe": MakesADirectory(marker)}, f, protocol=2)


CRAFTERS = {"torch-save": craft_with_torch_save, "pickle": craft_with_pickle}


@pytest.fixture(params=CRAFTERS)
def crafted(request, earlier_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the earlier run whose last.pt is the crafted pickle; (run dir, marker)."""
    run = Path(shutil.copytree(earlier_run, tmp_path / "run"))
    marker = tmp_path / "MARKER-code-ran"
    CRAFTERS[request.param](run / "checkpoints" / "last.pt", marker)
    return run, marker


def test_the_crafted_file_would_run_code_if_unpickled(tmp_path):
    """The control: a plain unpickler does create the marker."""
    path, marker = tmp_path / "x.pt", tmp_path / "marker"
    craft_with_pickle(path, marker)
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.is_dir()


def test_load_checkpoint_refuses_it_without_unpickling(crafted):
    run, marker = crafted
    path = run / "checkpoints" / "last.pt"
    with pytest.raises(OutputDirError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "cannot be read safely" in message
    assert "weights_only=False" not in message          # no advice to run the file's code
    assert not marker.exists()


def test_fit_resume_refuses_it_and_writes_nothing(crafted):
    run, marker = crafted
    before = snapshot(run)
    cfg = TrainConfig.from_yaml(run / "config.yaml").replace(output_dir=str(run), resume=True,
                                                             train_epochs=2)
    with pytest.raises(OutputDirError, match="cannot be read safely"):
        fit(cfg)
    assert not marker.exists()
    assert snapshot(run) == before


def test_the_entry_point_refuses_it_in_one_line_and_writes_nothing(crafted, coco2014_root):
    run, marker = crafted
    before = snapshot(run)
    proc = train([coco2014_root, "--dataset=COCO2014", *TINY, "--Stop_epoch=1", "--resume",
                  f"--output-dir={run}"], cwd=run.parent)
    line = assert_refused(proc, str(run / "checkpoints" / "last.pt"), "cannot be read safely")
    assert "weights_only=False" not in line
    assert not marker.exists()
    assert snapshot(run) == before
