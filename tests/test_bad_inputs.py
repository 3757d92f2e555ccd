"""A table of bad inputs a careless or hostile user gives to every command, each refused in one line.

Each row is one command line of ``train_entry.py`` (train), ``search``, ``export``,
``evaluate``, ``predict`` or ``make-demo-data``, with any file it needs built in ``tmp_path`` from
the real fixtures (real images, real annotation files). Every row checks the same four things:

* the exit code is 2 (our refusals, and argparse's usage errors);
* stderr ends with exactly one ``error:`` line and holds no traceback; the line contains the
  row's fragments, which name the field / flag / file and the fix (argparse's usage errors name
  the flag);
* nothing was written: ``tmp_path`` (where the output dir, the search's ``storage_path``, the
  JSON/CSV outputs and the default ``runs/`` folder would go) is byte-for-byte, folder-for-folder
  what it was before the command ran;
* the refusal came before the expensive part: training, a Ray search and the demo builder's image
  composition are replaced by guards that fail the row if they are ever reached (rows marked
  ``no_yaml``: any YAML parser, for files refused from their size alone).

The line is short (a message quotes a short prefix of any value; argparse's errors are the one
line with a ``--help`` pointer, no usage block), and rows marked ``max_rss_mb`` run as a
subprocess whose peak memory must stay below that (YAML alias bombs: a 1.3 kB file standing for
387 million strings).

Rows run in-process through ``pu_mlc.cli.main`` (fast); the rows marked ``subprocess`` run the real
``train_entry.py`` / ``python -m pu_mlc`` as users do. Rows marked ``xfail`` are gaps found by this
table in files this table's author does not own; each says where the fix goes.

The table for the issue note: ``PU_MLC_REFUSALS=/tmp/refusals.jsonl pytest tests/test_bad_inputs.py``
then ``python tests/test_bad_inputs.py /tmp/refusals.jsonl`` prints it as markdown.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
import yaml

import builders
from limits import HANG_GUARD_S
from test_entry_errors import TINY

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "train_entry.py"
CUDA = torch.cuda.is_available()
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RAY_ADDRESS")


# --- damaged and foreign files ------------------------------------------------------------------
def cut_mid_stream(path: Path) -> None:
    """A JPEG that lost its second half mid-stream and then got a whole copy appended (an
    interrupted download restarted into the same file): the header and the end-of-image marker
    are intact, so a header check passes; decoding fails."""
    whole = Path(path).read_bytes()
    builders.truncate_file(path)
    Path(path).write_bytes(Path(path).read_bytes() + whole)


def alias_bomb(levels: int = 9, width: int = 9):
    """Lists shared ``levels`` deep, ``width`` wide: ``yaml.safe_dump`` writes them as a chain of
    anchors and aliases (1.3 kB) that stands for width ** levels strings (387,420,489)."""
    value = ["lol"] * width
    for _ in range(levels - 1):
        value = [value] * width
    return value


BOMB_NOTE = "an alias bomb: 9 anchors, each list 9 aliases of the one before (9**9 strings)"


def decompression_bomb_png(path: Path, width: int = 20000, height: int = 10000) -> None:
    """A small PNG whose header says width x height pixels (200 million, past twice PIL's
    MAX_IMAGE_PIXELS): ``Image.open`` raises ``DecompressionBombError``."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    Path(path).write_bytes(bytes(data))


class Workspace:
    """Paths and file builders of one row; everything it builds lies in ``tmp``."""

    def __init__(self, tmp: Path, coco: builders.BuiltDataset, coco_format: Path,
                 voc: builders.BuiltDataset):
        self.tmp, self.coco, self.coco_format, self.voc = tmp, coco.root, coco_format, voc.root
        self.coco_files = coco.splits["train"].files
        self.voc_test_files = voc.splits["test"].files
        self.out = tmp / "out"
        self.experiments = tmp / "experiments"
        self.notes: list[str] = []        # what the row built, for the table

    def note(self, text: str) -> None:
        self.notes.append(text)

    @staticmethod
    def flow(obj) -> str:
        text = yaml.safe_dump(obj, default_flow_style=True, width=1000).strip()
        return text.removesuffix("...").strip()            # a scalar's end-of-document mark

    # files
    def file(self, name: str, content: str | bytes = "x\n", note: bool = True) -> Path:
        path = self.tmp / name
        if note:
            self.note(f"{name}: a file holding {content!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def yaml(self, name: str, obj, note: bool = True) -> Path:
        if note:
            self.note(f"{name}: {self.flow(obj)}")
        return self.file(name, yaml.safe_dump(obj, sort_keys=False), note=False)

    def dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        self.note(f"{name}/: a directory")
        return path

    def garbage(self, name: str) -> Path:
        path = self.tmp / name
        builders.garbage_file(path)
        self.note(f"{name}: 2000 random bytes")
        return path

    def image(self, i: int = 0) -> Path:
        return self.coco / "train2014" / self.coco_files[i]

    def damaged_image(self, name: str = "photo.jpg") -> Path:
        path = self.tmp / name
        path.write_bytes(self.image(3).read_bytes())
        cut_mid_stream(path)
        self.note(f"{name}: a real JPEG cut mid-stream, a whole copy appended (header and end "
                  f"marker intact)")
        return path

    def damaged_dataset(self, fixture: str, split_dir: str, name: str) -> Path:
        root = builders.copy_dataset(getattr(self, fixture), self.tmp / fixture)
        cut_mid_stream(root / split_dir / name)
        self.note(f"{fixture}: a copy of the fixture with {split_dir}/{name} cut mid-stream, a "
                  f"whole copy appended (header and end marker intact)")
        return root

    def last_pt(self) -> Path:
        from pu_mlc.engine.checkpoint import save_checkpoint

        path = self.tmp / "run" / "checkpoints" / "last.pt"
        save_checkpoint(path, recipe_state={"model": {"w": torch.zeros(2)}}, epoch=1,
                        selection={"best_score": 1.0}, history=[{"epoch": 1}])
        self.note("run/checkpoints/last.pt: a last.pt written by save_checkpoint")
        return path

    def resnet34_weights(self) -> Path:
        import torchvision

        path = self.tmp / "resnet34.pth"
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
        self.note("resnet34.pth: torchvision resnet34 random weights (torch.save of its "
                  "state_dict)")
        return path

    def bomb_image_dataset(self) -> Path:
        root = builders.copy_dataset(self.coco, self.tmp / "coco")
        decompression_bomb_png(root / "train2014" / self.coco_files[4])
        self.note(f"coco: a copy of the fixture with train2014/{self.coco_files[4]} replaced by "
                  f"a PNG whose header says 20000 x 10000 pixels")
        return root

    def big_yaml(self, name: str, megabytes: int) -> Path:
        """A mapping of ``megabytes`` MB (10**6 bytes): valid YAML, one short key per line."""
        path = self.tmp / name
        line_count = megabytes * 10**6 // 20
        with open(path, "w") as f:
            f.writelines(f"key{i:09d}: 12345\n" for i in range(line_count))    # 20 bytes
        assert path.stat().st_size == megabytes * 10**6
        self.note(f"{name}: a {megabytes} MB mapping of {line_count:,} keys")
        return path

    def bomb_config(self) -> Path:
        self.note(f"config.yaml: data, dataset, and 'data' is {BOMB_NOTE}")
        return self.yaml("config.yaml", {"dataset": "COCO2014", "data": alias_bomb()},
                         note=False)

    def bomb_space(self, key: str) -> Path:
        path = self.space(**{key: "BOMB"})
        self.notes[-1] = f"space.yaml: a valid space whose {key.replace('__', '.')} is {BOMB_NOTE}"
        text = path.read_text()
        bomb = yaml.safe_dump(alias_bomb(), default_flow_style=True, width=10**6).strip()
        assert text.count("BOMB") == 1
        path.write_text(text.replace("BOMB", bomb))
        return path

    def folder_named(self, name: str) -> Path:
        """A dataset folder called ``name`` in ``tmp`` (the working dir of a row)."""
        root = builders.copy_dataset(self.coco, self.tmp / name)
        self.note(f"{name}/: a copy of the COCO2014 fixture, in the working dir")
        return root

    def bare_state_dict(self) -> Path:
        path = self.tmp / "resnet.pth"
        torch.save({"conv1.weight": torch.zeros(2, 3)}, path)
        self.note("resnet.pth: a bare state dict (torch.save)")
        return path

    # command lines
    def train(self, *extra: str, data: Optional[Path] = None, dataset: str = "COCO2014",
              out: bool = True) -> list[str]:
        return [str(data or self.coco), f"--dataset={dataset}", *TINY, *extra,
                *([f"--output-dir={self.out}"] if out else [])]

    def config(self, **fields) -> Path:
        self.note(f"config.yaml: data, dataset and {self.flow(fields)}")
        return self.yaml("config.yaml", {"data": str(self.coco), "dataset": "COCO2014",
                                         **fields}, note=False)

    def space(self, **changes) -> Path:
        """A valid search space on the small COCO-format fixture, with ``changes`` applied
        (a value of None removes the key); ``storage_path`` is in ``tmp``."""
        raw = {
            "name": "refused",
            "storage_path": str(self.experiments),
            "budget": {"trials_per_task": 2},
            "resources": {"num_workers": 1, "cpus_per_worker": 1},
            "fixed": {"dataset": "coco", "data": str(self.coco_format),
                      "model_name": "tf_efficientnet_lite0", "pretrained_model": "builtin",
                      "scale_size": 32, "crop_size": 32, "batch_size": 4, "train_epochs": 1,
                      "epochs": 2, "workers": 0},
            "search": {"alpha": {"type": "loguniform", "low": 0.5, "high": 4.0}},
            "tasks": [{"name": "full", "prob": 1.0}, {"name": "p50", "prob": 0.5}],
        }
        for dotted, value in changes.items():
            node = raw
            *path, last = dotted.split("__")
            for p in path:
                node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
            if value is None:
                node.pop(last)
            else:
                node[last] = value
        self.note("space.yaml: a valid space" + (
            " with " + ", ".join(f"{k.replace('__', '.')}: {self.flow(v)}"
                                 for k, v in changes.items()) if changes else ""))
        return self.yaml("space.yaml", raw, note=False)

    def search(self, *extra: str, space: Optional[Path] = None) -> list[str]:
        return ["search", "--space", str(space or self.space()), *extra]

    def valid_experiment(self) -> Path:
        """An experiment folder (no trials yet) whose search_space.yaml is the valid space."""
        text = self.space(name="earlier").read_text()
        self.notes.pop()
        path = self.experiment(text)
        self.notes[-1] = ("experiments/earlier/: an experiment folder whose search_space.yaml is "
                          "a valid space (no trials yet)")
        return path

    def experiment(self, search_space: str | None = "name: x\n") -> Path:
        path = self.dir("experiments/earlier")
        self.notes.pop()
        if search_space is not None:
            (path / "search_space.yaml").write_text(search_space)
        self.note(f"experiments/earlier/: an experiment folder whose search_space.yaml holds "
                  f"{search_space!r}")
        return path


@dataclass
class Case:
    id: str
    argv: Callable[[Workspace], list[str]]
    fragments: Callable[[Workspace], tuple[str, ...]] | tuple[str, ...]
    usage: bool = False            # an argparse usage error ("PROG: error: ..." after the usage)
    subprocess: bool = False       # run the real entry point as a user does
    xfail: Optional[str] = None    # a known gap: where the fix goes
    skip: Optional[str] = None
    max_rss_mb: Optional[int] = None   # subprocess: its peak memory must stay below this
    no_yaml: bool = False          # the refusal must come before any YAML is parsed


def T(id, argv, *fragments, **kw) -> Case:
    return Case(id, argv, fragments if not (fragments and callable(fragments[0]))
                else fragments[0], **kw)


# --- the table ----------------------------------------------------------------------------------
FLOAT_FIELDS = [("lr", "--lr", "inf"), ("lr", "--lr", "nan"), ("alpha", "--alpha", "inf"),
                ("ema", "--ema", "nan"), ("prob", "--prob", "nan"),
                ("weight_decay", "--weight-decay", "-inf"), ("gamma", "--gamma", "inf"),
                ("mixup_alpha", "--mixup-alpha", "nan"), ("pct_start", "--pct-start", "nan"),
                ("val_fraction", "--val-fraction", "inf")]

CASES: list[Case] = [
    # --- train: non-finite floats, on the command line and in a --config file -----------------
    *[T(f"train-{flag[2:]}-{value}", lambda w, f=flag, v=value: w.train(f"{f}={v}"),
        f"{name} ({flag}) = {float(value)!r}", "finite number")
      for name, flag, value in FLOAT_FIELDS],
    T("train-weight-decay-space-minus-inf", lambda w: w.train("--weight-decay", "-inf"),
      "--weight-decay", "expected one argument", usage=True),
    T("config-lr-.inf", lambda w: w.train("--config", str(w.config(lr=float("inf")))),
      "lr (--lr) = inf", "finite number"),
    T("config-ema-.nan", lambda w: w.train("--config", str(w.config(ema=float("nan")))),
      "ema (--ema) = nan", "finite number"),
    T("config-alpha-minus-.inf", lambda w: w.train("--config", str(w.config(alpha=-float("inf")))),
      "alpha (--alpha) = -inf", "finite number"),
    T("config-prob-string-nan", lambda w: w.train("--config", str(w.config(prob="nan"))),
      "prob (--prob) = nan", "finite number"),
    T("config-weight_decay-string-inf",
      lambda w: w.train("--config", str(w.config(weight_decay="inf"))),
      "weight_decay (--weight-decay) = inf", "finite number"),
    # --- train: the --config file itself ------------------------------------------------------
    T("config-is-a-directory", lambda w: w.train("--config", str(w.dir("configs"))),
      lambda w: (str(w.tmp / "configs"), "is a directory", "config.yaml")),
    T("config-missing", lambda w: w.train("--config", str(w.tmp / "nope.yaml")),
      lambda w: (str(w.tmp / "nope.yaml"), "no such config file")),
    T("config-invalid-yaml", lambda w: w.train("--config", str(w.file("c.yaml", "lr: [1e-4\n"))),
      lambda w: (str(w.tmp / "c.yaml"), "not valid YAML")),
    T("config-binary-file", lambda w: w.train("--config", str(w.garbage("c.yaml"))),
      lambda w: (str(w.tmp / "c.yaml"),)),
    T("config-a-yaml-list", lambda w: w.train("--config", str(w.file("c.yaml", "- lr: 1\n"))),
      lambda w: (str(w.tmp / "c.yaml"), "expected a mapping of config fields, got list")),
    T("config-unknown-field", lambda w: w.train("--config", str(w.config(learning_rate=0.1))),
      "unknown field(s) ['learning_rate']", "allowed fields"),
    T("config-wrong-type", lambda w: ["--config", str(w.config(batch_size="many")),
                                      f"--output-dir={w.out}"],
      "field 'batch_size' = 'many' must be an integer"),
    T("config-wrong-type-bool", lambda w: w.train("--config", str(w.config(lgc="yes"))),
      "field 'lgc' = 'yes' must be true or false"),
    T("config-alias-bomb-as-data", lambda w: w.train("--config", str(w.bomb_config())),
      lambda w: (str(w.tmp / "config.yaml"), "config file uses YAML aliases", "expand to",
                 "at most 100,000"), subprocess=True, max_rss_mb=500),
    T("config-recursive-alias",
      lambda w: w.train("--config", str(w.file("c.yaml", "data: /d\nlr: &a [1, *a]\n"))),
      lambda w: (str(w.tmp / "c.yaml"), "alias inside the value it names")),
    T("config-nested-200-deep",
      lambda w: (w.note("c.yaml: 'lr: [[[...]]]', lists nested 200 deep"),
                 w.train("--config", str(w.file("c.yaml", "lr: " + "[" * 200 + "]" * 200 + "\n",
                                                note=False))))[1],
      lambda w: (str(w.tmp / "c.yaml"), "more than 100 levels deep")),
    T("config-2-MB-refused-before-parsing",
      lambda w: w.train("--config", str(w.big_yaml("c.yaml", 2))),
      lambda w: (str(w.tmp / "c.yaml"), "at most 1 MiB", "2,000,000 bytes"), no_yaml=True),
    T("config-data-a-list", lambda w: ["--config", str(w.config(data=["a"] * 1000)), *TINY,
                                       f"--output-dir={w.out}"],
      "field 'data' must be a string, got a list of 1,000 items"),
    T("config-data-a-megabyte-string",
      lambda w: w.train("--config", str(w.yaml("c.yaml", {"data": str(w.coco),
                                                          "prob": "x" * 900_000}))),
      "field 'prob' = 'xxxxxxxxxx", "(a str of 900,000 characters) must be a number"),
    T("config-many-unknown-fields",
      lambda w: w.train("--config", str(w.config(**{f"k{i:04d}": i for i in range(2000)}))),
      "unknown field(s) ['k0000', 'k0001', 'k0002', 'k0003', 'k0004'] and 1,995 more"),
    T("config-without-data-and-no-DATA_ROOT",
      lambda w: ["--config", str(w.yaml("c.yaml", {"dataset": "COCO2014"})), *TINY],
      "no dataset root", "DATA_ROOT", "'data' field"),
    # --- train: flags -----------------------------------------------------------------------
    T("train-abbreviated-Stop_epo", lambda w: w.train("--Stop_epo=3"),
      "unrecognized arguments: --Stop_epo=3", usage=True, subprocess=True),
    T("train-abbreviated-batch", lambda w: w.train("--batch=8"),
      "unrecognized arguments: --batch=8", usage=True),
    T("train-abbreviated-pretrained", lambda w: w.train("--pretrained=builtin"),
      "unrecognized arguments: --pretrained=builtin", usage=True),
    T("train-abbreviated-output", lambda w: w.train(f"--output={w.out}", out=False),
      "unrecognized arguments: --output=", usage=True),
    T("train-unknown-flag", lambda w: w.train("--learning-rate=0.1"),
      "unrecognized arguments: --learning-rate=0.1", usage=True),
    T("train-b-not-a-number", lambda w: w.train("--b=many"),
      "argument --b/--batch-size: invalid int value: 'many'", usage=True),
    T("train-b-zero", lambda w: w.train("--b=0"), "batch_size (--b) = 0", "at least 1"),
    T("train-dataset-imagenet", lambda w: w.train("--dataset=imagenet"),
      "argument --dataset: invalid choice: 'imagenet'", usage=True),
    T("train-loss-focal", lambda w: w.train("--loss=focal"),
      "argument --loss: invalid choice: 'focal'", usage=True),
    T("train-precision-fp16-on-cpu", lambda w: w.train("--precision=fp16"),
      "precision (--precision)", "'fp16' needs CUDA", "use bf16 or fp32 on CPU",
      subprocess=True),
    T("train-device-cuda-without-cuda", lambda w: w.train("--device=cuda"),
      "device (--device)", "no CUDA device is visible", "use cpu or auto",
      skip="this machine has CUDA" if CUDA else None),
    T("train-Stop_epoch-beyond-epochs", lambda w: w.train("--Stop_epoch=80"),
      "train_epochs (--Stop_epoch) = 81", "--Stop_epoch must be below --epochs"),
    T("train-bce-with-partial-labels", lambda w: w.train("--loss=bce", "--prob=0.5"),
      "loss (--loss) = 'bce'", "partial_bce"),
    T("train-resume-without-output-dir", lambda w: w.train("--resume", out=False),
      "--resume continues an earlier run", "--output-dir"),
    T("train-resume-and-overwrite", lambda w: w.train("--resume", "--overwrite"),
      "pick one"),
    T("train-resume-without-checkpoint", lambda w: w.train("--resume"),
      lambda w: ("--resume: no checkpoint at", str(w.out / "checkpoints" / "last.pt"))),
    T("train-no-DATA_ROOT", lambda w: TINY, "no dataset root", "DATA_ROOT"),
    T("train-missing-DATA_ROOT", lambda w: w.train(data=w.tmp / "nowhere"),
      lambda w: (str(w.tmp / "nowhere"),)),
    T("train-num-classes-wrong", lambda w: w.train("--num-classes=10"),
      "--num-classes", "pass --num-classes=80"),
    # --- train: the output dir is probed before data and model ---------------------------------
    T("train-output-dir-is-a-file", lambda w: w.train(f"--output-dir={w.file('run')}",
                                                      out=False),
      lambda w: (f"output dir (--output-dir) {w.tmp / 'run'} is a file", "choose another "
                                                                           "--output-dir")),
    T("train-output-dir-under-a-file",
      lambda w: w.train(f"--output-dir={w.file('run')}/exp1", out=False),
      lambda w: (f"{w.tmp / 'run' / 'exp1'} cannot be created: {w.tmp / 'run'} is a file",
                 "choose another --output-dir"), subprocess=True),
    T("train-tensorboard-dir-under-a-file",
      lambda w: w.train(f"--tensorboard-dir={w.file('tb')}/run"),
      lambda w: (f"TensorBoard dir (--tensorboard-dir) {w.tmp / 'tb' / 'run'} cannot be "
                 f"created", "choose another --tensorboard-dir")),
    T("train-output-dir-probe-beats-missing-data",
      lambda w: w.train(f"--output-dir={w.file('run')}/x", data=w.tmp / "nowhere", out=False),
      "--output-dir", "is a file"),
    # --- train: images damaged mid-stream (header and end marker intact) ----------------------
    T("train-jpeg-damaged-mid-stream-train-split",
      lambda w: w.train(data=w.damaged_dataset("coco", "train2014", w.coco_files[4])),
      lambda w: (w.coco_files[4], str(w.tmp / "coco" / "train2014"), "--skip-bad-images")),
    T("train-jpeg-damaged-mid-stream-voc-test-split",
      lambda w: w.train(data=w.damaged_dataset("voc", "VOCdevkit/VOC2007/JPEGImages",
                                               w.voc_test_files[1]), dataset="VOC2007"),
      lambda w: (w.voc_test_files[1], "test split", "--skip-bad-images")),
    T("train-image-decompression-bomb",
      lambda w: w.train(data=w.bomb_image_dataset()),
      lambda w: (w.coco_files[4], "DecompressionBombError", "200000000 pixels",
                 "--skip-bad-images")),
    # --- train: weights of another architecture ------------------------------------------------
    T("train-resnet34-weights-on-resnet18",
      lambda w: w.train("--model-name=resnet18", f"--pretrainedModel={w.resnet34_weights()}",
                        "--head=linear"),
      lambda w: ("--pretrainedModel", str(w.tmp / "resnet34.pth"), "96 of its 218 tensors",
                 "--model-name resnet18", "'layer1.2.conv1.weight'", "120 would load")),
    # --- train: a dataset folder named like a command is DATA_ROOT before training flags -----
    T("train-folder-named-demo", lambda w: [str(w.folder_named("demo").name),
                                            *w.train("--b=0")[1:]],
      "batch_size (--b) = 0", "need at least 1 image"),
    T("train-folder-named-search", lambda w: [str(w.folder_named("search").name),
                                              *w.train("--prob=2")[1:]],
      "prob (--prob) = 2.0", subprocess=True),
    # --- search: the space file and --set -------------------------------------------------------
    T("search-space-alias-bomb-as-name", lambda w: w.search(space=w.bomb_space("name")),
      lambda w: (str(w.tmp / "space.yaml"), "search space file uses YAML aliases",
                 "at most 100,000"), subprocess=True, max_rss_mb=500),
    T("search-space-alias-bomb-as-fixed-data",
      lambda w: w.search(space=w.bomb_space("fixed__data")),
      lambda w: (str(w.tmp / "space.yaml"), "search space file uses YAML aliases",
                 "at most 100,000"), subprocess=True, max_rss_mb=500),
    T("search-space-50-MB-refused-before-parsing",
      lambda w: w.search(space=w.big_yaml("s.yaml", 50)),
      lambda w: (str(w.tmp / "s.yaml"), "--space reads YAML files of at most 1 MiB",
                 "50,000,000 bytes"), no_yaml=True),
    T("search-space-missing", lambda w: w.search(space=w.tmp / "nope.yaml"),
      lambda w: (str(w.tmp / "nope.yaml"), "no such search space file")),
    T("search-space-is-a-directory", lambda w: w.search(space=w.dir("spaces")),
      lambda w: (str(w.tmp / "spaces"), "is a directory")),
    T("search-space-invalid-yaml", lambda w: w.search(space=w.file("s.yaml", "name: [x\n")),
      "not valid YAML"),
    T("search-space-a-list", lambda w: w.search(space=w.file("s.yaml", "- name: x\n")),
      "a search space is a mapping"),
    T("search-choice-int-field-given-a-string",
      lambda w: w.search(space=w.space(search__batch_size={"type": "choice",
                                                           "values": [16, "big"]})),
      "search.batch_size.values[1] = 'big' must be an integer"),
    T("search-choice-bool-field-given-yes",
      lambda w: w.search(space=w.space(search__lgc={"type": "choice", "values": [True, "yes"]})),
      "search.lgc.values[1] = 'yes' must be true or false"),
    T("search-choice-float-field-given-nan",
      lambda w: w.search(space=w.space(search__ema={"type": "choice",
                                                    "values": [0.99, float("nan")]})),
      "search.ema.values[1] = nan must be a finite number"),
    T("search-uniform-on-an-int-field",
      lambda w: w.search(space=w.space(search__batch_size={"type": "uniform", "low": 2,
                                                           "high": 8})),
      "search.batch_size", "integer field", "use type: int"),
    T("search-uniform-high-.inf",
      lambda w: w.search(space=w.space(search__alpha={"type": "uniform", "low": 0.5,
                                                      "high": float("inf")})),
      "search.alpha.high = inf must be a number"),
    T("search-fixed-lr-.inf", lambda w: w.search(space=w.space(fixed__lr=float("inf"))),
      "task 'full'", "lr (--lr) = inf", "finite number"),
    T("search-set-index-out-of-range", lambda w: w.search("--set", "tasks.5.prob=0.1"),
      "--set tasks.5.prob=0.1", "index 5 is out of range (0..1)", subprocess=True),
    T("search-set-under-a-scalar", lambda w: w.search("--set", "name.sub=x"),
      "--set name.sub=x", "name is a str", "no key 'sub'"),
    T("search-set-unknown-key", lambda w: w.search("--set", "budget.nope=1"),
      "--set budget.nope=1", "unknown key 'nope' under budget", "trials_per_task"),
    T("search-set-empty-key", lambda w: w.search("--set", "=3"),
      "--set '=3'", "key before '=' is empty"),
    T("search-set-no-equals", lambda w: w.search("--set", "noequals"),
      "--set 'noequals'", "expected KEY=VALUE"),
    T("search-set-value-not-yaml", lambda w: w.search("--set", "fixed.lr=[1e-4"),
      "--set 'fixed.lr=[1e-4'", "not valid YAML"),
    T("search-methods-duplicate-name",
      lambda w: w.search(space=w.space(methods=[{"name": "pu", "fixed": {"loss": "pu"}},
                                                {"name": "pu"}])),
      "methods[1].name = 'pu' is used twice"),
    T("search-method-searches-a-fixed-field",
      lambda w: w.search(space=w.space(methods=[{"name": "bce", "fixed": {"lr": 1e-4},
                                                 "search": {"lr": {"type": "loguniform",
                                                                   "low": 1e-5,
                                                                   "high": 1e-3}}}])),
      "study 'full.bce'", "['lr'] are both fixed and searched"),
    T("search-method-unknown-key",
      lambda w: w.search(space=w.space(methods=[{"name": "pu", "loss": "pu"}])),
      "methods[0]: unknown key(s) ['loss']", "fixed"),
    T("search-method-first-trial-outside-its-range",
      lambda w: w.search(space=w.space(methods=[{"name": "pu", "first_trial": {"alpha": 9.0}}])),
      "study 'full.pu'", "first_trial alpha = 9.0 lies outside"),
    T("search-budget-repeats-negative", lambda w: w.search("--set", "budget.repeats=-1"),
      "budget.repeats = -1 must be >= 0"),
    T("search-budget-concurrent-studies-zero",
      lambda w: w.search("--set", "budget.concurrent_studies=0"),
      "budget.concurrent_studies = 0 must be >= 1"),
    T("search-warm-start-unknown", lambda w: w.search("--set", "warm_start=nearest"),
      "warm_start = 'nearest'", "neighbours"),
    T("search-set-unknown-method-key",
      lambda w: w.search("--set", "methods.0.seach=1", space=w.space(methods=[{"name": "pu"}])),
      "--set methods.0.seach=1", "unknown key 'seach'"),
    T("search-set-name-dotdot", lambda w: w.search("--set", "name=.."),
      "name = '..'", "leave storage_path"),
    T("search-set-name-with-slash", lambda w: w.search("--set", "name=a/../../etc"),
      "name = 'a/../../etc'", "letters, digits"),
    T("search-set-task-name-traversal", lambda w: w.search("--set", "tasks.0.name=../x"),
      "tasks[0].name = '../x'", "letters, digits"),
    T("search-cpus-per-worker-99",
      lambda w: w.search(space=w.space(resources__cpus_per_worker=99)),
      "resources.cpus_per_worker 99", f"this machine has {len(os.sched_getaffinity(0))}",
      "--set resources.cpus_per_worker=1"),
    T("search-use-gpu-without-gpu", lambda w: w.search(space=w.space(resources__use_gpu=True)),
      "GPUs per trial", "this machine has 0", "use_gpu: false",
      skip="this machine has CUDA" if CUDA else None),
    T("search-data-root-missing", lambda w: w.search("--set", f"fixed.data={w.tmp}/nowhere"),
      lambda w: (f"dataset root {w.tmp / 'nowhere'} does not exist", "--set fixed.data=")),
    T("search-abbreviated-no-exp", lambda w: w.search("--no-exp"),
      "unrecognized arguments: --no-exp", usage=True),
    T("search-existing-experiment-without-resume",
      lambda w: (w.experiment(), w.search(space=w.space(name="earlier")))[1],
      "already exists", "--resume"),
    T("search-resume-without-experiment", lambda w: w.search("--resume"),
      "--resume: no experiment at", "run without --resume"),
    T("demo-search-abbreviated-spa", lambda w: ["demo", "--spa", str(w.space())],
      "unrecognized arguments: --spa", usage=True),
    # --- export ----------------------------------------------------------------------------
    T("export-missing-dir", lambda w: ["export", str(w.tmp / "nowhere")],
      "is not a pu-mlc experiment", "search_space.yaml"),
    T("export-a-file", lambda w: ["export", str(w.file("exp.txt"))],
      "is not a pu-mlc experiment"),
    T("export-abbreviated-out", lambda w: ["export", str(w.experiment()), "--ou", "x"],
      "unrecognized arguments: --ou x", usage=True),
    T("report-abbreviated-ou", lambda w: ["report", str(w.experiment()), "--ou", "x"],
      "pu-mlc report: error: unrecognized arguments: --ou x", usage=True),
    T("export-truncated-search-space",
      lambda w: ["export", str(w.experiment("name: [x\n"))], "search_space.yaml"),
    T("export-out-under-a-file",
      lambda w: ["export", str(w.valid_experiment()), "--out",
                 f"{w.file('exp.txt')}/exports"], "--out", "is a file"),
    # --- evaluate / predict ----------------------------------------------------------------
    T("evaluate-directory-as-checkpoint", lambda w: ["evaluate", str(w.dir("ckpts"))],
      lambda w: (f"checkpoint {w.tmp / 'ckpts'} is a directory without checkpoints/best.pt",)),
    T("evaluate-last-pt", lambda w: ["evaluate", str(w.last_pt())],
      "is not a pu-mlc best.pt", "it is a run's last.pt", "use checkpoints/best.pt"),
    T("evaluate-garbage-file", lambda w: ["evaluate", str(w.garbage("best.pt"))],
      lambda w: (f"checkpoint {w.tmp / 'best.pt'} cannot be read as a pu-mlc best.pt",),
      subprocess=True),
    T("evaluate-bare-state-dict", lambda w: ["evaluate", str(w.bare_state_dict())],
      "looks like a bare state dict"),
    T("evaluate-missing-checkpoint", lambda w: ["evaluate", str(w.tmp / "best.pt")],
      "does not exist", "OUTPUT_DIR/checkpoints/best.pt"),
    T("evaluate-split-train", lambda w: ["evaluate", str(w.tmp / "best.pt"), "--split=train"],
      "argument --split: invalid choice: 'train'", usage=True),
    T("evaluate-abbreviated-spl", lambda w: ["evaluate", str(w.tmp / "best.pt"), "--spl=test"],
      "unrecognized arguments: --spl=test", usage=True),
    T("evaluate-batch-size-zero", lambda w: ["evaluate", str(w.tmp / "best.pt"), "--b=0"],
      "argument --batch-size/--b: 0 must be >= 1", usage=True),
    T("predict-missing-image",
      lambda w: ["predict", str(w.garbage("best.pt")), str(w.image(0)), str(w.tmp / "no.jpg")],
      lambda w: (f"image {w.tmp / 'no.jpg'} cannot be read (missing)",)),
    T("predict-directory-as-image", lambda w: ["predict", str(w.garbage("best.pt")),
                                               str(w.dir("photos"))],
      "is a directory", "pass image files"),
    T("predict-jpeg-damaged-mid-stream",
      lambda w: ["predict", str(w.garbage("best.pt")), str(w.damaged_image())],
      lambda w: (f"image {w.tmp / 'photo.jpg'} cannot be read", "decoding fails")),
    T("predict-garbage-checkpoint", lambda w: ["predict", str(w.garbage("best.pt")),
                                               str(w.image(0))],
      "cannot be read as a pu-mlc best.pt"),
    T("predict-no-images", lambda w: ["predict", str(w.garbage("best.pt"))],
      "the following arguments are required: IMAGE", usage=True),
    T("predict-abbreviated-ou", lambda w: ["predict", str(w.garbage("best.pt")),
                                           str(w.image(0)), "--ou=s.csv"],
      "unrecognized arguments: --ou=s.csv", usage=True),
    T("subcommand-typo-evalute", lambda w: ["evalute", str(w.garbage("best.pt"))],
      "unknown command 'evalute'; did you mean evaluate?"),
    # --- make-demo-data ----------------------------------------------------------------------
    T("demo-data-n-train-zero", lambda w: ["make-demo-data", str(w.out), "--n-train=0"],
      "n_train = 0 must be an integer >= 1"),
    T("demo-data-item-scale-reversed",
      lambda w: ["make-demo-data", str(w.out), "--item-scale", "0.5", "0.1"],
      "item_scale = (0.5, 0.1)", "0 < lo <= hi <= 1"),
    T("demo-data-item-scale-nan",
      lambda w: ["make-demo-data", str(w.out), "--item-scale", "nan", "0.5"],
      "item_scale = (nan, 0.5)"),
    T("demo-data-out-is-a-file", lambda w: ["make-demo-data", str(w.file("demo"))],
      "exists and is not a directory"),
    T("demo-data-out-not-empty", lambda w: ["make-demo-data", str(w.file("demo/a.txt").parent)],
      "is not empty", "--overwrite"),
    T("demo-data-source-dir-missing",
      lambda w: ["make-demo-data", str(w.out), f"--source-dir={w.tmp / 'fmnist'}"],
      "Fashion-MNIST not found", "fmnist"),
    T("demo-data-canvas-size-not-a-number",
      lambda w: ["make-demo-data", str(w.out), "--canvas-size=big"],
      "argument --canvas-size: invalid int value: 'big'", usage=True),
    T("demo-data-abbreviated-n-tr", lambda w: ["make-demo-data", str(w.out), "--n-tr=5"],
      "unrecognized arguments: --n-tr=5", usage=True),
    T("demo-data-out-under-a-file",
      lambda w: ["make-demo-data", f"{w.file('demo')}/data", "--n-train=2", "--n-val=0",
                 "--n-test=1", "--canvas-size=32"], "is not a directory"),
    T("demo-train-data-without-value", lambda w: ["demo-train", "--data"],
      "argument --data: expected one argument", "(see pu-mlc demo-train --help)", usage=True),
    T("demo-train-bad-flag-refused-before-building",
      lambda w: ["demo-train", f"--data={w.tmp / 'demo'}", "--b=0"], "batch_size (--b) = 0"),
]


# --- running one row ----------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() and not p.is_symlink() else \
            hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Reached(AssertionError):
    """A refused command got to a stage it must never reach."""


def _guard(what: str):
    def guard(*args, **kwargs):
        raise Reached(f"{what} started: the input was not refused before it")
    return guard


@pytest.fixture
def guarded_stages(monkeypatch):
    """Writing the run's output dir, training, a Ray search and the demo builder's composition
    fail the row if reached.

    The commands' ``setup_logging`` (``basicConfig(force=True)``) would also close pytest's own
    log handlers: in-process it is left out (the subprocess rows run it)."""
    import pu_mlc.cli
    import tune.cli

    monkeypatch.setattr(pu_mlc.cli, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(tune.cli, "setup_logging", lambda *a, **k: None)
    fit_module = importlib.import_module("pu_mlc.engine.fit")
    monkeypatch.setattr(fit_module, "prepare_output_dir", _guard("writing the output dir"))
    monkeypatch.setattr(fit_module, "_train", _guard("training"), raising=False)
    monkeypatch.setattr(tune.cli, "_search_and_report", _guard("the Ray search"))
    monkeypatch.setattr(importlib.import_module("pu_mlc.data.demo"), "_write_splits",
                        _guard("the demo dataset build"))
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


def guard_yaml_parsing(monkeypatch) -> None:
    """Any YAML parser started (PyYAML's pure Python reader, under every pure loader, and its
    libyaml loaders) fails the row."""
    guard = _guard("parsing YAML")
    monkeypatch.setattr(yaml.reader.Reader, "__init__", guard)
    for name in ("CBaseLoader", "CSafeLoader", "CFullLoader", "CUnsafeLoader", "CLoader"):
        if hasattr(yaml, name):
            monkeypatch.setattr(getattr(yaml, name), "__init__", guard)


def run_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    from pu_mlc.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:                     # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


#: Runs an entry point (``-m pu_mlc`` or a script) as ``python`` would, then writes the peak
#: resident memory of this process (VmHWM: of its own address space, not the pytest process it
#: was forked from, which ``wait4``'s ru_maxrss would count) to $PU_MLC_PEAK_FILE.
PEAK_WRAPPER = """
import atexit, os, runpy, sys

def peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.environ["PU_MLC_PEAK_FILE"], "w") as f:
        f.write(str(kb))

atexit.register(peak)
target, sys.argv = sys.argv[1], sys.argv[1:]
if target == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module("pu_mlc", run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


def run_subprocess(argv: list[str], cwd: Path, module: bool, measure: bool = False
                   ) -> tuple[int, str, str, Optional[dict]]:
    """Run the real entry point; with ``measure``, also return its peak resident memory and
    wall time (written outside ``cwd``)."""
    import tempfile
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in DIST_ENV:
        env.pop(key, None)
    command = [sys.executable, "-m", "pu_mlc"] if module else [sys.executable, str(ENTRY)]
    if not measure:
        proc = subprocess.run([*command, *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=HANG_GUARD_S)
        return proc.returncode, proc.stdout, proc.stderr, None
    with tempfile.TemporaryDirectory() as scratch:
        env["PU_MLC_PEAK_FILE"] = peak_file = os.path.join(scratch, "peak_kb")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *command[1:], *argv],
                              cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=HANG_GUARD_S)
        seconds = time.monotonic() - t0
        peak_mb = int(Path(peak_file).read_text()) / 1024
    return proc.returncode, proc.stdout, proc.stderr, {"max_rss_mb": round(peak_mb, 1),
                                                       "seconds": round(seconds, 2)}


def the_error_line(code: int, out: str, err: str, usage: bool) -> str:
    assert "Traceback" not in out + err, out + err
    assert code == 2, f"exit {code}\n{out}\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    if not usage:
        assert errors[0].startswith("error: "), err
    else:                           # argparse's: the one line, no usage block, a --help pointer
        assert len(lines) == 1 and "--help)" in errors[0], err
    return errors[0]


def shown_command(argv: list[str], w: Workspace) -> str:
    text = " ".join(shlex.quote(a) for a in argv)
    text = text.replace(" ".join(TINY), "$TINY")
    return anonymized(text, w)


def anonymized(text: str, w: Workspace) -> str:
    for path, name in ((w.tmp, "$TMP"), (w.coco, "$COCO2014"), (w.coco_format, "$COCO"),
                       (w.voc, "$VOC2007")):
        text = text.replace(str(path), name)
    return text


def record(case: Case, argv: list[str], line: str, code: int, w: Workspace,
           measured: Optional[dict] = None) -> None:
    target = os.environ.get("PU_MLC_REFUSALS")
    if not target:
        return
    entry = "python -m pu_mlc" if case.subprocess and argv[0] == "search" else "train_entry.py"
    command = f"{entry} {shown_command(argv, w)}"
    row = {"id": case.id, "command": command, "input": anonymized("; ".join(w.notes), w),
           "exit": code,
           "line": anonymized(line, w), "how": "subprocess" if case.subprocess
           else "in-process", **(measured or {})}
    with open(target, "a") as f:
        f.write(json.dumps(row) + "\n")


def _params():
    for case in CASES:
        marks = []
        if case.xfail:
            marks.append(pytest.mark.xfail(reason=case.xfail, strict=True))
        if case.skip:
            marks.append(pytest.mark.skip(reason=case.skip))
        yield pytest.param(case, id=case.id, marks=marks)


def test_the_table_has_at_least_fifty_distinct_rows():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 50


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(
        case, tmp_path, monkeypatch, capsys, guarded_stages, coco2014_dataset,
        coco_format_root, voc2007_dataset):
    w = Workspace(tmp_path, coco2014_dataset, coco_format_root, voc2007_dataset)
    argv = [str(a) for a in case.argv(w)]
    fragments = case.fragments(w) if callable(case.fragments) else case.fragments
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)             # the default runs/ folder would appear here
    if case.no_yaml:
        guard_yaml_parsing(monkeypatch)
    measured = None
    if case.subprocess:
        code, out, err, measured = run_subprocess(argv, tmp_path, module=argv[0] == "search",
                                                  measure=case.max_rss_mb is not None)
    else:
        code, out, err = run_in_process(argv, capsys)
    line = the_error_line(code, out, err, case.usage)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert len(line) <= 2100, f"a {len(line):,}-character error line"
    if case.max_rss_mb is not None:
        assert measured["max_rss_mb"] < case.max_rss_mb, measured
    assert snapshot(tmp_path) == before, "the refused command wrote into tmp_path"
    record(case, argv, line, code, w, measured)


# --- outside the table ----------------------------------------------------------------------
def test_the_base_inputs_of_the_table_are_valid(tmp_path, coco2014_dataset, coco_format_root,
                                                voc2007_dataset, monkeypatch):
    """The rows fail for their own change, not because the base command or space is bad."""
    from pu_mlc.config import parse_train_args
    from tune.preflight import check_inputs
    from tune.space_file import load_search_spec

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    w = Workspace(tmp_path, coco2014_dataset, coco_format_root, voc2007_dataset)
    cfg, _ = parse_train_args(w.train())
    assert cfg.output_dir == str(w.out) and cfg.train_epochs == 1
    spec = load_search_spec(w.space())
    check_inputs(spec)
    assert spec.experiment_dir == w.experiments / "refused"
    assert not w.experiments.exists()


def test_check_images_decodes_fully_and_skip_bad_images_drops_a_damaged_jpeg(
        tmp_path, coco2014_dataset):
    """A JPEG damaged mid-stream passes a header check; the check decodes it, so training
    refuses it with its name, or drops and counts it under --skip-bad-images."""
    from PIL import Image

    from pu_mlc.config import parse_train_args
    from pu_mlc.engine.data_setup import prepare_run_data
    from pu_mlc.engine.distributed import DistContext

    root = builders.copy_dataset(coco2014_dataset.root, tmp_path / "coco")
    name = coco2014_dataset.splits["train"].files[4]
    cut_mid_stream(root / "train2014" / name)
    with Image.open(root / "train2014" / name) as img:      # the header check passes
        img.verify()
    cfg, _ = parse_train_args([str(root), "--dataset=COCO2014", *TINY, "--skip-bad-images"])
    data = prepare_run_data(cfg, DistContext(0, 1, 0, torch.device("cpu")))
    assert data.dropped_images == {"train": [name]}
    assert data.summary()["dropped_images"] == {"train": 1}
    assert name not in data.train.split.files


@pytest.mark.parametrize("errno_name", ["EROFS", "EACCES"])
def test_an_output_dir_the_file_system_refuses_is_named_before_any_setup(
        errno_name, tmp_path, monkeypatch, capsys, guarded_stages, coco2014_root):
    """A read-only mount or a folder without write permission. Tests run as root, for whom
    mode 0555 grants writing, and this machine has no read-only mount to use: the file system's
    answer to the probe is simulated (the probe asks the file system, not the mode bits)."""
    import errno
    import types

    from pu_mlc import files

    def refuse(*args, **kwargs):
        code = getattr(errno, errno_name)
        raise OSError(code, os.strerror(code), kwargs.get("dir"))

    monkeypatch.setattr(files, "tempfile", types.SimpleNamespace(mkstemp=refuse))
    data_read = []
    monkeypatch.setattr(importlib.import_module("pu_mlc.engine.fit"), "prepare_run_data",
                        lambda *a, **k: data_read.append(1))
    out = tmp_path / "locked" / "run"
    (tmp_path / "locked").mkdir()
    code, stdout, err = run_in_process([str(coco2014_root), "--dataset=COCO2014", *TINY,
                                        f"--output-dir={out}"], capsys)
    line = the_error_line(code, stdout, err, usage=False)
    assert f"output dir (--output-dir) {out} cannot be written" in line
    assert f"creating a file in {tmp_path / 'locked'} failed ({os.strerror(getattr(errno, errno_name))})" in line
    assert "choose another --output-dir" in line
    assert not data_read and not out.exists()


def test_the_write_probe_leaves_nothing_behind(tmp_path):
    from pu_mlc.files import check_writable_dir

    (tmp_path / "a").mkdir()
    check_writable_dir(tmp_path / "a" / "b" / "c", "output dir (--output-dir)")
    check_writable_dir(tmp_path / "a", "output dir (--output-dir)")
    assert [p.name for p in tmp_path.rglob("*")] == ["a"]


class _FakeRay:
    """Just enough of ``ray`` for ``run_search`` to reach its cluster check."""

    @staticmethod
    def cluster_resources() -> dict:
        return {"CPU": 1.0}


def test_a_search_refused_by_the_cluster_check_leaves_no_experiment_folder(
        tmp_path, coco2014_dataset, coco_format_root, voc2007_dataset, monkeypatch):
    """Otherwise the refused search's search_space.yaml blocks both a rerun ("already exists")
    and --resume (it differs once the space is fixed) until the folder is deleted."""
    from pu_mlc.errors import ConfigError
    from tune.search import run_search
    from tune.space_file import load_search_spec

    w = Workspace(tmp_path, coco2014_dataset, coco_format_root, voc2007_dataset)
    spec = load_search_spec(w.space(resources__cpus_per_worker=2))
    for module in ("tune.study", "tune.hparams"):      # run_search's own imports, with real Ray
        importlib.import_module(module)
    monkeypatch.setitem(sys.modules, "ray", _FakeRay())
    with pytest.raises(ConfigError, match="one trial needs 2.1 CPUs"):
        run_search(spec)
    assert not spec.experiment_dir.exists(), sorted(os.listdir(spec.experiment_dir))


# --- messages quote a short prefix of any value -----------------------------------------------
def test_shown_quotes_a_short_prefix_of_any_value_and_says_what_it_is():
    from pu_mlc.errors import described, listed, shown

    assert shown("abc") == "'abc'" and shown(1.5) == "1.5" and shown([1, 2]) == "[1, 2]"
    assert shown("x" * 10**6) == f"'{'x' * 60}...' (a str of 1,000,000 characters)"
    assert shown(list(range(10**6))).endswith(", ... (a list of 1,000,000 items)")
    assert shown(10**5000) == "an int of about 5,000 digits"     # repr refuses over 4300 digits
    bomb = alias_bomb(levels=30, width=10)                       # 10**30 strings, shared
    assert len(shown(bomb)) < 120 and shown(bomb).endswith("(a list of 10 items)")
    assert len(shown({"k" * 500: ["v" * 500]})) < 120
    assert described([1, 2, 3]) == "a list of 3 items" and described({}) == "a mapping of 0 keys"
    assert listed(["a", "b", "c"]) == "['a', 'b', 'c']"
    assert listed(range(1000), limit=2) == "[0, 1] and 998 more"


def test_the_error_line_is_capped_whatever_the_message():
    from pu_mlc.cli import MAX_ERROR_CHARS, error_line
    from pu_mlc.errors import ConfigError

    line = error_line(ConfigError("word\n" * 5_000_000))
    assert len(line) < MAX_ERROR_CHARS + 60 and "\n" not in line
    assert line.endswith("... [message cut: 25,000,000 characters]")
    assert error_line(ConfigError("a\n  b")) == "a b"


# --- a first word that is a command and a folder ---------------------------------------------
@pytest.mark.parametrize("argv, folder, called", [
    (["demo", "--dataset=coco", "--b", "4"], True, ("train", ["demo", "--dataset=coco", "--b",
                                                               "4"])),
    (["demo", "--b=many"], True, ("train", ["demo", "--b=many"])),     # train names the value
    (["evaluate", "--b=4", "--prob=0.5"], True, ("train", ["evaluate", "--b=4", "--prob=0.5"])),
    (["./demo", "--b", "4"], True, ("train", ["./demo", "--b", "4"])),
    (["train", "demo", "--b", "4"], True, ("train", ["demo", "--b", "4"])),
    (["demo", "--dataset=coco", "--b", "4"], False, ("search side", ["demo", "--dataset=coco",
                                                                     "--b", "4"])),
    (["demo"], True, ("search side", ["demo"])),
    (["demo", "--set", "budget.trials_per_task=1"], True,
     ("search side", ["demo", "--set", "budget.trials_per_task=1"])),
    (["demo", "--b=4", "--help"], True, ("search side", ["demo", "--b=4", "--help"])),
    (["report", "exp", "--b=4"], True, ("search side", ["report", "exp", "--b=4"])),
    (["search", "--space", "s.yaml", "--resume"], True,
     ("search side", ["search", "--space", "s.yaml", "--resume"])),
    (["demo-train", "--b=4"], True, ("demo-train", ["--b=4"])),
    (["train", "--config", "c.yaml"], True, ("train", ["--config", "c.yaml"])),
])
def test_a_command_word_that_is_also_a_folder_is_data_root_only_before_training_flags(
        argv, folder, called, tmp_path, monkeypatch, capsys):
    """The rule of ``pu-mlc --help``: a first word naming a command is that command, except
    when it is also a folder here and only training flags follow (then it is DATA_ROOT)."""
    import pu_mlc.cli as cli

    calls = []

    def recorder(name):
        def run(args, *_commands):
            calls.append((name, list(args)))
            return 0
        return run

    monkeypatch.setattr(cli, "run_train", recorder("train"))
    monkeypatch.setattr(cli, "run_demo_train", recorder("demo-train"))
    monkeypatch.setattr(cli, "_run_evaluate", recorder("evaluate"))
    monkeypatch.setattr(cli, "run_search_side", recorder("search side"))
    monkeypatch.chdir(tmp_path)
    if folder:
        for name in ("demo", "evaluate", "report", "search", "train", "demo-train"):
            (tmp_path / name).mkdir()
    assert cli.main(argv) == 0
    assert calls == [called]
    err = capsys.readouterr().err
    if called[0] == "train" and argv[0] not in ("train", "./demo"):
        assert f"training on the folder ./{argv[0]}" in err and f"'train {argv[0]}'" in err
    else:
        assert err == ""


def test_the_usage_states_the_rule_for_folders_named_like_commands(capsys):
    from pu_mlc.cli import main

    assert main(["--help"]) == 0
    usage = " ".join(capsys.readouterr().out.split())
    assert "when it is also a folder in the working directory and only training flags follow" \
        in usage
    assert "'train NAME' or './NAME'" in usage


# --- the table for the issue note -----------------------------------------------------------
def markdown(rows: list[dict]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = [f"{len(rows)} refused inputs (exit code, the one stderr line; $TMP = the test's "
             f"tmp_path, $TINY = {' '.join(TINY)})", "",
             "| case | command / input | exit | the one line |", "|---|---|---|---|"]
    marks = {"subprocess": " (subprocess)", "in-process": ""}
    for r in rows:
        given = f" — {cell(r['input'])}" if r.get("input") else ""
        lines.append(f"| {cell(r['id'])} | `{cell(r['command'])}`{given} | "
                     f"{r['exit']}{marks.get(r.get('how'), '')} | "
                     f"{cell(r['line'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print(markdown(rows))
