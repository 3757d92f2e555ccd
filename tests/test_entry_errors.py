"""Bad input stops ``train_entry.py`` before training, with one line saying what and how to fix.

Every case runs the real entry point as a subprocess and checks: exit code 2, exactly one
``error: ...`` line on stderr (the last one) naming the file or flag and the fix, no traceback,
and nothing written: the output directory is absent, or byte-for-byte what it was. Also: the
``--skip-bad-images`` way out, and ``--overwrite`` / ``--resume`` as the only ways into a
directory that holds an earlier run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import builders
from limits import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "train_entry.py"
#: A tiny, fast run: EfficientNet-Lite0 with its packaged weights at 32 px, one epoch.
TINY = ["--model-name=tf_efficientnet_lite0", "--pretrainedModel=builtin", "--scaleSize=32",
        "--cropSize=32", "--b=4", "--Stop_epoch=0", "--workers=0", "--device=cpu"]


def train(args: list[str], cwd: Path, timeout: int = HANG_GUARD_S) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run([sys.executable, str(ENTRY), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a refused run (after checking how it was refused)."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    return errors[0]


def assert_refused(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    line = error_line(proc)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def coco(coco2014_root, tmp_path) -> Path:
    return builders.copy_dataset(coco2014_root, tmp_path / "coco")


@pytest.fixture
def voc(voc2007_root, tmp_path) -> Path:
    return builders.copy_dataset(voc2007_root, tmp_path / "voc")


def refused_run(tmp_path: Path, root: Path, dataset: str, *extra: str):
    """Run with ``extra`` flags; return the process after checking nothing was written."""
    out = tmp_path / "out"
    proc = train([root, f"--dataset={dataset}", *TINY, *extra, f"--output-dir={out}"],
                 cwd=tmp_path)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert not (tmp_path / "runs").exists()
    return proc


# --- annotation files -------------------------------------------------------------------------
def test_a_missing_coco_annotation_file_is_named(coco, tmp_path):
    ann = coco / "annotations" / "instances_train2014.json"
    ann.unlink()
    proc = refused_run(tmp_path, coco, "COCO2014")
    assert_refused(proc, str(ann), "not found", "expected the COCO2014 layout")


def test_a_truncated_coco_annotation_file_is_named(coco, tmp_path):
    ann = coco / "annotations" / "instances_val2014.json"
    builders.truncate_file(ann)
    proc = refused_run(tmp_path, coco, "COCO2014")
    assert_refused(proc, str(ann), "not valid JSON")


def test_a_coco_annotation_file_without_images_is_named(coco, tmp_path):
    ann = coco / "annotations" / "instances_train2014.json"
    data = builders.read_json(ann)
    del data["images"]
    builders.write_json(ann, data)
    proc = refused_run(tmp_path, coco, "COCO2014")
    assert_refused(proc, str(ann), "no 'images' field")


def test_a_missing_voc_annotation_is_named_with_its_image_list(voc, tmp_path):
    main = voc / "VOCdevkit" / "VOC2007"
    image_id = (main / "ImageSets" / "Main" / "test.txt").read_text().split()[3]
    xml = main / "Annotations" / f"{image_id}.xml"
    xml.unlink()
    proc = refused_run(tmp_path, voc, "VOC2007")
    assert_refused(proc, str(xml), "test.txt", "add the xml or remove the id")


def test_a_malformed_voc_annotation_is_named(voc, tmp_path):
    main = voc / "VOCdevkit" / "VOC2007"
    image_id = (main / "ImageSets" / "Main" / "trainval.txt").read_text().split()[5]
    xml = main / "Annotations" / f"{image_id}.xml"
    builders.truncate_file(xml)
    proc = refused_run(tmp_path, voc, "VOC2007")
    assert_refused(proc, str(xml), "not valid XML", "fix or re-download")


# --- images -----------------------------------------------------------------------------------
def test_an_unreadable_training_image_is_named_with_the_skip_option(coco, coco2014_dataset,
                                                                    tmp_path):
    name = coco2014_dataset.splits["train"].files[4]
    builders.garbage_file(coco / "train2014" / name)
    proc = refused_run(tmp_path, coco, "COCO2014")
    assert_refused(proc, name, str(coco / "train2014"), "--skip-bad-images",
                   f"{name} (not a readable image (UnidentifiedImageError")


def test_a_truncated_test_image_is_named_with_the_skip_option(voc, voc2007_dataset, tmp_path):
    name = voc2007_dataset.splits["test"].files[1]
    builders.truncate_file(voc / "VOCdevkit" / "VOC2007" / "JPEGImages" / name)
    proc = refused_run(tmp_path, voc, "VOC2007")
    line = assert_refused(proc, name, "test split", "--skip-bad-images")
    assert f"{name} (truncated JPEG (" in line or f"{name} (not a readable image (" in line, line
    assert "WARNING" not in proc.stderr, proc.stderr        # the reason is in the error line


def test_skip_bad_images_trains_without_them_and_counts_them(coco, coco2014_dataset, tmp_path):
    bad_train = coco2014_dataset.splits["train"].files[4]
    damaged_train = coco2014_dataset.splits["train"].files[9]
    bad_test = coco2014_dataset.splits["test"].files[7]
    builders.garbage_file(coco / "train2014" / bad_train)
    # damaged mid-stream: header and end marker intact, only a full decode finds it
    whole = (coco / "train2014" / damaged_train).read_bytes()
    builders.truncate_file(coco / "train2014" / damaged_train)
    with open(coco / "train2014" / damaged_train, "ab") as f:
        f.write(whole)
    builders.truncate_file(coco / "val2014" / bad_test)
    out = tmp_path / "out"
    proc = train([coco, "--dataset=COCO2014", *TINY, "--skip-bad-images", f"--output-dir={out}"],
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dropped_images"] == {"train": sorted([bad_train, damaged_train]),
                                         "test": [bad_test]}
    assert metrics["data"]["dropped_images"] == {"train": 2, "test": 1}
    n_train = len(coco2014_dataset.splits["train"].files)
    n_test = len(coco2014_dataset.splits["test"].files)
    assert metrics["data"]["train_images"] == n_train - 2
    assert metrics["data"]["test_images"] == n_test - 1
    assert metrics["result"]["test_summary"]["num_images"] == n_test - 1
    assert metrics["status"] == "finished"


# --- flags ------------------------------------------------------------------------------------
def test_num_classes_disagreeing_with_coco_names_the_flag_and_the_right_value(coco, tmp_path):
    proc = refused_run(tmp_path, coco, "COCO2014", "--num-classes=10")
    assert_refused(proc, "--num-classes", "has 80 classes", "pass --num-classes=80")


def test_num_classes_disagreeing_with_voc_names_the_flag_and_the_right_value(voc, tmp_path):
    proc = refused_run(tmp_path, voc, "VOC2007", "--num-classes=10")
    assert_refused(proc, "--num-classes", "pass --num-classes=20")


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_prob_outside_zero_one_is_refused(value, coco2014_root, tmp_path):
    proc = refused_run(tmp_path, coco2014_root, "COCO2014", f"--prob={value}")
    assert_refused(proc, "--prob", "(0, 1]", "use 1 for full labels")


@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_non_positive_alpha_is_refused(value, coco2014_root, tmp_path):
    proc = refused_run(tmp_path, coco2014_root, "COCO2014", f"--alpha={value}")
    assert_refused(proc, "--alpha", "must be > 0")


@pytest.mark.parametrize("shape", [(11, 50), (10,), (10, 0)])
def test_a_word_vector_file_of_the_wrong_shape_is_named(shape, coco2014_root, tmp_path):
    path = tmp_path / "words.npy"
    np.save(path, np.ones(shape, np.float32))
    proc = refused_run(tmp_path, coco2014_root, "COCO2014", f"--word-vectors={path}")
    assert_refused(proc, str(path), "--word-vectors", f"shape {shape}", "(80, d)")


def test_a_word_vector_file_that_is_not_npy_is_named(coco2014_root, tmp_path):
    path = tmp_path / "words.npy"
    path.write_text("cat 0.1 0.2\n")
    proc = refused_run(tmp_path, coco2014_root, "COCO2014", f"--word-vectors={path}")
    assert_refused(proc, str(path), "--word-vectors", "numpy.save")


def test_a_missing_pretrained_file_is_named_before_the_output_dir_is_made(coco2014_root,
                                                                          tmp_path):
    path = tmp_path / "resnet101.pth"
    proc = refused_run(tmp_path, coco2014_root, "COCO2014", "--model-name=resnet18",
                       f"--pretrainedModel={path}")
    assert_refused(proc, "--pretrainedModel", str(path), "file not found")


def test_a_pretrained_file_that_is_not_a_state_dict_is_named(coco2014_root, tmp_path):
    path = tmp_path / "resnet18.pth"
    builders.garbage_file(path)
    proc = refused_run(tmp_path, coco2014_root, "COCO2014", "--model-name=resnet18",
                       f"--pretrainedModel={path}")
    assert_refused(proc, "--pretrainedModel", str(path), "torch.save(model.state_dict()")


# --- an output dir holding an earlier run -----------------------------------------------------
@pytest.fixture(scope="module")
def earlier_run(coco2014_root, module_tmp) -> Path:
    """A finished one-epoch run, made through the entry point."""
    out = module_tmp / "earlier" / "run"
    out.parent.mkdir()
    proc = train([coco2014_root, "--dataset=COCO2014", *TINY, f"--output-dir={out}"],
                 cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def earlier(earlier_run, tmp_path) -> Path:
    """A private copy of the earlier run (tests may replace it)."""
    return Path(shutil.copytree(earlier_run, tmp_path / "run"))


def rerun(earlier: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return train([root, "--dataset=COCO2014", *TINY, *extra, f"--output-dir={earlier}"],
                 cwd=earlier.parent)


def test_an_earlier_run_is_refused_without_a_flag_and_kept_byte_for_byte(earlier,
                                                                          coco2014_root):
    before = snapshot(earlier)
    assert {"config.yaml", "metrics.json", "checkpoints/last.pt", "checkpoints/best.pt",
            "train.log"} <= set(before)
    proc = rerun(earlier, coco2014_root)
    assert_refused(proc, str(earlier), "already holds results", "--resume", "--overwrite")
    assert snapshot(earlier) == before


@pytest.mark.parametrize("bad", ["flag", "image"])
def test_bad_input_with_overwrite_still_leaves_the_earlier_run_intact(bad, earlier, coco,
                                                                      coco2014_dataset):
    before = snapshot(earlier)
    if bad == "flag":
        proc = rerun(earlier, coco, "--overwrite", "--prob=0")
        assert_refused(proc, "--prob")
    else:
        name = coco2014_dataset.splits["test"].files[0]
        builders.garbage_file(coco / "val2014" / name)
        proc = rerun(earlier, coco, "--overwrite")
        assert_refused(proc, name, "--skip-bad-images")
    assert snapshot(earlier) == before


def test_overwrite_replaces_the_earlier_run(earlier, coco2014_root):
    old = json.loads((earlier / "metrics.json").read_text())
    old_events = sorted(p.name for p in (earlier / "tensorboard").iterdir())
    proc = rerun(earlier, coco2014_root, "--overwrite", "--head=linear")
    assert proc.returncode == 0, proc.stderr
    new = json.loads((earlier / "metrics.json").read_text())
    assert old["config"]["head"] == "ssgrl" and new["config"]["head"] == "linear"
    assert len(new["history"]) == 1
    assert not set(old_events) & {p.name for p in (earlier / "tensorboard").iterdir()}


def test_resume_continues_the_earlier_run_from_its_last_checkpoint(earlier, coco2014_root):
    old = json.loads((earlier / "metrics.json").read_text())
    proc = rerun(earlier, coco2014_root, "--resume", "--Stop_epoch=1")
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stderr
    new = json.loads((earlier / "metrics.json").read_text())
    assert [h["epoch"] for h in new["history"]] == [1, 2]
    assert new["history"][0] == old["history"][0]
