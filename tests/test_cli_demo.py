"""The built-in dataset and the CPU demo preset from the command line."""

import json
import subprocess
import sys
from pathlib import Path

from pu_mlc.data import load_dataset
from pu_mlc.presets import DEMO_DATA, demo_train_config
from limits import HANG_GUARD_S

REPO = Path(__file__).resolve().parent.parent


def _entry(*args):
    return subprocess.run([sys.executable, str(REPO / "train_entry.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_make_demo_data_writes_a_coco_dataset_the_readers_load(tmp_path):
    out = tmp_path / "demo"
    proc = _entry("make-demo-data", str(out), "--n-train", "12", "--n-val", "4", "--n-test",
                  "6", "--canvas-size", "96", "--item-scale", "0.2", "0.4", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    splits = load_dataset("coco", out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 4, "test": 6}
    params = json.loads((out / "manifest.json").read_text())["parameters"]
    assert params["canvas_size"] == 96 and params["item_scale"] == [0.2, 0.4]
    assert params["seed"] == 3
    again = _entry("make-demo-data", str(out), "--n-train", "12")
    assert again.returncode == 2 and "error:" in again.stderr      # nothing overwritten


def test_the_demo_preset_is_a_valid_pu_mlc_run_on_the_preset_dataset(tmp_path):
    cfg = demo_train_config(tmp_path / "demo_data")
    assert (cfg.loss, cfg.head, cfg.lgc, cfg.prob) == ("pu", "ssgrl", True, 0.1)
    assert cfg.model_name == "tf_efficientnet_lite0" and cfg.pretrained_model == "builtin"
    assert cfg.train_epochs == cfg.epochs              # the whole (short) OneCycle runs
    assert DEMO_DATA["n_train"] // cfg.batch_size >= 50  # enough steps per epoch to learn
