"""The CPU demo preset: a built-in dataset and one PU-MLC training run sized for a laptop.

The builder's defaults (224 px scenes, items 12-25 % of the side) mirror COCO's small objects;
on two CPU cores that needs hours to learn. The preset composes 128 px scenes with larger items
(25-45 % of the side) and trains EfficientNet-Lite0 with its real ImageNet weights, the local-global
branches and the SSGRL head (the same code paths as a COCO run) for 5 epochs: build plus training
take about 8 minutes on 2 cores. The learning rate is raised from the paper's 1e-4 to 3e-4 and
the OneCycle schedule spans the 5 epochs (the paper's spans 80 and is cut at epoch 40); the EMA
decay is 0.99 because an EMA with the paper's 0.9997 barely moves in ~300 steps.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig

#: Arguments of :func:`pu_mlc.data.demo.build_demo_dataset` for the preset's dataset.
DEMO_DATA = {"canvas_size": 128, "item_scale": (0.25, 0.45), "n_train": 1000, "n_val": 250,
             "n_test": 500, "seed": 0}

#: Training flags of the preset (the label proportion is the paper's hardest, 10 %).
DEMO_TRAIN_FLAGS = [
    "--dataset=coco", "--model-name=tf_efficientnet_lite0", "--pretrainedModel=builtin",
    "--scaleSize=144", "--cropSize=128", "--b=16", "--workers=1", "--lr=3e-4",
    "--epochs=5", "--Stop_epoch=4", "--ema=0.99", "--prob=0.1", "--alpha=1.0", "--gamma=0.55",
    "--protocol=honest",
]


def ensure_demo_data(root: str | Path) -> Path:
    """Build the preset dataset at ``root`` unless a built dataset is already there."""
    from .data.demo import build_demo_dataset

    root = Path(root).resolve()
    if not (root / "manifest.json").exists():
        build_demo_dataset(root, **DEMO_DATA)
    return root


def demo_train_argv(data: str | Path, extra: list[str]) -> list[str]:
    """Command-line arguments of the preset run; flags in ``extra`` override the preset's."""
    return [str(data), *DEMO_TRAIN_FLAGS, *extra]


def demo_train_config(data: str | Path, **overrides) -> TrainConfig:
    return TrainConfig.from_cli(demo_train_argv(data, [])).replace(**overrides)
